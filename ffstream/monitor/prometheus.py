"""Every worker's latest metrics in the Prometheus text exposition format (version 0.0.4), for the monitor's /metrics.

>>> text = render({"layer2": {"kind": "layer", "layer": 2, "goodness_pos": 812.5}}, {"layer2": 0.4})
>>> 'ffstream_layer_goodness{layer="2",phase="pos"} 812.5' in text
True

Names follow Prometheus' conventions: a base unit in the name (seconds), `_total` on counters,
a `worker` or `layer` label instead of one name per worker. A counter that restarts with its
worker goes back to 0, which Prometheus reads as a counter reset.
"""

from __future__ import annotations

import math
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Exposition:
    """Metric families in the order they are declared; each family's samples under its HELP and TYPE lines."""

    def __init__(self) -> None:
        self.families: dict[str, tuple[str, str, list[str]]] = {}  # name -> (type, help, sample lines)

    def declare(self, name: str, kind: str, help_text: str) -> None:
        self.families.setdefault(name, (kind, help_text, []))

    def add(self, name: str, labels: dict[str, Any], value: Any, suffix: str = "") -> None:
        """One sample of a declared family; values that are not finite numbers are left out."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return
        label_text = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
        self.families[name][2].append(f"{name}{suffix}{{{label_text}}} {_number(value)}" if labels else f"{name}{suffix} {_number(value)}")

    def text(self) -> str:
        lines = []
        for name, (kind, help_text, samples) in self.families.items():
            if samples:
                lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]
        return "\n".join(lines) + "\n"


def render(latest: dict[str, dict], ages: dict[str, float]) -> str:
    """latest: worker name -> its last metrics; ages: worker name -> seconds since the monitor heard from it."""
    out = Exposition()
    _declare(out)
    for name in sorted(latest):
        m, worker = latest[name], {"worker": name}
        out.add("ffstream_worker_metrics_age_seconds", worker, ages.get(name))
        out.add("ffstream_worker_uptime_seconds", worker, m.get("uptime_s"))
        if m.get("kind") in ("source", "layer", "sink"):
            out.add("ffstream_frames_total", worker, m.get("frames"))
            out.add("ffstream_frames_per_second", worker, m.get("fps"))
        out.add("ffstream_frames_dropped_total", worker, m.get("dropped"))
        for reason, count in sorted((m.get("rejected") or {}).items()) if isinstance(m.get("rejected"), dict) else []:
            out.add("ffstream_messages_rejected_total", {**worker, "reason": reason}, count)
        kind = m.get("kind")
        if kind == "layer":
            _layer(out, m)
        elif kind == "sleep":
            _sleep(out, m)
        elif kind == "sink":
            _sink(out, m)
        elif kind == "source":
            out.add("ffstream_source_bad_frames_total", {}, m.get("bad_frames"))
            out.add("ffstream_source_frames_expected", {}, m.get("total"))
        elif kind == "monitor":
            out.add("ffstream_monitor_forwarded_total", {}, m.get("forwarded"))
    return out.text()


def _declare(out: Exposition) -> None:
    for name, kind, help_text in (
        ("ffstream_worker_metrics_age_seconds", "gauge", "Seconds since the monitor last heard from the worker."),
        ("ffstream_worker_uptime_seconds", "gauge", "Seconds since the worker process started."),
        ("ffstream_frames_total", "counter", "Frames the worker has learned from (source: sent)."),
        ("ffstream_frames_per_second", "gauge", "Frames per second through the worker since its first batch."),
        ("ffstream_frames_dropped_total", "counter", "Frames a live source skipped, or messages a worker dropped as malformed or unusable."),
        ("ffstream_messages_rejected_total", "counter", "Messages a worker dropped, by reason."),
        ("ffstream_layer_goodness", "gauge", "Recent mean goodness of a layer (sum of squared activities), on positive or negative data."),
        ("ffstream_layer_p_positive", "gauge", "Recent mean probability that a layer calls its input positive, on positive or negative data."),
        ("ffstream_layer_threshold", "gauge", "A layer's goodness threshold theta."),
        ("ffstream_layer_updates_total", "counter", "Optimiser steps a layer has taken."),
        ("ffstream_layer_negative_updates_total", "counter", "Negative batches a layer has received from the sleep worker."),
        ("ffstream_layer_staleness", "gauge", "Recent mean age of a layer's negatives: its weight versions between snapshot and use."),
        ("ffstream_layer_weights_version", "gauge", "A layer's weight version (steps since it was created)."),
        ("ffstream_layer_rollbacks_total", "counter", "Steps a layer undid because its weights went non-finite."),
        ("ffstream_sleep_negatives_total", "counter", "Negative examples the sleep worker has made."),
        ("ffstream_sleep_negatives_per_second", "gauge", "Negative examples the sleep worker makes per second."),
        ("ffstream_sleep_staleness", "gauge", "Mean age of the sleep worker's snapshots, in wake batches."),
        ("ffstream_sleep_snapshot_refreshes_total", "counter", "Weight snapshots the sleep worker has pulled."),
        ("ffstream_accuracy", "gauge", "Progressive accuracy of the sink's readout (predict, then learn), over the run or recent frames."),
        ("ffstream_evaluated_frames_total", "counter", "Labelled frames the sink has scored."),
        ("ffstream_latency_seconds", "histogram", "Seconds from the source's capture of a frame to the sink."),
        ("ffstream_source_bad_frames_total", "counter", "Frames the source could not decode and skipped."),
        ("ffstream_source_frames_expected", "gauge", "Frames the source will deliver, when known."),
        ("ffstream_monitor_forwarded_total", "counter", "Metrics messages the monitor has forwarded to its subscribers."),
    ):
        out.declare(name, kind, help_text)


def _layer(out: Exposition, m: dict) -> None:
    layer = {"layer": m.get("layer")}
    for phase in ("pos", "neg"):
        out.add("ffstream_layer_goodness", {**layer, "phase": phase}, m.get(f"goodness_{phase}"))
        out.add("ffstream_layer_p_positive", {**layer, "phase": phase}, m.get(f"p_{phase}"))
    out.add("ffstream_layer_threshold", layer, m.get("threshold"))
    out.add("ffstream_layer_updates_total", layer, m.get("updates"))
    out.add("ffstream_layer_negative_updates_total", layer, m.get("negative_updates"))
    out.add("ffstream_layer_staleness", layer, m.get("staleness"))
    out.add("ffstream_layer_weights_version", layer, m.get("weights_version"))
    out.add("ffstream_layer_rollbacks_total", layer, m.get("rollbacks"))


def _sleep(out: Exposition, m: dict) -> None:
    out.add("ffstream_sleep_negatives_total", {}, m.get("negatives"))
    out.add("ffstream_sleep_negatives_per_second", {}, m.get("negatives_per_s"))
    out.add("ffstream_sleep_staleness", {}, m.get("staleness"))
    out.add("ffstream_sleep_snapshot_refreshes_total", {}, m.get("refreshes"))


def _sink(out: Exposition, m: dict) -> None:
    out.add("ffstream_accuracy", {"window": "run"}, m.get("accuracy"))
    out.add("ffstream_accuracy", {"window": "recent"}, m.get("accuracy_recent"))
    out.add("ffstream_evaluated_frames_total", {}, m.get("evaluated"))
    hist = m.get("latency_histogram_s")
    if not _valid_histogram(hist):
        return
    for bound, count in zip(hist["le"], hist["counts"]):
        out.add("ffstream_latency_seconds", {"le": _number(float(bound))}, count, suffix="_bucket")
    out.add("ffstream_latency_seconds", {"le": "+Inf"}, hist["count"], suffix="_bucket")
    out.add("ffstream_latency_seconds", {}, hist["sum"], suffix="_sum")
    out.add("ffstream_latency_seconds", {}, hist["count"], suffix="_count")


def _valid_histogram(h: Any) -> bool:
    """A worker's histogram is only exposed when it is whole: same lengths, counts that never fall."""
    if not isinstance(h, dict):
        return False
    le, counts, total = h.get("le"), h.get("counts"), h.get("count")
    numbers = lambda xs: isinstance(xs, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in xs)  # noqa: E731
    return (numbers(le) and numbers(counts) and len(le) == len(counts) and isinstance(total, int) and isinstance(h.get("sum"), (int, float))
            and all(a <= b for a, b in zip(counts, counts[1:] + [total])) and le == sorted(le))


def _number(v: float) -> str:
    return str(v) if isinstance(v, int) else repr(float(v))  # repr: the shortest text that reads back exactly


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
