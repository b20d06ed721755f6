"""Layer-worker memory: what keeps RSS level over a long run (BENCHMARKS.md, "Memory").

Two causes were measured: the optimiser's state was copied into the last-good state only a checkpoint period
after start (now at set-up, after the warm-up has made it), and glibc kept the steps' free heap holes resident
(now trimmed, and a step sums its gradients in reused tensors, so fewer weight-sized temporaries scatter
the heap). These tests check each remedy; the 10-minute figure is a benchmark, not a test.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest
import torch

from ffstream.ff import FFLayer, LayerConfig
from ffstream.workers import malloc
from tests.processes import eventually
from tests.rig import frames, receive, send

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim and mallinfo2 are glibc's")


def test_last_good_state_holds_the_optimiser_moments_before_the_first_frame(start_layer):
    rig = start_layer()  # set up and answering: no frame yet
    assert rig.worker.updates == 0
    copied = rig.worker.last_good.good[1]["state"]
    assert copied, "the last-good copy of Adam's moments is made at start, not a checkpoint period later"
    live = rig.worker.layer.optimizer.state_dict()["state"]
    assert copied[0]["exp_avg"].shape == rig.worker.layer.weights()["weight"].shape
    assert copied[0]["exp_avg"].data_ptr() != live[0]["exp_avg"].data_ptr(), "a copy, not the live tensor"
    send(rig.input, frames(seq=1))
    receive(rig.output)
    eventually(lambda: rig.worker.updates >= 1, what="the first step")
    assert rig.worker.last_good.good[1]["state"][0]["exp_avg"].data_ptr() == copied[0]["exp_avg"].data_ptr(), "no new copy at the first step"


def test_steps_sum_gradients_in_reused_tensors_and_leave_the_callers_alone():
    """A step on positives plus pending negatives sums them in the layer's own reused tensors, with exactly
    the result of a fresh sum, and never writes into the gradients it was handed."""
    cfg = LayerConfig(in_features=16, width=8, lr=0.01, seed=1)
    layer, twin = FFLayer(cfg), FFLayer(cfg)
    gen = torch.Generator().manual_seed(0)
    addresses = None
    for _ in range(3):
        x, n = torch.rand(4, 16, generator=gen), torch.rand(4, 16, generator=gen)
        negative, _, _ = layer.local_gradients(n, positive=False)
        handed = [g.clone() for g in negative]
        layer.add_negative(negative)
        positive, _, _ = layer.wake(x)
        layer.apply_gradients(positive)
        assert all(torch.equal(a, b) for a, b in zip(negative, handed)), "the caller's negative gradients are untouched"
        # the twin: the same step with a fresh sum
        twin_negative, _, _ = twin.local_gradients(n, positive=False)
        twin_positive, _, _ = twin.wake(x)
        for param, grad in zip(twin.parameters(), [a + b for a, b in zip(twin_positive, twin_negative)]):
            param.grad = grad
        twin.optimizer.step()
        twin.optimizer.zero_grad(set_to_none=True)
        assert torch.equal(layer.weight, twin.weight) and torch.equal(layer.bias, twin.bias)
        now = [b.data_ptr() for b in layer._grad_sum]
        assert addresses in (None, now), "the same tensors every step"
        addresses = now


def test_layer_trims_the_heap_every_period(start_layer, monkeypatch):
    from ffstream.workers.layer import worker as layer_worker  # the module whose loop reads TRIM_EVERY_S

    calls = []
    monkeypatch.setattr(malloc, "trim", lambda: calls.append(1) or True)
    monkeypatch.setattr(layer_worker, "TRIM_EVERY_S", 0.0)  # every loop turn is past the period
    rig = start_layer()
    eventually(lambda: len(calls) >= 2, what="malloc.trim() from the layer's loop")
    assert rig.ask_snapshot().kind == "snapshot", "the worker still answers after trimming"


@glibc_only
def test_trim_gives_free_heap_holes_back_that_glibc_keeps_resident():
    """In a fresh process with the workers' malloc settings: 200 MB of 1 MB buffers, all freed but the last
    (which pins the heap top), stay resident until malloc.trim() returns them."""
    code = textwrap.dedent("""
        from pathlib import Path
        from ffstream.workers import malloc

        def anon_mib():
            line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("RssAnon:"))
            return int(line.split()[1]) // 1024

        assert malloc.tune_for_workers()
        held = [bytearray(1 << 20) for _ in range(200)]  # zero-filled: every page touched
        pin = held.pop()
        before = anon_mib()
        del held
        freed = anon_mib()
        assert malloc.trim()
        print(before, freed, anon_mib(), malloc.heap_stats()["in_use"] // 2**20)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    before, freed, trimmed, in_use = map(int, out.stdout.split())
    assert freed > before - 20, f"freed holes below the top stay resident ({before} -> {freed} MiB): the premise"
    assert trimmed < freed - 150, f"malloc.trim() returned them: {freed} -> {trimmed} MiB"
    assert in_use < 50, f"and the heap reports them free: {in_use} MiB in use"


@glibc_only
def test_heap_stats_count_an_allocation():
    before = malloc.heap_stats()
    held = bytearray(8 << 20)
    after = malloc.heap_stats()
    assert after["in_use"] - before["in_use"] >= 8 << 20
    del held


def test_memory_only_benchmark_samples_every_layer_on_the_way():
    from ffstream.bench.throughput import format_memory, memory_benchmark

    r = memory_benchmark(layers=(32, 32), batch=8, seconds=4, every_s=1)
    series = r["memory"]["series"]
    assert len(series) >= 3, f"a point a second over 4 s, got {len(series)}"
    assert all(set(p["rss_kib"]) == {"layer1", "layer2"} and all(v and v > 0 for v in p["rss_kib"].values()) for p in series)
    assert [p["t_s"] for p in series] == sorted(p["t_s"] for p in series)
    assert set(r["rss_growth"]) == {"layer1", "layer2"}
    assert "layer2 RSS growth" in format_memory(r)
