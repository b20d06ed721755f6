"""What the web dashboard shows, shared between the monitor's loop (writer) and the HTTP threads (readers).

The monitor puts every metrics message and every weight preview here. Each becomes a numbered
event in a bounded history: a page that opens (or reconnects with Last-Event-ID) gets the history
first, so its charts start full, then waits for new events.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from ffstream.monitor.web.png import encode_png, mosaic

HISTORY = 2000  # events kept for pages that open late: about 3 minutes of a 4-layer stack at 1 message/s per worker


@dataclass(frozen=True)
class Event:
    seq: int  # 1, 2, 3, ... in this monitor process
    name: str  # "metrics", "preview" or "alert"
    data: str  # one line of JSON


class Board:
    def __init__(self, history: int = HISTORY, clock=time.monotonic):
        self.clock = clock
        self._cond = threading.Condition()
        self._events: deque[Event] = deque(maxlen=history)
        self._seq = 0
        self.latest: dict[str, dict] = {}  # worker name -> its last metrics
        self._heard_at: dict[str, float] = {}  # worker name -> clock() when they came
        self.preview_png: bytes | None = None  # the receptive fields as one PNG mosaic
        self.preview_version = 0
        self.closed = False

    def put_metrics(self, worker: str, t: float, metrics: dict) -> None:
        data = json.dumps({"worker": worker, "t": t, **metrics}, separators=(",", ":"))
        with self._cond:
            self.latest[worker] = metrics
            self._heard_at[worker] = self.clock()
            self._append("metrics", data)

    def put_alert(self, worker: str, event: dict) -> None:
        """A novelty alert from the sink (workers/sink.py `_alert`) -> an "alert" event for the page."""
        keys = ("t", "frame", "seq", "novelty", "frames_above", "threshold", "layers")
        data = json.dumps({"worker": worker, **{k: event[k] for k in keys if k in event}}, separators=(",", ":"))
        with self._cond:
            self._append("alert", data)

    def put_preview(self, tiles: np.ndarray, info: dict) -> None:
        """tiles (N, H, W[, 3]) uint8 -> the PNG that /receptive-fields.png serves, and an event naming its version."""
        png = encode_png(mosaic(tiles))  # outside the lock: the HTTP threads keep serving the old one meanwhile
        with self._cond:
            self.preview_png = png
            self.preview_version += 1
            meta = {"version": self.preview_version, "tiles": int(tiles.shape[0]), "tile_shape": list(tiles.shape[1:3]), **info}
            self._append("preview", json.dumps(meta, separators=(",", ":")))

    def _append(self, name: str, data: str) -> None:
        self._seq += 1
        self._events.append(Event(self._seq, name, data))
        self._cond.notify_all()

    def events_after(self, seq: int, timeout: float) -> list[Event]:
        """Events numbered above seq, waiting up to timeout seconds for one; [] on timeout or close.

        A seq from before this process (a page that outlived a monitor restart) counts as 0: it gets the whole history.
        """
        with self._cond:
            if seq > self._seq:
                seq = 0
            self._cond.wait_for(lambda: self._seq > seq or self.closed, timeout)
            return [e for e in self._events if e.seq > seq]

    def snapshot(self) -> tuple[dict[str, dict], dict[str, float]]:
        """(latest metrics per worker, seconds since each was heard from)."""
        with self._cond:
            now = self.clock()
            return dict(self.latest), {k: round(now - v, 3) for k, v in self._heard_at.items()}

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()
