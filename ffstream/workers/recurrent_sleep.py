"""Recurrent sleep worker: the negative pass of the recurrent network, on snapshots, over time.

Negatives are the paper's: for labelled images, the real image with a wrong
label clamped at the top (random, or hard: sampled from the snapshot's own
one-pass prediction); for video, hybrid frames with nothing at the top. They
are run through the snapshot for as many steps as the positives are (every
`iterations` steps of a static image; one step per batch of video, carrying the
negative run's own state from batch to batch), and each layer is sent its packed
inputs [from below | from above at t−1 | own state at t−1] of each step, with
the seq of the positive message of that step, so the layer pairs them as usual.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ffstream.ff import LayerConfig
from ffstream.ff.dreamer import UNLABELLED_KINDS
from ffstream.ff.recurrent import RecurrentConfig, RecurrentStack
from ffstream.net import wire
from ffstream.net.transport import send
from ffstream.workers.sleep import SleepWorker


class RecurrentSleepWorker(SleepWorker):
    def __init__(self, frames_addr: str, snapshot_addrs: list[str], negative_addrs: list[str], layer_configs: list[LayerConfig], *,
                 recurrent: RecurrentConfig = RecurrentConfig(),
                 static_images: bool = True,  # True: each batch is `recurrent.iterations` steps; False: video, one step per batch
                 label_scale: float = 1.0, **kwargs: Any):
        kwargs.pop("head_addr", None)  # hard negatives come from the snapshot's one-pass prediction, not the sink's head
        super().__init__(frames_addr, snapshot_addrs, negative_addrs, layer_configs, label_scale=label_scale, **kwargs)
        if self.plan.update != "inputs":
            raise ValueError("the recurrent sleep worker sends negative inputs only (sleep.update = 'inputs')")
        self.steps = recurrent.iterations if static_images else 1
        self.carry_state = not static_images
        self.stack = RecurrentStack(layer_configs, self.num_classes, label_scale, recurrent)  # the snapshot, never trained here
        self.generator = torch.Generator().manual_seed(kwargs.get("seed", 0))
        self.negative_states: list[torch.Tensor] | None = None  # video: the negative run's states at its newest frame

    @property
    def wake_steps_per_batch(self) -> int:
        # A snapshot every sleep_every layer steps, not source batches: at 8 steps a batch, every 10 batches left the
        # negatives 35 steps stale on average and cost 4 points of energy accuracy (72.3 against 76.6 %, 2×500, 10,000 frames).
        return self.steps

    def dream(self, batch: np.ndarray, labels: list[int] | None, seq: int = 0) -> None:
        if self.plan.negatives not in UNLABELLED_KINDS and (labels is None or max(labels) >= self.num_classes):
            self.dropped["label"] += 1
            return
        x = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).flatten(1)
        rows = len(x)
        if self.plan.negatives in UNLABELLED_KINDS:  # made from frames alone, by the Dreamer (never a paired kind: those need stream.pairs)
            x_neg = self.dreamer.negatives(batch, None, self.stack)
            top = self.stack.label_input(None, rows)  # (B, 0) when unsupervised
        else:
            wrong = self.stack.wrong_labels(x, torch.tensor(labels), self.plan.negatives == "hard", self.generator)
            x_neg, top = x, self.stack.label_input(wrong, rows)
        self.dreamer.observe(batch)
        self.staleness.add(self.since_snapshot - 1)
        states = self.stack.initial_states(rows)
        if self.carry_state and self.negative_states is not None:
            states = [s[-1:].expand(rows, -1) for s in self.negative_states]
        for k in range(self.steps):
            packed, states = self.stack.step(x_neg, top, states)
            for i, (layer, pusher) in enumerate(zip(self.stack.layers, self.pushers)):
                extra = {"version": self.versions[i], "form": "inputs", "rows": rows, "step": k}
                update = wire.Message("negative_update", packed[i].numpy(), stream=self.name, seq=seq * self.steps + k, extra=extra)
                if not send(pusher, update, lambda: self.stopping, timeout_ms=5000):
                    self.dropped["negative_not_sent"] += 1
                self.goodness_neg[i].add(float(layer.goodness(states[i]).mean()))
        self.negative_states = states
        self.batches += 1
        self.negatives_made += rows
        self.rate.add(rows)
        if self.max_batches is not None and self.batches >= self.max_batches:
            self.finished = True
