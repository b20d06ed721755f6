"""The monitor's HTTP side: the dashboard page, its live event stream, the receptive fields and /metrics.

    GET /                       the dashboard (static/index.html, with its script and styles from /static/)
    GET /events                 Server-Sent Events: "metrics" (one worker's metrics), "preview" (new receptive fields), "alert" (novelty)
    GET /receptive-fields.png   layer 1's weights as image tiles (404 until layer 1 has sent one)
    GET /metrics                Prometheus text exposition
    GET /api/latest             every worker's latest metrics as one JSON object

The standard library's ThreadingHTTPServer, in a thread of the monitor process: one thread per
request, so a page holding its event stream open does not block a Prometheus scrape. What a client can hold is
bounded: a request must arrive within request_timeout_s, an event stream the client does not read is dropped after
send_timeout_s, and over max_connections open connections a new one gets 503 at once, without a thread.

With a token (security.http_token), every path but the page's static files needs `Authorization: Bearer TOKEN`
(Prometheus: `authorization: {credentials: TOKEN}`), or HTTP Basic with TOKEN as the password, which a browser asks
for once and then sends with every request of the page, its event stream included; anything else gets 401.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import urlsplit

from ffstream.monitor import prometheus
from ffstream.monitor.web.board import Board

log = logging.getLogger("ffstream.monitor.web")

MAX_STREAMS = 16  # event streams open at once; more get 503, so that pages cannot pile up threads
MAX_CONNECTIONS = 64  # connections (threads) open at once; more are answered 503 and closed without a thread
REQUEST_TIMEOUT_S = 10.0  # a client must send its whole request within this long, else its connection is closed
SEND_TIMEOUT_S = 10.0  # an event stream whose client has not taken a write within this long is dropped
KEEPALIVE_S = 15.0  # an SSE comment after this long without events, so proxies keep the stream open
WAIT_S = 1.0  # how long a stream waits for events before it looks at the stop flag again
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


def parse_address(address: str) -> tuple[str, int]:
    """http://host:port, or host:port -> (host, port); host "*" binds every interface, port 0 any free port."""
    parts = urlsplit(address if "://" in address else f"http://{address}")
    if parts.scheme != "http" or parts.port is None or parts.path not in ("", "/"):
        raise ValueError(f"expected an address like http://127.0.0.1:5572, got {address!r}")
    host = parts.hostname or ""
    return ("" if host == "*" else host), parts.port


def static_files() -> dict[str, bytes]:
    """The page's files, read once from the package (they ship as package data: no CDN, works offline)."""
    folder = resources.files("ffstream.monitor.web") / "static"
    return {f.name: f.read_bytes() for f in folder.iterdir() if f.is_file() and f.name.endswith(tuple(STATIC_TYPES))}


BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 26\r\n"
        b"Retry-After: 5\r\nConnection: close\r\n\r\ntoo many connections open\n")


class CappedHTTPServer(ThreadingHTTPServer):
    """A thread per connection, at most max_connections at once; the one over answers 503 from the accepting thread."""

    daemon_threads = True  # a stuck client cannot hold the monitor open at exit

    def __init__(self, address: tuple[str, int], max_connections: int):
        super().__init__(address, Handler)  # OSError when the port is taken
        self.slots = threading.BoundedSemaphore(max_connections)
        self.refused = 0  # connections answered 503 because max_connections were open
        self.dropped_streams = 0  # event streams dropped because their client took nothing for send_timeout_s

    def process_request(self, request: socket.socket, client_address) -> None:
        if not self.slots.acquire(blocking=False):
            self.refused += 1
            try:
                request.settimeout(1.0)  # this is the accepting thread: a client that does not read cannot stall it
                request.sendall(BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()  # no thread started: its slot is free again
            raise

    def process_request_thread(self, request: socket.socket, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class DashboardServer:
    """Serves a Board over HTTP from a background thread until close()."""

    def __init__(self, address: str, board: Board, *, token: str | None = None, request_timeout_s: float = REQUEST_TIMEOUT_S,
                 send_timeout_s: float = SEND_TIMEOUT_S, max_connections: int = MAX_CONNECTIONS):
        host, port = parse_address(address)
        self.board = board
        self.httpd = CappedHTTPServer((host, port), max_connections)
        self.httpd.board = board
        self.httpd.token = token or None  # None or "": no authorisation asked
        self.httpd.request_timeout_s = request_timeout_s
        self.httpd.send_timeout_s = send_timeout_s
        self.httpd.files = static_files()
        self.httpd.streams = threading.BoundedSemaphore(MAX_STREAMS)
        self.httpd.stopping = threading.Event()
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.5}, name="ffstream-web", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}/"

    def start(self) -> "DashboardServer":
        self._thread.start()
        return self

    def close(self) -> None:
        self.httpd.stopping.set()
        self.board.close()  # wakes the event streams, which then end
        if self._thread.is_alive():
            self.httpd.shutdown()
        self.httpd.server_close()


class Handler(BaseHTTPRequestHandler):
    server_version = "ffstream"

    def setup(self) -> None:
        self.timeout = self.server.request_timeout_s  # StreamRequestHandler sets it on the socket: reads and writes
        super().setup()

    def do_GET(self) -> None:  # noqa: N802 (the http.server name)
        path = urlsplit(self.path).path
        board: Board = self.server.board
        if not path.startswith("/static/") and not self._authorised():
            self.send_response(HTTPStatus.UNAUTHORIZED)
            self.send_header("WWW-Authenticate", 'Bearer realm="ffstream", Basic realm="ffstream"')
            body = b"unauthorised: send Authorization: Bearer TOKEN (security.http_token)\n"
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if path in ("/", "/index.html"):
            self._static("index.html")
        elif path.startswith("/static/"):
            self._static(path[len("/static/") :])
        elif path == "/metrics":
            latest, ages = board.snapshot()
            self._send(HTTPStatus.OK, prometheus.CONTENT_TYPE, prometheus.render(latest, ages).encode())
        elif path == "/events":
            self._events()
        elif path == "/receptive-fields.png":
            png = board.preview_png
            if png is None:
                self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"no receptive fields yet: layer 1 sends them every few seconds\n")
            else:
                self._send(HTTPStatus.OK, "image/png", png)
        elif path == "/api/latest":
            latest, ages = board.snapshot()
            body = json.dumps({"workers": latest, "age_s": ages, "preview_version": board.preview_version}).encode()
            self._send(HTTPStatus.OK, "application/json", body)
        else:
            self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n")

    def _authorised(self) -> bool:
        """No token configured, or the request carries it: as a Bearer token, or as the password of HTTP Basic."""
        token = self.server.token
        if token is None:
            return True
        scheme, _, value = (self.headers.get("Authorization") or "").strip().partition(" ")
        if scheme.lower() == "basic":
            try:
                value = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                return False
        elif scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(value.strip().encode(), token.encode())  # in constant time: no guessing by timing

    def _static(self, name: str) -> None:
        body = self.server.files.get(name)  # only files that ship with the package: no path is ever opened
        if body is None:
            self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n")
        else:
            self._send(HTTPStatus.OK, STATIC_TYPES["." + name.rsplit(".", 1)[-1]], body)

    def _send(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _events(self) -> None:
        if not self.server.streams.acquire(blocking=False):
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", b"too many event streams open\n")
            return
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.connection.settimeout(self.server.send_timeout_s)  # a client that stops reading is dropped
            self._stream(_last_event_id(self.headers.get("Last-Event-ID")))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the page went away
        except TimeoutError:
            self.close_connection = True
            self.server.dropped_streams += 1
            log.info("dropped an event stream to %s: it took no data for %.0f s", self.address_string(), self.server.send_timeout_s)
        finally:
            self.server.streams.release()

    def _stream(self, seq: int) -> None:
        board: Board = self.server.board
        self.wfile.write(b"retry: 2000\n\n")  # the browser reconnects 2 s after a drop, and sends Last-Event-ID
        self.wfile.flush()
        quiet = 0.0
        while not self.server.stopping.is_set() and not board.closed:
            events = board.events_after(seq, WAIT_S)
            if events:
                seq = events[-1].seq
                self.wfile.write(b"".join(f"id: {e.seq}\nevent: {e.name}\ndata: {e.data}\n\n".encode() for e in events))
                quiet = 0.0
            else:
                quiet += WAIT_S
                if quiet < KEEPALIVE_S:
                    continue
                self.wfile.write(b": keepalive\n\n")
                quiet = 0.0
            self.wfile.flush()

    def log_message(self, fmt: str, *args) -> None:
        log.debug("%s %s", self.address_string(), fmt % args)


def _last_event_id(value: str | None) -> int:
    try:
        return max(0, int(value or 0))
    except ValueError:
        return 0
