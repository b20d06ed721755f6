"""ZeroMQ sockets the ffstream way: linger 0, a size cap on every receive, and no wait without a timeout."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

import zmq

from ffstream.net import security, wire

log = logging.getLogger("ffstream.net.transport")

POLL_MS = 100  # how long a blocking step waits before it looks at the stop flag again


def make_socket(
    ctx: zmq.Context,
    kind: int,
    *,
    bind: str | None = None,
    connect: str | list[str] | None = None,
    hwm: int = 16,
    max_message: int = wire.DEFAULT_MAX_PAYLOAD + wire.MAX_HEADER_BYTES,
    before_connect: Callable[[zmq.Socket], None] | None = None,
) -> zmq.Socket:
    """A socket with LINGER 0 and MAXMSGSIZE set, bound or connected. The stable side binds.

    before_connect(sock), if given, runs just before connecting: a socket monitor attached there sees every handshake.
    """
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.MAXMSGSIZE, max_message)
    try:
        security.secure(ctx, sock, bind, connect)  # CURVE, when enabled for ctx and the address is not loopback
        if bind:
            sock.bind(bind)
        if before_connect is not None and connect:
            before_connect(sock)
        for addr in [connect] if isinstance(connect, str) else connect or []:
            sock.connect(addr)
    except zmq.ZMQError as exc:
        sock.close(linger=0)
        raise OSError(f"cannot {'bind' if bind else 'connect'} {bind or connect}: {exc}") from None
    return sock


class Receiver:
    """Decodes messages off a socket; malformed ones are dropped and counted by reason in `rejected`."""

    def __init__(self, sock: zmq.Socket, max_payload: int = wire.DEFAULT_MAX_PAYLOAD, name: str = "in"):
        self.sock = sock
        self.max_payload = max_payload
        self.rejected: Counter[str] = Counter()
        self.log = logging.getLogger(f"ffstream.receiver.{name}")

    def recv_ready(self) -> wire.Message | None:
        """Take one message that the poller said is there; None when it was malformed (and counted)."""
        parts = self.sock.recv_multipart(copy=False)
        try:
            return wire.decode(parts, self.max_payload)
        except wire.WireError as exc:
            self.rejected[exc.reason] += 1
            if sum(self.rejected.values()) in (1, 10, 100, 1000) or self.rejected[exc.reason] == 1:
                self.log.warning("dropped a malformed message (%s); %d dropped so far", exc, sum(self.rejected.values()))
            return None

    def recv(self, timeout_ms: int) -> wire.Message | None:
        """One valid message, or None after timeout_ms with nothing valid."""
        if not self.sock.poll(timeout_ms, zmq.POLLIN):
            return None
        return self.recv_ready()


def send(sock: zmq.Socket, msg: wire.Message, should_stop: Callable[[], bool], timeout_ms: int | None = None) -> bool:
    """Send, waiting for room (backpressure) but never past a stop request or timeout_ms. True if sent."""
    parts = wire.encode(msg)
    copy = msg.array.nbytes < wire.ZERO_COPY_BYTES
    waited = 0
    while True:
        try:
            sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=copy)
            return True
        except zmq.Again:
            pass
        if should_stop() or (timeout_ms is not None and waited >= timeout_ms):
            return False
        sock.poll(POLL_MS, zmq.POLLOUT)
        waited += POLL_MS


def try_send(sock: zmq.Socket, msg: wire.Message) -> bool:
    """Send only if there is room right now; live streams drop rather than queue."""
    try:
        sock.send_multipart(wire.encode(msg), flags=zmq.NOBLOCK, copy=msg.array.nbytes < wire.ZERO_COPY_BYTES)
        return True
    except zmq.Again:
        return False
