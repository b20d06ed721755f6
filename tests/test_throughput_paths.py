"""The throughput paths of the layer worker: one forward pass per step, chained negatives, float16 on the wire.

Speeds are in BENCHMARKS.md; these tests check that the faster paths compute what the reference computes.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import zmq

from ffstream.config import ModelConfig, RunConfig, SleepConfig, StreamConfig
from ffstream.config.plans import SleepPlan
from ffstream.ff import FFLayer, rms_normalize
from ffstream.net import wire
from ffstream.workers import malloc
from ffstream.monitor.stats import Phases
from tests.processes import eventually, run_local_stack
from tests.rig import LAYER, ROWS, frames, paired, receive, send, unique, weights_of


def negative_inputs(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((ROWS, LAYER.in_features), dtype=np.float32)


def test_layer_steps_at_once_on_one_forward_pass_when_the_negatives_came_first(start_layer):
    rig = start_layer(**paired())
    negative = negative_inputs(3)
    send(rig.negative, wire.Message("negative_update", negative, seq=5, extra={"form": "inputs"}))
    eventually(lambda: rig.worker.metrics()["negative_updates"] == 1, what="the negative to be held")
    positive = frames(seq=5)
    send(rig.input, positive)
    out = receive(rig.output)
    eventually(lambda: rig.worker.layer.version == 1, what="the step")
    reference = FFLayer(LAYER)
    reference.add_negative_inputs(torch.from_numpy(negative))
    h, _ = reference.learn(torch.from_numpy(positive.array.reshape(ROWS, -1).copy()))
    np.testing.assert_allclose(out.array, rms_normalize(h).numpy(), rtol=1e-5, atol=1e-6)
    for name, value in weights_of(reference).items():
        np.testing.assert_allclose(weights_of(rig.worker.layer)[name], value, rtol=1e-5, atol=1e-6)
    busy = rig.worker.metrics()["busy_s"]
    assert "learn" in busy and "forward" not in busy, f"a forward-only pass was taken besides the step's: {busy}"
    assert rig.worker.metrics()["paired"] == 1 and rig.worker.metrics()["staleness"] == 0


def test_chained_layer_passes_its_negative_activity_up_at_the_step(start_layer, socket):
    above = socket(zmq.PULL)
    address = unique("chain")
    above.bind(address)
    rig = start_layer(**paired(), negative_output=address)
    negative = negative_inputs(4)
    before = FFLayer(LAYER)  # the weights the negatives are judged by: those of the step's moment
    send(rig.input, frames(seq=9))
    receive(rig.output)  # the positive is held: its negatives are not in yet
    send(rig.negative, wire.Message("negative_update", negative, seq=9, extra={"form": "inputs"}))
    chained = receive(above)
    assert chained.kind == "negative_update" and chained.seq == 9 and chained.extra["form"] == "inputs"
    assert "version" not in chained.extra, "a chained negative carries no snapshot version"
    with torch.no_grad():
        expected = rms_normalize(before(torch.from_numpy(negative))).numpy()
    np.testing.assert_allclose(chained.array, expected, rtol=1e-5, atol=1e-6)
    eventually(lambda: rig.worker.layer.version == 1, what="the paired step")


def test_float16_activity_goes_on_as_float16_and_the_next_layer_reads_it_as_float32(start_layer):
    low = start_layer(wire_dtype="float16")
    positive = frames(seq=1)
    send(low.input, positive)
    out = receive(low.output)
    assert out.array.dtype == np.float16 and out.array.nbytes == ROWS * LAYER.width * 2  # half the bytes of float32
    reference = FFLayer(LAYER)
    h, _ = reference.learn(torch.from_numpy(positive.array.reshape(ROWS, -1).copy()))
    np.testing.assert_allclose(out.array.astype(np.float32), rms_normalize(h).numpy(), rtol=2e-3, atol=2e-3)

    upper_config = dataclasses.replace(LAYER, in_features=LAYER.width, seed=2)
    high = start_layer(upper_config)  # computes in float32
    send(high.input, wire.Message("activity", out.array, seq=1))
    up = receive(high.output)
    assert up.array.dtype == np.float32
    upper = FFLayer(upper_config)
    h2, _ = upper.learn(torch.from_numpy(out.array.astype(np.float32)))
    np.testing.assert_allclose(up.array, rms_normalize(h2).numpy(), rtol=1e-5, atol=1e-5)


def test_a_bad_wire_dtype_is_refused(start_layer):
    with pytest.raises(ValueError, match="wire_dtype"):
        start_layer(wire_dtype="int64")


def test_chain_route_needs_input_negatives_and_no_phases():
    with pytest.raises(ValueError, match="chain"):
        SleepPlan(route="chain", update="gradient")
    with pytest.raises(ValueError, match="chain"):
        SleepPlan(route="chain", phased=True)
    with pytest.raises(ValueError, match="route"):
        SleepPlan(route="sideways")


def test_phases_count_each_phase_exclusive_of_the_ones_inside_it():
    now = [0.0]
    phases = Phases(clock=lambda: now[0])
    with phases("learn"):
        now[0] += 1.0
        with phases("send"):
            now[0] += 2.0
        now[0] += 3.0
    assert phases.get() == {"learn": 4.0, "send": 2.0}


def test_malloc_tuning_is_accepted_by_glibc():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("the settings are glibc's")
    assert malloc.tune_for_workers() is True


def test_chained_float16_run_end_to_end(tmp_path):
    """Real worker processes: sleep.route chain and float16 activity deliver every frame, and every layer learns from negatives."""
    cfg = RunConfig(
        stream=StreamConfig(source="synthetic:640", size=(28, 28), batch=32, task="unsupervised", eval_every=0),
        model=ModelConfig(layers=(64, 64, 64), max_batch=32, wire_float16=True),
        sleep=SleepConfig(route="chain"),
    )
    summary = run_local_stack(cfg, tmp_path)
    assert summary["sink"]["frames"] == 640
    for layer in summary["layers"]:
        assert layer["frames"] == 640 and layer["negative_updates"] >= 15, layer
        assert layer["goodness_neg"] is not None and layer["staleness"] == 0, layer
    assert summary["sleep"]["refreshes"] == 0, "chained negatives need no snapshot"
