"""Live frames from a webcam or network stream (RTSP/HTTP) through OpenCV: the latest frame wins.

A reader thread keeps calling `read()` and holds only the newest frame; a frame that is replaced
before the consumer took it is counted in `dropped`. A slow learner therefore trains on what the
camera sees now, never on a growing backlog.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Protocol

import cv2
import numpy as np

from ffstream.sources.base import Frame, FrameSource, SourceError
from ffstream.sources.preprocess import Preprocess

log = logging.getLogger(__name__)


class Capture(Protocol):
    """The part of `cv2.VideoCapture` this source uses; tests pass a fake."""

    def isOpened(self) -> bool: ...
    def read(self) -> tuple[bool, np.ndarray | None]: ...
    def release(self) -> None: ...


class CameraSource(FrameSource):
    live = True

    def __init__(
        self,
        target: int | str,  # webcam index, or an rtsp:// / http:// URL
        preprocess: Preprocess,
        *,
        capture_factory: Callable[[int | str], Capture] = cv2.VideoCapture,  # opens `target`
        poll_s: float = 0.1,  # how often a waiting consumer re-checks for close(), seconds
        join_timeout_s: float = 5.0,  # how long close() waits for the reader thread, seconds
    ) -> None:
        name = f"webcam:{target}" if isinstance(target, int) else str(target)
        super().__init__(name, preprocess)
        self.poll_s = poll_s
        self.join_timeout_s = join_timeout_s
        cap = capture_factory(target)
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            raise SourceError(f"cannot open {name}: no such device, or it is busy or unreachable")
        self._cap = cap
        self._cond = threading.Condition()
        self._latest: tuple[np.ndarray, float] | None = None  # (BGR or grey image, time.time() of capture)
        self._ended = False  # the reader stopped: end of stream, device lost, or close()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read_loop, name=f"capture {name}", daemon=True)
        self._thread.start()

    def _read_loop(self) -> None:
        """Runs in the reader thread, which owns the capture and releases it on the way out."""
        try:
            while not self._stop.is_set():
                try:
                    ok, image = self._cap.read()
                except cv2.error as e:
                    log.warning("%s: read failed: %s", self.name, e)
                    ok, image = False, None
                if not ok or image is None:
                    # webcams do not recover from a failed read and OpenCV's RTSP reader does not
                    # reconnect, so the first failure ends the stream
                    log.info("%s: stream ended", self.name)
                    return
                captured = time.time()
                with self._cond:
                    if self._latest is not None:
                        self.dropped += 1
                    self._latest = (image, captured)
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()
            # released here, not in close(): releasing while another thread is inside read() can crash
            self._cap.release()

    def _frames(self) -> Iterator[Frame]:
        index = 0
        while True:
            with self._cond:
                while self._latest is None and not self._ended and not self._closed:
                    self._cond.wait(timeout=self.poll_s)  # close() notifies; the timeout is a safety net
                if self._closed or self._latest is None:
                    return
                image, captured = self._latest
                self._latest = None
            yield self._frame(self._to_rgb_or_grey(image), None, index, captured)
            index += 1

    def _to_rgb_or_grey(self, image: np.ndarray) -> np.ndarray:
        """OpenCV gives BGR; Preprocess wants RGB or grey. Converting straight to grey saves a pass."""
        if image.ndim == 2:
            return image
        code = cv2.COLOR_BGR2RGB if self.preprocess.color else cv2.COLOR_BGR2GRAY
        return cv2.cvtColor(image, code)

    def _release(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(self.join_timeout_s)
        if self._thread.is_alive():
            # stuck in a blocking read (a stalled RTSP server); it releases the capture when read() returns
            log.warning("%s: reader still blocked after %.1fs; it exits on its own", self.name, self.join_timeout_s)
