"""Live novelty: the meter's calibration and alerts, and a real sink worker that scores, exports and alerts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import zmq
from safetensors.numpy import load_file

from ffstream.config import ConfigError, load
from ffstream.monitor.prometheus import render
from ffstream.net import wire
from ffstream.monitor.novelty import NoveltyMeter, replay
from ffstream.workers.sink import SinkWorker
from tests.media import write_video
from tests.processes import ROOT, env, eventually
from tests.rig import recv_multipart, running, send, unique
from tests.test_api import train_tiny


def steady(n: int, layers: int = 3, seed: int = 0) -> np.ndarray:
    """Goodness of n ordinary frames: each layer around its own level, with its own spread."""
    rng = np.random.default_rng(seed)
    return rng.normal([500.0, 300.0, 80.0][:layers], [20.0, 5.0, 1.0][:layers], (n, layers))


def test_warm_up_then_typical_frames_score_near_zero_and_stay_quiet():
    meter = NoveltyMeter(window=500, warmup=100, threshold=3.0, alert_frames=5)
    scores = [meter.add(g)[0] for g in steady(5000)]
    assert scores[:100] == [None] * 100 and meter.last is not None
    # calibrated: a typical frame sits half an IQR from the median at a layer, so its largest over 3 layers is near 1
    assert 0.3 < float(np.median(scores[100:])) < 1.5
    assert meter.alerts == 0  # no false alert in 4,900 steady frames (target: at most 1 per 1,000)
    hist = meter.histogram.get()
    assert hist["count"] == 4900 and hist["counts"] == sorted(hist["counts"])


def test_a_run_of_unusual_frames_alerts_once_at_the_nth_and_rearms():
    meter = NoveltyMeter(window=500, warmup=100, threshold=3.0, alert_frames=4)
    for g in steady(300):
        meter.add(g)
    low = np.array([420.0, 280.0, 70.0])  # every layer well below its recent median
    alerts = [meter.add(low, frame=1000 + i)[1] for i in range(10)]
    fired = [a for a in alerts if a is not None]
    assert [a.frame for a in fired] == [1003] and fired[0].frames_above == 4 and fired[0].score > 3
    meter.add(steady(1, seed=9)[0])  # back to normal: re-armed
    assert [meter.add(low)[1] is not None for _ in range(4)] == [False, False, False, True] and meter.alerts == 2


def test_either_direction_at_any_layer_is_novel():
    """Two-sided, the largest layer: a frame up at one layer and down at the next (what inserted noise did to a tiny
    stack, where the mean of one-sided scores cancelled out) scores as far out as its furthest layer."""
    meter = NoveltyMeter(window=500, warmup=100, threshold=3.0, alert_frames=3)
    for g in steady(300):
        meter.add(g)
    iqr = np.subtract(*np.quantile(steady(300), (0.75, 0.25), axis=0))  # (3,) as the meter sees them
    median = np.median(steady(300), axis=0)
    up_and_down = median + np.array([6.0, -6.0, 0.0]) * iqr
    score, _ = meter.add(up_and_down)
    assert 5.0 < score < 7.0 and meter.last_layers[2] < 1.0  # |±6| IQRs at layers 1 and 2, layer 3 typical
    only_up = median + np.array([0.0, 0.0, 8.0]) * iqr  # one layer above: "more familiar" is as unusual as less
    assert meter.add(only_up)[0] > 7.0
    assert [meter.add(up_and_down)[1] is not None for _ in range(2)] == [True, False]  # the 3rd in a row alerts, once


def test_replay_is_the_sink_meter_offline():
    goodness = np.concatenate([steady(200, seed=3), np.tile([[560.0, 280.0, 80.0]], (6, 1)), steady(50, seed=4)])
    below = np.empty_like(goodness)
    scores, alerts = replay(goodness, window=300, warmup=50, threshold=3.0, alert_frames=4, below=below)
    meter = NoveltyMeter(window=300, warmup=50, threshold=3.0, alert_frames=4)
    live = [meter.add(g) for g in goodness]
    assert np.isnan(scores[:50]).all() and np.allclose(scores[50:], [s for s, _ in live[50:]])
    assert [a.frame for a in alerts] == [203] and next(a for _, a in live if a is not None).frame == 203
    assert np.isnan(below[:50]).all() and below[200, 0] < -1.5 and below[200, 1] > 2  # layer 1 up, layer 2 down


def test_bad_input():
    meter = NoveltyMeter(window=200, warmup=50)
    for g in steady(100):
        meter.add(g)
    assert meter.add(np.array([np.nan, 1.0, 1.0])) == (None, None) and meter.frames == 100  # dropped, not counted
    with pytest.raises(ValueError, match="layers"):
        meter.add(np.ones(2))
    with pytest.raises(ValueError, match="warmup"):
        NoveltyMeter(window=10, warmup=20)
    with pytest.raises(ConfigError, match="novelty.warmup 20 is more frames than novelty.window 10"):
        load(None, sets=["novelty.window=10", "novelty.warmup=20"])


def test_a_sink_scores_every_frame_exports_it_and_alerts_three_ways(zmq_context, socket, tmp_path):
    metrics = socket(zmq.SUB)
    metrics.setsockopt(zmq.SUBSCRIBE, b"")
    metrics_addr = unique("metrics")
    metrics.bind(metrics_addr)
    events = tmp_path / "alerts.jsonl"
    touched = tmp_path / "on_alert.txt"
    command = f'{sys.executable} -c "import os; open({str(touched)!r}, \'w\').write(os.environ[\'FFSTREAM_ALERT_FRAME\'] + \' \' + os.environ[\'FFSTREAM_ALERT_SCORE\'])"'
    addr = unique("sink")
    sink = SinkWorker(addr, readout_layers=[2], novelty=NoveltyMeter(window=300, warmup=64, threshold=3.0, alert_frames=3),
                      alert_events=str(events), on_alert=command, context=zmq_context, metrics_addr=metrics_addr, metrics_interval=0.05)
    feeder = socket(zmq.PUSH)
    feeder.setsockopt(zmq.SNDTIMEO, 5000)
    feeder.connect(addr)
    goodness = np.concatenate([steady(160, seed=1), np.tile([[420.0, 280.0, 70.0]], (8, 1)), steady(32, seed=2)])  # (200, 3)
    rows = 8
    with running(sink):
        # handshake: a first metrics message shows the sink's metrics socket is connected and subscribed to, so the
        # alert that follows cannot be lost to a slow join
        assert wire.decode(recv_multipart(metrics, timeout=30)).kind == "metrics"
        for seq in range(len(goodness) // rows):
            trace = goodness[seq * rows : (seq + 1) * rows].T.round(4).tolist()  # (L, rows): per layer, each row's goodness
            send(feeder, wire.Message("activity", np.ones((rows, 4), np.float32), seq=seq, trace=trace))
        eventually(lambda: sink.frames == 200 and touched.exists(), timeout=30, what="every frame and the on_alert command")
        alert = None
        for _ in range(10_000):  # the metrics socket: metrics messages, and the alert as a control message
            msg = wire.decode(recv_multipart(metrics, timeout=10))
            if msg.kind == "control" and msg.extra.get("command") == "alert":
                alert = msg.extra
                break
        figures = sink.metrics()
    assert alert is not None, "no alert on the metrics socket"
    assert sink.novelty.frames == 200 and sink.novelty.alerts == 1
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["event"] == "novelty_alert" and lines[0]["frame"] == 162  # frames 160..162: the third above
    assert lines[0]["novelty"] > 3 and lines[0]["seq"] == 20
    assert alert["frame"] == 162 and alert["novelty"] == lines[0]["novelty"]
    frame, score = touched.read_text().split()
    assert int(frame) == 162 and float(score) > 3
    text = render({"sink": {**figures, "kind": "sink"}}, {"sink": 0.1})
    assert "ffstream_novelty_alerts_total 1.0" in text and "\nffstream_novelty " in text
    assert 'ffstream_novelty_score_bucket{le="+Inf"} 136.0' in text  # 200 frames less the 64 of warm-up



def test_a_frozen_run_learns_nothing_and_runs_no_sleep_worker(tmp_path):
    """model.freeze on a trained stack: weights as loaded, no sleep worker, every frame through the novelty meter."""
    ck = train_tiny(tmp_path / "train")
    before = {f.name: load_file(f) for f in sorted(ck.glob("layer*.safetensors"))}
    clip = tmp_path / "clip.mp4"
    write_video(clip, n=80)
    events, summary = tmp_path / "alerts.jsonl", tmp_path / "summary.json"
    shutil.copytree(ck, tmp_path / "frozen")
    sink_state = (tmp_path / "frozen" / "sink.json").read_text()  # the training run's counters
    assert json.loads(sink_state)["frames"] > 0
    run = subprocess.run(
        [sys.executable, "-m", "ffstream", "run", "--source", str(clip), "--checkpoint-dir", str(tmp_path / "frozen"),
         "--set", "model.layers=40,40", "--set", "model.freeze=true", "--set", "stream.batch=4", "--set", "novelty.window=100",
         "--set", "novelty.warmup=60", "--set", "novelty.alert_frames=3", "--set", f"novelty.events={events}",
         "--summary-json", str(summary), "--monitor", f"ipc://{tmp_path}/mon", "--http", "none", "--no-progress"],
        capture_output=True, text=True, env={**env(), "TMPDIR": str(tmp_path)}, cwd=ROOT, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads(summary.read_text())
    assert figures["sleep"] is None and all(layer["updates"] == 0 for layer in figures["layers"]), figures
    after = {f.name: load_file(f) for f in sorted((tmp_path / "frozen").glob("layer*.safetensors"))}
    for name, tensors in before.items():
        for key in ("weight", "bias"):
            found = [k for k in tensors if k.endswith(key)]
            assert found and all(np.array_equal(tensors[k], after[name][k]) for k in found), f"{name} {key} changed"
    assert figures["layers"][0]["frames"] == 80 and figures["sink"]["frames"] == 80  # this stream's frames, from 0
    assert (tmp_path / "frozen" / "sink.json").read_text() == sink_state  # a frozen run writes nothing of its own there
    assert figures["sink"]["novelty_alerts"] == (len(events.read_text().splitlines()) if events.exists() else 0)
