"""A layer's side of exactly-once delivery (workers/delivery.py): which learn messages to learn, and its barriers.

The worker asks `admit` of every learn message and hands each barrier to `barrier_reply`; what was learned travels
in the checkpoint's metadata (`saved`), and the debug learning log follows it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ffstream.net import wire
from ffstream.workers.delivery import GAP, GAP_NOTICE, LEARN, PASS_KEY, REPLAY_KEY, LearnLog, SeqGate


class LayerDelivery:
    """The gate (which seqs were learned), the rows forwarded without learning, and the optional learning log."""

    def __init__(self, name: str, saved: Any = None):
        self.gate = SeqGate.from_dict(saved)  # `saved`: the checkpoint's "delivery" entry, or None for a fresh layer
        self.on = False  # set by the first message that carries a pass id: a file or dataset under exactly-once
        self.replayed_rows = 0  # rows forwarded without learning: learned before (a replay after a rewind or restart)
        self.gap_rows = 0  # rows forwarded without learning: an earlier batch is missing (it comes again after a rewind)
        self.name = name
        self.notice: wire.Message | None = None  # a gap notice for the source, to send (take_notice)
        self._noticed: str | None = None  # the replay token of the last gap notice: one notice per token
        self.log = LearnLog.from_env(name)
        if self.log is not None:
            self.log.resume(self.gate)

    def admit(self, msg: wire.Message) -> bool:
        """Whether to learn a learn-mode message: under exactly-once only when it is the next batch (SeqGate)."""
        pass_id = msg.extra.get(PASS_KEY)
        if not isinstance(pass_id, str):
            return True  # a live stream, or a file without barriers: at most once
        self.on = True
        verdict = self.gate.admit(pass_id, msg.seq)
        if verdict == LEARN:
            return True
        rows = len(msg.array) if msg.array.ndim else 0
        if verdict == GAP:
            self.gap_rows += rows
            self._notice_gap(pass_id, msg)
        else:
            self.replayed_rows += rows
        return False

    def _notice_gap(self, pass_id: str, msg: wire.Message) -> None:
        """Tell the source of a gap at once (workers/delivery.py), once per replay token: it rewinds without waiting for
        the next barrier. Without a token (an older source) the barrier alone reports it."""
        replay = msg.extra.get(REPLAY_KEY)
        if isinstance(replay, str) and replay != self._noticed:
            self._noticed = replay
            self.notice = wire.Message("control", np.zeros(0, np.float32), stream=self.name, seq=msg.seq,
                                       extra={"command": GAP_NOTICE, PASS_KEY: pass_id, REPLAY_KEY: replay, "upto": self.gate.upto})

    def take_notice(self) -> wire.Message | None:
        """The gap notice to send, if one is due (then no longer)."""
        notice, self.notice = self.notice, None
        return notice

    def runs(self, messages: list[wire.Message]) -> list[tuple[bool, list[wire.Message]]]:
        """Learn messages in arrival order, cut into runs of those to learn and those only to forward (`admit`)."""
        runs: list[tuple[bool, list[wire.Message]]] = []
        for msg in messages:
            learns = self.admit(msg)
            if runs and runs[-1][0] == learns:
                runs[-1][1].append(msg)
            else:
                runs.append((learns, [msg]))
        return runs

    def learned(self, messages: list[wire.Message], rows: list[int]) -> None:
        """Log (debug) the learn messages about to be stepped, with their row counts."""
        if self.log is not None:
            for m, n in zip(messages, rows):
                self.log.add(m.extra.get(PASS_KEY), m.seq, n)

    def barrier_reply(self, msg: wire.Message, index: int) -> wire.Message:
        """The barrier to pass on, after the checkpoint: it adds this layer to `behind` when a batch before it is missing."""
        self.on = True
        barrier = msg.extra.get("barrier")
        self.gate.barrier = barrier if wire.is_int(barrier) else self.gate.barrier
        behind = msg.extra.get("behind")
        behind = [i for i in behind if wire.is_int(i)] if isinstance(behind, list) else []
        if not self.gate.has_all(msg.extra.get(PASS_KEY), msg.seq):
            behind.append(index)
        return wire.Message("barrier", np.zeros(0, np.float32), stream=msg.stream, seq=msg.seq, t_src=msg.t_src,
                            extra={**msg.extra, "behind": behind})

    def saved(self) -> dict[str, Any]:
        """For the checkpoint's metadata; the log's lines are synced first, since a restart cuts it back to this."""
        if self.log is not None:
            self.log.sync()
        return self.gate.to_dict()

    def close(self) -> None:
        if self.log is not None:
            self.log.close()

    def metrics(self) -> dict[str, int]:
        return {"replayed_rows": self.replayed_rows, "gap_rows": self.gap_rows, "learned_upto": self.gate.upto}
