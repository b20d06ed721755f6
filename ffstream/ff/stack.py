"""Layers stacked in one process: the reference that the worker pipeline must equal."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ffstream.ff.config import LayerConfig
from ffstream.ff.labels import embed_label, neutral_label
from ffstream.ff.layer import Gradients
from ffstream.ff.spec import make_layer


class FFStack:
    """FF layers run one after another in a single process.

    The pipeline gives each `FFLayer` to its own worker; here they share a
    loop. Between layers only the normalised activity is passed on.
    """

    def __init__(self, configs: Sequence[LayerConfig], label_scale: float = 1.0, label_relative: bool = False):
        for below, above in zip(configs, configs[1:]):
            if below.width != above.in_features:
                raise ValueError(f"layer widths do not chain: {below.width} -> {above.in_features}")
        self.layers = [make_layer(c) for c in configs]
        self.label_scale = label_scale  # the value written into a label slot (supervised stacks)
        self.label_relative = label_relative  # the slot value is label_scale × the frame's RMS (labels.slot_value)

    def set_lr_scale(self, scale: float) -> None:
        for layer in self.layers:
            layer.set_lr_scale(scale)

    def __len__(self) -> int:
        return len(self.layers)

    def activities(self, x: torch.Tensor) -> list[torch.Tensor]:
        """No learning: the raw activity h of every layer for input x: (B, D)."""
        hs = []
        with torch.no_grad():
            for layer in self.layers:
                h = layer(x)
                hs.append(h)
                x = layer.normalize(h)
        return hs

    def learn_positive(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> list[dict]:
        """The wake pass: each layer takes its positive step, then hands its normalised activity up.

        labels: (B,), for layers whose loss needs them (channel-wise competition).
        """
        stats = []
        for layer in self.layers:
            h, s = layer.learn(x, labels)
            stats.append(s)
            x = layer.normalize(h)
        return stats

    def negative_gradients(self, x: torch.Tensor) -> list[tuple[Gradients, dict]]:
        """The sleep pass: each layer's negative gradient on x, with no weight changed."""
        out = []
        for layer in self.layers:
            grads, s, h = layer.local_gradients(x, positive=False)
            out.append((grads, s))
            x = layer.normalize(h)
        return out

    def learn_interleaved(self, x_pos: torch.Tensor, x_neg: torch.Tensor, labels: torch.Tensor | None = None) -> list[dict]:
        """Zero staleness: negatives on the current weights, then one step of positive plus negative per layer.

        labels: (B,) the positives' classes, for layers whose loss needs them (channel-wise competition).
        """
        stats = []
        for layer in self.layers:
            # One forward pass over both batches gives h_neg (before the step, as the sleep worker's snapshot
            # would see it) and h_pos, and one backward pass the step's whole gradient, as a layer worker does.
            grads, pos_stats, neg_stats, h_pos, h_neg = layer.paired_gradients(x_pos, x_neg, labels)
            layer.apply_gradients(grads)
            stats.append({"pos": pos_stats, "neg": neg_stats})
            x_pos, x_neg = layer.normalize(h_pos), layer.normalize(h_neg)
        return stats

    def label_scores(self, x: torch.Tensor, num_classes: int, skip_first: bool = True) -> torch.Tensor:
        """Energy prediction: goodness summed over layers 2..L (all layers with skip_first=False) for every candidate label.

        x: (B, D) frames -> (B, K) scores, higher is more likely. In the "min" variant positives have low
        goodness, so the sign is flipped.
        """
        first = 1 if skip_first and len(self.layers) > 1 else 0
        return self.label_goodness(x, num_classes)[:, :, first:].sum(dim=2)

    def label_goodness(self, x: torch.Tensor, num_classes: int) -> torch.Tensor:
        """Each layer's goodness for every candidate label, sign-flipped in the "min" variant: (B, D) -> (B, K, L).

        One pass per label gives every layer's figure, so readouts over different layers cost no more passes.
        """
        if self.competes:
            # CwComp: one pass, no label in the input; a class's score is its channel group's goodness.
            hs = self.activities(x)
            return torch.stack([layer.class_scores(h).flatten(2).mean(dim=2) for layer, h in zip(self.layers, hs)], dim=2)
        sign = 1.0 if self.layers[0].cfg.variant == "max" else -1.0
        labels = torch.empty(x.shape[0], dtype=torch.long)
        scores = []
        for k in range(num_classes):
            hs = self.activities(embed_label(x, labels.fill_(k), num_classes, self.label_scale, self.label_relative))
            scores.append(torch.stack([layer.goodness(h) for layer, h in zip(self.layers, hs)], dim=1))
        return sign * torch.stack(scores, dim=1)

    def readout_features(self, x: torch.Tensor, num_classes: int | None, layers: Sequence[int]) -> torch.Tensor:
        """Each given layer's (0-based) readout features on one pass, its normalised activity or a pooled map; neutral label if supervised."""
        if num_classes and not self.competes:
            x = neutral_label(x, num_classes, self.label_scale, self.label_relative)
        hs = self.activities(x)
        return torch.cat([self.layers[i].features(hs[i]) for i in layers], dim=1)

    @property
    def competes(self) -> bool:
        """Channel-wise competition (CwComp): labels are targets at every layer, never written into the input."""
        return bool(getattr(self.layers[0].cfg, "competition", 0))


def readout_layers(num_layers: int, supervised: bool) -> list[int]:
    """Which layers feed the readout: 2..L for the supervised head, the last three for the unsupervised probe."""
    if supervised:
        return list(range(1, num_layers)) if num_layers > 1 else [0]
    return list(range(max(0, num_layers - 3), num_layers))
