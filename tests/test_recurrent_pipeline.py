"""The recurrent pipeline: real recurrent layer workers over real sockets, and `ffstream run --recurrent`.

Feedback from the layer above arrives and changes what a layer computes; the
newest feedback wins and nothing waits for it, so a layer above that falls
behind makes the top-down input older, never the layer below slower.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zmq

from ffstream.config import DEFAULT_LR, RECURRENT_IMAGE_LR
from ffstream.config.plans import LayerEndpoints
from ffstream.ff import LayerConfig, rms_normalize
from ffstream.ff.checkpoint import checkpoint_config, layer_path
from ffstream.ff.recurrent import RecurrentFFLayer
from ffstream.net import wire
from ffstream.workers.layer.recurrent import RecurrentLayerWorker
from tests.processes import ROOT, env, eventually
from tests.rig import frames, receive, running, send, unique

BELOW = LayerConfig(in_features=16, width=8, lr=0.01, seed=1)  # frames are (1, 4, 4)
ABOVE = LayerConfig(in_features=8, width=6, lr=0.01, seed=2)
ROWS = 4
VIDEO = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


def endpoints() -> LayerEndpoints:
    return LayerEndpoints(unique("in"), unique("out"), unique("neg"), unique("snap"))


def test_feedback_arrives_and_changes_the_output(zmq_context, socket):
    """Layer 1 of 2, static images: the same frames at step 1 with the layer above's step-0 activity as top-down."""
    ep, feedback = endpoints(), unique("fb")
    worker = RecurrentLayerWorker(1, BELOW, ep, top_down_features=ABOVE.width, feedback_input=feedback, feedback_output=None,
                                  iterations=2, context=zmq_context)
    out = socket(zmq.PULL)
    out.bind(ep.output)
    with running(worker):
        inp, fb = socket(zmq.PUSH), socket(zmq.PUSH)
        inp.connect(ep.input)
        fb.connect(feedback)
        msg = frames(seq=0, mode="eval", extra={"frame": 0, "step": 0, "iterations": 2})
        send(inp, msg)
        without = receive(out)  # the handshake too: the worker is polling
        top_down = np.random.default_rng(5).random((ROWS, ABOVE.width), dtype=np.float32)
        send(fb, wire.Message("feedback", top_down, seq=1, mode="eval", extra={"frame": 1, "step": 0}))
        eventually(lambda: worker.feedback_in.sock.poll(0) or worker.feedback_received, what="the feedback to arrive")
        send(inp, frames(seq=1, seed=0, mode="eval", extra={"frame": 1, "step": 1, "iterations": 2}))  # the same pixels
        heard = receive(out)
    x = torch.from_numpy(np.asarray(msg.array).reshape(ROWS, -1).copy())
    reference = RecurrentFFLayer(BELOW, ABOVE.width)  # same seed, and eval copies never learn
    with torch.no_grad():
        alone = reference(reference.pack(x, torch.zeros(ROWS, ABOVE.width), torch.zeros(ROWS, BELOW.width)))
        told = reference(reference.pack(x, torch.from_numpy(top_down), torch.zeros(ROWS, BELOW.width)))
    # An eval copy carries every layer's readout features, then the activity for the next layer: the last block.
    np.testing.assert_allclose(without.array[:, -BELOW.width :], rms_normalize(alone).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(heard.array[:, -BELOW.width :], rms_normalize(told).numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(heard.array, without.array), "the top-down input must change the layer's activity"
    assert (worker.rows_without_feedback, worker.rows_with_feedback) == (ROWS, ROWS)


def test_interleaved_batches_keep_their_own_state_and_feedback(zmq_context, socket):
    """Layer 1 of 2, static images, two batches' steps in turn (A0 B0 A1 B1, as the source sends them): step 1 of
    each batch continues from that batch's own step 0 and hears the layer above on that batch."""
    ep, feedback = endpoints(), unique("fb")
    worker = RecurrentLayerWorker(1, BELOW, ep, top_down_features=ABOVE.width, feedback_input=feedback, feedback_output=None,
                                  iterations=2, context=zmq_context)
    out = socket(zmq.PULL)
    out.bind(ep.output)
    rng = np.random.default_rng(6)
    top_down = {frame: rng.random((ROWS, ABOVE.width), dtype=np.float32) for frame in (0, 1)}
    with running(worker):
        inp, fb = socket(zmq.PUSH), socket(zmq.PUSH)
        inp.connect(ep.input)
        fb.connect(feedback)
        first = {frame: frames(seq=frame * 2, seed=frame, mode="eval", extra={"frame": frame, "step": 0, "iterations": 2}) for frame in (0, 1)}
        for frame in (0, 1):
            send(inp, first[frame])
            receive(out)
        heard = {}
        for frame in (0, 1):
            send(fb, wire.Message("feedback", top_down[frame], seq=frame * 2, mode="eval", extra={"frame": frame, "step": 0}))
            eventually(lambda: worker.feedback_in.sock.poll(0), what="the feedback to arrive")
            send(inp, frames(seq=frame * 2 + 1, seed=frame, mode="eval", extra={"frame": frame, "step": 1, "iterations": 2}))
            heard[frame] = receive(out)
    reference = RecurrentFFLayer(BELOW, ABOVE.width)  # same seed, and eval copies never learn
    for frame in (0, 1):
        x = torch.from_numpy(np.asarray(first[frame].array).reshape(ROWS, -1).copy())
        with torch.no_grad():
            h0 = reference(reference.pack(x, torch.zeros(ROWS, ABOVE.width), torch.zeros(ROWS, BELOW.width)))
            h1 = reference(reference.pack(x, torch.from_numpy(top_down[frame]), h0))
        np.testing.assert_allclose(heard[frame].array[:, -BELOW.width :], rms_normalize(h1).numpy(), rtol=1e-5, atol=1e-6)
    assert worker.rows_with_feedback == 2 * ROWS


def test_a_slow_layer_above_never_stalls_the_layer_below(zmq_context, socket):
    """Video mode, two real recurrent layers. The layer above gets only every 10th batch (it has fallen behind);
    the layer below learns every batch at once, with the newest (older and older) feedback there is."""
    ep1, ep2, feedback = endpoints(), endpoints(), unique("fb")
    below = RecurrentLayerWorker(1, BELOW, ep1, top_down_features=ABOVE.width, feedback_input=feedback, feedback_output=None,
                                 context=zmq_context)
    above = RecurrentLayerWorker(2, ABOVE, ep2, top_down_features=0, feedback_input=None, feedback_output=feedback,
                                 context=zmq_context)
    out1, out2 = socket(zmq.PULL), socket(zmq.PULL)
    out1.bind(ep1.output)
    out2.bind(ep2.output)
    batches = 60
    with running(below), running(above):
        inp1, inp2 = socket(zmq.PUSH), socket(zmq.PUSH)
        inp1.connect(ep1.input)
        inp2.connect(ep2.input)
        for seq in range(batches):
            send(inp1, frames(seq=seq))
            activity = receive(out1)
            if seq % 10 == 0:  # the slow layer above: it sees one batch in ten
                send(inp2, activity)
                receive(out2)
                eventually(lambda: below.feedback_in.sock.poll(0) or below.feedback_received > seq // 10, what="feedback")
    assert below.figures.frames == batches * ROWS, "the layer below learned every batch"
    assert above.figures.frames == batches // 10 * ROWS
    assert above.feedback_sent == batches // 10
    assert below.rows_with_feedback > (batches - 10) * ROWS, "after the first feedback, every batch heard from above"
    assert below.feedback_lag.get() > 1, "and what it heard was the newest there was, however old"


def run_recurrent(tmp_path: Path, *args: str, rate_fps: float | None = None) -> dict:
    """`ffstream run --recurrent`; rate_fps paces the source, so that layer 1 cannot finish before any feedback exists."""
    summary = tmp_path / "summary.json"
    run_env = env() if rate_fps is None else {**env(), "FFSTREAM_STREAM_RATE_FPS": str(rate_fps)}
    run = subprocess.run(
        [sys.executable, "-m", "ffstream", "run", "--set", "model.recurrent=true", "--no-progress", "--summary-json", str(summary),
         "--monitor", f"ipc://{tmp_path}/monitor", *args],
        capture_output=True, text=True, env=run_env, cwd=ROOT, timeout=240,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(summary.read_text())


@pytest.mark.skipif(not VIDEO.exists(), reason="opencv-doc's vtest.avi is not installed")
def test_recurrent_run_on_a_real_video(tmp_path):
    s = run_recurrent(tmp_path, "--source", str(VIDEO), "--max-frames", "96", "--set", "stream.batch=8", "--set", "model.layers=64,64,64",
                      "--scores", str(tmp_path / "scores.jsonl"), "--checkpoint-dir", str(tmp_path / "ck"))
    assert s["sink"]["frames"] == 96
    for layer in s["layers"]:
        assert layer["frames"] == 96 and layer["negative_updates"] > 0, layer
    assert s["layers"][0]["rows_with_feedback"] > 0 and s["layers"][1]["rows_with_feedback"] > 0
    assert s["layers"][2]["rows_with_feedback"] is None or s["layers"][2]["rows_with_feedback"] == 0  # the top hears nobody
    rows = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert len(rows) == 96 and all(len(r["goodness"]) == 3 for r in rows)
    assert checkpoint_config(layer_path(tmp_path / "ck", 1))[0].lr == DEFAULT_LR  # video: one step a frame, the usual rate
    # `ffstream score` on its checkpoints: the frames as steps, with top-down and without, on one line.
    score = subprocess.run([sys.executable, "-m", "ffstream", "score", "--source", str(VIDEO), "--checkpoint-dir", str(tmp_path / "ck"),
                            "--out", str(tmp_path / "scores.csv")], capture_output=True, text=True, env=env(), cwd=ROOT, timeout=240)
    assert score.returncode == 0, score.stderr[-3000:]
    line = score.stdout.strip().splitlines()[-1]
    assert line.startswith("recurrent vs feedforward: with top-down goodness") and "without top-down goodness" in line, line
    assert len((tmp_path / "scores.csv").read_text().splitlines()) == 795 + 1  # every frame of vtest.avi, and the header


def test_recurrent_run_on_fashion_mnist_repeats_each_image(tmp_path):
    s = run_recurrent(tmp_path, "--source", "fashion-mnist", "--max-frames", "256", "--set", "stream.batch=64", "--set", "model.layers=32,32",
                      "--set", "model.iterations=3", "--set", "model.window=2,3", "--set", "sleep.sleep_every=6", "--checkpoint-dir", str(tmp_path / "ck"), rate_fps=128)
    assert s["task"] == "supervised"
    assert s["sink"]["frames"] == 256  # each image counted once, at its last step
    assert s["sink"]["evaluated"] == 256  # and scored once, at the window's last step
    for layer in s["layers"]:
        assert layer["frames"] == 3 * 256 and layer["negative_updates"] > 0, layer
    assert s["layers"][0]["rows_with_feedback"] > 0
    # sleep.sleep_every counts layer steps: 3 a batch, so a fresh snapshot before batches 1 and 3 of the 4
    assert s["sleep"]["refreshes"] == 2, s["sleep"]
    # Each image makes 3 layer steps: without --lr the layers learn at the recurrent image rate.
    assert all(checkpoint_config(layer_path(tmp_path / "ck", i))[0].lr == RECURRENT_IMAGE_LR for i in (1, 2))
    # `ffstream eval` scores the recurrent checkpoints the paper's way (labels clamped at the top) and by the head.
    ev = subprocess.run([sys.executable, "-m", "ffstream", "eval", "--checkpoint-dir", str(tmp_path / "ck"), "--source", "fashion-mnist:test",
                         "--json"], capture_output=True, text=True, env=env(), cwd=ROOT, timeout=240)
    assert ev.returncode == 0, ev.stderr[-3000:]
    result = json.loads(ev.stdout)
    assert result["recurrent"]["iterations"] == 3 and result["recurrent"]["window"] == [2, 3]
    assert 0 <= result["accuracy_energy"] <= 1 and 0 <= result["accuracy_softmax"] <= 1 and result["n"] == 10000
