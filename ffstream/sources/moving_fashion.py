"""Moving Fashion-MNIST: a labelled video of garments that move and bounce across a larger canvas, one after another.

    >>> frames, labels = moving_fashion(100, split="test", seed=1)   # doctest: +SKIP
    >>> frames.shape, frames.dtype, labels.shape                      # ((100, 48, 48), uint8, (100,))
"""

from __future__ import annotations

import numpy as np

from ffstream.sources.idx import FASHION_MNIST_DIR, load_split

GARMENT = 28  # side of a Fashion-MNIST image, pixels


def moving_fashion(frames: int, split: str = "train", seed: int = 0, canvas: int = 48, segment: tuple[int, int] = (20, 40),
                   speed: tuple[float, float] = (0.5, 2.0), noise: float = 0.0,
                   directory: str = FASHION_MNIST_DIR) -> tuple[np.ndarray, np.ndarray]:
    """(frames (T, canvas, canvas) uint8, labels (T,) int64): garments of `split` in a seeded random order.

    Each garment stays on screen for a seeded number of frames in `segment` (inclusive), starts at a random place,
    moves at a random speed (pixels per frame) and heading, and bounces off the canvas borders. noise: std of
    additive Gaussian pixel noise, grey levels. Deterministic for a given seed.
    """
    if canvas < GARMENT or frames <= 0:
        raise ValueError(f"canvas must be at least {GARMENT} pixels and frames positive, got {canvas} and {frames}")
    images, classes = load_split(directory, split)  # (N, 28, 28) uint8, (N,)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    out = np.zeros((frames, canvas, canvas), dtype=np.uint8)
    labels = np.empty(frames, dtype=np.int64)
    room = canvas - GARMENT  # the top-left corner moves in [0, room]
    t, clip = 0, 0
    while t < frames:
        index = order[clip % len(order)]
        clip += 1
        length = min(int(rng.integers(segment[0], segment[1] + 1)), frames - t)
        pos = rng.uniform(0, room, size=2)
        heading = rng.uniform(0, 2 * np.pi)
        vel = rng.uniform(*speed) * np.array([np.cos(heading), np.sin(heading)])
        for _ in range(length):
            y, x = np.rint(pos).astype(int)
            out[t, y : y + GARMENT, x : x + GARMENT] = images[index]
            labels[t] = classes[index]
            pos, vel = _bounce(pos + vel, vel, room)
            t += 1
    if noise > 0:
        out = np.clip(out + rng.standard_normal(out.shape, dtype=np.float32) * np.float32(noise), 0, 255).astype(np.uint8)
    return out, labels


def _bounce(pos: np.ndarray, vel: np.ndarray, room: float) -> tuple[np.ndarray, np.ndarray]:
    """Reflect each coordinate that left [0, room] back inside and flip its velocity."""
    low, high = pos < 0, pos > room
    pos = np.where(low, -pos, np.where(high, 2 * room - pos, pos))
    return pos, np.where(low | high, -vel, vel)
