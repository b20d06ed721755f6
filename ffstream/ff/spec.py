"""Layer specs (`dense:1000`, `conv:32x3x3/2`, `conv:64x3x3+pool`, `local:16x5x5`) and the one place a config becomes a layer.

    >>> [str(s) for s in parse_layers("conv:32x3x3,conv:64x3x3/2,conv:96x3x3+pool,1000")]
    ['conv:32x3x3', 'conv:64x3x3/2', 'conv:96x3x3+pool', 'dense:1000']
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ffstream.ff.config import LayerConfig
from ffstream.ff.spatial_config import SPATIAL_KINDS, SpatialConfig

if TYPE_CHECKING:
    from ffstream.ff.layer import FFLayer

SPEC_HELP = ("dense:N (or N), conv:CxKHxKW[/S][+pool[P]] or local:CxKHxKW[/S][+pool[P]] (+pool: max over PxP blocks, "
             "P 2 unless given), e.g. conv:32x3x3,conv:64x3x3/2,dense:1000")
_SPATIAL = re.compile(r"^(conv|local):(\d+)x(\d+)x(\d+)(?:/(\d+))?(\+pool(\d+)?)?$")
_DENSE = re.compile(r"^(?:dense:)?(\d+)$")


@dataclass(frozen=True)
class LayerSpec:
    kind: str  # "dense", "conv" or "local"
    size: int  # units (dense) or output channels (conv, local)
    kernel: tuple[int, int] = (0, 0)  # (kh, kw), spatial kinds only
    stride: int = 1  # spatial kinds only
    pool: int = 1  # spatial kinds only: max over pool×pool blocks after the ReLU

    def __str__(self) -> str:
        if self.kind == "dense":
            return f"dense:{self.size}"
        stride = f"/{self.stride}" if self.stride != 1 else ""
        pool = "" if self.pool == 1 else "+pool" if self.pool == 2 else f"+pool{self.pool}"
        return f"{self.kind}:{self.size}x{self.kernel[0]}x{self.kernel[1]}{stride}{pool}"


def parse_layer_spec(item: str | int) -> LayerSpec:
    """One layer: an int or 'N' is dense; ValueError with the accepted forms otherwise."""
    text = str(item).strip().lower()
    if m := _DENSE.match(text):
        spec = LayerSpec("dense", int(m.group(1)))
    elif m := _SPATIAL.match(text):
        kind, size, kh, kw, stride, pooled, pool = m.groups()
        spec = LayerSpec(kind, int(size), (int(kh), int(kw)), int(stride or 1), int(pool or 2) if pooled else 1)
    else:
        raise ValueError(f"bad layer spec {str(item)!r}: expected {SPEC_HELP}")
    if spec.size <= 0 or (spec.kind != "dense" and (min(spec.kernel) <= 0 or spec.stride <= 0 or spec.pool <= 0)):
        raise ValueError(f"bad layer spec {str(item)!r}: sizes, kernels, strides and pools must be positive")
    return spec


DEFAULT_CONV_STACK = "conv:16x5x5/2,conv:32x3x3/2,conv:64x3x3/2"  # `--layers conv`: colour video at 64x64, 30+ frames/s on 2 cores


def parse_layers(text: str | Sequence[str | int]) -> tuple[LayerSpec, ...]:
    items = text.split(",") if isinstance(text, str) else list(text)
    if [str(i).strip().lower() for i in items] == ["conv"]:
        items = DEFAULT_CONV_STACK.split(",")
    if not items or any(str(i).strip() == "" for i in items):
        raise ValueError(f"bad layer list {text!r}: expected comma-separated specs, {SPEC_HELP}")
    return tuple(parse_layer_spec(i) for i in items)


def build_configs(specs: Sequence[LayerSpec], in_shape: tuple[int, int, int], seed: int = 0, competition: int = 0,
                  region: int = 1, batch_norm: bool = False, batch_stats: bool = False, outlier_weight: float = 0.0,
                  readout_pool: str = "grid", **learning) -> list[LayerConfig]:
    """Chain the specs from an input of shape (C, H, W); learning: the LayerConfig fields every layer shares.

    competition (CwComp label groups), region, batch_norm, batch_stats and readout_pool apply to the spatial layers. outlier_weight
    goes to the competing layers that see the whole frame (`Field.covers`), 0 to the rest. Layer i is seeded seed + i.
    """
    configs: list[LayerConfig] = []
    shape: tuple[int, ...] = tuple(in_shape)
    field = Field()
    for i, spec in enumerate(specs):
        if spec.kind == "dense":
            size = 1
            for v in shape:
                size *= v
            configs.append(LayerConfig(in_features=size, width=spec.size, seed=seed + i, **learning))
            shape = (spec.size,)
            continue
        if len(shape) != 3:
            raise ValueError(f"layer {i + 1} ({spec}) of the layers needs an image below it, but layer {i} is dense")
        field = field.through(spec)
        try:
            cfg = SpatialConfig.build(spec.kind, shape, spec.size, spec.kernel, spec.stride, pool=spec.pool, seed=seed + i,
                                      competition=competition, region=region, batch_norm=batch_norm, batch_stats=batch_stats,
                                      readout_pool=readout_pool,
                                      outlier_weight=outlier_weight if field.covers(in_shape) else 0.0, **learning)
        except ValueError as exc:
            raise ValueError(f"layer {i + 1} ({spec}) of the layers: {exc}") from None
        configs.append(cfg)
        shape = cfg.out_shape
    return configs


@dataclass(frozen=True)
class Field:
    """A spatial layer's receptive field: how many input pixels one location of its activity sees, and how many
    input pixels apart its neighbouring locations are (kernel, stride and pooling, layer upon layer)."""

    size: int = 1
    jump: int = 1

    def through(self, spec: LayerSpec) -> Field:
        size = self.size + (max(spec.kernel) - 1) * self.jump
        jump = self.jump * spec.stride
        return Field(size + (spec.pool - 1) * jump, jump * spec.pool)

    def covers(self, in_shape: tuple[int, int, int]) -> bool:
        """Whether one location sees the whole frame: a hybrid differs from a real frame only in its long-range
        shape, so a layer that sees less of it sees real texture, and is wrongly taught that it is no class."""
        return self.size >= max(in_shape[1:])


def make_layer(cfg: LayerConfig) -> FFLayer:
    """The layer class that a config describes."""
    # torch, here only: the specs and configs above are read without it (config checks, source and monitor workers)
    from ffstream.ff.conv import ConvFFLayer
    from ffstream.ff.layer import FFLayer
    from ffstream.ff.local import LocalFFLayer

    if isinstance(cfg, SpatialConfig):
        return {"conv": ConvFFLayer, "local": LocalFFLayer}[cfg.kind](cfg)
    return FFLayer(cfg)


def config_from_dict(fields: dict) -> LayerConfig:
    """A config saved with `to_dict()` (checkpoints): spatial when it names a spatial kind."""
    if fields.get("kind") in SPATIAL_KINDS:
        return SpatialConfig(**fields)
    return LayerConfig(**fields)


def output_shape(cfg: LayerConfig) -> tuple[int, ...]:
    """The shape of one row of a layer's activity: (C, H, W) for spatial layers, (N,) for dense ones."""
    return cfg.out_shape if isinstance(cfg, SpatialConfig) else (cfg.width,)
