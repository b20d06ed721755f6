"""Pairing positives with their negatives, hard negatives from the sink's head, and phased sleep."""

from __future__ import annotations

import numpy as np
import torch
import zmq

from ffstream.ff import FFLayer
from ffstream.net import wire
from ffstream.workers.pairing import Pairing, merged
from ffstream.workers.sink import SinkWorker
from ffstream.workers.source import SourceWorker
from tests.processes import eventually
from tests.rig import LAYER, ROWS, CountingSource, frames, paired, receive, running, send, unique, weights_of


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_pairing_holds_a_positive_until_its_negatives_arrive():
    clock = Clock()
    pairing = Pairing(hold_s=2.0, clock=clock)
    positives = torch.ones(2, 3)  # a held micro-batch of inputs
    pairing.add_positive([3, 4], positives)
    pairing.add_negative(3, torch.zeros(1, 2))
    assert (pairing.ready_rows(), pairing.held_rows()) == (0, 2)
    assert pairing.ready() == []  # batch 4's negatives are still missing
    pairing.add_negative(4, torch.ones(1, 2))
    assert (pairing.ready_rows(), pairing.held_rows()) == (2, 2)
    ((held, negatives),) = pairing.ready()
    assert held is positives and [float(n.sum()) for n in negatives] == [0.0, 2.0]
    assert pairing.paired == 1 and not pairing.held and not pairing.negatives


def test_held_positives_keep_their_labels_for_the_step():
    """Channel-wise competition learns from the positives' labels: a held positive must step with them, merged or late."""
    clock = Clock()
    pairing = Pairing(hold_s=2.0, clock=clock)
    pairing.add_positive([1], torch.zeros(2, 3), torch.tensor([4, 7]))
    pairing.add_positive([2], torch.ones(1, 3), torch.tensor([9]))
    pairing.add_negative(1, torch.zeros(2, 3))
    pairing.add_negative(2, torch.zeros(1, 3))
    ready = pairing.ready_by_seq()
    inputs, labels = merged([held for held, _ in ready])
    assert inputs.shape == (3, 3) and labels.tolist() == [4, 7, 9]
    pairing.add_positive([3], torch.ones(1, 3), torch.tensor([2]))
    clock.now = 2.5
    (late,), _ = pairing.expired()
    assert late.labels.tolist() == [2]
    pairing.add_positive([4], torch.ones(1, 3))
    assert merged(pairing.held)[1] is None  # an unlabelled stream holds no labels


def test_pairing_lets_nothing_wait_past_its_deadline():
    clock = Clock()
    pairing = Pairing(hold_s=2.0, clock=clock)
    pairing.add_positive([1], [torch.ones(1)])
    pairing.add_negative(9, torch.zeros(1, 1))  # its positive has not come yet: it may wait
    assert pairing.expired() == ([], [])
    clock.now = 2.5
    late, orphans = pairing.expired()
    assert len(late) == 1 and len(orphans) == 1
    assert pairing.unpaired_positives == 1 and pairing.unpaired_negatives == 1


def test_layer_steps_only_when_the_negatives_of_the_same_frames_are_in(start_layer):
    rig = start_layer(**paired())
    before = weights_of(rig.worker.layer)
    positive = frames(seq=5)
    send(rig.input, positive)
    receive(rig.output)  # the activity is passed on at once ...
    assert rig.worker.layer.version == 0  # ... but the step waits for the negatives of batch 5
    negative = np.random.default_rng(2).random((ROWS, 16), dtype=np.float32)
    send(rig.negative, wire.Message("negative_update", negative, seq=5, extra={"version": 0, "form": "inputs"}))
    eventually(lambda: rig.worker.layer.version == 1, what="the paired step")
    reference = FFLayer(LAYER)  # the same seed: one step on positive plus negative, as the interleaved reference
    np.testing.assert_allclose(weights_of(reference)["weight"], before["weight"])
    reference.add_negative_inputs(torch.from_numpy(negative))
    reference.learn(torch.from_numpy(positive.array.reshape(ROWS, -1)))
    after = weights_of(rig.worker.layer)
    np.testing.assert_allclose(after["weight"], weights_of(reference)["weight"], rtol=1e-5, atol=1e-6)
    assert rig.worker.metrics()["paired"] == 1


def test_sink_serves_its_head_for_hard_negatives(zmq_context, socket):
    data, snap = unique("sink"), unique("sink-snap")
    sink = SinkWorker(data, snapshot_addr=snap, readout_layers=[1], num_classes=3, context=zmq_context, exit_on_end=False)
    feeder, asker = socket(zmq.PUSH), socket(zmq.REQ)
    with running(sink):
        feeder.connect(data)
        asker.connect(snap)
        send(asker, wire.Message("snapshot_request", np.zeros(0, np.float32)))
        reply = receive(asker)
        assert reply.kind == "control" and reply.extra["command"] == "empty"  # no head before the first labelled batch
        features = np.random.default_rng(0).random((ROWS, 10), dtype=np.float32)
        send(feeder, wire.Message("activity", features, label=[0, 1, 2, 0], mode="eval", extra={"blocks": [4, 6]}))
        eventually(lambda: sink.readout is not None, what="the head to exist")
        send(asker, wire.Message("snapshot_request", np.zeros(0, np.float32)))
        reply = receive(asker)
    assert reply.kind == "snapshot" and reply.extra["layers"] == [1]
    tensors = wire.unpack_tensors(reply.array, reply.extra["tensors"])
    assert tensors["linear.weight"].shape == (3, 6)  # it reads layer 2's block only


def test_phased_source_pauses_until_the_sleep_worker_says_resume(zmq_context, socket):
    out, control = unique("src-out"), unique("src-ctl")
    consumer, sleeper = socket(zmq.PULL), socket(zmq.PUSH)
    consumer.bind(out)
    source = SourceWorker(CountingSource(40), out, None, batch=4, phase_length=3, control_addr=control, context=zmq_context)
    with running(source):
        sleeper.connect(control)
        got = [receive(consumer) for _ in range(3)]
        eventually(lambda: source.pauses == 1, what="the pause after the first phase")
        assert not consumer.poll(300), "the source must not wake before it is told to"
        send(sleeper, wire.Message("control", np.zeros(0, np.float32), extra={"command": "resume"}))
        got.append(receive(consumer))
    assert [m.seq for m in got] == [0, 1, 2, 3]
