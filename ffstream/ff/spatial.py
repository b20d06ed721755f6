"""What conv and locally-connected FF layers share: goodness per region, and normalisation per location.

A spatial layer maps x (B, C, H, W) to h (B, C', H', W'). Each location
(y, x) of h is a small dense FF layer of its own: its goodness is Σ_c h², its
threshold the number of channels, and its loss is its own (the paper's "local
goodness functions for many regions of an image"). `region` pools that
goodness over r×r locations first, so that a region, not a pixel, is judged.
Before the activity goes up, each location's channel vector is RMS-normalised,
so that the next layer sees only the direction of every location's activity.
With `batch_norm`, each channel is first standardised by running statistics of
the positive batches, then cut at zero (batch norm without its affine part), so
that only where a channel fires above its usual level goes up. `pool` takes the
maximum of each p×p block of the map after the ReLU, so that a feature counts
wherever in the block it appears.

Channel-wise competition (CwComp, Papachristodoulou et al. 2024) splits the
channels into one group per class. A group's goodness is the class's score;
the loss is a softmax cross-entropy over the groups, per region, against the
true label. It needs labels at every layer and no negative data; given
negatives (the sleep worker's hybrids), a layer with `outlier_weight` learns
that each is none of the classes (`local_loss`). With
`batch_stats` (CwComp's own batch norm) the layer's activity is each channel
standardised by the statistics of the batch it learns from, and the goodness
and class scores are read there: a group wins where its channels fire more than
they usually do across the batch, not where they fire most. Passes without
gradients (readouts, tests) and batches of one use the running statistics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ffstream.ff.goodness import ff_loss
from ffstream.ff.layer import FFLayer
from ffstream.ff.norm import EPS, rms_normalize
from ffstream.ff.spatial_config import READOUT_POOLS, SPATIAL_KINDS, SpatialConfig, check_norms, out_size

BATCH_NORM_EPS = 1e-5  # added to a channel's running variance (torch's BatchNorm default)


def channel_normalize(h: torch.Tensor) -> torch.Tensor:
    """h: (B, C, H, W) -> each location's channel vector divided by its RMS; a silent location stays 0."""
    return h / torch.sqrt(h.pow(2).mean(dim=1, keepdim=True) + EPS)


def _pool(g: torch.Tensor, region: int) -> torch.Tensor:
    """g: (B, K, H, W) averaged over region×region windows (edge windows cut short); a region larger than the map is the whole map."""
    if region == 1:
        return g
    kernel = (min(region, g.shape[2]), min(region, g.shape[3]))
    return F.avg_pool2d(g, kernel, ceil_mode=True)


class SpatialFFLayer(FFLayer):
    """The shared part of ConvFFLayer and LocalFFLayer; subclasses give the parameters and the linear map."""

    cfg: SpatialConfig

    def __init__(self, cfg: SpatialConfig):
        super().__init__(cfg)
        if cfg.keeps_channel_stats:
            # batch_norm uses running, never per-batch, statistics: a frame's activity going up must not depend on
            # the batch it came in (a live video's micro-batch can be one frame), and the sleep worker's snapshot
            # must treat a negative as the layer treats a positive. batch_stats learns from the batch's own and
            # keeps these for the passes that do not learn. They move at positive steps only, as peer normalisation's mean.
            self.register_buffer("channel_mean", torch.zeros(cfg.channels))
            self.register_buffer("channel_var", torch.ones(cfg.channels))
        self._learning_batch_stats: tuple[torch.Tensor, torch.Tensor] | None = None
        if cfg.batch_stats:
            # batch norm's learned scale and shift: without them (in process, 20-80-240 pooled, 1 epoch) the last
            # layer's classes read 81.2 % against 85.9 %, since a group's goodness can then not weigh its channels.
            self.channel_scale = nn.Parameter(torch.ones(cfg.channels))
            self.channel_shift = nn.Parameter(torch.zeros(cfg.channels))
            self.optimizer = self._make_optimizer()  # FFLayer made it for the weight and bias alone

    @property
    def units(self) -> int:
        return self.cfg.channels

    @property
    def needs_labels(self) -> bool:
        return self.cfg.competition > 0

    def linear_map(self, x: torch.Tensor) -> torch.Tensor:
        """x̂: (B, C, H, W) -> pre-activations (B, C', H', W')."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, statistics: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """x: (B, C·H·W) or (B, C, H, W) -> h: (B, C', H', W').

        The whole input is RMS-normalised first, as a dense layer's: a frame's brightness, or the overall
        level of the activity below, carries no information up. statistics: batch_stats standardises by these
        (mean, var) per channel, whatever the pass.
        """
        x_hat = rms_normalize(x.reshape(len(x), -1)).view(len(x), *self.cfg.in_shape)
        h = torch.relu(self.linear_map(x_hat))
        if self.cfg.pool > 1:
            h = F.max_pool2d(h, self.cfg.pool)
        return self._standardize(h, statistics) if self.cfg.batch_stats else h

    def negative_forward(self, x: torch.Tensor) -> torch.Tensor:
        """batch_stats standardises negatives that come alone by the running statistics: by their own batch's,
        a batch of hybrids would look as usual to every channel as a batch of real frames."""
        if not self.cfg.batch_stats:
            return self(x)
        return self(x, statistics=(self.channel_mean, self.channel_var))

    def paired_forward(self, x_pos: torch.Tensor, x_neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """batch_stats: the negatives are standardised by the positives' batch statistics, so that both are judged
        on the same scale (one batch would mix the negatives into those statistics)."""
        if not self.cfg.batch_stats:
            return super().paired_forward(x_pos, x_neg)
        h_pos = self(x_pos)
        stats = self._learning_batch_stats if torch.is_grad_enabled() and len(x_pos) > 1 else (self.channel_mean, self.channel_var)
        return self(x_neg, statistics=stats), h_pos

    def _standardize(self, h: torch.Tensor, statistics: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """batch_stats: each channel by the batch's mean and variance when learning (a pass with gradients, two
        rows or more), otherwise by the running ones; or by the given statistics. The batch's statistics are part
        of the gradient, as in CwComp: with running statistics instead (in process, 20-80-240 pooled, 1 epoch)
        the last layer's classes read 74.3 % against 85.9 %. Then each channel's learned scale and shift."""
        shape = (1, -1, 1, 1)
        if statistics is not None:
            mean, var = statistics[0].view(shape), statistics[1].view(shape)
        elif torch.is_grad_enabled() and len(h) > 1:
            var, mean = torch.var_mean(h, dim=(0, 2, 3), correction=0, keepdim=True)
            self._learning_batch_stats = (mean.detach().flatten(), var.detach().flatten())  # the positive step's, for the running ones
        else:
            mean, var = self.channel_mean.view(shape), self.channel_var.view(shape)
        return (h - mean) * torch.rsqrt(var + BATCH_NORM_EPS) * self.channel_scale.view(shape) + self.channel_shift.view(shape)

    def region_goodness(self, h: torch.Tensor) -> torch.Tensor:
        """h: (B, C', H', W') -> (B, H'/r, W'/r): Σh² (or mean h²) over channels, averaged over each r×r region."""
        squares = h.pow(2)
        g = squares.sum(dim=1) if self.cfg.goodness == "sumsq" else squares.mean(dim=1)
        return _pool(g.unsqueeze(1), self.cfg.region).squeeze(1)

    def goodness(self, h: torch.Tensor) -> torch.Tensor:
        """h -> (B,): the mean goodness of a location, on the per-location threshold's scale."""
        return self.region_goodness(h).flatten(1).mean(dim=1)

    def normalize(self, h: torch.Tensor) -> torch.Tensor:
        if self.cfg.batch_stats:
            return h  # already standardised, per channel; it goes up as it is, as in CwComp
        if self.cfg.batch_norm:
            shape = (1, -1, 1, 1)
            h = torch.relu((h - self.channel_mean.view(shape)) * torch.rsqrt(self.channel_var.view(shape) + BATCH_NORM_EPS))
        return channel_normalize(h)

    def _move_running_mean(self, h: torch.Tensor) -> None:
        """Peer normalisation's mean, and with batch_norm each channel's running mean and variance, take a positive batch h.

        With batch_stats, h is already standardised: the statistics are those its forward pass used, if it used a batch's.
        """
        super()._move_running_mean(h)
        if self.cfg.batch_stats:
            stats, self._learning_batch_stats = self._learning_batch_stats, None
        elif self.cfg.batch_norm:
            var, mean = torch.var_mean(h.detach(), dim=(0, 2, 3), correction=0)
            stats = (mean, var)
        else:
            return
        if stats is not None:
            ema = self.cfg.stats_ema
            self.channel_mean.mul_(ema).add_((1 - ema) * stats[0])
            self.channel_var.mul_(ema).add_((1 - ema) * stats[1])

    def weights(self) -> dict[str, torch.Tensor]:
        """The parameters, and the running statistics that `normalize` needs (a snapshot runs the layer elsewhere)."""
        if not self.cfg.keeps_channel_stats:
            return super().weights()
        return {**super().weights(), "channel_mean": self.channel_mean.detach(), "channel_var": self.channel_var.detach()}

    def load_weights(self, tensors: dict[str, torch.Tensor], version: int | None = None) -> None:
        if self.cfg.keeps_channel_stats:
            self.channel_mean.copy_(tensors["channel_mean"])
            self.channel_var.copy_(tensors["channel_var"])
        super().load_weights(tensors, version)

    def unit_activity(self, h: torch.Tensor) -> torch.Tensor:
        return h.mean(dim=(0, 2, 3))

    def filters(self, frame_shape: tuple[int, int, int] | None = None) -> torch.Tensor:
        """(C', C, kh, kw): each output channel's filter (a local layer's at its centre location)."""
        c = self.cfg
        weight = self.weight.detach()
        if c.kind == "local":
            centre = (c.map_hw[0] // 2) * c.map_hw[1] + c.map_hw[1] // 2
            weight = weight[centre]  # (L, C', C·kh·kw) -> the centre's (C', C·kh·kw)
        return weight.reshape(c.channels, c.in_shape[0], *c.kernel)

    def features(self, h: torch.Tensor) -> torch.Tensor:
        """(B, C'·g·g): the channel-normalised map averaged over a g×g grid, so that a readout stays small; with
        readout_pool "global", (B, 2C'): its mean and max over the whole map.

        Not batch norm's standardised map, which goes up: its cut at each channel's mean drops what a linear
        readout can use (in process, 20-80-240 unsupervised with batch norm, the probe read 89.43 % here against
        88.14 % on the standardised map after 1 epoch, 89.96 against 88.83 % after 3; CwComp lost a little,
        88.11 against 88.68 % after 1 epoch).
        """
        n = channel_normalize(h)
        if self.cfg.readout_pool == "global":
            return torch.cat([n.mean(dim=(2, 3)), n.amax(dim=(2, 3))], dim=1)  # (B, 2C')
        g = self.cfg.readout_grid
        grid = (min(g, h.shape[2]), min(g, h.shape[3]))
        return F.adaptive_avg_pool2d(n, grid).flatten(1)

    def class_scores(self, h: torch.Tensor) -> torch.Tensor:
        """CwComp: h (B, C', H', W') -> (B, K, H'/r, W'/r), each group's mean h² per region (the class logits)."""
        k = self.cfg.competition
        b, c, hh, ww = h.shape
        return _pool(h.pow(2).view(b, k, c // k, hh, ww).mean(dim=2), self.cfg.region)

    def local_loss(self, h: torch.Tensor, positive: bool, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Every region's loss, averaged: FF's logistic loss on its goodness, or CwComp's cross-entropy over groups.

        Under competition a negative (the sleep worker's hybrid) belongs to no class: its loss is the cross-entropy
        against the uniform distribution over the groups, each class as unlikely as the next (as outlier exposure,
        Hendrycks et al. 2019, teaches a classifier what is none of its classes), times outlier_weight: at weight 1
        it drowns the classes (in process, 4 layers, 1 epoch, last layer only: 87.61 % by energy against 89.32 %).
        """
        if self.cfg.competition and (labels is not None or not positive):
            scores = self.class_scores(h) / self.cfg.temperature  # (B, K, h, w)
            if not positive:
                return -self.cfg.outlier_weight * F.log_softmax(scores, dim=1).mean(), self.goodness(h)
            target = labels.long().view(-1, 1, 1).expand(-1, scores.shape[2], scores.shape[3])
            return F.cross_entropy(scores, target), self.goodness(h)
        g = self.region_goodness(h)  # (B, h, w): every region its own FF loss
        loss = ff_loss(g.flatten(), positive, self.cfg.theta, self.cfg.temperature, self.cfg.variant)
        return loss, g.flatten(1).mean(dim=1)  # the figures report (B,), as `goodness` does

    def extra_repr(self) -> str:
        c = self.cfg
        comp = f", competition={c.competition}" if c.competition else ""
        comp += ", batch norm" if c.batch_norm else ""
        comp += ", batch statistics" if c.batch_stats else ""
        comp += f", max-pool {c.pool}" if c.pool > 1 else ""
        return (f"{c.kind} {c.in_shape}->{c.out_shape}, kernel {c.kernel[0]}x{c.kernel[1]}/{c.stride}, region {c.region}, "
                f"θ={c.theta:g}{comp}, {c.optimizer} lr={c.lr:g}")
