"""The monitor's HTTP side holds out: idle and non-reading clients are dropped, connections are capped, a token is asked.

Real servers on free ports (port 0), real client sockets; every wait is a poll with a deadline.
"""

from __future__ import annotations

import base64
import socket
import time
import urllib.error
import urllib.request

import pytest

from ffstream.config import load
from ffstream.monitor.web.board import Board
from ffstream.monitor.web.server import DashboardServer
from ffstream.workers.build import build_worker
from tests.processes import eventually

DEADLINE_S = 15.0


@pytest.fixture
def serve():
    """serve(**kwargs) -> a started DashboardServer on 127.0.0.1, port 0; all closed at teardown."""
    made: list[DashboardServer] = []

    def make(**kwargs) -> DashboardServer:
        server = DashboardServer("http://127.0.0.1:0", Board(), **kwargs).start()
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


def connect(server: DashboardServer, rcvbuf: int | None = None) -> socket.socket:
    host, port = server.httpd.server_address[:2]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: the window stays small
    sock.settimeout(DEADLINE_S)
    sock.connect((host, port))
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection (fails the test at DEADLINE_S, by the socket's timeout)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def status(server: DashboardServer, path: str, headers: dict | None = None) -> int:
    request = urllib.request.Request(server.url + path.lstrip("/"), headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=DEADLINE_S) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_an_idle_client_is_closed_after_the_request_timeout(serve):
    server = serve(request_timeout_s=0.5)
    with connect(server) as idle:
        started = time.monotonic()
        idle.sendall(b"GET /metrics HTTP/1.1\r\n")  # half a request, then nothing
        assert read_all(idle) == b""  # closed by the server, not by our own timeout (which would raise)
        assert time.monotonic() - started < DEADLINE_S
    assert status(server, "/metrics") == 200  # the server is still serving


def test_an_event_stream_that_is_not_read_is_dropped_after_the_send_timeout(serve):
    server = serve(send_timeout_s=0.5)
    board = server.board
    with connect(server, rcvbuf=4096) as stalled:
        stalled.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while b"retry: 2000" not in received:  # the stream is open
            received += stalled.recv(4096)
        # From now on never read: 8 MB of events overfill the kernel buffers, the server's write blocks, and after
        # 0.5 s it gives up and closes the stream.
        for _ in range(40):
            board.put_metrics("layer1", time.time(), {"padding": "x" * 200_000})
        eventually(lambda: server.httpd.dropped_streams >= 1, DEADLINE_S, "the stalled event stream to be dropped")
        received += read_all(stalled)  # what was buffered, then the end: the server closed its side
        assert received.startswith(b"HTTP/1.0 200 ") and b"event: metrics" in received


def test_over_the_connection_cap_new_clients_get_503_at_once(serve):
    server = serve(max_connections=2, request_timeout_s=DEADLINE_S)
    holders = [connect(server) for _ in range(2)]
    try:
        for sock in holders:
            sock.sendall(b"GET /metrics HTTP/1.1\r\n")  # incomplete: each holds its thread
        deadline = time.monotonic() + DEADLINE_S
        answers = []
        while not answers or b" 503 " not in answers[-1]:  # the accepting thread may not have seen both holders yet
            assert time.monotonic() < deadline, answers
            with connect(server) as extra:
                answers.append(read_all(extra))  # the server answers and closes without being asked anything
        assert answers[-1].startswith(b"HTTP/1.1 503 ") and b"too many connections" in answers[-1]
        assert server.httpd.refused >= 1
    finally:
        for sock in holders:
            sock.close()
    deadline = time.monotonic() + DEADLINE_S
    while status(server, "/metrics") != 200:  # the slots come back once the holders are gone
        assert time.monotonic() < deadline, "the connection slots never came back"


def test_the_token_is_asked_on_every_path_but_static_files(serve):
    server = serve(token="s3cret")
    for path in ("/", "/events", "/metrics", "/api/latest", "/receptive-fields.png"):
        assert status(server, path) == 401, path
        assert status(server, path, {"Authorization": "Bearer wrong"}) == 401, path
    assert status(server, "/static/index.html") == 200
    good = {"Authorization": "Bearer s3cret"}
    assert status(server, "/metrics", good) == 200
    assert status(server, "/api/latest", good) == 200
    assert status(server, "/", good) == 200
    basic = base64.b64encode(b"anyone:s3cret").decode()
    assert status(server, "/metrics", {"Authorization": f"Basic {basic}"}) == 200  # what a browser sends after its prompt
    assert status(server, "/metrics", {"Authorization": "Basic !!notbase64"}) == 401
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(server.url + "metrics", timeout=DEADLINE_S)
    assert "Bearer" in info.value.headers["WWW-Authenticate"]


def test_without_a_token_nothing_is_asked(serve):
    server = serve()
    assert status(server, "/metrics") == 200 and status(server, "/api/latest") == 200


def test_the_token_comes_from_the_config_to_the_monitor():
    cfg = load(environ={"FFSTREAM_SECURITY_HTTP_TOKEN": "t0ken", "FFSTREAM_MODEL_LAYERS": "8"})
    assert cfg.security.http_token == "t0ken"
    worker = build_worker("monitor", cfg)
    try:
        assert worker.http_token == "t0ken"
    finally:
        worker.close()
