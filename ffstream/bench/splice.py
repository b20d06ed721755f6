"""A spliced video for the novelty benchmark: a training video with clips of other footage inserted at known frames.

    base = the training video, looped `loops` times          (N·loops frames)
    inserts: `count` clips of `length` frames, evenly spaced after `lead` frames, each from the next foreign source
             in turn (a repeat of a source takes its next `length` frames, so no clip is shown twice)

Every frame is resized to one size and written with PyAV, so the inserts differ from the training footage in what
they show, not in their resolution or codec. "synthetic" names ffstream's moving shapes (`ffstream.sources.synthetic`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import av
import cv2
import numpy as np

SYNTHETIC = "synthetic"
CODECS = ("mpeg4", "mjpeg")  # the first PyAV has: mpeg4 in every FFmpeg build we know of, mjpeg as a fallback
BIT_RATE = 4_000_000  # bits/s: high enough that block artefacts do not set the inserts apart


@dataclass(frozen=True)
class Insert:
    name: str  # the foreign source: a file's base name, or "synthetic"
    start: int  # first frame of the insert in the spliced video, 0-based
    length: int  # frames

    @property
    def end(self) -> int:
        return self.start + self.length  # one past the last


def read_frames(path: str, size: tuple[int, int], limit: int | None = None, skip: int = 0) -> np.ndarray:
    """Frames of a video file as uint8 RGB (N, H, W, 3) at size (H, W), after skipping `skip`, at most `limit`."""
    out: list[np.ndarray] = []
    with av.open(path) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i < skip:
                continue
            if limit is not None and len(out) >= limit:
                break
            out.append(cv2.resize(frame.to_ndarray(format="rgb24"), (size[1], size[0]), interpolation=cv2.INTER_AREA))
    if not out:
        raise ValueError(f"no frames in {path} after frame {skip}")
    return np.stack(out)


def synthetic_frames(n: int, size: tuple[int, int], skip: int = 0, seed: int = 7) -> np.ndarray:
    """n frames of ffstream's moving shapes in colour, uint8 RGB (n, H, W, 3)."""
    from ffstream.sources import Preprocess
    from ffstream.sources.synthetic import SyntheticSource

    out = np.empty((n, *size, 3), np.uint8)
    with SyntheticSource(Preprocess(size=size, color=True, scale=1.0), frames=skip + n, seed=seed) as src:
        for frame in src:
            if frame.index >= skip:
                out[frame.index - skip] = np.clip(frame.pixels.transpose(1, 2, 0), 0, 255).astype(np.uint8)
    return out


def foreign_clip(name: str, n: int, size: tuple[int, int], skip: int) -> np.ndarray:
    """n frames of a foreign source from frame `skip` on, looping a file that is shorter."""
    if name == SYNTHETIC:
        return synthetic_frames(n, size, skip)
    frames = read_frames(name, size)
    return frames[(skip + np.arange(n)) % len(frames)]


def plan_inserts(base_frames: int, foreign: tuple[str, ...], count: int, length: int, lead: int) -> list[Insert]:
    """Where each insert goes: evenly spaced over the base after `lead` frames, foreign sources taken in turn."""
    if count < 1 or length < 1:
        raise ValueError(f"need at least one insert of at least one frame, got {count} of {length}")
    gap = (base_frames - lead) // count  # base frames between one insert's start and the next's
    if gap < 2 * length:
        raise ValueError(f"{count} inserts of {length} frames do not fit {base_frames} frames after {lead}: make fewer or shorter")
    inserts, shown = [], 0
    for k in range(count):
        at = lead + k * gap + shown  # in the spliced video: base frames before it plus the inserts already placed
        inserts.append(Insert(os.path.basename(foreign[k % len(foreign)]) if foreign[k % len(foreign)] != SYNTHETIC else SYNTHETIC,
                              at, length))
        shown += length
    return inserts


def write_spliced(path: str, video: str, foreign: tuple[str, ...], *, size: tuple[int, int], loops: int = 2,
                  count: int = 6, length: int = 50, lead: int = 200, max_frames: int | None = None) -> tuple[list[Insert], int]:
    """Write the spliced video to `path` (mp4 or avi by its name); returns the inserts and the frames written.
    max_frames: use only the first N frames of `video` (quick runs); count 0: no inserts (a re-encoded copy)."""
    base = read_frames(video, size, limit=max_frames)
    base = np.concatenate([base] * loops)
    inserts = plan_inserts(len(base), foreign, count, length, lead) if count else []
    codec = next((c for c in CODECS if c in av.codecs_available), None)
    if codec is None:
        raise RuntimeError(f"PyAV has none of the encoders {', '.join(CODECS)}")
    written, taken = 0, 0  # frames written, base frames used
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height = size[1], size[0]
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        stream.bit_rate = BIT_RATE

        def put(frames: np.ndarray) -> None:
            nonlocal written
            for img in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")))
                written += 1

        for k, ins in enumerate(inserts):
            upto = ins.start - (written - taken)  # base frames that come before this insert
            put(base[taken:upto])
            taken = upto
            source = foreign[k % len(foreign)]
            put(foreign_clip(source, length, size, skip=(k // len(foreign)) * length))
        put(base[taken:])
        container.mux(stream.encode(None))
    return inserts, written
