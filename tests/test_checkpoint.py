"""Layer checkpoints (ffstream/ff/checkpoint.py): what is saved comes back, and what is not ours is refused in one line."""

from __future__ import annotations

import time

import pytest
import torch
from safetensors.torch import save_file

from ffstream.ff import FFLayer, LayerConfig
from ffstream.ff.checkpoint import CheckpointError, checkpoint_config, load_layer, read_metadata, save_layer
from ffstream.workers.layer.weights import BackgroundCheckpoint, remember


def trained_layer(seed: int = 0) -> FFLayer:
    torch.manual_seed(seed)
    layer = FFLayer(LayerConfig(12, 6))
    x = torch.randn(8, 12)
    layer.learn(x)  # one positive step, so that there is optimiser state (and a version) to save
    return layer


def test_save_then_load_gives_back_weights_optimiser_and_metadata(tmp_path):
    layer, path = trained_layer(), tmp_path / "layer1.safetensors"
    save_layer(path, layer, {"frame_shape": [1, 3, 4]})
    fresh = FFLayer(LayerConfig(12, 6))
    assert load_layer(path, fresh) == layer.version == 1
    for name, tensor in layer.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[name], tensor, rtol=0, atol=0)
    saved, restored = layer.optimizer.state_dict()["state"], fresh.optimizer.state_dict()["state"]
    assert saved.keys() == restored.keys() and saved
    for index in saved:
        for key in saved[index]:
            torch.testing.assert_close(torch.as_tensor(restored[index][key]), torch.as_tensor(saved[index][key]), rtol=0, atol=0)
    cfg, extra = checkpoint_config(path)
    assert cfg == layer.cfg and extra == {"frame_shape": [1, 3, 4]}


@pytest.mark.parametrize("content, message", [
    (b"garbage", "is not a readable ffstream checkpoint"),
    ((1000).to_bytes(8, "little") + b"{}", "is not a readable ffstream checkpoint"),  # a header longer than the file
    (None, "no checkpoint at"),
])
def test_unreadable_files_are_refused_in_one_line(tmp_path, content, message):
    path = tmp_path / "layer1.safetensors"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as refused:
        read_metadata(path)
    assert "\n" not in str(refused.value)


def test_a_safetensors_file_of_someone_else_is_refused(tmp_path):
    path = tmp_path / "layer1.safetensors"
    save_file({"weight": torch.ones(2, 2)}, str(path))  # readable, but no metadata at all
    with pytest.raises(CheckpointError, match="is not an ffstream ffstream-layer-1 file"):
        read_metadata(path)
    save_file({"weight": torch.ones(2, 2)}, str(path), metadata={"format": "someone-else-1"})
    with pytest.raises(CheckpointError, match="format 'someone-else-1'"):
        read_metadata(path)


def test_a_background_checkpoint_holds_the_copy_it_was_given_not_what_the_layer_learned_after(tmp_path):
    layer, path = trained_layer(), tmp_path / "layer1.safetensors"
    good = remember(layer, None)  # what a barrier's checkpoint writes: the layer's state at the barrier
    at_barrier = {k: v.clone() for k, v in layer.state_dict().items()}
    writer = BackgroundCheckpoint()
    writer.start(path, layer, good, {"delivery": {"upto": 7}})
    layer.learn(torch.randn(8, 12))  # the layer steps on while the checkpoint is written
    writer.wait()
    fresh = FFLayer(LayerConfig(12, 6))
    assert load_layer(path, fresh) == 1 and layer.version == 2
    for name, tensor in at_barrier.items():
        torch.testing.assert_close(fresh.state_dict()[name], tensor, rtol=0, atol=0)
    assert checkpoint_config(path)[1] == {"delivery": {"upto": 7}}


def test_a_background_checkpoint_that_fails_raises_in_the_worker_not_in_its_thread(tmp_path):
    layer = trained_layer()
    (tmp_path / "file").write_text("a file, not a directory")
    writer = BackgroundCheckpoint()
    writer.start(tmp_path / "file" / "layer1.safetensors", layer, remember(layer, None), {})
    deadline = time.monotonic() + 30
    with pytest.raises(OSError):
        while not writer.finished():  # the worker's loop asks this before passing the barrier on
            assert time.monotonic() < deadline, "the failing write never finished"
    assert writer.finished()  # the error is raised once


def test_rows_held_unstepped_at_a_barrier_come_back_due_and_are_no_weights(tmp_path):
    """A barrier's checkpoint holds the positives still waiting for their negatives instead of stepping them first
    (workers/layer/checkpoints.py): they load back into a new pairing, due at once, and load_layer ignores them."""
    from ffstream.ff.checkpoint import held_tensors, save_layer_state
    from ffstream.workers.pairing import Pairing

    layer, path = trained_layer(), tmp_path / "layer1.safetensors"
    pairing = Pairing()
    first, second = torch.randn(4, 12), torch.randn(2, 12)
    pairing.add_positive([7], first, torch.tensor([1, 2, 3, 0]))
    pairing.add_positive([8, 9], second)
    held, seqs = pairing.held_state()
    save_layer_state(path, layer.cfg, *remember(layer, None), layer.version, {"held": seqs}, held)
    assert load_layer(path, FFLayer(LayerConfig(12, 6))) == layer.version  # strict load: the held rows are no weights
    back = Pairing()
    assert back.restore_held(held_tensors(path), checkpoint_config(path)[1]["held"], torch.device("cpu")) == 2
    assert [sorted(h.seqs) for h in back.held] == [[7], [8, 9]]
    assert torch.equal(back.held[0].inputs, first) and torch.equal(back.held[0].labels, torch.tensor([1, 2, 3, 0]))
    assert torch.equal(back.held[1].inputs, second) and back.held[1].labels is None
    late, _ = back.expired()  # their negatives went to the process that held them: they step alone at once
    assert len(late) == 2 and not back.held


def test_a_barrier_goes_on_only_once_its_checkpoint_is_on_disk(tmp_path):
    """The sink acknowledges a barrier once every layer passed it, and the source then commits there: a layer that
    passed it before its checkpoint was written, then was killed, resumed behind the commit, and the source rewound to
    that commit for ever (seen in CI). Each barrier reply must find its own checkpoint's gate already on disk."""
    import logging
    from collections import Counter

    import numpy as np

    from ffstream.net import wire
    from ffstream.workers.layer.checkpoints import LayerCheckpoints
    from ffstream.workers.layer.delivery import LayerDelivery
    from ffstream.ff import RateSchedule
    from ffstream.workers.layer.weights import LastGood

    layer = trained_layer()
    delivery = LayerDelivery("layer1")
    path = tmp_path / "layer1.safetensors"
    found_on_disk = []  # at each barrier's send: the gate's upto in the checkpoint on disk

    def send_up(msg: wire.Message) -> bool:
        found_on_disk.append(checkpoint_config(path)[1]["delivery"]["upto"] if path.exists() else None)
        return True

    checkpoints = LayerCheckpoints(str(tmp_path), 1, layer, LastGood(layer, RateSchedule(), logging.getLogger("test")), delivery,
                                   {}, send_up, Counter())
    for seq in range(3):
        delivery.admit(wire.Message("learn", np.zeros((2, 12), np.float32), seq=seq, extra={"pass_id": "p"}))
        barrier = wire.Message("barrier", np.zeros(0, np.float32), seq=seq, extra={"barrier": seq + 1, "pass_id": "p"})
        checkpoints.barrier(delivery.barrier_reply(barrier, 1), None)
    checkpoints.settle()
    assert found_on_disk == [0, 1, 2]
