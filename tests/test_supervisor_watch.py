"""The supervisor watches more than exit codes: a hung worker is restarted; its budget and the sink's period come from config."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from ffstream.config import ConfigError, RunConfig, load
from ffstream.supervisor import Child, RunFailed, StallWatch, Supervisor, resolve_stream
from ffstream.workers.build import build_worker
from tests.processes import env, ipc_topology


# the config reaches the supervisor and the sink -----------------------------------------------------------------------
def test_restart_budget_window_and_stall_period_come_from_the_config(tmp_path):
    cfg = load(environ={"FFSTREAM_RESTART_BUDGET": "2", "FFSTREAM_RESTART_WINDOW_S": "30", "FFSTREAM_STALL_AFTER_S": "45"})
    sup = Supervisor(cfg, str(tmp_path))
    assert (sup.restart_budget, sup.restart_window_s, sup.stalls.stall_after_s) == (2, 30.0, 45.0)
    assert Supervisor(cfg, str(tmp_path), restart_budget=7).restart_budget == 7  # an explicit argument still wins
    with pytest.raises(ConfigError, match="restart_budget"):
        load(environ={"FFSTREAM_RESTART_BUDGET": "0"})
    with pytest.raises(ConfigError, match="stall_after_s"):
        load(environ={"FFSTREAM_STALL_AFTER_S": "-1"})


def test_a_crash_loop_fails_the_run_on_the_configured_budget(tmp_path):
    cfg = load(environ={"FFSTREAM_RESTART_BUDGET": "1"})
    sup = Supervisor(cfg, str(tmp_path))
    sup.env, sup.spare_due = env(), None
    sup.children["layer1"] = child = Child("layer1", [sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "layer1.log")
    child.start(sup.env)
    deadline = time.monotonic() + 60
    with pytest.raises(RunFailed, match="crashed 2 times within 600 s"):
        while True:
            assert time.monotonic() < deadline, f"{child.restarts} restarts and no failure"
            sup._check_children()
            threading.Event().wait(0.02)  # the supervisor's own poll interval, shortened
    assert child.restarts == 1


def test_the_sinks_checkpoint_period_comes_from_the_config(tmp_path):
    cfg = load(environ={"FFSTREAM_CHECKPOINT_EVERY_S": "7.5", "FFSTREAM_MODEL_LAYERS": "8"})
    sink = build_worker("sink", cfg)
    try:
        assert sink.checkpoint_every_s == 7.5
    finally:
        sink.close()


# the stall rule, on figures ---------------------------------------------------------------------------------------------
PIDS = {"source": 10, "layer1": 11, "layer2": 12, "sink": 13, "monitor": 14}


def hear_all(watch: StallWatch, now: float, frames: dict[str, int], only=None) -> None:
    for name, pid in PIDS.items():
        if only is None or name in only:
            watch.hear(name, {"pid": pid, "frames": frames.get(name, 0)}, now)


def test_the_hung_layer_is_named_not_the_ones_blocked_above_it():
    watch = StallWatch(2, stall_after_s=60)
    hear_all(watch, 0.0, {"source": 100, "layer1": 90, "layer2": 80, "sink": 80})
    # layer2 hangs at 0: layer1 and the source go on a little, then block on it and fall silent too.
    hear_all(watch, 1.0, {"source": 120, "layer1": 100}, only={"source", "layer1"})
    for t in range(2, 70):
        hear_all(watch, float(t), {"sink": 80}, only={"sink", "monitor"})  # starved, but their loops turn
    assert watch.stalled(59.0, PIDS) is None  # not yet: 60 s of silence
    name, why = watch.stalled(61.0, PIDS)
    assert name == "layer2" and "silent for 61 s" in why


def test_slow_starved_or_finished_workers_are_not_stalled():
    watch = StallWatch(2, stall_after_s=60)
    hear_all(watch, 0.0, {"source": 100, "layer1": 100, "layer2": 100, "sink": 100})
    for t in range(1, 200):  # the stream ended: every loop turns, nothing moves
        hear_all(watch, float(t), {"source": 100, "layer1": 100, "layer2": 100, "sink": 100})
    assert watch.stalled(200.0, PIDS) is None
    # layer2 silent but nothing waits for it (its upstream heard, idle, not grown): the end deadline's case, not a restart
    hear_all(watch, 200.0, {"source": 100, "layer1": 100, "sink": 100}, only={"source", "layer1", "sink", "monitor"})
    for t in range(201, 300):
        hear_all(watch, float(t), {"source": 100, "layer1": 100, "sink": 100}, only={"source", "layer1", "sink", "monitor"})
    assert watch.stalled(300.0, PIDS) is None


def test_no_one_is_judged_when_nothing_below_is_heard_or_after_a_restart():
    watch = StallWatch(2, stall_after_s=60)
    hear_all(watch, 0.0, {"source": 100, "layer1": 90, "layer2": 80, "sink": 80})
    assert watch.stalled(100.0, PIDS) is None  # everyone silent: the monitor's path is down, not every worker hung
    hear_all(watch, 99.0, {"sink": 80}, only={"sink", "monitor"})
    assert watch.stalled(100.0, PIDS)[0] == "layer2"
    assert watch.stalled(100.0, {**PIDS, "layer2": 99}) is None  # a new process, not heard from yet
    watch.hear("layer2", {"pid": 99, "frames": 0}, 100.0)  # heard, but still in its first step (torch's first-use costs)
    assert watch.stalled(200.0, {**PIDS, "layer2": 99}) is None  # nor layer1 above it, which may wait behind it
    assert StallWatch(2, stall_after_s=0).stalled(1e9, PIDS) is None  # 0: the rule is off


# a real stack, a real SIGSTOP -------------------------------------------------------------------------------------------
def test_a_stopped_layer_is_killed_and_restarted_while_the_stream_goes_on(tmp_path):
    cfg = RunConfig()
    cfg.stream.source, cfg.stream.batch, cfg.stream.rate_fps, cfg.stream.size = "synthetic:100000", 4, 100.0, (8, 8)
    cfg.model.layers, cfg.sleep.enabled, cfg.stall_after_s = (16, 16), False, 3.0
    cfg.topology = ipc_topology(tmp_path, 2)
    resolve_stream(cfg)
    cfg.check()
    sup = Supervisor(cfg, str(tmp_path / "run"))
    seen: dict[str, object] = {"stopped": None, "after": None}

    def on_metrics(name: str, figures: dict) -> None:
        if name != "layer2" or not figures.get("frames"):
            return
        if seen["stopped"] is None:
            os.kill(figures["pid"], signal.SIGSTOP)  # hung: alive, its loop does not turn
            seen["stopped"] = figures["pid"]
        elif figures["pid"] != seen["stopped"]:
            seen["after"] = figures
            sup.interrupted = True  # ends watch(): the successor learns

    timer = threading.Timer(150.0, lambda: setattr(sup, "interrupted", True))  # the test's deadline
    try:
        sup.start()
        sup.spare_due = None  # no warm spare: one fewer process importing torch on a shared machine
        timer.start()
        sup.watch(on_metrics)
    finally:
        timer.cancel()
        if seen["stopped"] is not None:
            try:
                os.kill(seen["stopped"], signal.SIGCONT)  # if it was not killed, let SIGTERM reach it
            except ProcessLookupError:
                pass
        codes = sup.stop()
        sup.cleanup()
    assert seen["stopped"] is not None, "layer2 never reported frames"
    assert seen["after"] is not None, f"layer2 was not restarted: exits {sup.children['layer2'].exit_codes}"
    assert sup.children["layer2"].exit_codes[0] == -signal.SIGKILL  # the supervisor killed the stopped process
    assert sup.children["layer2"].restarts == 1
    assert codes["layer1"] is not None and codes["source"] is not None  # the rest were stopped by stop(), not killed before
    assert all(c.restarts == 0 for n, c in sup.children.items() if n != "layer2")  # nothing above it was blamed
