"""Monitor worker: one XSUB socket gathers every worker's metrics, one XPUB socket serves them to clients,
and an HTTP server (ffstream.monitor.web) shows them as a web page and as Prometheus /metrics."""

from __future__ import annotations

import json
from typing import Any

import zmq

from ffstream.monitor.preview import MAX_PREVIEW_BYTES, valid_tiles
from ffstream.monitor.web.board import Board
from ffstream.monitor.web.server import DashboardServer
from ffstream.net import wire
from ffstream.net.transport import POLL_MS
from ffstream.workers.base import Worker


class MonitorWorker(Worker):
    """A forwarding proxy that also remembers the latest metrics of each worker (for health checks and the web page)."""

    kind = "monitor"

    def __init__(self, collect_addr: str, publish_addr: str, http_addr: str | None = None, http_token: str | None = None,
                 **worker_kwargs: Any):
        super().__init__("monitor", **worker_kwargs)
        self.http_token = http_token  # the HTTP side asks for it (Bearer, or Basic's password); None asks for none
        self.collect_addr = collect_addr
        self.publish_addr = publish_addr
        self.http_addr = http_addr  # http://host:port of the dashboard and /metrics; None serves no HTTP
        self.forwarded = 0
        self.previews = 0
        self.latest: dict[str, dict] = {}  # worker name -> its last metrics
        self.board = Board()
        self.web: DashboardServer | None = None
        self.web_error: str | None = None

    def setup(self) -> None:
        self.collect = self.socket(zmq.XSUB, bind=self.collect_addr, hwm=1000)
        self.publish = self.socket(zmq.XPUB, bind=self.publish_addr, hwm=1000)
        self.collect.send(b"\x01")  # subscribe to everything the workers publish
        if self.http_addr:
            try:
                self.web = DashboardServer(self.http_addr, self.board, token=self.http_token).start()
                self.log.info("dashboard at %s (Prometheus: %smetrics)", self.web.url, self.web.url)
            except (OSError, ValueError) as exc:
                # The page is a window on the run, not part of it: a taken port must not stop the metrics feed.
                self.web_error = f"cannot serve {self.http_addr}: {exc}"
                self.log.error("no dashboard: %s", self.web_error)
        # Made last: tests and health checks read a poller as "set-up finished", the dashboard's outcome included.
        poller = zmq.Poller()
        poller.register(self.collect, zmq.POLLIN)
        poller.register(self.publish, zmq.POLLIN)
        self.poller = poller

    def step(self) -> None:
        ready = dict(self.poller.poll(POLL_MS))
        if self.publish in ready:
            self.publish.recv()  # a client's (un)subscription; everything is forwarded anyway
        if self.collect in ready:
            parts = self.collect.recv_multipart(copy=False)
            try:
                msg = wire.decode(parts, max_payload=MAX_PREVIEW_BYTES)
            except wire.WireError as exc:
                self.dropped[exc.reason] += 1
                return
            if msg.kind == "preview":
                self._take_preview(msg)
                return  # previews are for the page; subscribers get metrics only
            if msg.kind == "control" and msg.extra.get("command") == "alert":
                self.board.put_alert(msg.stream, msg.extra)  # the page marks it; subscribers get it below, as sent
            if msg.kind == "metrics":
                if msg.array.size:
                    self.dropped["payload"] += 1  # metrics carry no payload
                    return
                if isinstance(msg.extra.get("metrics"), dict):
                    self.latest[msg.stream] = msg.extra["metrics"]
                    self.board.put_metrics(msg.stream, msg.t_src, msg.extra["metrics"])
            try:
                self.publish.send_multipart(parts, flags=zmq.NOBLOCK)
                self.forwarded += 1
            except zmq.Again:
                self.dropped["slow_client"] += 1

    def _take_preview(self, msg: wire.Message) -> None:
        if not valid_tiles(msg.array):
            self.dropped["preview"] += 1
            return
        info = {k: msg.extra[k] for k in ("layer", "weights_version", "units") if isinstance(msg.extra.get(k), int)}
        self.board.put_preview(msg.array, {"worker": msg.stream, **info})
        self.previews += 1

    def on_close(self) -> None:
        if self.web is not None:
            self.web.close()

    def metrics(self) -> dict[str, Any]:
        m = super().metrics()
        m.update(forwarded=self.forwarded, workers=sorted(self.latest), previews=self.previews,
                 http=self.web.url if self.web else None, http_error=self.web_error)
        return m


def metrics_line(msg: wire.Message) -> str:
    """One metrics message as one JSON line, as `ffstream monitor --json` prints it."""
    return json.dumps({"worker": msg.stream, "t": msg.t_src, **msg.extra.get("metrics", {})})
