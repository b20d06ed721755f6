"""What every frame source yields and promises: `Frame`, `FrameSource`, `SourceError`."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ffstream.sources.preprocess import Preprocess


class SourceError(Exception):
    """A source cannot be opened or read; the message is one line a user can act on."""


@dataclass(frozen=True)
class Position:
    """Where a file or dataset stream stands: the next frame is frame `offset` of pass `epoch`."""

    epoch: int = 0  # 0-based pass over the file or dataset
    offset: int = 0  # frames of that pass already yielded


@dataclass
class Frame:
    pixels: np.ndarray  # float32 (C, H, W), already preprocessed
    label: int | None  # class index, None for unlabelled video
    index: int  # 0-based position in this pass over the stream (counts across epochs)
    t_src: float  # time.time() when the frame was captured or read, seconds


class FrameSource(ABC):
    """An iterable of `Frame`s that is also a context manager; `close()` may be called any number of times.

    >>> with open_source("synthetic:10", Preprocess()) as src:   # doctest: +SKIP
    ...     for frame in src: frame.pixels.shape                   # (1, 28, 28)
    """

    live: bool = False  # True: latest frame wins and replaced frames count in `dropped`; False: never drop

    def __init__(self, name: str, preprocess: Preprocess) -> None:
        self.name = name
        self.preprocess = preprocess
        self.total: int | None = None  # frames this source yields over all epochs; None if unknown or endless
        self.num_classes: int | None = None  # label range; None for unlabelled video
        self.dropped = 0  # live frames replaced before they were consumed
        self.bad_frames = 0  # frames (or packets) that failed to decode and were skipped
        self.start = Position()  # where the next iteration begins; `seek()` moves it
        self.position = Position()  # the frame the iterator yields next; it moves as frames are yielded
        self._closed = False

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every frame's pixels."""
        return self.preprocess.shape

    @property
    def closed(self) -> bool:
        return self._closed

    def __iter__(self) -> Iterator[Frame]:
        if self._closed:
            raise SourceError(f"{self.name} is closed")
        return self._frames()

    @abstractmethod
    def _frames(self) -> Iterator[Frame]:
        """Yield the frames of one full pass (all epochs) from `self.start`, keeping `self.position` on the
        frame after the one yielded; stop early once `self._closed` is set."""

    def identity(self) -> dict | None:
        """What makes a saved position valid for this source (path, size, mtime, order); None: it cannot resume."""
        return None

    def seek(self, position: Position) -> None:
        """Start the next iteration at `position` instead of the beginning (a restarted file stream)."""
        if self.identity() is None:
            raise SourceError(f"{self.name} cannot resume from a position")
        self.start = self.position = position

    def _release(self) -> None:
        """Free OS resources (files, devices, threads); called once by `close()`."""

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._release()

    def _frame(self, image: np.ndarray, label: int | None, index: int, t_src: float | None = None) -> Frame:
        """Preprocess a raw HxW or HxWx3 uint8 image into a `Frame`."""
        return Frame(self.preprocess(image), label, index, time.time() if t_src is None else t_src)

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.name} shape={self.shape} total={self.total} "
            f"dropped={self.dropped} bad_frames={self.bad_frames}{' closed' if self._closed else ''}>"
        )
