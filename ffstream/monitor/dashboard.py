"""The terminal dashboard of `ffstream monitor`: every worker's latest metrics as rich tables.

Rendering is separate from the socket loop, so it can be tested without a terminal:

>>> board = Dashboard("tcp://127.0.0.1:5570")
>>> board.update("layer1", {"goodness_pos": 610.2, "goodness_neg": 420.0, "p_pos": 0.9, "p_neg": 0.2, "fps": 800.0})
>>> Console(record=True, width=160).print(board.render())   # doctest: +SKIP
"""

from __future__ import annotations

import io
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

BLOCKS = "▁▂▃▄▅▆▇█"  # sparkline levels, lowest first


@dataclass
class DashboardConfig:
    stale_after_s: float = 5.0  # seconds without metrics before a worker shows as stale; workers publish every 1 s
    trend_points: int = 20  # metrics messages per worker kept for its sparkline (about 20 s), count


@dataclass
class WorkerView:
    """What the dashboard remembers of one worker."""

    metrics: dict[str, Any]
    seen_at: float  # local monotonic clock when its last metrics arrived, seconds (no cross-host clock skew)
    pid: Any = None
    restarts: int = 0  # times its process id changed while we watched
    trend: deque = field(default_factory=deque)  # the figure its sparkline draws, oldest first


def sparkline(values: Iterable[float | None], width: int | None = None) -> str:
    """Unicode blocks from the lowest value (▁) to the highest (█); None leaves a gap."""
    points = list(values)[-width:] if width else list(values)
    known = [v for v in points if v is not None]
    if not known:
        return ""
    low, high = min(known), max(known)
    span = high - low
    top = len(BLOCKS) - 1
    return "".join(" " if v is None else BLOCKS[round((v - low) / span * top) if span > 0 else top // 2] for v in points)


def _fmt(value: Any, spec: str = ".3f") -> str:
    if value is None or isinstance(value, (list, dict)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def _difference(a: Any, b: Any) -> float | None:
    return a - b if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None


def _layer_order(name: str) -> tuple[int, str]:
    digits = name[len("layer") :]
    return (int(digits), name) if digits.isdigit() else (10**9, name)


class Dashboard:
    """The latest metrics of every worker, and the tables they make."""

    def __init__(self, address: str, config: DashboardConfig | None = None, clock: Callable[[], float] = time.monotonic):
        self.address = address
        self.config = config or DashboardConfig()
        self.clock = clock
        self.workers: dict[str, WorkerView] = {}
        self.messages = 0  # metrics messages taken in

    def update(self, name: str, metrics: dict[str, Any]) -> None:
        """One metrics message from worker `name` (the `stream` of its header)."""
        self.messages += 1
        now = self.clock()
        view = self.workers.get(name)
        if view is None:
            view = self.workers[name] = WorkerView(metrics, now, metrics.get("pid"), trend=deque(maxlen=self.config.trend_points))
        elif metrics.get("pid") is not None and metrics.get("pid") != view.pid:
            view.restarts += 1  # the stack (or this worker) restarted underneath us: same name, new process
            view.pid = metrics.get("pid")
        view.metrics, view.seen_at = metrics, now
        view.trend.append(self._trend_value(metrics))

    @staticmethod
    def _trend_value(m: dict[str, Any]) -> float | None:
        kind = m.get("kind")
        if kind == "layer":
            return _difference(m.get("goodness_pos"), m.get("goodness_neg"))  # the separation is what FF learns
        if kind == "sleep":
            return m.get("negatives_per_s")
        if kind == "sink":
            return m.get("accuracy_recent") if m.get("accuracy_recent") is not None else m.get("fps")
        return m.get("fps")

    def status(self, view: WorkerView) -> Text:
        age = self.clock() - view.seen_at
        if age > self.config.stale_after_s:
            return Text(f"stale {age:.0f}s", style="bold red")
        if view.metrics.get("ended"):
            return Text("ended", style="yellow")
        return Text("live", style="green")

    def _names(self, kind: str) -> list[str]:
        return [n for n, v in self.workers.items() if v.metrics.get("kind", n.rstrip("0123456789")) == kind]

    def render(self) -> RenderableType:
        parts: list[RenderableType] = [Text(f"ffstream monitor: {self.address}  ({self.messages} metrics messages)", style="bold")]
        if not self.workers:
            parts.append(Text(f"waiting for metrics on {self.address} ..."))
        for table in (self._layers(), self._sleep(), self._sink(), self._source(), self._others()):
            if table.row_count:
                parts.append(table)
        return Group(*parts)

    def _table(self, title: str, columns: Iterable[str]) -> Table:
        table = Table(title=title, title_justify="left", expand=False, show_edge=False, pad_edge=False)  # compact: fits 24 lines
        for col in columns:
            table.add_column(col, justify="left" if col in ("worker", "status", "trend", "kind") else "right", no_wrap=True)
        return table

    def _common(self, name: str, view: WorkerView) -> list[RenderableType]:
        return [name, self.status(view)]

    def _layers(self) -> Table:
        table = self._table("layers (trend: separation G pos − G neg)", (
            "worker", "status", "frames", "frames/s", "G pos", "G neg", "separation", "p pos", "p neg", "drops", "restarts", "trend",
        ))
        for name in sorted(self._names("layer"), key=_layer_order):
            view = self.workers[name]
            m = view.metrics
            table.add_row(
                *self._common(name, view), _fmt(m.get("frames"), "d"), _fmt(m.get("fps"), ".0f"),
                _fmt(m.get("goodness_pos"), ".1f"), _fmt(m.get("goodness_neg"), ".1f"),
                _fmt(_difference(m.get("goodness_pos"), m.get("goodness_neg")), "+.1f"),
                _fmt(m.get("p_pos")), _fmt(m.get("p_neg")), _fmt(m.get("dropped"), "d"), str(view.restarts),
                sparkline(view.trend, self.config.trend_points),
            )
        return table

    def _sleep(self) -> Table:
        table = self._table("sleep (trend: negatives/s)", (
            "worker", "status", "negatives", "neg/s", "staleness", "snapshots", "kind", "G neg/layer", "drops", "restarts", "trend",
        ))
        for name in sorted(self._names("sleep")):
            view = self.workers[name]
            m = view.metrics
            per_layer = m.get("goodness_neg") if isinstance(m.get("goodness_neg"), list) else []
            table.add_row(
                *self._common(name, view), _fmt(m.get("negatives"), "d"), _fmt(m.get("negatives_per_s"), ".0f"),
                _fmt(m.get("staleness"), ".1f"), _fmt(m.get("refreshes"), "d"), str(m.get("negative_kind") or "-"),
                " ".join(_fmt(g, ".1f") for g in per_layer) or "-", _fmt(m.get("dropped"), "d"), str(view.restarts),
                sparkline(view.trend, self.config.trend_points),
            )
        return table

    def _sink(self) -> Table:
        table = self._table("sink (progressive accuracy: predict, then learn; trend: recent accuracy)", (
            "worker", "status", "frames", "frames/s", "evaluated", "accuracy", "recent", "p50 ms", "drops", "restarts", "trend",
        ))
        for name in sorted(self._names("sink")):
            view = self.workers[name]
            m = view.metrics
            table.add_row(
                *self._common(name, view), _fmt(m.get("frames"), "d"), _fmt(m.get("fps"), ".0f"), _fmt(m.get("evaluated"), "d"),
                _percent(m.get("accuracy")), _percent(m.get("accuracy_recent")), _fmt(m.get("latency_p50_ms"), ".0f"),
                _fmt(m.get("dropped"), "d"), str(view.restarts), sparkline(view.trend, self.config.trend_points),
            )
        return table

    def _source(self) -> Table:
        table = self._table("source", ("worker", "status", "frames", "total", "frames/s", "dropped", "bad frames", "restarts"))
        for name in sorted(self._names("source")):
            view = self.workers[name]
            m = view.metrics
            table.add_row(
                *self._common(name, view), _fmt(m.get("frames"), "d"), _fmt(m.get("total"), "d"), _fmt(m.get("fps"), ".0f"),
                _fmt(m.get("dropped"), "d"), _fmt(m.get("bad_frames"), "d"), str(view.restarts),
            )
        return table

    def _others(self) -> Table:
        """The monitor itself, and any worker kind this dashboard does not know yet."""
        shown = {n for kind in ("layer", "sleep", "sink", "source") for n in self._names(kind)}
        table = self._table("other workers", ("worker", "status", "kind", "uptime s", "restarts"))
        for name in sorted(set(self.workers) - shown):
            view = self.workers[name]
            table.add_row(*self._common(name, view), str(view.metrics.get("kind") or "-"), _fmt(view.metrics.get("uptime_s"), ".0f"), str(view.restarts))
        return table


def _percent(value: Any) -> str:
    return "-" if not isinstance(value, (int, float)) or isinstance(value, bool) else f"{100 * value:.1f} %"


def render_text(board: Dashboard, width: int = 200) -> str:
    """The dashboard as plain text, as a terminal would show it (tests, logs)."""
    console = Console(record=True, width=width, file=io.StringIO(), color_system=None)
    console.print(board.render())
    return console.export_text()
