"""The sink's online probe on unsupervised streams (workers/online_probe.py): standardised features, replay, folding."""

from __future__ import annotations

import torch

from ffstream.ff import LinearReadout
from ffstream.offline.readout_store import load_readout, save_readout
from ffstream.workers.online_probe import OnlineProbe


def video_like_stream(frames: int = 3000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Features as pooled conv maps give them: far from zero, varying little (mean 1.2, class signal 0.1), in runs of
    20-40 frames of one class, as the shapes clip shows its objects. (frames, 16) float, (frames,) labels in 0..3."""
    gen = torch.Generator().manual_seed(seed)
    labels = []
    while len(labels) < frames:
        labels += [int(torch.randint(0, 4, (1,), generator=gen))] * int(torch.randint(20, 41, (1,), generator=gen))
    y = torch.tensor(labels[:frames])
    centres = 0.1 * torch.randn(4, 16, generator=gen)
    x = 1.2 + centres[y] + 0.05 * torch.randn(frames, 16, generator=gen)
    return x, y


def progressive(head, x: torch.Tensor, y: torch.Tensor, batch: int = 16) -> float:
    """Predict, then learn, batch by batch in stream order, as the sink does: the share predicted right."""
    right = 0
    for s in range(0, len(x), batch):
        right += int((head.predict(x[s : s + batch]) == y[s : s + batch]).sum())
        head.learn(x[s : s + batch], y[s : s + batch])
    return right / len(x)


def test_online_probe_learns_an_in_order_stream_that_the_plain_head_does_not():
    x, y = video_like_stream()
    plain = progressive(LinearReadout(16, 4, lr=3e-3), x, y)
    probe = progressive(OnlineProbe(16, 4, lr=3e-3), x, y)
    assert probe > 0.8 and probe > plain + 0.2, (probe, plain)


def test_the_folded_head_reads_raw_features_as_the_probe_does_and_unfolds_exactly(tmp_path):
    x, y = video_like_stream(2000)
    probe = OnlineProbe(16, 4)
    progressive(probe, x, y)
    folded = probe.folded()
    scaled = (x - probe.mean) / (probe.var.sqrt() + 1e-6)
    with torch.no_grad():
        assert torch.allclose(folded(x), probe.head(scaled), atol=1e-4)
    save_readout(tmp_path, folded, [0, 1], 4, probe.saved_state())
    readout, layers = load_readout(tmp_path)  # a reader that knows nothing of the statistics gets the folded head
    assert layers == [0, 1] and torch.equal(readout.linear.weight, folded.linear.weight)
    _, _, probe_state = load_readout(tmp_path, with_probe_state=True)
    resumed = OnlineProbe(16, 4, seed=5)
    resumed.unfold(readout, probe_state)
    with torch.no_grad():
        assert torch.allclose(resumed.head(scaled), probe.head(scaled), atol=1e-4)
    assert torch.equal(resumed.predict(x), probe.predict(x))
    # the reservoir comes back too: a resumed probe's steps mix in the clips seen before the restart
    assert resumed.held == probe.held > 0 and resumed.seen == probe.seen
    assert torch.equal(resumed.rows[:resumed.held], probe.rows[:probe.held])
    assert torch.equal(resumed.labels[:resumed.held], probe.labels[:probe.held])


def test_a_saved_reservoir_of_another_width_is_not_loaded(tmp_path):
    x, y = video_like_stream(256)
    probe = OnlineProbe(16, 4)
    progressive(probe, x, y)
    state = probe.saved_state()
    state["replay.rows"] = state["replay.rows"][:, :8]  # features of another width: the statistics alone are used
    resumed = OnlineProbe(16, 4)
    resumed.unfold(probe.folded(), state)
    assert resumed.held == 0 and torch.equal(resumed.mean, probe.mean)


def test_online_probe_does_not_change_the_features_it_is_given():
    x, y = video_like_stream(64)
    before = x.clone()
    probe = OnlineProbe(16, 4)
    probe.predict(x)
    probe.learn(x, y)
    assert torch.equal(x, before)


def test_the_reservoir_of_a_wide_readout_is_bounded():
    """A grid readout of three conv layers is thousands of features wide: the reservoir keeps fewer rows, not more bytes."""
    from ffstream.workers.online_probe import REPLAY_VALUES

    assert OnlineProbe(192, 4).rows.shape == (4096, 192)
    wide = OnlineProbe(16_660, 10)
    assert wide.rows.numel() <= REPLAY_VALUES and len(wide.rows) >= 1000
