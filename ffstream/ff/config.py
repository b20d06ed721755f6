"""The one config a Forward-Forward layer needs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

GOODNESS_KINDS = ("sumsq", "meansq")
VARIANTS = ("max", "min")
OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class LayerConfig:
    in_features: int  # length of the flattened input row
    width: int  # number of units
    goodness: str = "sumsq"  # "sumsq" (Σh²) or "meansq" (mean h²)
    variant: str = "max"  # "max": positives have high goodness; "min": positives have low goodness
    threshold: float | None = None  # θ; None means the width for sumsq and 2.0 for meansq
    temperature: float = 1.0  # T in p = σ((G − θ)/T)
    optimizer: str = "adam"  # "adam" or "sgd" (SGD uses `momentum`)
    lr: float = 1e-3  # learning rate per optimiser step
    momentum: float = 0.9  # SGD momentum; Adam's beta1
    weight_decay: float = 0.0  # L2 on weights and biases, per step
    peer_weight: float = 0.03  # λ of peer normalisation; 0 turns it off
    peer_ema: float = 0.9  # EMA factor of each unit's running-mean activity
    seed: int = 0  # seeds the initial weights

    def __post_init__(self) -> None:
        if self.in_features <= 0 or self.width <= 0:
            raise ValueError(f"layer sizes must be positive, got {self.in_features}->{self.width}")
        if self.goodness not in GOODNESS_KINDS:
            raise ValueError(f"goodness must be one of {GOODNESS_KINDS}, got {self.goodness!r}")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")

    @property
    def takes_negatives(self) -> bool:
        """Whether the sleep worker's negatives teach this layer anything (its loss on them has weight)."""
        return True

    @property
    def theta(self) -> float:
        if self.threshold is not None:
            return float(self.threshold)
        return float(self.width) if self.goodness == "sumsq" else 2.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """A short hash of the fields that decide the weights' meaning (not the learning rate)."""
        shape_fields = {k: v for k, v in self.to_dict().items() if k in ("in_features", "width", "goodness", "variant")}
        blob = json.dumps(shape_fields, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
