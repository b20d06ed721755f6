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

import dataclasses
import hashlib
import json
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ffstream.ff.config import LayerConfig
from ffstream.ff.goodness import ff_loss
from ffstream.ff.layer import FFLayer
from ffstream.ff.norm import EPS, rms_normalize

SPATIAL_KINDS = ("conv", "local")
READOUT_POOLS = ("grid", "global")  # SpatialConfig.readout_pool
BATCH_NORM_EPS = 1e-5  # added to a channel's running variance (torch's BatchNorm default)


def check_norms(batch_stats: bool, batch_norm: bool, competition: bool, outlier_weight: float, prefix: str = "") -> None:
    """The rules that join the norms, CwComp and its outlier weight, stated once: a SpatialConfig checks its fields with
    them, config/rules.py the model section's (prefix "model."). ValueError names the field as its reader spells it."""
    if batch_stats and not competition:
        # FF's positive and negative batches would each be standardised to the same goodness.
        raise ValueError(f"{prefix}batch_stats reads CwComp's class scores on batch-standardised channels: it needs {prefix}competition")
    if batch_stats and batch_norm:
        raise ValueError(f"{prefix}batch_stats and {prefix}batch_norm are two kinds of batch norm: choose one")
    if not (isinstance(outlier_weight, (int, float)) and outlier_weight >= 0):
        raise ValueError(f"{prefix}outlier_weight must be a number >= 0, got {outlier_weight!r}")


def out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


@dataclass(frozen=True)
class SpatialConfig(LayerConfig):
    """A LayerConfig whose input and output are images; in_features and width are their flattened sizes."""

    kind: str = "conv"  # "conv" (shared weights) or "local" (one filter bank per output location)
    in_shape: tuple[int, int, int] = (1, 1, 1)  # (C, H, W) of the input
    channels: int = 1  # output channels C'
    kernel: tuple[int, int] = (3, 3)  # (kh, kw), pixels
    stride: int = 1  # pixels between neighbouring output locations
    padding: int = 0  # zeros on each side of the input, pixels (the builder uses kernel // 2)
    region: int = 1  # goodness is pooled over region×region output locations before the loss; 1: every location its own
    competition: int = 0  # CwComp: the channels split into this many label groups, softmax over groups; 0: plain FF
    readout_grid: int = 7  # a readout sees each channel averaged over grid×grid cells of the map (fewer if the map is smaller)
    # What a readout reads of the channel-normalised map: "grid", its average over readout_grid² cells (where a thing is
    # counts); "global", its mean and max over the whole map, (B, 2C'): where a thing is does not count, which on moving
    # video is what a probe wants (bench/video_study.py, readout "norm")
    readout_pool: str = "grid"
    batch_norm: bool = False  # before the per-location RMS: each channel standardised by running statistics, then ReLU
    stats_ema: float = 0.9  # batch_norm, batch_stats: the running statistics keep this much of their value at each positive step
    pool: int = 1  # max over pool×pool blocks of the map after the ReLU (stride pool); 1: no pooling
    batch_stats: bool = False  # CwComp's batch norm: channels standardised by the learning batch's statistics, goodness read after
    outlier_weight: float = 0.0  # competition: a negative's loss (its class scores pulled toward uniform) against a positive's; 0: takes none

    @classmethod
    def build(cls, kind: str, in_shape: tuple[int, int, int], channels: int, kernel: tuple[int, int], stride: int = 1,
              padding: int | None = None, pool: int = 1, **learning) -> "SpatialConfig":
        """Compute in_features and width from the shapes; padding defaults to kernel // 2 ("same" at stride 1)."""
        c, h, w = in_shape
        pad = kernel[0] // 2 if padding is None else padding
        oh, ow = out_size(h, kernel[0], stride, pad), out_size(w, kernel[1], stride, pad)
        if oh <= 0 or ow <= 0:
            raise ValueError(f"a {kernel[0]}x{kernel[1]} kernel at stride {stride} does not fit a {h}x{w} input")
        if pool > 1 and (oh < pool or ow < pool):
            raise ValueError(f"a {pool}x{pool} max-pool does not fit the layer's {oh}x{ow} map")
        return cls(in_features=c * h * w, width=channels * (oh // pool) * (ow // pool), kind=kind, in_shape=(c, h, w),
                   channels=channels, kernel=tuple(kernel), stride=stride, padding=pad, pool=pool, **learning)

    def __post_init__(self) -> None:
        # JSON gives lists back; the config must stay hashable and compare equal after a round trip.
        object.__setattr__(self, "in_shape", tuple(int(v) for v in self.in_shape))
        object.__setattr__(self, "kernel", tuple(int(v) for v in self.kernel))
        super().__post_init__()
        if self.kind not in SPATIAL_KINDS:
            raise ValueError(f"spatial layer kind must be one of {SPATIAL_KINDS}, got {self.kind!r}")
        if min(self.kernel) <= 0 or self.stride <= 0 or self.padding < 0 or self.channels <= 0 or self.region <= 0 or self.pool <= 0:
            raise ValueError(f"kernel, stride, channels, region and pool must be positive, got {self.kernel}, {self.stride}, "
                             f"{self.channels}, {self.region}, {self.pool}")
        c, h, w = self.in_shape
        if c * h * w != self.in_features or self.channels * self.out_hw[0] * self.out_hw[1] != self.width:
            raise ValueError(f"shapes do not add up: {self.in_shape} -> {self.out_shape}, in_features {self.in_features}, width {self.width}")
        if not 0 <= self.stats_ema < 1:
            raise ValueError(f"stats_ema must be in [0, 1), got {self.stats_ema}")
        if self.competition and (self.competition < 2 or self.channels % self.competition):
            raise ValueError(f"competition splits the {self.channels} channels into {self.competition} equal groups: it must divide them")
        check_norms(self.batch_stats, self.batch_norm, bool(self.competition), self.outlier_weight)
        if self.readout_pool not in READOUT_POOLS:
            raise ValueError(f"readout_pool must be one of {READOUT_POOLS}, got {self.readout_pool!r}")

    @property
    def map_hw(self) -> tuple[int, int]:
        """(H', W') of the filters' map, before any pooling: a local layer's locations."""
        _, h, w = self.in_shape
        return out_size(h, self.kernel[0], self.stride, self.padding), out_size(w, self.kernel[1], self.stride, self.padding)

    @property
    def out_hw(self) -> tuple[int, int]:
        """(H', W') of the activity: the map, pooled."""
        return self.map_hw[0] // self.pool, self.map_hw[1] // self.pool

    @property
    def takes_negatives(self) -> bool:
        """Plain FF learns from negatives; competition only where they weigh (see `local_loss`)."""
        return not self.competition or self.outlier_weight > 0

    @property
    def keeps_channel_stats(self) -> bool:
        """Whether the layer keeps each channel's running mean and variance (either kind of batch norm)."""
        return self.batch_norm or self.batch_stats

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.out_hw)

    @property
    def theta(self) -> float:
        """Per location: the number of channels for Σh², 2.0 for mean h²."""
        if self.threshold is not None:
            return float(self.threshold)
        return float(self.channels) if self.goodness == "sumsq" else 2.0

    def digest(self) -> str:
        fields = ("kind", "in_shape", "channels", "kernel", "stride", "padding", "goodness", "variant", "competition", "batch_norm",
                  "pool", "batch_stats")
        blob = json.dumps({k: v for k, v in dataclasses.asdict(self).items() if k in fields}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


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
