"""Per-frame labels of a video, from a CSV sidecar: a header line `frame,label`, then one row per frame.

    frame,label
    0,2
    1,2
    2,0

`frame` is the 0-based index of the frame in decode order, `label` a non-negative integer class. Every frame of
the video needs its label: rows for frames 0, 1, 2, ... in order, none missing, none repeated, exactly as many as
the video has frames. A sidecar that is shorter or longer than its video most likely belongs to another cut of it,
and training a probe on shifted labels would fail silently, so that is an error, not unlabelled frames.

A sidecar beside the video with the same stem (`clip.mp4`, `clip.csv`) is found by itself (`sidecar_for`).
"""

from __future__ import annotations

import os

import numpy as np

from ffstream.sources.base import SourceError

HEADER = ("frame", "label")
SUFFIX = ".csv"


def sidecar_for(video: str | os.PathLike) -> str | None:
    """The same-stem CSV beside a video file, if there is one (`clip.mp4` -> `clip.csv`)."""
    stem, ext = os.path.splitext(os.fspath(video))
    if ext.lower() == SUFFIX:
        return None  # the video itself is called .csv: it cannot be its own sidecar
    path = stem + SUFFIX
    return path if os.path.isfile(path) else None


def read_sidecar(path: str | os.PathLike) -> np.ndarray:
    """The labels of frames 0..N-1: int64 (N,). SourceError naming the file and line on anything malformed."""
    path = os.fspath(path)
    name = os.path.basename(path)
    try:
        with open(path, encoding="utf-8-sig") as f:  # -sig: a spreadsheet's byte-order mark is not part of the header
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise SourceError(f"label file not found: {path}") from None
    except IsADirectoryError:
        raise SourceError(f"expected a label CSV file, got a directory: {path}") from None
    except UnicodeDecodeError:
        raise SourceError(f"{name}: not a text CSV file (expected a header line 'frame,label')") from None
    if not lines or tuple(cell.strip().lower() for cell in lines[0].split(",")) != HEADER:
        first = lines[0][:40] if lines else ""
        raise SourceError(f"{name}: the first line must be the header 'frame,label', got {first!r}")
    labels: list[int] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue  # blank lines (a trailing newline, a spreadsheet's empty rows) carry nothing
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) != 2:
            raise SourceError(f"{name} line {number}: expected 'frame,label', got {line[:40]!r}")
        frame, label = (_non_negative(cell) for cell in cells)
        if frame is None:
            raise SourceError(f"{name} line {number}: frame {cells[0][:20]!r} is not a non-negative integer")
        if label is None:
            raise SourceError(f"{name} line {number}: label {cells[1][:20]!r} is not a non-negative integer class")
        expected = len(labels)
        if frame < expected:
            what = "repeated" if frame == expected - 1 else f"out of order (after frame {expected - 1})"
            raise SourceError(f"{name} line {number}: frame {frame} is {what}; frames must be 0, 1, 2, ... in decode order")
        if frame > expected:
            missing = f"frame {expected}" if frame == expected + 1 else f"frames {expected}..{frame - 1}"
            raise SourceError(f"{name} line {number}: frame {frame} skips {missing}; every frame needs a label")
        labels.append(label)
    if not labels:
        raise SourceError(f"{name}: no labelled frames after the header")
    return np.asarray(labels, dtype=np.int64)


def _non_negative(text: str) -> int | None:
    """int of a plain decimal such as '12' (no sign, no '1.0'); None when it is anything else."""
    return int(text) if text.isascii() and text.isdigit() else None
