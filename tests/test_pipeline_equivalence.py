"""The local boundary (STYLE.md 2): N layer workers over sockets equal the same layers stacked in one process.

Real worker processes (`ffstream worker layer`) over ipc:// sockets; the test
plays source and sink. Sleep is off, so only positive updates happen, in the
same order in both cases.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zmq

from ffstream.config import ModelConfig, RunConfig, SleepConfig, StreamConfig
from ffstream.ff import FFStack, checkpoint, embed_label
from ffstream.net import wire
from tests.processes import ipc_topology, start_worker, stop_all, write_config
from tests.rig import recv_multipart

LAYERS = (64, 48, 32)
BATCHES = 12
BATCH = 16
NUM_CLASSES = 4


def seeded_batches(seed: int = 5):
    rng = np.random.default_rng(seed)
    for seq in range(BATCHES):
        frames = rng.random((BATCH, 1, 8, 8), dtype=np.float32)
        labels = rng.integers(0, NUM_CLASSES, BATCH).tolist()
        yield seq, frames, labels


@pytest.mark.parametrize("optimizer,label_relative", [("adam", False), ("sgd", False), ("adam", True)])
def test_worker_pipeline_equals_in_process_stack(tmp_path, socket, optimizer, label_relative):
    cfg = RunConfig(
        stream=StreamConfig(size=(8, 8), batch=BATCH, task="supervised", num_classes=NUM_CLASSES, seed=3),
        model=ModelConfig(layers=LAYERS, optimizer=optimizer, lr=0.01, max_batch=BATCH, label_relative=label_relative),
        sleep=SleepConfig(enabled=False),
        topology=ipc_topology(tmp_path, len(LAYERS)),
        checkpoint_dir=str(tmp_path / "ck"),
    )
    config_path = write_config(cfg, tmp_path / "run.json")
    source = socket(zmq.PUSH)
    source.connect(cfg.topology.layer_inputs[0])
    sink = socket(zmq.PULL)
    sink.bind(cfg.topology.sink_input)
    procs = [start_worker("layer", config_path, tmp_path, index=i) for i in range(1, len(LAYERS) + 1)]
    try:
        for seq, frames, labels in seeded_batches():
            source.send_multipart(wire.encode(wire.Message("frames", frames, seq=seq, label=labels)))
        source.send_multipart(wire.encode(wire.Message("control", np.zeros(0, np.float32), extra={"command": "end"})))
        received = [wire.decode(recv_multipart(sink, timeout=120)) for _ in range(BATCHES + 1)]
        codes = stop_all(procs)  # SIGTERM: each layer drains and checkpoints
    finally:
        stop_all(procs)
    assert codes == [0] * len(LAYERS), [open(tmp_path / f"layer{i}.log").read()[-2000:] for i in range(1, 4)]
    assert [m.seq for m in received[:-1]] == list(range(BATCHES))
    assert received[-1].kind == "control"

    reference = FFStack(cfg.layer_configs())
    for seq, frames, labels in seeded_batches():
        x = embed_label(torch.from_numpy(frames).flatten(1), torch.tensor(labels), NUM_CLASSES, cfg.model.label_scale, label_relative)
        reference.learn_positive(x)
    for i, ref_layer in enumerate(reference.layers, start=1):
        tensors, meta = checkpoint.read_metadata(checkpoint.layer_path(cfg.checkpoint_dir, i))
        assert int(meta["version"]) == BATCHES
        extra = checkpoint.checkpoint_config(checkpoint.layer_path(cfg.checkpoint_dir, i))[1]
        assert extra["label_relative"] is label_relative, "the checkpoint says how labels were written, for eval"
        torch.testing.assert_close(tensors["weight"], ref_layer.weight.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(tensors["bias"], ref_layer.bias.detach(), rtol=1e-5, atol=1e-6)
    # The goodness trace carries every layer's per-frame goodness to the sink.
    assert all(len(m.trace) == len(LAYERS) and len(m.trace[0]) == BATCH for m in received[:-1])
