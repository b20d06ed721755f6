"""Receptive fields: the first layer's weights as small uint8 images, for the web dashboard.

Each unit's weight row (D,) is one image of the input frame's shape. Each tile gets its own
contrast, centred on zero, so that a unit with small weights still shows its pattern:
grey 128 is 0, white is the tile's largest positive weight, black its largest negative.

>>> weight_tiles(np.eye(4, 4, dtype=np.float32), (1, 2, 2)).shape
(4, 2, 2)
"""

from __future__ import annotations

import math

import numpy as np

MAX_TILES = 64  # units shown
MAX_BYTES = 256 * 1024  # largest preview a layer sends; fewer tiles when frames are big
MAX_PREVIEW_BYTES = 1024 * 1024  # largest preview payload the monitor accepts
GAP = 1  # pixels of background between the dashboard's tiles
BACKGROUND = 40  # the dashboard's dark grey, so that mid-grey (zero weight) tiles stand out from the gaps


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


def mosaic(tiles: np.ndarray, gap: int = GAP, background: int = BACKGROUND, border: int = 0) -> np.ndarray:
    """uint8 tiles (N, H, W[, C]) -> one image, about square, tiles in rows and `gap` pixels of `background` between
    them and `border` pixels around them all: (rows·(H+gap)-gap+2·border, cols·(W+gap)-gap+2·border[, C]).

    The dashboard's receptive fields and `ffstream filters` both draw with it.

    >>> mosaic(np.ones((5, 2, 3), np.uint8), gap=1, background=0).shape  # 5 tiles: 3 columns, 2 rows
    (5, 11)
    """
    n, h, w = tiles.shape[:3]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    shape = (rows * (h + gap) - gap + 2 * border, cols * (w + gap) - gap + 2 * border) + tiles.shape[3:]
    out = np.full(shape, background, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        y, x = border + r * (h + gap), border + c * (w + gap)
        out[y : y + h, x : x + w] = tile
    return out
