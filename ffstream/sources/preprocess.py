"""Turn a raw image into the float32 (C, H, W) array the network sees."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Preprocess:
    size: tuple[int, int] = (28, 28)  # (height, width) of the output, pixels; default fashion-mnist's 28x28
    color: bool = False  # False: one grey channel; True: three RGB channels
    scale: float = 1 / 255  # multiplies the uint8 values; the default maps 0..255 to 0..1
    center: bool = False  # subtract each frame's own mean (over all its channels) after scaling (stream.center)
    # Offline only, for a stack trained on pairs (stream.pairs): each frame beside itself, (2C, h, w), as SCFF infers.
    # The pipeline's source pairs each frame with the one before it instead (`SuccessorPairs`).
    self_pair: bool = False

    def __post_init__(self) -> None:
        if len(self.size) != 2 or min(self.size) <= 0:
            raise ValueError(f"size must be (height, width) with positive entries, got {self.size}")
        object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))

    @property
    def channels(self) -> int:
        return 3 if self.color else 1

    @property
    def shape(self) -> tuple[int, int, int]:
        return (2 * self.channels if self.self_pair else self.channels, *self.size)

    def __call__(self, img: np.ndarray) -> np.ndarray:
        """img: (H, W) grey or (H, W, 3) RGB -> float32 (C, h, w), C-contiguous."""
        img = self._resize(self._to_grey_if_needed(img))
        out = img.astype(np.float32) * np.float32(self.scale)
        if out.ndim == 2:
            out = out[None]  # (1, h, w)
            if self.color:
                out = np.repeat(out, 3, axis=0)  # grey -> RGB after resizing: a third of the work
        else:
            out = out.transpose(2, 0, 1)  # (h, w, 3) -> (3, h, w)
        return self._finish(out[None])[0]

    def batch(self, images: np.ndarray) -> np.ndarray:
        """images: (N, H, W) or (N, H, W, 3) -> float32 (N, C, h, w).

        Vectorised when the images already have the output size (a whole dataset split in one go);
        otherwise one `__call__` per image.
        """
        if images.ndim not in (3, 4):
            raise ValueError(f"expected (N, H, W) or (N, H, W, 3) images, got shape {images.shape}")
        n = images.shape[0]
        grey_in = images.ndim == 3
        if tuple(images.shape[1:3]) == self.size and (grey_in or self.color):
            out = images.astype(np.float32) * np.float32(self.scale)
            if grey_in:
                out = out[:, None]  # (N, 1, H, W)
                if self.color:
                    out = np.repeat(out, 3, axis=1)  # grey -> RGB: the same plane three times
            else:
                out = out.transpose(0, 3, 1, 2)  # (N, 3, H, W)
            return self._finish(out)
        out = np.empty((n, *self.shape), dtype=np.float32)
        for i in range(n):
            out[i] = self(images[i])
        return out

    def _finish(self, out: np.ndarray) -> np.ndarray:
        """(N, C, h, w) scaled frames -> centred and self-paired as asked, float32, C-contiguous."""
        if self.center:
            out = out - out.mean(axis=(1, 2, 3), keepdims=True, dtype=np.float32)
        if self.self_pair:
            out = np.concatenate([out, out], axis=1)  # (N, 2C, h, w)
        return np.ascontiguousarray(out, dtype=np.float32)

    def _to_grey_if_needed(self, img: np.ndarray) -> np.ndarray:
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[:, :, 0]
        if img.ndim == 2:
            return img
        if img.ndim == 3 and img.shape[2] == 3:
            return img if self.color else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        raise ValueError(f"expected an (H, W) grey or (H, W, 3) RGB image, got shape {img.shape}")

    def _resize(self, img: np.ndarray) -> np.ndarray:
        h, w = self.size
        if img.shape[:2] == (h, w):
            return img
        # INTER_AREA averages the pixels that fold into one, so shrinking does not alias
        shrinking = h <= img.shape[0] and w <= img.shape[1]
        return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


class SuccessorPairs:
    """SCFF's positives on a stream (stream.pairs): each frame stacked after the one before it along channels.

    The previous frame is kept across batches, so a batch of B frames makes B pairs; the stream's first frame
    (or the first after a seek) is paired with itself, as at inference.

    >>> pairs = SuccessorPairs()
    >>> pairs(np.zeros((3, 1, 2, 2), np.float32)).shape
    (3, 2, 2, 2)
    """

    def __init__(self) -> None:
        self.previous: np.ndarray | None = None  # (C, H, W), the last frame of the last batch

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """frames: (B, C, H, W) in time order -> (B, 2C, H, W), row t = [x_{t-1}, x_t]."""
        before = np.concatenate([(frames[:1] if self.previous is None else self.previous[None]), frames[:-1]])
        self.previous = frames[-1].copy()
        return np.ascontiguousarray(np.concatenate([before, frames], axis=1))

    def reset(self) -> None:
        """The stream jumped (a seek or rewind): the next frame has no predecessor."""
        self.previous = None
