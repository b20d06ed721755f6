"""The object-centred readout reads the map around the garment, wherever it is; the supervised ceiling learns."""

import torch

from ffstream.bench.video_ceiling import centred_features, centroids, pixel_crops, stack_forward, train_supervised, window
from ffstream.bench.video_study import make_stack, study_from_recipe
from ffstream.sources.moving_fashion import GARMENT


def garment_at(row: int, col: int, size: int = 48) -> torch.Tensor:
    """A (1, 1, size, size) frame: a 28×28 patch, bright in its top half, with its top-left corner at (row, col)."""
    x = torch.zeros(1, 1, size, size)
    x[0, 0, row : row + GARMENT // 2, col : col + GARMENT] = 1.0
    x[0, 0, row + GARMENT // 2 : row + GARMENT, col : col + GARMENT] = 0.3
    return x


def test_pixel_crop_is_the_same_wherever_the_garment_sits():
    a, b = pixel_crops(garment_at(0, 0)), pixel_crops(garment_at(17, 9))
    assert a.shape == (1, GARMENT * GARMENT)
    assert torch.allclose(a, b, atol=1e-5)
    assert a.max() == 1.0 and a.min() < 0.5  # the window holds both halves


def test_window_samples_around_the_given_centre():
    maps = torch.zeros(1, 1, 24, 24)
    maps[0, 0, 15, 5] = 1.0  # a map at half the frame's resolution: cell (15, 5) covers frame pixels 30-31, 10-11
    win = window(maps, torch.tensor([[30.5, 10.5]]), (48, 48), 3)
    assert win.shape == (1, 1, 3, 3)
    assert win[0, 0, 1, 1] > 0.9 and win.sum() < 1.1


def test_centred_features_ignore_position_unlike_the_map():
    stack = make_stack(study_from_recipe("video", negatives="hybrid"), (1, 48, 48))
    frames = torch.cat([garment_at(4, 4), garment_at(16, 12)])  # shifts of whole layer-2 cells (stride 4), off the border
    hs = stack.activities(frames.flatten(1))
    centres = centroids(frames)
    assert torch.allclose(centres[1] - centres[0], torch.tensor([12.0, 8.0]))
    f = centred_features(hs, centres, (48, 48), grid=3)
    assert f.shape == (2, sum(h.shape[1] * (2 + 9) for h in hs))
    assert (f[0] - f[1]).abs().mean() < 0.02 * f[0].abs().mean()  # conv maps move with the garment
    assert (hs[0][0] - hs[0][1]).abs().mean() > 0.5 * hs[0][0].abs().mean()


def test_supervised_ceiling_moves_the_layers_and_lowers_the_loss():
    cfg = study_from_recipe("video", negatives="hybrid", layers="conv:8x5x5/2,conv:16x3x3/2")
    stack = make_stack(cfg, (1, 24, 24))
    before = stack.layers[0].weight.detach().clone()
    video = torch.cat([garment_at(0, 0, 24)[:, :, :24, :24] * 0 + torch.rand(1, 1, 24, 24) for _ in range(64)])
    labels = (video.mean(dim=(1, 2, 3)) > video.mean()).long()
    video = video + labels.view(-1, 1, 1, 1) * torch.linspace(0, 1, 24).view(1, 1, 1, 24)
    first = train_supervised(stack, cfg, video, labels, passes=1, batch=16)
    last = train_supervised(stack, cfg, video, labels, passes=10, batch=16)
    assert not torch.equal(before, stack.layers[0].weight)
    assert last["train_loss"] < first["train_loss"]
    assert len(stack_forward(stack, video[:2].flatten(1))) == 2
