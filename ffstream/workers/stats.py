"""Small running statistics that workers report."""

from __future__ import annotations

import math


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
    """Events per second since the first event (the first batch only starts the clock)."""

    def __init__(self, clock) -> None:
        self.clock = clock
        self.first: float | None = None
        self.count = 0  # events after the first batch

    def add(self, n: int) -> None:
        if self.first is None:
            self.first = self.clock()
            return
        self.count += n

    def get(self) -> float:
        if self.first is None:
            return 0.0
        elapsed = self.clock() - self.first
        return round(self.count / elapsed, 2) if elapsed > 0 else 0.0
