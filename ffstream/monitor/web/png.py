"""Image tiles -> one PNG mosaic, with the standard library only (zlib and struct)."""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np

GAP = 1  # pixels of background between tiles
BACKGROUND = 40  # dark grey, so that mid-grey (zero weight) tiles stand out from the gaps


def mosaic(tiles: np.ndarray, columns: int | None = None) -> np.ndarray:
    """tiles (N, H, W) or (N, H, W, 3) -> one image (rows·(H+gap)-gap, cols·(W+gap)-gap[, 3]), about square."""
    n, h, w = tiles.shape[:3]
    cols = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    shape = (rows * (h + GAP) - GAP, cols * (w + GAP) - GAP) + tiles.shape[3:]
    out = np.full(shape, BACKGROUND, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * (h + GAP) : r * (h + GAP) + h, c * (w + GAP) : c * (w + GAP) + w] = tile
    return out


def encode_png(image: np.ndarray) -> bytes:
    """uint8 (H, W) grey or (H, W, 3) RGB -> PNG bytes (8-bit, no filtering, zlib level 6)."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"expected uint8 (H, W) or (H, W, 3), got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    color_type = 0 if image.ndim == 2 else 2
    rows = np.ascontiguousarray(image).reshape(height, -1)
    raw = np.hstack([np.zeros((height, 1), np.uint8), rows]).tobytes()  # filter byte 0 before each row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
