"""`ffstream run` as a user runs it: every worker its own process, a monitor client watching."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.processes import ROOT, env


def test_run_synthetic_learns_and_reports(tmp_path):
    monitor_addr = f"ipc://{tmp_path}/monitor"
    summary_path = tmp_path / "s.json"
    # The monitor client starts first: SUB reconnects by itself, so start order does not matter.
    watcher = subprocess.Popen(
        [sys.executable, "-m", "ffstream", "monitor", "--json", "--connect", monitor_addr, "--seconds", "240"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env(), cwd=ROOT, text=True,
    )
    try:
        run = subprocess.run(
            [sys.executable, "-m", "ffstream", "run", "--source", "synthetic:10000", "--set", "model.layers=500,500,500",
             "--monitor", monitor_addr, "--summary-json", str(summary_path), "--checkpoint-dir", str(tmp_path / "ck")],
            capture_output=True, text=True, env=env(), cwd=ROOT, timeout=240,
        )
    finally:
        watcher.terminate()
        lines, _ = watcher.communicate(timeout=30)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    assert [layer["layer"] for layer in summary["layers"]] == [1, 2, 3]
    for layer in summary["layers"]:
        assert layer["frames"] == 10000, layer
        assert layer["negative_updates"] > 0, layer
        assert layer["p_pos_recent"] > layer["p_neg_recent"], layer  # where it ends
        assert layer["fps"] > 0
    # Over the whole run, including its untrained start, the first layer separates clearly; deeper
    # layers only by a few units of goodness in a run this short (see the closing notes).
    first = summary["layers"][0]
    assert first["goodness_pos"] > first["goodness_neg"], first
    assert summary["sleep"]["negatives"] > 0
    assert summary["sink"]["frames"] == 10000
    assert summary["task"] == "unsupervised"  # a video's labels feed the probe, not the layers
    assert summary["sink"]["evaluated"] == 10000  # the probe predicted every frame before learning it
    assert set(summary["exit_codes"].values()) == {0}, summary["exit_codes"]

    seen = {json.loads(line)["worker"] for line in lines.splitlines() if line.strip()}
    assert {"layer1", "layer2", "layer3", "sleep", "sink", "source"} <= seen, seen
    # Checkpoints were written at shutdown, one per layer, plus the softmax head and its counters, the source's
    # position and the effective config (run.json, the recipe that made them).
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [
        "layer1.safetensors", "layer2.safetensors", "layer3.safetensors", "readout.safetensors", "run.json", "sink.json",
        "source.json"]
