"""The source and monitor workers never import torch: a real start of each (`ffstream worker KIND`, config checks
and all), run with `python -X importtime`, whose stderr names every module the process imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import zmq

from ffstream.config import RunConfig, SleepConfig, StreamConfig
from ffstream.net import wire
from tests.processes import ROOT, env, ipc_topology, stop_all, write_config
from tests.rig import recv_multipart

FRAMES = 24
BATCH = 4


def start_traced(kind: str, config_path: Path, log: Path) -> subprocess.Popen:
    argv = [sys.executable, "-X", "importtime", "-m", "ffstream", "worker", kind, "--config", str(config_path)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(log, "wb"), env=env(), cwd=ROOT)


def imported(log: Path) -> set[str]:
    """The modules -X importtime listed ("import time: self | cumulative | [indent]name")."""
    lines = log.read_text(errors="replace").splitlines()
    return {line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:") and line.count("|") == 2}


def test_source_and_monitor_workers_run_without_torch(tmp_path, socket):
    cfg = RunConfig(stream=StreamConfig(source=f"synthetic:{FRAMES}", size=(8, 8), batch=BATCH, max_frames=FRAMES),
                    sleep=SleepConfig(enabled=False), topology=ipc_topology(tmp_path, 2))
    config_path = write_config(cfg, tmp_path / "run.json")
    layer1 = socket(zmq.PULL)  # the test plays layer 1: the frames must reach it
    layer1.bind(cfg.topology.layer_inputs[0])
    feed = socket(zmq.SUB)  # and watches the monitor pass on the source's metrics
    feed.setsockopt(zmq.SUBSCRIBE, b"")
    feed.connect(cfg.topology.monitor_publish)
    monitor = start_traced("monitor", config_path, tmp_path / "monitor.log")
    source = start_traced("source", config_path, tmp_path / "source.log")
    try:
        frames, arrays = 0, []
        while True:  # up to the end of the stream (recv_multipart fails rather than hangs)
            msg = wire.decode(recv_multipart(layer1, timeout=120))
            if msg.kind == "control" and msg.extra.get("command") == "end":
                break
            if msg.kind == "frames" and msg.mode == "learn":
                frames += len(msg.array)
                arrays.append(msg.array)
        relayed = set()
        while "source" not in relayed:  # the source's metrics, relayed by the monitor
            relayed.add(wire.decode(recv_multipart(feed, timeout=30), max_payload=0).stream)
        codes = stop_all([source, monitor])  # a finished source idles until told to stop (exit_on_end)
    finally:
        stop_all([source, monitor])
    assert codes == [0, 0], [(tmp_path / f"{kind}.log").read_text()[-2000:] for kind in ("source", "monitor")]
    for kind in ("source", "monitor"):
        modules = imported(tmp_path / f"{kind}.log")
        assert "zmq" in modules and "ffstream.workers.build" in modules, f"{kind}: -X importtime listed no imports"
        assert not {m for m in modules if m == "torch" or m.startswith("torch.")}, f"the {kind} worker imported torch"
    assert frames == FRAMES and all(np.isfinite(a).all() for a in arrays)


def test_a_layer_worker_imports_neither_opencv_nor_pyav(tmp_path, socket):
    """Only the source decodes video: a layer (what a crash restarts most) starts without cv2 and av, 0.15-0.3 s of
    imports, which `ffstream.sources`' package brings in. A real layer 1, up to its first metrics from its loop."""
    from ffstream.config import ModelConfig

    cfg = RunConfig(stream=StreamConfig(source=f"synthetic:{FRAMES}", size=(8, 8), batch=BATCH), model=ModelConfig(layers=[8, 8]),
                    sleep=SleepConfig(enabled=False), topology=ipc_topology(tmp_path, 2))
    config_path = write_config(cfg, tmp_path / "run.json")
    above = socket(zmq.PULL)  # plays layer 2, so that layer 1's start-up handshake finds its peer
    above.bind(cfg.topology.layer_inputs[1])
    metrics = socket(zmq.SUB)  # plays the monitor: layer 1's metrics come once its loop turns
    metrics.setsockopt(zmq.SUBSCRIBE, b"")
    metrics.bind(cfg.topology.monitor_collect)
    argv = [sys.executable, "-X", "importtime", "-m", "ffstream", "worker", "layer", "--index", "1", "--config", str(config_path)]
    log = tmp_path / "layer1.log"
    layer = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(log, "wb"), env=env(), cwd=ROOT)
    try:
        while wire.decode(recv_multipart(metrics, timeout=120), max_payload=0).stream != "layer1":
            pass
    finally:
        codes = stop_all([layer])
    assert codes == [0], log.read_text()[-2000:]
    modules = imported(log)
    assert "torch" in modules and "ffstream.workers.layer.worker" in modules, "-X importtime listed no imports"
    assert not {m for m in modules if m.split(".")[0] in ("cv2", "av")}, "the layer worker imported OpenCV or PyAV"
