"""Wire format v1: every message is two frames, a UTF-8 JSON header and a raw array.

    [header, payload]
    header = {"v": 1, "kind": ..., "stream": ..., "seq": ..., "t_src": ...,
              "shape": [...], "dtype": ..., optional "label", "mode", "trace", ...}
    payload = the C-contiguous bytes of one array, shape × itemsize long

Receivers call `decode`, which checks everything before anything is used and
raises `WireError` with a short reason; workers drop such messages and count
them by reason. Nothing here unpickles, ever.

>>> msg = Message("frames", np.zeros((2, 3), np.float32), seq=7, label=[1, 2])
>>> decode(encode(msg)).seq
7
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

VERSION = 1
MAX_HEADER_BYTES = 64 * 1024
DEFAULT_MAX_PAYLOAD = 512 * 1024 * 1024  # largest array a worker accepts, in bytes; a 4×2000² snapshot is 64 MB
ZERO_COPY_BYTES = 64 * 1024  # payloads above this are sent without a copy
MAX_INT = 2**53  # largest |integer| a header may hold: exact in a float, and in JavaScript
MAX_INT_DIGITS = 16  # 2**53 has 16 digits: longer integers are refused before they are parsed
MAX_DIMS = 8  # most dimensions an array may have
MAX_DIM = 2**31 - 1  # largest single dimension

KINDS = frozenset(
    {
        "frames",  # source -> layer 1 and sleep: preprocessed frames (B, ...) with labels
        "activity",  # layer i -> layer i+1 / sink: normalised activity (B, N)
        "feedback",  # layer i+1 -> layer i: latest normalised activity, top-down
        "snapshot_request",  # sleep -> layer: send me your weights
        "snapshot",  # layer -> sleep: the weights, flattened, with "tensors" naming the parts
        "negative_update",  # sleep -> layer: a negative gradient, flattened like a snapshot
        "metrics",  # any worker -> monitor: a "metrics" dict in the header, empty payload
        "preview",  # layer 1 -> monitor: some of its weights as uint8 image tiles (N, H, W) or (N, H, W, 3)
        "control",  # supervisor or peers: "command" in the header, e.g. "stop", "pause", "resume", "ack" (sink -> source)
        "barrier",  # source -> layers -> sink, in line with the frames: "barrier" (its id) and "pass_id"; seq: the last batch before it
    }
)
DTYPES = {"float32": np.float32, "float16": np.float16, "uint8": np.uint8, "int64": np.int64}
FLOAT_DTYPES = ("float32", "float16")
MODES = ("learn", "eval")


def float_dtype(name: str) -> type[np.floating]:
    """The numpy dtype of an activity's name on the wire ("float32" or "float16"); ValueError for any other."""
    if name not in FLOAT_DTYPES:
        raise ValueError(f"wire_dtype must be one of {FLOAT_DTYPES}, got {name!r}")
    return DTYPES[name]
# Header fields every message must carry, and the JSON types they must have.
REQUIRED = {"v": int, "kind": str, "stream": str, "seq": int, "t_src": (int, float), "shape": list, "dtype": str}


class WireError(ValueError):
    """A message that must be dropped; `reason` is a short counter key such as "parts" or "shape"."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass
class Message:
    kind: str
    array: np.ndarray
    stream: str = "main"  # which stream the frames belong to
    seq: int = 0  # the source's batch counter, so order and loss can be checked end to end
    t_src: float = field(default_factory=time.time)  # when the source captured the frames, seconds since the epoch
    label: list[int] | None = None  # one label per row, for labelled streams
    mode: str = "learn"  # "learn": take an update; "eval": forward only
    trace: list[list[float]] | None = None  # per layer, the goodness of each row
    extra: dict[str, Any] = field(default_factory=dict)  # kind-specific fields, e.g. "metrics" or "version"

    def header(self) -> dict[str, Any]:
        h = {
            "v": VERSION,
            "kind": self.kind,
            "stream": self.stream,
            "seq": int(self.seq),
            "t_src": float(self.t_src),
            "shape": list(self.array.shape),
            "dtype": str(self.array.dtype),
            "mode": self.mode,
        }
        if self.label is not None:
            h["label"] = [int(v) for v in self.label]
        if self.trace is not None:
            h["trace"] = self.trace
        h.update(self.extra)
        return h


def encode(msg: Message) -> list:
    """Message -> [header bytes, payload]. Large payloads are handed over as a buffer, not copied."""
    if msg.kind not in KINDS:
        raise ValueError(f"unknown message kind {msg.kind!r}")
    array = np.ascontiguousarray(msg.array)
    if str(array.dtype) not in DTYPES:
        raise ValueError(f"dtype {array.dtype} cannot go on the wire; use one of {sorted(DTYPES)}")
    header = json.dumps(msg.header(), separators=(",", ":")).encode()
    if len(header) > MAX_HEADER_BYTES:
        raise ValueError(f"header of {len(header)} bytes is over the {MAX_HEADER_BYTES}-byte limit")
    payload = memoryview(array).cast("B") if array.nbytes else b""
    return [header, payload]


def decode(parts: list, max_payload: int = DEFAULT_MAX_PAYLOAD, check_finite: bool = True) -> Message:
    """[header, payload] -> Message, or WireError (and nothing else). The array is a read-only view of the payload."""
    try:
        return _decode(parts, max_payload, check_finite)
    except WireError:
        raise
    except (ValueError, OverflowError, TypeError, RecursionError, MemoryError, AttributeError) as exc:
        # Whatever the checks below missed: a message must never crash a worker, only be dropped and counted.
        raise WireError("malformed", f"{type(exc).__name__}: {str(exc)[:200]}") from None


def _decode(parts: list, max_payload: int, check_finite: bool) -> Message:
    if len(parts) != 2:
        raise WireError("parts", f"expected 2 parts, got {len(parts)}")
    raw_header, payload = (p.buffer if hasattr(p, "buffer") else p for p in parts)
    if len(raw_header) > MAX_HEADER_BYTES:
        raise WireError("header_size", f"header of {len(raw_header)} bytes")
    try:
        header = json.loads(bytes(raw_header).decode("utf-8"), parse_int=_parse_int)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:  # deep nesting recurses
        raise WireError("header_json", str(exc) or type(exc).__name__) from None
    if not isinstance(header, dict):
        raise WireError("header_json", "header is not a JSON object")
    for key, kind in REQUIRED.items():
        if not isinstance(header.get(key), kind) or isinstance(header.get(key), bool):
            raise WireError("header_field", f"{key!r} missing or of the wrong type")
    if not _finite_number(header["t_src"]):  # json.loads accepts NaN and Infinity
        raise WireError("header_field", "'t_src' is not a finite number")
    if header["v"] != VERSION:
        raise WireError("version", f"wire version {header['v']}, expected {VERSION}")
    if header["kind"] not in KINDS:
        raise WireError("kind", f"unknown kind {header['kind']!r}")
    if header["dtype"] not in DTYPES:
        raise WireError("dtype", f"unknown dtype {header['dtype']!r}")
    shape = header["shape"]
    if len(shape) > MAX_DIMS or not all(is_count(n) and n <= MAX_DIM for n in shape):
        raise WireError("shape", f"bad shape {str(shape)[:100]}")
    dtype = np.dtype(DTYPES[header["dtype"]])
    # A zero-size dimension makes the product 0 whatever sits beside it, but numpy still refuses to reshape
    # into (0, 2**40, 2**40): bound the product of the other dimensions too.
    if math.prod(n for n in shape if n) > max(max_payload // dtype.itemsize, MAX_DIM):
        raise WireError("shape", f"shape {str(shape)[:100]} is too large")
    expected = math.prod(shape) * dtype.itemsize  # Python ints: np.prod in int64 overflows or wraps to 0
    if expected > max_payload:
        raise WireError("payload_size", f"{expected} bytes is over the {max_payload}-byte limit")
    if expected != len(payload):
        raise WireError("shape", f"shape {shape} × {dtype.itemsize} = {expected} bytes, payload has {len(payload)}")
    array = np.frombuffer(payload, dtype=dtype).reshape(shape)
    if check_finite and header["dtype"] in FLOAT_DTYPES and not np.isfinite(array).all():
        raise WireError("non_finite", "payload holds NaN or Inf")
    mode = header.get("mode", "learn")
    if mode not in MODES:
        raise WireError("mode", f"unknown mode {str(mode)[:40]!r}")
    rows = shape[0] if shape else 0
    label = header.get("label")
    if label is not None:
        if not isinstance(label, list) or len(label) != rows or not all(is_count(v) for v in label):
            raise WireError("label", "label must be one non-negative int per row")
    trace = header.get("trace")
    if trace is not None and not (_is_trace(trace) and all(len(layer) == rows for layer in trace)):
        # The sink indexes trace[layer][row] for every row: a short trace is refused here, not an IndexError there.
        raise WireError("trace", "trace must be a list, per layer, of one finite number per row")
    known = set(REQUIRED) | {"mode", "label", "trace"}
    extra = {k: v for k, v in header.items() if k not in known}
    return Message(
        kind=header["kind"],
        array=array,
        stream=header["stream"],
        seq=header["seq"],
        t_src=float(header["t_src"]),
        label=label,
        mode=mode,
        trace=trace,
        extra=extra,
    )


def _parse_int(text: str) -> int:
    """json.loads' integer hook: a 4,300-digit integer is refused before Python spends time (or a ValueError) on it."""
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise WireError("header_int", f"an integer of {len(text)} digits")
    value = int(text)
    if abs(value) > MAX_INT:
        raise WireError("header_int", f"integer {value} is beyond ±2**53")
    return value


def is_int(v: Any) -> bool:
    """A JSON integer: bool is an int subclass in Python, and `"barrier": true` must not read as barrier 1."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_count(v: Any) -> bool:
    """A non-negative JSON integer."""
    return is_int(v) and v >= 0


def _finite_number(v: Any) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an int too large for a float
        return False


def _is_trace(trace: Any) -> bool:
    return isinstance(trace, list) and all(isinstance(row, list) and all(_finite_number(v) for v in row) for row in trace)


# A header's worst case per row, in bytes: a trace value is rounded to 4 decimals ("-12345.6789,"), a label is a
# class index ("9999,"). What is not per row (the fixed fields, blocks, step) fits in HEADER_BASE_BYTES.
TRACE_VALUE_BYTES = 12
LABEL_BYTES = 5
HEADER_BASE_BYTES = 4096


def header_bound(rows: int, trace_layers: int, labelled: bool) -> int:
    """The most bytes the header of a `rows`-row activity message can take after `trace_layers` layers."""
    return HEADER_BASE_BYTES + rows * (trace_layers * TRACE_VALUE_BYTES + (LABEL_BYTES if labelled else 0))


def pack_tensors(tensors: dict[str, np.ndarray]) -> tuple[np.ndarray, list[dict]]:
    """Several float32 arrays -> one flat payload plus the "tensors" header entry that splits it again."""
    flat = np.concatenate([np.ascontiguousarray(a, dtype=np.float32).ravel() for a in tensors.values()])
    layout = [{"name": k, "shape": list(a.shape)} for k, a in tensors.items()]
    return flat, layout


def unpack_tensors(flat: np.ndarray, layout: Any) -> dict[str, np.ndarray]:
    """The inverse of pack_tensors; WireError when the layout doesn't match the payload."""
    if not isinstance(layout, list) or not all(isinstance(t, dict) for t in layout):
        raise WireError("tensors", "missing or malformed 'tensors' layout")
    if flat.ndim != 1:
        raise WireError("tensors", f"payload must be flat, got shape {flat.shape}")
    out, offset = {}, 0
    for entry in layout:
        name, shape = entry.get("name"), entry.get("shape")
        if not isinstance(name, str) or not isinstance(shape, list) or len(shape) > MAX_DIMS \
                or not all(is_count(n) and n <= MAX_DIM for n in shape):
            raise WireError("tensors", f"bad tensor entry {entry!r}")
        size = math.prod(shape)
        if offset + size > flat.size:  # checked before reshape, which would raise a plain ValueError
            raise WireError("tensors", f"layout needs more than the {flat.size} values in the payload")
        out[name] = flat[offset : offset + size].reshape(shape)
        offset += size
    if offset != flat.size:
        raise WireError("tensors", f"layout covers {offset} values, payload has {flat.size}")
    return out
