"""Writing a label into the input, as the paper does with the first K pixels."""

import torch


def embed_label(x: torch.Tensor, labels: torch.Tensor, num_classes: int, scale: float = 1.0) -> torch.Tensor:
    """x: (B, D) flattened frames; labels: (B,) int. Returns a copy whose first K entries are the one-hot label."""
    out = x.clone()
    out[:, :num_classes] = 0.0
    out[torch.arange(x.shape[0]), labels.long()] = scale
    return out


def neutral_label(x: torch.Tensor, num_classes: int, scale: float = 1.0) -> torch.Tensor:
    """The neutral label: 1/K in each of the K label slots, used for one-pass prediction."""
    out = x.clone()
    out[:, :num_classes] = scale / num_classes
    return out
