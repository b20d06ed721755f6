"""The lifecycle every worker shares: run() is try/finally close(), a stop flag, metrics and a heartbeat."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from ffstream.monitor.health import Heartbeat
from ffstream.net import security, wire
from ffstream.net.transport import POLL_MS, make_socket

# At close, how long a data output may spend handing over what is queued (inside the 10 s shutdown budget).
# It is not a delivery guarantee: a PULL peer drops what it had not read when its sender goes away. That is
# why upstream workers stay up after the end-of-stream marker until the supervisor, having seen the sink
# finish, stops them.
FLUSH_MS = 3000
# At close, how long the metrics socket may spend handing the final figures to a live monitor (a dashboard
# would otherwise show a finished worker's last periodic figures). A PUB drops at once what no peer takes.
METRICS_FLUSH_MS = 500
# At start, the longest a worker waits for the peer its data output connects to (a worker downstream still
# importing torch and warming up; see await_peers). Past it, the worker starts anyway, as it would without.
PEER_WAIT_S = 30.0
# A worker's exit code when it gave up on something a restart cannot mend (the end of a stream that is never
# acknowledged): `ffstream run` then ends the run in one line instead of restarting it.
EXIT_GAVE_UP = 4


class GaveUp(Exception):
    """Raised from a worker's loop: it cannot go on, and a restart would only do the same again. The message is the line."""


class Worker:
    """Base of all workers.

    Subclasses implement `setup()` (make sockets), `step()` (one bounded unit
    of work: it must return within about POLL_MS when idle) and `metrics()`.
    `run()` calls them until `stop()` is called, SIGTERM/SIGINT arrives (when
    `handle_signals()` was called), or the subclass sets `self.finished`.
    """

    kind = "worker"

    def __init__(
        self,
        name: str,
        *,
        context: zmq.Context | None = None,
        metrics_addr: str | None = None,  # the monitor's XSUB address; None publishes nothing
        metrics_interval: float = 1.0,  # seconds between metrics messages
        final_stats_path: str | None = None,  # where close() writes the last metrics as JSON
        health_path: str | None = None,  # heartbeat JSON for `ffstream check`, written every metrics_interval; None: none
    ):
        self.name = name
        self.log = logging.getLogger(f"ffstream.{name}")
        self._own_context = context is None
        self.context = context or zmq.Context()
        self.metrics_addr = metrics_addr
        self.metrics_interval = metrics_interval
        self.final_stats_path = final_stats_path
        self._stop = threading.Event()
        self.finished = False
        self.started_at = time.time()
        self.dropped: Counter[str] = Counter()  # malformed or unusable messages, by reason
        self._sockets: list[tuple[zmq.Socket, bool]] = []  # and whether it is a data output to flush at close
        self._awaiting: dict[zmq.Socket, tuple[list[str], zmq.Socket | None]] = {}  # ready=True sockets: (addresses, monitor or None: the heartbeat's)
        self._metrics_sock: zmq.Socket | None = None
        self._last_metrics = 0.0
        self._closed = False
        self.heartbeat = Heartbeat(health_path, name) if health_path else None

    # lifecycle -----------------------------------------------------------------
    def handle_signals(self) -> None:
        """SIGTERM and SIGINT set the stop flag; the current batch drains and the worker exits."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        try:
            if self.metrics_addr:
                self._metrics_sock = self.socket(zmq.PUB, connect=self.metrics_addr, hwm=100, watch=False)
            self.setup()
            if self.heartbeat:
                self.heartbeat.beat()
            self.log.info("started: %r", self)
            while not self.stopping and not self.finished:
                self.step()
                self.maybe_publish_metrics()
            self.drain()
        finally:
            self.close()

    def setup(self) -> None:
        raise NotImplementedError

    def step(self) -> None:
        raise NotImplementedError

    def drain(self) -> None:
        """Called once after the loop ends normally: finish what is in hand (checkpoint, forward end-of-stream)."""

    def on_close(self) -> None:
        """Release what the subclass holds (files, threads); sockets are closed by close()."""

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.on_close()
            final = self.metrics()
            self.publish_metrics(final)
            if self.final_stats_path:
                write_json_atomic(self.final_stats_path, final)
        finally:
            if self.heartbeat:
                self.heartbeat.close()
            security.release(self.context)  # the CURVE authenticator, if any, must stop before the context terminates
            for _, monitor in self._awaiting.values():  # a ready=True socket never awaited (setup failed): its monitor too
                if monitor is not None:
                    monitor.close(linger=0)
            for sock, is_output in self._sockets:
                sock.close(linger=FLUSH_MS if is_output else METRICS_FLUSH_MS if sock is self._metrics_sock else 0)
            if self._own_context:
                self.context.term()
            self.log.info("stopped: %r", self)

    # sockets and metrics -----------------------------------------------------------
    def socket(self, kind: int, *, output: bool = False, watch: bool = True, ready: bool = False, **kwargs: Any) -> zmq.Socket:
        """A socket that close() will close.

        Outputs (data that must not be lost) get a bounded linger at close, so the last
        batches and the end-of-stream marker reach a live peer; everything else gets 0.
        ready: a connecting socket whose peers `await_peers` will wait for (its handshakes are watched from the start).
        """
        connect = kwargs.get("connect")
        addresses = [connect] if isinstance(connect, str) else list(connect or [])
        monitors: list[zmq.Socket] = []

        def watch_handshakes(sock: zmq.Socket) -> None:  # before connecting: no handshake can pass unseen
            if watch and self.heartbeat:  # connecting sockets must reach a peer to be healthy
                self.heartbeat.watch(sock, addresses)
            elif ready:
                monitors.append(sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED))

        sock = make_socket(self.context, kind, before_connect=watch_handshakes, **kwargs)
        self._sockets.append((sock, output))
        if ready:
            self._awaiting[sock] = (addresses, monitors[0] if monitors else None)
        return sock

    def await_peers(self, sock: zmq.Socket, timeout_s: float = PEER_WAIT_S) -> bool:
        """The start-up handshake: wait until `sock` (made with ready=True) has shaken hands with every peer it connects to.

        A worker that binds its own input only after this lets frames in only once the workers downstream are
        up and warm, so the first frames of a paced source do not queue behind their start-up. Bounded: after
        timeout_s it goes on (logged), as it would without. inproc peers live in this process: no wait.
        """
        addresses, monitor = self._awaiting.pop(sock)
        wanted = [a for a in addresses if not a.startswith("inproc://")]
        deadline = time.monotonic() + timeout_s
        handshakes, last_beat = 0, 0.0
        try:
            while wanted and not self.stopping:
                if monitor is None:  # the heartbeat watches this socket; it beats meanwhile: alive, not yet connected
                    if time.monotonic() - last_beat >= self.metrics_interval:
                        self.heartbeat.beat()
                        last_beat = time.monotonic()
                    self.heartbeat.poll_events()
                    if all(self.heartbeat.peers.get(a) for a in wanted):
                        return True
                    self._stop.wait(0.01)  # a poll interval, bounded by the deadline below
                elif monitor.poll(POLL_MS):
                    handshakes += recv_monitor_message(monitor)["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED
                    if handshakes >= len(wanted):
                        return True
                if time.monotonic() > deadline:
                    self.log.warning("no handshake with %s after %.0f s; starting without it", ", ".join(wanted), timeout_s)
                    return False
            return not wanted
        finally:
            if monitor is not None:
                sock.disable_monitor()
                monitor.close(linger=0)

    def metrics(self) -> dict[str, Any]:
        """This worker's live figures; subclasses extend it."""
        return {
            "worker": self.name,
            "kind": self.kind,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started_at, 3),
            "rejected": dict(self.dropped),
            "auth_refused": security.refused(self.context),  # CURVE handshakes this worker's authenticator denied
        }

    def waiting(self) -> bool:
        """The should_stop of a send that waits as long as backpressure lasts: meanwhile the worker still reports and
        beats, so a liveness probe never kills it for waiting on a peer that restarts (a file source held for minutes
        while a layer's container comes back); True once it is asked to stop."""
        self.maybe_publish_metrics()
        return self.stopping

    def maybe_publish_metrics(self) -> None:
        now = time.monotonic()
        if now - self._last_metrics >= self.metrics_interval:
            self._last_metrics = now
            self.publish_metrics(self.metrics())
            if self.heartbeat:
                self.heartbeat.beat()

    def publish_metrics(self, figures: dict[str, Any]) -> None:
        self.publish_to_monitor(wire.Message("metrics", np.zeros(0, np.float32), stream=self.name, extra={"metrics": figures}))

    def publish_to_monitor(self, msg: wire.Message) -> None:
        """Metrics, or a weight preview, to the monitor, if there is one; never waits."""
        if self._metrics_sock is None:
            return
        try:
            self._metrics_sock.send_multipart(wire.encode(msg), flags=zmq.NOBLOCK)
        except zmq.Again:
            pass  # a missing or slow monitor must never slow learning

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write to a temporary file, fsync, rename: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
