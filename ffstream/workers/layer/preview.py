"""Weight previews: layer 1's first units' weights as image tiles, what the web dashboard draws as receptive fields."""

from __future__ import annotations

import logging
import time

import torch

from ffstream.ff import FFLayer
from ffstream.monitor import preview
from ffstream.net import wire

PREVIEW_EVERY_S = 3.0  # seconds between weight previews


class WeightPreview:
    def __init__(self, layer: FFLayer, shape: tuple[int, int, int], index: int, log: logging.Logger):
        self.layer = layer  # whose weights are shown
        self.shape: tuple[int, int, int] | None = shape  # the input frame (C, H, W); None once it proved not to fit
        self.index = index  # the layer's 1-based position, for the dashboard
        self.log = log  # the worker's logger
        self.last: float | None = None  # monotonic time of the last preview

    def due(self) -> wire.Message | None:
        """The preview message when PREVIEW_EVERY_S have passed since the last; else (or when it cannot be drawn) None."""
        now = time.monotonic()
        if self.shape is None or (self.last is not None and now - self.last < PREVIEW_EVERY_S):
            return None
        self.last = now
        with torch.no_grad():
            filters = self.layer.filters(self.shape)[: preview.MAX_TILES].float().cpu()  # (n, C, h, w): frames, or conv kernels
        try:
            tiles = preview.weight_tiles(filters.flatten(1).numpy(), tuple(filters.shape[1:]))  # (N, H, W[, 3]) uint8
        except ValueError as exc:  # the input is not this frame shape: say so once, then send none
            self.log.warning("no weight previews: %s", exc)
            self.shape = None
            return None
        extra = {"layer": self.index, "weights_version": self.layer.version, "units": self.layer.cfg.width}
        return wire.Message("preview", tiles, stream=f"layer{self.index}", extra=extra)
