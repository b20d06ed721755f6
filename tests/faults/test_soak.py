"""On demand, not in the default run (marker `soak`): many kill -9s of each worker kind at random moments of a file
stream, and every layer's learning log exactly once afterwards (issue 20's target: 20 random kills per kind).

    FFSTREAM_SOAK_KILLS=20 python -m pytest -m soak -s tests/faults/test_soak.py     # a JSON line per kind

Each kind gets its own runs of `ffstream run` (synthetic:FRAMES paced, layers 32,32, barriers every 5 batches, a
restart budget that the kills cannot exhaust); a kill lands a random 0-4 s after the previous victim's successor is
first heard from, so kills fall in start-up, mid-batch, at barriers and in replays alike. A run whose stream ends
before the kills are done is followed by another, until KILLS kills in all. Negatives (the sleep worker's) are outside
the guarantee: killing it checks that the positives stay exactly once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from ffstream.net import wire
from ffstream.workers.delivery import LearnLog
from tests.processes import monitored_run

KILLS = int(os.environ.get("FFSTREAM_SOAK_KILLS", "20"))  # kills per worker kind
FRAMES, BATCH, LAYERS = 8000, 32, ("layer1", "layer2")
BATCHES = -(-FRAMES // BATCH)
RATE_FPS = 32  # 250 s of stream per run: room for about 20 kills at the supervisor's restart back-off
MAX_RUNS = 6
VICTIMS = ("source", "layer1", "layer2", "sleep", "sink")

pytestmark = pytest.mark.soak


def soak_run(directory: Path, victim: str, kills_wanted: int, rng: random.Random) -> tuple[int, str]:
    """One `ffstream run`, killing `victim` at random moments until kills_wanted kills or the stream's end; (kills, its log)."""
    directory.mkdir(parents=True)
    argv = ("--source", f"synthetic:{FRAMES}", "--checkpoint-dir", str(directory / "ck"), "--set", "model.layers=32,32",
            "--set", f"stream.batch={BATCH}", "--set", "stream.barrier_every=5", "--set", "stream.barrier_min_s=0", "--set", f"stream.rate_fps={RATE_FPS}",
            "--set", "restart_budget=1000")
    killed: set[int] = set()
    with monitored_run(directory, *argv, extra_env={"FFSTREAM_LEARN_LOG_DIR": str(directory / "learn")}) as (proc, sub):
        due, latest = None, {}
        while len(killed) < kills_wanted and proc.poll() is None:
            if sub.poll(100):
                try:
                    msg = wire.decode(sub.recv_multipart(), max_payload=0)
                except wire.WireError:
                    continue
                latest[msg.stream] = msg.extra.get("metrics", {})
            source = latest.get("source", {})
            if source.get("ended") or source.get("stream_sent"):
                break  # the stream is out: the rest of the kills go to the next run
            pid = latest.get(victim, {}).get("pid")
            if pid is None or pid in killed:
                continue  # its successor not heard from yet
            if due is None:
                due = time.monotonic() + rng.uniform(0.0, 4.0)  # a random moment of this process's life
            if time.monotonic() >= due:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass  # it died on its own meanwhile: the next one
                killed.add(pid)
                due = None
        _, log = proc.communicate(timeout=900)
        assert proc.returncode == 0, f"ffstream run exited {proc.returncode}:\n{log[-3000:]}"
    return len(killed), log


def check_exactly_once(directory: Path) -> dict:
    """Every layer's log of one run: each batch once, every row. Returns the figures for the report."""
    figures = {}
    for layer in LAYERS:
        lines = LearnLog.read(directory / "learn" / f"{layer}.learn.jsonl")
        counts = Counter(line["seq"] for line in lines)
        twice = sorted(s for s, n in counts.items() if n > 1)
        missing = sorted(set(range(BATCHES)) - set(counts))
        assert not twice and not missing, f"{directory.name} {layer}: learned twice {twice[:20]}, never {missing[:20]}"
        assert set(counts) == set(range(BATCHES)) and sum(line["rows"] for line in lines) == FRAMES
        figures[layer] = {"batches": len(counts), "rows": sum(line["rows"] for line in lines)}
    return figures


@pytest.mark.parametrize("victim", VICTIMS)
def test_random_kills_leave_every_layer_learning_each_batch_exactly_once(tmp_path, victim):
    rng = random.Random(f"soak-{victim}-{time.time_ns()}")  # other moments on every run, as the check asks
    kills, runs, restarts = 0, [], 0
    while kills < KILLS:
        assert len(runs) < MAX_RUNS, f"only {kills} kills of {victim} in {MAX_RUNS} runs"
        directory = tmp_path / f"run{len(runs)}"
        done, log = soak_run(directory, victim, KILLS - kills, rng)
        restarts += log.count(f"restarting {victim}")
        runs.append({"kills": done, **check_exactly_once(directory)})
        kills += done
    report = {"victim": victim, "kills": kills, "runs": len(runs), "restarts_logged": restarts, "per_run": runs, "exactly_once": True}
    print(json.dumps(report), flush=True)
    if os.environ.get("FFSTREAM_SOAK_REPORT"):
        with open(os.environ["FFSTREAM_SOAK_REPORT"], "a") as fh:
            fh.write(json.dumps(report) + "\n")
    assert restarts >= kills, f"{kills} kills but {restarts} restarts logged: some kills went unnoticed"
