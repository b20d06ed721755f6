"""`ffstream bench throughput` end to end on tiny sizes: every figure is there and is a finite positive number.

No speed assertions: speed targets belong in BENCHMARKS.md, not in tests.
"""

import json
import math

from ffstream.bench.throughput import (
    format_result,
    learning_flops_per_frame,
    throughput_benchmark,
    throughput_config,
)


def test_flop_count_is_eight_d_n_per_layer():
    cfg = throughput_config((64, 32), batch=8, frames=100)
    assert learning_flops_per_frame(cfg) == 8 * (784 * 64 + 64 * 32)


def test_throughput_benchmark_reports_every_figure():
    r = throughput_benchmark(layers=(64, 64), batch=16, frames=2000, memory_seconds=5, latency_rate_fps=30, latency_frames=60)
    json.dumps(r)  # one JSON object
    for key in ("inprocess_fps", "pipeline_fps", "ratio", "peak_fraction", "latency_p50_ms", "latency_p99_ms"):
        assert isinstance(r[key], (int, float)) and math.isfinite(r[key]) and r[key] > 0, f"{key} = {r[key]!r}"
    assert set(r["rss_growth"]) == {"layer1", "layer2"}, f"one RSS figure per layer worker, got {r['rss_growth']}"
    assert all(math.isfinite(g) for g in r["rss_growth"].values())
    assert r["latency"]["frames"] == 60, "the paced latency run delivers all its frames"
    # Steps are reported: the latency run learns on a schedule (a step per 32 rows: 60 frames are 2, 3 with the end),
    # the frames/s runs one step per batch in both (2000 / 16 = 125).
    assert r["latency_learn_every_rows"] == 32 and all(1 <= s <= 3 for s in r["latency_steps_per_layer"]), r["latency_steps_per_layer"]
    assert r["inprocess_steps_per_layer"] == 125 and all(s == 125 for s in r["pipeline_steps_per_layer"]), r["pipeline_steps_per_layer"]
    assert "ratio pipeline / in-process" in format_result(r)
