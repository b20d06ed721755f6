"""`ffstream monitor`: a live dashboard (ffstream/dashboard.py), or one JSON object per metrics message.

With `--tensorboard DIR` it also writes every message as TensorBoard scalars.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

import zmq
from rich.console import Console
from rich.live import Live

from ffstream.monitor.dashboard import Dashboard
from ffstream.net import security, wire
from ffstream.net.transport import make_socket
from ffstream.workers.monitor import metrics_line

REDRAW_S = 0.25  # seconds between dashboard redraws, also when nothing arrives (so silent workers turn stale)
HEARTBEAT_MS = 1000  # ZMTP ping interval: a peer that vanished without closing (a host gone) is noticed ...
HEARTBEAT_TIMEOUT_MS = 5000  # ... after this long, and SUB reconnects


def metrics_feed(connect: str, seconds: float | None = None, count: int | None = None) -> Iterator[wire.Message | None]:
    """Metrics messages from the monitor at `connect`; None every REDRAW_S while none arrive.

    SUB connects and reconnects by itself, so the feed survives the stack (or just the monitor worker)
    stopping and starting again underneath it, in any order. Ends after `seconds` or `count` messages.
    """
    ctx = zmq.Context()
    if os.environ.get("FFSTREAM_SECURITY_CURVE_DIR"):  # a monitor on another host, over CURVE: the "viewer" pair by default
        security.enable(ctx, os.environ["FFSTREAM_SECURITY_CURVE_DIR"], os.environ.get("FFSTREAM_SECURITY_CURVE_CLIENT", "viewer"))
    sub = None
    try:
        sub = make_socket(ctx, zmq.SUB, connect=connect, hwm=1000)
        sub.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_MS)
        sub.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        seen = 0
        deadline = time.monotonic() + seconds if seconds else None
        while (count is None or seen < count) and (deadline is None or time.monotonic() < deadline):
            if not sub.poll(int(REDRAW_S * 1000)):
                yield None
                continue
            try:
                msg = wire.decode(sub.recv_multipart(copy=False), max_payload=0)
            except wire.WireError:
                continue  # a malformed message costs nothing but itself
            if msg.kind == "metrics" and isinstance(msg.extra.get("metrics"), dict):
                seen += 1
                yield msg
    finally:
        if sub is not None:
            sub.close(linger=0)
        security.release(ctx)
        ctx.term()


def monitor_command(args) -> int:
    tensorboard = None
    if args.tensorboard:
        from ffstream.monitor.tensorboard_log import TensorBoardLog

        tensorboard = TensorBoardLog(args.tensorboard)  # fails at once, with one line, without the package
    board = Dashboard(args.connect)
    console = Console(width=None if sys.stdout.isatty() else 160)  # a pipe gets the final dashboard, 160 wide
    live = None if args.json else Live(board.render(), console=console, auto_refresh=False, transient=False)
    last_draw = 0.0
    feed = metrics_feed(args.connect, args.seconds, args.count)
    # Ctrl-C and SIGTERM only set a flag that the loop reads (at least every REDRAW_S): a KeyboardInterrupt raised
    # inside TensorBoard's writer could leave its lock held, and the final flush then waited forever.
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if live:
            live.start()
        for msg in feed:
            if stop.is_set():
                break
            if msg is not None:
                figures = msg.extra["metrics"]
                if args.json:
                    print(metrics_line(msg), flush=True)
                else:
                    board.update(msg.stream, figures)
                if tensorboard:
                    tensorboard.add(msg.stream, figures)
            if live and time.monotonic() - last_draw >= REDRAW_S:
                last_draw = time.monotonic()
                live.update(board.render(), refresh=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        feed.close()  # closes the socket and context now, not whenever the generator is collected
        if live:
            live.update(board.render())
            live.stop()
        if tensorboard:
            tensorboard.close()
    return 0
