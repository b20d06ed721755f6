"""ZeroMQ sockets the ffstream way: linger 0, a size cap on every receive, and no wait without a timeout."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable

import zmq

from ffstream.net import security, wire

log = logging.getLogger("ffstream.net.transport")

POLL_MS = 100  # how long a blocking step waits before it looks at the stop flag again

# MAXMSGSIZE per socket purpose, bytes per frame: ZeroMQ drops the connection of a peer that sends more.
MAX_MESSAGE = {
    "data": wire.DEFAULT_MAX_PAYLOAD + wire.MAX_HEADER_BYTES,  # frames, activity, snapshots, negative updates
    "monitor": 16 * 1024 * 1024 + wire.MAX_HEADER_BYTES,  # metrics (header only) and weight previews (uint8 tiles)
    "control": wire.MAX_HEADER_BYTES,  # commands: a header and an empty payload
}
# ZMTP heartbeats: a peer that answers no PING within the timeout is dropped, so a half-open connection (a host
# gone, a partition) is noticed in seconds or a minute, not after the kernel's two hours.
HEARTBEAT_IVL_MS = 2000
HEARTBEAT_TIMEOUT_MS = 10_000  # control and monitor links: read at once, never held by backpressure
HEARTBEAT_TTL_MS = 10_000  # how long the peer waits for our next PING before dropping us
# Benchmarks only (`ffstream bench throughput --delivery-overhead`): FFSTREAM_HEARTBEATS=off leaves ZMTP heartbeats and
# TCP keepalive unset, to measure what they cost. Never for a run: a partition then goes unnoticed for hours.
HEARTBEATS_ENV = "FFSTREAM_HEARTBEATS"
# Data links are held by backpressure (a file source behind a slow layer, a layer whose next one restarts). A held
# receiver reads nothing off the connection, its PONGs included, so a short timeout dropped a healthy link after
# 10 s with everything queued in it (193 of 400 batches lost over a 25 s hold; tests/test_transport_backpressure.py),
# and libzmq may abort on the reconnect (`Assertion failed: _input_stopped`, zeromq/libzmq#3937; the sleep worker in
# docker-compose). A minute covers a held link on a loaded machine and still notices a vanished host.
DATA_HEARTBEAT_TIMEOUT_MS = 60_000
# TCP keepalive underneath, for the NAT and firewall tables in between: probe after 30 s idle, every 10 s, 3 tries.
KEEPALIVE_IDLE_S, KEEPALIVE_INTVL_S, KEEPALIVE_CNT = 30, 10, 3
# A deadline on every blocking send or receive: ffstream sends with NOBLOCK and receives after a poll, so this
# only bounds a call that slipped past that rule; it then raises zmq.Again instead of hanging the worker.
BLOCKING_TIMEOUT_MS = 10_000
# Every message has two frames; a peer that sends more is read only up to this many, the rest is discarded.
MAX_PARTS = 2


def make_socket(
    ctx: zmq.Context,
    kind: int,
    *,
    bind: str | None = None,
    connect: str | list[str] | None = None,
    hwm: int = 16,
    purpose: str = "data",
    max_message: int | None = None,
    before_connect: Callable[[zmq.Socket], None] | None = None,
) -> zmq.Socket:
    """A socket with LINGER 0, MAXMSGSIZE, heartbeats and keepalive set, bound or connected. The stable side binds.

    purpose ("data", "monitor" or "control") sizes MAXMSGSIZE (MAX_MESSAGE), unless max_message is given.

    before_connect(sock), if given, runs just before connecting: a socket monitor attached there sees every handshake.
    """
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.MAXMSGSIZE, max_message if max_message is not None else MAX_MESSAGE[purpose])
    sock.setsockopt(zmq.SNDTIMEO, BLOCKING_TIMEOUT_MS)
    sock.setsockopt(zmq.RCVTIMEO, BLOCKING_TIMEOUT_MS)
    if os.environ.get(HEARTBEATS_ENV, "on") != "off":
        sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
        patience = DATA_HEARTBEAT_TIMEOUT_MS if purpose == "data" else HEARTBEAT_TIMEOUT_MS
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, patience)
        sock.setsockopt(zmq.HEARTBEAT_TTL, max(patience, HEARTBEAT_TTL_MS))
        sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
        sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, KEEPALIVE_IDLE_S)
        sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, KEEPALIVE_INTVL_S)
        sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, KEEPALIVE_CNT)
    try:
        security.secure(ctx, sock, bind, connect)  # CURVE on every tcp address when enabled for ctx
        if bind:
            sock.bind(bind)
        if before_connect is not None and connect:
            before_connect(sock)
        for addr in [connect] if isinstance(connect, str) else connect or []:
            sock.connect(addr)
    except security.PlaintextRefused:
        sock.close(linger=0)
        raise
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
        self.empty_wakeups = 0  # polls that said POLLIN with no message there (CURVE's first heartbeat, see recv_ready)
        self.took = False  # whether the last recv_ready took a message off the socket, valid or not (a REP owes a reply)
        self.log = logging.getLogger(f"ffstream.receiver.{name}")

    def recv_ready(self) -> wire.Message | None:
        """Take one message that the poller said is there; None when it was malformed (and counted) or not there.

        libzmq 4.3.5 wakes a poller on a CURVE server PULL once with no message, when the first heartbeat of a
        client that has sent nothing yet arrives (a sink's acknowledgement socket to the source's control socket, two
        seconds after it connects). A blocking recv would then wait BLOCKING_TIMEOUT_MS and raise zmq.Again."""
        self.took = False
        try:
            parts = recv_bounded(self.sock)
        except zmq.Again:
            self.empty_wakeups += 1
            return None
        self.took = True
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


def recv_bounded(sock: zmq.Socket, max_parts: int = MAX_PARTS) -> list:
    """One multipart message, keeping at most max_parts + 1 frames (enough for decode to refuse it) and
    discarding the rest, so that a message of a million empty frames costs no memory. Raises zmq.Again at once when
    no message is there (the rest of a multipart message is always there with its first frame)."""
    parts = [sock.recv(zmq.NOBLOCK, copy=False)]
    while sock.getsockopt(zmq.RCVMORE):
        frame = sock.recv(copy=False)
        if len(parts) <= max_parts:
            parts.append(frame)
    return parts


def send(sock: zmq.Socket, msg: wire.Message, should_stop: Callable[[], bool], timeout_ms: int | None = None) -> bool:
    """Send, waiting for room (backpressure) but never past a stop request or timeout_ms. True if sent.

    timeout_ms None waits as long as backpressure lasts (a file source behind a slow layer), but never past a
    stop request; callers that must not wait on a peer that may be gone pass a deadline and handle False.
    """
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
