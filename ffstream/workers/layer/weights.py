"""Copies of a layer worker's weights: the checkpoint it resumes from, the snapshot the sleep worker asks for, and the last good state, in memory,
what the last checkpoint holds (or would hold without a checkpoint directory), to roll back to when a step leaves
non-finite weights, at half the learning rate."""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ffstream.ff import FFLayer, RateSchedule, checkpoint
from ffstream.net import wire
from ffstream.net.transport import Receiver, send

Good = tuple[dict, dict]  # (layer.state_dict(), layer.optimizer.state_dict()), copies


def answer_snapshot(receiver: Receiver, layer: FFLayer, name: str, index: int, dropped: Counter, stopping: Callable[[], bool]) -> None:
    """Answer the request waiting at the REP `receiver` (when there is one after all, transport.Receiver.recv_ready)."""
    request = receiver.recv_ready()
    if receiver.took:
        send(receiver.sock, snapshot_reply(request, layer, name, index, dropped), stopping, timeout_ms=1000)


def snapshot_reply(request: wire.Message | None, layer: FFLayer, name: str, index: int, dropped: Counter) -> wire.Message:
    """The answer to a snapshot request: the weights as raw arrays under a header, with their version."""
    if request is None or request.kind != "snapshot_request":
        # REP must answer every request, even a bad one, or the socket locks up.
        dropped["bad_snapshot_request"] += request is not None
        return wire.Message("control", np.zeros(0, np.float32), stream=name, extra={"command": "error"})
    flat, layout = wire.pack_tensors({k: v.cpu().numpy() for k, v in layer.weights().items()})
    return wire.Message("snapshot", flat, stream=name, extra={"version": layer.version, "tensors": layout, "layer": index})


def remember(layer: FFLayer, old: Good | None) -> Good:
    """A copy of the layer's weights and optimiser state, into the previous copy's tensors where shapes match: a fresh
    weight-sized copy every period fragments the heap (RSS creeps up over minutes); an in-place copy reuses it."""
    old = old or (None, None)
    return _copy_into(old[0], layer.state_dict()), _copy_into(old[1], layer.optimizer.state_dict())


def resume(checkpoint_dir: str | None, index: int, layer: FFLayer, log: logging.Logger) -> dict[str, Any]:
    """Load layer `index`'s checkpoint from `checkpoint_dir` into `layer`, when there is one; its metadata (e.g.
    "delivery", the batches learned, for exactly-once), or {} for a fresh layer."""
    path = checkpoint.layer_path(checkpoint_dir, index) if checkpoint_dir else None
    if path is None or not Path(path).exists():
        return {}
    version = checkpoint.load_layer(path, layer)
    log.info("resumed from %s at version %d", path, version)
    return checkpoint.checkpoint_config(path)[1]


class BackgroundCheckpoint:
    """A checkpoint written and fsync'd on a thread from a copy of the layer's state (LastGood.good), as Flink's
    asynchronous snapshots: the layer steps on meanwhile, and the barrier it belongs to goes on once it is on disk
    (the worker asks `finished`). Writing in the loop stalled the whole pipeline at each barrier (0.1-0.15 s per
    2000-wide layer, one layer after another)."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self, path: Path, layer: FFLayer, good: Good, extra: dict, held: dict[str, torch.Tensor] | None = None) -> None:
        """Write `good` (not the live layer: it changes), and `held` rows, to `path`; one write at a time (`wait` first)."""
        self.wait()
        weights, optimizer = good
        cfg, version = layer.cfg, layer.version  # the copy's version: LastGood.remember copies the step counter too

        def write() -> None:
            try:
                checkpoint.save_layer_state(path, cfg, weights, optimizer, version, extra, held)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the worker's loop by finished() or wait()
                self._error = exc

        self._thread = threading.Thread(target=write, name="checkpoint", daemon=True)
        self._thread.start()

    def finished(self) -> bool:
        """Whether no write is under way; raises what a finished write raised (the checkpoint is not there)."""
        if self._thread is not None and self._thread.is_alive():
            return False
        self.wait()
        return True

    def wait(self) -> None:
        """Until the write under way, if any, is on disk; raises what it raised."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


class LastGood:
    """The last good state of a worker's layer, and its learning rate: the schedule's, times a factor that each roll
    back to that state halves."""

    def __init__(self, layer: FFLayer, schedule: RateSchedule, log: logging.Logger, frames_before: int = 0):
        self.layer = layer
        self.schedule = schedule
        self.frames_before = frames_before  # frames learned before this run, by the checkpoint it resumed: the schedule goes on from there
        self.frames = 0  # frames learned in all before the last step (where the schedule stands)
        self.log = log  # the worker's
        self.good: Good | None = None  # copies of the weights and optimiser state
        self.at = time.monotonic()  # when they were taken
        self.rollbacks = 0  # steps that left non-finite weights and were undone
        self.lr_factor = 1.0  # halved at each rollback

    def remember(self) -> None:
        self.good = remember(self.layer, self.good)
        self.at = time.monotonic()

    def decay_lr(self, frames: int) -> None:
        """Before a step after `frames` rows learned in this run: the schedule's learning rate, times the rollbacks' factor."""
        self.frames = self.frames_before + frames
        self.layer.set_lr_scale(self.lr_factor * self.schedule.scale(self.frames))

    def roll_back(self, frames: int) -> None:
        """Divergence: weights went non-finite. Back to the last good state, at half the learning rate."""
        restore(self.layer, self.good)
        self.rollbacks += 1
        self.lr_factor *= 0.5
        self.decay_lr(frames)
        self.log.warning("non-finite weights: rolled back to version %d, learning rate x%g (rollback %d)",
                         self.layer.version, self.lr_factor, self.rollbacks)


def restore(layer: FFLayer, good: Good) -> None:
    weights, optimizer = good
    layer.load_state_dict(weights)
    layer.optimizer.load_state_dict(copy.deepcopy(optimizer))  # a copy: the next roll back needs it unchanged


def _copy_into(old: Any, new: Any) -> Any:
    """A deep copy of `new` (nested dicts and lists of tensors and values) that reuses old's tensors where they fit."""
    if isinstance(new, torch.Tensor):
        if isinstance(old, torch.Tensor) and old.shape == new.shape and old.dtype == new.dtype and old.device == new.device:
            return old.copy_(new)
        return new.detach().clone()
    if isinstance(new, dict):
        return type(new)((k, _copy_into(old.get(k) if isinstance(old, dict) else None, v)) for k, v in new.items())
    if isinstance(new, (list, tuple)):
        olds = old if isinstance(old, (list, tuple)) and len(old) == len(new) else [None] * len(new)
        return type(new)(_copy_into(o, v) for o, v in zip(olds, new))
    return copy.deepcopy(new)
