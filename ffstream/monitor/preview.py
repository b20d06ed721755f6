"""Receptive fields: the first layer's weights as small uint8 images, for the web dashboard.

Each unit's weight row (D,) is one image of the input frame's shape. Each tile gets its own
contrast, centred on zero, so that a unit with small weights still shows its pattern:
grey 128 is 0, white is the tile's largest positive weight, black its largest negative.

>>> weight_tiles(np.eye(4, 4, dtype=np.float32), (1, 2, 2)).shape
(4, 2, 2)
"""

from __future__ import annotations

import numpy as np

MAX_TILES = 64  # units shown
MAX_BYTES = 256 * 1024  # largest preview a layer sends; fewer tiles when frames are big
MAX_PREVIEW_BYTES = 1024 * 1024  # largest preview payload the monitor accepts


def weight_tiles(weight: np.ndarray, frame_shape: tuple[int, ...], max_tiles: int = MAX_TILES, max_bytes: int = MAX_BYTES) -> np.ndarray:
    """weight (N, C·H·W) -> uint8 tiles (n, H, W) for grey frames or (n, H, W, 3) for colour; n ≤ max_tiles."""
    channels, height, width = frame_shape
    if channels not in (1, 3) or weight.ndim != 2 or weight.shape[1] != channels * height * width:
        raise ValueError(f"weights of shape {weight.shape} are not images of shape {tuple(frame_shape)}")
    tile_bytes = channels * height * width
    n = max(1, min(max_tiles, len(weight), max_bytes // tile_bytes))
    w = np.asarray(weight[:n], dtype=np.float32)  # (n, D)
    scale = np.abs(w).max(axis=1, keepdims=True)
    scale[scale == 0] = 1.0
    pixels = np.clip(np.rint(128 + 127 * w / scale), 0, 255).astype(np.uint8)
    images = pixels.reshape(n, channels, height, width)
    return images[:, 0] if channels == 1 else np.ascontiguousarray(images.transpose(0, 2, 3, 1))


def valid_tiles(array: np.ndarray) -> bool:
    """What the monitor accepts as a preview: uint8, (N, H, W) or (N, H, W, 3), at least one pixel."""
    if array.dtype != np.uint8 or array.size == 0:
        return False
    return array.ndim == 3 or (array.ndim == 4 and array.shape[3] == 3)
