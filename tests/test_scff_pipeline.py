"""SCFF through the pipeline (issue 19): source pairs, scff negatives, the config rules, the video recipe and its probe."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from ffstream import config
from ffstream.cli import main
from ffstream.ff.dreamer import SCFF_MIN_AGE, Dreamer
from ffstream.ff.spatial import SpatialConfig
from ffstream.ff.spec import make_layer
from ffstream.sources.preprocess import Preprocess, SuccessorPairs
from tests.processes import ROOT, env


@pytest.mark.parametrize("sets, words", [
    (["model.layers=500,500"], ["stream.pairs", "layer 1 must be conv or local"]),
    (["sleep.negatives=hybrid"], ["stream.pairs needs paired negatives", "'scff' or 'temporal'"]),
    (["stream.pairs=false", "sleep.negatives=temporal"], ["sleep.negatives 'temporal'", "stream.pairs=true"]),
    (["stream.pairs=false"], ["sleep.negatives 'scff'", "stream.pairs=true"]),
    (["stream.task=supervised"], ["stream.pairs is for unsupervised video"]),
    (["model.readout_pool=corners"], ["readout_pool", "'corners'"]),
])
def test_scff_rules_are_one_line_each(sets, words):
    with pytest.raises(config.ConfigError) as err:
        config.load(recipe="video", sets=sets, environ={})
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_video_recipe_feeds_layer_one_two_frames():
    cfg = config.load(recipe="video", environ={})
    assert cfg.stream.frame_shape == (1, 28, 28) and cfg.stream.input_shape == (2, 28, 28)
    assert cfg.layer_configs()[0].in_shape == (2, 28, 28) and cfg.sleep_plan().negatives == "scff"
    assert config.load(recipe="video", sets=["sleep.enabled=false"], environ={}).stream.pairs  # pairs need no negatives


def test_successor_pairs_span_batch_boundaries():
    pairs = SuccessorPairs()
    frames = np.arange(5, dtype=np.float32).reshape(5, 1, 1, 1)  # frame t holds the value t
    first, second = pairs(frames[:3]), pairs(frames[3:])
    assert first.shape == (3, 2, 1, 1) and second.shape == (2, 2, 1, 1)
    assert first[:, :, 0, 0].tolist() == [[0, 0], [0, 1], [1, 2]]  # the stream's first frame beside itself
    assert second[:, :, 0, 0].tolist() == [[2, 3], [3, 4]]  # frame 3 beside frame 2 of the batch before
    pairs.reset()  # a seek: no predecessor
    assert pairs(frames[4:])[:, :, 0, 0].tolist() == [[4, 4]]


def test_center_and_self_pair():
    img = np.array([[0, 255], [255, 255]], np.uint8)
    out = Preprocess(size=(2, 2), center=True, self_pair=True)(img)
    assert out.shape == (2, 2, 2) and abs(float(out[0].mean())) < 1e-6
    np.testing.assert_allclose(out[0], out[1])
    np.testing.assert_allclose(out[0], np.array([[-0.75, 0.25], [0.25, 0.25]]), atol=1e-6)
    batch = Preprocess(size=(2, 2), center=True, self_pair=True).batch(np.stack([img, img]))
    np.testing.assert_allclose(batch[1], out)


def test_scff_negatives_pair_each_frame_with_an_old_one():
    dreamer = Dreamer("scff", None, reservoir=256, seed=0)
    stream = np.arange(400, dtype=np.float32).reshape(400, 1, 1, 1)  # frame t holds the value t
    for start in range(0, 400, 16):
        batch = stream[start : start + 16]
        neg = dreamer.negatives(batch, None, stack=None).view(16, 2, 1, 1)  # (B, 2C, H, W)
        assert neg[:, 0].flatten().tolist() == batch.flatten().tolist()  # the frame itself, in the first slot
        if start >= SCFF_MIN_AGE + 16:
            ages = neg[:, 0].flatten() - neg[:, 1].flatten()
            assert int(ages.min()) >= SCFF_MIN_AGE and int(ages.max()) <= 256 + 16, ages
        dreamer.observe(batch)
    assert dreamer.size == 256


def test_temporal_negatives_are_frames_out_of_their_time_order():
    """sleep.negatives "temporal": each frame beside its predecessor (time reversed against the source's [x_{t-1}, x_t])
    or beside a frame of another time (as scff), about half each."""
    dreamer = Dreamer("temporal", None, reservoir=256, seed=0)
    stream = np.arange(1, 401, dtype=np.float32).reshape(400, 1, 1, 1)  # frame t holds the value t + 1
    reversed_rows = old_rows = 0
    for start in range(0, 400, 16):
        batch = stream[start : start + 16]
        neg = dreamer.negatives(batch, None, stack=None).view(16, 2)
        assert neg[:, 0].tolist() == batch.flatten().tolist()  # the frame itself, in the first slot
        gaps = (neg[:, 0] - neg[:, 1]).tolist()
        if start == 0:  # the stream's first frame has no predecessor: not beside itself (scff's partner instead)
            assert gaps[0] != 0, gaps
        else:  # past the first batch (whose scff partners are the batch itself, reversed), no pair in time order
            assert all(g != -1 for g in gaps), gaps
        if start >= SCFF_MIN_AGE + 16:
            assert all(g == 1 or SCFF_MIN_AGE <= g <= 256 + 16 for g in gaps), gaps
            reversed_rows += sum(g == 1 for g in gaps)
            old_rows += sum(g >= SCFF_MIN_AGE for g in gaps)
        dreamer.observe(batch)
    assert 0.35 < reversed_rows / (reversed_rows + old_rows) < 0.65, (reversed_rows, old_rows)


def test_temporal_negatives_through_the_pipeline(tmp_path):
    """The video recipe with sleep.negatives=temporal: the sleep worker makes them for the paired layer 1 and both
    layers step on negatives."""
    summary = tmp_path / "summary.json"
    run = subprocess.run(
        [sys.executable, "-m", "ffstream", "run", "--recipe", "video", "--source", "synthetic:1000", "--set", "sleep.negatives=temporal",
         "--summary-json", str(summary), "--monitor", f"ipc://{tmp_path}/mon", "--http", "none", "--no-progress"],
        capture_output=True, text=True, env={**env(), "TMPDIR": str(tmp_path)}, cwd=ROOT, timeout=400,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(summary.read_text())
    assert result["sleep"]["negative_kind"] == "temporal"
    assert [layer["negative_updates"] > 0 for layer in result["layers"]] == [True, True]


def test_global_readout_pools_the_whole_map():
    cfg = SpatialConfig.build("conv", (2, 8, 8), 4, (3, 3), stride=2, readout_pool="global")
    layer = make_layer(cfg)
    h = torch.rand(3, 4, 4, 4)
    assert layer.features(h).shape == (3, 8)  # mean and max of each channel
    torch.testing.assert_close(layer.features(h), layer.features(torch.roll(h, shifts=(1, 2), dims=(2, 3))))  # position does not count


def test_video_recipe_through_the_pipeline_then_probe(tmp_path):
    """The video recipe on 2,000 synthetic frames: it ends, the sink reports accuracy, the closing probe runs, and
    `ffstream probe` reads the paired, centred stack from its checkpoint directory."""
    ck, summary = tmp_path / "ck", tmp_path / "summary.json"
    run = subprocess.run(
        [sys.executable, "-m", "ffstream", "run", "--recipe", "video", "--source", "synthetic:2000", "--checkpoint-dir", str(ck),
         "--summary-json", str(summary), "--monitor", f"ipc://{tmp_path}/mon", "--http", "none", "--no-progress"],
        capture_output=True, text=True, env={**env(), "TMPDIR": str(tmp_path)}, cwd=ROOT, timeout=400,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(summary.read_text())
    assert result["sink"]["accuracy"] is not None and result["sink"]["evaluated"] == 2000
    assert [layer["negative_updates"] > 0 for layer in result["layers"]] == [True, True]  # scff negatives reached both layers
    assert result["sleep"]["negative_kind"] == "scff"
    assert 0 <= result["probe"]["accuracy"] <= 1 and result["probe"]["pixels"] is not None, result["probe"]
    assert "probe (held-out clips):" in run.stderr
    assert "progressive accuracy (online probe" in run.stderr  # an unsupervised stack's sink runs the online probe
    code = main(["probe", "--checkpoint-dir", str(ck), "--train", "synthetic:600:seed=1", "--test", "synthetic:300:seed=2", "--json"])
    assert code == 0


def test_probe_json_on_an_scff_checkpoint(tmp_path, capsys):
    """A paired stack saved by hand (no pipeline): the probe centres and self-pairs frames as its metadata says."""
    from ffstream.ff import FFStack
    from ffstream.ff.checkpoint import layer_path, save_layer

    cfg = config.load(recipe="video", environ={})
    stack = FFStack(cfg.layer_configs())
    for i, layer in enumerate(stack.layers, start=1):
        save_layer(layer_path(tmp_path, i), layer, {"frame_shape": [1, 28, 28], "task": "unsupervised", "center": True, "pairs": True})
    code = main(["probe", "--checkpoint-dir", str(tmp_path), "--train", "synthetic:200:seed=1", "--test", "synthetic:100:seed=2", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and set(result["layers"]) == {"1", "2"} and result["n_test"] == 100
