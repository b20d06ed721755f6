"""`ffstream embed`'s throughput (ffstream.embed, the call the command makes), best of --repeat runs per source.

    python benchmarks/embed.py --checkpoint-dir ck --source fashion-mnist:test --source synthetic:5000 --max-frames 10000

Without --checkpoint-dir it saves the default dense stack (model.layers 500,500,500 on 28x28 grey frames, untrained:
the same arithmetic as a trained one) in a temporary directory. Each line gives wall-clock frames/s and frames per
CPU-second of this process (all its threads): on a shared machine the first falls with the load, the second
says what the work costs.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import ffstream
from ffstream.config import RunConfig
from ffstream.ff import FFLayer, checkpoint


def default_dense_stack(directory: str) -> str:
    cfg = RunConfig()  # the defaults: 500,500,500 dense, 28x28 grey
    configs = cfg.layer_configs()
    for index, layer_cfg in enumerate(configs, start=1):
        meta = {"index": index, "frame_shape": [1, *cfg.stream.size], "task": "unsupervised", "center": False, "pairs": False}
        checkpoint.save_layer(checkpoint.layer_path(directory, index), FFLayer(layer_cfg), meta)
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint-dir", help="a trained stack (default: the default dense stack, untrained)")
    parser.add_argument("--source", action="append", help="repeatable (default: fashion-mnist:test, synthetic:5000)")
    parser.add_argument("--max-frames", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    directory = args.checkpoint_dir or default_dense_stack(tempfile.mkdtemp(prefix="ffstream-embed-"))
    stack = ffstream.load(directory)
    print(f"{stack!r}")
    for source in args.source or ["fashion-mnist:test", "synthetic:5000"]:
        wall = cpu = 0.0
        for _ in range(args.repeat):
            w, c = time.perf_counter(), time.process_time()
            frames = len(ffstream.embed(stack, source, max_frames=args.max_frames).features)
            wall, cpu = max(wall, frames / (time.perf_counter() - w)), max(cpu, frames / (time.process_time() - c))
        print(f"{source}: {frames} frames, {wall:.0f} frames/s wall, {cpu:.0f} frames per CPU-second (best of {args.repeat})", flush=True)


if __name__ == "__main__":
    main()
