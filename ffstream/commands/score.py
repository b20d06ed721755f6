"""`ffstream score`: goodness per frame and per layer of a trained stack on a video, as CSV and an optional plot."""

from __future__ import annotations

from ffstream.commands import UserError
from ffstream.config import recorded
from ffstream.offline.score import comparison_line, plot, require_matplotlib, score_video, write_csv


def score_command(args) -> int:
    if args.plot:
        try:
            require_matplotlib()  # before the work, so a missing package costs nothing
        except ImportError as exc:
            raise UserError(str(exc)) from None
    if args.source is None:  # the video the stack learned from, as its run.json records
        run = recorded(args.checkpoint_dir)
        if run is None:
            raise UserError(f"--source is needed: {args.checkpoint_dir} has no run.json saying what the stack learned from")
        args.source = run.stream.source
    # a recurrent stack takes the frames as its steps, and is also scored with its top-down silenced
    scores, without_top_down = score_video(args.source, args.checkpoint_dir, batch=args.batch, labels=args.labels)
    write_csv(scores, args.out)
    if args.plot:
        plot(scores, args.plot)
    print(
        f"{len(scores.frames)} frames of {args.source} scored by {len(scores.thresholds)} layers: {args.out}"
        + (f", plot {args.plot}" if args.plot else "")
    )
    if without_top_down is not None:
        print(comparison_line(scores, without_top_down))
    return 0
