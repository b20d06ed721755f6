"""Frame pairs for video FF: self-contrastive pairs (SCFF, Chen et al., Nat. Commun. 2025) and a reservoir of past frames.

A paired layer sees two frames stacked along channels, (B, 2C, H, W). Positive: a frame with its successor (the
same object a moment later). Negative: a frame with a frame from another time, most likely another clip. At
inference a frame is paired with itself.

    >>> frames = torch.zeros(5, 1, 4, 4)
    >>> successor_pairs(frames).shape, self_pairs(frames).shape
    (torch.Size([4, 2, 4, 4]), torch.Size([5, 2, 4, 4]))
"""

from __future__ import annotations

import torch


def self_pairs(x: torch.Tensor) -> torch.Tensor:
    """x: (B, C, H, W) -> (B, 2C, H, W), each frame beside itself (the inference input of a paired layer)."""
    return torch.cat([x, x], dim=1)


def successor_pairs(frames: torch.Tensor) -> torch.Tensor:
    """frames: (T, C, H, W) in time order -> (T − 1, 2C, H, W), [x_t, x_{t+1}]: SCFF's positives on video."""
    return torch.cat([frames[:-1], frames[1:]], dim=1)


def cross_pairs(x: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """x, others: (B, C, H, W) -> (B, 2C, H, W), [x_b, others_b]: SCFF's negatives when others come from other times."""
    if x.shape != others.shape:
        raise ValueError(f"cross pairs need two batches of one shape, got {tuple(x.shape)} and {tuple(others.shape)}")
    return torch.cat([x, others], dim=1)


class Reservoir:
    """The last `capacity` frames of a stream, (capacity, C, H, W), to draw partners "from another time" from.

    With clips of 20-40 frames and a capacity of 1000, a drawn frame shares the clip of the newest ones about 3 %
    of the time; `min_age` keeps the newest frames (the current clip, most likely) out of the draw altogether.
    """

    def __init__(self, capacity: int, seed: int = 0, min_age: int = 64):
        if capacity <= min_age:
            raise ValueError(f"capacity must exceed min_age, got {capacity} and {min_age}")
        self.capacity = capacity
        self.min_age = min_age  # frames this recent are never drawn
        self.generator = torch.Generator().manual_seed(seed)
        self.frames: torch.Tensor | None = None  # (capacity, C, H, W) ring buffer
        self.count = 0  # frames ever added

    def add(self, x: torch.Tensor) -> None:
        """x: (B, C, H, W), newest last."""
        if self.frames is None:
            self.frames = torch.zeros(self.capacity, *x.shape[1:], dtype=x.dtype)
        slots = (self.count + torch.arange(len(x))) % self.capacity
        self.frames[slots] = x.detach()
        self.count += len(x)

    def ready(self) -> bool:
        return self.count > self.min_age

    def sample(self, n: int) -> torch.Tensor:
        """n frames at least `min_age` frames old, uniformly from what the ring holds: (n, C, H, W)."""
        if not self.ready():
            raise ValueError(f"the reservoir holds {self.count} frames, none older than {self.min_age}")
        held = min(self.count, self.capacity)
        age = self.min_age + torch.randint(0, held - self.min_age, (n,), generator=self.generator)  # 0 is the newest
        return self.frames[(self.count - 1 - age) % self.capacity]
