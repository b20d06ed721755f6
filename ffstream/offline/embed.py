"""Features out of a trained stack (`ffstream embed`): each frame's normalised activity, saved as .npy or .npz.

    ffstream embed --source clip.mp4 --checkpoint-dir ck --out feats.npz --layer all

.npy holds the features alone, float32 (N, F). .npz holds `features`, `frame` (int64 index in the stream), `time_s`
(float64 seconds) and, when the source has labels, `label` (int64); np.load reads both, no pickle needed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # api imports this module; the Stack is only a type here
    from ffstream.offline.api import Stack

FORMATS = (".npy", ".npz")


@dataclass
class Embedding:
    """Features of a source's frames, in stream order, with what identifies each frame."""

    features: np.ndarray  # float32 (N, F): the chosen layers' readout features side by side, bottom up
    frame: np.ndarray  # int64 (N,): each frame's 0-based index in the stream
    time_s: np.ndarray  # float64 (N,): seconds from the start (the index when the frame rate is unknown)
    label: np.ndarray | None  # int64 (N,): each frame's class; None when the source has no labels


def check_out(path: str | os.PathLike) -> None:
    """ValueError unless `path` ends in .npy or .npz (checked before any work)."""
    if os.path.splitext(os.fspath(path))[1].lower() not in FORMATS:
        raise ValueError(f"--out must end in .npy (features only) or .npz (features, frame, time_s, label), got {os.fspath(path)!r}")


def embed_source(stack: Stack, spec: str, layer: int | Sequence[int] | None = None, max_frames: int | None = None,
                 labels: str | None = None) -> Embedding:
    """Every frame of a source (up to max_frames), one batch at a time, through `stack.embed`."""
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]] = []
    for batch in stack.iter_source(spec, max_frames, labels=labels):
        parts.append((stack.embed(batch.pixels, layer), batch.frames, batch.times, batch.labels))
    if not parts:
        raise ValueError(f"no frames in {spec}")
    labelled = parts[0][3] is not None
    return Embedding(
        features=np.concatenate([p[0] for p in parts]),
        frame=np.concatenate([p[1] for p in parts]),
        time_s=np.concatenate([p[2] for p in parts]),
        label=np.concatenate([p[3] for p in parts]) if labelled else None,
    )


def write(embedding: Embedding, path: str | os.PathLike) -> None:
    """.npy: the features; .npz: features, frame, time_s and label (when there are labels), uncompressed."""
    check_out(path)
    if os.fspath(path).lower().endswith(".npy"):
        np.save(path, embedding.features)
        return
    arrays = {"features": embedding.features, "frame": embedding.frame, "time_s": embedding.time_s}
    if embedding.label is not None:
        arrays["label"] = embedding.label
    np.savez(path, **arrays)
