"""`ffstream score`: goodness per frame and per layer of a trained stack on a source, as CSV and an optional plot.

The work is `ffstream.score` (offline/api.py); this parses nothing itself (cli.py does) and only prints.
"""

from __future__ import annotations

import sys

from ffstream.commands import UserError


def score_command(args) -> int:
    from ffstream.offline import api
    from ffstream.offline.score import comparison_line, plot, require_matplotlib
    from ffstream.sources import is_live

    if args.plot:
        try:
            require_matplotlib()  # before the work, so a missing package costs nothing
        except ImportError as exc:
            raise UserError(str(exc)) from None
    if args.max_frames is not None and args.max_frames <= 0:
        raise UserError(f"--max-frames must be a positive integer, got {args.max_frames}")
    live = args.source is not None and is_live(args.source)
    if live and args.max_frames is None:
        print(f"scoring {args.source} until Ctrl-C", file=sys.stderr)
    scores = api.score(args.checkpoint_dir, args.source, max_frames=args.max_frames, batch=args.batch, labels=args.labels,
                       interruptible=live)
    api.save_scores(scores, args.out)
    if args.plot:
        plot(scores, args.plot)
    print(f"{len(scores.frames)} frames of {scores.source} scored by {len(scores.thresholds)} layers: {args.out}"
          + (f", plot {args.plot}" if args.plot else ""))
    if scores.without_top_down is not None:
        print(comparison_line(scores, scores.without_top_down))
    return 0
