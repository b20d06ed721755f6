"""Negative data: what the sleep worker feeds the network so that it learns what is *not* real."""

from __future__ import annotations

import functools

import torch

BLUR_KERNEL = (0.25, 0.5, 0.25)


def blurred_mask(shape: tuple[int, int, int], generator: torch.Generator, blur_steps: int = 8) -> torch.Tensor:
    """The paper's mask: random bits, blurred `blur_steps` times with [1/4, 1/2, 1/4] both ways, then > 0.5.

    shape: (B, H, W) -> a float mask of 0s and 1s with large coherent regions.
    The blurs are linear, so all of them are one (H, H) and one (W, W) matrix product: at 64x64, batch 64,
    1.9 ms on one thread against 97 ms for the 16 small convolutions they replace (the test checks that both agree).
    """
    bits = torch.randint(0, 2, shape, generator=generator).float()
    _, height, width = shape
    blurred = blur_matrix(height, blur_steps) @ bits @ blur_matrix(width, blur_steps).T
    return (blurred > 0.5).float()


@functools.lru_cache(maxsize=16)
def blur_matrix(n: int, steps: int) -> torch.Tensor:
    """(n, n): `steps` passes of the [1/4, 1/2, 1/4] blur along one axis of length n, the edge value repeated."""
    one_pass = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for offset, weight in zip((-1, 0, 1), BLUR_KERNEL):
            one_pass[i, min(max(i + offset, 0), n - 1)] += weight  # replicate padding: the edge stands in for outside
    return torch.linalg.matrix_power(one_pass, steps).float()


def hybrid(a: torch.Tensor, b: torch.Tensor, generator: torch.Generator, blur_steps: int = 8) -> torch.Tensor:
    """mask·a + (1 − mask)·b for frames a, b: (B, C, H, W): real short-range structure, wrong long-range shape."""
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"hybrid needs two (B, C, H, W) batches of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    mask = blurred_mask((a.shape[0], a.shape[2], a.shape[3]), generator, blur_steps).unsqueeze(1)
    return mask * a + (1 - mask) * b


def random_wrong_labels(labels: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """A label drawn uniformly from the K − 1 wrong ones, per row."""
    offset = torch.randint(1, num_classes, labels.shape, generator=generator)
    return (labels.long() + offset) % num_classes


def hard_wrong_labels(labels: torch.Tensor, scores: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A wrong label sampled in proportion to softmax(scores), the true class masked out.

    scores: (B, K), e.g. goodness per candidate label; the labels the model confuses most come up most.
    """
    masked = scores.float().clone()
    masked[torch.arange(len(labels)), labels.long()] = float("-inf")
    probs = torch.softmax(masked, dim=1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def temporal_pairs(frames: torch.Tensor) -> torch.Tensor:
    """Positive frame pairs from a clip in time order: frames (T, C, H, W) -> (T − 1, 2C, H, W), [t, t+1]."""
    return torch.cat([frames[:-1], frames[1:]], dim=1)


def temporal_negatives(frames: torch.Tensor, generator: torch.Generator, min_gap: int = 2) -> torch.Tensor:
    """Frame pairs taken out of their time order: [t+1, t] reversed, or [t, s] with |t − s| ≥ min_gap.

    frames: (T, C, H, W), T > min_gap -> (T − 1, 2C, H, W); half the rows are reversals, half are jumps.
    """
    t = frames.shape[0]
    if min_gap < 2:  # a gap of 1 is the true order [t, t+1]
        raise ValueError(f"min_gap must be at least 2, got {min_gap}")
    if t <= min_gap:
        raise ValueError(f"temporal negatives need more than {min_gap} frames, got {t}")
    first = torch.arange(t - 1)
    reverse = torch.rand(t - 1, generator=generator) < 0.5
    jump = (first + torch.randint(min_gap, t, (t - 1,), generator=generator)) % t
    # A jump that lands within the gap (after wrapping) becomes a reversal, so no pair is ever in order.
    too_close = (jump - first).abs() < min_gap
    second = torch.where(reverse | too_close, first, jump)
    first = torch.where(reverse | too_close, first + 1, first)
    return torch.cat([frames[first], frames[second]], dim=1)
