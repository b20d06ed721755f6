"""`--set topology.features=ADDR`: during a real run the sink publishes every learned frame's activity per layer, in
order, none dropped on a file source (the layers carry the chosen layers' activity up: ffstream/net/carry.py)."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import zmq

from ffstream.net import wire
from tests.media import write_video
from tests.processes import ROOT, await_metrics, env, monitored_run

FRAMES = 48
BATCH = 4


def test_a_subscriber_gets_every_frame_of_the_chosen_layers_in_order(tmp_path, zmq_context):
    """Handshake: none is needed for the frames after the first one received. The subscriber connects to the sink's
    address before the run starts (zmq retries until the sink binds); the sink binds before any frame can reach it.
    The test checks contiguity from the first seq it receives, and that it got all FRAMES, so a late join would fail."""
    write_video(tmp_path / "clip.mp4", n=FRAMES)
    addr = f"ipc://{tmp_path}/features"
    sub = zmq_context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVHWM, 0)  # the test reads only as fast as it can: queue rather than lose
    sub.connect(addr)
    run = subprocess.Popen(
        [sys.executable, "-m", "ffstream", "run", "--source", str(tmp_path / "clip.mp4"), "--set", "model.layers=30,20,10",
         "--set", f"stream.batch={BATCH}", "--set", f"topology.features={addr}",
         "--set", "topology.features_layers=1,3",  # layer 2 is left out on the way up, layer 1 carried past it
         "--monitor", f"ipc://{tmp_path}/mon", "--http", "none", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**env(), "TMPDIR": str(tmp_path)}, cwd=ROOT,
    )
    try:
        got = receive_features(sub, run)
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0, err[-3000:]
    seqs = [m.seq for m in got]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"out of order or with gaps: {seqs}"
    assert sum(len(m.array) for m in got) == FRAMES, f"{len(got)} messages, seqs {seqs}"
    for m in got:
        assert m.kind == "activity" and m.array.shape[1] == 30 + 10 and m.array.dtype == np.float32
        assert m.extra["blocks"] == [30, 10] and m.extra["block_layers"] == [1, 3]
        assert len(m.trace) == 3 and all(len(layer) == len(m.array) for layer in m.trace)  # goodness per layer per row
        for block in np.split(m.array.astype(np.float64), [30], axis=1):  # each layer's own activity
            ms = (block ** 2).mean(axis=1)
            assert np.allclose(ms[ms > 0], 1.0, atol=1e-3)  # normalised per layer: mean square 1


def test_a_subscriber_that_connects_after_the_run_started_still_gets_the_first_frame(tmp_path, zmq_context):
    """On a file source the sink's first frame waits for the first subscriber: the subscriber here connects only once
    the sink reports frames in and none published (it waits), and must still get seq 0 and every frame after it."""
    write_video(tmp_path / "clip.mp4", n=FRAMES)
    addr = f"ipc://{tmp_path}/features"
    with monitored_run(tmp_path, "--source", str(tmp_path / "clip.mp4"), "--set", "model.layers=20,10", "--set", f"stream.batch={BATCH}",
                       "--set", f"topology.features={addr}", "--http", "none") as (run, monitor):
        await_metrics(run, monitor, "sink", lambda m: m.get("frames", 0) > 0 and m.get("features_sent") == 0)
        sub = zmq_context.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.setsockopt(zmq.RCVHWM, 0)
        sub.connect(addr)
        got = receive_features(sub, run)
        _, err = run.communicate(timeout=120)
    assert run.returncode == 0, err[-3000:]
    assert [m.seq for m in got] == list(range(len(got))) and sum(len(m.array) for m in got) == FRAMES


def receive_features(sub: zmq.Socket, run: subprocess.Popen, timeout_s: float = 240) -> list[wire.Message]:
    """What the subscriber gets until FRAMES frames have come, or the run has ended and nothing more is coming."""
    got: list[wire.Message] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and sum(len(m.array) for m in got) < FRAMES:
        if sub.poll(200):
            got.append(wire.decode(sub.recv_multipart()))
        elif run.poll() is not None and not sub.poll(2000):
            break
    return got
