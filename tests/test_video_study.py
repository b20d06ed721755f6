"""SCFF pairs, the past-frame reservoir, moving Fashion-MNIST and the video study's probe: fast checks of the maths."""

import os
from dataclasses import replace

import numpy as np
import pytest
import torch

from ffstream.bench.video_study import (StudyConfig, aligned, centroid, make_stack, pooled_features, probe, step_inputs,
                                        study_from_recipe, train_ff, visiting_order)
from ffstream.ff.pairs import Reservoir, cross_pairs, self_pairs, successor_pairs
from ffstream.sources.idx import FASHION_MNIST_DIR


def test_pairs_stack_frames_along_channels():
    frames = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 2, 3, 3).contiguous()  # frame t is all t
    pos = successor_pairs(frames)
    assert pos.shape == (3, 4, 3, 3)
    assert torch.equal(pos[:, 0, 0, 0], torch.tensor([0.0, 1, 2])) and torch.equal(pos[:, 2, 0, 0], torch.tensor([1.0, 2, 3]))
    assert torch.equal(self_pairs(frames)[:, :2], self_pairs(frames)[:, 2:])
    assert torch.equal(cross_pairs(frames, frames.flip(0))[:, 2, 0, 0], torch.tensor([3.0, 2, 1, 0]))
    with pytest.raises(ValueError):
        cross_pairs(frames, frames[:2])


def test_reservoir_never_draws_recent_frames_and_wraps():
    r = Reservoir(capacity=20, seed=0, min_age=5)
    for t in range(0, 50, 5):  # frames 0..49, each all t
        r.add(torch.arange(t, t + 5.0).view(5, 1, 1, 1))
    drawn = r.sample(1000).flatten()
    assert drawn.min() >= 50 - 20 and drawn.max() <= 49 - 5  # within the ring, never the 5 newest
    assert len(drawn.unique()) == 15


def test_reservoir_is_seeded():
    def draws(seed):
        r = Reservoir(10, seed=seed, min_age=2)
        r.add(torch.arange(10.0).view(10, 1))
        return r.sample(50)
    assert torch.equal(draws(1), draws(1)) and not torch.equal(draws(1), draws(2))


def test_step_inputs_shapes_per_kind():
    gen = torch.Generator().manual_seed(0)
    x, succ = torch.rand(8, 1, 6, 6), torch.rand(8, 1, 6, 6)
    r = Reservoir(32, min_age=4)
    r.add(torch.rand(32, 1, 6, 6))
    for kind, channels in (("hybrid", 1), ("temporal", 2), ("scff", 2)):
        pos, neg = step_inputs(StudyConfig(negatives=kind), x, succ, r, gen)
        assert pos.shape == neg.shape == (8, channels, 6, 6), kind
    pos, neg = step_inputs(StudyConfig(negatives="scff"), x, succ, r, gen)
    assert torch.equal(pos[:, 1:], succ) and torch.equal(neg[:, :1], x)


def test_pooled_features_ignore_position():
    h = torch.zeros(2, 3, 8, 8)
    h[0, :, 1, 1] = torch.tensor([1.0, 2, 3])
    h[1, :, 6, 5] = torch.tensor([1.0, 2, 3])
    for readout in ("norm", "raw"):
        f = pooled_features(h, readout)
        assert f.shape == (2, 6) and torch.allclose(f[0], f[1])


def test_probe_separates_separable_classes():
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (300,), generator=gen)
    x = torch.nn.functional.one_hot(y, 3).float() * 3 + torch.randn(300, 3, generator=gen) * 0.3
    assert probe(x[:200], y[:200], x[200:], y[200:]) > 0.95


def test_in_order_learning_is_seeded_and_moves_weights():
    video = torch.rand(160, 1, 12, 12)
    cfg = StudyConfig(layers="conv:4x3x3/2", negatives="scff", reservoir=100)
    a, b = make_stack(cfg, (1, 12, 12)), make_stack(cfg, (1, 12, 12))
    before = a.layers[0].weight.detach().clone()
    train_ff(a, cfg, video)
    train_ff(b, cfg, video)
    assert torch.equal(a.layers[0].weight, b.layers[0].weight) and not torch.equal(a.layers[0].weight, before)


@pytest.mark.skipif(not os.path.exists(FASHION_MNIST_DIR), reason="needs dataset-fashion-mnist")
def test_moving_fashion_is_seeded_and_garments_stay_inside():
    from ffstream.sources.moving_fashion import moving_fashion

    frames, labels = moving_fashion(300, "test", seed=1, canvas=40)
    again, _ = moving_fashion(300, "test", seed=1, canvas=40)
    assert frames.shape == (300, 40, 40) and frames.dtype == np.uint8 and labels.shape == (300,)
    assert np.array_equal(frames, again) and not np.array_equal(frames, moving_fashion(300, "test", seed=2, canvas=40)[0])
    runs = np.flatnonzero(np.diff(labels)) + 1  # where the label changes: a new garment (or the same class again)
    assert 1 <= len(runs) <= 300 // 20  # clips of 20-40 frames
    moved = np.abs(frames[1:].astype(int) - frames[:-1]).sum(axis=(1, 2))
    assert (moved > 0).mean() > 0.9  # garments move from frame to frame


def test_scff_variants_pair_as_configured():
    gen = torch.Generator().manual_seed(0)
    x, succ = torch.rand(8, 1, 6, 6), torch.rand(8, 1, 6, 6)
    r = Reservoir(32, min_age=4)
    r.add(torch.rand(32, 1, 6, 6))
    pos, _ = step_inputs(StudyConfig(positive="self"), x, succ, r, gen)
    assert torch.equal(pos, torch.cat([x, x], dim=1))
    pos, neg = step_inputs(StudyConfig(pairing="sum"), x, succ, r, gen)
    assert pos.shape == neg.shape == (8, 1, 6, 6) and torch.allclose(pos, (x + succ) / 2)
    assert make_stack(StudyConfig(layers="conv:4x3x3/2", pairing="sum"), (1, 6, 6)).layers[0].cfg.in_shape == (1, 6, 6)


def test_aligned_partner_has_the_frames_centroid():
    frames, partners = torch.zeros(2, 1, 12, 12), torch.zeros(2, 1, 12, 12)
    frames[0, 0, 2:4, 3:5], frames[1, 0, 8:10, 7:9] = 1, 1
    partners[0, 0, 6:8, 6:8], partners[1, 0, 1:3, 1:3] = 1, 1
    moved = aligned(partners, frames)
    assert torch.allclose(centroid(moved), centroid(frames)) and not torch.allclose(centroid(partners), centroid(frames))
    assert torch.equal(moved.sum(dim=(1, 2, 3)), partners.sum(dim=(1, 2, 3)))  # moved, not cut


def test_visiting_orders_visit_every_frame_once():
    gen = torch.Generator().manual_seed(0)
    blocks = visiting_order(StudyConfig(shuffled=True, block=4), 16, gen)
    assert sorted(blocks.tolist()) == list(range(16)) and not torch.equal(blocks, torch.arange(16))
    assert all(torch.equal(b, torch.arange(b[0], b[0] + 4)) for b in blocks.split(4))  # each block in order
    cursors = visiting_order(StudyConfig(cursors=4), 16, gen)
    assert cursors[:4].tolist() == [0, 4, 8, 12] and cursors[4:8].tolist() == [1, 5, 9, 13]


def test_study_takes_the_video_recipes_learning():
    from ffstream.config.recipes import read

    model = read("video").data["model"]
    cfg = study_from_recipe("video", seed=3)
    assert cfg.layers == ",".join(model["layers"]) and cfg.lr == model["lr"] and cfg.threshold == model["threshold"]
    assert cfg.negatives == read("video").data["sleep"]["negatives"] and cfg.seed == 3


def test_recurrent_video_study_learns_and_keeps_stream_order():
    from ffstream.bench.video_recurrent import as_rows, features, learn, make_stack as recurrent_stack

    video = torch.rand(96, 48 * 48) - 0.5
    assert torch.equal(as_rows(video, 4).transpose(0, 1).reshape(96, -1), video)  # rows are evenly spaced stretches
    stack = recurrent_stack(8, 2, 48 * 48, 1e-3, seed=0)
    before = stack.layers[0].top_down.detach().clone()  # (8, 8): what layer 1 hears from layer 2
    learn(stack, video, cursors=4, seed=0)
    assert not torch.equal(before, stack.layers[0].top_down.detach())  # the top-down weights learned
    on, off = features(stack, video, 4, True), features(stack, video, 4, False)
    assert on.shape == off.shape == (96, 16) and not torch.allclose(on, off)  # the layer above changes what is read


class _Recorder:
    """Stands in for an FFStack: keeps what train_ff hands it."""

    def __init__(self):
        self.positives: list[torch.Tensor] = []

    def learn_interleaved(self, x_pos, x_neg):
        self.positives.append(x_pos)


def test_gap_pairs_each_frame_with_the_one_gap_frames_later_and_passes_repeat():
    video = torch.arange(200, dtype=torch.float32).view(200, 1, 1, 1).expand(200, 1, 2, 2).contiguous()  # frame t is all t
    cfg = StudyConfig(negatives="scff", reservoir=100, gap=3)
    one = _Recorder()
    learned = train_ff(one, cfg, video)["frames"]
    pos = torch.cat(one.positives).view(-1, 2, 2, 2)[:, :, 0, 0]  # (N, 2): the pair's (first, second) frame index
    assert len(pos) == learned > 0 and torch.equal(pos[:, 1] - pos[:, 0], torch.full((len(pos),), 3.0))
    two = _Recorder()
    assert train_ff(two, replace(cfg, passes=2), video)["frames"] > 2 * learned  # the reservoir is warm for pass 2
    assert torch.equal(torch.cat(two.positives)[: len(pos)], torch.cat(one.positives))  # pass 1 as before
