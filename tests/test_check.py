"""`ffstream check`: exit 0 for a live, connected worker; non-zero for a dead, stopped, stale or unconnected one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from ffstream.config import RunConfig
from ffstream.monitor import health
from tests.processes import ROOT, env, ipc_topology, start_worker, stop_all, write_config

DEADLINE_S = 90.0  # worker processes import torch first, on 2 shared cores


def check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ffstream", "check", *args], capture_output=True, text=True, env=env(), cwd=ROOT, timeout=60)


def beat(directory, name="layer1", pid=None, age=0.0, state="running", connected=True):
    directory.mkdir(exist_ok=True)
    data = {"name": name, "pid": pid or os.getpid(), "time": time.time() - age, "state": state, "connected": connected, "peers": {"tcp://layer2:5720": connected}}
    (directory / f"{name}.json").write_text(json.dumps(data))


def test_check_reads_heartbeats(tmp_path):
    d = tmp_path / "h"
    assert check("--dir", str(d)).returncode == 1  # nothing there
    beat(d)
    ok = check("--dir", str(d), "--worker", "layer1")
    assert ok.returncode == 0 and "layer1: ok" in ok.stdout, ok.stdout
    beat(d, age=100)
    stale = check("--dir", str(d), "--worker", "layer1", "--max-age", "30")
    assert stale.returncode == 1 and "stale" in stale.stdout
    beat(d, connected=False)
    assert check("--dir", str(d)).returncode == 1
    assert check("--dir", str(d), "--live").returncode == 0  # liveness asks less than readiness
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    beat(d, pid=dead.pid)
    gone = check("--dir", str(d))
    assert gone.returncode == 1 and "gone" in gone.stdout
    beat(d, state="stopped")
    assert check("--dir", str(d)).returncode == 1
    assert check("--dir", str(d), "--worker", "sink").returncode == 1  # no such heartbeat


def wait_check(directory, worker: str, want: bool, need_connected: bool = True) -> str:
    """Poll the heartbeat (in-process, cheap) until it says `want`, with a deadline."""
    deadline = time.monotonic() + DEADLINE_S
    pause = threading.Event()
    while True:
        ok, lines = health.check(directory, worker, need_connected=need_connected)
        if ok == want:
            return lines[0]
        if time.monotonic() > deadline:
            pytest.fail(f"{worker}: expected healthy={want}, still: {lines}")
        pause.wait(0.1)


def test_check_follows_a_real_worker(tmp_path):
    """layer2 connects its output to the sink: it is alive first, connected once the sink is up, gone when killed."""
    cfg = RunConfig()
    cfg.model.layers = (16, 16)
    cfg.topology = ipc_topology(tmp_path, 2)
    cfg.health_dir = str(tmp_path / "health")
    cfg.threads = 1
    path = write_config(cfg, tmp_path / "run.json")
    procs = [start_worker("layer", path, tmp_path, index=2)]
    try:
        wait_check(cfg.health_dir, "layer2", True, need_connected=False)  # alive ...
        not_yet = check("--dir", cfg.health_dir, "--worker", "layer2")
        assert not_yet.returncode == 1 and "not connected" in not_yet.stdout, not_yet.stdout  # ... but no sink yet
        procs.append(start_worker("sink", path, tmp_path))
        wait_check(cfg.health_dir, "layer2", True)
        ok = check("--dir", cfg.health_dir, "--worker", "layer2")
        assert ok.returncode == 0 and "connected" in ok.stdout, ok.stdout
        wait_check(cfg.health_dir, "sink", True)
        assert check("--dir", cfg.health_dir).returncode == 0  # every heartbeat in the directory

        procs[0].kill()
        procs[0].wait(30)
        gone = check("--dir", cfg.health_dir, "--worker", "layer2")
        assert gone.returncode == 1 and "gone" in gone.stdout, gone.stdout
        procs[1].terminate()
        procs[1].wait(30)
        stopped = check("--dir", cfg.health_dir, "--worker", "sink")
        assert stopped.returncode == 1 and "stopped" in stopped.stdout, stopped.stdout
    finally:
        stop_all(procs)
