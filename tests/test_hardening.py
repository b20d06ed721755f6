"""Issue 20: configs that cannot work are refused at start; a sink that remembers; no worker outlives its supervisor."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import zmq

from ffstream.config import ConfigError, RunConfig
from ffstream.net import wire
from ffstream.supervisor import Child, RunFailed, Supervisor, check_header_fits
from ffstream.workers.base import EXIT_GAVE_UP
from tests.processes import await_metrics, env, monitored_run
from tests.rig import unique


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


def test_a_worker_that_gives_up_ends_the_run_with_its_line_and_is_not_restarted(tmp_path):
    sup = Supervisor(RunConfig(), str(tmp_path))
    sup.env = env()
    sup.spare_due = None
    line = "ffstream worker source: error: the end of the stream (barrier 9) was not acknowledged within 300 s; giving up"
    argv = [sys.executable, "-c", f"import sys; print({line!r}, file=sys.stderr); raise SystemExit({EXIT_GAVE_UP})"]
    child = sup.children["source"] = Child("source", argv, tmp_path / "source.log")
    child.start(sup.env)
    child.process.wait(30)
    with pytest.raises(RunFailed) as info:
        sup._check_children()
    message = str(info.value)
    assert info.value.one_line and info.value.exit_code != 0 and "\n" not in message
    assert message.startswith("source: the end of the stream (barrier 9) was not acknowledged") and str(child.log_path) in message
    assert child.restarts == 0 and child.restart_at is None


def test_an_exactly_once_source_whose_end_is_never_acknowledged_gives_up(tmp_path, zmq_context):
    """A layer 1 that takes the frames but never a sink to acknowledge: the final barrier goes again, then GaveUp."""
    from ffstream.sources import Preprocess, SyntheticSource
    from ffstream.workers.base import GaveUp
    from ffstream.workers.source import SourceWorker

    out, control = unique("layer1"), unique("control")
    layer1 = zmq_context.socket(zmq.PULL)
    layer1.setsockopt(zmq.LINGER, 0)
    layer1.bind(out)
    source = SourceWorker(SyntheticSource(Preprocess(), 64, seed=1), out, None, batch=16, position_path=str(tmp_path / "source.json"),
                          control_addr=control, barrier_every=2, end_ack_deadline_s=1.0, eval_every=0, context=zmq_context)
    assert source.exactly_once
    started = time.monotonic()
    with pytest.raises(GaveUp, match=r"not acknowledged within 1 s; giving up \(a resumed run replays from batch 0\)"):
        source.run()
    assert time.monotonic() - started < 15
    kinds = []
    while layer1.poll(100):
        kinds.append(wire.decode(layer1.recv_multipart()).kind)
    layer1.close()
    assert kinds.count("frames") == 4 and kinds.count("barrier") >= 3  # two barriers on the way, then the final one
    assert source.metrics()["stream_sent"] and not source.ended


def test_an_exactly_once_run_whose_sink_freezes_at_the_end_fails_in_one_line_without_restarting(tmp_path):
    """SIGSTOP of the sink early in a short, slow stream (16 s): the rest of it and the final barrier fit in the queues, the source's
    end is never acknowledged; the supervisor's end deadline (30 s) ends the run in one line, non-zero, nothing restarted."""
    with monitored_run(tmp_path, "--source", "synthetic:320", "--checkpoint-dir", str(tmp_path / "ck"), "--set", "model.layers=32,32",
                       "--set", "stream.batch=32", "--set", "stream.barrier_every=2", "--set", "stream.barrier_min_s=0", "--set", "stream.rate_fps=20") as (proc, sub):
        sink = await_metrics(proc, sub, "sink", lambda m: (m.get("frames") or 0) >= 32)
        os.kill(sink["pid"], signal.SIGSTOP)
        try:
            await_metrics(proc, sub, "source", lambda m: m.get("stream_sent"))
            sent_at = time.monotonic()
            out, err = proc.communicate(timeout=90)
        finally:
            os.kill(sink["pid"], signal.SIGCONT) if _alive(sink["pid"]) else None
    took = time.monotonic() - sent_at
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode not in (0, None), err[-2000:]
    assert lines[-1].startswith("ffstream run: error: the source ended and the sink has not finished nor moved for"), lines[-3:]
    assert "restarting" not in err, err[-2000:]
    assert took < 30 + 25, f"the run took {took:.0f} s to give up after the stream was sent"  # the deadline, then the shutdown grace


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


