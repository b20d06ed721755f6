"""Exactly-once learning of a file or dataset stream (DESIGN.md §2 "Delivery", workers/delivery.py).

The pipeline tests run a real `ffstream run --checkpoint-dir` with per-layer learning logs (FFSTREAM_LEARN_LOG_DIR),
hurt it (kill -9 of a layer or of the source; Ctrl-C, then a resumed run), and check that every layer learned every
batch of the stream exactly once: the union of its logged seqs is the stream's, with no seq twice and every row.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

from ffstream.workers.delivery import GAP, LEARN, SKIP, LearnLog, SeqGate
from tests.processes import await_metrics, monitored_run, worker_log_tails

FRAMES = 4000  # frames of the synthetic stream
BATCH = 32
BATCHES = -(-FRAMES // BATCH)  # 125, the last one of 32 rows too
LAYERS = ("layer1", "layer2")
PACED = ("--set", "stream.rate_fps=1000")  # 4 s of stream: the fault lands mid-stream however fast the machine is


# the gate and the log, in process ------------------------------------------------------------------------------------
def test_gate_learns_each_seq_once_in_order_and_starts_over_on_a_new_pass():
    gate = SeqGate()
    assert [gate.admit("a", s) for s in (0, 1, 3, 2, 2, 3)] == [LEARN, LEARN, GAP, LEARN, SKIP, LEARN]
    assert gate.has_all("a", 3) and not gate.has_all("a", 4) and not gate.has_all("b", 0)
    assert gate.admit("b", 5) == GAP and gate.admit("b", 0) == LEARN  # another pass: learned from its start
    assert SeqGate.from_dict(gate.to_dict()) == gate
    assert SeqGate.from_dict({"pass_id": 3, "upto": "x"}) == SeqGate()  # a malformed checkpoint entry: a fresh gate


def test_learn_log_is_cut_back_to_what_the_checkpoint_holds(tmp_path):
    log = LearnLog(tmp_path / "layer1.learn.jsonl")
    for seq in range(5):
        log.add("p", seq, 32)
    log.close()
    with open(log.path, "a") as fh:
        fh.write('{"pass_id": "p", "se')  # a torn line: the kill came mid-write
    again = LearnLog(log.path)
    again.resume(SeqGate("p", 2))  # the checkpoint holds 0..2; 3 and 4 were undone by the kill
    again.add("p", 3, 32)
    again.close()
    assert [line["seq"] for line in LearnLog.read(log.path)] == [0, 1, 2, 3]


# a real run ----------------------------------------------------------------------------------------------------------
def watched_run(tmp_path: Path, *extra: str):
    """`ffstream run` of synthetic:FRAMES on 32,32 layers with barriers every 5 batches, checkpoints in tmp_path/ck and
    learning logs in tmp_path/learn; yields (process, SUB on its monitor). Killed on the way out if still running."""
    return monitored_run(tmp_path, "--source", f"synthetic:{FRAMES}", "--checkpoint-dir", str(tmp_path / "ck"),
                         "--set", "model.layers=32,32", "--set", f"stream.batch={BATCH}", "--set", "stream.barrier_every=5", "--set", "stream.barrier_min_s=0", *extra,
                         extra_env={"FFSTREAM_LEARN_LOG_DIR": str(tmp_path / "learn")})


def finish(proc: subprocess.Popen, timeout_s: float = 240.0, tmp_path: Path | None = None) -> str:
    """Wait for the run to end well; its stderr (the supervisor's log lines). A run still going at timeout_s fails
    with the tail of every worker's log under tmp_path (the run's TMPDIR), so that a hang says where it hung."""
    try:
        _, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        tails = worker_log_tails(tmp_path) if tmp_path else ""
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"ffstream run still ran after {timeout_s:.0f} s:\n{err[-2000:]}\n{tails}") from None
    assert proc.returncode == 0, f"ffstream run exited {proc.returncode}:\n{err[-3000:]}"
    return err  # the supervisor's log


def assert_learned_exactly_once(tmp_path: Path) -> None:
    """Every layer's log: each batch of the stream once, all its rows, nothing else."""
    for layer in LAYERS:
        lines = LearnLog.read(tmp_path / "learn" / f"{layer}.learn.jsonl")
        counts = Counter(line["seq"] for line in lines)
        twice = sorted(s for s, n in counts.items() if n > 1)
        missing = sorted(set(range(BATCHES)) - set(counts))
        assert not twice and not missing, f"{layer}: learned twice {twice[:20]}, never {missing[:20]}"
        assert set(counts) == set(range(BATCHES)), f"{layer}: seqs outside the stream {sorted(set(counts) - set(range(BATCHES)))}"
        assert sum(line["rows"] for line in lines) == FRAMES
        assert len({line["pass_id"] for line in lines}) == 1  # one pass over the stream, restarts and all


def kill_mid_run(tmp_path: Path, victim: str, after_frames: int) -> dict:
    """kill -9 of `victim` once layer 2 has learned after_frames frames; the source's saved position after the run."""
    with watched_run(tmp_path, *PACED) as (proc, sub):
        # Past a few barriers, so that the restart resumes from a checkpoint and has something to replay.
        await_metrics(proc, sub, "layer2", lambda m: (m.get("frames") or 0) >= after_frames)
        figures = await_metrics(proc, sub, victim, lambda m: m.get("pid") is not None)
        os.kill(figures["pid"], signal.SIGKILL)
        log = finish(proc, tmp_path=tmp_path)
    assert f"restarting {victim}" in log, "the kill went unnoticed: the test proves nothing"
    return json.loads((tmp_path / "ck" / "source.json").read_text())


def test_a_layer_killed_mid_run_still_learns_every_batch_exactly_once(tmp_path):
    """The restarted layer resumes from its last barrier's checkpoint; the next barrier finds it behind, the source
    rewinds to its last commit and replays; every layer skips what it had learned and learns what it lacks."""
    saved = kill_mid_run(tmp_path, "layer2", after_frames=FRAMES // 3)
    assert saved["ended"] and saved["batches"] == BATCHES
    assert_learned_exactly_once(tmp_path)


def test_a_restarted_layer_has_the_source_rewind_at_once_not_at_the_next_barrier(tmp_path):
    """No barrier but the final one: the restarted layer's first gap is reported to the source straight away (a "gap"
    notice), which rewinds then, not when the end's barrier comes back incomplete; still exactly once."""
    # 10 s of stream, the kill 2 s in: batches still come after the restart (with all sent before it, only the final
    # barrier, sent again after 10 s, would find the gap)
    with watched_run(tmp_path, "--set", "stream.rate_fps=400", "--set", "stream.barrier_every=100000") as (proc, sub):
        await_metrics(proc, sub, "layer2", lambda m: (m.get("frames") or 0) >= FRAMES // 5)
        os.kill(await_metrics(proc, sub, "layer2", lambda m: m.get("pid") is not None)["pid"], signal.SIGKILL)
        source = await_metrics(proc, sub, "source", lambda m: m.get("ended"))
        finish(proc, tmp_path=tmp_path)
    assert source["gap_notices"] >= 1 and source["rewinds"] >= 1, source
    assert source["barriers"] == 1, f"only the final barrier: the rewind came from the notice, {source}"
    assert_learned_exactly_once(tmp_path)


def test_the_source_killed_mid_run_still_learns_every_batch_exactly_once(tmp_path):
    """The restarted source resumes from its last acknowledged barrier; the layers skip the batches it sends again."""
    kill_mid_run(tmp_path, "source", after_frames=FRAMES // 3)
    assert_learned_exactly_once(tmp_path)


def test_the_sink_killed_mid_run_still_leaves_every_batch_learned_exactly_once_by_every_layer(tmp_path):
    """The barriers in flight die with the sink and are never acknowledged; later ones (or the final one, sent again)
    are, by the restarted sink, and the source commits there. The layers' learning is untouched by it."""
    saved = kill_mid_run(tmp_path, "sink", after_frames=FRAMES // 3)
    assert saved["ended"] and saved["batches"] == BATCHES
    assert_learned_exactly_once(tmp_path)


def test_the_sleep_worker_killed_mid_run_leaves_positives_learned_exactly_once(tmp_path):
    """Positives only: the negatives the sleep worker had made or was sending are outside the guarantee (lost with it,
    or sent twice after a replay; workers/delivery.py), and the learning logs hold positives alone."""
    saved = kill_mid_run(tmp_path, "sleep", after_frames=FRAMES // 3)
    assert saved["ended"] and saved["batches"] == BATCHES
    assert_learned_exactly_once(tmp_path)


def learned(tmp_path: Path, layer: str) -> list[tuple[int, int]]:
    """A layer's learning log as (seq, rows), in the order learned (the pass id differs from run to run)."""
    return [(line["seq"], line["rows"]) for line in LearnLog.read(tmp_path / "learn" / f"{layer}.learn.jsonl")]


def test_ctrl_c_takes_a_stop_barrier_and_the_resumed_run_goes_on_exactly_where_it_stopped(tmp_path):
    """Ctrl-C: the source stops reading and takes a last barrier, acknowledged before the rest of the stack stops, so it
    commits exactly where it stopped; the resumed run forwards no batch without learning it, and the two runs' logs
    together are, row for row and in order, an uninterrupted run's."""
    stopped, whole = tmp_path / "stopped", tmp_path / "whole"
    stopped.mkdir(), whole.mkdir()
    with watched_run(stopped, *PACED) as (proc, sub):
        await_metrics(proc, sub, "layer2", lambda m: (m.get("frames") or 0) >= FRAMES // 3)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    first = {layer: learned(stopped, layer) for layer in LAYERS}
    committed = json.loads((stopped / "ck" / "source.json").read_text())
    assert 0 < committed["batches"] < BATCHES, f"the interrupted run committed {committed['batches']} of {BATCHES} batches"
    for layer in LAYERS:  # the commit is where every layer stopped, not the barrier before it
        assert len(first[layer]) == committed["batches"], f"{layer} learned {len(first[layer])} batches, the source committed {committed['batches']}"
    with watched_run(stopped, "--summary-json", str(stopped / "summary.json")) as (proc, _):
        finish(proc, tmp_path=stopped)
    resumed = json.loads((stopped / "summary.json").read_text())
    assert [layer["replayed_rows"] for layer in resumed["layers"]] == [0] * len(LAYERS), "the resumed run forwarded batches it had learned"
    assert [layer["gap_rows"] for layer in resumed["layers"]] == [0] * len(LAYERS)
    assert_learned_exactly_once(stopped)
    with watched_run(whole) as (proc, _):
        finish(proc, tmp_path=whole)
    for layer in LAYERS:
        assert learned(stopped, layer) == learned(whole, layer), f"{layer}: the stopped and resumed run learned otherwise than an uninterrupted one"


def test_a_layer_checkpoint_older_than_the_commit_ends_the_run_in_one_line_not_a_rewind_loop(tmp_path):
    """A layer checkpoint lost (or replaced by an older one) after the source committed: a replay from the commit can
    never fill what the layer lacks. The source gives up after MAX_FRUITLESS_REWINDS replays, and the run exits
    non-zero in one line, instead of rewinding for ever (what a barrier passed on before its checkpoint once caused)."""
    from ffstream.workers.source import MAX_FRUITLESS_REWINDS

    with watched_run(tmp_path, *PACED) as (proc, sub):
        await_metrics(proc, sub, "layer2", lambda m: (m.get("frames") or 0) >= FRAMES // 3)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert json.loads((tmp_path / "ck" / "source.json").read_text())["batches"] > 0, "nothing committed: the test proves nothing"
    (tmp_path / "ck" / "layer2.safetensors").unlink()
    with watched_run(tmp_path) as (proc, _):
        _, err = proc.communicate(timeout=240)
    assert proc.returncode == 1, f"ffstream run exited {proc.returncode}:\n{err[-3000:]}"
    line = next((x for x in err.splitlines() if x.startswith("ffstream run: error: source:")), err[-3000:])
    assert f"after {MAX_FRUITLESS_REWINDS} replays" in line and "layers [2]" in line, line
