"""Goodness and the probability that an input is positive."""

import torch
import torch.nn.functional as F


def goodness(h: torch.Tensor, kind: str = "sumsq") -> torch.Tensor:
    """h: (B, N) -> (B,). "sumsq" is Σh²; "meansq" is mean h² (θ ≈ 2 is the same rescaling)."""
    squares = h.pow(2)
    return squares.sum(dim=1) if kind == "sumsq" else squares.mean(dim=1)


def logit_positive(g: torch.Tensor, theta: float, temperature: float = 1.0, variant: str = "max") -> torch.Tensor:
    """The logit of p(positive). In the "min" variant positives have low goodness, so the sign flips."""
    sign = 1.0 if variant == "max" else -1.0
    return sign * (g - theta) / temperature


def probability_positive(g: torch.Tensor, theta: float, temperature: float = 1.0, variant: str = "max") -> torch.Tensor:
    """p = σ((G − θ)/T) for the "max" variant, σ((θ − G)/T) for "min"."""
    return torch.sigmoid(logit_positive(g, theta, temperature, variant))


def ff_loss(g: torch.Tensor, positive: bool, theta: float, temperature: float = 1.0, variant: str = "max") -> torch.Tensor:
    """Mean of −log p over positives, or of −log(1 − p) over negatives (softplus is the stable form)."""
    logit = logit_positive(g, theta, temperature, variant)
    return F.softplus(-logit).mean() if positive else F.softplus(logit).mean()
