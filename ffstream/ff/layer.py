"""A dense Forward-Forward layer that learns from its own local goodness."""

from __future__ import annotations

import torch
from torch import nn

from ffstream.ff.config import LayerConfig
from ffstream.ff.goodness import ff_loss, goodness, logit_positive, probability_positive
from ffstream.ff.norm import rms_normalize
from ffstream.ff.optim import SGD, Adam, FusedOptimizer

Gradients = list[torch.Tensor]  # one tensor per parameter, in `parameters()` order: [weight (N, D), bias (N,)]


class FFLayer(nn.Module):
    """h = relu(W·x̂ + b), with x̂ the RMS-normalised input.

    The layer never sees another layer's loss. `learn()` takes one optimiser
    step on the positive loss plus any negative gradients that the sleep
    worker has handed in since the last step (`add_negative`); with none
    pending it is a pure positive step.

    >>> layer = FFLayer(LayerConfig(in_features=4, width=3))
    >>> h, stats = layer.learn(torch.ones(2, 4))
    >>> h.shape, layer.version
    (torch.Size([2, 3]), 1)
    """

    def __init__(self, cfg: LayerConfig):
        super().__init__()
        self.cfg = cfg
        weight, bias = self.initial_parameters(torch.Generator().manual_seed(cfg.seed))
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias)
        self.register_buffer("running_mean", torch.zeros(self.units))  # (N,) EMA of each unit's activity
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # optimiser steps taken: the weights' version
        self.optimizer = self._make_optimizer()
        self._pending: Gradients | None = None  # summed negative gradients not yet applied (in _grad_sum's tensors)
        # Parameter-sized tensors reused by every step to sum its gradients: a fresh weight-sized sum per step
        # (16 MB at 2000 x 2000, two per step) scattered the steps' allocations over a growing heap (RSS crept up).
        self._grad_sum: Gradients | None = None
        self._pending_inputs: list[torch.Tensor] = []  # negative inputs whose gradient the next step takes
        self.pending_count = 0  # negative batches waiting for the next step
        self.last_negative_stats: dict | None = None  # goodness and p of the last negatives applied

    def initial_parameters(self, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """randn/√fan_in, as in the reference code, so that pre-activations start near unit variance."""
        c = self.cfg
        return torch.randn(c.width, c.in_features, generator=gen) / c.in_features**0.5, torch.zeros(c.width)

    @property
    def units(self) -> int:
        """Units that peer normalisation balances: the width here; a spatial layer's channels."""
        return self.cfg.width

    def _make_optimizer(self) -> FusedOptimizer:
        # fused: one kernel per step instead of a dozen passes over the (N, D) weight and its two moments.
        # On a 2000x2000 layer (CPU, torch 2.13) an Adam step takes 1.5-4 ms fused and 40-55 ms with the
        # default foreach kernels, as long as the matrix products of a batch-64 step. Ours, not torch.optim's
        # (ff/optim.py): the same kernels, without torch._dynamo's import at the first optimiser (~1 s of CPU).
        c = self.cfg
        if c.optimizer == "sgd":
            return SGD(self.parameters(), lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
        return Adam(self.parameters(), lr=c.lr, betas=(c.momentum, 0.999), weight_decay=c.weight_decay)

    @property
    def needs_labels(self) -> bool:
        """Whether the positive loss needs each row's class (channel-wise competition); FF proper does not."""
        return False

    @property
    def version(self) -> int:
        return int(self.steps)

    @property
    def input_width(self) -> int:
        """The width of the rows that learn(), wake() and add_negative_inputs() take."""
        return self.cfg.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, D), or (B, C, H, W) from a spatial layer below -> h: (B, N)."""
        return torch.relu(nn.functional.linear(rms_normalize(x.flatten(1)), self.weight, self.bias))

    def goodness(self, h: torch.Tensor) -> torch.Tensor:
        """h: (B, N) -> (B,)."""
        return goodness(h, self.cfg.goodness)

    def normalize(self, h: torch.Tensor) -> torch.Tensor:
        """The activity passed up: h's direction, its length (the goodness) left behind."""
        return rms_normalize(h)

    def filters(self, frame_shape: tuple[int, int, int]) -> torch.Tensor:
        """Each unit's weights as a picture of its input, (N, C, H, W); only meaningful for layer 1."""
        return self.weight.detach().view(-1, *frame_shape)

    def features(self, h: torch.Tensor) -> torch.Tensor:
        """What a linear readout or probe reads of this layer: (B, F), here the normalised activity."""
        return self.normalize(h).flatten(1)

    def local_loss(self, h: torch.Tensor, positive: bool, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """This layer's own loss on h, and the goodness it judged: (loss, g (B,) here, or per region)."""
        g = self.goodness(h)
        return ff_loss(g, positive, self.cfg.theta, self.cfg.temperature, self.cfg.variant), g

    def unit_activity(self, h: torch.Tensor) -> torch.Tensor:
        """h -> (units,) the batch's mean activity of each unit, for peer normalisation."""
        return h.mean(dim=0)

    def probability(self, g: torch.Tensor) -> torch.Tensor:
        return probability_positive(g, self.cfg.theta, self.cfg.temperature, self.cfg.variant)

    def local_gradients(self, x: torch.Tensor, positive: bool, labels: torch.Tensor | None = None, on_forward=None) -> tuple[Gradients, dict, torch.Tensor]:
        """The gradient of this layer's own loss on x, without changing anything.

        Returns (gradients, stats, h). Peer normalisation joins the positive
        loss only, and its running mean moves only when a positive step is taken.
        on_forward(h), if given, gets the activity (B, N) before the backward pass,
        so that a worker can pass it on without a second forward pass or a wait.
        """
        x = x.detach()
        with torch.enable_grad():
            h = self(x) if positive else self.negative_forward(x)
            if on_forward is not None:
                on_forward(h.detach())
            loss, g = self.local_loss(h, positive, labels)
            if positive and self.cfg.peer_weight > 0:
                loss = loss + self.cfg.peer_weight * self._peer_loss(h)
            grads = torch.autograd.grad(loss, list(self.parameters()))
        return list(grads), self._stats(g, loss), h.detach()

    def _stats(self, g: torch.Tensor, loss: torch.Tensor) -> dict:
        g = g.detach()
        return {"goodness": float(g.mean()), "p": float(self.probability(g).mean()), "loss": float(loss.detach())}

    def _move_running_mean(self, h: torch.Tensor) -> None:
        """Peer normalisation's running mean takes a positive batch's activity h, once per positive step."""
        if self.cfg.peer_weight > 0:
            ema = self.cfg.peer_ema
            self.running_mean.mul_(ema).add_((1 - ema) * self.unit_activity(h))

    def paired_gradients(self, x_pos: torch.Tensor, x_neg: torch.Tensor, labels: torch.Tensor | None = None,
                         on_negative_forward=None, on_positive_forward=None) -> tuple[Gradients, dict, dict, torch.Tensor, torch.Tensor]:
        """A whole step's gradient, positive x_pos and the negatives x_neg of the same frames, in one pass.

        The same sum as `local_gradients` of each (positive loss with peer normalisation, plus the negative
        loss, each a mean over its rows), but each matrix product runs once on both batches: a whole batch-64
        step of a 2000x2000 layer on one thread took 27.7-29.6 ms against 33.2-35.4 ms for two passes (the
        weight gradient's product with an inner dimension of 64 is far from the machine's peak). Moves the peer running
        mean as `wake` does. on_negative_forward(h_neg), then on_positive_forward(h_pos), get the activities
        before the backward pass. Returns (gradients, positive stats, negative stats, h_pos, h_neg).
        """
        if type(self) is FFLayer:  # subclasses change the forward pass or the loss: autograd for them
            return self._closed_form_paired_gradients(x_pos, x_neg, on_negative_forward, on_positive_forward)
        with torch.enable_grad():
            h_neg, h_pos = self.paired_forward(x_pos.detach(), x_neg.detach())
            if on_negative_forward is not None:
                on_negative_forward(h_neg.detach())
            if on_positive_forward is not None:
                on_positive_forward(h_pos.detach())
            neg_loss, g_neg = self.local_loss(h_neg, positive=False)
            pos_loss, g_pos = self.local_loss(h_pos, positive=True, labels=labels)
            if self.cfg.peer_weight > 0:
                pos_loss = pos_loss + self.cfg.peer_weight * self._peer_loss(h_pos)
            grads = torch.autograd.grad(pos_loss + neg_loss, list(self.parameters()))
        h_pos = h_pos.detach()
        self._move_running_mean(h_pos)
        return list(grads), self._stats(g_pos, pos_loss), self._stats(g_neg, neg_loss), h_pos, h_neg.detach()

    def _closed_form_paired_gradients(self, x_pos: torch.Tensor, x_neg: torch.Tensor, on_negative_forward=None,
                                      on_positive_forward=None) -> tuple[Gradients, dict, dict, torch.Tensor, torch.Tensor]:
        """`paired_gradients` of this class's maths written out, without autograd: the same sums (tests compare them).

        The two matrix products are all that is left: a batch-64 step of a 2000x2000 layer on one thread
        spent about 2.6 of its 29 ms in autograd's small operations and their bookkeeping.
        With z = W·x̂ + b, h = relu(z), G = Σh² (or mean h²) and the logit s·(G − θ)/T:
        dL/dG = −(s/T)·σ(−logit)/B on a positive row, +(s/T)·σ(logit)/B on a negative one; dG/dh = 2h (2h/N);
        peer normalisation adds λ·(2/N)·(r − mean r)·(1 − ema)/B to each positive row's dL/dh, r the running mean.
        """
        c = self.cfg
        negatives = len(x_neg)
        with torch.no_grad():
            x_hat = rms_normalize(torch.cat([x_neg, x_pos]).flatten(1))
            h = torch.relu(torch.addmm(self.bias, x_hat, self.weight.t()))
            h_neg, h_pos = h[:negatives], h[negatives:]
            if on_negative_forward is not None:
                on_negative_forward(h_neg)
            if on_positive_forward is not None:
                on_positive_forward(h_pos)
            g = self.goodness(h)
            g_neg, g_pos = g[:negatives], g[negatives:]
            logit = logit_positive(g, c.theta, c.temperature, c.variant)
            sign_over_t = (1.0 if c.variant == "max" else -1.0) / c.temperature
            d_goodness = torch.cat([torch.sigmoid(logit[:negatives]) * (sign_over_t / negatives),
                                    torch.sigmoid(-logit[negatives:]) * (-sign_over_t / len(x_pos))])
            d_z = h * (d_goodness * (2.0 if c.goodness == "sumsq" else 2.0 / c.width)).unsqueeze(1)  # h is 0 where relu cut
            pos_loss = ff_loss(g_pos, True, c.theta, c.temperature, c.variant)  # the losses' values, for the stats
            neg_loss = ff_loss(g_neg, False, c.theta, c.temperature, c.variant)
            if c.peer_weight > 0:
                pos_loss = pos_loss + c.peer_weight * self._peer_loss(h_pos)
                running = c.peer_ema * self.running_mean + (1 - c.peer_ema) * self.unit_activity(h_pos)
                d_peer = (running - running.mean()) * (c.peer_weight * 2.0 / c.width * (1 - c.peer_ema) / len(x_pos))
                d_z[negatives:] += (h_pos > 0) * d_peer
            grads = [d_z.t() @ x_hat, d_z.sum(dim=0)]
        self._move_running_mean(h_pos)
        return grads, self._stats(g_pos, pos_loss), self._stats(g_neg, neg_loss), h_pos, h_neg

    def negative_forward(self, x: torch.Tensor) -> torch.Tensor:
        """h for negative inputs x: as for any input, unless a layer's forward pass depends on the batch."""
        return self(x)

    def paired_forward(self, x_pos: torch.Tensor, x_neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(h_neg, h_pos) from one forward pass over both batches (rows are independent here)."""
        h = self(torch.cat([x_neg, x_pos]))
        return h[: len(x_neg)], h[len(x_neg) :]

    def _peer_loss(self, h: torch.Tensor) -> torch.Tensor:
        """Pull each unit's running-mean activity toward the layer's average (keeps units from dying or hogging)."""
        ema = self.cfg.peer_ema
        running = ema * self.running_mean + (1 - ema) * self.unit_activity(h)
        return (running.mean() - running).pow(2).mean()

    def learn(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """One wake step on positive data x: (B, D). Returns h: (B, N), computed before the step, and stats.

        labels: (B,) classes, used only by layers whose loss needs them (channel-wise competition).
        """
        grads, stats, h = self.wake(x, labels)
        stats["negatives_applied"] = self.pending_count
        self.apply_gradients(grads)
        return h, stats

    def wake(self, x: torch.Tensor, labels: torch.Tensor | None = None, on_forward=None) -> tuple[Gradients, dict, torch.Tensor]:
        """The positive half of a step: gradients, stats and h for x: (B, D), and the peer running mean moved.

        `apply_gradients(grads)` takes the step, now or once the matching negatives are in.
        on_forward: as in `local_gradients`.
        """
        grads, stats, h = self.local_gradients(x, positive=True, labels=labels, on_forward=on_forward)
        self._move_running_mean(h)
        return grads, stats, h

    def add_negative_inputs(self, x: torch.Tensor) -> None:
        """Queue negative inputs x: (B, D); the next step takes their gradient on the weights of that moment.

        This is how the sleep worker's negatives arrive by default: made offline
        and run through a snapshot of the layers below, but judged by this
        layer's current weights, so a stale snapshot cannot push the wrong way.
        """
        self._pending_inputs.append(x.detach())
        self.pending_count += 1

    def add_negative(self, grads: Gradients, scale: float = 1.0) -> None:
        """Queue a negative gradient (computed elsewhere, maybe on older weights) for the next step."""
        if self._pending is None:
            # Into the reused sum, never into the caller's tensors.
            self._pending = [torch.mul(g.detach(), scale, out=buf) for g, buf in zip(grads, self._sum_buffers(grads))]
        else:
            for acc, g in zip(self._pending, grads):
                acc.add_(g, alpha=scale)
        self.pending_count += 1

    def apply_gradients(self, grads: Gradients | None = None) -> None:
        """One optimiser step on grads plus whatever negatives are pending."""
        if self._pending_inputs:
            batches = len(self._pending_inputs)
            neg_grads, self.last_negative_stats, _ = self.local_gradients(torch.cat(self._pending_inputs), positive=False)
            self._pending_inputs = []
            self.pending_count -= batches
            # Each negative batch weighs as much as one positive batch, as in the interleaved reference.
            self.add_negative(neg_grads, scale=batches)
            self.pending_count -= 1
        total = grads
        if self._pending is not None:
            total = self._pending if total is None else [p.add_(g) for p, g in zip(self._pending, total)]  # p is ours
        if total is None:
            return
        for param, grad in zip(self.parameters(), total):
            param.grad = grad
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._pending, self.pending_count = None, 0
        self.steps += 1

    def _sum_buffers(self, like: Gradients) -> Gradients:
        """The reused gradient sum, (re)made only when the gradients' shapes, dtypes or devices change."""
        fits = self._grad_sum is not None and len(self._grad_sum) == len(like) and all(
            b.shape == g.shape and b.dtype == g.dtype and b.device == g.device for b, g in zip(self._grad_sum, like))
        if not fits:
            self._grad_sum = [torch.empty_like(g) for g in like]
        return self._grad_sum

    def warm_up(self, rows: int = 2) -> None:
        """Allocate what the first step would (autograd's buffers, the optimiser's moments) without changing anything.

        A fresh optimiser allocates its state lazily, at the first step, and the first products of a process
        set up their thread pools: a worker that warms before it serves keeps that spike off its first frames.
        The weights, the moments and the step count after this are exactly those of a fresh layer; a layer
        whose optimiser already has state (resumed from a checkpoint) takes only the gradient pass.
        rows: of the warming batch, best the size of the real steps (their products' buffers are then ready too).
        """
        labels = torch.zeros(rows, dtype=torch.long) if self.needs_labels else None
        device = next(self.parameters()).device
        grads, _, _ = self.local_gradients(torch.ones(rows, self.input_width, device=device), positive=True,
                                           labels=None if labels is None else labels.to(device))
        del grads
        if self.optimizer.state:
            return
        kept = [p.detach().clone() for p in self.parameters()]  # weight decay would move them even on a zero gradient
        for param in self.parameters():
            param.grad = torch.zeros_like(param)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for param, old in zip(self.parameters(), kept):
                param.copy_(old)
        for state in self.optimizer.state.values():  # as fresh: moments and step count 0 (Adam's bias correction counts steps)
            for value in state.values():
                if isinstance(value, torch.Tensor):
                    value.zero_()

    def set_lr_scale(self, scale: float) -> None:
        """Scale the configured learning rate, e.g. by a linear decay over a stream of known length."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.lr * scale

    def weights(self) -> dict[str, torch.Tensor]:
        """The tensors a snapshot needs to run this layer elsewhere: every parameter, by name (subclasses add buffers)."""
        return {name: param.detach() for name, param in self.named_parameters()}

    def load_weights(self, tensors: dict[str, torch.Tensor], version: int | None = None) -> None:
        with torch.no_grad():
            for name, param in self.named_parameters():
                param.copy_(tensors[name])
        if version is not None:
            self.steps.fill_(version)

    def extra_repr(self) -> str:
        c = self.cfg
        return f"{c.in_features}->{c.width}, goodness={c.goodness}/{c.variant}, θ={c.theta:g}, {c.optimizer} lr={c.lr:g}"
