"""A live source given no recipe starts from `webcam-live` (a frame forwarded at once, learning on a schedule), not from
the plain defaults whose 64-frame batches wait 4 s to fill at 15 frames/s; a camera stand-in serves MJPEG over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import pytest

from ffstream.bench.mjpeg import MjpegServer
from ffstream.cli import build_parser
from ffstream.commands.run import config_from_args
from tests.processes import ROOT, env


def run_config(*argv: str):
    return config_from_args(build_parser().parse_args(["run", *argv]))


@pytest.mark.parametrize("source", ["http://127.0.0.1:9/cam.mjpg", "rtsp://127.0.0.1:9/cam"])
def test_a_live_source_starts_from_the_webcam_live_recipe(source):
    cfg = run_config("--source", source)
    assert cfg.stream.source == source  # the flag wins over the recipe's webcam:0
    assert cfg.stream.batch == 1 and cfg.model.max_batch == 1 and cfg.model.learn_every_rows == 32


def test_a_recorded_video_still_starts_from_the_video_recipe_and_settings_still_win():
    assert run_config("--source", "synthetic:100").stream.pairs  # the video recipe (SCFF pairs)
    assert run_config("--source", "http://127.0.0.1:9/", "--set", "stream.batch=4").stream.batch == 4
    chosen = run_config("--source", "http://127.0.0.1:9/", "--set", "model.layers=16")  # another model: plain defaults
    assert chosen.stream.batch == 64 and chosen.model.learn_every_rows == 0


def test_the_camera_stand_in_serves_frames_opencv_reads():
    with MjpegServer(fps=30, frames=10, size=32) as cam:
        cap = cv2.VideoCapture(cam.url)
        try:
            frames = [img for ok, img in iter(cap.read, (False, None)) if ok]
        finally:
            cap.release()
    assert len(frames) == 10 and frames[0].shape == (32, 32, 3)
    assert frames[0].std() > 5  # a shape on a background, not a blank picture


def test_run_on_an_mjpeg_camera_with_the_defaults_learns_frame_by_frame(tmp_path):
    """`ffstream run --source http://...` with nothing else: every frame reaches the sink on its own (batch 1) and the
    layers step on the webcam-live schedule while it streams."""
    with MjpegServer(fps=15, frames=1000) as cam:
        run = subprocess.run(
            [sys.executable, "-m", "ffstream", "run", "--source", cam.url, "--max-frames", "96", "--no-progress", "--http", "none",
             "--monitor", f"ipc://{tmp_path}/mon", "--summary-json", str(tmp_path / "s.json")],
            capture_output=True, text=True, env={**env(), "TMPDIR": str(tmp_path)}, cwd=ROOT, timeout=300,
        )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["sink"]["frames"] >= 0.8 * 96  # a live source is at most once: the last frames in flight at the end may go
    assert all(layer["updates"] >= 1 for layer in summary["layers"]), summary["layers"]  # learned all the while
    assert summary["sink"]["latency_p50_ms"] is not None
