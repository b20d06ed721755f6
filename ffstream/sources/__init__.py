"""Frame sources: synthetic shapes, video files, webcams/RTSP, and IDX datasets, behind one `open_source`.

>>> with open_source("synthetic:100", Preprocess(size=(28, 28))) as src:   # doctest: +SKIP
...     for frame in src:
...         frame.pixels.shape, frame.label                                   # (1, 28, 28), 0..3
"""

from __future__ import annotations

import os
import re

import numpy as np

from ffstream.preflight import missing_webcam
from ffstream.sources.base import Frame, FrameSource, Position, SourceError
from ffstream.sources.camera import CameraSource
from ffstream.sources.idx import FASHION_MNIST_DIR, IdxSource, load_idx, load_split, open_idx
from ffstream.sources.preprocess import Preprocess
from ffstream.sources.synthetic import DEFAULT_FRAMES, SyntheticSource
from ffstream.sources.video import VideoFileSource

__all__ = [
    "CameraSource",
    "Frame",
    "FrameSource",
    "IdxSource",
    "Position",
    "Preprocess",
    "SourceError",
    "SyntheticSource",
    "check_live",
    "VideoFileSource",
    "dataset_arrays",
    "load_idx",
    "open_source",
]

SPEC_HELP = (
    "synthetic[:N], a video file path, webcam[:N], rtsp://..., http(s)://..., "
    "idx:DIR[:train|test], fashion-mnist[:train|test]"
)
STREAM_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")


def open_source(
    spec: str, preprocess: Preprocess, *, seed: int = 0, epochs: int = 1, shuffle: bool = True
) -> FrameSource:
    """The source a spec string names (see SPEC_HELP).

    seed: synthetic content and dataset order; epochs: passes (ignored by live sources);
    shuffle: datasets only, videos keep their order.
    """
    if epochs <= 0:
        raise SourceError(f"epochs must be positive, got {epochs}")
    if spec == "synthetic" or spec.startswith("synthetic:"):
        return SyntheticSource(preprocess, _count(spec, DEFAULT_FRAMES), seed=seed, epochs=epochs)
    if spec == "webcam" or spec.startswith("webcam:"):
        return CameraSource(_count(spec, 0, allow_zero=True), preprocess)
    if spec.lower().startswith(STREAM_SCHEMES):
        return CameraSource(spec, preprocess)
    dataset = _dataset(spec)
    if dataset is not None:
        directory, split, name, fashion = dataset
        return open_idx(
            directory, split, preprocess, name=name, fashion=fashion, seed=seed, epochs=epochs, shuffle=shuffle
        )
    if os.path.exists(spec):
        return VideoFileSource(spec, preprocess, epochs=epochs)
    if re.match(r"^[A-Za-z][\w+.-]*:", spec) and not re.match(r"^[A-Za-z]:[\\/]", spec):
        raise SourceError(f"unknown source {spec!r}; expected {SPEC_HELP}")
    raise SourceError(f"video file not found: {spec} (other sources: {SPEC_HELP})")


def check_live(spec: str) -> None:
    """Fail fast, without opening it, on a live source that cannot exist: a webcam index with no device node."""
    if spec == "webcam" or spec.startswith("webcam:"):
        _count(spec, 0, allow_zero=True)  # a bad number: its own one-line error
        error = missing_webcam(spec)
        if error:
            raise SourceError(error)


def dataset_arrays(spec: str, preprocess: Preprocess) -> tuple[np.ndarray, np.ndarray]:
    """A whole labelled split as arrays: (float32 (N, C, H, W), int64 (N,)), in file order.

    For idx:/fashion-mnist specs (vectorised when the size is native) and synthetic:N (N frames, seed 0).
    """
    dataset = _dataset(spec)
    if dataset is not None:
        images, labels = load_split(dataset[0], dataset[1])
        return preprocess.batch(images), labels
    if spec == "synthetic" or spec.startswith("synthetic:"):
        with SyntheticSource(preprocess, _count(spec, DEFAULT_FRAMES)) as src:
            x = np.empty((src.total, *preprocess.shape), dtype=np.float32)
            y = np.empty(src.total, dtype=np.int64)
            for frame in src:
                x[frame.index], y[frame.index] = frame.pixels, frame.label
        return x, y
    raise SourceError(f"no labelled arrays for {spec!r}: use idx:DIR[:split], fashion-mnist[:split] or synthetic[:N]")


def _count(spec: str, default: int, allow_zero: bool = False) -> int:
    """The N of 'kind:N', or `default` when there is no ':N'."""
    _, sep, value = spec.partition(":")
    if not sep:
        return default
    if not value.isdigit() or (int(value) == 0 and not allow_zero):
        kind = "non-negative" if allow_zero else "positive"
        raise SourceError(f"bad number in {spec!r}: expected a {kind} integer after ':'")
    return int(value)


def _dataset(spec: str) -> tuple[str, str, str, bool] | None:
    """idx:DIR[:split] / fashion-mnist[:split] -> (directory, split, name, is_fashion); None for other specs."""
    if spec == "fashion-mnist" or spec.startswith("fashion-mnist:"):
        split = spec.partition(":")[2] or "train"
        return FASHION_MNIST_DIR, split, f"fashion-mnist:{split}", True
    if spec.startswith("idx:"):
        rest = spec[len("idx:"):]
        directory, sep, split = rest.rpartition(":")
        if not sep or split not in ("train", "test"):
            directory, split = rest, "train"  # no split given (or a ':' inside the path)
        if not directory:
            raise SourceError(f"idx spec needs a directory: idx:DIR[:train|test], got {spec!r}")
        return directory, split, f"idx:{os.path.basename(os.path.normpath(directory))}:{split}", False
    return None
