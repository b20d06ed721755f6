"""The `ffstream` command as a user meets it: bad input, a short real run, eval of its checkpoints, Ctrl-C.

Every case is a real subprocess (`python -m ffstream ...`). Each one pays for
importing torch, so the error cases are started together, once per module, and
each test then checks its own result. TMPDIR points into the test's directory,
so a run's private socket and log directories are cleaned up with it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import zmq

from ffstream.ff.checkpoint import layer_path, read_metadata
from ffstream.net import wire
from tests.processes import env

CASE_TIMEOUT_S = 60  # no bad invocation may take longer than this; a hang fails, it does not block the suite
BATCH_TIMEOUT_S = 120  # the error cases all together, started at once on a 2-core machine


def ffstream(*args: str) -> list[str]:
    return [sys.executable, "-m", "ffstream", *args]


def cli_env(tmp_dir) -> dict[str, str]:
    return {**env(), "TMPDIR": str(tmp_dir)}


# (argv, what the error line must mention, the exit code)
ERROR_CASES = {
    "layers not numbers": (["run", "--set", "model.layers=10,x"], ["model.layers", "'x'"], 2),
    "batch zero": (["run", "--set", "stream.batch=0"], ["stream.batch", "positive integer", "got 0"], 2),
    "size without x": (["run", "--set", "stream.size=28"], ["stream.size", "HxW"], 2),
    "negative barrier pause": (["run", "--set", "stream.barrier_min_s=-1"], ["stream.barrier_min_s", "seconds >= 0", "-1"], 2),
    "set unknown key": (["run", "--set", "model.bogus=1"], ["unknown config key model.bogus;", "(in --set)"], 2),  # the rest: test_recipes
    "unknown recipe": (["run", "--recipe", "no-such-recipe"], ["unknown recipe 'no-such-recipe'", "images-dense"], 2),
    "config unknown key": (["worker", "layer", "--config", "unknown_key.json"], ["unknown config key stream.bogus;"], 2),
    "config bad value": (["worker", "layer", "--config", "bad_value.json"], ["stream.batch", "'many'"], 2),
    "missing video": (["run", "--source", "/nonexistent.mp4"], ["/nonexistent.mp4"], 2),
    "text file as video": (["run", "--source", "notavideo.txt"], ["notavideo.txt"], 2),
    "eval without checkpoints": (["eval", "--checkpoint-dir", "empty", "--source", "synthetic:100"], ["no layer checkpoints", "empty"], 2),
}


@pytest.fixture(scope="module")
def error_runs(tmp_path_factory):
    """Every ERROR_CASES invocation, run at the same time in one directory: name -> CompletedProcess."""
    cwd = tmp_path_factory.mktemp("cli-errors")
    (cwd / "unknown_key.json").write_text(json.dumps({"stream": {"bogus": 1}}))
    (cwd / "bad_value.json").write_text(json.dumps({"stream": {"batch": "many"}}))
    (cwd / "notavideo.txt").write_text("this is not a video\n")
    (cwd / "empty").mkdir()
    procs = {
        name: subprocess.Popen(ffstream(*argv), cwd=cwd, env=cli_env(cwd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, (argv, _, _) in ERROR_CASES.items()
    }
    results = {}
    deadline = time.monotonic() + BATCH_TIMEOUT_S
    try:
        for name, proc in procs.items():
            try:
                out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
                results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
            except subprocess.TimeoutExpired:
                results[name] = None  # reported by the test of that case
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return results


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_bad_input_exits_2_with_one_line_naming_it(error_runs, case):
    argv, mentions, code = ERROR_CASES[case]
    result = error_runs[case]
    assert result is not None, f"ffstream {' '.join(argv)} did not exit within {BATCH_TIMEOUT_S}s"
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr  # one line; argparse may print its usage synopsis above it
    assert errors[0].startswith(f"ffstream {argv[0]}: error: "), errors[0]
    for word in mentions:
        assert word in errors[0], f"{word!r} not in {errors[0]!r}"
    others = [line for line in result.stderr.splitlines() if line != errors[0]]
    assert all(line.startswith(("usage:", " ")) for line in others), f"more than the message and usage:\n{result.stderr}"


def _one_error_line(result, code: int = 2) -> str:
    """The run exited `code` with exactly one line on stderr, and no traceback; that line."""
    assert result.returncode == code, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("ffstream run: error: "), result.stderr[-2000:]
    assert [line for line in result.stderr.splitlines() if "ffstream.run INFO" not in line] == errors, result.stderr[-2000:]
    return errors[0]


def test_run_with_a_missing_webcam_exits_2_at_once(tmp_path):
    """There is no /dev/video97 (there is no camera on this machine at all): the run says so before starting a worker."""
    result = subprocess.run(
        ffstream("run", "--source", "webcam:97", "--set", "model.layers=16", "--set", "sleep.enabled=false", "--no-progress", "--monitor", f"ipc://{tmp_path}/mon"),
        cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=CASE_TIMEOUT_S,
    )
    line = _one_error_line(result)
    assert "cannot open webcam:97" in line and "/dev/video97" in line, line
    assert "started" not in result.stderr, "workers were started for a device that does not exist"
    assert _workers_left(tmp_path) == [], "workers outlived the run"


def test_run_with_an_unreachable_stream_exits_2_without_restarting(tmp_path):
    """A live stream is opened only by the source worker; its usage error (exit 2) ends the run with its one line, at
    once: restarting cannot fix a wrong address. Nothing listens on port 1, so the connection is refused."""
    started = time.monotonic()
    result = subprocess.run(
        ffstream("run", "--source", "rtsp://127.0.0.1:1/none", "--set", "model.layers=16",
                 "--set", "sleep.enabled=false", "--no-progress", "--monitor", f"ipc://{tmp_path}/mon"),
        cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=CASE_TIMEOUT_S,
    )
    line = _one_error_line(result)
    assert "source: cannot open rtsp://127.0.0.1:1/none" in line, line
    assert "restart" not in result.stderr, result.stderr[-2000:]
    assert time.monotonic() - started < CASE_TIMEOUT_S
    assert _workers_left(tmp_path) == [], "workers outlived the run"


def _workers_left(tmp_dir) -> list[str]:
    """Processes still running whose command line mentions a config under tmp_dir (the run's workers)."""
    left = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "-m ffstream worker" in cmdline and str(tmp_dir) in cmdline:
            left.append(cmdline)
    return left


def test_short_run_then_eval_of_its_checkpoints(tmp_path):
    ck = tmp_path / "ck"
    run = subprocess.run(
        ffstream("run", "--source", "synthetic:600", "--set", "stream.task=supervised", "--set", "model.layers=32,32", "--set", "stream.batch=32",
                 "--checkpoint-dir", str(ck),
                 "--monitor", f"ipc://{tmp_path}/mon", "--no-progress", "--summary-json", str(tmp_path / "summary.json")),
        cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [layer["frames"] for layer in summary["layers"]] == [600, 600], summary["layers"]
    assert sorted(p.name for p in ck.iterdir()) == ["layer1.safetensors", "layer2.safetensors", "readout.safetensors", "run.json", "sink.json", "source.json"]
    recorded = json.loads((ck / "run.json").read_text())  # the effective config, kept beside the checkpoints
    assert recorded["stream"]["source"] == "synthetic:600" and recorded["stream"]["task"] == "supervised"
    assert recorded["model"]["layers"] == [32, 32] and recorded["model"]["max_batch"] == 32  # --set stream.batch carries the micro-batch
    assert "topology" not in recorded, "where a run's sockets were is not part of its recipe"

    ev = subprocess.run(
        ffstream("eval", "--checkpoint-dir", str(ck), "--source", "synthetic:200", "--json"),
        cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=60,
    )
    assert ev.returncode == 0, ev.stderr[-3000:]
    lines = ev.stdout.strip().splitlines()
    assert len(lines) == 1, ev.stdout
    result = json.loads(lines[0])
    assert result["n"] == 200
    assert result["layers"] == [32, 32]
    for key in ("accuracy_energy", "accuracy_energy_all_layers", "accuracy_energy_last_layer", "accuracy_softmax"):
        assert isinstance(result[key], float) and 0.0 <= result[key] <= 1.0, result

    # Without --source, eval reads the run's source from run.json (synthetic: the same 600-frame clip).
    ev = subprocess.run(ffstream("eval", "--checkpoint-dir", str(ck), "--json"), cwd=tmp_path, env=cli_env(tmp_path),
                        capture_output=True, text=True, timeout=60)
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert json.loads(ev.stdout.strip().splitlines()[-1])["n"] == 600


def test_sigint_stops_a_run_cleanly_with_checkpoints(tmp_path, socket):
    ck = tmp_path / "ck"
    monitor = f"ipc://{tmp_path}/mon"
    watcher = socket(zmq.SUB)  # connects before the run binds: SUB reconnects by itself
    watcher.setsockopt(zmq.SUBSCRIBE, b"")
    watcher.connect(monitor)
    proc = subprocess.Popen(
        ffstream("run", "--source", "synthetic:1000000", "--set", "model.layers=32,32", "--set", "stream.batch=32", "--checkpoint-dir", str(ck),
                 "--monitor", monitor, "--no-progress", "--summary-json", str(tmp_path / "summary.json")),
        cwd=tmp_path, env=cli_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        # Wait, under a deadline, until a layer reports learned frames: the stack is really running.
        deadline = time.monotonic() + 60
        flowing = False
        while not flowing:
            assert proc.poll() is None, f"the run ended early: {proc.communicate()[1][-3000:]}"
            assert time.monotonic() < deadline, "no layer reported frames within 60s"
            if watcher.poll(200):
                try:
                    msg = wire.decode(watcher.recv_multipart(), max_payload=0)
                except wire.WireError:
                    continue
                figures = msg.extra.get("metrics", {})
                flowing = msg.stream.startswith("layer") and (figures.get("frames") or 0) > 0
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        out, err = proc.communicate(timeout=15)
        stopped_in = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    print(f"\nclean shutdown: SIGINT to exit of `ffstream run` in {stopped_in:.2f} s")
    assert stopped_in < 15
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["interrupted"] is True
    assert set(summary["exit_codes"].values()) == {0}, summary["exit_codes"]
    for index in (1, 2):
        _, meta = read_metadata(layer_path(ck, index))
        assert int(meta["version"]) > 0, f"layer {index} saved before it learned anything"
    assert _workers_left(tmp_path) == [], "workers outlived the run"
