"""What exactly-once delivery and liveness cost: pipeline frames/s with barriers and heartbeats on, against off.

`ffstream bench throughput --delivery-overhead` runs the throughput bench's pipeline (same layers, synthetic frames,
batch and task) with a checkpoint directory, so that a file stream is exactly-once, in two settings:

- on: what `ffstream run` does: barriers every `barrier_every` batches and at least stream.barrier_min_s apart (each
  a checkpoint of every layer, written on a thread, and of the sink, and an acknowledgement back to the source),
  ZMTP heartbeats and TCP keepalive on every socket; 20,000 frames by default, so that a run spans several barriers;
- off: stream.barrier_every=0 (at-most-once: periodic checkpoints only) and FFSTREAM_HEARTBEATS=off.

The runs alternate, on, off, on, off, ..., so that a machine whose load drifts weighs on both alike; the figure is
the median on over the median off (target: at least 0.95), each pair's ratio beside it.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import tempfile
import time

from ffstream.bench.throughput import pipeline_fps, throughput_config
from ffstream.net.transport import HEARTBEATS_ENV


def one_run(layers: tuple[int, ...], batch: int, frames: int, on: bool, barrier_every: int, seed: int = 0) -> dict:
    cfg = throughput_config(layers, batch, frames, seed=seed)
    cfg.stream = dataclasses.replace(cfg.stream, barrier_every=barrier_every if on else 0)
    previous = os.environ.get(HEARTBEATS_ENV)
    os.environ[HEARTBEATS_ENV] = "on" if on else "off"  # the workers inherit it (the supervisor passes it on)
    try:
        with tempfile.TemporaryDirectory(prefix="ffovh-ck-") as ck:
            cfg.checkpoint_dir = ck  # a saved position: the file stream is exactly-once when barriers are on
            started = time.monotonic()
            pipe = pipeline_fps(cfg)
    finally:
        if previous is None:
            os.environ.pop(HEARTBEATS_ENV, None)
        else:
            os.environ[HEARTBEATS_ENV] = previous
    return {"on": on, "fps": pipe["fps"], "frames": pipe["frames"], "wall_s": round(time.monotonic() - started, 1),
            "layer_fps": pipe["layer_fps"], "barriers": pipe["barriers"], "load_1m": round(os.getloadavg()[0], 1)}


def delivery_overhead(layers: tuple[int, ...] = (2000, 2000, 2000, 2000), batch: int = 64, frames: int = 20_000, pairs: int = 2,
                      barrier_every: int = 50, seed: int = 0) -> dict:
    runs = []
    for _ in range(pairs):
        runs.append(one_run(layers, batch, frames, True, barrier_every, seed))
        runs.append(one_run(layers, batch, frames, False, barrier_every, seed))
    on = [r["fps"] for r in runs if r["on"] and r["fps"]]
    off = [r["fps"] for r in runs if not r["on"] and r["fps"]]
    ratio = round(statistics.median(on) / statistics.median(off), 3) if on and off else None
    return {
        "layers": list(layers), "batch": batch, "frames": frames, "barrier_every": barrier_every,
        "fps_on": on, "fps_off": off, "median_on": statistics.median(on) if on else None,
        "median_off": statistics.median(off) if off else None, "ratio": ratio,
        "pair_ratios": [round(a["fps"] / b["fps"], 3) for a, b in zip(runs[::2], runs[1::2]) if a["fps"] and b["fps"]],
        "target": 0.95, "met": ratio is not None and ratio >= 0.95, "runs": runs,
    }


def format_overhead(r: dict) -> str:
    lines = [f"pipeline frames/s, layers {','.join(map(str, r['layers']))}, batch {r['batch']}, {r['frames']} frames, runs alternating:"]
    for run in r["runs"]:
        what = f"barriers every {r['barrier_every']} + heartbeats" if run["on"] else "no barriers, no heartbeats"
        barriers = f", {run['barriers']} barriers" if run["on"] else ""
        lines.append(f"  {what:<34} {run['fps'] or 0:8.1f} frames/s  ({run['wall_s']} s{barriers}, load {run['load_1m']})")
    lines.append(f"on / off (medians): {r['ratio']}  (pairs: {', '.join(map(str, r['pair_ratios']))}; target >= {r['target']})")
    return "\n".join(lines)
