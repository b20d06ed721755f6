"""`ffstream bench video` as a user runs it: a tiny real run's JSON, bad flags, Ctrl-C.

Each case is a real subprocess (`python -m ffstream bench video ...`) on a few hundred frames, so the figures
mean nothing; what is checked is their shape: every row of both streams, accuracies in [0, 1], frames/s > 0.
"""

from __future__ import annotations

import json
import selectors
import signal
import subprocess
import sys
import time

import pytest

from ffstream.config.recipes import read
from tests.processes import env

RUN_TIMEOUT_S = 120  # a tiny run takes seconds alone; a loaded 2-core machine gets slack, a hang still fails
ROWS = {"ff_in_order", "ff_shuffled", "untrained", "raw_pixels", "backprop"}


def bench_video(*args: str) -> list[str]:
    return [sys.executable, "-m", "ffstream", "bench", "video", *args]


@pytest.fixture(scope="module")
def tiny_run():
    """Both streams, two seeds, 400 training and 200 test frames, a probe set of 300 garments: (CompletedProcess, the
    parsed JSON)."""
    result = subprocess.run(bench_video("--frames", "400", "--test-frames", "200", "--seeds", "0,1", "--probe-garments", "300", "--json"),
                            env=env(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, json.loads(result.stdout)


def test_json_has_every_stream_row_and_seed(tiny_run):
    _, out = tiny_run
    assert set(out) >= {"config", "fps_means", "streams", "pipeline", "pipeline_note", "wall_s"}
    assert out["config"]["seeds"] == [0, 1] and out["config"]["frames"] == 400
    assert set(out["streams"]) == {"shapes", "fashion"}
    assert set(out["fps_means"]) == ROWS
    pipeline = out["pipeline"]  # ffstream run --recipe video + ffstream probe, really run
    assert pipeline is not None, out["pipeline_note"]
    assert 0.0 <= pipeline["accuracy"] <= 1.0 and pipeline["fps"] > 0 and pipeline["n_test"] == 200, pipeline
    assert set(pipeline["layers"]) == {"1", "2"}, pipeline  # the video recipe's two conv layers
    for name, stream in out["streams"].items():
        assert stream["train_frames"] == 400 and stream["test_frames"] == 200, name
        assert set(stream["rows"]) == ROWS, name
        for row in ("ff_in_order", "ff_shuffled"):  # FF at every seed
            assert set(stream["rows"][row]["per_seed"]) == {"0", "1"}, (name, row)
        for row in ROWS - {"ff_in_order", "ff_shuffled"}:
            assert set(stream["rows"][row]["per_seed"]) == {"0"}, (name, row)  # the others at the first seed
        # the i.i.d. pass at its rate: decaying over the pass; in order, the recipe's schedule (no linear decay: a stream has no end)
        assert stream["shuffled_config"]["shuffled"] and stream["shuffled_config"]["lr_decay"], stream["shuffled_config"]
        assert not stream["study_config"]["shuffled"] and not stream["study_config"]["lr_decay"], stream["study_config"]
        assert stream["study_config"]["lr_half_life"] == read("video").data["model"]["lr_half_life"], stream["study_config"]
    # moving Fashion-MNIST only: a second probe fitted on one frame each of many garments, for FF at every seed
    assert "probe_set" not in out["streams"]["shapes"]
    on_set = out["streams"]["fashion"]["probe_set"]
    assert on_set["frames"] == 300 and set(on_set["rows"]) == {"ff_in_order", "untrained", "raw_pixels"}, on_set
    assert set(on_set["rows"]["ff_in_order"]["per_seed"]) == {"0", "1"} and set(on_set["rows"]["untrained"]["per_seed"]) == {"0"}
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in on_set["rows"].values()), on_set


def test_every_accuracy_is_a_fraction_and_every_rate_positive(tiny_run):
    _, out = tiny_run
    for name, stream in out["streams"].items():
        for row, r in stream["rows"].items():
            figures = [*r["per_seed"].values(), r]
            assert all(0.0 <= f["accuracy"] <= 1.0 for f in figures), (name, row, r)
            assert all(f["fps"] > 0 for f in figures), (name, row, r)
            per_seed = [f["accuracy"] for f in r["per_seed"].values()]
            assert r["accuracy"] == pytest.approx(sum(per_seed) / len(per_seed)), (name, row)


def test_progress_goes_to_stderr_with_elapsed_time(tiny_run):
    result, _ = tiny_run
    lines = [line for line in result.stderr.splitlines() if line.startswith("bench video: ")]
    for name in ("shapes", "fashion"):
        for row in ROWS:
            assert any(line.startswith(f"bench video: {name}: {row}, seed 0 (") for line in lines), (name, row, result.stderr)
    assert all(line.endswith(" s)") for line in lines), result.stderr


# (argv, the flag the line must name, the line's prefix). argparse reports a flag it does not know from the top
# parser, as it does for every command.
BAD_FLAGS = {
    "seeds not numbers": (["--seeds", "0,x"], "--seeds", "ffstream bench video: error: "),
    "seed twice": (["--seeds", "1,1"], "--seeds", "ffstream bench video: error: "),
    "unknown stream": (["--streams", "shapes,mnist"], "--streams", "ffstream bench video: error: "),
    "frames zero": (["--frames", "0"], "--frames", "ffstream bench video: error: "),
    "unknown flag": (["--epochs", "3"], "--epochs", "ffstream: error: "),
}


@pytest.fixture(scope="module")
def bad_runs():
    """Every BAD_FLAGS invocation, started together: name -> CompletedProcess."""
    procs = {name: subprocess.Popen(bench_video(*argv), env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, (argv, _, _) in BAD_FLAGS.items()}
    try:
        outputs = {name: p.communicate(timeout=RUN_TIMEOUT_S) for name, p in procs.items()}  # before returncode is read
        return {name: subprocess.CompletedProcess(p.args, p.returncode, *outputs[name]) for name, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.communicate()


@pytest.mark.parametrize("case", list(BAD_FLAGS))
def test_bad_flags_give_one_line_and_exit_2(bad_runs, case):
    result, (_, flag, prefix) = bad_runs[case], BAD_FLAGS[case]
    assert result.returncode == 2, result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith(prefix), result.stderr
    assert flag in errors[0], errors[0]


def test_ctrl_c_stops_at_once_with_one_line():
    """SIGINT once the first progress line is out: exit 130 within seconds, one line, no figures, no traceback."""
    proc = subprocess.Popen(bench_video("--frames", "200000", "--json"), env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stderr, selectors.EVENT_READ)
            deadline = time.monotonic() + RUN_TIMEOUT_S
            first = ""
            while not first.startswith("bench video: ") and time.monotonic() < deadline and proc.poll() is None:
                if sel.select(timeout=1.0):
                    first = proc.stderr.readline()
        assert first.startswith("bench video: shapes: generating"), first
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert out == "" and "Traceback" not in err, err
    others = [line for line in err.splitlines() if not line.startswith("bench video: ")]  # progress lines may precede it
    assert len(others) == 1 and others[0].startswith("ffstream bench video: interrupted after "), err
