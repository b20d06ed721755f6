"""Live novelty in the sink: each frame's goodness per layer, calibrated on the recent frames, and alerts.

`ffstream score`'s θ-novelty compares goodness with θ, which says how a frame sits against the training objective
but not against what this camera usually shows (a layer can sit far above θ on every frame). Here each layer is put
on the scale of its own recent goodness instead, by running quantiles over a window of the last `window` frames:

    z_l = |G_l − median_l| / IQR_l           IQR: the interquartile range, q75 − q25, of the window
    novelty = max_l z_l

Two-sided and the largest over layers, because foreign footage does not move every layer the same way: measured
on vtest.avi with other footage spliced in (`ffstream bench novelty`, BENCHMARKS.md), a layer can rank a foreign
clip as *more* familiar than the training footage (Megamind.avi at a conv stack's layer 1) while another ranks it
less, and on a tiny stack inserted noise raised layer 1's goodness and lowered layer 2's, so the mean of one-sided
scores cancelled out. Any layer far from its usual goodness, in either direction, makes a frame novel.

0 is a typical recent frame; 3 is three interquartile ranges from the median at some layer. A frame is scored
against the window before it joins it. An alert fires when novelty stays above `threshold` for `alert_frames`
frames in a row, once per such run (it re-arms when a frame falls back below the threshold).

>>> meter = NoveltyMeter(window=200, warmup=50, threshold=3.0, alert_frames=2)
>>> for g in np.random.default_rng(0).normal(100, 5, (100, 2)): _ = meter.add(g)
>>> [meter.add(np.array([40.0, 160.0]))[1] is not None for _ in range(3)]   # an alert at the 2nd frame out, once
[False, True, False]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ffstream.monitor.stats import Histogram

REFRESH_FRAMES = 16  # frames between recomputations of the quantiles: the window changes little in 16 frames
MIN_IQR = 1e-6  # relative to |median|: a layer whose recent goodness is constant does not divide by zero
BUCKETS = (0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0)  # novelty histogram's upper bounds (novelty is >= 0)


@dataclass
class Alert:
    frame: int  # the frame (0-based, as the sink counts them) that completed the run above the threshold
    score: float  # its novelty
    frames_above: int  # the run's length so far (alert_frames when it fires)


class NoveltyMeter:
    """Running per-layer quantiles of goodness over a ring of recent frames; `add` scores a frame and says if it alerts."""

    def __init__(self, window: int = 1000, warmup: int = 100, threshold: float = 3.0, alert_frames: int = 5,
                 variant: str = "max"):
        if not 1 <= warmup <= window or alert_frames < 1:
            raise ValueError(f"novelty: need 1 <= warmup <= window and alert_frames >= 1, got {warmup}, {window}, {alert_frames}")
        self.window = window  # frames the quantiles are taken over
        self.warmup = warmup  # frames before the first score: quantiles of fewer would be noise
        self.threshold = threshold  # novelty above which a frame counts towards an alert
        self.alert_frames = alert_frames  # frames in a row above the threshold that raise one alert
        self.sign = 1.0 if variant == "max" else -1.0  # "max": real frames have high goodness, so low is less good
        self._ring: np.ndarray | None = None  # (window, L) goodness of recent frames, allocated at the first frame
        self._filled = 0  # frames in the ring (at most window)
        self._next = 0  # where the next frame goes
        self._since_refresh = REFRESH_FRAMES
        self._median: np.ndarray | None = None  # (L,)
        self._iqr: np.ndarray | None = None  # (L,)
        self.frames = 0  # frames seen
        self.last: float | None = None  # the latest frame's novelty; None during warm-up
        self.last_layers: np.ndarray | None = None  # (L,) the latest frame's z per layer; None during warm-up
        self.last_below: np.ndarray | None = None  # (L,) the same signed, (median − G) / IQR: positive when less good
        self.above = 0  # frames in a row above the threshold, up to the latest
        self.alerts = 0  # alerts raised
        self.histogram = Histogram(BUCKETS)  # the scored frames' novelty (after warm-up)

    def add(self, goodness: np.ndarray, frame: int | None = None) -> tuple[float | None, Alert | None]:
        """goodness: (L,) of one frame -> (its novelty or None in warm-up, an Alert if this frame raises one).
        frame: its index in the stream, for the alert (default: the frames this meter has seen before it)."""
        goodness = np.asarray(goodness, np.float64)
        if self._ring is None:
            self._ring = np.empty((self.window, len(goodness)))
        elif goodness.shape != self._ring.shape[1:]:
            raise ValueError(f"goodness of {goodness.shape} layers, the window holds {self._ring.shape[1]}")
        if not np.isfinite(goodness).all():
            return None, None  # neither scored nor kept: one bad frame must not poison the quantiles
        score = self._score(goodness) if self._filled >= self.warmup else None
        self._ring[self._next] = goodness
        self._next = (self._next + 1) % self.window
        self._filled = min(self._filled + 1, self.window)
        self._since_refresh += 1
        frame = self.frames if frame is None else frame
        self.frames += 1
        self.last = score
        if score is None:
            self.last_layers = self.last_below = None
            return None, None
        self.histogram.add(score)
        self.above = self.above + 1 if score > self.threshold else 0
        if self.above == self.alert_frames:
            self.alerts += 1
            return score, Alert(frame, score, self.above)
        return score, None

    def _score(self, goodness: np.ndarray) -> float:
        if self._since_refresh >= REFRESH_FRAMES or self._median is None:
            q25, median, q75 = np.quantile(self._ring[: self._filled], (0.25, 0.5, 0.75), axis=0)
            self._median = median
            self._iqr = np.maximum(q75 - q25, MIN_IQR * np.maximum(np.abs(median), 1.0))
            self._since_refresh = 0
        self.last_below = self.sign * (self._median - goodness) / self._iqr  # (L,)
        self.last_layers = np.abs(self.last_below)
        return float(self.last_layers.max())


def replay(goodness: np.ndarray, window: int = 1000, warmup: int = 100, threshold: float = 3.0,
           alert_frames: int = 5, below: np.ndarray | None = None) -> tuple[np.ndarray, list[Alert]]:
    """What a sink's meter says of a stream, offline: goodness (N, L) in stream order -> novelty (N,) (NaN in
    warm-up and for dropped frames) and the alerts raised, frames counted from 0. below: an (N, L) array that gets
    each frame's signed per-layer z, (median − G) / IQR (NaN where not scored), for comparisons."""
    meter = NoveltyMeter(window, warmup, threshold, alert_frames)
    scores = np.full(len(goodness), np.nan)
    alerts: list[Alert] = []
    for i, g in enumerate(np.asarray(goodness, np.float64)):
        score, alert = meter.add(g, frame=i)
        if score is not None:
            scores[i] = score
        if below is not None:
            below[i] = meter.last_below if score is not None else np.nan
        if alert is not None:
            alerts.append(alert)
    return scores, alerts
