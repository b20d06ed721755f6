"""One optimiser step of a layer worker's layer: the positives and the negatives of the same frames, judged by the
weights of this moment (the interleaved reference's step), with a check that the weights stayed finite."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import zmq

from ffstream.ff import FFLayer
from ffstream.net import wire
from ffstream.net.transport import send
from ffstream.monitor.stats import Phases

Negatives = list[tuple[int, torch.Tensor]]  # (source seq, negative inputs (B, D)) of one step
OnForward = Callable[[torch.Tensor], None] | None  # called with a pass's activity h (B, N) between its forward and backward


@dataclass
class NegativeChain:
    """Sleep route "chain": a paired step sends the next layer its negative inputs, this layer's normalised activity on
    the negatives, per source batch; flat rows (B, D), as the sleep worker sends them."""

    sock: zmq.Socket  # PUSH, connected to the next layer's negative input
    wire_dtype: np.dtype  # float32 or float16 on the wire
    name: str  # the sending worker's, as the messages' stream
    stopping: Callable[[], bool]  # a send gives up when the worker stops
    dropped: Counter  # the worker's drop counts

    def send(self, layer: FFLayer, negatives: Negatives, h: torch.Tensor) -> None:
        act = layer.normalize(h).flatten(1).cpu().numpy()  # a spatial layer's (B, C, H, W) map would be refused as a bad shape
        if not np.isfinite(act).all():
            self.dropped["non_finite_negative"] += len(negatives)
            return
        act = act.astype(self.wire_dtype, copy=False)
        start = 0
        for seq, x in negatives:
            rows = act[start : start + len(x)]
            start += len(x)
            update = wire.Message("negative_update", rows, stream=self.name, seq=seq, extra={"form": "inputs", "rows": len(rows)})
            if not send(self.sock, update, self.stopping, timeout_ms=1000):
                self.dropped["negative_not_sent"] += 1


class Stepper:
    """Takes the steps a step policy decides on; counts them, records how the weights saw the negatives."""

    def __init__(self, layer: FFLayer, phases: Phases, record_negative: Callable[[dict, int], None],
                 on_diverged: Callable[[], None]):
        self.layer = layer  # the worker's layer
        self.phases = phases  # the worker's phase clock: steps count as "learn"
        self.record_negative = record_negative  # ({"goodness_neg": g, "p_neg": p}, rows): the worker's figures
        self.on_diverged = on_diverged  # a step left non-finite weights: the worker rolls back
        self.chain: NegativeChain | None = None  # set by the worker when it passes negatives up (route "chain")
        self.updates = 0  # steps applied (rolled-back ones not counted)

    def step(self, positives: torch.Tensor, negatives: Negatives, labels: torch.Tensor | None = None,
             on_forward: OnForward = None, between: Callable[[], None] | None = None) -> tuple[dict, torch.Tensor]:
        """One step on positives (B, D) and the negatives of the same frames; returns the positive stats and h.

        The negatives go first, so that with a chained sleep their activity reaches the next layer before the
        positives' does, and it can step at once too. `between` runs after each pass's forward half and after the
        gradients, before they are applied (a scheduled step forwards the frames that arrived meanwhile).
        """
        layer = self.layer
        with self.phases("learn"):
            if negatives:
                # One pass over both batches (as the reference's step): the negatives' mean loss weighs as much as
                # the positives', and their activity is handed on first.
                chain = (lambda h: self.chain.send(layer, negatives, h)) if self.chain is not None else None
                grads, stats, neg_stats, h, _ = layer.paired_gradients(
                    positives, torch.cat([n for _, n in negatives]), labels,
                    on_negative_forward=_then(chain, between), on_positive_forward=_then(on_forward, between))
                layer.last_negative_stats = neg_stats
            else:
                grads, stats, h = layer.wake(positives, labels, on_forward=_then(on_forward, between))
            if between is not None:
                between()
            self._apply(grads)
        return stats, h

    def negatives_only(self) -> None:
        """A step on the pending negatives alone (the wake path is idle, or sleep is phased)."""
        self._apply(None)

    def _apply(self, grads) -> None:
        self.layer.apply_gradients(grads)
        # A NaN or inf anywhere makes the sum non-finite, so one reduction tells: 0.2 ms on a 2000x2000 weight
        # against 9.5 ms for isfinite(w).all() (which builds a 4M-element mask), a quarter of a batch-64 step.
        if not all(bool(torch.isfinite(t.sum())) for t in self.layer.weights().values()):
            self.on_diverged()
            return
        self.updates += 1
        # Negatives given as inputs are judged at the step: record how the current weights saw them.
        stats = self.layer.last_negative_stats
        if stats is not None:
            self.record_negative({"goodness_neg": stats["goodness"], "p_neg": stats["p"]}, 1)
            self.layer.last_negative_stats = None


def _then(on_forward: OnForward, between: Callable[[], None] | None) -> OnForward:
    """on_forward, then `between` (when there is one)."""
    if between is None:
        return on_forward

    def then(h: torch.Tensor) -> None:
        if on_forward is not None:
            on_forward(h)
        between()
    return then
