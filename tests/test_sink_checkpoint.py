"""A sink that remembers (issue 20): its head and counters are saved on a period, loaded at start, never overwritten
by an untrained head."""

from __future__ import annotations

import json

import numpy as np
import torch
import zmq

from ffstream.net import wire
from ffstream.offline.readout_store import load_readout, readout_path
from ffstream.workers.sink import SINK_STATE, SinkWorker
from tests.processes import eventually
from tests.rig import running, send, unique

CLASSES, ROWS, WIDTH = 3, 16, 6


def batch(rng, seq: int) -> tuple[wire.Message, np.ndarray, np.ndarray]:
    """An eval batch whose second block (the head's) is trivially separable: label j lifts feature j."""
    labels = rng.integers(0, CLASSES, ROWS)
    features = rng.normal(0, 0.1, (ROWS, WIDTH)).astype(np.float32)
    features[np.arange(ROWS), labels] += 2.0
    array = np.concatenate([rng.random((ROWS, 4), dtype=np.float32), features], axis=1)
    msg = wire.Message("activity", array, seq=seq, label=labels.tolist(), mode="eval", extra={"blocks": [4, WIDTH]})
    return msg, features, labels


def start_sink(zmq_context, socket, directory, **kwargs):
    addr = unique("sink")
    sink = SinkWorker(addr, readout_layers=[1], num_classes=CLASSES, readout_lr=0.05, checkpoint_dir=str(directory),
                      context=zmq_context, **kwargs)
    feeder = socket(zmq.PUSH)
    feeder.setsockopt(zmq.SNDTIMEO, 5000)
    feeder.connect(addr)
    return sink, feeder


def saved_state(directory) -> dict:
    try:
        return json.loads((directory / SINK_STATE).read_text())
    except (OSError, ValueError):
        return {}


def test_sink_saves_on_a_period_and_a_restarted_sink_resumes_its_head(zmq_context, socket, tmp_path):
    rng = np.random.default_rng(0)
    first, feeder = start_sink(zmq_context, socket, tmp_path, checkpoint_every_s=0.1)
    batches = 40
    with running(first):
        for seq in range(batches):
            send(feeder, batch(rng, seq)[0])
        eventually(lambda: first.evaluated == batches * ROWS, timeout=60, what="the first sink to learn every batch")  # the first Adam step imports much of torch
        # Saved while it runs (a kill -9 now loses at most one period), not only at close.
        eventually(lambda: saved_state(tmp_path).get("evaluated") == batches * ROWS, what="a periodic save of the sink")
    trained = {k: v.clone() for k, v in first.readout.state_dict().items()}
    saved_bytes = readout_path(tmp_path).read_bytes()

    # A restart that sees no eval batch before it stops must not replace the trained head with a new one.
    idle, _ = start_sink(zmq_context, socket, tmp_path, checkpoint_every_s=0.1)
    with running(idle):
        eventually(lambda: hasattr(idle, "input"), what="the idle sink's setup")
        assert idle.evaluated == batches * ROWS and idle.correct == first.correct  # the counters came back
    assert readout_path(tmp_path).read_bytes() == saved_bytes
    assert saved_state(tmp_path)["evaluated"] == batches * ROWS

    # A restart that does see eval batches predicts with the saved head, before it learns anything.
    resumed, feeder = start_sink(zmq_context, socket, tmp_path)
    msg, features, labels = batch(rng, batches)
    saved, _ = load_readout(tmp_path)
    expected_hits = int((saved.predict(torch.from_numpy(features)) == torch.from_numpy(labels)).sum())
    with running(resumed):
        send(feeder, msg)
        eventually(lambda: resumed.evaluated == (batches + 1) * ROWS, what="the resumed sink to score a batch")
    assert resumed.correct - first.correct == expected_hits >= 0.9 * ROWS  # a fresh head would be at chance
    # Adam's state came back with the head: its step count goes on from the first sink's (a fresh Adam would be at 1)
    assert adam_steps(resumed.readout) == adam_steps(first.readout) + 1 > 1
    for key, value in trained.items():  # the head it started from is the trained one (one Adam step since)
        assert torch.allclose(resumed.readout.state_dict()[key], value, atol=0.1), key


def test_a_head_for_other_layer_widths_is_not_used(zmq_context, socket, tmp_path):
    rng = np.random.default_rng(1)
    first, feeder = start_sink(zmq_context, socket, tmp_path)
    with running(first):
        send(feeder, batch(rng, 0)[0])
        eventually(lambda: first.evaluated == ROWS, timeout=60, what="the first sink to score a batch")
    other, feeder = start_sink(zmq_context, socket, tmp_path)
    wider = wire.Message("activity", np.ones((ROWS, 4 + WIDTH), np.float32), label=[0] * ROWS, mode="eval",
                         extra={"blocks": [5, WIDTH - 1]})  # the same width in all, cut differently: another stack
    with running(other):
        send(feeder, wider)
        eventually(lambda: other.readout is not None, what="the second sink to build a head")
        assert other.evaluated == ROWS  # the old head's counts were dropped with it


def test_an_online_probe_sink_saves_its_head_folded_and_resumes_it_exactly(zmq_context, socket, tmp_path):
    """Unsupervised streams (online_probe): the saved head reads raw features (its statistics folded in, for `ffstream
    eval` and hard negatives), and a restarted sink predicts as the first one would have."""
    rng = np.random.default_rng(2)
    first, feeder = start_sink(zmq_context, socket, tmp_path, online_probe=True)
    batches = 20
    with running(first):
        for seq in range(batches):
            send(feeder, batch(rng, seq)[0])
        eventually(lambda: first.evaluated == batches * ROWS, timeout=60, what="the first sink to learn every batch")
    msg, features, labels = batch(rng, batches)
    x = torch.from_numpy(features)
    expected = first.readout.predict(x)  # the live probe's prediction on standardised features
    saved, _ = load_readout(tmp_path)
    assert torch.equal(saved.predict(x), expected)  # the folded head, read on raw features, agrees
    resumed, feeder = start_sink(zmq_context, socket, tmp_path, online_probe=True)
    with running(resumed):
        send(feeder, msg)
        eventually(lambda: resumed.evaluated == (batches + 1) * ROWS, what="the resumed sink to score a batch")
    assert resumed.correct - first.correct == int((expected == torch.from_numpy(labels)).sum()) >= 0.9 * ROWS
    assert adam_steps(resumed.readout.head) == adam_steps(first.readout.head) + 1 > 1  # Adam's state came back too


def adam_steps(head) -> int:
    """The Adam step count of a LinearReadout's weight."""
    return int(head.optimizer.state[head.linear.weight]["step"])
