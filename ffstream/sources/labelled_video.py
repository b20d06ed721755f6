"""A video file with per-frame labels from a CSV sidecar (see `ffstream.sources.sidecar`), streamed in order."""

from __future__ import annotations

import os

import numpy as np

from ffstream.sources.base import SourceError
from ffstream.sources.preprocess import Preprocess
from ffstream.sources.sidecar import read_sidecar
from ffstream.sources.video import VideoFileSource


class LabelledVideoSource(VideoFileSource):
    """Every decoded frame carries its sidecar label; `num_classes` is the largest label + 1.

    The labels feed the sink's probe and readouts; whether the layers see them is the run's task, as for the
    synthetic clip's shape classes (a video trains unsupervised unless --task supervised says otherwise).
    """

    def __init__(self, path: str | os.PathLike, labels_path: str | os.PathLike, preprocess: Preprocess, *, epochs: int = 1) -> None:
        self.labels_path = os.fspath(labels_path)
        self.labels = read_sidecar(self.labels_path)  # int64 (N,): frame i's class; malformed files fail before decoding
        super().__init__(path, preprocess, epochs=epochs)
        frames = self.count_packets()  # exact, unlike a header's estimate: a label must not slide onto another frame
        if frames != len(self.labels):
            side = os.path.basename(self.labels_path)
            video = os.path.basename(self.path)
            raise SourceError(
                f"{side} labels {len(self.labels)} frames but {video} has {frames}: every frame needs exactly one label"
            )
        self.frames_per_epoch = frames
        self.total = frames * epochs
        self.num_classes = int(self.labels.max()) + 1
        self.name = f"video:{os.path.basename(self.path)}+{os.path.basename(self.labels_path)}"

    def _label(self, offset: int) -> int | None:
        # a packet that failed to decode shifts later frames onto earlier labels; such files also count bad_frames
        return int(self.labels[offset]) if offset < len(self.labels) else None

    def identity(self) -> dict:
        """The video's identity and the sidecar's: relabelling a clip does not take the old labels' position."""
        st = os.stat(self.labels_path)
        return {**super().identity(), "labels": os.path.realpath(self.labels_path), "labels_size": st.st_size,
                "labels_mtime_ns": st.st_mtime_ns}

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The whole clip (one pass) as (float32 (N, C, H, W), int64 (N,))."""
        pixels, labels = [], []
        for frame in self:
            if frame.index >= self.frames_per_epoch:
                break
            pixels.append(frame.pixels)
            labels.append(frame.label)
        return np.stack(pixels), np.asarray(labels, dtype=np.int64)
