"""`ffstream worker standby`, the supervisor's warm spare: it becomes the worker named on its stdin, or exits 0.

The spare in a real run is exercised by tests/faults/test_kill.py (a killed worker is back in under a second).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import zmq

from ffstream.config import RunConfig
from ffstream.net import wire
from tests.processes import ROOT, env, ipc_topology, write_config

DEADLINE_S = 120  # a cold torch import on a loaded 2-core machine


def standby(tmp_path) -> subprocess.Popen:
    cfg = RunConfig()
    cfg.topology = ipc_topology(tmp_path, len(cfg.model.layers))
    config_path = write_config(cfg, tmp_path / "run.json")
    argv = [sys.executable, "-m", "ffstream", "worker", "standby", "--config", str(config_path), "--stats-dir", str(tmp_path / "final")]
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env(), cwd=ROOT)


def test_standby_becomes_the_worker_it_is_told_to_and_logs_where_told(tmp_path):
    spare = standby(tmp_path)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"ipc://{tmp_path}/monitor.pub")
    try:
        spare.stdin.write(json.dumps({"kind": "monitor", "index": None, "log": str(tmp_path / "monitor.log")}).encode() + b"\n")
        spare.stdin.close()
        deadline, heard = time.monotonic() + DEADLINE_S, None
        while heard is None:  # the monitor publishes its own metrics through itself
            assert spare.poll() is None and time.monotonic() < deadline, (tmp_path / "monitor.log").read_text(errors="replace")[-2000:]
            if sub.poll(200):
                msg = wire.decode(sub.recv_multipart(), max_payload=0)
                heard = msg.extra.get("metrics") if msg.stream == "monitor" else None
        assert heard["pid"] == spare.pid and heard["kind"] == "monitor"
        spare.terminate()  # the worker's own SIGTERM handling: drain, final stats, exit 0
        assert spare.wait(30) == 0
    finally:
        if spare.poll() is None:
            spare.kill()
            spare.wait()
        sub.close()
        ctx.term()
    assert json.loads((tmp_path / "final" / "monitor.json").read_text())["pid"] == spare.pid
    assert "started" in (tmp_path / "monitor.log").read_text()  # its output went to the log it was given
    assert spare.stdout.read() == b""  # and nothing to its own stdout after the hand-over


def test_standby_without_an_assignment_exits_0_and_a_bad_one_exits_2(tmp_path):
    idle = standby(tmp_path)
    out, _ = idle.communicate(b"", timeout=DEADLINE_S)  # the supervisor shutting down closes its stdin
    assert idle.returncode == 0, out.decode(errors="replace")[-2000:]
    bad = standby(tmp_path)
    out, _ = bad.communicate(b'{"kind": "teapot", "log": "x"}\n', timeout=DEADLINE_S)
    assert bad.returncode == 2, out.decode(errors="replace")[-2000:]
    assert "bad assignment" in out.decode()
