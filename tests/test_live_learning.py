"""Learning on a schedule (model.learn_every_rows): forward each frame at once, step once per N rows.

Latency figures are in BENCHMARKS.md; these tests check that a scheduled layer passes every frame on
before any step, steps exactly what the in-process reference would step on the same rows, pairs every
positive with its own negatives, and takes about frames / N steps through a stack of real processes.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from ffstream.config import (
    ConfigError,
    ModelConfig,
    RunConfig,
    SleepConfig,
    StreamConfig,
)
from ffstream.config.plans import Batching
from ffstream.ff import FFLayer, LayerConfig, rms_normalize
from ffstream.net import wire
from ffstream.supervisor import resolve_stream
from ffstream.workers.layer import IDLE_WAKE_S
from tests.processes import eventually, run_local_stack
from tests.rig import LAYER, ROWS, frames, paired, receive, send, weights_of

VIDEO = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"


def negative_inputs(seq: int) -> np.ndarray:
    return np.random.default_rng(100 + seq).random((ROWS, LAYER.in_features), dtype=np.float32)


def test_scheduled_layer_forwards_every_frame_at_once_and_steps_once_on_all_rows_with_their_negatives(start_layer):
    rig = start_layer(**paired(Batching(max_rows=ROWS, learn_every_rows=3 * ROWS)))
    reference = FFLayer(LAYER)
    positives = [frames(seq=s) for s in (1, 2, 3)]
    for msg in positives:  # no negatives yet: each activity still goes on, computed on the initial weights
        send(rig.input, msg)
        out = receive(rig.output)
        with torch.no_grad():
            expected = rms_normalize(reference(torch.from_numpy(msg.array.reshape(ROWS, -1).copy()))).numpy()
        np.testing.assert_allclose(out.array, expected, rtol=1e-5, atol=1e-6)
    for s in (1, 2):
        send(rig.negative, wire.Message("negative_update", negative_inputs(s), seq=s, extra={"form": "inputs"}))
    eventually(lambda: rig.worker.metrics()["negative_updates"] == 2, what="two negatives held")
    # The snapshot is answered on a later pass of the loop than the one that took the negatives: 8 of 12 rows ready, no step.
    assert rig.ask_snapshot().extra["version"] == 0, "a scheduled layer stepped before learn_every_rows rows were ready"
    send(rig.negative, wire.Message("negative_update", negative_inputs(3), seq=3, extra={"form": "inputs"}))
    eventually(lambda: rig.worker.layer.version == 1, what="the scheduled step")
    # One step on all 12 rows and their own negatives, judged by the weights of that moment: the reference's step.
    reference.add_negative_inputs(torch.from_numpy(np.concatenate([negative_inputs(s) for s in (1, 2, 3)])))
    reference.learn(torch.cat([torch.from_numpy(m.array.reshape(ROWS, -1).copy()) for m in positives]))
    for name, value in weights_of(reference).items():
        np.testing.assert_allclose(weights_of(rig.worker.layer)[name], value, rtol=1e-5, atol=1e-6)
    m = rig.worker.metrics()
    assert m["updates"] == 1 and m["paired"] == 3 and m["unpaired_positives"] == 0, m


def test_an_idle_input_does_not_step_a_scheduled_layer_outside_its_schedule(start_layer):
    rig = start_layer(**paired(Batching(max_rows=ROWS, learn_every_rows=3 * ROWS)))
    send(rig.input, frames(seq=1))
    receive(rig.output)
    send(rig.negative, wire.Message("negative_update", negative_inputs(1), seq=1, extra={"form": "inputs"}))
    eventually(lambda: rig.worker.metrics()["negative_updates"] == 1, what="the negatives held")
    # Wait on the worker's own idle clock (well short of the pairing's hold_s, 10 s); then two snapshot handshakes:
    # the loop pass that answers the first also runs the idle check, so the second sees what that check did.
    eventually(lambda: time.monotonic() - rig.worker._last_wake_step > IDLE_WAKE_S + 0.1, what="the idle path's wait to pass")
    rig.ask_snapshot()
    assert rig.ask_snapshot().extra["version"] == 0, "the idle path stepped 4 of the 12 rows the schedule asks for"


def test_a_time_schedule_steps_on_whatever_is_ready_and_only_with_its_negatives(start_layer):
    rig = start_layer(**paired(Batching(max_rows=ROWS, learn_every_ms=1.0)))
    send(rig.input, frames(seq=1))
    receive(rig.output)
    assert rig.ask_snapshot().extra["version"] == 0, "a positive stepped before its negatives were in"
    send(rig.negative, wire.Message("negative_update", negative_inputs(1), seq=1, extra={"form": "inputs"}))
    eventually(lambda: rig.worker.layer.version == 1, what="the timed step")
    assert rig.worker.metrics()["paired"] == 1


def test_scheduled_learning_needs_paired_negatives():
    cfg = RunConfig(stream=StreamConfig(source="synthetic:64", batch=1, task="unsupervised"),
                    model=ModelConfig(layers=(32,), learn_every_rows=8), sleep=SleepConfig(enabled=False))
    resolve_stream(cfg)
    with pytest.raises(ConfigError, match="paired negatives"):
        cfg.check()
    cfg.sleep = SleepConfig(route="chain")
    cfg.model.learn_every_rows = 65  # more rows than a layer holds at batch 1 (64 held messages)
    with pytest.raises(ConfigError, match="more rows than a layer holds"):
        cfg.check()


def test_warm_up_leaves_a_layer_exactly_as_fresh():
    for optimizer, decay in (("adam", 0.0), ("adam", 0.01), ("sgd", 0.01)):
        cfg = LayerConfig(in_features=6, width=5, optimizer=optimizer, weight_decay=decay, seed=3)
        fresh, warmed = FFLayer(cfg), FFLayer(cfg)
        warmed.warm_up(rows=4)
        assert warmed.optimizer.state, "warm_up allocated no optimiser state"
        x = torch.rand(3, 6, generator=torch.Generator().manual_seed(0))
        for _ in range(3):
            fresh.learn(x)
            warmed.learn(x)
        for name, value in weights_of(fresh).items():
            np.testing.assert_array_equal(weights_of(warmed)[name], value, err_msg=f"{optimizer} wd={decay}: {name}")


@pytest.mark.skipif(not __import__("os").path.exists(VIDEO), reason="needs opencv-doc's vtest.avi")
def test_scheduled_stack_of_processes_steps_once_per_n_rows_and_pairs_every_frame(tmp_path):
    """Real worker processes, real video, batch 1: every frame reaches the sink, each layer takes about frames / N
    steps (against one per frame without the schedule), each step with the frames' own negatives, and learns."""
    every, total = 16, 160
    cfg = RunConfig(
        stream=StreamConfig(source=VIDEO, size=(28, 28), batch=1, task="unsupervised", max_frames=total, eval_every=0),
        model=ModelConfig(layers=(64, 64), max_batch=1, learn_every_rows=every),
        sleep=SleepConfig(route="chain"),
    )
    summary = run_local_stack(cfg, tmp_path)
    assert summary["sink"]["frames"] == total
    for layer in summary["layers"]:
        assert layer["frames"] == total, layer
        # Steps of every `every` rows; the last few rows may step once more at the end (idle or drain).
        assert 1 <= layer["updates"] <= math.ceil(total / every) + 1, layer
        # Every frame steps with its own negatives, the last ones too: a layer steps its held rows before it passes the end on.
        assert layer["paired"] == total and layer["unpaired_positives"] == 0, layer
        assert layer["goodness_neg"] is not None and layer["staleness"] == 0, layer
    first = summary["layers"][0]
    gap = lambda suffix: first[f"goodness_pos{suffix}"] - first[f"goodness_neg{suffix}"]  # noqa: E731
    # The separation grows: positives above negatives at the end, and by more than over the whole run.
    assert gap("_recent") > 0 and gap("_recent") > gap(""), f"layer 1 did not learn to tell positives from negatives: {first}"
