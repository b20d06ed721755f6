"""`--tensorboard DIR`: the monitor feed as TensorBoard scalars, one tag per worker and figure (`layer1/goodness_pos`).

Needs the optional `tensorboard` package (torch's SummaryWriter writes through it); without it,
`TensorBoardLog(...)` raises `TensorBoardMissing` with a one-line message before anything runs.
"""

from __future__ import annotations

import time
from typing import Any

# The figures worth a chart, by worker kind; other fields (counters of rare events, ids) stay out.
SCALARS: dict[str, tuple[str, ...]] = {
    "layer": ("goodness_pos", "goodness_neg", "p_pos", "p_neg", "fps", "dropped", "staleness", "latency_ms", "frames"),
    "sleep": ("negatives_per_s", "staleness", "negatives", "dropped"),
    "sink": ("accuracy", "accuracy_recent", "fps", "latency_p50_ms", "latency_p99_ms", "frames", "dropped"),
    "source": ("fps", "frames", "dropped", "bad_frames"),
}


class TensorBoardMissing(Exception):
    """The `tensorboard` package is not installed; the message is one line."""


class TensorBoardLog:
    """Writes each metrics message as scalars. step = whole seconds since logging began, the same clock for every
    worker (a worker's own counters restart with it, and TensorBoard drops points whose step goes backwards)."""

    def __init__(self, directory: str, clock=time.monotonic):
        try:
            from torch.utils.tensorboard import (
                SummaryWriter,  # imports `tensorboard`; ImportError without it
            )
        except ImportError as exc:
            raise TensorBoardMissing(f"--tensorboard needs the tensorboard package (pip install tensorboard, or pip install 'ffstream[tensorboard]'): {exc}") from None
        self.writer = SummaryWriter(log_dir=directory, flush_secs=5)  # seconds; TensorBoard sees a live run within that
        self.clock = clock
        self.started = clock()
        self.written = 0  # scalars written

    def add(self, worker: str, metrics: dict[str, Any]) -> None:
        step = int(self.clock() - self.started)
        for key in SCALARS.get(str(metrics.get("kind")), ()):
            value = metrics.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{worker}/{key}", float(value), step)
                self.written += 1
        if metrics.get("kind") == "sleep" and isinstance(metrics.get("goodness_neg"), list):
            for index, value in enumerate(metrics["goodness_neg"], start=1):  # the snapshot's goodness, per layer
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(f"sleep/goodness_neg_layer{index}", float(value), step)
                    self.written += 1

    def close(self) -> None:
        self.writer.close()
