"""Monitor worker: one XSUB socket gathers every worker's metrics, one XPUB socket serves them to clients."""

from __future__ import annotations

import json
from typing import Any

import zmq

from ffstream import wire
from ffstream.transport import POLL_MS
from ffstream.workers.base import Worker


class MonitorWorker(Worker):
    """A forwarding proxy that also remembers the latest metrics of each worker (for health checks)."""

    kind = "monitor"

    def __init__(self, collect_addr: str, publish_addr: str, **worker_kwargs: Any):
        super().__init__("monitor", **worker_kwargs)
        self.collect_addr = collect_addr
        self.publish_addr = publish_addr
        self.forwarded = 0
        self.latest: dict[str, dict] = {}  # worker name -> its last metrics

    def setup(self) -> None:
        self.collect = self.socket(zmq.XSUB, bind=self.collect_addr, hwm=1000)
        self.publish = self.socket(zmq.XPUB, bind=self.publish_addr, hwm=1000)
        self.collect.send(b"\x01")  # subscribe to everything the workers publish
        self.poller = zmq.Poller()
        self.poller.register(self.collect, zmq.POLLIN)
        self.poller.register(self.publish, zmq.POLLIN)

    def step(self) -> None:
        ready = dict(self.poller.poll(POLL_MS))
        if self.publish in ready:
            self.publish.recv()  # a client's (un)subscription; everything is forwarded anyway
        if self.collect in ready:
            parts = self.collect.recv_multipart(copy=False)
            try:
                msg = wire.decode(parts, max_payload=0)
            except wire.WireError as exc:
                self.dropped[exc.reason] += 1
                return
            if msg.kind == "metrics" and isinstance(msg.extra.get("metrics"), dict):
                self.latest[msg.stream] = msg.extra["metrics"]
            try:
                self.publish.send_multipart(parts, flags=zmq.NOBLOCK)
                self.forwarded += 1
            except zmq.Again:
                self.dropped["slow_client"] += 1

    def metrics(self) -> dict[str, Any]:
        m = super().metrics()
        m.update(forwarded=self.forwarded, workers=sorted(self.latest))
        return m


def metrics_line(msg: wire.Message) -> str:
    """One metrics message as one JSON line, as `ffstream monitor --json` prints it."""
    return json.dumps({"worker": msg.stream, "t": msg.t_src, **msg.extra.get("metrics", {})})
