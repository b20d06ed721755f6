"""Exactly-once learning of a file or dataset stream (DESIGN.md §2 "Delivery"): what each worker remembers of it.

The source stamps every batch of such a stream with a `pass_id` (one pass over the stream: kept across restarts
of the source, new when a run starts the stream over) and its `seq`, and sends a barrier every few batches. A
worker learns a batch only when its seq is the next one after the last it learned (`SeqGate`): an older seq is a
replay after a rewind (forwarded, not learned); a newer one means something before it was lost on the way
(forwarded, not learned, and reported at the next barrier so that the source rewinds and replays it). The gate's
state is saved with every checkpoint, which the workers take at each barrier.

A layer that sees a gap also tells the source at once (a "gap" notice on the source's control socket), so that a
layer restarted after a crash is learning again within seconds, not after the next barrier's round trip. Each batch
carries the source's `replay` token, new at each start and each rewind: a notice names the token of the batch that
showed the gap, and the source rewinds only for a notice of its current token, so one rewind answers every notice
of the same loss, and a notice about batches sent before a rewind is ignored.

Negatives are not part of the guarantee: the sleep worker makes them from whatever frames it has, and a replayed
batch may give a layer negatives twice.

>>> gate = SeqGate()
>>> [gate.admit("p", seq) for seq in (0, 1, 1, 3, 2)]
['learn', 'learn', 'skip', 'gap', 'learn']
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ffstream.net import wire

PASS_KEY = "pass_id"  # header field of a data message or barrier under exactly-once delivery
REPLAY_KEY = "replay"  # header field of a data message: the source's replay token (new at each start and rewind)
GAP_NOTICE = "gap"  # the command of a layer's notice to the source: a batch is missing, rewind now
LEARN_LOG_ENV = "FFSTREAM_LEARN_LOG_DIR"  # debug: each worker appends the (seq, rows) it learns to <dir>/<name>.learn.jsonl

LEARN, SKIP, GAP = "learn", "skip", "gap"


@dataclass
class SeqGate:
    """Which batches of the stream a worker has learned: all of pass `pass_id` up to seq `upto`, and nothing after."""

    pass_id: str | None = None  # the pass learned from; None: none yet
    upto: int = -1  # the last seq learned in it (every seq before it learned too); -1: none
    barrier: int = 0  # the last barrier seen (its id), saved beside the weights it was taken with

    def admit(self, pass_id: str, seq: int) -> str:
        """LEARN (and remembered), SKIP (learned before) or GAP (an earlier batch has not come)."""
        if pass_id != self.pass_id:
            # A new pass over the stream (a run that starts it over): what was learned of another pass says nothing.
            self.pass_id, self.upto = pass_id, -1
        if seq <= self.upto:
            return SKIP
        if seq != self.upto + 1:
            return GAP
        self.upto = seq
        return LEARN

    def has_all(self, pass_id: Any, upto: Any) -> bool:
        """Whether everything of the pass up to seq `upto` has been learned (a barrier's question)."""
        return pass_id == self.pass_id and wire.is_int(upto) and upto <= self.upto

    def to_dict(self) -> dict[str, Any]:
        return {"pass_id": self.pass_id, "upto": self.upto, "barrier": self.barrier}

    @classmethod
    def from_dict(cls, saved: Any) -> SeqGate:
        """From a checkpoint's metadata; a fresh gate when there is none or it is malformed."""
        if not isinstance(saved, dict):
            return cls()
        pass_id, upto, barrier = saved.get("pass_id"), saved.get("upto"), saved.get("barrier", 0)
        if not (pass_id is None or isinstance(pass_id, str)) or not wire.is_int(upto) or not wire.is_int(barrier) or upto < -1:
            return cls()
        return cls(pass_id, upto, barrier)


class LearnLog:
    """Debug: a JSONL of what a worker learned, one line {"pass_id", "seq", "rows"} per learned batch, to check
    exactly-once from outside. A line is written as the batch is learned; at start the log is cut back to what the
    worker's checkpoint holds (what a kill -9 undid is not learned, and is learned again)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)  # <dir>/<worker name>.learn.jsonl
        self._fh = None

    @classmethod
    def from_env(cls, name: str) -> LearnLog | None:
        directory = os.environ.get(LEARN_LOG_ENV)
        return cls(Path(directory) / f"{name}.learn.jsonl") if directory else None

    def resume(self, gate: SeqGate) -> None:
        """Keep only the lines the checkpointed state holds: the gate's pass, up to its seq."""
        kept = [line for line in self.read(self.path) if line.get(PASS_KEY) == gate.pass_id and line.get("seq", gate.upto + 1) <= gate.upto]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text("".join(json.dumps(line) + "\n" for line in kept))
        os.replace(tmp, self.path)
        self._fh = open(self.path, "a", buffering=1)

    def add(self, pass_id: str, seq: int, rows: int) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", buffering=1)
        self._fh.write(json.dumps({PASS_KEY: pass_id, "seq": seq, "rows": rows}) + "\n")

    def sync(self) -> None:
        """Before a checkpoint: every line of what it holds is on disk (a kill just after must not lose them)."""
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    @staticmethod
    def read(path: str | os.PathLike) -> list[dict]:
        """The log's lines; a torn last line (a kill mid-write) is left out."""
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            return []
        lines = []
        for raw in text.splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict):
                lines.append(line)
        return lines
