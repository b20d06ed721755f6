"""`ffstream run`'s checks before torch is imported: the --source value, and a webcam with no device node."""

from __future__ import annotations

import sys

import pytest

from ffstream.entry import run_source
from ffstream.sources.preflight import missing_webcam


@pytest.mark.parametrize(
    "argv, source",
    [(["--source", "webcam:3"], "webcam:3"), (["--source=webcam"], "webcam"), (["--set", "model.layers=16"], None),
     (["--source", "a.mp4", "--source", "webcam:1"], "webcam:1"), (["--source"], None)],
)
def test_run_source_reads_the_flag_as_argparse_does(argv, source):
    assert run_source(argv) == source


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="device nodes are checked on Linux only")
def test_missing_webcam_names_the_device_node(tmp_path):
    assert missing_webcam("webcam:97") == "cannot open webcam:97: no such device /dev/video97"
    assert missing_webcam("webcam") in (None, "cannot open webcam: no such device /dev/video0")
    for other in ("webcam:x", "rtsp://host/s", "video.mp4", "synthetic:10"):
        assert missing_webcam(other) is None  # left to the full parser and the source worker
