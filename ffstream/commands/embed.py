"""`ffstream embed`: a trained stack's features of every frame of a source, as .npy or .npz (offline/embed.py).

Imported by the CLI at --help time: torch loads inside `embed_command`, not here.
"""

from __future__ import annotations

import argparse
import time

from ffstream.commands import UserError


def _layer(text: str) -> int | None:
    """--layer: a 1-based layer number, or "all" (None)."""
    if text == "all":
        return None
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"expected a layer number (1, 2, ...) or 'all', got {text!r}")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, help="a video FILE, synthetic[:N][:seed=S], webcam:N, rtsp://..., "
                        "idx:DIR[:split], fashion-mnist[:split] (a live source needs --max-frames)")
    parser.add_argument("--checkpoint-dir", required=True, help="the layer checkpoints of a trained stack (ffstream run --checkpoint-dir)")
    parser.add_argument("--out", required=True, help="feats.npy (features, float32 N x F) or feats.npz (features, frame, time_s, "
                        "and label when the source has labels)")
    parser.add_argument("--layer", type=_layer, default=None, metavar="N|all",
                        help="which layer's normalised activity, 1-based, or all of them side by side (default all)")
    parser.add_argument("--max-frames", type=int, help="embed the first N frames only")
    parser.add_argument("--labels", metavar="FILE", help="a video's label CSV (frame,label), instead of its same-stem .csv")


def embed_command(args) -> int:
    from ffstream.offline import api
    from ffstream.offline.embed import check_out

    if args.max_frames is not None and args.max_frames <= 0:
        raise UserError(f"--max-frames must be a positive integer, got {args.max_frames}")
    try:
        check_out(args.out)  # before the work
        start = time.perf_counter()
        embedding = api.embed(args.checkpoint_dir, args.source, layer=args.layer, max_frames=args.max_frames, labels=args.labels)
        seconds = time.perf_counter() - start
    except ValueError as exc:
        raise UserError(str(exc)) from None
    api.save_embedding(embedding, args.out)
    n, width = embedding.features.shape
    print(f"{n} frames of {args.source} embedded by layer {args.layer or 'all'} of {args.checkpoint_dir}: {width} features each, "
          f"{args.out} ({n / seconds:.0f} frames/s, source and loading included)")
    return 0
