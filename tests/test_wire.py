"""Wire format v1 (`ffstream/wire.py`): round trips, real zmq frames, and one rejection per malformed kind.

Every rejection asserts the `WireError.reason`, the key a worker counts dropped
messages by (DESIGN.md §3). The last test greps the source tree for pickle.
"""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import numpy as np
import pytest
import zmq

from ffstream.net import wire
from ffstream.net.wire import (
    MAX_HEADER_BYTES,
    Message,
    WireError,
    decode,
    encode,
    pack_tensors,
    unpack_tensors,
)

PACKAGE = Path(wire.__file__).resolve().parent  # ffstream/
RECV_TIMEOUT_MS = 5000  # a test fails instead of hanging when a message does not arrive


def valid_header(**overrides) -> dict:
    h = {"v": 1, "kind": "frames", "stream": "cam0", "seq": 3, "t_src": 1.5, "shape": [2, 3], "dtype": "float32"}
    h.update(overrides)
    return h


def raw(header: dict | bytes, payload: bytes | None = None) -> list:
    """Hand-built [header, payload] parts; the payload defaults to the right size of zeros for the header."""
    if isinstance(header, dict):
        if payload is None:
            payload = bytes(math.prod(header["shape"]) * np.dtype(header["dtype"]).itemsize)
        header = json.dumps(header).encode()
    return [header, b"" if payload is None else payload]


def reason_of(parts: list, **kw) -> str:
    with pytest.raises(WireError) as info:
        decode(parts, **kw)
    return info.value.reason


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    "array",
    [
        np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
        np.array([[0.5, -1.25], [65504.0, -0.0]], dtype=np.float16),
        np.arange(2 * 3 * 4 * 5, dtype=np.uint8).reshape(2, 3, 4, 5),
        np.array([-(2**62), 0, 2**62], dtype=np.int64),
        np.zeros((0, 784), dtype=np.float32),  # 0 rows: an empty batch
        np.array(2.5, dtype=np.float32),  # 0-d
    ],
    ids=["float32", "float16", "uint8", "int64", "zero-rows", "scalar"],
)
def test_round_trip_dtypes(array):
    msg = Message("activity", array, stream="s", seq=41, t_src=123.25)
    out = decode(encode(msg))
    assert out.array.dtype == array.dtype and out.array.shape == array.shape
    assert np.array_equal(out.array, array)
    assert (out.kind, out.stream, out.seq, out.t_src, out.mode) == ("activity", "s", 41, 123.25, "learn")
    assert out.label is None and out.trace is None and out.extra == {}


def test_round_trip_labels_trace_extra_and_eval_mode():
    msg = Message(
        "frames",
        np.ones((3, 4), np.float32),
        seq=9,
        label=[0, 7, 2],
        mode="eval",
        trace=[[1.0, 2.5, 3.0], [0.0, 1e-3, 4.0]],
        extra={"version": 12, "metrics": {"acc": 0.9}},
    )
    out = decode(encode(msg))
    assert out.label == [0, 7, 2]
    assert out.mode == "eval"
    assert out.trace == [[1.0, 2.5, 3.0], [0.0, 1e-3, 4.0]]
    assert out.extra == {"version": 12, "metrics": {"acc": 0.9}}


def test_round_trip_non_contiguous_array():
    a = np.arange(12, dtype=np.float32).reshape(3, 4).T  # Fortran order
    out = decode(encode(Message("activity", a)))
    assert np.array_equal(out.array, a)


def test_zero_row_labels_round_trip():
    out = decode(encode(Message("frames", np.zeros((0, 5), np.uint8), label=[])))
    assert out.label == [] and out.array.shape == (0, 5)


def test_encode_large_payload_is_zero_copy():
    a = np.arange(100_000, dtype=np.float32)  # 400 kB, above wire.ZERO_COPY_BYTES
    assert a.nbytes > wire.ZERO_COPY_BYTES
    header, payload = encode(Message("activity", a))
    assert isinstance(header, bytes)
    assert isinstance(payload, memoryview) and payload.nbytes == a.nbytes
    a[0] = 42.0  # a view, not a copy: the change shows through
    assert np.frombuffer(payload, np.float32)[0] == 42.0


@pytest.mark.parametrize(
    "msg, match",
    [
        (Message("nonsense", np.zeros(2, np.float32)), "kind"),
        (Message("frames", np.zeros(2, np.float64)), "dtype"),
        (Message("frames", np.zeros(2, np.float32), extra={"pad": "x" * MAX_HEADER_BYTES}), "header"),
    ],
    ids=["kind", "dtype", "header-size"],
)
def test_encode_refuses(msg, match):
    with pytest.raises(ValueError, match=match):
        encode(msg)


# ---------------------------------------------------------------- real zmq frames


@pytest.fixture
def pair():
    """Two PAIR sockets over inproc://, closed with linger 0 in teardown."""
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        a.bind("inproc://test-wire")
        b.connect("inproc://test-wire")
        yield a, b
    finally:
        a.close(linger=0)
        b.close(linger=0)
        ctx.term()


def test_decode_from_zmq_frames(pair):
    a, b = pair
    big = np.random.default_rng(0).standard_normal((64, 2000)).astype(np.float32)  # 512 kB: zero-copy path
    a.send_multipart(encode(Message("activity", big, seq=5, label=list(range(64)))), copy=False)
    assert b.poll(RECV_TIMEOUT_MS), "message did not arrive"
    frames = b.recv_multipart(copy=False)
    assert all(isinstance(f, zmq.Frame) for f in frames)
    out = decode(frames)
    assert out.seq == 5 and out.label == list(range(64))
    assert np.array_equal(out.array, big)

    small = np.arange(6, dtype=np.uint8).reshape(2, 3)
    a.send_multipart(encode(Message("frames", small)), copy=False)
    assert b.poll(RECV_TIMEOUT_MS), "message did not arrive"
    assert np.array_equal(decode(b.recv_multipart(copy=False)).array, small)


def test_rejects_bad_zmq_frames(pair):
    a, b = pair
    a.send_multipart([b"{}", b"", b""])
    assert b.poll(RECV_TIMEOUT_MS), "message did not arrive"
    assert reason_of(b.recv_multipart(copy=False)) == "parts"


# ---------------------------------------------------------------- rejections, one per kind


def test_valid_hand_built_message_is_accepted():
    # the baseline that every rejection below changes in exactly one way
    out = decode(raw(valid_header()))
    assert out.array.shape == (2, 3) and out.stream == "cam0"


@pytest.mark.parametrize("n", [1, 3])
def test_rejects_wrong_part_count(n):
    header, payload = raw(valid_header())
    parts = [header] if n == 1 else [header, payload, b""]
    assert reason_of(parts) == "parts"


def test_rejects_oversized_header():
    header = json.dumps(valid_header(pad="x" * (MAX_HEADER_BYTES + 1))).encode()
    assert len(header) > MAX_HEADER_BYTES
    assert reason_of([header, bytes(24)]) == "header_size"


@pytest.mark.parametrize(
    "header",
    [
        b"{not json",
        b"[1, 2, 3]",  # JSON, but not an object
        b'"frames"',
        b"\xff\xfe{}",  # not UTF-8
        b"[" * 20_000 + b"]" * 20_000,  # nested deep enough to blow the parser's recursion limit
    ],
    ids=["invalid", "array", "string", "not-utf8", "deep-nesting"],
)
def test_rejects_bad_header_json(header):
    assert len(header) <= MAX_HEADER_BYTES
    assert reason_of([header, b""]) == "header_json"


@pytest.mark.parametrize(
    "field, value",
    [
        ("seq", None),  # missing
        ("v", None),
        ("shape", None),
        ("seq", "7"),
        ("seq", True),  # bool is not an int here
        ("seq", 1.0),
        ("stream", 3),
        ("t_src", "now"),
        ("t_src", float("nan")),  # json writes NaN, and json.loads accepts it
        ("t_src", float("inf")),
        ("shape", "2x3"),
        ("dtype", 4),
    ],
)
def test_rejects_missing_or_ill_typed_field(field, value):
    h = valid_header()
    if value is None:
        del h[field]
    else:
        h[field] = value
    assert reason_of([json.dumps(h).encode(), bytes(24)]) == "header_field"


def test_rejects_wrong_version():
    assert reason_of(raw(valid_header(v=2))) == "version"


def test_rejects_unknown_kind():
    assert reason_of(raw(valid_header(kind="gradients"))) == "kind"


@pytest.mark.parametrize("dtype", ["float64", "object", "<f4", "bool"])
def test_rejects_unknown_dtype(dtype):
    assert reason_of([json.dumps(valid_header(dtype=dtype)).encode(), bytes(24)]) == "dtype"


@pytest.mark.parametrize(
    "shape",
    [[-1, 3], [-2, -3], [True, 3], [2.0, 3], [1.5, 4], ["2", 3], [None], [1] * 9],
    ids=["negative", "two-negatives", "bool", "float-int", "float", "string", "null", "too-many-dims"],
)
def test_rejects_bad_shape_entries(shape):
    assert reason_of([json.dumps(valid_header(shape=shape)).encode(), bytes(24)]) == "shape"


@pytest.mark.parametrize("nbytes", [20, 28, 0])
def test_rejects_shape_that_does_not_match_payload(nbytes):
    # shape [2, 3] float32 needs 24 bytes
    assert reason_of(raw(valid_header(), bytes(nbytes))) == "shape"


def test_rejects_payload_over_max_payload():
    assert reason_of(raw(valid_header()), max_payload=16) == "payload_size"
    decode(raw(valid_header()), max_payload=24)  # exactly at the limit is fine


@pytest.mark.parametrize(
    "shape",
    [[10**30], [2**32, 2**32], [2**62, 4]],  # too big for int64; wraps to 0 in int64; wraps to 0 × itemsize
    ids=["huge", "wraps-to-zero", "wraps-after-itemsize"],
)
def test_rejects_shape_whose_size_overflows(shape):
    # Refused for its integers (beyond 2**53), its dimensions (beyond MAX_DIM) or its size: never decoded.
    assert reason_of([json.dumps(valid_header(shape=shape)).encode(), b""]) in ("header_int", "shape", "payload_size")


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_rejects_non_finite(dtype, bad):
    a = np.ones((2, 3), dtype=dtype)
    a[1, 2] = bad
    assert reason_of(encode(Message("activity", a))) == "non_finite"
    assert np.isnan(decode(encode(Message("activity", a)), check_finite=False).array[1, 2]) == np.isnan(bad)


def test_integer_payloads_skip_the_finite_check():
    a = np.full((2, 2), 255, np.uint8)
    assert np.array_equal(decode(encode(Message("frames", a))).array, a)


@pytest.mark.parametrize(
    "label",
    [[1], [1, 2, 3], [1, -1], [1, 2.5], "12", [1, "2"]],
    ids=["too-few", "too-many", "negative", "float", "string", "string-entry"],
)
def test_rejects_bad_labels(label):
    assert reason_of(raw(valid_header(label=label))) == "label"


@pytest.mark.parametrize(
    "trace",
    [[1.0, 2.0], [[1.0, "x"]], [[float("nan")]], [[float("inf")]], [[10**400]], "goodness", [[True]]],
    ids=["flat", "string", "nan", "inf", "huge-int", "not-a-list", "bool"],
)
def test_rejects_bad_trace(trace):
    assert reason_of(raw(valid_header(trace=trace))) in ("trace", "header_int")  # huge-int: refused as it is parsed


def test_rejects_unknown_mode():
    assert reason_of(raw(valid_header(mode="train"))) == "mode"


# ---------------------------------------------------------------- pack / unpack


def test_pack_unpack_round_trip():
    tensors = {
        "weight": np.arange(6, dtype=np.float32).reshape(2, 3),
        "bias": np.array([0.5, -0.5], dtype=np.float32),
        "scalar": np.array(3.0, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }
    flat, layout = pack_tensors(tensors)
    assert flat.ndim == 1 and flat.dtype == np.float32 and flat.size == 6 + 2 + 1
    assert [t["name"] for t in layout] == ["weight", "bias", "scalar", "empty"]
    # and through the wire, with the layout in the header as a snapshot carries it
    msg = decode(encode(Message("snapshot", flat, extra={"tensors": layout, "version": 4})))
    out = unpack_tensors(msg.array, msg.extra["tensors"])
    assert list(out) == list(tensors)
    for name, a in tensors.items():
        assert out[name].shape == a.shape and np.array_equal(out[name], a), name


def test_pack_casts_to_float32():
    flat, _ = pack_tensors({"w": np.ones((2, 2), np.float64)})
    assert flat.dtype == np.float32


@pytest.mark.parametrize(
    "flat, layout",
    [
        (np.zeros(6, np.float32), [{"name": "w", "shape": [2, 2]}]),  # covers 4 of 6 values
        (np.zeros(4, np.float32), [{"name": "w", "shape": [3, 2]}]),  # needs more than there is
        (np.zeros(4, np.float32), [{"name": "w", "shape": [2, 2]}, {"name": "b", "shape": [1]}]),
        (np.zeros((2, 2), np.float32), [{"name": "w", "shape": [2, 2]}]),  # not flat
        (np.zeros(4, np.float32), None),  # missing
        (np.zeros(4, np.float32), {"name": "w", "shape": [4]}),  # not a list
        (np.zeros(4, np.float32), [{"name": 3, "shape": [4]}]),
        (np.zeros(4, np.float32), [{"name": "w", "shape": [-4]}]),
        (np.zeros(4, np.float32), [{"name": "w", "shape": "4"}]),
        (np.zeros(4, np.float32), ["w"]),
    ],
    ids=["short-layout", "long-layout", "extra-entry", "not-flat", "missing", "dict", "bad-name",
         "negative", "string-shape", "not-dicts"],
)  # fmt: skip
def test_unpack_rejects_layout_mismatch(flat, layout):
    with pytest.raises(WireError) as info:
        unpack_tensors(flat, layout)
    assert info.value.reason == "tensors"


# ---------------------------------------------------------------- no pickle anywhere

BANNED_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "shelve", "marshal"}
BANNED_CALLS = {"send_pyobj", "recv_pyobj", "send_serialized", "recv_serialized"}


def pickle_uses(path: Path, root: Path = PACKAGE.parent) -> list[str]:
    """What in one source file could unpickle: banned imports and calls, torch.load without weights_only=True."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        where = f"{path.relative_to(root)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            found += [f"{where} import {a.name}" for a in node.names if a.name.split(".")[0] in BANNED_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in BANNED_MODULES:
            found.append(f"{where} from {node.module} import")
        elif isinstance(node, ast.ImportFrom) and node.module == "torch" and any(a.name == "load" for a in node.names):
            found.append(f"{where} from torch import load (use torch.load(..., weights_only=True))")
        elif isinstance(node, ast.Attribute) and node.attr in BANNED_CALLS:
            found.append(f"{where} .{node.attr}")
        elif isinstance(node, ast.Name) and node.id in BANNED_MODULES:
            found.append(f"{where} {node.id}")
        elif isinstance(node, ast.Call):
            kwargs = {k.arg: k.value for k in node.keywords}
            f = node.func
            if isinstance(f, ast.Attribute) and f.attr == "load" and isinstance(f.value, ast.Name) and f.value.id == "torch":
                wo = kwargs.get("weights_only")
                if not (isinstance(wo, ast.Constant) and wo.value is True):
                    found.append(f"{where} torch.load without weights_only=True")
            allow = kwargs.get("allow_pickle")
            if allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False):
                found.append(f"{where} allow_pickle")
    return found


def test_no_pickle_in_the_source_tree():
    files = sorted(PACKAGE.rglob("*.py"))
    assert PACKAGE / "wire.py" in files
    found = [hit for path in files for hit in pickle_uses(path)]
    assert not found, "pickle-capable code under ffstream/:\n" + "\n".join(found)


def test_pickle_check_catches_offenders(tmp_path):
    # the checker itself must be able to fail
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import pickle\nimport torch\n"
        "def f(sock, b):\n"
        "    sock.send_pyobj(b)\n"
        "    torch.load(b)\n"
        "    torch.load(b, weights_only=False)\n"
        "    return torch.load(b, weights_only=True)\n"
    )
    hits = pickle_uses(bad, root=tmp_path)
    # import pickle, .send_pyobj, torch.load(b), torch.load(b, weights_only=False); the last load is fine
    assert len(hits) == 4, hits
    assert sum("torch.load" in h for h in hits) == 2


# ---------------------------------------------------------------- poison pills (issue 20): nothing but WireError
POISON = {
    "4300-digit seq": (b'{"v":1,"kind":"frames","stream":"s","seq":' + b"9" * 4300 + b',"t_src":1,"shape":[0],"dtype":"float32"}', b""),
    "2**63 seq": (json.dumps(valid_header(seq=2**63, shape=[0])).encode(), b""),
    "zero beside 2**63": (json.dumps(valid_header(shape=[0, 2**63])).encode(), b""),
    "zero beside huge dims": (json.dumps(valid_header(shape=[0, 2**31 - 1, 2**31 - 1, 2**31 - 1])).encode(), b""),
    "dim over MAX_DIM": (json.dumps(valid_header(shape=[0, 2**31])).encode(), b""),
    "nine dims": (json.dumps(valid_header(shape=[1] * 9)).encode(), bytes(4)),
    "huge label": (json.dumps(valid_header(label=[2**60, 0])).encode(), bytes(24)),
    "bool label": (json.dumps(valid_header(label=[True, False])).encode(), bytes(24)),
    "string label": (json.dumps(valid_header(label=["1", "2"])).encode(), bytes(24)),
    "float label": (json.dumps(valid_header(label=[1.0, 2.0])).encode(), bytes(24)),
    "short trace": (json.dumps(valid_header(trace=[[1.0]])).encode(), bytes(24)),
    "long trace": (json.dumps(valid_header(trace=[[1.0, 2.0, 3.0]])).encode(), bytes(24)),
    "non-UTF-8": (b'{"v":1,"kind":"\xff\xfe"}', b""),
    "deep nesting": (b"[" * 30000 + b"]" * 30000, b""),
    "deep nesting in a field": (b'{"v":1,"x":' + b"[" * 20000 + b"]" * 20000 + b"}", b""),
    "huge float t_src": (b'{"v":1,"kind":"frames","stream":"s","seq":0,"t_src":1e999,"shape":[0],"dtype":"float32"}', b""),
}


@pytest.mark.parametrize("name", sorted(POISON))
def test_poison_pills_raise_only_wire_error(name):
    header, payload = POISON[name]
    try:
        decode([header, payload])
    except WireError as exc:
        assert exc.reason in ("header_json", "header_int", "header_field", "header_size", "shape", "label", "trace", "malformed"), exc
    else:
        pytest.fail(f"{name} was accepted")


def test_unexpected_exception_inside_decode_becomes_wire_error(monkeypatch):
    # Whatever a check misses (here numpy refusing a reshape) is still a WireError, never a crash.
    monkeypatch.setattr(wire.np, "frombuffer", lambda *a, **k: (_ for _ in ()).throw(ValueError("array is too big")))
    assert reason_of(raw(valid_header())) == "malformed"


def test_trace_with_one_value_per_row_passes():
    msg = decode(raw(valid_header(trace=[[1.0, 2.0], [3.0, 4.5]])))
    assert msg.trace == [[1.0, 2.0], [3.0, 4.5]]


def test_many_parts_are_read_bounded_and_refused(zmq_context):
    from ffstream.net.transport import Receiver, recv_bounded

    pull = zmq_context.socket(zmq.PULL)
    push = zmq_context.socket(zmq.PUSH)
    try:
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        push.connect(f"tcp://127.0.0.1:{port}")
        push.send_multipart([b""] * 10_000)
        assert pull.poll(5000)
        assert len(recv_bounded(pull)) == 3  # enough to tell that it has too many, and no more kept
        push.send_multipart([b"{}"] * 50)
        receiver = Receiver(pull)
        assert receiver.recv(5000) is None and receiver.rejected["parts"] == 1
    finally:
        push.close(linger=0)
        pull.close(linger=0)


@pytest.mark.parametrize("rows, layers, fits", [(64, 4, True), (1024, 4, True), (2048, 4, False), (8192, 1, False)])
def test_header_bound_says_which_batches_fit(rows, layers, fits):
    assert (wire.header_bound(rows, layers, labelled=True) <= wire.MAX_HEADER_BYTES) is fits
    if fits:  # the bound is a real upper bound: a worst-case trace and labels of that size encode within it
        trace = [[-12345.6789] * rows for _ in range(layers)]
        msg = wire.Message("activity", np.zeros((rows, 1), np.float32), label=[9999] * rows, trace=trace, extra={"blocks": [1]})
        assert len(wire.encode(msg)[0]) <= wire.header_bound(rows, layers, labelled=True)
