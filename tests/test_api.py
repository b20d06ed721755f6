"""The Python API (`ffstream.load`, `score`, `evaluate`, `embed`, ...): one test per public function, on a tiny stack
trained by a real `ffstream run`, and the README's snippet run in a fresh interpreter.

Live sources: a mock network camera (tests/media.py `MjpegCamera`, an HTTP server streaming MJPEG that OpenCV reads as
it would an IP camera) stands in for a webcam or RTSP camera, which the test machine does not have."""

from __future__ import annotations

import inspect
import re
import signal
import subprocess
import sys
import time
import typing
from pathlib import Path

import numpy as np
import pytest
import torch

import ffstream
from ffstream.ff.checkpoint import CheckpointError
from ffstream.offline.api import SourceFrames, Stack
from ffstream.offline.probe import layer_features
from ffstream.offline.score import score_video
from ffstream.sources import SourceError
from ffstream.offline import api
from tests.media import MjpegCamera, write_labels, write_video
from tests.processes import ROOT, env, eventually


def train_tiny(tmp: Path) -> Path:
    """A 2x40 stack trained by `ffstream run` on 400 synthetic frames (seed 1); returns its checkpoint directory."""
    ck = tmp / "ck"
    run = subprocess.run(
        [sys.executable, "-m", "ffstream", "run", "--source", "synthetic:400:seed=1", "--set", "model.layers=40,40",
         "--max-frames", "400", "--checkpoint-dir", str(ck), "--monitor", f"ipc://{tmp}/mon", "--http", "none", "--no-progress"],
        capture_output=True, text=True, env={**env(), "TMPDIR": str(tmp)}, cwd=ROOT, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return ck


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """The trained checkpoint directory, and a labelled 24-frame video beside it (clip.mp4 + clip.csv)."""
    tmp = tmp_path_factory.mktemp("api")
    ck = train_tiny(tmp)
    write_video(tmp / "clip.mp4", n=24)
    write_labels(tmp / "clip.csv", [i // 8 for i in range(24)])
    return ck


@pytest.fixture(scope="module")
def stack(tiny) -> Stack:
    return ffstream.load(tiny)


def raw_frames(n: int = 6, shape: tuple[int, ...] = (48, 64)) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, *shape), dtype=np.uint8)


def test_import_and_help_stay_free_of_torch():
    code = ("import sys, ffstream; from ffstream.cli import build_parser; build_parser().format_help(); "
            "assert 'torch' not in sys.modules, 'torch was imported'; print(ffstream.__version__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(), cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ffstream.nope  # noqa: B018


def test_load_reads_the_run_and_refuses_what_is_not_a_stack(stack, tiny, tmp_path):
    assert isinstance(stack, Stack) and stack.num_layers == 2 and stack.frame_shape == (1, 28, 28)
    assert stack.thresholds == [40.0, 40.0]  # sumsq: θ is the width
    assert "layers=[40, 40]" in repr(stack)
    with pytest.raises(CheckpointError, match="no checkpoint directory"):
        ffstream.load(tmp_path / "missing")
    with pytest.raises(CheckpointError):
        ffstream.load(tmp_path)  # a directory without layer checkpoints
    odd = tmp_path / "odd"
    odd.mkdir()
    for f in tiny.iterdir():
        (odd / f.name).write_bytes(f.read_bytes())
    run_json = (odd / "run.json").read_text().replace('"size": [\n   28,\n   28\n  ]', '"size": [\n   32,\n   32\n  ]')
    assert run_json != (odd / "run.json").read_text(), "the test's edit of run.json did not apply"
    (odd / "run.json").write_text(run_json)
    with pytest.raises(CheckpointError, match="run.json says frames of"):
        ffstream.load(odd)


def test_prepare_takes_raw_and_preprocessed_frames(stack):
    grey = raw_frames()
    out = stack.prepare(grey)
    assert out.shape == (6, 1, 28, 28) and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    np.testing.assert_allclose(stack.prepare(grey.astype(np.float32) / 255), out, atol=1 / 255)  # float: already scaled (cv2 rounds uint8)
    rgb = np.repeat(grey[..., None], 3, axis=3)
    np.testing.assert_allclose(stack.prepare(rgb), out, atol=2 / 255)  # RGB of the same grey
    assert stack.prepare(out) is not out and np.array_equal(stack.prepare(out), out)  # (N, C, H, W): taken as is
    with pytest.raises(ValueError, match="expected frames"):
        stack.prepare(np.zeros((2, 5, 5, 2), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        stack.prepare(np.zeros((2, 5, 5), np.int32))


def test_embed_is_the_readout_features(stack):
    frames = raw_frames()
    everything = stack.embed(frames)
    assert everything.shape == (6, 80) and everything.dtype == np.float32
    per_layer = layer_features(stack.stack, torch.from_numpy(stack.prepare(frames)).flatten(1), stack.input_classes)
    np.testing.assert_allclose(everything, torch.cat(per_layer, dim=1).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stack.embed(frames, layer=2), everything[:, 40:], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stack.embed(frames, layer=[2, 1]), np.concatenate([everything[:, 40:], everything[:, :40]], 1),
                               rtol=1e-4, atol=1e-5)
    # normalised: each layer's activity has mean square 1 (Hinton's normalisation), unless the layer is silent
    ms = (everything[:, :40] ** 2).mean(axis=1)
    assert np.allclose(ms[ms > 0], 1.0, atol=1e-3)
    with pytest.raises(ValueError, match="1..2"):
        stack.embed(frames, layer=3)
    small = ffstream.load(stack.directory, batch=4)  # chunks of 4 rows: the same numbers
    np.testing.assert_allclose(small.embed(frames), everything, rtol=1e-4, atol=1e-5)


def test_goodness_and_novelty_match_ffstream_score(stack, tiny):
    scored, _ = score_video(tiny.parent / "clip.mp4", tiny)
    frames = stack.from_source(str(tiny.parent / "clip.mp4"))
    goodness = stack.goodness(frames.pixels)
    assert goodness.shape == (24, 2) and goodness.dtype == np.float64
    np.testing.assert_allclose(goodness, scored.goodness, rtol=1e-6)
    np.testing.assert_allclose(stack.novelty(frames.pixels), scored.novelty, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(stack.novelty_of(goodness), scored.novelty, rtol=1e-6, atol=1e-9)
    # the definition, by hand: mean over layers of (θ − G)/θ
    np.testing.assert_allclose(stack.novelty_of(np.array([[40.0, 80.0]])), [(0 + -1) / 2])


def test_iter_source_batches_in_order_and_stops(stack, tiny):
    batches = list(stack.iter_source("synthetic:50:seed=3", max_frames=45, batch=20))
    assert [len(b.frames) for b in batches] == [20, 20, 5]
    assert np.array_equal(np.concatenate([b.frames for b in batches]), np.arange(45))
    assert all(b.labels is not None and b.pixels.shape[1:] == (1, 28, 28) for b in batches)
    video = list(stack.iter_source(str(tiny.parent / "clip.mp4"), batch=10))
    np.testing.assert_allclose(np.concatenate([b.times for b in video]), np.arange(24) / 25)  # 25 frames/s
    assert np.array_equal(np.concatenate([b.labels for b in video]), [i // 8 for i in range(24)])
    with pytest.raises(SourceError, match="positive"):
        next(stack.iter_source("synthetic:5", max_frames=0))


def test_from_source_gathers_everything(stack, tiny):
    got = stack.from_source("synthetic:30:seed=2")
    assert isinstance(got, SourceFrames) and got.pixels.shape == (30, 1, 28, 28) and len(got.labels) == 30
    np.testing.assert_allclose(stack.embed(got.pixels), np.concatenate([stack.embed(b.pixels) for b in stack.iter_source("synthetic:30:seed=2", batch=7)]),
                               rtol=1e-4, atol=1e-5)
    unlabelled = tiny.parent / "plain.mp4"
    write_video(unlabelled, n=5)
    assert stack.from_source(str(unlabelled)).labels is None
    with pytest.raises(SourceError, match="not found"):
        stack.from_source(str(tiny.parent / "nothing.mp4"))


def test_score_a_file_and_save_it(tiny, tmp_path):
    scores = ffstream.score(tiny, str(tiny.parent / "clip.mp4"))
    assert isinstance(scores, ffstream.Scores) and scores.goodness.shape == (24, 2) and scores.without_top_down is None
    np.testing.assert_allclose(scores.times, np.arange(24) / 25)  # the file's 25 frames/s
    assert np.array_equal(scores.labels, [i // 8 for i in range(24)])  # from clip.csv beside it
    first = ffstream.score(tiny, str(tiny.parent / "clip.mp4"), max_frames=10, batch=3)
    np.testing.assert_allclose(first.goodness, scores.goodness[:10], rtol=1e-6)
    default = ffstream.score(tiny, max_frames=5)  # the source run.json records: synthetic:400:seed=1
    assert default.source == "synthetic:400:seed=1" and len(default.frames) == 5
    ffstream.save_scores(scores, tmp_path / "s.csv")
    rows = (tmp_path / "s.csv").read_text().splitlines()
    assert rows[0] == "frame,time_s,goodness_layer1,goodness_layer2,novelty,novelty_recent,label" and len(rows) == 25


def test_score_a_live_camera_up_to_max_frames(tiny):
    with MjpegCamera() as camera:  # the mock camera (module docstring)
        scores = ffstream.score(tiny, camera.url, max_frames=12)
    assert len(scores.frames) == 12 and scores.goodness.shape == (12, 2) and np.isfinite(scores.novelty).all()
    assert scores.frame_rate is None and scores.times[0] == 0 and np.all(np.diff(scores.times) >= 0)  # a live clock
    assert np.all(np.diff(scores.frames) == 1)


def test_the_score_command_reads_a_live_camera_until_ctrl_c(tiny, tmp_path):
    out = tmp_path / "live.csv"
    with MjpegCamera() as camera:  # the mock camera (module docstring)
        run = subprocess.Popen([sys.executable, "-m", "ffstream", "score", "--source", camera.url, "--checkpoint-dir", str(tiny),
                                "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=ROOT)
        try:
            said = [run.stderr.readline() for _ in range(1)]
            while "until Ctrl-C" not in said[-1] and said[-1] and len(said) < 50:  # said before it opens the camera
                said.append(run.stderr.readline())
            assert "until Ctrl-C" in said[-1], said
            eventually(lambda: camera.served >= 60, timeout=120, what="the camera to have served 60 frames", interval=0.1)
            run.send_signal(signal.SIGINT)
            stdout, stderr = run.communicate(timeout=60)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
    assert run.returncode == 0, stderr
    rows = out.read_text().splitlines()
    assert rows[0].startswith("frame,time_s,goodness_layer1") and len(rows) > 10, rows[:3]
    assert f"frames of {camera.url} scored by 2 layers" in stdout


def test_evaluate_scores_a_labelled_source(tiny):
    result = ffstream.evaluate(tiny, "synthetic:200:seed=2")
    assert result["n"] == 200 and result["layers"] == [40, 40] and result["task"] == "unsupervised"
    assert result["accuracy_energy"] is None  # unsupervised: no label to try
    assert result["accuracy_softmax"] is None or 0 <= result["accuracy_softmax"] <= 1
    assert ffstream.evaluate(tiny)["source"] == "synthetic:400:seed=1"  # no source: the run's own (generated) clip
    with pytest.raises(CheckpointError, match="no layer checkpoints"):
        ffstream.evaluate(tiny.parent)


def test_embed_a_source_and_save_it(stack, tiny, tmp_path):
    clip = str(tiny.parent / "clip.mp4")
    got = ffstream.embed(tiny, clip)  # a directory
    assert isinstance(got, ffstream.Embedding) and got.features.shape == (24, 80) and got.features.dtype == np.float32
    np.testing.assert_allclose(got.features, stack.embed(stack.from_source(clip).pixels), rtol=1e-4, atol=1e-5)
    assert np.array_equal(got.frame, np.arange(24)) and np.array_equal(got.label, [i // 8 for i in range(24)])
    top = ffstream.embed(stack, clip, layer=2, max_frames=7)  # a loaded Stack, one layer
    np.testing.assert_allclose(top.features, got.features[:7, 40:], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="1..2"):
        ffstream.embed(stack, clip, layer=3)
    ffstream.save_embedding(got, tmp_path / "f.npz")
    saved = np.load(tmp_path / "f.npz")
    assert sorted(saved.files) == ["features", "frame", "label", "time_s"] and np.array_equal(saved["features"], got.features)
    ffstream.save_embedding(got, tmp_path / "f.npy")
    assert np.array_equal(np.load(tmp_path / "f.npy"), got.features)
    with pytest.raises(ValueError, match=".npy"):
        ffstream.save_embedding(got, tmp_path / "f.csv")


def test_every_public_function_is_documented_and_typed():
    public = [getattr(ffstream, name) for name in ffstream.__all__ if name != "__version__"]
    methods = [m for _, m in inspect.getmembers(Stack, inspect.isfunction) if not m.__name__.startswith("_")]
    properties = [p.fget for _, p in inspect.getmembers(Stack, lambda v: isinstance(v, property))]
    for fn in [p for p in public if inspect.isfunction(p)] + methods + properties:
        assert fn.__doc__ and fn.__doc__.strip(), f"{fn.__qualname__} has no docstring"
        hints = typing.get_type_hints(fn)
        params = [p for p in inspect.signature(fn).parameters if p != "self"]
        assert "return" in hints and all(p in hints for p in params), f"{fn.__qualname__} is not fully typed: {hints}"
    for cls in (ffstream.Stack, ffstream.Scores, ffstream.Embedding, api.SourceBatch, api.SourceFrames):
        assert cls.__doc__ and "(" not in cls.__doc__[:1], cls
    assert (Path(ffstream.__file__).parent / "py.typed").exists()


def test_the_readme_snippet_runs_in_a_fresh_python(tiny, tmp_path):
    """The README's API block as written, with its "ck" and "clip.mp4" pointed at the tiny stack and clip."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    snippet = next(b for b in blocks if "ffstream.load(" in b)
    snippet = snippet.replace('"ck"', repr(str(tiny))).replace('"clip.mp4"', repr(str(tiny.parent / "clip.mp4")))
    snippet = snippet.replace('"f.npz"', repr(str(tmp_path / "f.npz")))
    check = "\nprint(features.shape, goodness.shape, novelty.shape, scores.goodness.shape, embedded.features.shape)\n"
    done = subprocess.run([sys.executable, "-c", snippet + check], capture_output=True, text=True, env=env(), cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[-2] == "(8, 80) (8, 2) (8,) (24, 2) (24, 80)", done.stdout
