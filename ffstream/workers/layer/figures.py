"""A layer worker's figures: the rows it learned and evaluated, their rate, and how its weights judge positives and
negatives, as recent averages (EMA) and over the whole run."""

from __future__ import annotations

import time
from typing import Any

from ffstream.monitor.stats import Ema, Mean, Rate

RECENT = ("goodness_pos", "p_pos", "goodness_neg", "p_neg", "latency_ms", "staleness")  # latency: recent only


class LayerFigures:
    def __init__(self) -> None:
        self.frames = 0  # learn rows taken (stepped now or held for a later step)
        self.eval_frames = 0  # eval rows forwarded
        self.fps = Rate(time.monotonic)  # learn rows per second
        self.recent = {k: Ema(0.05) for k in RECENT}
        self.whole_run = {k: Mean() for k in RECENT if k != "latency_ms"}

    def record(self, figures: dict[str, float], rows: int) -> None:
        """Figures of `rows` rows, e.g. {"goodness_neg": g, "p_neg": p}: each a recent average and a whole-run mean."""
        for key, value in figures.items():
            self.recent[key].add(value)
            self.whole_run[key].add(value, rows)

    def learned(self, rows: int, stats: dict[str, float]) -> None:
        """A learn micro-batch of `rows` rows went on, with its positive stats ({"goodness": g, "p": p})."""
        self.frames += rows
        self.fps.add(rows)
        self.record({"goodness_pos": stats["goodness"], "p_pos": stats["p"]}, rows)

    def metrics(self) -> dict[str, Any]:
        return {"frames": self.frames, "eval_frames": self.eval_frames, "fps": self.fps.get(),
                **{k: v.get() for k, v in self.recent.items()}, **{f"{k}_mean": v.get() for k, v in self.whole_run.items()}}
