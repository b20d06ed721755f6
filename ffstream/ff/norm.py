"""Length normalisation between layers."""

import torch

EPS = 1e-8


def rms_normalize(x: torch.Tensor) -> torch.Tensor:
    """Divide each row by sqrt(mean(x²)), as Hinton's code does; the mean is not subtracted.

    x: (B, D) -> (B, D) with mean square 1 per row. Only the direction of the
    activity vector is passed on; its length (the goodness) stays behind.
    """
    return x / torch.sqrt(x.pow(2).mean(dim=1, keepdim=True) + EPS)
