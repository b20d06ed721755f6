"""A spatial (conv or locally-connected) layer's config: its shapes and the rules that join its norms. Apart from
ff/spatial.py's layers, so that a config is read and checked without torch (the source and monitor workers
import none).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from ffstream.ff.config import LayerConfig

SPATIAL_KINDS = ("conv", "local")
READOUT_POOLS = ("grid", "global")  # SpatialConfig.readout_pool


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
              padding: int | None = None, pool: int = 1, **learning) -> SpatialConfig:
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
