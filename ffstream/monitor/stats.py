"""Small running statistics that workers report."""

from __future__ import annotations

import bisect
import itertools
import math
import time
from contextlib import contextmanager


class Ema:
    """An exponential moving average that starts at the first value instead of at zero."""

    def __init__(self, alpha: float = 0.05):
        self.alpha = alpha
        self.value: float | None = None

    def add(self, x: float) -> None:
        self.value = x if self.value is None else (1 - self.alpha) * self.value + self.alpha * x

    def get(self) -> float | None:
        return None if self.value is None else round(self.value, 6)


class Mean:
    """A weighted mean over the whole run."""

    def __init__(self) -> None:
        self.total = 0.0
        self.weight = 0.0

    def add(self, x: float, weight: float = 1.0) -> None:
        if math.isfinite(x):
            self.total += x * weight
            self.weight += weight

    def get(self) -> float | None:
        return round(self.total / self.weight, 6) if self.weight else None


class Rate:
    """Events per second from the first event to the latest (the first batch only starts the clock). Time after the
    latest event does not count: a finished stream keeps its rate while the worker waits to be stopped, and the
    end-of-stream handshake after the last frame (barrier, acknowledgement) is not charged to the frames."""

    def __init__(self, clock) -> None:
        self.clock = clock
        self.first: float | None = None
        self.latest: float | None = None
        self.count = 0  # events after the first batch

    def add(self, n: int) -> None:
        self.latest = self.clock()
        if self.first is None:
            self.first = self.latest
            return
        self.count += n

    def get(self) -> float:
        if self.first is None or self.latest is None:
            return 0.0
        elapsed = self.latest - self.first
        return round(self.count / elapsed, 2) if elapsed > 0 else 0.0


class Histogram:
    """Counts of observations per bucket, cumulative as Prometheus wants them: counts[i] = observations ≤ bounds[i]."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = tuple(sorted(bounds))
        self.per_bucket = [0] * (len(self.bounds) + 1)  # the last one is above every bound (+Inf)
        self.sum = 0.0
        self.count = 0

    def add(self, x: float, n: int = 1) -> None:
        """n observations of the value x (a batch of frames that share one timestamp)."""
        if not math.isfinite(x):
            return
        self.per_bucket[bisect.bisect_left(self.bounds, x)] += n
        self.sum += x * n
        self.count += n

    def get(self) -> dict:
        """{"le": bounds, "counts": cumulative counts per bound, "sum": …, "count": …}; +Inf is "count"."""
        cumulative = list(itertools.accumulate(self.per_bucket))[: len(self.bounds)]
        return {"le": list(self.bounds), "counts": cumulative, "sum": round(self.sum, 6), "count": self.count}


class Phases:
    """Seconds a worker's loop spends in each named phase, exclusive of the phases nested inside it.

    `with phases("forward"): ...`; `get()` gives {phase: seconds}, published as `busy_s` so that a
    benchmark can say where the time goes (wait, recv, forward, learn, send, snapshot, ...).
    """

    def __init__(self, clock=time.perf_counter) -> None:
        self.clock = clock
        self.seconds: dict[str, float] = {}
        self._stack: list[list] = []  # [name, started] of the phases now open, innermost last

    @contextmanager
    def __call__(self, name: str):
        now = self.clock()
        if self._stack:  # the enclosing phase stops counting while this one runs
            outer = self._stack[-1]
            self.seconds[outer[0]] = self.seconds.get(outer[0], 0.0) + now - outer[1]
        self._stack.append([name, now])
        try:
            yield
        finally:
            now = self.clock()
            _, started = self._stack.pop()
            self.seconds[name] = self.seconds.get(name, 0.0) + now - started
            if self._stack:
                self._stack[-1][1] = now  # the enclosing phase counts again from here

    def get(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in sorted(self.seconds.items())}
