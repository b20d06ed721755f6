"""A picture of a layer's filters from its checkpoint: one tile per output channel (conv, local) or unit (dense).

    ffstream filters --checkpoint-dir ck --out docs/conv_filters.png
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from ffstream.ff import checkpoint
from ffstream.ff.spec import make_layer

MAX_TILES = 64  # a dense layer has thousands of units; the first ones are enough to see what it learnt


def mosaic(tiles: np.ndarray, scale: int = 8, gap: int = 2) -> np.ndarray:
    """(N, C, h, w) float filters -> one uint8 BGR image, each tile scaled to its own min..max (grey if C is 1)."""
    n, c, h, w = tiles.shape
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    th, tw = h * scale, w * scale
    out = np.full((rows * (th + gap) + gap, cols * (tw + gap) + gap, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        lo, hi = float(tile.min()), float(tile.max())
        norm = (tile - lo) / (hi - lo) if hi > lo else np.zeros_like(tile)
        rgb = np.repeat(norm, 3, axis=0) if c == 1 else norm[:3]
        img = cv2.resize((rgb.transpose(1, 2, 0) * 255).astype(np.uint8), (tw, th), interpolation=cv2.INTER_NEAREST)
        r, q = divmod(i, cols)
        y, x = gap + r * (th + gap), gap + q * (tw + gap)
        out[y : y + th, x : x + tw] = img[:, :, ::-1]  # RGB -> BGR for cv2
    return out


def save_filters(checkpoint_dir: str | os.PathLike, out: str | os.PathLike, layer: int = 1, scale: int = 12) -> tuple[int, ...]:
    """Write layer `layer`'s filters as a PNG; returns the shape of the tiles drawn."""
    path = checkpoint.layer_path(checkpoint_dir, layer)
    cfg, meta = checkpoint.checkpoint_config(path)
    model = make_layer(cfg)
    checkpoint.load_layer(path, model)
    tiles = model.filters(tuple(meta.get("frame_shape") or (1, 1, cfg.in_features)))[:MAX_TILES].numpy()  # (N, C, h, w)
    if not cv2.imwrite(str(out), mosaic(tiles, scale)):
        raise OSError(f"could not write {out}")
    return tuple(tiles.shape)
