"""Frames of a video file, decoded with PyAV: every frame, in order, none dropped."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import av
import cv2
import numpy as np

from ffstream.sources.base import Frame, FrameSource, Position, SourceError
from ffstream.sources.preprocess import Preprocess

log = logging.getLogger(__name__)

MAX_DEMUX_ERRORS = 32  # read errors in a row after which the rest of the file counts as lost
# pixel formats whose first plane is 8-bit luma: the grey image, free, no swscale pass (~1 ms/frame at 768x576)
LUMA_FIRST_FORMATS = frozenset(
    ["yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv411p", "yuv410p", "nv12", "nv21"]
)
FULL_RANGE = 2  # AVCOL_RANGE_JPEG: luma already spans 0..255
# limited-range ("TV") luma spans 16..235; stretch it to 0..255 like swscale's grey conversion does
TV_TO_FULL = np.clip(np.round((np.arange(256) - 16) * 255 / 219), 0, 255).astype(np.uint8)


class VideoFileSource(FrameSource):
    """Decodes one video file, packet by packet, so that a corrupt packet costs one frame, not the rest.

    `epochs` replays the file; labels are None (`LabelledVideoSource` adds a sidecar's).
    """

    live = False

    def __init__(self, path: str | os.PathLike, preprocess: Preprocess, *, epochs: int = 1) -> None:
        if epochs <= 0:
            raise ValueError(f"epochs must be positive, got {epochs}")
        self.path = os.fspath(path)
        super().__init__(f"video:{os.path.basename(self.path)}", preprocess)
        self.epochs = epochs
        per_epoch = self._probe()
        self.bad_frames = 0  # the probe's skips are counted again when the frames are read
        self.frames_per_epoch = per_epoch  # header count or estimate; a damaged file may yield fewer
        self.total = per_epoch * epochs if per_epoch else None

    def _open(self) -> av.container.InputContainer:
        if not os.path.exists(self.path):
            raise SourceError(f"video file not found: {self.path}")
        if os.path.isdir(self.path):
            raise SourceError(f"expected a video file, got a directory: {self.path}")
        try:
            container = av.open(self.path, mode="r")
        except av.FFmpegError as e:
            reason = getattr(e, "strerror", None) or _one_line(e)
            raise SourceError(f"not a readable video file: {self.path} ({reason})") from None
        if not container.streams.video:
            container.close()
            raise SourceError(f"no video stream in {self.path}")
        stream = container.streams.video[0]
        if stream.codec_context is None:  # PyAV leaves it None when FFmpeg has no decoder for the codec
            codec = getattr(stream, "name", None) or "unknown"
            container.close()
            raise SourceError(f"unsupported video codec {codec!r} in {self.path}: this FFmpeg build cannot decode it")
        stream.thread_type = "AUTO"  # frame + slice threads: several times faster on HD video
        return container

    def _probe(self) -> int | None:
        """Check that the file opens and decodes; return its frame count (header, estimate or a packet count)."""
        with self._open() as container:
            stream = container.streams.video[0]
            self.frame_rate = float(stream.average_rate) if stream.average_rate else None  # frames/s; None if unknown
            if not any(True for _ in self._decode(container, stream, limit_frames=1)):
                raise SourceError(f"no decodable video frame in {self.path}")
            if stream.frames > 0:
                return int(stream.frames)
            if stream.average_rate:
                if stream.duration and stream.time_base:
                    return max(1, round(float(stream.duration * stream.time_base * stream.average_rate)))
                if container.duration:  # microseconds
                    return max(1, round(container.duration / 1e6 * float(stream.average_rate)))
        try:
            return self.count_packets() or None
        except SourceError:
            return None

    def identity(self) -> dict:
        """The file as it is now: another file, or this one rewritten, does not take this one's position."""
        st = os.stat(self.path)
        return {"kind": "video", "path": os.path.realpath(self.path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def _frames(self) -> Iterator[Frame]:
        start = self.start
        index = start.epoch * (self.frames_per_epoch or 0) + start.offset  # informative: a damaged file may yield fewer
        for epoch in range(start.epoch, self.epochs):
            skip = start.offset if epoch == start.epoch else 0
            with self._open() as container:
                for offset, frame in enumerate(self._decode(container, container.streams.video[0])):
                    if self._closed:
                        return
                    if offset < skip:
                        continue  # resuming: decoded (the codec needs the frames before) but not converted
                    self.position = Position(epoch, offset + 1)
                    image = frame.to_ndarray(format="rgb24") if self.preprocess.color else _grey(frame)
                    yield self._frame(image, self._label(offset), index)
                    index += 1

    def _label(self, offset: int) -> int | None:
        """The label of the offset-th decoded frame of a pass; a plain video has none."""
        return None

    def count_packets(self) -> int:
        """Frames in the file, counted exactly by demuxing (a packet per video frame) without decoding: cheap."""
        with self._open() as container:
            try:
                return sum(1 for p in container.demux(container.streams.video[0]) if p.size)
            except av.FFmpegError as e:
                raise SourceError(f"cannot count the frames of {self.path}: {_one_line(e)}") from None

    def _decode(self, container, stream, limit_frames: int | None = None) -> Iterator[av.VideoFrame]:
        """Yield decoded frames; a packet that fails to decode adds one to `bad_frames` and is skipped."""
        count = 0
        demux_errors = 0
        while demux_errors < MAX_DEMUX_ERRORS:
            packets = container.demux(stream)
            try:
                for packet in packets:
                    demux_errors = 0
                    try:
                        frames = packet.decode()
                    except av.FFmpegError as e:
                        self.bad_frames += 1
                        log.debug("%s: skipped a packet that failed to decode: %s", self.name, _one_line(e))
                        continue
                    for frame in frames:
                        yield frame
                        count += 1
                        if limit_frames is not None and count >= limit_frames:
                            return
                return  # demux ran to the end of the file
            except av.FFmpegError as e:
                # a read error ends PyAV's demux generator; a fresh one resumes after the damaged bytes
                demux_errors += 1
                self.bad_frames += 1
                log.debug("%s: read error, resuming: %s", self.name, _one_line(e))
        log.warning("%s: %d read errors in a row, stopping early", self.name, MAX_DEMUX_ERRORS)


def _grey(frame: av.VideoFrame) -> np.ndarray:
    """(H, W) uint8 grey image of a decoded frame."""
    name = frame.format.name
    if name not in LUMA_FIRST_FORMATS:
        return frame.to_ndarray(format="gray")
    plane = frame.planes[0]
    # rows are padded to line_size bytes; the view drops the padding
    rows = np.frombuffer(plane, dtype=np.uint8, count=frame.height * plane.line_size)
    luma = rows.reshape(frame.height, plane.line_size)[:, : frame.width]
    if name.startswith("yuvj") or frame.color_range == FULL_RANGE:
        return luma.copy()  # the frame's buffer is reused by the decoder
    return cv2.LUT(luma, TV_TO_FULL)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())
