"""Shared test fixtures, after pyzmq's own tests/conftest.py (STYLE.md 8).

- the repository root goes on sys.path, so the tests run from a checkout
  without installing the package;
- `zmq_context` terminates in teardown and FAILS the test if it cannot
  (a socket left open with pending messages), instead of hanging;
- `socket` is a factory whose sockets are all closed with linger 0;
- `recv_multipart(sock, timeout)` fails the test instead of waiting forever.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest
import zmq

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RECV_TIMEOUT_S = 5.0  # longest any test waits for one message before it fails
TERM_TIMEOUT_S = 5.0  # longest a context may take to terminate in teardown


@pytest.fixture
def zmq_context():
    ctx = zmq.Context()
    yield ctx
    # term() blocks while any socket is open; run it aside so a leak fails instead of hanging the run.
    done = threading.Event()
    t = threading.Thread(target=lambda: (ctx.term(), done.set()), daemon=True)
    t.start()
    if not done.wait(TERM_TIMEOUT_S):
        pytest.fail(f"zmq context did not terminate within {TERM_TIMEOUT_S}s: a socket was left open")


@pytest.fixture
def socket(zmq_context):
    """socket(zmq.PAIR) -> a socket of zmq_context, closed with linger 0 at teardown."""
    made = []

    def make(kind):
        sock = zmq_context.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        made.append(sock)
        return sock

    yield make
    for sock in made:
        sock.close(linger=0)


def recv_multipart(sock, timeout: float = RECV_TIMEOUT_S, copy: bool = True) -> list:
    """Receive one multipart message, or fail the test after `timeout` seconds."""
    if not sock.poll(int(timeout * 1000), zmq.POLLIN):
        pytest.fail(f"no message within {timeout}s")
    return sock.recv_multipart(copy=copy)
