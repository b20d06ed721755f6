"""Image tiles -> one PNG mosaic, for /receptive-fields.png: preview.mosaic lays them out, OpenCV encodes."""

from __future__ import annotations

import cv2
import numpy as np

from ffstream.monitor.preview import mosaic

__all__ = ["encode_png", "mosaic"]


def encode_png(image: np.ndarray) -> bytes:
    """uint8 (H, W) grey or (H, W, 3) RGB -> PNG bytes (8-bit grey or RGB, as given)."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"expected uint8 (H, W) or (H, W, 3), got {image.dtype} {image.shape}")
    bgr = image[:, :, ::-1] if image.ndim == 3 else image  # OpenCV writes BGR; the page shows RGB
    ok, png = cv2.imencode(".png", np.ascontiguousarray(bgr))
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} image as PNG")
    return png.tobytes()
