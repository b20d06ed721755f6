"""`ffstream score` as it will be checked: a stack trained on one real video, then scored on that video with
frames of another video spliced in. The spliced frames must stand out with low goodness.

The training run is paid for once per module (`trained_on_vtest`). Bad input is a real subprocess each, started
together.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ffstream.cli import main
from ffstream.ff import FFLayer, checkpoint
from ffstream.ff.config import LayerConfig
from ffstream.offline.score import read_csv
from tests.processes import ROOT, env

DATA = Path("/usr/share/doc/opencv-doc/examples/data")
VIDEO_A, VIDEO_B = DATA / "vtest.avi", DATA / "Megamind.avi"  # a shopping mall seen by a fixed camera; an animated film
SPLICE_AT, SPLICE_FROM_B, SPLICE_LEN = 300, 50, 60  # B's frames 50..109 go in after A's frame 299
A_FRAMES_USED = 400  # A's first 400 frames make the spliced video (A has 795)
FPS = 10
pytestmark = pytest.mark.skipif(not (VIDEO_A.exists() and VIDEO_B.exists()), reason="needs opencv-doc's sample videos (apt-get install opencv-doc)")


def ffstream(*args: str) -> list[str]:
    return [sys.executable, "-m", "ffstream", *args]


def write_spliced(path: Path) -> None:
    """A's frames 0..399 with B's frames 50..109 inserted after A's frame 299, resized to A's size; MPEG-4 at 10 fps."""
    import av
    import cv2

    def frames(video: Path, start: int, stop: int) -> list[np.ndarray]:
        with av.open(str(video)) as container:
            out = []
            for i, frame in enumerate(container.decode(video=0)):
                if i >= stop:
                    break
                if i >= start:
                    out.append(frame.to_ndarray(format="rgb24"))
            return out

    a = frames(VIDEO_A, 0, A_FRAMES_USED)
    height, width = a[0].shape[:2]
    b = [cv2.resize(f, (width, height)) for f in frames(VIDEO_B, SPLICE_FROM_B, SPLICE_FROM_B + SPLICE_LEN)]
    assert len(b) == SPLICE_LEN
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt, stream.bit_rate = width, height, "yuv420p", 4_000_000
        for image in a[:SPLICE_AT] + b + a[SPLICE_AT:]:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def trained_on_vtest(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("score")
    ck = tmp / "ck"
    run = subprocess.run(
        ffstream("run", "--source", str(VIDEO_A), "--set", "model.layers=200,200", "--epochs", "2", "--checkpoint-dir", str(ck),
                 "--monitor", f"ipc://{tmp}/mon", "--no-progress"),
        capture_output=True, text=True, env={**env(), "TMPDIR": str(tmp)}, cwd=ROOT, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return ck


def test_spliced_frames_get_low_goodness(trained_on_vtest, tmp_path):
    spliced = tmp_path / "spliced.avi"
    write_spliced(spliced)
    out, png = tmp_path / "scores.csv", tmp_path / "scores.png"
    proc = subprocess.run(
        ffstream("score", "--source", str(spliced), "--checkpoint-dir", str(trained_on_vtest), "--out", str(out), "--plot", str(png)),
        capture_output=True, text=True, env=env(), cwd=ROOT, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    columns = read_csv(out)
    assert list(columns) == ["frame", "time_s", "goodness_layer1", "goodness_layer2", "novelty", "novelty_recent"]
    total = A_FRAMES_USED + SPLICE_LEN
    np.testing.assert_array_equal(columns["frame"], np.arange(total))
    np.testing.assert_allclose(columns["time_s"], np.arange(total) / FPS, atol=1e-3)
    inserted = (columns["frame"] >= SPLICE_AT) & (columns["frame"] < SPLICE_AT + SPLICE_LEN)
    figures = {}
    for key in ("goodness_layer1", "goodness_layer2", "novelty"):
        a, b = columns[key][~inserted], columns[key][inserted]
        figures[key] = (a.mean(), a.std(), b.mean(), b.std())
    print("\nscore figures (A mean, A std, spliced mean, spliced std):", {k: tuple(round(float(v), 3) for v in f) for k, f in figures.items()})
    a_mean, a_std, b_mean, _ = figures["goodness_layer1"]
    # Layer 1: the spliced block sits far below the video it was trained on, by a margin, not by noise.
    assert b_mean < 0.85 * a_mean and b_mean < a_mean - 5 * a_std, figures["goodness_layer1"]
    assert figures["novelty"][2] > figures["novelty"][0] + 0.1, figures["novelty"]
    # Frame by frame: most spliced frames score as more novel than any but the top 1 % of A's frames.
    cutoff = np.quantile(columns["novelty"][~inserted], 0.99)
    assert (columns["novelty"][inserted] > cutoff).mean() > 0.9
    # novelty_recent, the sink's live score: empty in its warm-up, then the spliced block far out and A quiet
    recent = columns["novelty_recent"]
    assert np.isnan(recent[:100]).all() and not np.isnan(recent[100:]).any()
    assert np.median(recent[inserted]) > 10 and np.quantile(recent[100:][~inserted[100:]], 0.99) < 3, figures
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def _save_layer(directory: Path, index: int, cfg: LayerConfig, meta: dict) -> None:
    checkpoint.save_layer(checkpoint.layer_path(directory, index), FFLayer(cfg), meta)


@pytest.mark.parametrize("case", ["missing video", "not a video", "empty checkpoint dir", "layers do not chain", "frames do not fit layer 1", "recurrent", "no matplotlib"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, case):
    """In-process through the real entry point, `ffstream.cli.main` (a subprocess each would only add torch imports)."""
    good = tmp_path / "good"
    _save_layer(good, 1, LayerConfig(784, 16), {"frame_shape": [1, 28, 28]})
    unchained = tmp_path / "unchained"  # layer 2 takes 32 values, layer 1 gives 16
    _save_layer(unchained, 1, LayerConfig(784, 16), {"frame_shape": [1, 28, 28]})
    _save_layer(unchained, 2, LayerConfig(32, 16), {"frame_shape": [1, 28, 28]})
    misshapen = tmp_path / "misshapen"  # layer 1 takes 100 values, its frames are 28x28
    _save_layer(misshapen, 1, LayerConfig(100, 16), {"frame_shape": [1, 28, 28]})
    recurrent = tmp_path / "recurrent"  # what `ffstream run --recurrent` leaves: layer 1's metadata says so
    _save_layer(recurrent, 1, LayerConfig(784, 16), {"frame_shape": [1, 28, 28], "recurrent": {"iterations": 8, "window": [3, 5], "damping": 0.7}})
    (tmp_path / "empty").mkdir()
    video, out = str(VIDEO_A), str(tmp_path / "scores.csv")
    source, directory, expected, extra = {
        "missing video": (str(tmp_path / "nope.avi"), good, "not found", []),
        "not a video": (str(checkpoint.layer_path(good, 1)), good, "video", []),
        "empty checkpoint dir": (video, tmp_path / "empty", "no layer checkpoints", []),
        "layers do not chain": (video, unchained, "chain", []),
        "frames do not fit layer 1": (video, misshapen, "takes 100 values", []),
        "recurrent": (video, recurrent, "recurrent", []),
        "no matplotlib": (video, good, "pip install matplotlib", ["--plot", str(tmp_path / "scores.png")]),
    }[case]
    if case == "no matplotlib":
        monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError, as when absent
    code = main(["score", "--source", source, "--checkpoint-dir", str(directory), "--out", out, *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and expected in err[0], (code, err)
    assert not Path(out).exists(), "a failed score left a CSV behind"
