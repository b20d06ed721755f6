"""Conv stacks as a user runs them: bad layer specs, and a real colour video through real worker processes.

The run streams OpenCV's Megamind.avi at 64x64 in colour through the default conv stack, with the sleep
worker making hybrid negatives; afterwards the saved [C', C, kh, kw] weights must tell real frames from
hybrids better than the same layers did untrained, and a second run must resume from them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ffstream.ff.checkpoint import layer_path, read_metadata
from ffstream.ff.negatives import hybrid
from ffstream.ff.spatial import channel_normalize
from ffstream.ff.stack import FFStack
from ffstream.offline.evaluate import load_stack
from ffstream.sources import Preprocess, open_source
from ffstream.sources.idx import FASHION_MNIST_DIR
from tests.processes import ROOT, env

VIDEO = Path("/usr/share/doc/opencv-doc/examples/data/Megamind.avi")
CONV_STACK = "conv:16x5x5/2,conv:32x3x3/2,conv:64x3x3/2"  # the default conv stack of the README
CASE_TIMEOUT_S = 90

# (argv, what the one error line must mention)
BAD_SPECS = {
    "kernel missing": (["run", "--set", "model.layers=conv:32x3"], ["model.layers", "conv:32x3", "conv:CxKHxKW"]),
    "stride zero": (["run", "--set", "model.layers=conv:8x3x3/0"], ["model.layers", "conv:8x3x3/0"]),
    "unknown kind": (["run", "--set", "model.layers=pool:2,500"], ["model.layers", "pool:2"]),
    "conv above dense": (["run", "--source", "synthetic:64", "--set", "model.layers=100,conv:8x3x3"], ["layer 2 (conv:8x3x3)", "needs an image below it"]),
    "competition, no layer sees the frame": (["run", "--source", "synthetic:64", "--set", "model.layers=conv:8x3x3", "--set", "model.competition=true"],
                                             ["sees the whole frame", "sleep.enabled=false"]),
    "competition with wrong labels": (["run", "--source", "synthetic:64", "--set", "model.layers=conv:8x3x3", "--set", "model.competition=true",
                                       "--set", "sleep.negatives=random"], ["sleep.negatives=hybrid"]),
    "outlier weight below zero": (["run", "--set", "model.layers=conv:8x3x3", "--set", "model.competition=true", "--set", "model.outlier_weight=-1"],
                                  ["model.outlier_weight", "-1"]),
    "competition with dense": (["run", "--source", "synthetic:64", "--set", "model.layers=conv:8x3x3,100", "--set", "model.competition=true",
                                "--set", "sleep.enabled=false"], ["competition", "conv or local"]),
    "batch stats without competition": (["run", "--source", "synthetic:64", "--set", "model.layers=conv:8x3x3", "--set", "model.batch_stats=true"],
                                        ["model.batch_stats", "model.competition"]),
    "pool larger than the map": (["run", "--source", "synthetic:64", "--set", "model.layers=conv:8x3x3/2+pool16"],
                                 ["conv:8x3x3/2+pool16", "16x16 max-pool", "14x14"]),
    "config file": (["worker", "layer", "--index", "1", "--config", "bad_layers.json"], ["model.layers", "conv:3x3"]),
}


@pytest.fixture(scope="module")
def bad_spec_runs(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("bad-specs")
    (cwd / "bad_layers.json").write_text(json.dumps({"model": {"layers": ["conv:3x3"]}}))
    procs = {name: subprocess.Popen([sys.executable, "-m", "ffstream", *argv], cwd=cwd, env={**env(), "TMPDIR": str(cwd)},
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, (argv, _) in BAD_SPECS.items()}
    results = {}
    try:
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=CASE_TIMEOUT_S)
            results[name] = (proc.returncode, out, err)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


@pytest.mark.parametrize("name", list(BAD_SPECS))
def test_bad_layer_spec_is_one_line_and_exit_2(bad_spec_runs, name):
    code, out, err = bad_spec_runs[name]
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, (code, err[-2000:])
    assert len(lines) == 1, err
    for needle in BAD_SPECS[name][1]:
        assert needle in lines[0], (needle, lines[0])
    assert "Traceback" not in err and out == ""


def real_and_hybrid_frames(n: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    with open_source(str(VIDEO), Preprocess(size=(64, 64), color=True)) as src:
        frames = torch.from_numpy(np.stack([f.pixels for f in src]))
    gen = torch.Generator().manual_seed(1)
    real = frames[torch.randperm(len(frames), generator=gen)[:n]]
    partners = frames[torch.randperm(len(frames), generator=gen)[:n]]
    return real, hybrid(real, partners, gen)


def goodness_gap(stack: FFStack, real: torch.Tensor, fake: torch.Tensor) -> list[float]:
    """Per layer: mean per-location goodness on real frames minus on hybrids (positive: the layer prefers real)."""
    pos, neg = stack.activities(real.flatten(1)), stack.activities(fake.flatten(1))
    return [float(layer.goodness(a).mean() - layer.goodness(b).mean()) for layer, a, b in zip(stack.layers, pos, neg)]


def run_video(tmp_path: Path, name: str) -> dict:
    summary = tmp_path / f"{name}.json"
    run = subprocess.run(
        [sys.executable, "-m", "ffstream", "run", "--source", str(VIDEO), "--set", "stream.size=64x64", "--set", "stream.color=true",
         "--set", f"model.layers={CONV_STACK}", "--epochs", "3", "--set", "stream.batch=16", "--set", "model.lr=0.01", "--no-progress", "--checkpoint-dir", str(tmp_path / "ck"),
         "--summary-json", str(summary), "--monitor", f"ipc://{tmp_path}/{name}.monitor"],
        capture_output=True, text=True, env=env(), cwd=ROOT, timeout=400,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(summary.read_text())


@pytest.mark.skipif(not VIDEO.exists(), reason="opencv-doc's sample videos are not installed")
def test_conv_stack_learns_from_a_colour_video_and_resumes(tmp_path):
    first = run_video(tmp_path, "first")
    frames = first["source_stats"]["total"]
    assert frames > 600  # three passes over the 270-frame clip
    for layer in first["layers"]:
        assert layer["frames"] == frames and layer["negative_updates"] > 0, layer
    assert first["sink"]["frames"] == frames and first["sleep"]["negatives"] > 0

    # The checkpoints hold image-shaped weights and the frame's shape.
    tensors, meta = read_metadata(layer_path(tmp_path / "ck", 1))
    assert tuple(tensors["weight"].shape) == (16, 3, 5, 5) and tuple(tensors["running_mean"].shape) == (16,)
    assert json.loads(meta["extra"])["frame_shape"] == [3, 64, 64]
    stack, _ = load_stack(tmp_path / "ck")
    versions = [layer.version for layer in stack.layers]
    assert all(v > 0 for v in versions), versions
    real, fake = real_and_hybrid_frames()
    hs = stack.activities(real[:2].flatten(1))
    assert [tuple(h.shape[1:]) for h in hs] == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]

    # Learning: the layers above the first prefer real frames to hybrids, and the stack as a whole prefers them
    # by more than the same layers untrained did. Five quiet runs gained 1.36-1.63 in sum (layer 2: 0.45-0.66,
    # layer 3: 0.84-1.09); the margin of 0.5 leaves room for a loaded machine, where the sleep worker's snapshot is staler
    # (one CI run: gains 0.53 and 0.49). Layer 1 barely separates them at this budget, so it is not asserted alone.
    trained = goodness_gap(stack, real, fake)
    untrained = goodness_gap(FFStack([layer.cfg for layer in stack.layers]), real, fake)
    assert all(gap > 0 for gap in trained[1:]), (trained, untrained)
    assert sum(trained) > sum(untrained) + 0.5, (trained, untrained)

    # A second run resumes from the checkpoints: every layer's version goes on from where it stopped.
    second = run_video(tmp_path, "second")
    assert second["layers"][0]["frames"] == frames
    resumed, _ = load_stack(tmp_path / "ck")
    assert all(after > before for after, before in zip([layer.version for layer in resumed.layers], versions))


@pytest.mark.skipif(not Path(FASHION_MNIST_DIR).is_dir(), reason="fashion-mnist not installed (apt-get install dataset-fashion-mnist)")
@pytest.mark.parametrize("update, route", [("inputs", "snapshot"), ("gradient", "snapshot"), ("inputs", "chain")])
def test_batch_norm_statistics_travel_with_the_weights(tmp_path, update, route):
    """--batch-norm through real workers: the layers keep running channel statistics, the sleep worker's snapshots and
    the checkpoints carry them (the sleep worker refuses a snapshot without them: no refresh would count), and a
    reloaded stack passes up what the layers did. update: what the sleep worker sends the layers (sleep.update);
    route "chain": each layer passes its activity on the negatives up itself (sleep.route), as flat rows."""
    summary = tmp_path / "bn.json"
    run = subprocess.run(
        [sys.executable, "-m", "ffstream", "run", "--source", "fashion-mnist", "--set", "stream.task=unsupervised", "--set",
         "model.layers=conv:8x3x3,conv:16x3x3/2", "--set", "model.batch_norm=true", "--max-frames", "1280", "--no-progress", "--checkpoint-dir",
         str(tmp_path / "ck"), "--summary-json", str(summary), "--monitor", f"ipc://{tmp_path}/bn.monitor"],
        capture_output=True, text=True, env={**env(), "FFSTREAM_SLEEP_UPDATE": update, "FFSTREAM_SLEEP_ROUTE": route}, cwd=ROOT, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(summary.read_text())
    assert set(result["exit_codes"].values()) == {0}, result["exit_codes"]
    assert result["sleep"]["negatives"] > 0 and result["sleep"]["dropped"] == 0
    if route == "chain":  # the live layers judge and pass up every negative: no snapshot, nothing stale
        assert result["sleep"]["refreshes"] == 0 and result["sleep"]["staleness"] == 0, result["sleep"]
    else:
        assert result["sleep"]["refreshes"] > 0
    assert all(layer["negative_updates"] > 0 and layer["dropped"] == 0 for layer in result["layers"]), result["layers"]

    stack, _ = load_stack(tmp_path / "ck")
    x = torch.rand(4, 28 * 28, generator=torch.Generator().manual_seed(0))
    for layer, h in zip(stack.layers, stack.activities(x)):
        assert layer.cfg.batch_norm
        assert not torch.equal(layer.channel_mean, torch.zeros_like(layer.channel_mean))  # moved by the positive steps
        assert not torch.equal(layer.channel_var, torch.ones_like(layer.channel_var))
        plain = layer.normalize(h) - channel_normalize(h)
        assert plain.abs().max() > 1e-3, "the reloaded layer passes up its map without the statistics"


@pytest.mark.skipif(not Path(FASHION_MNIST_DIR).is_dir(), reason="fashion-mnist not installed (apt-get install dataset-fashion-mnist)")
def test_cwcomp_with_batch_statistics_pooling_and_sleep_learns_and_reloads(tmp_path):
    """The supervised conv recipe of BENCHMARKS.md, shortened, through real workers: pooled layers with CwComp's batch
    norm learn the classes; the sleep worker's hybrids, made on snapshots, reach the one layer that sees the whole
    frame (fields of 4, 10 and 34 pixels), paired with its positives, and no other; the checkpoints carry the running
    statistics and the learned scale and shift, and `ffstream eval` scores the reloaded stack on them (a pass
    without gradients reads the running statistics)."""
    summary = tmp_path / "cw.json"
    run = subprocess.run(
        [sys.executable, "-m", "ffstream", "run", "--source", "fashion-mnist", "--set", "model.layers=conv:10x3x3+pool,conv:20x3x3+pool,conv:20x7x7",
         "--set", "model.competition=true", "--set", "model.batch_stats=true", "--set", "model.region=99", "--set", "model.lr=0.01", "--max-frames", "1920", "--no-progress",
         "--checkpoint-dir", str(tmp_path / "ck"), "--summary-json", str(summary), "--monitor", f"ipc://{tmp_path}/cw.monitor"],
        capture_output=True, text=True, env=env(), cwd=ROOT, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(summary.read_text())
    assert set(result["exit_codes"].values()) == {0}, result["exit_codes"]
    assert all(layer["dropped"] == 0 for layer in result["layers"]), result["layers"]
    assert result["sleep"]["negatives"] > 0 and result["sleep"]["dropped"] == 0, result["sleep"]
    assert [layer["negative_updates"] for layer in result["layers"]][:2] == [0, 0], result["layers"]
    assert result["layers"][2]["negative_updates"] > 0 and result["layers"][2]["paired"] > 0, result["layers"][2]

    stack, _ = load_stack(tmp_path / "ck")
    assert [layer.cfg.out_shape for layer in stack.layers] == [(10, 14, 14), (20, 7, 7), (20, 7, 7)]
    assert [layer.cfg.outlier_weight for layer in stack.layers] == [0.0, 0.0, 0.005]
    for layer in stack.layers:
        assert layer.cfg.batch_stats
        assert not torch.equal(layer.channel_mean, torch.zeros_like(layer.channel_mean))  # moved by the positive steps
        assert not torch.equal(layer.channel_scale, torch.ones_like(layer.channel_scale))  # learned
    ev = subprocess.run([sys.executable, "-m", "ffstream", "eval", "--checkpoint-dir", str(tmp_path / "ck"), "--source",
                         "fashion-mnist:test", "--json"], capture_output=True, text=True, env=env(), cwd=ROOT, timeout=300)
    assert ev.returncode == 0, ev.stderr[-3000:]
    scores = json.loads(ev.stdout)
    assert scores["accuracy_energy_last_layer"] > 0.3, scores  # 10 classes: chance is 0.1 (measured: 0.4951)
