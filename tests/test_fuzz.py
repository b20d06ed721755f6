"""Fuzzing every worker kind with hypothesis: malformed, oversized and non-finite messages.

Each test runs one worker in a thread over inproc:// and throws FUZZ_EXAMPLES × BATCH
(= 10,000) bad messages at one of its sockets. The contract (issue 6): the worker never
crashes, every bad message is dropped and counted, and a valid message still goes
through afterwards. Messages are drawn in lists, so hypothesis builds 10,000 of them
in 50 examples instead of 10,000 slow ones.
"""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ffstream.net import wire
from ffstream.workers import source as source_worker
from ffstream.workers.monitor import MonitorWorker
from ffstream.workers.sink import SinkWorker
from ffstream.workers.sleep import SleepWorker
from ffstream.workers.source import SourceWorker
from tests.processes import eventually
from tests.rig import LAYER, CountingSource, frames, layer_reasons, receive, running, send, unique

FUZZ_EXAMPLES = int(os.environ.get("FFSTREAM_FUZZ_EXAMPLES", "50"))
BATCH = 200  # messages per example: 50 × 200 = 10,000 per worker kind
FUZZ_SETTINGS = settings(
    max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=False,
    suppress_health_check=list(HealthCheck),
)
TIMES: list = []
SENT: dict[str, int] = {}  # worker kind -> bad messages thrown, printed at the end (BENCHMARKS.md)


# strategies ---------------------------------------------------------------------------------------
def _header(kind: str = "frames", shape=(4, 16), dtype: str = "float32", **extra) -> dict:
    return {"v": 1, "kind": kind, "stream": "fuzz", "seq": 0, "t_src": 1.0, "shape": list(shape), "dtype": dtype, **extra}


def _parts(header: dict | bytes, payload: bytes) -> list[bytes]:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return [raw, payload]


_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
junk_json = _scalars | st.lists(_scalars, max_size=3) | st.dictionaries(st.text(max_size=4), _scalars, max_size=2)  # flat: recursion is slow to draw


def _wrong_type(key: str):
    return junk_json.filter(lambda v: not isinstance(v, wire.REQUIRED[key]) or isinstance(v, bool))


# Built once: a strategy made inside a draw is validated again on every draw, which is slow.
WRONG_TYPE = {key: _wrong_type(key) for key in wire.REQUIRED}
NOT_VERSION = st.integers().filter(lambda v: v != 1)
NOT_DTYPE = st.text(max_size=10).filter(lambda d: d not in wire.DTYPES)
NOT_SHAPE = st.lists(junk_json, min_size=1, max_size=3).filter(
    lambda s: not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in s))
NOT_NONE = junk_json.filter(lambda v: v is not None)
NOT_MODE = junk_json.filter(lambda v: v not in wire.MODES)
NOT_TRACE = junk_json.filter(lambda t: t is not None and not wire._is_trace(t))
NOT_RESUME = junk_json.filter(lambda c: c != "resume")
BAD_PARTS = st.lists(st.binary(max_size=16), min_size=1, max_size=5).filter(lambda p: len(p) != 2)
TWO_BLOBS = st.lists(st.binary(max_size=64), min_size=2, max_size=2)
NOT_JSON = st.binary(max_size=40).map(lambda b: b"{" + b)


@st.composite
def wire_broken(draw, kind: str = "frames") -> list[bytes]:
    """A message that wire.decode must refuse, one way of breaking it per draw."""
    how = draw(st.sampled_from(["bytes", "parts", "json", "field", "version", "dtype", "shape", "length", "nan", "huge", "label", "mode", "trace"]))
    good = np.random.default_rng(draw(st.integers(0, 2**16))).random((4, 16), dtype=np.float32)
    if how == "bytes":
        return draw(TWO_BLOBS)
    if how == "parts":
        return draw(BAD_PARTS)
    if how == "json":
        return [draw(NOT_JSON), good.tobytes()]
    if how == "field":
        h = _header(kind)
        key = draw(st.sampled_from(sorted(wire.REQUIRED)))
        if draw(st.booleans()):
            del h[key]
        else:
            h[key] = draw(WRONG_TYPE[key])
        return _parts(h, good.tobytes())
    if how == "version":
        return _parts(_header(kind, v=draw(NOT_VERSION)), good.tobytes())
    if how == "dtype":
        return _parts(_header(kind, dtype=draw(NOT_DTYPE)), good.tobytes())
    if how == "shape":
        return _parts(_header(kind, shape=draw(NOT_SHAPE)), good.tobytes())
    if how == "length":
        cut = draw(st.integers(0, good.nbytes - 1))
        longer = good.tobytes() + draw(st.binary(min_size=1, max_size=3))
        return _parts(_header(kind), longer if draw(st.booleans()) else good.tobytes()[:cut])  # never exactly right
    if how == "nan":
        bad = good.copy()
        bad.flat[draw(st.integers(0, bad.size - 1))] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
        return _parts(_header(kind), bad.tobytes())
    if how == "huge":  # oversized: the header claims far more than any worker accepts
        rows = draw(st.integers(2**28, 2**62))
        return _parts(_header(kind, shape=(rows, 2**20)), good.tobytes())
    if how == "label":
        return _parts(_header(kind, label=draw(NOT_NONE)), good.tobytes())
    if how == "mode":
        return _parts(_header(kind, mode=draw(NOT_MODE)), good.tobytes())
    return _parts(_header(kind, trace=draw(NOT_TRACE)), good.tobytes())


BROKEN = {kind: wire_broken(kind) for kind in wire.KINDS}


def wire_valid(kind: str, array: np.ndarray, **header) -> list[bytes]:
    """A message that passes wire.decode but that the worker must refuse for what it says."""
    return _parts(_header(kind, array.shape, str(array.dtype), **header), array.tobytes())


odd_shapes = st.sampled_from([(), (0,), (4,), (4, 15), (4, 17), (2, 3, 3), (1, 0), (4, 1, 4, 3)])


@st.composite
def bad_layer_input(draw) -> list[bytes]:
    if draw(st.booleans()):
        return draw(BROKEN[draw(st.sampled_from(["frames", "activity"]))])
    shape = draw(odd_shapes)
    array = np.ones(shape, np.float32)
    how = draw(st.sampled_from(["shape", "kind", "eval_blocks"]))
    if how == "kind":  # a kind that has no business on a layer's input
        return wire_valid(draw(st.sampled_from(["snapshot", "snapshot_request", "negative_update", "metrics", "feedback"])), array)
    if how == "eval_blocks":
        return wire_valid("activity", array, mode="eval", blocks=draw(junk_json))
    return wire_valid(draw(st.sampled_from(["frames", "activity"])), array, mode=draw(st.sampled_from(wire.MODES)))


@st.composite
def bad_negative(draw) -> list[bytes]:
    if draw(st.booleans()):
        return draw(BROKEN["negative_update"])
    array = np.ones(draw(odd_shapes), np.float32)
    extra = {"version": draw(junk_json), "form": draw(st.sampled_from(["inputs", "gradient", "other", None])), "rows": draw(junk_json)}
    if draw(st.booleans()):
        extra["tensors"] = draw(junk_json)
    return wire_valid(draw(st.sampled_from(["negative_update", "frames", "snapshot"])), array, **extra)


@st.composite
def bad_sink_input(draw) -> list[bytes]:
    if draw(st.booleans()):
        return draw(BROKEN["activity"])
    array = np.ones(draw(odd_shapes), np.float32)
    if draw(st.booleans()):
        return wire_valid(draw(st.sampled_from(["frames", "snapshot", "metrics", "negative_update"])), array)
    return wire_valid("activity", array, mode="eval", blocks=draw(junk_json))


@st.composite
def bad_metrics(draw) -> list[bytes]:
    if draw(st.booleans()):
        return draw(BROKEN["metrics"])
    return wire_valid("metrics", np.ones(draw(st.integers(1, 64)), np.float32), metrics=draw(junk_json))  # metrics carry no payload


@st.composite
def bad_control(draw) -> list[bytes]:
    if draw(st.booleans()):
        return draw(BROKEN["control"])
    return wire_valid(draw(st.sampled_from(sorted(wire.KINDS))), np.zeros(0, np.float32), command=draw(NOT_RESUME))


def throw(sock: zmq.Socket, strategy, bad_count, what: str, expected_per_message: int = 1) -> int:
    """Send FUZZ_EXAMPLES lists of BATCH messages; after each list, every one of them must have been counted."""
    thrown = 0

    @FUZZ_SETTINGS
    @given(st.lists(strategy, min_size=BATCH, max_size=BATCH))
    def check(messages):
        nonlocal thrown
        before = bad_count()
        t0 = time.monotonic()
        for parts in messages:
            sock.send_multipart(parts)
        thrown += len(messages)
        TIMES.append(time.monotonic() - t0)
        eventually(lambda: bad_count() - before >= len(messages), timeout=10, what=f"{what} to count {len(messages)} bad messages")
        assert bad_count() - before == len(messages), f"{what}: {bad_count() - before} counted for {len(messages)} sent"

    check()
    return thrown


def nodrop_publisher(socket) -> zmq.Socket:
    """XPUB that waits instead of dropping when the subscriber is full, so every message arrives."""
    pub = socket(zmq.XPUB)
    pub.setsockopt(zmq.XPUB_NODROP, 1)
    pub.setsockopt(zmq.SNDTIMEO, 5000)
    pub.setsockopt(zmq.SNDHWM, 1000)
    return pub


# the tests ----------------------------------------------------------------------------------------
def test_fuzz_layer_input_negative_and_snapshot(start_layer):
    rig = start_layer()
    bad = lambda: sum(layer_reasons(rig.worker).values())  # noqa: E731
    n = throw(rig.input, bad_layer_input(), bad, "layer input")
    n += throw(rig.negative, bad_negative(), bad, "layer negative")

    replies = []

    def ask(parts):  # REQ/REP: every request, however bad, gets an answer
        rig.snapshot.send_multipart(parts)
        replies.append(receive(rig.snapshot).kind)

    before = bad()
    snap_msgs = st.one_of(wire_broken("snapshot_request"), st.builds(
        lambda k: wire_valid(k, np.zeros(0, np.float32)), st.sampled_from(sorted(wire.KINDS - {"snapshot_request"}))))

    @FUZZ_SETTINGS
    @given(st.lists(snap_msgs, min_size=BATCH, max_size=BATCH))
    def snapshots(messages):
        for parts in messages:
            ask(parts)

    snapshots()
    assert set(replies) == {"control"} and bad() - before == len(replies)
    n += len(replies)
    print(f"\nfuzz layer: {n} bad messages, {bad()} counted, reasons {dict(layer_reasons(rig.worker))}")
    SENT["layer"] = n
    assert n >= 3 * FUZZ_EXAMPLES * BATCH

    # Still learning: a valid batch goes through, learned once.
    version = rig.worker.layer.version
    send(rig.input, frames(seq=1))
    assert receive(rig.output).kind == "activity"
    assert rig.ask_snapshot().extra["version"] == version + 1


def test_fuzz_sink_input(zmq_context, socket):
    addr = unique("sink")
    worker = SinkWorker(addr, readout_layers=[0], num_classes=3, context=zmq_context)
    push = socket(zmq.PUSH)
    push.setsockopt(zmq.SNDTIMEO, 5000)
    push.connect(addr)
    bad = lambda: worker.metrics()["dropped"]  # noqa: E731
    with running(worker):
        n = throw(push, bad_sink_input(), bad, "sink")
        SENT["sink"] = n
        send(push, wire.Message("activity", np.ones((4, 8), np.float32), seq=1))
        eventually(lambda: worker.frames == 4, what="the sink to record a valid batch after the fuzz")
    print(f"\nfuzz sink: {n} bad messages, dropped {dict(worker.dropped)} + {dict(worker.input.rejected)}")
    assert n >= FUZZ_EXAMPLES * BATCH


def test_fuzz_monitor_collect(zmq_context, socket):
    collect, publish = unique("mon-collect"), unique("mon-pub")
    worker = MonitorWorker(collect, publish, context=zmq_context)
    with running(worker):
        pub = nodrop_publisher(socket)
        pub.connect(collect)
        eventually(lambda: pub.poll(0) and pub.recv() == b"\x01", what="the monitor's subscription")  # the handshake
        bad = lambda: sum(worker.dropped.values())  # noqa: E731
        n = throw(pub, bad_metrics(), bad, "monitor")
        SENT["monitor"] = n
        valid = wire.Message("metrics", np.zeros(0, np.float32), stream="after-fuzz", extra={"metrics": {"frames": 1}})
        send(pub, valid)
        eventually(lambda: worker.latest.get("after-fuzz") == {"frames": 1}, what="a valid metrics message after the fuzz")
    print(f"\nfuzz monitor: {n} bad messages, dropped {dict(worker.dropped)}")
    assert n >= FUZZ_EXAMPLES * BATCH


def test_fuzz_sleep_frames(zmq_context, socket):
    frames_addr = unique("sleep-frames")
    pub = nodrop_publisher(socket)
    pub.bind(frames_addr)
    worker = SleepWorker(frames_addr, [unique("snap")], [unique("neg")], [LAYER], num_classes=3, exit_on_end=True, context=zmq_context)
    bad = lambda: worker.metrics()["dropped"]  # noqa: E731

    def bad_frames():
        return st.one_of(wire_broken("frames"), st.builds(lambda s: wire_valid("frames", np.ones(s, np.float32)), odd_shapes),
                         st.builds(lambda k: wire_valid(k, np.ones((4, 16), np.float32)),
                                   st.sampled_from(["activity", "snapshot", "metrics", "negative_update", "feedback"])))

    with running(worker) as thread:
        eventually(lambda: pub.poll(0) and pub.recv()[:1] == b"\x01", what="the sleep worker's subscription")
        n = throw(pub, bad_frames(), bad, "sleep")
        SENT["sleep"] = n
        # A valid message still acts: the end marker ends the worker by itself.
        send(pub, wire.Message("control", np.zeros(0, np.float32), extra={"command": "end"}))
        thread.join(5)
        assert not thread.is_alive(), "the sleep worker did not act on a valid end marker after the fuzz"
    print(f"\nfuzz sleep: {n} bad messages, dropped {dict(worker.dropped)} + {dict(worker.frames.rejected)}")
    assert n >= FUZZ_EXAMPLES * BATCH


def test_fuzz_source_control(zmq_context, socket, monkeypatch):
    # The source wakes by itself after RESUME_TIMEOUT_S (60 s); on a loaded machine the fuzz takes longer than
    # that, and the timeout would pass for a resume. No timeout here: only a valid "resume" may wake it.
    monkeypatch.setattr(source_worker, "RESUME_TIMEOUT_S", 24 * 3600.0)
    out_addr, control_addr = unique("src-out"), unique("src-control")
    consumer = socket(zmq.PULL)
    consumer.bind(out_addr)
    worker = SourceWorker(CountingSource(64, num_classes=3), out_addr, None, batch=8, eval_every=0, phase_length=1,
                          control_addr=control_addr, context=zmq_context)
    push = socket(zmq.PUSH)
    push.setsockopt(zmq.SNDTIMEO, 5000)
    push.connect(control_addr)
    bad = lambda: worker.metrics()["bad_messages"]  # noqa: E731
    with running(worker):
        assert receive(consumer).seq == 0  # the first wake phase, then the source waits for "resume"
        n = throw(push, bad_control(), bad, "source control")
        SENT["source"] = n
        assert worker.batches == 1, "a bad message must not resume the source"
        send(push, wire.Message("control", np.zeros(0, np.float32), extra={"command": "resume"}))
        assert receive(consumer).seq == 1
    print(f"\nfuzz source control: {n} bad messages, dropped {dict(worker.dropped)} + {dict(worker.control.rejected)}")
    assert n >= FUZZ_EXAMPLES * BATCH


ACK_REPLAY = "fuzzrply"  # its replay token (set on it): a gap notice under it, read right, would rewind the source
ACK_PASS = "fuzz-pass"  # the pass id of the source under test (set on it), which the bad acks must not carry right
# Built without filters: 200 filtered draws per example would make whole examples invalid, and hypothesis stop early.
_prefixed = lambda p: st.text(max_size=6).map(lambda t: p + t)  # noqa: E731 - never "ack", "resume" nor ACK_PASS
_lists = st.lists(_scalars, max_size=3)
NOT_ACK_COMMAND = st.none() | st.integers() | st.floats() | _prefixed("z") | _lists
NOT_PASS = st.none() | st.booleans() | st.integers() | _prefixed("x") | _lists
NOT_INT = st.none() | st.booleans() | st.floats() | st.text(max_size=6) | _lists
NOT_BOOL = st.none() | st.integers() | st.floats() | st.text(max_size=6) | _lists


@st.composite
def bad_ack(draw) -> list[bytes]:
    """What an exactly-once source's control socket must drop and count: broken messages, other commands, and
    acknowledgements it cannot use (another pass, or a barrier or verdict of the wrong type), and gap notices under the
    source's own pass and replay token whose `upto` is no integer (`true` once read as 1 and rewound the source)."""
    how = draw(st.sampled_from(["broken", "command", "pass", "barrier", "complete", "gap"]))
    if how == "broken":
        return draw(BROKEN["control"])
    if how == "command":
        return wire_valid("control", np.zeros(0, np.float32), command=draw(NOT_ACK_COMMAND))
    if how == "gap":
        return wire_valid("control", np.zeros(0, np.float32), command="gap", upto=draw(NOT_INT), pass_id=ACK_PASS,
                          replay=ACK_REPLAY)
    ack = {"command": "ack", "barrier": 1, "complete": True, "pass_id": ACK_PASS}
    if how == "barrier":
        ack["barrier"] = draw(NOT_INT)
    elif how == "complete":
        ack["complete"] = draw(NOT_BOOL)
    else:
        ack["pass_id"] = draw(NOT_PASS)
    return wire_valid("control", np.zeros(0, np.float32), **ack)


def test_fuzz_exactly_once_source_acknowledgements(zmq_context, socket, tmp_path):
    """The source's control socket under exactly-once: its stream sent, it waits on the final barrier's
    acknowledgement; no bad message may end, rewind or crash it, and the one valid acknowledgement still ends it."""
    from ffstream.sources import Preprocess, SyntheticSource

    out_addr, control_addr = unique("src-out"), unique("src-ack")
    consumer = socket(zmq.PULL)
    consumer.bind(out_addr)
    worker = SourceWorker(SyntheticSource(Preprocess(), 16, seed=1), out_addr, None, batch=8, eval_every=0, barrier_every=1,
                          position_path=str(tmp_path / "source.json"), control_addr=control_addr, end_ack_deadline_s=24 * 3600.0,
                          context=zmq_context)
    worker.pass_id, worker.replay = ACK_PASS, ACK_REPLAY  # a fresh pass: nothing sent yet under another id
    push = socket(zmq.PUSH)
    push.setsockopt(zmq.SNDTIMEO, 5000)
    push.connect(control_addr)
    bad = lambda: sum(worker.dropped.values()) + sum(worker.control.rejected.values())  # noqa: E731
    with running(worker):
        kinds = [receive(consumer).kind for _ in range(5)]  # two batches, a barrier after each, the final barrier
        assert kinds == ["frames", "barrier", "frames", "barrier", "barrier"], kinds
        final = worker.barrier_id
        n = throw(push, bad_ack(), bad, "source acknowledgements")
        SENT["source_acks"] = n
        assert not worker.ended and worker.rewinds == 0 and worker.committed.batches == 0
        send(push, wire.Message("control", np.zeros(0, np.float32), extra={"command": "ack", "barrier": final, "complete": True,
                                                                           "pass_id": worker.pass_id}))
        while (msg := receive(consumer, timeout=10)).kind == "barrier":
            pass  # the final barrier may have been sent again meanwhile
        assert msg.kind == "control" and msg.extra["command"] == "end"
    print(f"\nfuzz source acknowledgements: {n} bad messages, dropped {dict(worker.dropped)} + {dict(worker.control.rejected)}")
    assert n >= FUZZ_EXAMPLES * BATCH


# structured cases (issue 20): the poison pills that crashed workers, each named, next to the random ones ------------
def structured(kind: str, rows: int = 4, width: int = 16) -> dict[str, list[bytes]]:
    """Named messages that a receiver of `kind` messages must drop and count, one reason each."""
    payload = np.ones((rows, width), np.float32).tobytes()
    h = lambda **kw: json.dumps(_header(kind, (rows, width), **kw)).encode()  # noqa: E731
    digits = json.dumps(_header(kind, (rows, width))).replace('"seq": 0', '"seq": ' + "7" * 4300).encode()
    return {
        "4300-digit integer": [digits, payload],
        "integer beyond 2**53": [h(seq=2**53 + 1), payload],
        "zero-size dim beside 2**63": [json.dumps(_header(kind, (0, 2**63))).encode(), b""],
        "zero-size dim beside huge dims": [json.dumps(_header(kind, (0, 2**31 - 1, 2**31 - 1, 2**31 - 1))).encode(), b""],
        "many parts": [h(), payload] + [b""] * 5000,
        "three parts": [h(), payload, payload],
        "short trace": [h(trace=[[1.0] * (rows - 1)]), payload],
        "trace of the wrong rows": [h(trace=[[1.0] * rows, [2.0] * (rows + 1)]), payload],
        "bool labels": [h(label=[True] * rows), payload],
        "string labels": [h(label=["1"] * rows), payload],
        "float labels": [h(label=[1.5] * rows), payload],
        "huge labels": [h(label=[2**62] * rows), payload],
        "non-UTF-8 header": [b'{"v": 1, "kind": "\xff\xfe\xfd"}', payload],
        "deep JSON nesting": [b"[" * 40_000 + b"]" * 40_000, payload],
        "deep nesting in a field": [b'{"v": 1, "x": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", payload],
        "header over 64 KiB": [b'{"v": 1, "pad": "' + b"x" * (wire.MAX_HEADER_BYTES + 1) + b'"}', payload],
    }


def throw_named(sock: zmq.Socket, cases: dict[str, list[bytes]], bad_count, what: str, alive) -> None:
    """Send each named case; each must be counted once, and the worker must still be running after it."""
    for name, parts in cases.items():
        before = bad_count()
        sock.send_multipart(parts)
        eventually(lambda: bad_count() - before >= 1, timeout=10, what=f"{what} to count the {name!r} message")
        assert bad_count() - before == 1, f"{what}: {name!r} counted {bad_count() - before} times"
        assert alive(), f"{what} died on the {name!r} message"


def test_structured_poison_layer_input(start_layer):
    rig = start_layer()
    bad = lambda: sum(layer_reasons(rig.worker).values())  # noqa: E731
    throw_named(rig.input, structured("frames"), bad, "layer input", lambda: not rig.worker.stopping and not rig.worker.finished)
    throw_named(rig.negative, structured("negative_update"), bad, "layer negative", lambda: not rig.worker.stopping)
    send(rig.input, frames(seq=1))  # and it still learns
    assert receive(rig.output).kind == "activity"


def test_structured_poison_sink_with_scores(zmq_context, socket, tmp_path):
    # --scores is the path that indexed trace[layer][row]: a short trace raised IndexError there.
    addr = unique("sink")
    scores = tmp_path / "scores.jsonl"
    worker = SinkWorker(addr, readout_layers=[0], num_classes=3, scores_path=str(scores), context=zmq_context)
    push = socket(zmq.PUSH)
    push.setsockopt(zmq.SNDTIMEO, 5000)
    push.connect(addr)
    bad = lambda: worker.metrics()["dropped"]  # noqa: E731
    with running(worker) as thread:
        throw_named(push, structured("activity", width=8), bad, "sink", thread.is_alive)
        send(push, wire.Message("activity", np.ones((4, 8), np.float32), seq=1, trace=[[1.0] * 4, [2.0] * 4]))
        eventually(lambda: worker.frames == 4, what="the sink to record a valid batch after the poison")
    rows = [json.loads(line) for line in scores.read_text().splitlines()]
    assert [r["goodness"] for r in rows] == [[1.0, 2.0]] * 4  # only the valid batch was scored


def test_structured_poison_monitor_collect(zmq_context, socket):
    collect, publish = unique("mon-collect"), unique("mon-pub")
    worker = MonitorWorker(collect, publish, context=zmq_context)
    with running(worker) as thread:
        pub = nodrop_publisher(socket)
        pub.connect(collect)
        eventually(lambda: pub.poll(0) and pub.recv() == b"\x01", what="the monitor's subscription")
        bad = lambda: sum(worker.dropped.values())  # noqa: E731
        throw_named(pub, structured("metrics", rows=2, width=0), bad, "monitor", thread.is_alive)
