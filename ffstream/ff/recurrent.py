"""The paper's recurrent Forward-Forward network: top-down input from the layer above, one step late.

A layer's state at step t is

    h_t = d·h_{t−1} + (1 − d)·relu(W·x̂_t + U·ẑ_{t−1} + b),   d = 0.3 (the damping)

with x̂_t the normalised activity of the layer below at t (in a pipeline it
arrives with the frame) and ẑ_{t−1} the normalised activity of the layer above
at t−1 (in a pipeline it is what the layer above last sent back). W and U are
the layer's own weights for each direction. The top layer's "above" is the
label (one-hot, neutral, or a candidate being tried) in supervised mode, and
nothing in unsupervised mode. A static image is a video of `iterations`
identical frames; it is classified from goodness summed over a window of
iterations (3–5 of 8 in the paper).

The layer is an `FFLayer` whose input row is packed [x (D) | z (T) | h_{t−1} (N)],
so that learning, negatives, pairing and snapshots work exactly as for the dense
layer: the old state and the top-down input are just more of the input.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ffstream.ff.config import LayerConfig
from ffstream.ff.layer import FFLayer
from ffstream.ff.negatives import hard_wrong_labels, random_wrong_labels
from ffstream.ff.norm import rms_normalize
from ffstream.ff.recurrent_config import DAMPING, RecurrentConfig


class RecurrentFFLayer(FFLayer):
    """A dense FF layer with a second weight matrix for the top-down input, and a damped state.

    >>> layer = RecurrentFFLayer(LayerConfig(in_features=4, width=3), top_down_features=2)
    >>> packed = layer.pack(torch.ones(5, 4), torch.zeros(5, 2), torch.zeros(5, 3))
    >>> layer.learn(packed)[0].shape, layer.input_width
    (torch.Size([5, 3]), 9)
    """

    def __init__(self, cfg: LayerConfig, top_down_features: int, damping: float = DAMPING):
        super().__init__(cfg)
        self.top_down_features = top_down_features  # T: the width of the layer above, the label slots, or 0
        self.damping = damping
        gen = torch.Generator().manual_seed(cfg.seed + 104729)  # its own stream: W is drawn exactly as in FFLayer
        self.top_down = nn.Parameter(torch.randn(cfg.width, top_down_features, generator=gen) / max(top_down_features, 1) ** 0.5)
        self.optimizer = self._make_optimizer()  # again, now that U is a parameter too

    @property
    def input_width(self) -> int:
        return self.cfg.in_features + self.top_down_features + self.cfg.width

    def pack(self, x: torch.Tensor, z: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        """x: (B, D) from below, z: (B, T) from above at t−1, old: (B, N) this layer's state at t−1 -> (B, D+T+N)."""
        return torch.cat([x, z, old], dim=1)

    def split(self, packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return packed.split([self.cfg.in_features, self.top_down_features, self.cfg.width], dim=1)

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        """packed: (B, D+T+N) -> the new state h: (B, N). The old state carries no gradient."""
        x, z, old = self.split(packed)
        pre = nn.functional.linear(rms_normalize(x), self.weight, self.bias)
        # An all-zero z (no feedback yet) adds 0; with T = 0 (an unsupervised top) U is (N, 0) and adds 0 too,
        # but stays in the graph so that every parameter has a gradient.
        if len(z) > 1 and torch.equal(z, z[:1].expand_as(z)):
            z = z[:1]  # video: one context row for the whole batch; U·ẑ once, broadcast (its gradient sums over the rows)
        pre = pre + nn.functional.linear(rms_normalize(z), self.top_down)
        return self.damping * old.detach() + (1 - self.damping) * torch.relu(pre)

    def paired_forward(self, x_pos: torch.Tensor, x_neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two passes: each batch may share one context row (video), which one pass over both would lose."""
        return self(x_neg), self(x_pos)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, top-down {self.top_down_features}, damping={self.damping:g}"


def top_down_label(labels: torch.Tensor | None, rows: int, num_classes: int, scale: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """A supervised top layer's top-down input: (B, K) one-hot labels of value `scale`, or the neutral scale/K in
    every slot when labels is None. Built here for the top layer worker, the sleep worker's snapshot and the
    evaluation alike (the layer RMS-normalises it, so only which slot is on matters, not the scale)."""
    if labels is None:
        return torch.full((rows, num_classes), scale / num_classes if num_classes else 0.0, device=device)
    out = torch.zeros(rows, num_classes, device=device)
    out[torch.arange(rows, device=device), labels.long().to(device)] = scale
    return out


def top_down_widths(configs: Sequence[LayerConfig], num_classes: int | None) -> list[int]:
    """What each layer hears from above: the next layer's width; the top layer the label slots, or nothing."""
    return [c.width for c in configs[1:]] + [num_classes or 0]


class RecurrentStack:
    """Recurrent FF layers in one process, iterated over time: the reference for the recurrent pipeline.

    Within a step the sweep goes up, so layer i sees layer i−1 at t and layer i+1
    at t−1, exactly what a pipeline of workers delivers.
    """

    def __init__(self, configs: Sequence[LayerConfig], num_classes: int | None = None, label_scale: float = 1.0, recurrent: RecurrentConfig = RecurrentConfig()):
        for below, above in zip(configs, configs[1:]):
            if below.width != above.in_features:
                raise ValueError(f"layer widths do not chain: {below.width} -> {above.in_features}")
        self.num_classes = num_classes  # supervised: the label is the top layer's top-down input
        self.label_scale = label_scale
        self.recurrent = recurrent
        widths = top_down_widths(configs, num_classes)
        self.layers = [RecurrentFFLayer(c, t, recurrent.damping) for c, t in zip(configs, widths)]

    def __len__(self) -> int:
        return len(self.layers)

    def set_lr_scale(self, scale: float) -> None:
        for layer in self.layers:
            layer.set_lr_scale(scale)

    def label_input(self, labels: torch.Tensor | None, rows: int) -> torch.Tensor:
        """The top layer's top-down input (see `top_down_label`); (B, 0) unsupervised."""
        return top_down_label(labels, rows, self.num_classes or 0, self.label_scale)

    def initial_states(self, rows: int) -> list[torch.Tensor]:
        return [torch.zeros(rows, layer.cfg.width) for layer in self.layers]

    def step(self, x: torch.Tensor, top: torch.Tensor, states: list[torch.Tensor], top_down: bool = True) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """One step, no learning: (packed inputs, new states) per layer for frames x: (B, D) and top input (B, T_L).

        top_down False silences every input from above (the label too); each layer still keeps its damped state.
        """
        packed, new = [], []
        with torch.no_grad():
            below = x
            for i, layer in enumerate(self.layers):
                above = states[i + 1] if i + 1 < len(self.layers) else top
                if not top_down:
                    above = torch.zeros(len(x), layer.top_down_features)
                packed.append(layer.pack(below, above, states[i]))
                new.append(layer(packed[-1]))
                below = rms_normalize(new[-1])
        return packed, new

    def run(self, x: torch.Tensor, labels: torch.Tensor | None = None, iterations: int | None = None) -> tuple[list[list[torch.Tensor]], list[list[torch.Tensor]]]:
        """No learning: per step, the packed inputs and the states of every layer. labels None: neutral (supervised)."""
        states = self.initial_states(len(x))
        top = self.label_input(labels, len(x))
        inputs, history = [], []
        for _ in range(iterations or self.recurrent.iterations):
            packed, states = self.step(x, top, states)
            inputs.append(packed)
            history.append(states)
        return inputs, history

    def window_goodness(self, history: list[list[torch.Tensor]]) -> torch.Tensor:
        """(B,) goodness summed over every layer and the window's steps, sign-flipped in the "min" variant."""
        sign = 1.0 if self.layers[0].cfg.variant == "max" else -1.0
        return sign * sum(layer.goodness(history[t][i]) for t in self.recurrent.steps for i, layer in enumerate(self.layers))

    def label_scores(self, x: torch.Tensor) -> torch.Tensor:
        """Energy, the paper's way: each candidate label clamped at the top for all iterations. (B, D) -> (B, K)."""
        scores = []
        for k in range(self.num_classes):
            _, history = self.run(x, torch.full((len(x),), k), self.recurrent.window[1])
            scores.append(self.window_goodness(history))
        return torch.stack(scores, dim=1)

    def one_pass_scores(self, x: torch.Tensor) -> torch.Tensor:
        """The cheap prediction that hard negatives are drawn from: one bottom-up step, then the top layer's
        goodness with each candidate label as its top-down input. (B, D) -> (B, K)."""
        states = self.initial_states(len(x))
        _, states = self.step(x, self.label_input(None, len(x)), states)
        top = self.layers[-1]
        below = rms_normalize(states[-2]) if len(self.layers) > 1 else x
        sign = 1.0 if top.cfg.variant == "max" else -1.0
        scores = []
        with torch.no_grad():
            for k in range(self.num_classes):
                z = self.label_input(torch.full((len(x),), k), len(x))
                scores.append(sign * top.goodness(top(top.pack(below, z, torch.zeros(len(x), top.cfg.width)))))
        return torch.stack(scores, dim=1)

    def wrong_labels(self, x: torch.Tensor, labels: torch.Tensor, hard: bool, generator: torch.Generator) -> torch.Tensor:
        """Negative labels for frames x: hard ones sampled from the one-pass prediction, or uniform wrong ones."""
        if hard:
            return hard_wrong_labels(labels, self.one_pass_scores(x), generator)
        return random_wrong_labels(labels, self.num_classes, generator)

    def readout_features(self, x: torch.Tensor, layers: Sequence[int]) -> torch.Tensor:
        """Normalised activities of the given layers at the window's last step, neutral label at the top."""
        _, history = self.run(x, None, self.recurrent.window[1])
        return torch.cat([rms_normalize(history[-1][i]) for i in layers], dim=1)

    def learn_interleaved(self, x_pos: torch.Tensor, top_pos: torch.Tensor, x_neg: torch.Tensor, top_neg: torch.Tensor) -> list[list[dict]]:
        """Zero staleness: both runs iterate side by side; at every step each layer takes one step on its
        positive and negative inputs of that step (the negative ones judged on the weights of the moment)."""
        pos, neg = self.initial_states(len(x_pos)), self.initial_states(len(x_neg))
        stats = []
        for _ in range(self.recurrent.iterations):
            below_pos, below_neg, new_pos, new_neg, step_stats = x_pos, x_neg, [], [], []
            for i, layer in enumerate(self.layers):
                above_pos = pos[i + 1] if i + 1 < len(self.layers) else top_pos
                above_neg = neg[i + 1] if i + 1 < len(self.layers) else top_neg
                packed_neg = layer.pack(below_neg, above_neg, neg[i])
                layer.add_negative_inputs(packed_neg)
                with torch.no_grad():
                    h_neg = layer(packed_neg)  # before the step, as the sleep worker's snapshot would see it
                h_pos, s = layer.learn(layer.pack(below_pos, above_pos, pos[i]))
                step_stats.append({"pos": s, "neg": layer.last_negative_stats})
                new_pos.append(h_pos)
                new_neg.append(h_neg)
                below_pos, below_neg = rms_normalize(h_pos), rms_normalize(h_neg)
            pos, neg = new_pos, new_neg
            stats.append(step_stats)
        return stats
