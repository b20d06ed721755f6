"""The learning rate by frames learned (ff/schedule.py): linear over a stream of known length, halving to a floor
over one with no end, and a restarted layer goes on where its checkpoint left the schedule."""

from __future__ import annotations

import pytest

from ffstream.config import RunConfig
from ffstream.ff import RateSchedule
from ffstream.ff.checkpoint import checkpoint_config, layer_path
from tests.processes import eventually
from tests.rig import LAYER, ROWS, frames, receive, send


def test_a_stream_with_no_end_halves_its_rate_down_to_the_floor():
    schedule = RateSchedule(half_life=1000, floor=0.1)
    assert [schedule.scale(f) for f in (0, 1000, 2000)] == [1.0, 0.5, 0.25]
    assert schedule.scale(10_000) == 0.1  # 2^-10 would be 0.001: the layer keeps learning
    assert RateSchedule().scale(10**9) == 1.0


def test_a_known_length_decays_linearly_whatever_the_half_life():
    schedule = RateSchedule(decay_frames=1000, half_life=100)
    assert schedule.scale(500) == pytest.approx(0.5)
    assert schedule.scale(5000) == 0.01  # MIN_LR_SCALE: past the expected end it still learns a little


def test_the_run_config_picks_linear_for_a_known_length_else_the_half_life():
    cfg = RunConfig()
    cfg.model.lr_decay, cfg.model.lr_half_life, cfg.stream.total_frames = True, 50_000, 30_000
    assert cfg.rate_schedule().scale(15_000) == pytest.approx(0.5)
    cfg.model.lr_decay = False
    assert cfg.rate_schedule().scale(50_000) == pytest.approx(0.5)
    cfg.stream.total_frames, cfg.model.lr_decay = None, True  # a camera: no known length
    assert cfg.rate_schedule().scale(100_000) == pytest.approx(0.25)


def lr(rig) -> float:
    return rig.worker.layer.optimizer.param_groups[0]["lr"]


def test_a_restarted_layer_goes_on_down_its_schedule_not_back_to_the_full_rate(start_layer, tmp_path):
    schedule = RateSchedule(half_life=ROWS, floor=0.1)  # halving with every message of ROWS rows
    first = start_layer(checkpoint_dir=str(tmp_path), checkpoint_every_s=3600, lr_schedule=schedule)
    for seq in range(3):  # steps at 0, ROWS and 2·ROWS frames learned: scales 1, 0.5, 0.25
        send(first.input, frames(seq=seq))
        receive(first.output)
    eventually(lambda: first.worker.updates == 3, what="three steps")
    assert lr(first) == pytest.approx(LAYER.lr * 0.25)
    first.worker.checkpoints.save()
    assert checkpoint_config(layer_path(str(tmp_path), 1))[1]["frames_learned"] == 2 * ROWS  # before the last step

    again = start_layer(checkpoint_dir=str(tmp_path), checkpoint_every_s=3600, lr_schedule=schedule)
    send(again.input, frames(seq=3))
    receive(again.output)
    eventually(lambda: again.worker.updates == 1, what="a step after the restart")
    assert lr(again) == pytest.approx(LAYER.lr * 0.25)  # from 2·ROWS learned before it, not from 0 (which would be 1)
