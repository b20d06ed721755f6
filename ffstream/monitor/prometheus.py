"""Every worker's latest metrics for the monitor's /metrics, through prometheus_client (text format 0.0.4).

>>> text = render({"layer2": {"kind": "layer", "layer": 2, "goodness_pos": 812.5}}, {"layer2": 0.4})
>>> 'ffstream_layer_goodness{layer="2",phase="pos"} 812.5' in text
True

Names follow Prometheus' conventions: a base unit in the name (seconds), `_total` on counters,
a `worker` or `layer` label instead of one name per worker. A counter that restarts with its
worker goes back to 0, which Prometheus reads as a counter reset.

The monitor keeps no Prometheus objects of its own: `WorkerMetrics` is a custom collector that turns one snapshot
of the monitor's latest metrics into metric families, and prometheus_client writes the text (escaping included).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

# Not prometheus_client's CONTENT_TYPE_LATEST: since 0.22 that names version 1.0.0, and generate_latest writes 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# name -> (family class, label names, HELP text), in the order /metrics lists them.
FAMILIES: dict[str, tuple[type[Metric], tuple[str, ...], str]] = {
    "ffstream_worker_metrics_age_seconds": (GaugeMetricFamily, ("worker",), "Seconds since the monitor last heard from the worker."),
    "ffstream_worker_uptime_seconds": (GaugeMetricFamily, ("worker",), "Seconds since the worker process started."),
    "ffstream_frames_total": (CounterMetricFamily, ("worker",), "Frames the worker has learned from (source: sent)."),
    "ffstream_frames_per_second": (GaugeMetricFamily, ("worker",), "Frames per second through the worker since its first batch."),
    "ffstream_frames_dropped_total": (CounterMetricFamily, ("worker",),
                                      "Frames a live source skipped, or messages a worker dropped as malformed or unusable."),
    "ffstream_messages_rejected_total": (CounterMetricFamily, ("worker", "reason"), "Messages a worker dropped, by reason."),
    "ffstream_layer_goodness": (GaugeMetricFamily, ("layer", "phase"),
                                "Recent mean goodness of a layer (sum of squared activities), on positive or negative data."),
    "ffstream_layer_p_positive": (GaugeMetricFamily, ("layer", "phase"),
                                  "Recent mean probability that a layer calls its input positive, on positive or negative data."),
    "ffstream_layer_threshold": (GaugeMetricFamily, ("layer",), "A layer's goodness threshold theta."),
    "ffstream_layer_updates_total": (CounterMetricFamily, ("layer",), "Optimiser steps a layer has taken."),
    "ffstream_layer_negative_updates_total": (CounterMetricFamily, ("layer",), "Negative batches a layer has received from the sleep worker."),
    "ffstream_layer_staleness": (GaugeMetricFamily, ("layer",),
                                 "Recent mean age of a layer's negatives: its weight versions between snapshot and use."),
    "ffstream_layer_weights_version": (GaugeMetricFamily, ("layer",), "A layer's weight version (steps since it was created)."),
    "ffstream_layer_rollbacks_total": (CounterMetricFamily, ("layer",), "Steps a layer undid because its weights went non-finite."),
    "ffstream_sleep_negatives_total": (CounterMetricFamily, (), "Negative examples the sleep worker has made."),
    "ffstream_sleep_negatives_per_second": (GaugeMetricFamily, (), "Negative examples the sleep worker makes per second."),
    "ffstream_sleep_staleness": (GaugeMetricFamily, (), "Mean age of the sleep worker's snapshots, in wake batches."),
    "ffstream_sleep_snapshot_refreshes_total": (CounterMetricFamily, (), "Weight snapshots the sleep worker has pulled."),
    "ffstream_accuracy": (GaugeMetricFamily, ("window",),
                          "Progressive accuracy of the sink's readout (predict, then learn), over the run or recent frames."),
    "ffstream_evaluated_frames_total": (CounterMetricFamily, (), "Labelled frames the sink has scored."),
    "ffstream_latency_seconds": (HistogramMetricFamily, (), "Seconds from the source's capture of a frame to the sink."),
    "ffstream_novelty": (GaugeMetricFamily, (),
                         "The latest frame's novelty: interquartile ranges from the recent median goodness, either way, largest over layers."),
    "ffstream_layer_novelty": (GaugeMetricFamily, ("layer",),
                               "The latest frame's novelty at one layer (ffstream_novelty is the largest of them)."),
    "ffstream_novelty_score": (HistogramMetricFamily, (), "Every scored frame's novelty (as ffstream_novelty), over the run."),
    "ffstream_novelty_alerts_total": (CounterMetricFamily, (),
                                      "Novelty alerts: runs of frames above the threshold, novelty.alert_frames long."),
    "ffstream_source_bad_frames_total": (CounterMetricFamily, (), "Frames the source could not decode and skipped."),
    "ffstream_source_frames_expected": (GaugeMetricFamily, (), "Frames the source will deliver, when known."),
    "ffstream_monitor_forwarded_total": (CounterMetricFamily, (), "Metrics messages the monitor has forwarded to its subscribers."),
}


def render(latest: dict[str, dict], ages: dict[str, float]) -> str:
    """latest: worker name -> its last metrics; ages: worker name -> seconds since the monitor heard from it."""
    registry = CollectorRegistry(auto_describe=False)  # one scrape's registry: the snapshot is already taken
    registry.register(WorkerMetrics(latest, ages))
    return generate_latest(registry).decode()


class WorkerMetrics(Collector):
    """A custom collector over one snapshot of the monitor's latest metrics; a family with no samples is left out."""

    def __init__(self, latest: dict[str, dict], ages: dict[str, float]) -> None:
        self.latest = latest  # worker name -> the last metrics dict it published
        self.ages = ages  # worker name -> seconds since the monitor heard from it

    def collect(self) -> Iterator[Metric]:
        families = {name: cls(name, help_text, labels=list(labels)) if cls is not HistogramMetricFamily else cls(name, help_text)
                    for name, (cls, labels, help_text) in FAMILIES.items()}
        add = _Adder(families)
        for name in sorted(self.latest):
            m = self.latest[name]
            add("ffstream_worker_metrics_age_seconds", (name,), self.ages.get(name))
            add("ffstream_worker_uptime_seconds", (name,), m.get("uptime_s"))
            kind = m.get("kind")
            if kind in ("source", "layer", "sink"):
                add("ffstream_frames_total", (name,), m.get("frames"))
                add("ffstream_frames_per_second", (name,), m.get("fps"))
            add("ffstream_frames_dropped_total", (name,), m.get("dropped"))
            rejected = m.get("rejected")
            for reason, count in sorted(rejected.items()) if isinstance(rejected, dict) else []:
                add("ffstream_messages_rejected_total", (name, reason), count)
            if kind == "layer":
                _layer(add, m)
            elif kind == "sleep":
                _sleep(add, m)
            elif kind == "sink":
                _sink(add, families, m)
            elif kind == "source":
                add("ffstream_source_bad_frames_total", (), m.get("bad_frames"))
                add("ffstream_source_frames_expected", (), m.get("total"))
            elif kind == "monitor":
                add("ffstream_monitor_forwarded_total", (), m.get("forwarded"))
        yield from (family for family in families.values() if family.samples)


class _Adder:
    """Adds one sample to a family by name; values that are not finite numbers are left out."""

    def __init__(self, families: dict[str, Metric]) -> None:
        self.families = families  # name -> the family being filled for this scrape

    def __call__(self, name: str, labels: tuple[Any, ...], value: Any) -> None:
        if _finite(value):
            self.families[name].add_metric([str(v) for v in labels], value)


def _layer(add: _Adder, m: dict) -> None:
    layer = m.get("layer")
    for phase in ("pos", "neg"):
        add("ffstream_layer_goodness", (layer, phase), m.get(f"goodness_{phase}"))
        add("ffstream_layer_p_positive", (layer, phase), m.get(f"p_{phase}"))
    add("ffstream_layer_threshold", (layer,), m.get("threshold"))
    add("ffstream_layer_updates_total", (layer,), m.get("updates"))
    add("ffstream_layer_negative_updates_total", (layer,), m.get("negative_updates"))
    add("ffstream_layer_staleness", (layer,), m.get("staleness"))
    add("ffstream_layer_weights_version", (layer,), m.get("weights_version"))
    add("ffstream_layer_rollbacks_total", (layer,), m.get("rollbacks"))


def _sleep(add: _Adder, m: dict) -> None:
    add("ffstream_sleep_negatives_total", (), m.get("negatives"))
    add("ffstream_sleep_negatives_per_second", (), m.get("negatives_per_s"))
    add("ffstream_sleep_staleness", (), m.get("staleness"))
    add("ffstream_sleep_snapshot_refreshes_total", (), m.get("refreshes"))


def _sink(add: _Adder, families: dict[str, Metric], m: dict) -> None:
    add("ffstream_accuracy", ("run",), m.get("accuracy"))
    add("ffstream_accuracy", ("recent",), m.get("accuracy_recent"))
    add("ffstream_evaluated_frames_total", (), m.get("evaluated"))
    add("ffstream_novelty", (), m.get("novelty"))
    add("ffstream_novelty_alerts_total", (), m.get("novelty_alerts"))
    layers = m.get("novelty_layers")
    for i, z in enumerate(layers if isinstance(layers, list) else [], start=1):
        add("ffstream_layer_novelty", (i,), z)
    _histogram(families["ffstream_latency_seconds"], m.get("latency_histogram_s"))
    _histogram(families["ffstream_novelty_score"], m.get("novelty_histogram"))


def _histogram(family: Metric, hist: Any) -> None:
    """A worker's histogram, left out unless whole."""
    if _valid_histogram(hist):  # cumulative counts per upper bound; the +Inf bucket holds them all (and gives _count)
        buckets = [(floatToGoString(float(le)), count) for le, count in zip(hist["le"], hist["counts"])]
        family.add_metric([], buckets + [("+Inf", hist["count"])], sum_value=hist["sum"])


def _valid_histogram(h: Any) -> bool:
    """A worker's histogram is only exposed when it is whole: same lengths, counts that never fall."""
    if not isinstance(h, dict):
        return False
    le, counts, total = h.get("le"), h.get("counts"), h.get("count")
    numbers = lambda xs: isinstance(xs, list) and all(_finite(x) for x in xs)  # noqa: E731
    return (numbers(le) and numbers(counts) and len(le) == len(counts) and isinstance(total, int) and _finite(h.get("sum"))
            and all(a <= b for a, b in zip(counts, counts[1:] + [total])) and le == sorted(le))


def _finite(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
