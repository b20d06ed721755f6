"""Test media written by hand: IDX datasets and short PyAV-encoded clips (independent of the readers under test)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import av
import numpy as np
import pytest


def write_idx(path, array: np.ndarray, gz: bool = False) -> None:
    """Write an IDX file by hand (independent of the reader): magic 0,0,type,ndim then big-endian dims."""
    type_byte = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C}[array.dtype]
    header = struct.pack(">BBBB", 0, 0, type_byte, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    blob = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(blob)


def make_idx_dir(directory, n=12, h=5, w=7, gz=False, prefix="train", seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, h, w), dtype=np.uint8)
    labels = (np.arange(n) % 3).astype(np.uint8)
    ext = ".gz" if gz else ""
    write_idx(directory / f"{prefix}-images-idx3-ubyte{ext}", images, gz)
    write_idx(directory / f"{prefix}-labels-idx1-ubyte{ext}", labels, gz)
    return images, labels


def pick_encoder() -> str:
    for codec in ("mpeg4", "ffv1", "mjpeg"):
        if codec in av.codecs_available:
            return codec
    pytest.skip("PyAV has none of the encoders mpeg4, ffv1, mjpeg")


def clip_frame(i: int, h: int = 48, w: int = 64) -> np.ndarray:
    """Frame i of the test clip: a horizontal gradient with a white square moving right, (h, w, 3) RGB."""
    img = np.empty((h, w, 3), np.uint8)
    img[:] = np.linspace(0, 200, w, dtype=np.uint8)[None, :, None]
    img[10:26, i : i + 16] = 255
    return img


def write_video(path, n: int = 40, codec: str | None = None) -> list[np.ndarray]:
    """Encode n clip frames with PyAV; returns the RGB frames written."""
    codec = codec or pick_encoder()
    frames = [clip_frame(i) for i in range(n)]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height = 64, 48
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 4_000_000  # high enough that the content survives the lossy codecs
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():  # flush
            container.mux(packet)
    return frames


def write_labels(path: Path, labels, header: str = "frame,label") -> Path:
    """A video's label sidecar: `frame,label` rows, frame i labelled labels[i]."""
    path.write_text(header + "\n" + "".join(f"{i},{label}\n" for i, label in enumerate(labels)))
    return path


class MjpegCamera:
    """A mock network camera: an HTTP server on a free loopback port that streams the test clip's frames as MJPEG
    (multipart/x-mixed-replace JPEGs, as IP cameras serve them), read by OpenCV's real http:// capture. It stands in
    for a webcam or RTSP camera, which a test machine has none of.

    >>> with MjpegCamera() as camera:   # doctest: +SKIP
    ...     camera.url, camera.served   # http://127.0.0.1:PORT/stream.mjpg, frames sent so far
    """

    def __init__(self, fps: float = 50.0):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        import cv2

        camera = self
        self.served = 0  # frames written to any client so far
        self._stop = threading.Event()

        class Stream(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 (the http.server name)
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                try:
                    while not camera._stop.is_set():
                        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(clip_frame(i % 48), cv2.COLOR_RGB2BGR))
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                                         + jpeg.tobytes() + b"\r\n")
                        camera.served += 1
                        i += 1
                        camera._stop.wait(1 / fps)  # a camera's frame rate
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the reader went away

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Stream)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/stream.mjpg"

    def __enter__(self) -> "MjpegCamera":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
