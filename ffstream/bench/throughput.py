"""Throughput, latency and memory of the pipeline against the same layers trained in one process.

One run measures, on the same layers, synthetic 28x28 frames, batch and task (unsupervised, hybrid
negatives, sleep on in both):

- inprocess_fps: `train_reference` (positive and negative steps interleaved), torch's default threads;
  inprocess_fps_1_thread: the same on one thread (on a shared machine two threads can be slower than one);
- pipeline_fps: `run_stack`, one process per layer plus the sleep worker; the sink's own fps metric,
  which counts from the first batch to reach the sink, so process start-up and model building are excluded.
  Negatives are chained (sleep.route "chain"): the sleep worker makes layer 1's, each layer passes its own
  activity on them up at its step, exactly as the in-process reference does; `busy_s` per worker says
  where the time went (wait, recv, forward, learn, send, snapshot, dream);
- peak_fraction: learning-path FLOP/s at pipeline_fps over a torch.mm peak measured here and now;
- latency_p50_ms / latency_p99_ms: the sink's source-to-sink latency with the source paced to 30 frames/s, batch 1;
- rss_growth: per layer worker, VmRSS at the end of a --memory-seconds run over VmRSS at 10 % of it, minus 1;
  memory.series: VmRSS, RssAnon and minor page faults of each layer every --memory-every seconds (`--memory-only` runs this part alone);
  memory.rss_growth_median: the same growth from the series' medians (last 10 % over 10-20 %), which a single sample's place in
  the trim cycle does not move.

FLOPs counted per frame and layer of D inputs and N units, the same for both runs: forward 2·D·N plus
weight gradient 2·D·N, for the positive and again for the negative pass, so 8·D·N. Neither run has a
readout or probe (eval_every 0); the negatives' making and the element-wise work are not counted.
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch

from ffstream.config import ModelConfig, RunConfig, SleepConfig, StreamConfig, Topology
from ffstream.offline.reference import train_reference
from ffstream.supervisor import resolve_stream, run_stack

TASK = "unsupervised"  # the synthetic clip is video: unsupervised with hybrid negatives, in both runs
ENDLESS = 10**9  # synthetic frames for the memory run, which is ended by time instead
# The latency run's layers forward each frame at once and take one step per this many rows (model.learn_every_rows):
# at 30 frames/s about one step a second per layer, against 30 when each frame is a step.
LATENCY_LEARN_EVERY_ROWS = 32


def throughput_config(layers: tuple[int, ...], batch: int, frames: int | None, rate_fps: float | None = None, seed: int = 0,
                      learn_every_rows: int | None = None) -> RunConfig:
    """The benchmark's run; a paced one (the latency run) is live video: its layers forward each frame at once and learn
    on a schedule, a step per `learn_every_rows` rows (None: LATENCY_LEARN_EVERY_ROWS when paced, else a step per batch)."""
    if learn_every_rows is None:
        learn_every_rows = LATENCY_LEARN_EVERY_ROWS if rate_fps is not None else 0
    return RunConfig(
        # eval_every=0: no forward-only eval copies and no readout in either run; both do only the learning path.
        stream=StreamConfig(source=f"synthetic:{frames or ENDLESS}", size=(28, 28), batch=batch, task=TASK, seed=seed, rate_fps=rate_fps, eval_every=0),
        model=ModelConfig(layers=layers, max_batch=batch, forward_first=rate_fps is not None, learn_every_rows=learn_every_rows),
        sleep=SleepConfig(enabled=True, route="chain"),
    )


def learning_flops_per_frame(cfg: RunConfig) -> int:
    """8·D·N per layer: forward and weight gradient (2·D·N each), positive and negative."""
    sizes = [cfg.stream.input_size, *cfg.model.layers]
    return sum(8 * d * n for d, n in zip(sizes, sizes[1:]))


def matmul_peak_gflops(n: int = 2000, repeats: int = 50) -> float:
    """Best of `repeats` timed torch.mm of two n x n float32 matrices, in GFLOP/s, with torch's default threads.

    50, not fewer: on this VM eight back-to-back bests of 10 ranged from 138.6 to 194.8 GFLOP/s, bests of 50
    from 183.9 to 196.4. A low peak would flatter the peak fraction."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        torch.mm(a, b)  # warm-up: thread pool, caches and clock
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def proc_status_kib(pid: int, fields: tuple[str, ...] = ("VmRSS", "RssAnon")) -> dict[str, int]:
    """The named KiB fields of /proc/PID/status (VmRSS: all resident; RssAnon: the heap and other anonymous pages); {} if gone."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in fields:
                out[key] = int(value.split()[0])
    except OSError:
        return {}
    return out


def minor_faults(pid: int) -> int | None:
    """Page faults the process has taken without I/O (/proc/PID/stat field 10): what trimmed pages cost to get back."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])
    except (OSError, IndexError, ValueError):
        return None


def vm_rss_kib(pid: int) -> int | None:
    return proc_status_kib(pid, ("VmRSS",)).get("VmRSS")


def _pipeline(cfg: RunConfig, on_start=None) -> dict:
    with tempfile.TemporaryDirectory(prefix="ffthr-") as tmp:
        cfg = dataclasses.replace(cfg)
        cfg.topology = Topology.local(len(cfg.model.layers), monitor_publish=f"ipc://{tmp}/monitor", run_dir=tmp)
        resolve_stream(cfg)
        cfg.check()
        summary, supervisor, failure = run_stack(cfg, on_start=on_start)
        if failure is not None:
            raise RuntimeError(f"pipeline failed: {failure} (logs in {supervisor.run_dir / 'logs'})")
        supervisor.cleanup()
        return summary


def inprocess_fps(cfg: RunConfig, threads: int | None = None) -> dict:
    """The in-process reference's frames/s, on `threads` torch threads (None: torch's default)."""
    cfg = dataclasses.replace(cfg)
    resolve_stream(cfg)
    default = torch.get_num_threads()
    try:
        torch.set_num_threads(threads or default)
        with tempfile.TemporaryDirectory(prefix="ffthr-ref-") as tmp:
            out = train_reference(cfg, tmp)
    finally:
        torch.set_num_threads(default)
    return {"frames": out["frames"], "wall_s": out["wall_s"], "fps": out["fps"], "threads": threads or default}


def pipeline_fps(cfg: RunConfig) -> dict:
    summary = _pipeline(cfg)
    sink = summary["sink"]
    return {"frames": sink.get("frames"), "wall_s": summary["wall_s"], "fps": sink.get("fps"),
            "layer_fps": [layer["fps"] for layer in summary["layers"]],
            "barriers": (summary.get("source_stats") or {}).get("barriers"),  # exactly-once: barriers taken, the final one included
            "steps": [layer["updates"] for layer in summary["layers"]],  # optimiser steps per layer: the reference takes one per batch
            "busy_s": {**{f"layer{layer['layer']}": layer.get("busy_s") for layer in summary["layers"]},
                       "sleep": (summary.get("sleep") or {}).get("busy_s")}}


def latency(cfg: RunConfig) -> dict:
    """Source-to-sink latency of a paced run; `updates` is the optimiser steps each layer took (learn_every_rows: the schedule)."""
    summary = _pipeline(cfg)
    sink = summary["sink"]
    return {"frames": sink.get("frames"), "p50_ms": sink.get("latency_p50_ms"), "p99_ms": sink.get("latency_p99_ms"),
            "learn_every_rows": cfg.model.learn_every_rows,
            "updates": [layer["updates"] for layer in summary["layers"]],
            "paired": [layer.get("paired") for layer in summary["layers"]],
            "busy_s": {f"layer{layer['layer']}": layer.get("busy_s") for layer in summary["layers"]}}


def memory(cfg: RunConfig, seconds: float, every_s: float = 10.0) -> dict:
    """VmRSS (KiB) of each layer worker at 10 % of `seconds` and at the end; the run is then interrupted.

    Also a series every `every_s` seconds (t_s from the start of the workers, VmRSS and RssAnon per layer,
    the 1-minute load average): where growth happens, and whether it levels off.
    """
    samples: dict[str, dict[str, int | None]] = {}
    series: list[dict] = []

    def watch(supervisor) -> None:
        done = threading.Event()  # pacing a timed measurement, not waiting on a peer
        started = time.monotonic()

        def layer_pids() -> dict[str, int]:
            return {n: c.process.pid for n, c in supervisor.children.items() if n.startswith("layer") and c.process is not None}

        def wait_until(t_s: float) -> None:
            """Until t_s after the start, taking a series point every every_s on the way."""
            while (left := t_s - (time.monotonic() - started)) > 0:
                next_point = every_s * (len(series) + 1) - (time.monotonic() - started) if every_s > 0 else left
                done.wait(min(left, max(0.0, next_point)))
                if every_s > 0 and time.monotonic() - started >= every_s * (len(series) + 1):
                    pids = layer_pids()
                    status = {n: proc_status_kib(pid) for n, pid in pids.items()}
                    series.append({"t_s": round(time.monotonic() - started, 1), "load_1m": round(os.getloadavg()[0], 2),
                                   "rss_kib": {n: s.get("VmRSS") for n, s in status.items()},
                                   "anon_kib": {n: s.get("RssAnon") for n, s in status.items()},
                                   "minor_faults": {n: minor_faults(pid) for n, pid in pids.items()}})

        def sample() -> None:
            wait_until(0.1 * seconds)
            samples.update({n: {"start_kib": vm_rss_kib(pid)} for n, pid in layer_pids().items()})
            wait_until(seconds)
            for n, pid in layer_pids().items():
                samples.setdefault(n, {})["end_kib"] = vm_rss_kib(pid)
            supervisor.interrupted = True  # ends watch(); stop() then drains every worker

        threading.Thread(target=sample, name="rss-sampler", daemon=True).start()

    summary = _pipeline(cfg, on_start=watch)
    growth = {}
    for name in sorted(samples, key=lambda n: int(n.removeprefix("layer"))):
        s = samples[name]
        if s.get("start_kib") and s.get("end_kib"):
            growth[name] = round(s["end_kib"] / s["start_kib"] - 1, 4)
    return {"seconds": seconds, "frames": summary["sink"].get("frames"), "rss_kib": samples, "rss_growth": growth,
            "rss_growth_median": median_growth(series, seconds), "series": series}


def median_growth(series: list[dict], seconds: float) -> dict[str, float]:
    """Per layer, the median VmRSS of the series' last 10 % over its median from 10 to 20 %, minus 1.

    Layers give the heap's free pages back every few seconds (malloc_trim) and take some back at the next
    steps, so one sample lands anywhere in a band of a few tens of MiB; the medians say whether the band moves.
    """
    def window(lo: float, hi: float) -> list[dict]:
        return [p for p in series if lo * seconds <= p["t_s"] < hi * seconds + 1]

    out = {}
    for name in sorted({n for p in series for n in p["rss_kib"]}, key=lambda n: int(n.removeprefix("layer"))):
        start = [p["rss_kib"][name] for p in window(0.1, 0.2) if p["rss_kib"].get(name)]
        end = [p["rss_kib"][name] for p in window(0.9, 1.0) if p["rss_kib"].get(name)]
        if start and end:
            out[name] = round(statistics.median(end) / statistics.median(start) - 1, 4)
    return out


def throughput_benchmark(layers: tuple[int, ...] = (2000, 2000, 2000, 2000), batch: int = 64, frames: int = 5000,
                         memory_seconds: float = 600.0, latency_rate_fps: float = 30.0, latency_frames: int = 600,
                         latency_batch: int = 1, seed: int = 0, latency_learn_every_rows: int = LATENCY_LEARN_EVERY_ROWS,
                         memory_every_s: float = 10.0) -> dict:
    started = time.time()
    cfg = throughput_config(layers, batch, frames, seed=seed)
    peak = matmul_peak_gflops()
    ref = inprocess_fps(cfg)
    ref1 = inprocess_fps(throughput_config(layers, batch, min(frames, 20 * batch), seed=seed), threads=1)
    pipe = pipeline_fps(cfg)
    flops = learning_flops_per_frame(cfg)
    achieved = flops * (pipe["fps"] or 0) / 1e9
    lat = latency(throughput_config(layers, latency_batch, latency_frames, rate_fps=latency_rate_fps, seed=seed,
                                    learn_every_rows=latency_learn_every_rows))
    mem = memory(throughput_config(layers, batch, None, seed=seed), memory_seconds, memory_every_s)
    return {
        "layers": list(layers), "batch": batch, "frames": frames, "task": TASK, "size": [28, 28],
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "inprocess_fps": ref["fps"],
        "inprocess_fps_1_thread": ref1["fps"],
        "pipeline_fps": pipe["fps"],
        "ratio": round(pipe["fps"] / ref["fps"], 3) if ref["fps"] and pipe["fps"] else None,
        # Fairness: both take one step per batch of `batch` frames (the pipeline's micro-batches are not merged).
        "inprocess_steps_per_layer": math.ceil(frames / batch), "pipeline_steps_per_layer": pipe["steps"],
        "matmul_peak_gflops": round(peak, 2),
        "learning_flops_per_frame": flops,
        "achieved_gflops": round(achieved, 2),
        "peak_fraction": round(achieved / peak, 4),
        "inprocess_peak_fraction": round(flops * (ref["fps"] or 0) / 1e9 / peak, 4),
        "latency_rate_fps": latency_rate_fps, "latency_batch": latency_batch,
        "latency_p50_ms": lat["p50_ms"], "latency_p99_ms": lat["p99_ms"],
        "latency_learn_every_rows": lat["learn_every_rows"], "latency_steps_per_layer": lat["updates"],
        "rss_growth": mem["rss_growth"],
        "inprocess": ref, "inprocess_1_thread": ref1, "pipeline": pipe, "latency": lat, "memory": mem,
        "wall_s": round(time.time() - started, 1),
    }


def memory_benchmark(layers: tuple[int, ...] = (2000, 2000, 2000, 2000), batch: int = 64, seconds: float = 600.0,
                     every_s: float = 10.0, seed: int = 0) -> dict:
    """The memory part alone (`--memory-only`): what throughput_benchmark reports as rss_growth and memory."""
    started = time.time()
    mem = memory(throughput_config(layers, batch, None, seed=seed), seconds, every_s)
    return {"layers": list(layers), "batch": batch, "task": TASK, "size": [28, 28], "torch": torch.__version__,
            "rss_growth": mem["rss_growth"], "memory": mem, "wall_s": round(time.time() - started, 1)}


def _rss_rows(r: dict) -> list[tuple[str, str, str]]:
    rows = []
    medians = r["memory"].get("rss_growth_median", {})
    for name, g in r["rss_growth"].items():
        kib = r["memory"]["rss_kib"][name]
        band = f"; medians of the last 10 % / 10-20 %: {100 * medians[name]:+.2f} %" if name in medians else ""
        rows.append((f"{name} RSS growth", f"{100 * g:+.2f} %",
                     f"{kib['start_kib'] / 1024:.0f} -> {kib['end_kib'] / 1024:.0f} MiB over {r['memory']['seconds']:g} s, target < 5 %{band}"))
    return rows


def format_memory(r: dict) -> str:
    """The memory part's figures, then its series: one line per sample, VmRSS MiB per layer and the load average."""
    rows = _rss_rows(r)
    head = f"memory: layers {r['layers']}, batch {r['batch']}, 28x28 synthetic, {r['task']}, sleep on, {r['memory']['frames']} frames"
    width = max((len(n) for n, _, _ in rows), default=0)
    series = [f"  t {p['t_s']:>6.1f} s  load {p['load_1m']:5.2f}  " + "  ".join(f"{n} {kib / 1024:.0f}" for n, kib in sorted(p["rss_kib"].items()) if kib)
              for p in r["memory"].get("series", [])]
    return "\n".join([head, *(f"  {n:<{width}}  {v:>10}  {note}" for n, v, note in rows), "  VmRSS MiB:", *series])


def format_result(r: dict) -> str:
    rows = [
        ("in-process frames/s", f"{r['inprocess_fps']:.1f}", f"{r['inprocess']['frames']} frames, {r['threads']} torch threads"),
        ("in-process frames/s, 1 thread", f"{r['inprocess_fps_1_thread']:.1f}", f"{r['inprocess_1_thread']['frames']} frames"),
        ("pipeline frames/s", f"{r['pipeline_fps']:.1f}", f"sink fps from its first batch; layers {r['pipeline']['layer_fps']}"),
        ("ratio pipeline / in-process", f"{r['ratio']:.3f}", "target >= 0.9"),
        ("matmul peak GFLOP/s", f"{r['matmul_peak_gflops']:.1f}", "torch.mm 2000x2000 float32, best of 50"),
        ("learning path GFLOP/s", f"{r['achieved_gflops']:.1f}", f"{r['learning_flops_per_frame'] / 1e6:.1f} MFLOP/frame x pipeline fps"),
        ("peak fraction", f"{r['peak_fraction']:.3f}", f"target >= 0.5; in-process {r['inprocess_peak_fraction']:.3f}"),
        (f"latency p50 ms @ {r['latency_rate_fps']:g} fps", f"{r['latency_p50_ms']}", f"batch {r['latency_batch']}, target <= 50"),
        (f"latency p99 ms @ {r['latency_rate_fps']:g} fps", f"{r['latency_p99_ms']}", "target <= 150"),
        ("latency run: steps per layer", f"{r['latency_steps_per_layer']}",
         f"{r['latency']['frames']} frames, a step per {r['latency_learn_every_rows']} rows (0: per frame), forwarding at once"),
    ]
    rows += _rss_rows(r)
    head = f"throughput: layers {r['layers']}, batch {r['batch']}, 28x28 synthetic, {r['task']}, sleep on, torch {r['torch']}"
    width = max(len(n) for n, _, _ in rows)
    busy = [f"  {part} {name} busy s: " + ", ".join(f"{k} {v:g}" for k, v in sorted(phases.items(), key=lambda kv: -kv[1]))
            for part in ("pipeline", "latency") for name, phases in (r[part].get("busy_s") or {}).items() if phases]
    return "\n".join([head, *(f"  {n:<{width}}  {v:>10}  {note}" for n, v, note in rows), *busy])
