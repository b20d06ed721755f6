"""`ffstream monitor` as a user runs it: the dashboard, `--json`, `--tensorboard`, and a stack restarted underneath.

Two real monitor clients (the dashboard and `--json --tensorboard`) watch two real `ffstream run`s, one after
the other, on the same monitor address: the stack stops and starts again underneath them. The runs are paid for
once per module (`restarted_stack`); each test checks its own part of what the clients saw.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from ffstream.cli import main
from ffstream.monitor.dashboard import (
    Dashboard,
    DashboardConfig,
    render_text,
    sparkline,
)
from tests.processes import ROOT, env

FIRST_RUN_FRAMES = 320
SECOND_RUN_FRAMES = 4000  # more than the first run (a layer1 row above FIRST_RUN_FRAMES can only come from the second), and long
# enough that the layers publish their goodness while it streams, not only in their last metrics as it ends
RUN_TIMEOUT_S = 180
TAGS = ("layer1/goodness_pos", "layer1/goodness_neg", "layer1/p_pos", "layer1/p_neg", "layer1/fps", "layer2/goodness_pos", "sink/accuracy", "sleep/negatives_per_s")


def ffstream(*args: str) -> list[str]:
    return [sys.executable, "-m", "ffstream", *args]


@dataclass
class Watched:
    json_lines: list[dict]  # what `ffstream monitor --json` printed, in order
    dashboard_text: str  # the final dashboard `ffstream monitor` drew (stdout is a pipe: the last frame only)
    dashboard_rc: int
    tb_monitor: Path  # `ffstream monitor --tensorboard`
    tb_run: Path  # `ffstream run --tensorboard` (the second run)


@pytest.fixture(scope="module")
def restarted_stack(tmp_path_factory) -> Watched:
    tmp = tmp_path_factory.mktemp("restart")
    address = f"ipc://{tmp}/monitor"
    run_env = {**env(), "TMPDIR": str(tmp)}
    # Both clients start before any stack exists: SUB connects (and reconnects) by itself.
    as_json = subprocess.Popen(
        ffstream("monitor", "--json", "--connect", address, "--seconds", str(2 * RUN_TIMEOUT_S), "--tensorboard", str(tmp / "tb_monitor")),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=run_env, cwd=ROOT, text=True,
    )
    as_dashboard = subprocess.Popen(
        ffstream("monitor", "--connect", address, "--seconds", str(2 * RUN_TIMEOUT_S)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=run_env, cwd=ROOT, text=True,
    )
    try:
        for frames, extra in ((FIRST_RUN_FRAMES, []), (SECOND_RUN_FRAMES, ["--tensorboard", str(tmp / "tb_run")])):
            run = subprocess.run(
                ffstream("run", "--source", f"synthetic:{frames}", "--set", "model.layers=24,24", "--set", "stream.batch=32", "--monitor", address, "--no-progress", *extra),
                capture_output=True, text=True, env=run_env, cwd=ROOT, timeout=RUN_TIMEOUT_S,
            )
            assert run.returncode == 0, run.stderr[-3000:]
            assert as_json.poll() is None and as_dashboard.poll() is None, "a monitor client exited while the stack restarted"
    finally:
        for client in (as_json, as_dashboard):
            if client.poll() is None:
                client.send_signal(signal.SIGINT)  # Ctrl-C: the dashboard draws its last frame, TensorBoard flushes
    json_out, json_err = as_json.communicate(timeout=30)
    dash_out, dash_err = as_dashboard.communicate(timeout=30)
    assert as_json.returncode == 0, json_err[-3000:]
    (tmp / "monitor.jsonl").write_text(json_out)  # kept with pytest's temporary directories, for a post-mortem
    (tmp / "dashboard.txt").write_text(dash_out)
    return Watched([json.loads(line) for line in json_out.splitlines() if line.strip()], dash_out, as_dashboard.returncode, tmp / "tb_monitor", tmp / "tb_run")


def _row(text: str, worker: str) -> list[str]:
    """The cells of a worker's row in the dashboard's text (first match)."""
    for line in text.splitlines():
        if "│" not in line and "┃" not in line:
            continue  # a title or a rule, not a row
        cells = [c.strip() for c in line.replace("┃", "│").strip("│ ").split("│")]
        if cells[0] == worker:
            return cells
    raise AssertionError(f"no row for {worker} in:\n{text}")


def _last(lines: list[dict], worker: str) -> dict:
    return [m for m in lines if m["worker"] == worker][-1]


def test_json_stays_one_object_per_line_and_survives_the_restart(restarted_stack):
    lines = restarted_stack.json_lines
    assert lines, "the --json client printed nothing"
    assert all({"worker", "t", "kind", "pid"} <= set(m) for m in lines), lines[0]
    # Two stacks, one after the other: layer1 reported from two processes, and the second one's figures came through.
    layer1 = [m for m in lines if m["worker"] == "layer1"]
    pids = list(dict.fromkeys(m["pid"] for m in layer1))
    assert len(pids) == 2, f"layer1 pids seen: {pids}"
    assert max(m["frames"] for m in layer1 if m["pid"] == pids[0]) <= FIRST_RUN_FRAMES
    assert max(m["frames"] for m in layer1 if m["pid"] == pids[1]) > FIRST_RUN_FRAMES


def test_dashboard_client_survives_the_restart(restarted_stack):
    text = restarted_stack.dashboard_text
    assert restarted_stack.dashboard_rc == 0
    header = _row(text, "worker")  # the layers table comes first
    layer1 = dict(zip(header, _row(text, "layer1")))
    assert layer1["restarts"] == "1", layer1  # it saw the second stack's layer1 as the same worker, restarted
    assert int(layer1["frames"]) > FIRST_RUN_FRAMES, layer1  # ... and kept drawing its figures
    # Every worker of the second stack has its row; by now (the run over) some may already show as stale.
    for worker in ("layer2", "sleep", "sink", "source"):
        assert re.fullmatch(r"live|ended|stale \d+s", _row(text, worker)[1]), _row(text, worker)
    assert int(dict(zip(header, _row(text, "layer2")))["frames"]) > FIRST_RUN_FRAMES


def _shown(value, spec: str) -> str:
    """How the dashboard writes a figure: "-" when a worker has none yet."""
    return "-" if value is None else format(value, spec)


def test_dashboard_renders_every_layer_sleep_and_sink_with_their_figures(restarted_stack):
    """The real metrics of both runs, rendered without a terminal (rich's record/export_text): every row shows
    its worker's last figures, and layer1's new process counts as a restart."""
    lines = restarted_stack.json_lines
    board = Dashboard("ipc://test")
    for m in lines:
        board.update(m["worker"], m)
    text = render_text(board)
    print(text)  # shown when the test fails
    header = _row(text, "worker")  # the layers table comes first
    for worker in ("layer1", "layer2"):
        last = _last(lines, worker)
        cells = dict(zip(header, _row(text, worker)))
        separation = None if last["goodness_neg"] is None or last["goodness_pos"] is None else last["goodness_pos"] - last["goodness_neg"]
        assert cells["frames"] == str(last["frames"]), (cells, last)
        assert (cells["G pos"], cells["G neg"]) == (_shown(last["goodness_pos"], ".1f"), _shown(last["goodness_neg"], ".1f")), (cells, last)
        assert cells["separation"] == _shown(separation, "+.1f"), (cells, last)
        assert (cells["p pos"], cells["p neg"]) == (_shown(last["p_pos"], ".3f"), _shown(last["p_neg"], ".3f")), (cells, last)
        assert cells["frames/s"] == f"{last['fps']:.0f}" and cells["drops"] == str(last["dropped"]), (cells, last)
        assert cells["restarts"] == str(len({m["pid"] for m in lines if m["worker"] == worker}) - 1), cells
        assert set(cells["trend"]) <= set("▁▂▃▄▅▆▇█ "), cells["trend"]
    layer1 = [m for m in lines if m["worker"] == "layer1" and m["goodness_neg"] is not None]
    assert layer1, "layer1 never reported negative goodness"
    sleep = _last(lines, "sleep")
    sleep_row = _row(text, "sleep")
    assert _shown(sleep["negatives_per_s"], ".0f") in sleep_row and _shown(sleep["staleness"], ".1f") in sleep_row, (sleep_row, sleep)
    assert str(sleep["negatives"]) in sleep_row, (sleep_row, sleep)
    # The sink: progressive accuracy, since synthetic video has labels. Its figures as of its last message that had any.
    scored = [i for i, m in enumerate(lines) if m["worker"] == "sink" and m["accuracy"] is not None]
    assert scored, "the sink never reported an accuracy"
    board = Dashboard("ipc://test")
    for m in lines[: scored[-1] + 1]:
        board.update(m["worker"], m)
    sink, sink_row = lines[scored[-1]], _row(render_text(board), "sink")
    assert f"{100 * sink['accuracy']:.1f} %" in sink_row and str(sink["evaluated"]) in sink_row, (sink_row, sink)


def _scalars(directory: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(directory))
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.mark.parametrize("which", ["tb_monitor", "tb_run"])
def test_tensorboard_scalars_are_written(restarted_stack, which):
    pytest.importorskip("tensorboard")
    scalars = _scalars(getattr(restarted_stack, which))
    missing = [tag for tag in TAGS if not scalars.get(tag)]
    assert not missing, f"missing scalars {missing}; have {sorted(scalars)}"
    assert max(scalars["layer1/fps"]) > 0
    assert all(0.0 <= p <= 1.0 for p in scalars["layer1/p_pos"])


@pytest.mark.parametrize("command", [["monitor", "--seconds", "30"], ["run", "--source", "synthetic:64", "--set", "model.layers=8", "--no-progress"]])
def test_tensorboard_missing_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, command):
    """In-process through `ffstream.cli.main`, with the import genuinely failing: `tensorboard` is blocked in
    sys.modules and torch's wrapper module is dropped, so `from torch.utils.tensorboard import ...` runs afresh."""
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    if "torch.utils.tensorboard" in sys.modules:
        monkeypatch.delitem(sys.modules, "torch.utils.tensorboard")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where a run would make its run directory
    where = ["--connect", f"ipc://{tmp_path}/nothing"] if command[0] == "monitor" else ["--monitor", f"ipc://{tmp_path}/mon"]
    code = main([*command, *where, "--tensorboard", str(tmp_path / "tb")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "pip install tensorboard" in err[0], (code, err)
    assert not (tmp_path / "tb").exists()
    assert not list(tmp_path.glob("ffstream-*")), "the run started workers before it found tensorboard missing"


def test_workers_go_stale_when_their_metrics_stop():
    now = [100.0]
    board = Dashboard("ipc://x", DashboardConfig(stale_after_s=5.0), clock=lambda: now[0])
    board.update("layer1", {"kind": "layer", "pid": 1, "goodness_pos": 30.0, "goodness_neg": 10.0})
    board.update("sink", {"kind": "sink", "pid": 2, "accuracy": 0.5})
    now[0] += 4.0
    board.update("sink", {"kind": "sink", "pid": 2, "accuracy": 0.6})
    now[0] += 2.0  # layer1 silent for 6 s, the sink for 2 s
    text = render_text(board)
    assert _row(text, "layer1")[1] == "stale 6s"
    assert _row(text, "sink")[1] == "live"
    board.update("layer1", {"kind": "layer", "pid": 3, "goodness_pos": 31.0, "goodness_neg": 9.0})  # back, a new process
    cells = dict(zip(_row(render_text(board), "worker"), _row(render_text(board), "layer1")))
    assert cells["status"] == "live" and cells["restarts"] == "1" and cells["separation"] == "+22.0"


def test_sparkline_spans_the_blocks():
    assert sparkline([0.0, 1.0, 2.0, None, 7.0]) == "▁▂▃ █"
    assert sparkline([5.0, 5.0]) == "▄▄"
    assert sparkline([None]) == ""
    assert sparkline(range(100), width=3) == "▁▅█"  # the last 3: 97, 98, 99
