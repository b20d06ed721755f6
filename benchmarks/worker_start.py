"""A worker's start, as a restart after `kill -9` pays it: from the process's spawn to its first frame's work done.

    python benchmarks/worker_start.py --kind layer --runs 5
    python benchmarks/worker_start.py --kind source --runs 5 --code /path/to/another/checkout   # the same for other code

A real `ffstream worker KIND` (the default dense stack, 500,500,500 on 28x28 frames, sleep off, no checkpoints), over
ipc:// sockets; this script plays its neighbours. layer: a batch of 64 frames waits in its input before it starts, and
the clock stops when the learned batch comes out (the layer learns, then forwards). source: the clock stops when its
first batch arrives. Each line: wall seconds, and the CPU seconds the worker had used by then (utime + stime from
/proc, all its threads): on a shared machine the wall time grows with the load, the CPU time says what the start
costs. --code puts another checkout first on PYTHONPATH, so that two versions are measured by the same script.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zmq

from ffstream.config import RunConfig, SleepConfig, StreamConfig, Topology
from ffstream.net import wire

BATCH = 64
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14 and 15 of stat(5))


def one_start(kind: str, code: str, directory: Path, ctx: zmq.Context) -> tuple[float, float]:
    topo = Topology.local(3, monitor_publish=f"ipc://{directory}/monitor.pub", run_dir=str(directory))
    cfg = RunConfig(stream=StreamConfig(source="synthetic:100000", batch=BATCH), sleep=SleepConfig(enabled=False),
                    topology=topo, threads=1)
    path = directory / "run.json"
    path.write_text(json.dumps(dataclasses.asdict(cfg)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FFSTREAM_")}
    env["PYTHONPATH"] = code + os.pathsep + env.get("PYTHONPATH", "")
    argv = [sys.executable, "-m", "ffstream", "worker", kind, "--config", str(path)] + (["--index", "1"] if kind == "layer" else [])
    out = ctx.socket(zmq.PULL)  # what the worker's first work reaches: layer 2's input, or (source) layer 1's
    out.setsockopt(zmq.LINGER, 0)
    out.bind(topo.layer_inputs[1] if kind == "layer" else topo.layer_inputs[0])
    feed = None
    if kind == "layer":  # a batch already queued for it, as for a restarted layer whose source replays
        feed = ctx.socket(zmq.PUSH)
        feed.setsockopt(zmq.LINGER, 0)
        feed.connect(topo.layer_inputs[0])
        frames = np.random.default_rng(0).random((BATCH, 1, 28, 28), dtype=np.float32)
        feed.send_multipart(wire.encode(wire.Message("frames", frames, seq=0)), copy=False)
    start = time.perf_counter()
    with open(directory / f"{kind}.log", "wb") as log:  # the child holds its own copy of the descriptor
        proc = subprocess.Popen(argv, env=env, cwd=directory,  # not here: `-m` puts the working directory first on the path
                                stdout=subprocess.DEVNULL, stderr=log)
    try:
        while True:
            if out.poll(5):
                wire.decode(out.recv_multipart())
                break
            if proc.poll() is not None or time.perf_counter() - start > 300:
                raise SystemExit(f"the {kind} worker did no work: {(directory / f'{kind}.log').read_text()[-2000:]}")
        wall, cpu = time.perf_counter() - start, cpu_seconds(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
        out.close()
        if feed is not None:
            feed.close()
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("layer", "source"), default="layer")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--code", default=str(Path(__file__).resolve().parents[1]), help="the checkout to run (default this one)")
    args = parser.parse_args()
    ctx = zmq.Context()
    walls, cpus = [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            wall, cpu = one_start(args.kind, args.code, Path(tmp), ctx)
        walls.append(wall)
        cpus.append(cpu)
        print(f"{args.kind} ({args.code}): first work done {wall:.2f} s after spawn, {cpu:.2f} CPU-s", flush=True)
    print(f"{args.kind} ({args.code}): median {statistics.median(walls):.2f} s wall, {statistics.median(cpus):.2f} CPU-s "
          f"over {args.runs} runs; load {os.getloadavg()[0]:.1f}")
    ctx.term()


if __name__ == "__main__":
    main()
