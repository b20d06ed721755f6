"""Shared test fixtures, after pyzmq's own tests/conftest.py (STYLE.md 8).

- tests/ is a package, so that pytest puts the repository root on sys.path: the tests run from a checkout
  without installing the package, and import their helper modules as `tests.rig`, `tests.processes`,
  `tests.media` (no test module imports another);
- `zmq_context` terminates in teardown and FAILS the test if it cannot
  (a socket left open with pending messages), instead of hanging;
- `socket` is a factory whose sockets are all closed with linger 0;
- `start_layer` starts a layer worker in a thread with a test socket on each of its ends
  (`recv_multipart(sock, timeout)`, in tests/rig.py, fails the test instead of waiting forever).
"""

from __future__ import annotations

import contextlib
import threading

import pytest
import zmq

from ffstream.config.plans import Batching, LayerEndpoints
from ffstream.ff import LayerConfig
from ffstream.workers.layer import LayerWorker
from tests.rig import LAYER, ROWS, LayerRig, running, unique

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


@pytest.fixture
def start_layer(zmq_context, socket):
    """start_layer(**LayerWorker kwargs) -> a LayerRig whose worker runs in a thread, answered one snapshot."""
    with contextlib.ExitStack() as stack:

        def start(config: LayerConfig = LAYER, negative_output: str | None = None, **kwargs) -> LayerRig:
            ep = LayerEndpoints(unique("in"), unique("out"), unique("neg"), unique("snap"), negative_output)
            socks = {}
            for name, kind, addr in (("input", zmq.PUSH, ep.input), ("output", zmq.PULL, ep.output),
                                     ("negative", zmq.PUSH, ep.negative), ("snapshot", zmq.REQ, ep.snapshot)):
                sock = socket(kind)
                sock.setsockopt(zmq.SNDTIMEO, 5000)  # a send with nobody to take it fails the test, not hangs it
                if name == "output":
                    sock.bind(addr)  # the layer connects its output, as it does to the next layer's input
                else:
                    sock.connect(addr)
                socks[name] = sock
            kwargs.setdefault("batching", Batching(max_rows=ROWS))  # one message, one step: easy to replay
            worker = LayerWorker(1, config, ep, context=zmq_context, **kwargs)
            stack.enter_context(running(worker))
            rig = LayerRig(worker, ep, **socks)
            # The handshake: a snapshot reply means every socket is bound and the loop is polling.
            assert rig.ask_snapshot().kind == "snapshot"
            return rig

        yield start
