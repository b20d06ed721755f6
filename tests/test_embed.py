"""`ffstream embed`: features of every frame of a source, as .npy or .npz, equal to the Python API's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ffstream
from ffstream.cli import main
from tests.media import write_video
from tests.test_api import train_tiny


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("embed"))


def test_npz_holds_features_frames_times_and_labels(tiny, tmp_path, capsys):
    out = tmp_path / "feats.npz"
    assert main(["embed", "--source", "synthetic:300:seed=4", "--checkpoint-dir", str(tiny), "--out", str(out), "--max-frames", "290"]) == 0
    assert "290 frames of synthetic:300:seed=4 embedded by layer all" in capsys.readouterr().out
    with np.load(out) as got:  # allow_pickle stays False: plain arrays only
        assert sorted(got.files) == ["features", "frame", "label", "time_s"]
        features, frame, label = got["features"], got["frame"], got["label"]
        assert features.shape == (290, 80) and features.dtype == np.float32
        assert np.array_equal(frame, np.arange(290)) and np.array_equal(got["time_s"], frame.astype(np.float64))
    stack = ffstream.load(tiny)
    expected = stack.from_source("synthetic:300:seed=4", max_frames=290)
    np.testing.assert_allclose(features, stack.embed(expected.pixels), rtol=1e-4, atol=1e-5)
    assert np.array_equal(label, expected.labels)


def test_npy_of_one_layer_of_an_unlabelled_video(tiny, tmp_path):
    write_video(tmp_path / "clip.mp4", n=12)
    out = tmp_path / "feats.npy"
    assert main(["embed", "--source", str(tmp_path / "clip.mp4"), "--checkpoint-dir", str(tiny), "--out", str(out), "--layer", "2"]) == 0
    features = np.load(out)
    assert features.shape == (12, 40)
    stack = ffstream.load(tiny)
    np.testing.assert_allclose(features, stack.embed(stack.from_source(str(tmp_path / "clip.mp4")).pixels, layer=2), rtol=1e-4, atol=1e-5)
    npz = tmp_path / "feats.npz"
    assert main(["embed", "--source", str(tmp_path / "clip.mp4"), "--checkpoint-dir", str(tiny), "--out", str(npz)]) == 0
    with np.load(npz) as got:
        assert "label" not in got.files  # no sidecar, no labels
        np.testing.assert_allclose(got["time_s"], np.arange(12) / 25)  # the clip's 25 frames/s


@pytest.mark.parametrize("args, message", [
    (["--out", "feats.csv"], "--out must end in .npy"),
    (["--out", "feats.npy", "--layer", "3"], "is not one of this stack's layers, 1..2"),
    (["--out", "feats.npy", "--max-frames", "0"], "--max-frames must be a positive integer"),
    (["--out", "feats.npy", "--source", "nothing.mp4"], "video file not found"),
])
def test_bad_input_is_one_line_and_exit_2(tiny, tmp_path, capsys, args, message):
    argv = ["embed", "--source", "synthetic:10", "--checkpoint-dir", str(tiny)] + [str(tmp_path / a) if a.startswith(("feats", "nothing")) else a for a in args]
    if "--source" in args:
        argv = argv[:1] + argv[3:]  # the case's own --source replaces the default one
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not list(tmp_path.glob("feats.*"))  # nothing written


def test_a_bad_layer_or_checkpoint_dir(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["embed", "--source", "synthetic:10", "--checkpoint-dir", str(tmp_path), "--out", "f.npy", "--layer", "0"])
    assert exit_.value.code == 2 and "'all'" in capsys.readouterr().err
    assert main(["embed", "--source", "synthetic:10", "--checkpoint-dir", str(tmp_path / "none"), "--out", str(tmp_path / "f.npy")]) == 2
    assert "no checkpoint directory" in capsys.readouterr().err
