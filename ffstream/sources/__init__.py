"""Frame sources: synthetic shapes, video files (labelled by a CSV sidecar or not), webcams/RTSP, and IDX datasets,
behind one `open_source`.

>>> with open_source("synthetic:100", Preprocess(size=(28, 28))) as src:   # doctest: +SKIP
...     for frame in src:
...         frame.pixels.shape, frame.label                                   # (1, 28, 28), 0..3
"""

from __future__ import annotations

import importlib
import os
import re
from typing import TYPE_CHECKING

import numpy as np

from ffstream.sources.base import Frame, FrameSource, Position, SourceError
from ffstream.sources.preflight import missing_webcam
from ffstream.sources.sidecar import read_sidecar, sidecar_for

if TYPE_CHECKING:
    from ffstream.sources.preprocess import Preprocess

STREAM_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")

# The sources themselves are imported when first named (PEP 562): they bring in OpenCV and PyAV (0.15-0.3 s), which
# only the source worker needs, and every worker imports this package (SourceError, by `ffstream.cli`).
_LAZY = {
    "CameraSource": "camera", "IdxSource": "idx", "FASHION_MNIST_DIR": "idx", "load_idx": "idx", "load_split": "idx",
    "open_idx": "idx", "LabelledVideoSource": "labelled_video", "Preprocess": "preprocess", "SyntheticSource": "synthetic",
    "DEFAULT_FRAMES": "synthetic", "VideoFileSource": "video",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


__all__ = [
    "CameraSource",
    "Frame",
    "FrameSource",
    "IdxSource",
    "LabelledVideoSource",
    "Position",
    "Preprocess",
    "SourceError",
    "SyntheticSource",
    "VideoFileSource",
    "check_live",
    "dataset_arrays",
    "is_live",
    "load_idx",
    "open_source",
    "read_sidecar",
    "sidecar_for",
]

SPEC_HELP = (
    "synthetic[:N][:seed=S], a video file path (labelled by a same-stem .csv beside it), webcam[:N], rtsp://..., http(s)://..., "
    "idx:DIR[:train|test], fashion-mnist[:train|test]"
)
SYNTHETIC_SPEC = re.compile(r"synthetic(?::(?P<frames>\d+))?(?::seed=(?P<seed>\d+))?")


def open_source(
    spec: str, preprocess: Preprocess, *, seed: int = 0, epochs: int = 1, shuffle: bool = True, labels: str | None = None
) -> FrameSource:
    """The source a spec string names (see SPEC_HELP).

    seed: synthetic content (unless the spec names its own seed=S) and dataset order; epochs: passes (ignored by
    live sources); shuffle: datasets only, videos keep their order; labels: a video file's label CSV, instead of
    the same-stem sidecar found beside it (`clip.mp4` + `clip.csv`).
    """
    from ffstream.sources.camera import CameraSource
    from ffstream.sources.idx import open_idx
    from ffstream.sources.labelled_video import LabelledVideoSource
    from ffstream.sources.synthetic import SyntheticSource
    from ffstream.sources.video import VideoFileSource

    if epochs <= 0:
        raise SourceError(f"epochs must be positive, got {epochs}")
    if labels is not None and not _is_video_file(spec):
        raise SourceError(f"--labels labels a video file, and {spec!r} is not one (datasets and synthetic clips carry their own)")
    if spec == "synthetic" or spec.startswith("synthetic:"):
        frames, spec_seed = _synthetic(spec)
        return SyntheticSource(preprocess, frames, seed=seed if spec_seed is None else spec_seed, epochs=epochs)
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
        labels = labels or sidecar_for(spec)
        if labels is not None:
            return LabelledVideoSource(spec, labels, preprocess, epochs=epochs)
        return VideoFileSource(spec, preprocess, epochs=epochs)
    if re.match(r"^[A-Za-z][\w+.-]*:", spec) and not re.match(r"^[A-Za-z]:[\\/]", spec):
        raise SourceError(f"unknown source {spec!r}; expected {SPEC_HELP}")
    raise SourceError(f"video file not found: {spec} (other sources: {SPEC_HELP})")


def is_live(spec: str) -> bool:
    """Whether a spec names a live source (a webcam, an RTSP or HTTP stream), which drops frames rather than wait."""
    return spec == "webcam" or spec.startswith("webcam:") or spec.lower().startswith(STREAM_SCHEMES)


def check_live(spec: str) -> None:
    """Fail fast, without opening it, on a live source that cannot exist: a webcam index with no device node."""
    if spec == "webcam" or spec.startswith("webcam:"):
        _count(spec, 0, allow_zero=True)  # a bad number: its own one-line error
        error = missing_webcam(spec)
        if error:
            raise SourceError(error)


def dataset_arrays(spec: str, preprocess: Preprocess, labels: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A whole labelled split as arrays: (float32 (N, C, H, W), int64 (N,)), in file order.

    For idx:/fashion-mnist specs (vectorised when the size is native), synthetic[:N][:seed=S] (seed 0 unless
    named) and a labelled video file (its sidecar, or `labels`).
    """
    from ffstream.sources.idx import load_split
    from ffstream.sources.labelled_video import LabelledVideoSource
    from ffstream.sources.synthetic import SyntheticSource

    dataset = _dataset(spec)
    if dataset is not None and labels is None:
        images, labels = load_split(dataset[0], dataset[1])
        return preprocess.batch(images), labels
    if _is_video_file(spec):
        with open_source(spec, preprocess, labels=labels) as src:
            if not isinstance(src, LabelledVideoSource):
                raise SourceError(f"{spec} has no labels: put frame,label rows in {os.path.splitext(spec)[0]}.csv or name a file with --labels")
            return src.arrays()
    if labels is not None:
        raise SourceError(f"--labels labels a video file, and {spec!r} is not one (datasets and synthetic clips carry their own)")
    if spec == "synthetic" or spec.startswith("synthetic:"):
        frames, seed = _synthetic(spec)
        with SyntheticSource(preprocess, frames, seed=seed or 0) as src:
            x = np.empty((src.total, *preprocess.shape), dtype=np.float32)
            y = np.empty(src.total, dtype=np.int64)
            for frame in src:
                x[frame.index], y[frame.index] = frame.pixels, frame.label
        return x, y
    raise SourceError(
        f"no labelled arrays for {spec!r}: use idx:DIR[:split], fashion-mnist[:split], synthetic[:N][:seed=S] or a labelled video file"
    )


def _is_video_file(spec: str) -> bool:
    """A spec that names a file on disk (not a dataset directory, a device or a stream)."""
    return os.path.isfile(spec) and _dataset(spec) is None


def _synthetic(spec: str) -> tuple[int, int | None]:
    """synthetic[:N][:seed=S] -> (frames, the spec's seed or None); seed=S names a clip apart from the run's --seed."""
    match = SYNTHETIC_SPEC.fullmatch(spec)
    if match is None or int(match["frames"] or 1) == 0:
        raise SourceError(f"bad synthetic spec {spec!r}: expected synthetic[:N][:seed=S], N a positive integer, S a non-negative integer")
    from ffstream.sources.synthetic import DEFAULT_FRAMES

    frames = int(match["frames"]) if match["frames"] else DEFAULT_FRAMES
    return frames, int(match["seed"]) if match["seed"] else None


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
        from ffstream.sources.idx import FASHION_MNIST_DIR

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
