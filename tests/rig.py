"""The peers a test plays around one worker: test messages, a worker run in a thread, receives that fail instead
of hanging, and sources whose frames are easy to follow downstream. The fixtures that use them are in conftest.py."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest
import zmq

from ffstream.config.plans import Batching, LayerEndpoints
from ffstream.ff import FFLayer, LayerConfig
from ffstream.net import wire
from ffstream.sources import FrameSource, Preprocess
from ffstream.sources.base import Frame
from ffstream.workers.layer import LayerWorker, choose

RECV_TIMEOUT_S = 5.0  # longest any test waits for one message before it fails
LAYER = LayerConfig(in_features=16, width=8, lr=0.01, seed=1)  # frames are (1, 4, 4): 16 inputs
ROWS = 4  # rows per test message
JOIN_S = 5.0  # how long a stopped worker may take to end
_names = itertools.count()


@contextlib.contextmanager
def running(worker, join_s: float = JOIN_S):
    """Run `worker` in a thread; on the way out stop it, and fail if it does not end or raised."""
    errors: list[BaseException] = []

    def target():
        try:
            worker.run()
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=target, name=repr(worker), daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        worker.stop()
        thread.join(join_s)
    assert not thread.is_alive(), f"{worker!r} did not end within {join_s}s of stop()"
    assert not errors, f"{worker!r} raised {errors[0]!r}"


def frames(seq: int, rows: int = ROWS, seed: int | None = None, **kwargs) -> wire.Message:
    rng = np.random.default_rng(seq if seed is None else seed)
    return wire.Message("frames", rng.random((rows, 1, 4, 4), dtype=np.float32), seq=seq, **kwargs)


def send(sock: zmq.Socket, msg: wire.Message | list) -> None:
    sock.send_multipart(wire.encode(msg) if isinstance(msg, wire.Message) else msg)


def receive(sock: zmq.Socket, timeout: float = 5.0) -> wire.Message:
    return wire.decode(recv_multipart(sock, timeout))


def unique(prefix: str) -> str:
    return f"inproc://{prefix}-{next(_names)}"


def weights_of(layer: FFLayer) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in layer.weights().items()}


def paired(batching: Batching = Batching(max_rows=ROWS)) -> dict:  # noqa: B008 (frozen: never changed)
    """start_layer's keywords for a layer that pairs each positive with its frames' negatives: the step policy
    build.py chooses for these batching rules (Paired, ForwardFirst or Scheduled), and the batching."""
    return {"policy": choose(batching, paired=True, phased=False), "batching": batching}


def layer_reasons(worker: LayerWorker) -> Counter:
    """Every drop of a layer worker by reason: its own counts plus its receivers' wire rejections."""
    total = Counter(worker.dropped)
    for receiver in (worker.input, worker.negative, worker.snapshot):
        total.update(receiver.rejected)
    return +total


def recv_multipart(sock, timeout: float = RECV_TIMEOUT_S, copy: bool = True) -> list:
    """Receive one multipart message, or fail the test after `timeout` seconds."""
    if not sock.poll(int(timeout * 1000), zmq.POLLIN):
        pytest.fail(f"no message within {timeout}s")
    return sock.recv_multipart(copy=copy)


@dataclass
class LayerRig:
    worker: LayerWorker
    endpoints: LayerEndpoints
    input: zmq.Socket  # PUSH -> the layer's input
    output: zmq.Socket  # PULL <- the layer's output
    negative: zmq.Socket  # PUSH -> the layer's negative updates
    snapshot: zmq.Socket  # REQ -> the layer's snapshot REP

    def ask_snapshot(self, request: wire.Message | list | None = None) -> wire.Message:
        send(self.snapshot, request or wire.Message("snapshot_request", np.zeros(0, np.float32)))
        return receive(self.snapshot)

    def dropped(self) -> int:
        return self.worker.metrics()["dropped"]


class CountingSource(FrameSource):
    """Frame i is filled with the value i, label i % 3: order and loss are visible downstream."""

    def __init__(self, n: int, num_classes: int | None = None):
        super().__init__("counting", Preprocess(size=(4, 4)))
        self.total = n
        self.num_classes = num_classes

    def _frames(self):
        for i in range(self.total):
            if self._closed:
                return
            yield Frame(np.full((1, 4, 4), i, np.float32), i % 3 if self.num_classes else None, i, time.time())
