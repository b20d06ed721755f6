"""Divergence: a step that leaves non-finite weights is undone, at half the learning rate, and said so."""

from __future__ import annotations

import logging
import math

import numpy as np

from tests.processes import eventually
from tests.rig import frames, receive, send, weights_of


def test_non_finite_weights_roll_back_and_halve_the_learning_rate(start_layer, caplog):
    rig = start_layer()
    good = weights_of(rig.worker.layer)  # the state remembered at start (no checkpoint dir: in memory)
    lr = rig.worker.layer.optimizer.param_groups[0]["lr"]
    with caplog.at_level(logging.WARNING, logger="ffstream.layer1"):
        with __import__("torch").no_grad():
            rig.worker.layer.weight[0, 0] = math.nan  # the worker is idle, waiting on its sockets
        send(rig.input, frames(seq=1))  # its activity is NaN: dropped and counted, not sent on
        eventually(lambda: rig.worker.last_good.rollbacks == 1, what="a rollback")
    m = rig.worker.metrics()
    assert (m["rollbacks"], m["lr_factor"], m["updates"], m["weights_version"], m["dropped"]) == (1, 0.5, 0, 0, 1), m
    for name, value in weights_of(rig.worker.layer).items():
        np.testing.assert_array_equal(value, good[name])
    assert rig.worker.layer.optimizer.param_groups[0]["lr"] == lr / 2
    assert any("rolled back to version 0" in r.getMessage() for r in caplog.records), caplog.text

    # Learning goes on from the good weights.
    send(rig.input, frames(seq=2))
    receive(rig.output)
    eventually(lambda: rig.worker.updates == 1, what="a step after the rollback")
    assert all(np.isfinite(v).all() for v in weights_of(rig.worker.layer).values())
    assert rig.worker.metrics()["rollbacks"] == 1


def test_rollback_goes_to_the_last_checkpoint(start_layer, tmp_path):
    rig = start_layer(checkpoint_dir=str(tmp_path), checkpoint_every_s=3600)
    send(rig.input, frames(seq=1))
    receive(rig.output)
    eventually(lambda: rig.worker.updates == 1, what="one step")
    rig.worker.checkpoints.save()  # the checkpoint now holds version 1
    saved = weights_of(rig.worker.layer)
    with __import__("torch").no_grad():
        rig.worker.layer.bias[0] = math.inf
    send(rig.input, frames(seq=2))
    eventually(lambda: rig.worker.last_good.rollbacks == 1, what="a rollback")
    assert rig.worker.layer.version == 1
    for name, value in weights_of(rig.worker.layer).items():
        np.testing.assert_array_equal(value, saved[name])
