"""Starting real ffstream worker processes from tests, and never leaving one behind."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zmq

from ffstream.config import RunConfig, Topology
from ffstream.net import wire

ROOT = Path(__file__).resolve().parents[1]


def ipc_topology(directory: Path, num_layers: int) -> Topology:
    """Private ipc:// sockets, so parallel tests never fight over ports."""
    return Topology.local(num_layers, monitor_publish=f"ipc://{directory}/monitor.pub", run_dir=str(directory))


def run_local_stack(cfg: RunConfig, directory: Path) -> dict:
    """`ffstream run`'s supervisor on private ipc:// sockets until the stream ends; its summary (fails on a worker failure)."""
    from ffstream.supervisor import resolve_stream, run_stack

    cfg.topology = ipc_topology(directory, len(cfg.model.layers))
    resolve_stream(cfg)
    cfg.check()
    summary, supervisor, failure = run_stack(cfg)
    assert failure is None, failure
    supervisor.cleanup()
    return summary


def write_config(cfg: RunConfig, path: Path) -> Path:
    path.write_text(json.dumps(dataclasses.asdict(cfg)))
    return path


def env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FFSTREAM_")}
    clean["PYTHONPATH"] = str(ROOT) + os.pathsep + clean.get("PYTHONPATH", "")
    clean["FFSTREAM_THREADS"] = "1"
    return clean


def start_worker(kind: str, config_path: Path, log_dir: Path, index: int | None = None, stats_dir: Path | None = None) -> subprocess.Popen:
    name = f"{kind}{index or ''}"
    argv = [sys.executable, "-m", "ffstream", "worker", kind, "--config", str(config_path)]
    argv += ["--index", str(index)] if index else []
    argv += ["--stats-dir", str(stats_dir)] if stats_dir else []
    log = open(log_dir / f"{name}.log", "wb")
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env(), cwd=ROOT)


def stop_all(procs: list[subprocess.Popen], timeout: float = 10.0) -> list[int]:
    """Terminate what still runs; kill what ignores it. Returns exit codes."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append(p.wait())
    return codes


def eventually(predicate, timeout: float = 5.0, what: str = "a condition", tick=None, interval: float = 0.01) -> None:
    """Poll `predicate` until it holds, calling `tick` between polls; fail after `timeout` seconds.

    For things that signal nothing: a worker's state in another thread, an HTTP endpoint (interval: the pause
    between two polls, not a wait for a connection)."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        if tick is not None:
            tick()
        pause.wait(interval)


@contextlib.contextmanager
def monitored_run(tmp_path: Path, *argv: str, extra_env: dict[str, str] | None = None, capture: bool = True):
    """`ffstream run ARGV --monitor ipc://tmp_path/mon --no-progress`, with a SUB on that monitor; yields (process, sub).

    The process runs in tmp_path (its TMPDIR too) and is killed if it still runs on the way out; the socket and its
    context are closed. capture: stdout and stderr piped (read them with communicate()), else thrown away.
    """
    import zmq

    monitor = f"ipc://{tmp_path}/mon"
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(monitor)
    output = subprocess.PIPE if capture else subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, "-m", "ffstream", "run", *argv, "--monitor", monitor, "--no-progress"], cwd=tmp_path,
                            env={**env(), "TMPDIR": str(tmp_path), **(extra_env or {})}, stdout=output, stderr=output, text=True)
    try:
        yield proc, sub
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        sub.close(0)
        ctx.term()


def worker_log_tails(tmp_path: Path, lines: int = 25) -> str:
    """The last lines of every worker log of the runs under tmp_path (their TMPDIR: ffstream-*/logs, kept when a run
    fails or is killed): what a test that found a run hung or failed shows."""
    parts = []
    for path in sorted(tmp_path.glob("ffstream-*/logs/*.log")):
        text = path.read_text(errors="replace").splitlines()[-lines:]
        parts.append(f"--- {path.name} ---\n" + "\n".join(text))
    return "\n".join(parts) or f"(no worker logs under {tmp_path})"


def await_metrics(proc: subprocess.Popen, sub: zmq.Socket, worker: str, wanted, timeout_s: float = 180.0) -> dict:
    """The first metrics of `worker` (read from sub, a run's monitor feed) for which wanted(metrics) holds; fails,
    naming the last seen, if the run ends or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    seen = None
    while True:
        assert proc.poll() is None, f"the run ended before {worker} got there: {seen} {(proc.communicate()[1] or '')[-3000:]}"
        assert time.monotonic() < deadline, f"{worker} did not get there within {timeout_s:.0f} s: {seen}"
        if not sub.poll(200):
            continue
        try:
            msg = wire.decode(sub.recv_multipart(), max_payload=0)
        except wire.WireError:
            continue
        figures = msg.extra.get("metrics", {})
        if msg.stream == worker:
            seen = figures
        if msg.stream == worker and wanted(figures):
            return figures
