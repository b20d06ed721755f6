"""A camera stand-in: the built-in shapes served as MJPEG over HTTP at a fixed frame rate, as an IP camera serves them.

`ffstream run --source http://127.0.0.1:PORT/` then reads it through OpenCV like any network camera, so live-source
latency can be measured without a camera (benchmarks/live_latency.py, tests/test_live_default.py).

    >>> with MjpegServer(fps=15) as cam:        # doctest: +SKIP
    ...     print(cam.url)                      # http://127.0.0.1:PORT/
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2

from ffstream.sources import Preprocess
from ffstream.sources.synthetic import SyntheticSource

BOUNDARY = "ffstreamframe"


class MjpegServer:
    """Serves `frames` frames of the shapes clip (size x size, colour) at `fps` to each client, then ends the stream."""

    def __init__(self, fps: float = 15.0, frames: int = 100_000, size: int = 64, seed: int = 0, host: str = "127.0.0.1"):
        self.fps = fps  # frames per second sent to each client
        self.frames = frames  # frames per client, then the response ends (the camera "unplugged")
        self.size = size  # pixels, square
        self.seed = seed  # of the shapes clip
        self.served = 0  # frames sent, all clients
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                try:
                    server._stream(self.wfile)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client left

            def log_message(self, *args) -> None:
                pass  # quiet: a benchmark's output is its figures

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}/"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="mjpeg", daemon=True)

    def _stream(self, out) -> None:
        """JPEG parts at the frame rate, each paced from the start (a slow write is caught up, not accumulated)."""
        started = time.monotonic()
        with SyntheticSource(Preprocess(size=(self.size, self.size), color=True, scale=1.0), self.frames, seed=self.seed) as src:
            for i, frame in enumerate(src):
                wait = started + i / self.fps - time.monotonic()
                if wait > 0:
                    time.sleep(wait)  # pacing a stand-in camera, not waiting for a peer
                rgb = frame.pixels.transpose(1, 2, 0).clip(0, 255).astype("uint8")  # (C, H, W) 0..255 -> (H, W, 3)
                ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                if not ok:
                    continue
                data = jpeg.tobytes()
                out.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n".encode())
                out.write(data + b"\r\n")
                out.flush()
                self.served += 1

    def __enter__(self) -> MjpegServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)
