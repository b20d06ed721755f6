"""A layer worker's checkpoints, and the barriers that wait for them (exactly-once, workers/delivery.py).

At a barrier the layer's state is copied (weights.LastGood) with the rows its policy holds unstepped (positives
waiting for their negatives, workers/pairing.py), and written on a thread (weights.BackgroundCheckpoint), as Flink's
asynchronous snapshots, while frames after the barrier go on being learned and forwarded. The barrier goes on (and the
sink acknowledges it to the source) only once the checkpoint is on disk. Layers above may then checkpoint a few
batches past it: their gates skip those if the source ever rewinds to it. (Stepping the held rows first meant waiting
for their negatives at every barrier: the whole pipeline stalled behind layers 1 and 2 for about 60 ms each time.)
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from ffstream.ff import FFLayer, checkpoint
from ffstream.net import wire
from ffstream.workers.layer.delivery import LayerDelivery
from ffstream.workers.layer.weights import BackgroundCheckpoint, LastGood
from ffstream.workers.pairing import Pairing

HELD_KEY = "held"  # the checkpoint's metadata entry: the source seqs of each held positive saved with it
FRAMES_KEY = "frames_learned"  # and the frames learned before its last step: where its learning-rate schedule goes on from


class LayerCheckpoints:
    """Checkpoints of one layer in `directory` (None: none, the last good copy only), and the barrier held for one."""

    def __init__(self, directory: str | None, index: int, layer: FFLayer, last_good: LastGood, delivery: LayerDelivery,
                 meta: dict[str, Any], send_up: Callable[[wire.Message], bool], dropped: Counter):
        self.directory, self.index, self.layer = directory, index, layer
        self.last_good, self.delivery, self.meta = last_good, delivery, meta
        self.send_up, self.dropped = send_up, dropped  # the worker's output (False: not sent, stopping) and its drop counts
        self.writer = BackgroundCheckpoint()
        self.held: wire.Message | None = None  # the barrier whose checkpoint is being written

    def barrier(self, reply: wire.Message, pairing: Pairing | None) -> None:
        """Checkpoint for a barrier, with the rows `pairing` holds unstepped, then pass `reply` on: once on disk."""
        if self.directory:
            self.save(background=True, pairing=pairing)  # the previous barrier's checkpoint on disk and that barrier on first
            self.held = reply  # only now: save() passes on what is held before it starts the write (a barrier held
            # before it went on ahead of its own checkpoint, and a kill then left the source committed past this layer)
        else:
            self.settle()  # barriers keep their order
            self.held = reply
            self._pass_held()

    def poll(self) -> None:
        """In the worker's loop: the held barrier goes on once its checkpoint is written (raising what the write raised)."""
        if self.held is not None and self.writer.finished():
            self._pass_held()

    def periodic(self, every_s: float) -> None:
        """In the worker's loop: a checkpoint (at most once) or a last good copy (exactly-once, whose checkpoints are
        taken at barriers only, each a cut the source knows of) every `every_s` seconds."""
        if time.monotonic() - self.last_good.at > every_s:
            self.save() if self.directory and not self.delivery.on else self.remember()

    def settle(self) -> None:
        """The checkpoint being written on disk (raising what the write raised), then its barrier passed on."""
        self.writer.wait()
        self._pass_held()

    def save(self, background: bool = False, pairing: Pairing | None = None) -> None:
        """Checkpoint the layer (weights, optimiser, the batches learned, the rows `pairing` holds): now, or on a thread."""
        self.settle()
        held, seqs = pairing.held_state() if pairing is not None else ({}, [])
        meta = {**self.meta, "delivery": self.delivery.saved(), HELD_KEY: seqs, FRAMES_KEY: self.last_good.frames}
        self.last_good.remember()  # in memory, what the checkpoint holds
        self.writer.start(checkpoint.layer_path(self.directory, self.index), self.layer, self.last_good.good, meta, held)
        if not background:
            self.writer.wait()

    def restore_held(self, pairing: Pairing | None, device) -> int:
        """At start, the rows the last checkpoint held unstepped, back into `pairing` (they step alone at once); their
        batches are learned as far as the gate is concerned. Returns how many positives."""
        path = checkpoint.layer_path(self.directory, self.index) if self.directory else None
        if pairing is None or path is None or not path.exists():
            return 0
        seqs = checkpoint.checkpoint_config(path)[1].get(HELD_KEY)
        if not isinstance(seqs, list) or not seqs:
            return 0
        return pairing.restore_held(checkpoint.held_tensors(path), [s for s in seqs if isinstance(s, list)], device)

    def remember(self) -> None:
        """A new last good copy, without a checkpoint (a write under way reads the old one: it finishes first)."""
        self.settle()
        self.last_good.remember()

    def _pass_held(self) -> None:
        out, self.held = self.held, None
        if out is not None and not self.send_up(out):
            self.dropped["barrier_not_sent"] += 1
