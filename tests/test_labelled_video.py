"""Labelled video: a video file plus a `frame,label` CSV sidecar, and synthetic clips named by their seed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ffstream.cli import main
from ffstream.ff import LayerConfig
from ffstream.ff.checkpoint import layer_path, save_layer
from ffstream.ff.layer import FFLayer
from ffstream.sources import LabelledVideoSource, Preprocess, SourceError, VideoFileSource, dataset_arrays, open_source
from tests.media import write_labels, write_video
from tests.processes import ROOT, env

FRAMES = 30  # frames of the generated clip


@pytest.fixture
def clip(tmp_path) -> Path:
    """clip.mp4 (30 frames) with clip.csv beside it: frames 0-9 class 0, 10-19 class 2, 20-29 class 1."""
    video = tmp_path / "clip.mp4"
    write_video(video, n=FRAMES)
    write_labels(tmp_path / "clip.csv", [0] * 10 + [2] * 10 + [1] * 10)
    return video


def test_sidecar_with_the_same_stem_is_found_by_itself(clip):
    with open_source(str(clip), Preprocess()) as src:
        assert isinstance(src, LabelledVideoSource)
        assert src.num_classes == 3  # the largest label + 1
        assert src.total == FRAMES
        frames = list(src)
    assert [f.index for f in frames] == list(range(FRAMES))
    assert [f.label for f in frames] == [0] * 10 + [2] * 10 + [1] * 10
    pixels, labels = dataset_arrays(str(clip), Preprocess(size=(16, 16)))
    assert pixels.shape == (FRAMES, 1, 16, 16) and labels.tolist() == [f.label for f in frames]


def test_labels_flag_overrides_the_sidecar_and_epochs_replay_them(clip, tmp_path):
    other = write_labels(tmp_path / "other.csv", [i % 5 for i in range(FRAMES)])
    with open_source(str(clip), Preprocess(), labels=str(other), epochs=2) as src:
        assert src.num_classes == 5 and src.total == 2 * FRAMES
        labels = [f.label for f in src]
    assert labels == [i % 5 for i in range(FRAMES)] * 2


def test_a_video_without_a_sidecar_stays_unlabelled(tmp_path):
    write_video(tmp_path / "plain.mp4", n=5)
    with open_source(str(tmp_path / "plain.mp4"), Preprocess()) as src:
        assert type(src) is VideoFileSource and src.num_classes is None
        assert {f.label for f in src} == {None}
    with pytest.raises(SourceError, match="has no labels"):
        dataset_arrays(str(tmp_path / "plain.mp4"), Preprocess())


def test_labels_only_label_video_files(tmp_path):
    labels = write_labels(tmp_path / "l.csv", [0, 1])
    with pytest.raises(SourceError, match="labels a video file"):
        open_source("synthetic:10", Preprocess(), labels=str(labels))


BAD_SIDECARS = {
    # case: (the CSV's text, a phrase the one-line error must contain)
    "no header": ("0,1\n1,1\n", "header 'frame,label'"),
    "empty": ("", "header 'frame,label'"),
    "header only": ("frame,label\n", "no labelled frames"),
    "non-integer label": ("frame,label\n0,1\n1,cat\n", "line 3: label 'cat' is not a non-negative integer"),
    "fractional label": ("frame,label\n0,1.0\n", "label '1.0' is not a non-negative integer"),
    "negative label": ("frame,label\n0,1\n1,-2\n", "label '-2' is not a non-negative integer"),
    "non-integer frame": ("frame,label\nzero,1\n", "frame 'zero' is not"),
    "three columns": ("frame,label\n0,1,2\n", "expected 'frame,label'"),
    "duplicated frame": ("frame,label\n0,1\n1,1\n1,1\n", "line 4: frame 1 is repeated"),
    "out of order": ("frame,label\n0,1\n1,1\n2,1\n1,0\n", "frame 1 is out of order"),
    "a frame skipped": ("frame,label\n0,1\n2,1\n", "frame 2 skips frame 1"),
    "fewer rows than frames": ("frame,label\n" + "".join(f"{i},0\n" for i in range(FRAMES - 1)), f"labels {FRAMES - 1} frames but"),
    "more rows than frames": ("frame,label\n" + "".join(f"{i},0\n" for i in range(FRAMES + 1)), f"has {FRAMES}: every frame"),
}


@pytest.mark.parametrize("how", ["beside", "flag"])
@pytest.mark.parametrize("case", list(BAD_SIDECARS))
def test_bad_sidecar_is_one_line_and_exit_2(clip, tmp_path, capsys, case, how):
    """Through the real entry point, in process: `ffstream run` opens the source before any worker starts."""
    text, expected = BAD_SIDECARS[case]
    target = clip.with_suffix(".csv") if how == "beside" else tmp_path / "named.csv"
    target.write_text(text)
    flag = ["--set", f"stream.labels={target}"] if how == "flag" else []
    code = main(["run", "--source", str(clip), *flag, "--monitor", f"ipc://{tmp_path}/mon", "--http", "none", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and expected in err[0], (code, err)


@pytest.mark.parametrize("command", ["eval", "score"])
def test_labels_flag_on_eval_and_score_reads_the_file(clip, tmp_path, capsys, command):
    """A bad --labels file fails there too, with one line, before any frame is scored."""
    ck = tmp_path / "ck"
    save_layer(layer_path(ck, 1), FFLayer(LayerConfig(784, 8)), {"frame_shape": [1, 28, 28], "task": "unsupervised"})
    bad = tmp_path / "bad.csv"
    bad.write_text("frame,label\n0,-1\n")
    out = ["--out", str(tmp_path / "s.csv")] if command == "score" else []
    code = main([command, "--checkpoint-dir", str(ck), "--source", str(clip), "--labels", str(bad), *out])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "label '-1'" in err[0], (code, err)


def test_missing_labels_file_is_a_config_error(clip, tmp_path, capsys):
    code = main(["run", "--source", str(clip), "--set", f"stream.labels={tmp_path / 'nope.csv'}", "--monitor", f"ipc://{tmp_path}/mon",
                 "--http", "none", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "nope.csv" in err[0], (code, err)


def test_labels_reach_the_sink_in_a_run_on_a_labelled_file(clip, tmp_path):
    """Every frame's sidecar label reaches the sink's probe, which predicts it before learning it; the layers stay unsupervised."""
    summary_path = tmp_path / "summary.json"
    run = subprocess.run(
        [sys.executable, "-m", "ffstream", "run", "--source", str(clip), "--set", "model.layers=32,32", "--set", "stream.batch=10",
         "--monitor", f"ipc://{tmp_path}/mon", "--http", "none", "--no-progress", "--summary-json", str(summary_path)],
        capture_output=True, text=True, env={**env(), "TMPDIR": str(tmp_path)}, cwd=ROOT, timeout=240,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    assert summary["task"] == "unsupervised"  # labels feed the probe, not the layers
    assert summary["sink"]["frames"] == FRAMES
    assert summary["sink"]["evaluated"] == FRAMES  # counted only for frames that carry a label
    assert "progressive accuracy" in run.stderr + run.stdout


# --- synthetic clips named by seed ---------------------------------------------------------------


def _labels_and_pixels(spec: str, seed: int = 0) -> tuple[list[int], np.ndarray]:
    with open_source(spec, Preprocess(size=(16, 16)), seed=seed) as src:
        frames = list(src)
    return [f.label for f in frames], np.stack([f.pixels for f in frames])


def test_synthetic_seed_in_the_spec_names_a_clip():
    a_labels, a = _labels_and_pixels("synthetic:120:seed=1")
    b_labels, b = _labels_and_pixels("synthetic:120:seed=2")
    again_labels, again = _labels_and_pixels("synthetic:120:seed=1", seed=7)  # the spec's seed wins over the run's
    assert a_labels == again_labels and np.array_equal(a, again)
    assert not np.array_equal(a, b) and a_labels != b_labels
    default_labels, _ = _labels_and_pixels("synthetic:120", seed=1)  # no seed in the spec: the run's seed, as before
    assert default_labels == a_labels
    x, y = dataset_arrays("synthetic:120:seed=2", Preprocess(size=(16, 16)))
    assert y.tolist() == b_labels and np.array_equal(x, b)


@pytest.mark.parametrize("spec", ["synthetic:0", "synthetic:seed=", "synthetic:10:seed=x", "synthetic:seed=1:10", "synthetic:10:seed=-1"])
def test_bad_synthetic_spec_is_one_line(spec):
    with pytest.raises(SourceError, match=r"synthetic\[:N\]\[:seed=S\]"):
        open_source(spec, Preprocess())
