"""`ffstream probe`: a linear probe fitted on a frozen stack's features over one labelled source, scored on another.

Imported by the CLI at --help time: torch and the sources load inside `probe_command`, not here.
"""

from __future__ import annotations

import argparse
import json

LABELS_HELP = (
    "a video's per-frame label CSV: header 'frame,label', then rows 0,1,2,... in decode order, labels non-negative "
    "integers, exactly one row per frame (a shorter or longer file is an error); default: the .csv beside the video "
    "with the same stem (clip.mp4 -> clip.csv)"
)
SOURCE_HELP = "a labelled source: a video FILE with its label CSV, synthetic:N[:seed=S], fashion-mnist[:train|test], idx:DIR[:split]"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint-dir", required=True, help="the layer checkpoints of a trained stack (ffstream run --checkpoint-dir)")
    parser.add_argument("--train", required=True, metavar="SRC", help=f"fit the probe here: {SOURCE_HELP}")
    parser.add_argument("--test", required=True, metavar="SRC", help="score it here (another clip, seed or split)")
    parser.add_argument("--labels", metavar="FILE", help=f"--train's labels: {LABELS_HELP}")
    parser.add_argument("--test-labels", metavar="FILE", help="--test's labels, likewise")
    parser.add_argument("--max-frames", type=int, help="use the first N frames of each source (datasets in file order)")
    parser.add_argument("--no-pixels", action="store_true", help="skip the raw-pixel probe (it costs min(frames, pixels)^3)")
    parser.add_argument("--method", choices=("logistic", "ridge"), default="logistic",
                        help="logistic (default): multinomial logistic regression by L-BFGS, as bench video's in-process rows; "
                             "ridge: least squares onto one-hot labels, closed form (cheaper, weaker on pooled conv features)")
    parser.add_argument("--json", action="store_true",
                        help='print one JSON object: {"layers": {"1": acc, ...}, "all": acc, "pixels": acc, "n_train": N, "n_test": N, '
                             '"num_classes": K, "method": "logistic"}')


def probe_command(args) -> int:
    from ffstream.commands import UserError
    from ffstream.offline.probe import probe_checkpoint

    if args.max_frames is not None and args.max_frames <= 0:
        raise UserError(f"--max-frames must be a positive integer, got {args.max_frames}")
    result = probe_checkpoint(args.checkpoint_dir, args.train, args.test, train_labels=args.labels,
                              test_labels=args.test_labels, max_frames=args.max_frames, pixels=not args.no_pixels,
                              method=args.method)
    if args.json:
        print(json.dumps(result.to_json()))
        return 0
    kind = "logistic regression, L-BFGS" if result.method == "logistic" else "ridge, closed form"
    print(f"linear probe ({kind}) fitted on {result.n_train} frames of {args.train}, "
          f"scored on {result.n_test} frames of {args.test}, {result.num_classes} classes")
    for layer, acc in result.layers.items():
        print(f"  layer {layer}:     {100 * acc:6.2f} %")
    print(f"  all layers:  {100 * result.all:6.2f} %")
    if result.pixels is not None:
        print(f"  raw pixels:  {100 * result.pixels:6.2f} % (the baseline)")
    return 0
