"""A picture of a layer's filters from its checkpoint: one tile per output channel (conv, local) or unit (dense).

    ffstream filters --checkpoint-dir ck --out docs/conv_filters.png
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from ffstream.ff import checkpoint
from ffstream.ff.spec import make_layer
from ffstream.monitor.preview import mosaic

MAX_TILES = 64  # a dense layer has thousands of units; the first ones are enough to see what it learnt


def tiles_image(tiles: np.ndarray, scale: int = 8, gap: int = 2) -> np.ndarray:
    """(N, C, h, w) float filters -> one uint8 BGR image on white, each tile scaled to its own min..max (grey if C is 1)
    and enlarged `scale` times (nearest neighbour), laid out by the dashboard's preview.mosaic."""
    lo = tiles.min(axis=(1, 2, 3), keepdims=True)
    hi = tiles.max(axis=(1, 2, 3), keepdims=True)
    norm = np.where(hi > lo, (tiles - lo) / np.where(hi > lo, hi - lo, 1), 0)  # (N, C, h, w) in 0..1; flat tiles black
    rgb = np.repeat(norm, 3, axis=1) if tiles.shape[1] == 1 else norm[:, :3]
    pixels = (rgb.transpose(0, 2, 3, 1) * 255).astype(np.uint8)  # (N, h, w, 3)
    big = pixels.repeat(scale, axis=1).repeat(scale, axis=2)  # (N, h·scale, w·scale, 3)
    return mosaic(big, gap=gap, background=255, border=gap)[:, :, ::-1]  # RGB -> BGR for cv2


def save_filters(checkpoint_dir: str | os.PathLike, out: str | os.PathLike, layer: int = 1, scale: int = 12) -> tuple[int, ...]:
    """Write layer `layer`'s filters as a PNG; returns the shape of the tiles drawn."""
    path = checkpoint.layer_path(checkpoint_dir, layer)
    cfg, meta = checkpoint.checkpoint_config(path)
    model = make_layer(cfg)
    checkpoint.load_layer(path, model)
    tiles = model.filters(tuple(meta.get("frame_shape") or (1, 1, cfg.in_features)))[:MAX_TILES].numpy()  # (N, C, h, w)
    if not cv2.imwrite(str(out), tiles_image(tiles, scale)):
        raise OSError(f"could not write {out}")
    return tuple(tiles.shape)
