"""A layer worker's negative input: the sleep worker's updates (or the layer below's, chained), checked, then handed to
the step policy (negative inputs) or to the layer (negative gradients)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
import torch

from ffstream.ff import FFLayer
from ffstream.net import wire
from ffstream.net.transport import Receiver
from ffstream.workers.layer.policies import StepPolicy
from ffstream.monitor.stats import Phases

MAX_PENDING_NEGATIVES = 8  # negative batches pending in the layer past which it steps on them alone (see worker.IDLE_WAKE_S)


class NegativeInbox:
    """Reads the negative socket: each update is checked before use; a bad one is dropped and counted."""

    def __init__(self, receiver: Receiver, layer: FFLayer, device: torch.device, phases: Phases, dropped: Counter,
                 record: Callable[[dict, int], None], policy: StepPolicy, negatives_only: Callable[[], None]):
        self.receiver = receiver  # PULL, bound: negative_update messages
        self.layer = layer  # the worker's layer: shapes to check against, and where negative gradients wait
        self.device = device  # of the layer's weights
        self.phases = phases  # the worker's phase clock: reads count as "negatives"
        self.dropped = dropped  # the worker's drop counts
        self.record = record  # ({figure: value}, rows) into the worker's recent and whole-run figures
        self.policy = policy  # the worker's step policy: negative inputs go to its on_negative
        self.negatives_only = negatives_only  # the worker's step on pending negatives alone
        self.taken = 0  # updates accepted

    def drain(self, most: int = 16) -> None:
        """Take the negatives that are already here (at most `most`), so that a positive arriving with them can step."""
        for _ in range(most):
            if not self.receiver.sock.poll(0):
                return
            self.take()

    def take(self) -> None:
        """One ready update, if it is valid: to the policy (inputs) or the layer (a gradient); its staleness recorded."""
        with self.phases("negatives"):
            msg = self.receiver.recv_ready()
            if msg is None:
                return
            try:
                if msg.kind != "negative_update":
                    raise wire.WireError("kind", f"{msg.kind} on the negative socket")
                # A chained negative (from the layer below, sleep.route "chain") has no snapshot version: staleness 0.
                version = msg.extra.get("version")
                version = None if version is None else int(version)  # OverflowError: JSON allows Infinity
                if msg.extra.get("form") == "gradient":
                    self._gradient(msg)
                else:
                    self.policy.on_negative(msg.seq, self._inputs(msg))
            except (wire.WireError, TypeError, ValueError, OverflowError) as exc:
                self.dropped[getattr(exc, "reason", "negative_update")] += 1
                return
            self.taken += 1
            staleness = 0 if version is None else max(0, self.layer.version - version)
            self.record({"staleness": staleness}, 1)
            if self.layer.pending_count >= MAX_PENDING_NEGATIVES:
                self.negatives_only()

    def _inputs(self, msg: wire.Message) -> torch.Tensor:
        """Negative inputs (B, D), as the layer's positive input."""
        x = np.asarray(msg.array)
        if x.ndim != 2 or x.shape[1] != self.layer.input_width or msg.extra.get("form") != "inputs":
            raise wire.WireError("negative_shape", f"negative inputs of shape {x.shape}, expected (B, {self.layer.input_width})")
        return torch.from_numpy(x.astype(np.float32)).to(self.device)

    def _gradient(self, msg: wire.Message) -> None:
        """A gradient taken on the sleep worker's snapshot: waits in the layer for its next step."""
        parts = wire.unpack_tensors(msg.array, msg.extra.get("tensors"))
        # One tensor per parameter, as `Gradients`; a snapshot's `weights()` may carry more (batch-norm statistics).
        params = dict(self.layer.named_parameters())
        expected = {k: tuple(p.shape) for k, p in params.items()}
        if {k: tuple(v.shape) for k, v in parts.items()} != expected:
            raise wire.WireError("negative_shape", f"negative update shapes do not match {expected}")
        self.layer.add_negative([torch.from_numpy(parts[k].copy()).to(self.device) for k in params])
        for key in ("goodness_neg", "p_neg"):
            if isinstance(msg.extra.get(key), (int, float)):
                self.record({key: msg.extra[key]}, int(msg.extra.get("rows", 1)))
