"""`ffstream bench novelty`, tiny: a small stack learns the start of vtest.avi through the pipeline, then runs frozen
(real workers) on it with Megamind.avi and tree.avi spliced in; the sink's alerts must fire near each insert."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ffstream.bench.novelty import alert_figures, auroc
from ffstream.bench.splice import Insert, plan_inserts, read_frames, write_spliced
from tests.processes import ROOT, env

DATA = "/usr/share/doc/opencv-doc/examples/data"
needs_videos = pytest.mark.skipif(not all(os.path.exists(f"{DATA}/{p}") for p in ("vtest.avi", "Megamind.avi", "tree.avi")),
                                  reason="opencv-doc's sample videos are not installed")


def test_auroc_counts_ties_half_and_orders():
    assert auroc([3, 4], [1, 2]) == 1.0 and auroc([1, 2], [3, 4]) == 0.0
    assert auroc([1, 2], [1, 2]) == 0.5 and auroc([2], [1, 2, 3]) == 0.5


def test_alerts_inside_or_just_after_an_insert_are_its_own_any_other_is_false():
    inserts = [Insert("a", 100, 20), Insert("b", 200, 20)]
    figures = alert_figures([104, 125, 150, 228], inserts, n=300, warmup=50)
    assert figures["latency"] == [4, None]  # 125 and 228: in the tails of a and b, too late to count as latency
    assert figures["false_frames"] == [150] and figures["clean_frames"] == 300 - 40 - 50


def test_inserts_are_planned_apart_and_refused_when_they_do_not_fit():
    inserts = plan_inserts(400, ("x.avi", "synthetic"), count=3, length=20, lead=100)
    assert [(i.name, i.start) for i in inserts] == [("x.avi", 100), ("synthetic", 220), ("x.avi", 340)]
    with pytest.raises(ValueError, match="do not fit"):
        plan_inserts(200, ("x.avi",), count=3, length=40, lead=100)


@needs_videos
def test_the_spliced_video_holds_the_inserts_where_planned(tmp_path):
    path = tmp_path / "spliced.mp4"
    inserts, written = write_spliced(str(path), f"{DATA}/vtest.avi", (f"{DATA}/tree.avi", "synthetic"), size=(72, 96),
                                     loops=2, count=2, length=10, lead=30, max_frames=60)
    frames = read_frames(str(path), (72, 96))
    assert written == len(frames) == 120 + 20 and [i.start for i in inserts] == [30, 85]
    base = np.concatenate([read_frames(f"{DATA}/vtest.avi", (72, 96), limit=60)] * 2).astype(np.float32)  # looped twice
    tree = read_frames(f"{DATA}/tree.avi", (72, 96), limit=10).astype(np.float32)

    def err(a: np.ndarray, b: np.ndarray) -> float:  # mean absolute difference, grey levels (the codec's loss)
        return float(np.abs(a.astype(np.float32) - b).mean())

    assert err(frames[:30], base[:30]) < 8 and err(frames[40:85], base[30:75]) < 8 and err(frames[95:], base[75:]) < 8
    assert err(frames[30:40], tree) < 8 and err(frames[30:40], tree) < err(frames[30:40], base[30:40]) / 3
    assert err(frames[85:95], base[75:85]) > 3 * err(frames[75:85], base[65:75])  # the synthetic insert is not vtest


@needs_videos
def test_alerts_fire_near_each_insert_through_real_workers(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "ffstream", "bench", "novelty", "--max-frames", "120", "--recipe", "none", "--set", "model.layers=60,60",
         "--set", "stream.batch=8", "--epochs", "2", "--foreign", f"{DATA}/Megamind.avi,{DATA}/tree.avi", "--inserts", "2",
         "--insert-frames", "15", "--lead", "60", "--novelty", "novelty.window=200", "--novelty", "novelty.warmup=40", "--json"],
        capture_output=True, text=True, env={**env(), "TMPDIR": str(tmp_path)}, cwd=ROOT, timeout=900, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout)
    assert [i["start"] for i in r["inserts"]] == [60, 165] and r["frames"] == 270
    latency = r["alerts"]["latency"]
    assert all(lat is not None and lat <= 10 for lat in latency), r["alerts"]  # within 10 frames of each insert
    assert r["alerts"]["false_alerts"] == 0 and r["clean"]["alerts"] == 0, (r["alerts"], r["clean"])
    assert r["alerts"]["replay_agrees"]  # the sink's live meter and the offline replay of its goodness agree
    assert r["separation"]["all"]["novelty_auroc"] > 0.95, r["separation"]


def test_bad_flags_exit_2_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ffstream", "bench", "novelty", "--video", str(tmp_path / "none.avi"),
                           "--max-frames", "10", "--novelty", "novelty.window=0"],
                          capture_output=True, text=True, env=env(), cwd=ROOT, timeout=120, check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "novelty.window" in proc.stderr, proc.stderr
