"""`ffstream run`: a supervisor that starts one OS process per worker, watches them, and stops them cleanly."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from ffstream.config import ConfigError, RunConfig
from ffstream.net import security, wire
from ffstream.net.transport import make_socket
from ffstream.sources import Preprocess, check_live, open_source
from ffstream.workers import lifeline
from ffstream.workers.base import EXIT_GAVE_UP
from ffstream.workers.build import thread_budget

log = logging.getLogger("ffstream.run")

SHUTDOWN_GRACE_S = 10.0  # SIGTERM, then this long to checkpoint and exit, then SIGKILL
# The source stops first, alone: a file stream takes a stop barrier and waits up to 10 s for the sink's
# acknowledgement (workers/source.py STOP_ACK_WAIT_S) while the rest of the stack still runs to carry it.
SOURCE_STOP_GRACE_S = 20.0
RESTART_BACKOFF_S = (0.1, 2.0, 5.0)  # wait before a restart, by crashes in the window: the first at once, repeats slower
END_DEADLINE_S = 30.0  # after the source ended: how long the sink may go without progress before the run fails
WATCH_POLL_MS = 100  # the supervisor's loop: how soon a dead worker is noticed, at most
# When the sink has finished, the workers' last metrics (the layers' final figures) may still be on their way through
# the monitor: they are taken until the feed is quiet this long, or this long at most (a 640-frame run's TensorBoard
# log lacked every layer's goodness without it).
FINAL_METRICS_QUIET_MS, FINAL_METRICS_MAX_S = 200, 1.0
# A warm spare (`ffstream worker standby`, torch already imported) takes a crashed worker's place at once:
# a fresh process spends 2-3 s importing torch on an idle machine, far more on a loaded one. It costs one
# idle process (about 350 MB). The spare is started this long after the run starts, and after the last one
# was used, so that its imports compete neither with the workers' start-up nor with a recovering worker.
SPARE_DELAY_S = 5.0


EXIT_USAGE = 2  # a worker's exit code for bad input (a missing device, a bad config): restarting cannot fix it
# EXIT_GAVE_UP (4, workers/base.py): a worker gave up on something a restart cannot mend; the run ends in one line.
BLOCKED_AFTER_S = 5.0  # a worker unheard this long (five metrics intervals) has its loop stopped: blocked or hung


@dataclass
class Heard:
    """The last metrics message from one worker, as the stall rule needs it."""

    pid: int | None  # the process that sent it: figures from before a restart say nothing about the new one
    at: float  # monotonic time it came
    input_frames: Any  # its upstream's "frames" as last heard at that moment (None: nothing heard from it yet)


class StallWatch:
    """Which worker of the frame chain (layer 1 .. layer L, sink) is hung: alive, but its loop no longer turns.

    Every worker publishes its metrics each second, idle or not, from its loop; a worker whose loop is stopped goes
    silent (SIGSTOP, a deadlock, a call that never returns), and so do the workers above it once their sends block
    behind it. The rule, conservative on purpose:
      1. the worker's process runs and has been heard from with frames done (by its pid: a restarted worker starts
         with a clean slate; its first step pays torch's one-off costs, seconds on a loaded machine, and is not judged);
      2. it has been silent for stall_after_s (60 s by default, RunConfig.stall_after_s);
      3. the path to the monitor works: what is below it is heard (the next worker down, for the sink the monitor);
      4. its input grew: its upstream's frames rose after it fell silent, or its upstream is silent too (blocked);
      5. of the workers that meet 1-4, only the one nearest the sink is stalled: those above are blocked behind it;
         and no one above a worker that fails 1 is judged (a restarting worker holds up those above it too).
    A worker that is merely slow, or starved, or one the source's end left idle, still publishes: never stalled.
    """

    def __init__(self, num_layers: int, stall_after_s: float):
        self.chain = ["source", *(f"layer{i}" for i in range(1, num_layers + 1)), "sink"]  # upstream first
        self.stall_after_s = stall_after_s  # 0: never stalled
        self.heard: dict[str, Heard] = {}
        self.frames: dict[str, Any] = {}  # worker -> its last "frames"

    def hear(self, name: str, figures: dict, now: float) -> None:
        self.frames[name] = figures.get("frames")
        upstream = self.chain[self.chain.index(name) - 1] if name in self.chain[1:] else None
        self.heard[name] = Heard(figures.get("pid"), now, self.frames.get(upstream) if upstream else None)

    def stalled(self, now: float, pids: dict[str, int | None]) -> tuple[str, str] | None:
        """(the worker to restart, why), or None. pids: each worker's running process id (None: not running)."""
        if not self.stall_after_s:
            return None

        def silent(name: str, for_s: float) -> bool:
            return name not in self.heard or now - self.heard[name].at > for_s

        for below, name in zip([*self.chain[2:], "monitor"][::-1], self.chain[1:][::-1]):  # from the sink up
            heard = self.heard.get(name)
            if heard is None or heard.pid is None or heard.pid != pids.get(name) or not self.frames.get(name):
                return None  # not running, not heard from since it started, or in its first step: not judged, nor
                # anyone above it, who may be blocked behind it
            if not silent(name, self.stall_after_s):
                continue  # its loop turns
            if silent(below, BLOCKED_AFTER_S):
                return None  # nothing below is heard: the monitor's path may be down; judge no one
            upstream = self.chain[self.chain.index(name) - 1]
            grew = (self.frames.get(upstream) or 0) > (heard.input_frames or 0)
            if not (grew or silent(upstream, BLOCKED_AFTER_S)):
                return None  # silent with no input waiting: the end deadline, not a restart, deals with it
            return name, (f"{name} has been silent for {now - heard.at:.0f} s (frames {self.frames.get(name)}) while its input "
                          f"{'grew' if grew else 'is blocked behind it'}")
        return None


class RunFailed(Exception):
    """The run cannot go on; the message says which worker and why."""

    def __init__(self, message: str, exit_code: int = 1, one_line: bool = False):  # exit_code: what `ffstream run` exits with
        super().__init__(message)
        self.exit_code = exit_code
        self.one_line = one_line  # the message says it all: `ffstream run` prints it alone, no table


@dataclass
class Child:
    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen | None = None
    restarts: int = 0  # in all, for the log
    crashes: list[float] = field(default_factory=list)  # monotonic times of the crashes within the restart window
    restart_at: float | None = None  # when a crashed worker is due to be started again
    exit_codes: list[int] = field(default_factory=list)

    def start(self, env: dict[str, str], spare: subprocess.Popen | None = None) -> bool:
        """A fresh process, or the warm `spare` told to become this worker; True if the spare took it."""
        if spare is not None and spare.poll() is None:
            index = self.argv[self.argv.index("--index") + 1] if "--index" in self.argv else None
            assignment = {"kind": self.argv[self.argv.index("worker") + 1], "index": int(index) if index else None, "log": str(self.log_path)}
            try:
                spare.stdin.write(json.dumps(assignment).encode() + b"\n")
                spare.stdin.close()
                self.process = spare
                return True
            except (BrokenPipeError, OSError):
                log.warning("the warm spare is gone; starting %s afresh", self.name)
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                            preexec_fn=lifeline.preexec(os.getpid()))
        return False

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def error_line(self) -> str:
        """The one-line message a worker prints when it exits 2 ("ffstream worker: error: ..."), without the prefix."""
        for line in reversed(self.tail(20).splitlines()):
            if ": error: " in line:
                return line.split(": error: ", 1)[1]
        return f"exited with code {self.exit_codes[-1] if self.exit_codes else '?'} (see {self.log_path})"

    def tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


class Supervisor:
    """Starts the workers of one stack, restarts crashed ones with backoff, and ends when the sink is done."""

    def __init__(self, cfg: RunConfig, run_dir: str | None = None, *, restart_budget: int | None = None,
                 restart_window_s: float | None = None, end_deadline_s: float = END_DEADLINE_S):
        self.cfg = cfg
        # crashes of one worker within restart_window_s that are restarted; None: the config's (RunConfig.restart_budget)
        self.restart_budget = cfg.restart_budget if restart_budget is None else restart_budget
        self.restart_window_s = cfg.restart_window_s if restart_window_s is None else restart_window_s  # seconds
        self.end_deadline_s = end_deadline_s  # seconds without sink progress after the source ended, then the run fails
        self.source_ended_at: float | None = None  # monotonic: when the source exited cleanly (the stream is sent)
        self.sink_progress: tuple[Any, float] = (None, time.monotonic())  # the sink's last counters, and when they moved
        self.stalls = StallWatch(len(cfg.model.layers), cfg.stall_after_s)  # hung workers: alive, their loop stopped
        self.run_dir = Path(run_dir or tempfile.mkdtemp(prefix="ffstream-"))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "logs").mkdir(exist_ok=True)
        self.stats_dir = self.run_dir / "final"
        self.config_path = self.run_dir / "run.json"
        self.config_path.write_text(cfg.to_json())
        if cfg.checkpoint_dir:  # the recipe that made these checkpoints, kept with them (eval, score and --recipe DIR read it)
            Path(cfg.checkpoint_dir).mkdir(parents=True, exist_ok=True)
            (Path(cfg.checkpoint_dir) / "run.json").write_text(cfg.recipe_json())
        self.children: dict[str, Child] = {}
        self.interrupted = False
        self.latest: dict[str, dict] = {}  # worker name -> last metrics heard from the monitor
        self.started_at = time.time()
        self.spare: subprocess.Popen | None = None  # the warm standby worker, if one is up
        self.spare_due: float | None = None  # monotonic time to start the next spare
        self.spares_started = 0

    def _argv(self, kind: str, index: int | None = None) -> list[str]:
        argv = [sys.executable, "-m", "ffstream", "worker", kind, "--config", str(self.config_path), "--stats-dir", str(self.stats_dir)]
        return argv + (["--index", str(index)] if index is not None else [])

    def start(self) -> None:
        specs = [("monitor", None), ("sink", None)]
        specs += [("layer", i) for i in range(len(self.cfg.model.layers), 0, -1)]
        specs += [("sleep", None)] if self.cfg.sleep.enabled else []
        specs += [("source", None)]
        env = {**os.environ, "FFSTREAM_THREADS": str(thread_budget(self.cfg)), "PYTHONUNBUFFERED": "1",
               lifeline.PARENT_ENV: str(os.getpid())}  # workers without prctl watch for this pid to go
        # The config's variables are in run.json already; the thread budget and the heap diagnostics are not config.
        # FFSTREAM_LEARN_LOG_DIR: the per-worker learning logs that check exactly-once delivery (workers/delivery.py).
        # FFSTREAM_HEARTBEATS=off: benchmarks measuring what heartbeats cost (net/transport.py).
        kept = ("FFSTREAM_THREADS", "FFSTREAM_HEAP_LOG_S", "FFSTREAM_LEARN_LOG_DIR", "FFSTREAM_HEARTBEATS", lifeline.PARENT_ENV)
        self.env = {k: v for k, v in env.items() if not (k.startswith("FFSTREAM_") and k not in kept)}
        for kind, index in specs:
            name = f"layer{index}" if kind == "layer" else kind
            child = Child(name, self._argv(kind, index), self.run_dir / "logs" / f"{name}.log")
            child.start(self.env)
            self.children[name] = child
        self.spare_due = time.monotonic() + SPARE_DELAY_S  # after the workers' own start-up, not competing with it
        log.info("started %d workers, logs in %s", len(self.children), self.run_dir / "logs")

    def _start_spare(self) -> None:
        self.spare_due = None
        self.spares_started += 1
        with open(self.run_dir / "logs" / f"standby{self.spares_started}.log", "ab") as out:
            self.spare = subprocess.Popen(
                self._argv("standby"), stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True,
                preexec_fn=lifeline.preexec(os.getpid()),
            )

    def _take_spare(self) -> subprocess.Popen | None:
        spare, self.spare = self.spare, None
        self.spare_due = time.monotonic() + SPARE_DELAY_S
        return spare if spare is not None and spare.poll() is None else None

    def watch(self, on_metrics=None) -> None:
        """Until the sink has finished (or Ctrl-C): restart crashed workers and feed metrics to on_metrics."""
        ctx = zmq.Context()
        if self.cfg.security.curve_dir:  # the workers' sockets are CURVE servers, loopback too: read as a viewer
            viewer = Path(self.cfg.security.curve_dir) / "viewer.key_secret"
            security.enable(ctx, self.cfg.security.curve_dir, "viewer" if viewer.exists() else self.cfg.security.curve_client or "monitor")
        sub = make_socket(ctx, zmq.SUB, connect=self.cfg.topology.monitor_publish, hwm=1000, purpose="monitor")
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        previous = {sig: signal.signal(sig, self._interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while not self.interrupted:
                if sub.poll(WATCH_POLL_MS):
                    self._take_metrics(sub, on_metrics)
                if self._check_children():
                    deadline = time.monotonic() + FINAL_METRICS_MAX_S
                    while time.monotonic() < deadline and sub.poll(FINAL_METRICS_QUIET_MS):
                        self._take_metrics(sub, on_metrics)
                    break
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            sub.close(linger=0)
            security.release(ctx)
            ctx.term()

    def _interrupt(self, *_: Any) -> None:
        self.interrupted = True

    def _take_metrics(self, sub: zmq.Socket, on_metrics) -> None:
        while sub.poll(0):
            try:
                msg = wire.decode(sub.recv_multipart(copy=False), max_payload=0)
            except wire.WireError:
                continue
            figures = msg.extra.get("metrics")
            if msg.kind == "metrics" and isinstance(figures, dict):
                self.latest[msg.stream] = figures
                self.stalls.hear(msg.stream, figures, time.monotonic())
                if on_metrics:
                    on_metrics(msg.stream, figures)

    def _check_children(self) -> bool:
        """True when the run is over: the sink exited cleanly."""
        now = time.monotonic()
        if self.spare_due is not None and now >= self.spare_due:
            self._start_spare()
        for child in self.children.values():
            if child.restart_at is not None and now >= child.restart_at:
                child.restart_at = None
                warm = child.start(self.env, self._take_spare())
                log.warning("restarting %s (restart %d, %d of %d within %.0f s)%s", child.name, child.restarts, len(child.crashes),
                            self.restart_budget, self.restart_window_s, " on the warm spare" if warm else "")
                continue
            if child.process is None or child.running() or child.restart_at is not None:
                continue
            code = child.process.returncode
            child.exit_codes.append(code)
            child.process = None
            if code == 0:
                if child.name == "sink":
                    return True
                if child.name == "source":
                    self.source_ended_at = now
                continue
            if code == EXIT_USAGE:  # a usage or input error: restarting cannot fix it; pass on its one line
                raise RunFailed(f"{child.name}: {child.error_line()}", exit_code=EXIT_USAGE)
            if code == EXIT_GAVE_UP:  # it gave up on what a restart cannot mend: no restart, the run ends with its line
                raise RunFailed(f"{child.name}: {child.error_line()} (see {child.log_path})", one_line=True)
            child.crashes = [t for t in child.crashes if now - t < self.restart_window_s] + [now]
            if len(child.crashes) > self.restart_budget:
                raise RunFailed(f"{child.name} crashed {len(child.crashes)} times within {self.restart_window_s:.0f} s "
                                f"(last exit {code}); giving up. Last log lines:\n{child.tail()}")
            child.restarts += 1
            child.restart_at = now + RESTART_BACKOFF_S[min(len(child.crashes), len(RESTART_BACKOFF_S)) - 1]
            log.warning("%s exited with %s; restart %d in %.1f s", child.name, code, child.restarts, child.restart_at - now)
        self._check_stalls(now)
        self._check_end_deadline(now)
        return False

    def _check_stalls(self, now: float) -> None:
        """SIGKILL a hung worker (SIGTERM cannot reach a stopped one); it is then restarted as a crash, within the budget."""
        pids = {name: child.process.pid if child.running() else None for name, child in self.children.items()}
        verdict = self.stalls.stalled(now, pids)
        if verdict is None:
            return
        name, why = verdict
        log.error("%s; killing it to restart it", why)
        self.children[name].process.kill()
        self.stalls.heard.pop(name, None)  # judged again only once its successor is heard from

    def _check_end_deadline(self, now: float) -> None:
        """Once the source has sent everything, the sink must keep moving or finish: a lost end marker, or a worker
        stuck for good, ends the run with one line instead of a wait without end."""
        source = self.latest.get("source", {})
        if self.source_ended_at is None and (source.get("ended") or source.get("stream_sent")):
            # a source that stays up after its end marker says so in its metrics; under exactly-once it says so as soon
            # as the stream has run out and its final barrier awaits the acknowledgement
            self.source_ended_at = now
        sink = self.latest.get("sink", {})
        # a new pid: a restart; barriers and replays: a rewind being replayed (neither counted as frames)
        counters = (sink.get("pid"), sink.get("frames"), sink.get("evaluated"), sink.get("ended"), sink.get("barrier"), sink.get("replayed"))
        if counters != self.sink_progress[0]:
            self.sink_progress = (counters, now)
        if self.source_ended_at is None:
            return
        quiet = now - max(self.source_ended_at, self.sink_progress[1])
        if quiet > self.end_deadline_s:
            raise RunFailed(f"the source ended and the sink has not finished nor moved for {quiet:.0f} s; giving up "
                            f"(see {self.run_dir / 'logs' / 'sink.log'})", one_line=True)

    def stop(self, source_first: bool = True) -> dict[str, int | None]:
        """SIGTERM every worker still running (each drains and checkpoints), SIGKILL what outlives the grace.

        source_first: the source stops alone first, so that its stop barrier (exactly-once) is carried and acknowledged
        by the rest of the stack; False (a failed run, whose stack may not carry it) stops them all together."""
        self._stop_spare()  # first: a spare still importing torch must not take CPU from the workers' shutdown
        if source_first:
            self._terminate([c for c in self.children.values() if c.name == "source" and c.running()],
                            time.monotonic() + SOURCE_STOP_GRACE_S, SOURCE_STOP_GRACE_S)
        deadline = time.monotonic() + SHUTDOWN_GRACE_S
        # The monitor goes last, so that every worker's final metrics still reach its clients.
        workers = [c for c in self.children.values() if c.name != "monitor"]
        self._terminate([c for c in workers if c.running()], deadline)
        self._terminate([c for c in self.children.values() if c.name == "monitor" and c.running()], deadline)
        return {c.name: (c.process.returncode if c.process else (c.exit_codes[-1] if c.exit_codes else None)) for c in self.children.values()}

    def _terminate(self, alive: list[Child], deadline: float, grace_s: float = SHUTDOWN_GRACE_S) -> None:
        for child in alive:
            child.process.send_signal(signal.SIGTERM)
        for child in alive:
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("%s did not stop within %.0f s; killing it", child.name, grace_s)
                child.process.kill()
                child.process.wait()

    def _stop_spare(self) -> None:
        """The idle spare holds nothing: SIGTERM ends it at once, even half-way through its imports."""
        if self.spare is None:
            return
        self.spare.terminate()
        self.spare.wait()
        self.spare.stdin.close()
        self.spare = None

    def final_stats(self) -> dict[str, dict]:
        stats = {}
        for path in sorted(self.stats_dir.glob("*.json")):
            try:
                stats[path.stem] = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
        return stats

    def cleanup(self) -> None:
        shutil.rmtree(self.run_dir, ignore_errors=True)


DATASET_PREFIXES = ("fashion-mnist", "idx:")


def resolve_stream(cfg: RunConfig) -> None:
    """Open the source once up front: a bad spec fails here with one line, and the labels decide the task."""
    s = cfg.stream
    source_total = None
    if s.source.startswith(("webcam", "rtsp://", "rtsps://", "http://", "https://")):
        check_live(s.source)  # a webcam that does not exist fails here, at once
        s.num_classes = None  # a live device is opened once, by the source worker
    else:
        with open_source(s.source, Preprocess(size=s.size, color=s.color), seed=s.seed, epochs=s.epochs, labels=s.labels) as src:
            s.num_classes, source_total = src.num_classes, src.total
    known = [t for t in (source_total, s.max_frames) if t is not None]
    s.total_frames = min(known) if known else None  # the learning rate decays over this many frames
    if s.task is None:
        # Labelled datasets train supervised. A video's labels (the synthetic clip's shape classes) feed the
        # probe only: a label that stays the same for dozens of frames teaches a supervised layer the
        # recent label rather than the picture (see README), so video trains unsupervised unless asked.
        s.task = "supervised" if s.num_classes and s.source.startswith(DATASET_PREFIXES) else "unsupervised"
    if s.task == "supervised" and not s.num_classes:
        raise ConfigError(f"--task supervised needs a labelled source; {s.source!r} has no labels")
    if s.supervised and s.num_classes > s.input_size:
        raise ConfigError(f"{s.num_classes} label slots do not fit in a {s.size[0]}x{s.size[1]} frame")
    check_header_fits(cfg)


def check_header_fits(cfg: RunConfig) -> None:
    """Refuse at start a batch whose trace (one goodness per row per layer) cannot fit in a header.

    Otherwise the top layer's first send fails, it crashes, restarts and crashes again on the same batch.
    """
    rows, layers = cfg.stream.batch, len(cfg.model.layers)
    bound = wire.header_bound(rows, layers, labelled=bool(cfg.stream.num_classes))
    if bound > wire.MAX_HEADER_BYTES:
        fits = rows * (wire.MAX_HEADER_BYTES - wire.HEADER_BASE_BYTES) // (bound - wire.HEADER_BASE_BYTES)  # per-row cost is linear
        raise ConfigError(f"stream.batch {rows} with {layers} layers makes message headers of up to {bound} bytes, over the "
                          f"{wire.MAX_HEADER_BYTES}-byte wire limit (a goodness per row per layer); use a batch of at most {fits}")


def summarise(cfg: RunConfig, stats: dict[str, dict], wall_s: float, exit_codes: dict) -> dict:
    """The figures `ffstream run` prints at the end, and writes with --summary-json."""
    layers = []
    for i in range(1, len(cfg.model.layers) + 1):
        s = stats.get(f"layer{i}", {})
        layers.append(
            {
                "layer": i,
                "width": cfg.model.layers[i - 1],
                "frames": s.get("frames"),
                "updates": s.get("updates"),
                "negative_updates": s.get("negative_updates"),
                "paired": s.get("paired"),  # positive micro-batches stepped with their own negatives
                "unpaired_positives": s.get("unpaired_positives"),  # stepped alone: their negatives came too late
                "goodness_pos": s.get("goodness_pos_mean"),
                "goodness_neg": s.get("goodness_neg_mean"),
                "p_pos": s.get("p_pos_mean"),
                "p_neg": s.get("p_neg_mean"),
                "goodness_pos_recent": s.get("goodness_pos"),
                "goodness_neg_recent": s.get("goodness_neg"),
                "p_pos_recent": s.get("p_pos"),
                "p_neg_recent": s.get("p_neg"),
                "threshold": s.get("threshold"),
                "fps": s.get("fps"),
                "staleness": s.get("staleness_mean"),
                "dropped": s.get("dropped"),
                "replayed_rows": s.get("replayed_rows"),  # exactly-once: rows forwarded without learning, learned before
                "gap_rows": s.get("gap_rows"),  # exactly-once: rows forwarded without learning, an earlier batch missing
                "rows_with_feedback": s.get("rows_with_feedback"),  # recurrent runs: rows that heard the layer above
                "feedback_lag": s.get("feedback_lag"),
                "busy_s": s.get("busy_s"),  # seconds per phase of the worker's loop (wait, recv, forward, learn, send, ...)
            }
        )
    keep = ("frames", "fps", "accuracy", "evaluated", "latency_p50_ms", "latency_p99_ms", "dropped", "bad_frames", "total", "negatives",
            "novelty_alerts", "features_sent", "barriers", "acks", "rewinds", "gap_notices",  # the source's exactly-once figures
            "negatives_per_s", "refreshes", "staleness", "sleep_every", "negative_kind", "snapshot_timeouts", "busy_s")
    pick = lambda name: {k: v for k, v in stats.get(name, {}).items() if k in keep}  # noqa: E731
    return {
        "source": cfg.stream.source,
        "task": "supervised" if cfg.stream.supervised else "unsupervised",
        "wall_s": round(wall_s, 2),
        "layers": layers,
        "sleep": pick("sleep") if cfg.sleep.enabled else None,
        "sink": pick("sink"),
        "source_stats": pick("source"),
        "exit_codes": exit_codes,
        "checkpoint_dir": cfg.checkpoint_dir,
    }


def run_stack(cfg: RunConfig, on_metrics=None, run_dir: str | None = None, on_start=None) -> tuple[dict, Supervisor, RunFailed | None]:
    """Start every worker, wait for the stream to end (or Ctrl-C), stop them all; the summary and any failure.

    on_start(supervisor), if given, is called once every worker process is started (benchmarks read their PIDs).
    """
    supervisor = Supervisor(cfg, run_dir)
    started = time.time()
    failure = None
    try:
        supervisor.start()
        if on_start is not None:
            on_start(supervisor)
        supervisor.watch(on_metrics)
    except RunFailed as exc:
        failure = exc
    finally:
        exit_codes = supervisor.stop(source_first=failure is None)
    summary = summarise(cfg, supervisor.final_stats(), time.time() - started, exit_codes)
    summary["interrupted"] = supervisor.interrupted
    return summary, supervisor, failure
