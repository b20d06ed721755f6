"""deploy/grafana/ffstream.json: every expression names only metrics that a real monitor's /metrics exports."""

from __future__ import annotations

import json
import re

from ffstream.monitor.novelty import NoveltyMeter
from tests.processes import ROOT, eventually
from tests.test_web import LAYER_METRICS, get, monitor, publish, sink_metrics  # noqa: F401  monitor: the fixture

DASHBOARD = ROOT / "deploy" / "grafana" / "ffstream.json"
METRIC = re.compile(r"\bffstream_[a-z_]+\b")
# What the dashboard must show (issue 23): goodness per layer, p, frames/s, novelty, restarts
REQUIRED = {"ffstream_layer_goodness", "ffstream_layer_p_positive", "ffstream_frames_per_second", "ffstream_novelty",
            "ffstream_novelty_score_bucket", "ffstream_worker_uptime_seconds"}


def expressions(dashboard: dict) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def scraped_names(monitor) -> set[str]:  # noqa: F811
    """Sample names of a real scrape, after every kind of worker has published its metrics once."""
    meter = NoveltyMeter(window=20, warmup=5)
    for i in range(30):
        meter.add([100.0 + i % 3])
    sink = {**sink_metrics([0.01, 0.2]), "novelty": meter.last, "novelty_histogram": meter.histogram.get(), "novelty_alerts": 0,
            "uptime_s": 3.0}
    publish(monitor, "metrics", "layer2", metrics=LAYER_METRICS)
    publish(monitor, "metrics", "sink", metrics=sink)
    publish(monitor, "metrics", "source", metrics={"kind": "source", "frames": 7, "fps": 30.0, "dropped": 0, "bad_frames": 0, "total": 9,
                                                   "uptime_s": 3.0})
    publish(monitor, "metrics", "sleep", metrics={"kind": "sleep", "negatives": 64, "negatives_per_s": 20.0, "staleness": 1.5, "refreshes": 2,
                                                  "uptime_s": 3.0})
    eventually(lambda: len(monitor.latest) >= 4, what="four workers' metrics at the monitor")
    text = get(monitor, "/metrics").read().decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_the_dashboard_loads_and_every_expression_names_an_exported_metric(monitor):  # noqa: F811
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] == "ffstream" and dashboard["panels"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])  # Grafana needs unique panel ids
    exprs = expressions(dashboard)
    assert exprs and all(METRIC.search(e) for e in exprs), "an expression without an ffstream metric"
    exported = scraped_names(monitor)
    used = {name for e in exprs for name in METRIC.findall(e)}
    assert used <= exported, f"the dashboard names metrics /metrics does not export: {sorted(used - exported)}"
    assert REQUIRED <= used, f"missing from the dashboard: {sorted(REQUIRED - used)}"
    for expr in exprs:  # balanced brackets: a typo Grafana would only show as a red panel
        for open_, close in ("()", "{}", "[]"):
            assert expr.count(open_) == expr.count(close), expr
