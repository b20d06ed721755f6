"""Writing a label into the input, as the paper does with the first K pixels."""

import torch

EPS = 1e-8


def slot_value(x: torch.Tensor, num_classes: int, scale: float, relative: bool) -> torch.Tensor | float:
    """The value written into a label slot: `scale`, or with `relative` scale × each frame's RMS outside the
    K slots, (B, 1). Layer 1 divides its whole input by its RMS, so an absolute label weighs more in a dark
    frame than in a bright one; a relative label weighs the same in every frame."""
    if not relative:
        return scale
    return scale * torch.sqrt(x[:, num_classes:].pow(2).mean(dim=1, keepdim=True) + EPS)


def embed_label(x: torch.Tensor, labels: torch.Tensor, num_classes: int, scale: float = 1.0, relative: bool = False) -> torch.Tensor:
    """x: (B, D) flattened frames; labels: (B,) int. Returns a copy whose first K entries are the one-hot label."""
    value = slot_value(x, num_classes, scale, relative)
    out = x.clone()
    out[:, :num_classes] = 0.0
    rows = torch.arange(x.shape[0], device=x.device)
    out[rows, labels.long()] = value if isinstance(value, float) else value.squeeze(1).to(out.dtype)
    return out


def neutral_label(x: torch.Tensor, num_classes: int, scale: float = 1.0, relative: bool = False) -> torch.Tensor:
    """The neutral label: 1/K of the slot value in each of the K label slots, used for one-pass prediction."""
    value = slot_value(x, num_classes, scale, relative)
    out = x.clone()
    out[:, :num_classes] = value / num_classes
    return out
