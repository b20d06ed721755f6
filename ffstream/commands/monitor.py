"""`ffstream monitor`: a live per-layer table, or one JSON object per metrics message."""

from __future__ import annotations

import os
import time

import zmq
from rich.live import Live
from rich.table import Table

from ffstream import security, wire
from ffstream.transport import make_socket
from ffstream.workers.monitor import metrics_line


def monitor_command(args) -> int:
    ctx = zmq.Context()
    if os.environ.get("FFSTREAM_SECURITY_CURVE_DIR"):  # a monitor on another host, over CURVE: the "viewer" pair by default
        security.enable(ctx, os.environ["FFSTREAM_SECURITY_CURVE_DIR"], os.environ.get("FFSTREAM_SECURITY_CURVE_CLIENT", "viewer"))
    # SUB connects and reconnects by itself, so the monitor survives the stack restarting underneath it.
    sub = make_socket(ctx, zmq.SUB, connect=args.connect, hwm=1000)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    latest: dict[str, dict] = {}
    seen = 0
    deadline = time.monotonic() + args.seconds if args.seconds else None
    live = None if args.json else Live(render(latest, args.connect), refresh_per_second=4)
    try:
        if live:
            live.start()
        while (args.count is None or seen < args.count) and (deadline is None or time.monotonic() < deadline):
            if not sub.poll(200):
                continue
            try:
                msg = wire.decode(sub.recv_multipart(copy=False), max_payload=0)
            except wire.WireError:
                continue
            if msg.kind != "metrics":
                continue
            seen += 1
            if args.json:
                print(metrics_line(msg), flush=True)
            else:
                latest[msg.stream] = msg.extra.get("metrics", {})
                live.update(render(latest, args.connect))
    except KeyboardInterrupt:
        pass
    finally:
        if live:
            live.stop()
        sub.close(linger=0)
        security.release(ctx)
        ctx.term()
    return 0


def render(latest: dict[str, dict], address: str) -> Table:
    table = Table(title=f"ffstream monitor: {address}")
    for col in ("worker", "frames", "frames/s", "G pos", "G neg", "p pos", "p neg", "dropped", "staleness", "accuracy"):
        table.add_column(col, justify="right")
    fmt = lambda v, spec=".3f": "-" if v is None else format(v, spec)  # noqa: E731
    for name in sorted(latest, key=lambda n: (not n.startswith("layer"), n)):
        m = latest[name]
        frames = m.get("frames", m.get("negatives"))
        table.add_row(
            name, fmt(frames, "d"), fmt(m.get("fps", m.get("negatives_per_s")), ".0f"), fmt(m.get("goodness_pos"), ".1f"),
            fmt(m.get("goodness_neg") if not isinstance(m.get("goodness_neg"), list) else None, ".1f"), fmt(m.get("p_pos")), fmt(m.get("p_neg")),
            fmt(m.get("dropped"), "d"), fmt(m.get("staleness"), ".1f"), fmt(m.get("accuracy")),
        )
    return table
