"""Each worker on its own, in a thread, over inproc:// (one shared context) or ipc:// in tmp_path.

The test plays every peer: it feeds a worker, reads what comes out, and checks
the contract of DESIGN.md §2-3: what is forwarded, what is learned, what a bad
message does (dropped, counted, and the worker goes on), and that stop() ends
the worker without a hang. No test sleeps to get past a slow joiner: readiness
comes from a request/reply handshake, or from publishing until something
arrives, always under a deadline.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter

import numpy as np
import pytest
import torch
import zmq

from ffstream.config.plans import LayerEndpoints, SleepPlan
from ffstream.ff import FFLayer, LayerConfig, LinearReadout, rms_normalize
from ffstream.ff.checkpoint import CheckpointError, layer_path
from ffstream.net import wire
from ffstream.workers.layer import LayerWorker
from ffstream.workers.monitor import MonitorWorker
from ffstream.workers.sink import SinkWorker
from ffstream.workers.sleep import SleepWorker
from ffstream.workers.source import SourceWorker
from tests.processes import eventually
from tests.rig import (
    JOIN_S,
    LAYER,
    ROWS,
    CountingSource,
    frames,
    layer_reasons,
    receive,
    running,
    send,
    unique,
    weights_of,
)


# the layer worker ---------------------------------------------------------------------------------
def test_layer_learns_and_passes_activity_up(start_layer):
    rig = start_layer()
    reference = FFLayer(LAYER)  # the same seed: the same initial weights
    first = frames(seq=7)
    below = wire.Message("activity", np.random.default_rng(1).random((ROWS, 16), dtype=np.float32), seq=8,
                         label=[0, 1, 2, 3], trace=[[1.5, 2.5, 3.5, 4.5]])
    for msg in (first, below):
        send(rig.input, msg)
        out = receive(rig.output)
        x = torch.from_numpy(np.asarray(msg.array).reshape(ROWS, -1).copy())
        h, _ = reference.learn(x)  # the activity sent on is computed before the step
        assert out.kind == "activity" and out.mode == "learn"
        assert out.seq == msg.seq and out.label == msg.label
        np.testing.assert_allclose(out.array, rms_normalize(h).numpy(), rtol=1e-5, atol=1e-6)
        # The layer appends its own goodness per row; what earlier layers wrote is kept.
        assert out.trace[:-1] == (msg.trace or [])
        np.testing.assert_allclose(out.trace[-1], reference.goodness(h).numpy(), atol=1e-3)
    # The activity goes on before the backward pass, so the step may still be running when it arrives.
    eventually(lambda: rig.worker.metrics()["updates"] == 2, what="the second step")
    m = rig.worker.metrics()
    assert (m["frames"], m["updates"], m["weights_version"], m["dropped"]) == (2 * ROWS, 2, 2, 0)
    for name, value in weights_of(reference).items():
        np.testing.assert_allclose(weights_of(rig.worker.layer)[name], value, rtol=1e-5, atol=1e-6)


def test_layer_eval_forwards_without_learning(start_layer):
    rig = start_layer()
    before = weights_of(rig.worker.layer)
    msg = frames(seq=3, mode="eval")
    send(rig.input, msg)
    out = receive(rig.output)
    x = torch.from_numpy(np.asarray(msg.array).reshape(ROWS, -1).copy())
    with torch.no_grad():
        expected = rms_normalize(FFLayer(LAYER)(x)).numpy()
    assert out.mode == "eval" and out.seq == 3
    # Blocks: the readout features of every layer so far (a dense layer's are its normalised activity),
    # then this layer's activity, the next layer's input.
    assert out.extra["blocks"] == [LAYER.width, LAYER.width]
    np.testing.assert_allclose(out.array, np.concatenate([expected, expected], axis=1), rtol=1e-5, atol=1e-6)

    # From the layer below: the layer reads the last block, the activity below, and puts its features and its activity in its place.
    carried = np.random.default_rng(2).random((ROWS, 5 + 16), dtype=np.float32)
    send(rig.input, wire.Message("activity", carried, seq=4, mode="eval", extra={"blocks": [5, 16]}))
    out = receive(rig.output)
    assert out.extra["blocks"] == [5, LAYER.width, LAYER.width]
    assert out.array.shape == (ROWS, 5 + 2 * LAYER.width)
    np.testing.assert_array_equal(out.array[:, :5], carried[:, :5])

    snap = rig.ask_snapshot()
    assert snap.extra["version"] == 0, "eval must not take an optimiser step"
    after = wire.unpack_tensors(snap.array, snap.extra["tensors"])
    for name in before:
        np.testing.assert_array_equal(after[name], before[name])
    m = rig.worker.metrics()
    assert (m["eval_frames"], m["frames"], m["updates"]) == (2 * ROWS, 0, 0)


def test_layer_answers_snapshot_with_its_weights_and_version(start_layer):
    rig = start_layer()
    for seq in range(3):
        send(rig.input, frames(seq))
        receive(rig.output)
    snap = rig.ask_snapshot()
    assert snap.kind == "snapshot"
    assert snap.extra["version"] == rig.worker.layer.version == 3
    assert snap.extra["layer"] == 1
    tensors = wire.unpack_tensors(snap.array, snap.extra["tensors"])
    expected = weights_of(rig.worker.layer)
    assert sorted(tensors) == sorted(expected) == ["bias", "weight"]
    for name in expected:
        np.testing.assert_array_equal(tensors[name], expected[name])


def test_layer_negative_inputs_are_counted_and_applied_at_the_next_step(start_layer):
    rig = start_layer()
    negatives = np.random.default_rng(9).random((3, 16), dtype=np.float32)
    send(rig.negative, wire.Message("negative_update", negatives, extra={"version": 0, "form": "inputs", "rows": 3}))
    eventually(lambda: rig.worker.metrics()["negative_updates"] == 1, what="the negative update to be counted")
    assert rig.worker.layer.version == 0, "a negative waits for the next step"

    positive = frames(seq=1)
    send(rig.input, positive)
    receive(rig.output)
    eventually(lambda: rig.worker.layer.version == 1, what="the step")  # the activity goes on before the step ends
    x = torch.from_numpy(np.asarray(positive.array).reshape(ROWS, -1).copy())
    with_negative, positive_only = FFLayer(LAYER), FFLayer(LAYER)
    with_negative.add_negative_inputs(torch.from_numpy(negatives))
    with_negative.learn(x)
    positive_only.learn(x)
    got = weights_of(rig.worker.layer)
    np.testing.assert_allclose(got["weight"], weights_of(with_negative)["weight"], rtol=1e-5, atol=1e-6)
    assert not np.allclose(got["weight"], weights_of(positive_only)["weight"]), "the negative changed nothing"
    m = rig.worker.metrics()
    assert m["weights_version"] == 1 and m["staleness"] == 0
    assert m["goodness_neg"] is not None and m["p_neg"] is not None


def _valid_parts() -> list[bytes]:
    return [bytes(p) for p in wire.encode(frames(seq=0))]


def _header(**changes) -> bytes:
    header = json.loads(_valid_parts()[0])
    header.update(changes)
    return json.dumps(header).encode()


NAN_FRAMES = np.full((ROWS, 1, 4, 4), np.nan, np.float32)
MALFORMED = {
    # case: (socket, parts, the reason it is counted under)
    "one part": ("input", lambda: _valid_parts()[:1], "parts"),
    "three parts": ("input", lambda: _valid_parts() + [b"x"], "parts"),
    "bad json header": ("input", lambda: [b"{not json", b""], "header_json"),
    "unknown dtype": ("input", lambda: [_header(dtype="float64"), b"\0" * ROWS * 16 * 8], "dtype"),
    "shape mismatch": ("input", lambda: [_header(shape=[ROWS, 16]), b"\0" * 10], "shape"),
    "nan payload": ("input", lambda: wire.encode(wire.Message("frames", NAN_FRAMES)), "non_finite"),
    "wrong input width": ("input", lambda: wire.encode(wire.Message("frames", np.ones((ROWS, 1, 3, 3), np.float32))), "input_shape"),
    "wrong kind on input": ("input", lambda: wire.encode(wire.Message("snapshot", np.ones(3, np.float32))), "kind"),
    "negative of the wrong width": (
        "negative", lambda: wire.encode(wire.Message("negative_update", np.ones((3, 15), np.float32), extra={"form": "inputs"})), "negative_shape"),
    "negative gradient of the wrong shape": (
        "negative",
        lambda: wire.encode(wire.Message("negative_update", np.ones(7, np.float32),
                                         extra={"form": "gradient", "tensors": [{"name": "weight", "shape": [7]}]})),
        "negative_shape"),
    "negative that is not an update": ("negative", lambda: wire.encode(frames(seq=0)), "kind"),
    "negative with nan": (
        "negative", lambda: wire.encode(wire.Message("negative_update", np.full((3, 16), np.nan, np.float32), extra={"form": "inputs"})), "non_finite"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_layer_drops_and_counts_a_malformed_message_then_goes_on(start_layer, case):
    rig = start_layer()
    target, parts, reason = MALFORMED[case]
    send(getattr(rig, target), [bytes(p) for p in parts()])
    eventually(lambda: rig.dropped() == 1, what=f"the {case} message to be dropped")
    assert layer_reasons(rig.worker) == Counter({reason: 1})

    send(rig.input, frames(seq=42))
    out = receive(rig.output)
    assert out.seq == 42 and out.array.shape == (ROWS, LAYER.width)
    eventually(lambda: rig.worker.metrics()["frames"] == ROWS, what="the step")  # it ends after the activity is sent
    m = rig.worker.metrics()
    assert (m["frames"], m["weights_version"], m["negative_updates"], m["dropped"]) == (ROWS, 1, 0, 1)


def test_layer_answers_every_snapshot_request_even_a_bad_one(start_layer):
    rig = start_layer()
    bad_requests = {
        "bad json": [b"{oops", b""],
        "one part": [b"just one"],
        "not a snapshot request": wire.encode(frames(seq=0)),
    }
    for name, parts in bad_requests.items():
        reply = rig.ask_snapshot([bytes(p) for p in parts])  # fails the test if REP never answers
        assert reply.kind == "control" and reply.extra["command"] == "error", name
    assert rig.ask_snapshot().kind == "snapshot", "REP is locked after a bad request"
    assert layer_reasons(rig.worker) == Counter({"header_json": 1, "parts": 1, "bad_snapshot_request": 1})
    assert rig.dropped() == 3


def test_layer_checkpoints_at_stop_and_resumes_from_it(start_layer, zmq_context, tmp_path):
    ckpt = tmp_path / "ck"
    rig = start_layer(checkpoint_dir=str(ckpt), checkpoint_every_s=3600)
    for seq in range(3):
        send(rig.input, frames(seq))
        receive(rig.output)
    assert not layer_path(ckpt, 1).exists(), "no periodic checkpoint is due yet"
    rig.worker.stop()
    eventually(lambda: layer_path(ckpt, 1).exists(), what="the checkpoint written at stop")
    saved = weights_of(rig.worker.layer)

    resumed = start_layer(checkpoint_dir=str(ckpt), checkpoint_every_s=3600)
    assert resumed.worker.layer.version == 3
    snap = resumed.ask_snapshot()
    assert snap.extra["version"] == 3
    tensors = wire.unpack_tensors(snap.array, snap.extra["tensors"])
    for name in saved:
        np.testing.assert_array_equal(tensors[name], saved[name])
    # It goes on from there: one more batch is version 4.
    send(resumed.input, frames(seq=3))
    receive(resumed.output)
    eventually(lambda: resumed.worker.layer.version == 4, what="the step")  # it ends after the activity is sent

    other = LayerEndpoints(unique("in"), unique("out"), unique("neg"), unique("snap"))
    for config in (LayerConfig(in_features=16, width=4), LayerConfig(in_features=9, width=8)):
        with pytest.raises(CheckpointError, match="saved for layer 16->8"):
            LayerWorker(1, config, other, checkpoint_dir=str(ckpt), context=zmq_context)


# the sleep worker ---------------------------------------------------------------------------------
def test_sleep_without_layers_times_out_and_stops(tmp_path, socket):
    """Nobody answers its snapshot requests: it must give up on each in time, make no negatives, and stop."""
    frames_addr = f"ipc://{tmp_path}/frames"
    publisher = socket(zmq.PUB)
    publisher.bind(frames_addr)
    sleeper = SleepWorker(
        frames_addr, [f"ipc://{tmp_path}/l1.snap"], [f"ipc://{tmp_path}/l1.neg"], [LAYER],
        plan=SleepPlan(negatives="hybrid", snapshot_timeout_ms=200),
    )  # its own context: stopping includes terminating it
    errors: list[BaseException] = []
    thread = threading.Thread(target=lambda: _run_catching(sleeper, errors), daemon=True)
    thread.start()
    try:
        # Publish until the requests have timed out twice (a lost one is asked again on the next frame).
        eventually(lambda: sleeper.snapshot_timeouts >= 2, timeout=10, what="two snapshot timeouts",
                   tick=lambda: send(publisher, frames(seq=0)))
        m = sleeper.metrics()
        assert (m["batches"], m["negatives"], m["refreshes"]) == (0, 0, 0)
        assert m["snapshot_timeouts"] >= 2
    finally:
        started = time.monotonic()
        sleeper.stop()
        thread.join(JOIN_S)
    assert not thread.is_alive(), "the sleep worker hung at stop with no layers"
    assert time.monotonic() - started < 2.0, "stop() took too long"
    assert not errors, errors


def _run_catching(worker, errors: list) -> None:
    try:
        worker.run()
    except BaseException as exc:
        errors.append(exc)


def test_sleep_fetches_a_snapshot_and_the_layer_gets_negatives(start_layer, zmq_context, socket):
    rig = start_layer()
    frames_addr = unique("frames")
    publisher = socket(zmq.PUB)
    publisher.bind(frames_addr)
    sleeper = SleepWorker(
        frames_addr, [rig.endpoints.snapshot], [rig.endpoints.negative], [LAYER],
        plan=SleepPlan(negatives="hybrid", sleep_every=1), context=zmq_context,
    )
    with running(sleeper):
        # The slow-joiner handshake: keep publishing until the first negative has reached the layer.
        eventually(lambda: rig.worker.negatives >= 1, timeout=15, what="a negative update at the layer",
                   tick=lambda: send(publisher, frames(seq=0)))
        eventually(lambda: sleeper.metrics()["batches"] >= 1, what="the sleep worker to count its batch")  # counted after the sends
        m = sleeper.metrics()
        assert m["refreshes"] >= 1
        assert m["batches"] >= 1 and m["negatives"] >= ROWS
        assert m["goodness_neg"][0] is not None
    # The layer takes the negatives' gradient at its next step and reports how it saw them.
    send(rig.input, frames(seq=1))
    receive(rig.output)
    eventually(lambda: rig.worker.metrics()["goodness_neg"] is not None, what="the step with the negatives")  # it ends after the send
    m = rig.worker.metrics()
    assert m["negative_updates"] >= 1 and m["dropped"] == 0
    assert m["goodness_neg"] is not None and m["staleness"] is not None


# the source worker --------------------------------------------------------------------------------
class LiveSource(CountingSource):
    live = True


def test_live_source_without_consumer_drops_and_counts_never_blocks(tmp_path):
    source = LiveSource(200)
    worker = SourceWorker(source, f"ipc://{tmp_path}/nobody", None, batch=10)
    with running(worker):
        eventually(lambda: worker.frames == 200, timeout=10, what="every live frame to be taken (a blocked source stalls)")
        m = worker.metrics()
        # Up to the output's high-water mark (4 batches) waits in the socket for a peer; all else is dropped.
        assert m["batches"] == 20 and m["live"] is True
        assert 200 - 4 * 10 <= m["dropped"] <= 200 and m["dropped"] % 10 == 0, m
    assert source.closed


def test_a_file_source_held_by_backpressure_still_beats_and_reports(zmq_context, socket, tmp_path):
    """A file source waits as long as the layer below is away (its container restarting, a partition) and must stay
    alive meanwhile: its heartbeat fresh for a liveness probe (`ffstream check --live`) and its metrics flowing. It
    used to wait inside the send and go stale after 30 s; Kubernetes' 60 s liveness probe would then have killed it."""
    from ffstream.monitor import health

    addr = unique("src-out")
    consumer = socket(zmq.PULL)
    consumer.setsockopt(zmq.RCVHWM, 1)
    consumer.bind(addr)  # and never read: the layer below is stuck
    worker = SourceWorker(CountingSource(10_000, num_classes=3), addr, None, batch=8, context=zmq_context,
                          metrics_interval=0.2, health_path=str(tmp_path / "source.json"))
    beat = lambda: json.loads((tmp_path / "source.json").read_text())["time"]
    with running(worker):
        eventually(lambda: worker.frames > 0, what="the first batches")
        eventually(lambda: health.check_file(tmp_path / "source.json", max_age_s=0.6, need_connected=False)[0], what="a heartbeat")
        for _ in range(2):  # the first second fills the sockets' queues; over the second the source is held
            held, since = worker.frames, beat()
            eventually(lambda since=since: beat() > since + 1.0, timeout=10, what="the heartbeat to go on while the source is held")
        assert worker.frames == held < 10_000, "the source was not held by backpressure: the test proves nothing"
        assert health.check_file(tmp_path / "source.json", max_age_s=0.6, need_connected=False)[0]


def test_file_source_delivers_every_frame_in_order_then_end(zmq_context, socket):
    addr = unique("src-out")
    consumer = socket(zmq.PULL)
    consumer.setsockopt(zmq.RCVHWM, 1)  # a slow consumer: the source must wait, not drop
    consumer.bind(addr)
    n, batch = 203, 8
    worker = SourceWorker(CountingSource(n, num_classes=3), addr, None, batch=batch, eval_every=2, context=zmq_context)
    with running(worker):
        received = []
        while not received or received[-1].kind != "control":
            received.append(receive(consumer))
        eventually(lambda: worker.ended, what="the source to mark its end")
        m = worker.metrics()
    end = received[-1]
    assert end.extra["command"] == "end"
    batches = math.ceil(n / batch)
    expected_order = [(mode, b) for b in range(batches) for mode in (("eval", "learn") if b % 2 == 0 else ("learn",))]
    assert [(msg.mode, msg.seq) for msg in received[:-1]] == expected_order
    learned = [msg for msg in received[:-1] if msg.mode == "learn"]
    values = np.concatenate([msg.array[:, 0, 0, 0] for msg in learned])
    np.testing.assert_array_equal(values, np.arange(n))
    assert sum((msg.label for msg in learned), []) == [i % 3 for i in range(n)]
    for ev, learn in zip(received[:-1], received[1:-1]):
        if ev.mode == "eval":  # the eval copy is the same frames, sent just before
            np.testing.assert_array_equal(ev.array, learn.array)
    assert m["frames"] == n and m["dropped"] == 0 and m["ended"] is True


# the monitor ------------------------------------------------------------------------------------
def metrics_message(name: str, **figures) -> wire.Message:
    return wire.Message("metrics", np.zeros(0, np.float32), stream=name, extra={"metrics": figures})


def test_monitor_forwards_metrics_and_drops_malformed(zmq_context, socket):
    collect, publish = unique("mon-in"), unique("mon-out")
    monitor = MonitorWorker(collect, publish, context=zmq_context)
    worker_pub = socket(zmq.PUB)
    worker_pub.connect(collect)
    client = socket(zmq.SUB)
    client.setsockopt(zmq.SUBSCRIBE, b"")
    client.connect(publish)
    with running(monitor):
        # Handshake: publish until the client hears one (both subscriptions have travelled by then).
        eventually(lambda: client.poll(0), timeout=10, what="the first forwarded metrics",
                   tick=lambda: send(worker_pub, metrics_message("layer9", frames=12)))
        first = receive(client)
        assert first.kind == "metrics" and first.stream == "layer9"
        assert first.extra["metrics"] == {"frames": 12}
        assert monitor.latest["layer9"] == {"frames": 12}

        worker_pub.send_multipart([b"garbage"])
        worker_pub.send_multipart([b"{not json", b""])
        send(worker_pub, metrics_message("marker", done=True))
        while True:  # everything the client gets is well formed; the marker comes after the bad ones
            msg = receive(client)
            if msg.stream == "marker":
                break
            assert msg.stream == "layer9"
        eventually(lambda: sum(monitor.dropped.values()) == 2, what="both malformed messages counted")
        # The count moves just after the send, so the client can hear the marker a moment before it does.
        eventually(lambda: monitor.forwarded >= 2, what="both forwards counted")
        m = monitor.metrics()
    assert m["rejected"] == {"parts": 1, "header_json": 1}
    assert m["forwarded"] >= 2 and m["workers"] == ["layer9", "marker"]


# the sink ----------------------------------------------------------------------------------------
def test_sink_progressive_accuracy_scores_and_end(zmq_context, socket, tmp_path):
    addr = unique("sink")
    scores = tmp_path / "scores.jsonl"
    num_classes, lr = 3, 0.05
    sink = SinkWorker(addr, readout_layers=[1], num_classes=num_classes, readout_lr=lr, scores_path=str(scores),
                      context=zmq_context)
    feeder = socket(zmq.PUSH)
    feeder.setsockopt(zmq.SNDTIMEO, 5000)
    feeder.connect(addr)
    rng = np.random.default_rng(0)
    readout = LinearReadout(6, num_classes, lr=lr, seed=0)  # the sink's head, replayed here: predict, then learn
    expected_correct = 0
    errors: list[BaseException] = []
    thread = threading.Thread(target=lambda: _run_catching(sink, errors), daemon=True)
    thread.start()
    try:
        eval_batches, rows = 200, 16  # accuracy_recent is an EMA (α 0.02) that starts at the first, chance-level batch
        for seq in range(eval_batches):
            labels = rng.integers(0, num_classes, rows)
            features = rng.normal(0, 0.1, (rows, 6)).astype(np.float32)  # layer 2's block: trivially separable
            features[np.arange(rows), labels] += 2.0
            layer1 = rng.random((rows, 4), dtype=np.float32)  # a block the head does not read
            send(feeder, wire.Message("activity", np.concatenate([layer1, features], axis=1), seq=seq,
                                      label=labels.tolist(), mode="eval", extra={"blocks": [4, 6]}))
            f, y = torch.from_numpy(features), torch.from_numpy(labels)
            expected_correct += int((readout.predict(f) == y).sum())
            readout.learn(f, y)
        # Blocks that do not add up to the width: dropped and counted, not scored.
        send(feeder, wire.Message("activity", np.ones((2, 10), np.float32), label=[0, 1], mode="eval", extra={"blocks": [3]}))
        traces = []
        for seq in range(5):
            trace = [[round(float(v), 4) for v in rng.random(ROWS) * 10] for _ in range(2)]
            traces.append(trace)
            send(feeder, wire.Message("activity", rng.random((ROWS, 6), dtype=np.float32), seq=seq, label=[0, 1, 2, 0], trace=trace))
        send(feeder, wire.Message("control", np.zeros(0, np.float32), extra={"command": "end"}))
        thread.join(10)  # the end marker alone must make it finish, without stop()
        assert not thread.is_alive(), "the sink did not finish at the end-of-stream marker"
    finally:
        sink.stop()
        thread.join(JOIN_S)
    assert not errors, errors
    m = sink.metrics()
    assert m["ended"] is True
    assert m["evaluated"] == eval_batches * rows
    assert sink.correct == expected_correct, "the sink must predict each frame before learning from it"
    assert m["accuracy_recent"] > 0.9, m
    assert m["frames"] == 5 * ROWS and m["dropped"] == 1
    lines = [json.loads(line) for line in scores.read_text().splitlines()]
    assert len(lines) == 5 * ROWS
    for line in lines:
        assert line["goodness"] == [layer[line["row"]] for layer in traces[line["seq"]]]
        assert line["label"] == [0, 1, 2, 0][line["row"]]


def test_recurrent_image_source_interleaves_two_batches_steps(zmq_context, socket):
    """Static images for a recurrent stack: A0 B0 A1 B1, then C0 C1 (the stream's odd batch out), then the end;
    max_frames counts the frames of both batches of a group."""
    addr = unique("src-out")
    consumer = socket(zmq.PULL)
    consumer.bind(addr)
    worker = SourceWorker(CountingSource(100, num_classes=3), addr, None, batch=4, max_frames=10, eval_every=0,
                          iterations=2, interleave=2, context=zmq_context)
    with running(worker):
        received = []
        while not received or received[-1].kind != "control":
            received.append(receive(consumer))
    steps = [(msg.extra["frame"], msg.extra["step"], msg.seq, len(msg.array)) for msg in received[:-1]]
    assert steps == [(0, 0, 0, 4), (1, 0, 2, 4), (0, 1, 1, 4), (1, 1, 3, 4), (2, 0, 4, 2), (2, 1, 5, 2)]
    assert [msg.array[0, 0, 0, 0] for msg in received[:-1]] == [0, 4, 0, 4, 8, 8], "each batch's own frames at every step"
    assert worker.frames == 10 and worker.batches == 3
