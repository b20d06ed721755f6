"""`ffstream score`: goodness per frame and per layer of a trained stack on a video, as CSV and an optional plot."""

from __future__ import annotations

from ffstream.cli import UserError
from ffstream.config import recorded
from ffstream.offline.recurrent_eval import is_recurrent
from ffstream.offline.recurrent_score import comparison_line, score_recurrent_video
from ffstream.offline.score import plot, require_matplotlib, score_video, write_csv


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
    without_top_down = None
    if is_recurrent(args.checkpoint_dir):  # a recurrent stack: frames are its steps; also scored with top-down silenced
        scores, without_top_down = score_recurrent_video(args.source, args.checkpoint_dir)
    else:
        scores = score_video(args.source, args.checkpoint_dir, batch=args.batch, labels=args.labels)
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
