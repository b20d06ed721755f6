"""Issue 20: configs that cannot work are refused at start; a sink that remembers; no worker outlives its supervisor."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from ffstream.config import ConfigError, RunConfig
from ffstream.net import wire
from ffstream.supervisor import Child, RunFailed, Supervisor, check_header_fits
from tests.processes import env, monitored_run


def test_a_batch_whose_trace_cannot_fit_in_a_header_is_refused_in_one_line():
    cfg = RunConfig()
    cfg.stream.batch, cfg.model.layers, cfg.stream.num_classes = 2048, (500, 500, 500, 500), 10
    with pytest.raises(ConfigError) as info:
        check_header_fits(cfg)
    message = str(info.value)
    assert "\n" not in message and "stream.batch 2048" in message and "65536" in message
    fits = int(message.rsplit(" ", 1)[1])  # "use a batch of at most N": and N does fit
    cfg.stream.batch = fits
    check_header_fits(cfg)
    cfg.stream.batch = fits + 1
    with pytest.raises(ConfigError):
        check_header_fits(cfg)


def test_the_default_batch_fits():
    check_header_fits(RunConfig())


# workers die with the supervisor -------------------------------------------------------------------------------------
def _children(pid: int) -> set[int]:
    """PIDs whose parent is `pid`, from /proc."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.add(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for init to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_kill_9_of_the_supervisor_takes_every_worker_with_it(tmp_path):
    run = monitored_run(tmp_path, "--source", "synthetic:1000000", "--set", "model.layers=32,32", "--set", "stream.batch=32",
                        capture=False)
    with run as (proc, sub):
        workers: set[int] = set()
        try:
            # Every worker up and learning: the sink has counted frames, and each worker has published its pid.
            wanted = {"monitor", "sink", "layer1", "layer2", "source"}
            seen: dict[str, int] = {}
            deadline = time.monotonic() + 180
            while not (wanted <= set(seen) and sink_frames(seen)):
                assert proc.poll() is None and time.monotonic() < deadline, f"the run did not come up: seen {sorted(seen)}"
                if sub.poll(200):
                    try:
                        msg = wire.decode(sub.recv_multipart(), max_payload=0)
                    except wire.WireError:
                        continue
                    m = msg.extra.get("metrics", {})
                    seen[msg.stream] = m.get("pid")
                    if msg.stream == "sink" and m.get("frames"):
                        seen["_sink_frames"] = m["frames"]
            workers = _children(proc.pid)
            assert {seen[name] for name in wanted} <= workers
            proc.kill()  # kill -9: no handler runs in the supervisor, its workers are orphans now
            proc.wait(10)
            deadline = time.monotonic() + 20
            while any(_alive(pid) for pid in workers):
                assert time.monotonic() < deadline, f"workers outlived their supervisor: {sorted(p for p in workers if _alive(p))}"
                threading.Event().wait(0.1)  # a poll interval; the deadline above bounds it
        finally:
            for pid in workers:  # never leave a worker behind, even when the test fails
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)


def sink_frames(seen: dict) -> bool:
    return bool(seen.get("_sink_frames"))


# a sliding restart budget and a deadline at the end ------------------------------------------------------------------
def _crashing_supervisor(tmp_path, **kwargs) -> Supervisor:
    sup = Supervisor(RunConfig(), str(tmp_path), **kwargs)
    sup.env = env()
    sup.spare_due = None  # no warm spare: every restart is a fresh process
    argv = [sys.executable, "-c", "raise SystemExit(3)"]  # a worker that crashes as soon as it starts
    sup.children["layer1"] = Child("layer1", argv, tmp_path / "layer1.log")
    sup.children["layer1"].start(sup.env)
    return sup


def _restarts_until_failure(sup: Supervisor, restarts_wanted: int) -> RunFailed | None:
    child = sup.children["layer1"]
    deadline = time.monotonic() + 60
    while child.restarts < restarts_wanted:
        assert time.monotonic() < deadline, f"only {child.restarts} restarts"
        try:
            sup._check_children()
        except RunFailed as exc:
            return exc
        threading.Event().wait(0.02)  # the supervisor's own poll interval, shortened
    return None


def test_a_crash_loop_exhausts_the_restart_budget(tmp_path):
    failure = _restarts_until_failure(_crashing_supervisor(tmp_path, restart_budget=2), restarts_wanted=10)
    assert failure is not None and "crashed 3 times within 600 s" in str(failure)
    assert failure.exit_code == 1


def test_crashes_older_than_the_window_do_not_count(tmp_path):
    # With a window shorter than the backoff, no two crashes are ever in it together: a long run with rare crashes.
    sup = _crashing_supervisor(tmp_path, restart_budget=1, restart_window_s=0.05)
    assert _restarts_until_failure(sup, restarts_wanted=4) is None
    assert sup.children["layer1"].restarts >= 4


def test_the_run_fails_in_one_line_when_the_sink_stops_moving_after_the_source_ended(tmp_path):
    sup = Supervisor(RunConfig(), str(tmp_path), end_deadline_s=5.0)
    now = time.monotonic()
    sup.latest = {"source": {"ended": True}, "sink": {"pid": 7, "frames": 640}}
    sup._check_end_deadline(now)  # the source's end is noted, the sink's counters too
    sup._check_end_deadline(now + 4.0)  # within the deadline: waits
    sup.latest["sink"] = {"pid": 7, "frames": 672}  # progress restarts the clock
    sup._check_end_deadline(now + 4.5)
    sup._check_end_deadline(now + 9.0)
    with pytest.raises(RunFailed) as info:
        sup._check_end_deadline(now + 10.0)
    assert "\n" not in str(info.value) and "the sink has not finished" in str(info.value)
