"""The recurrent FF layer and stack (`ffstream/ff/recurrent.py`): hand values and the layer contract."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ffstream.ff import LayerConfig, rms_normalize
from ffstream.ff.recurrent import (
    RecurrentConfig,
    RecurrentFFLayer,
    RecurrentStack,
    top_down_widths,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def layer_cfg(**kw) -> LayerConfig:
    base = dict(in_features=6, width=5, seed=3, optimizer="sgd", lr=0.1, momentum=0.0, peer_weight=0.0)
    base.update(kw)
    return LayerConfig(**base)


def packed(layer: RecurrentFFLayer, seed: int, rows: int = 4) -> torch.Tensor:
    g = gen(seed)
    return layer.pack(torch.randn(rows, 6, generator=g), torch.randn(rows, layer.top_down_features, generator=g), torch.rand(rows, 5, generator=g))


def test_forward_is_damped_sum_of_both_directions():
    layer = RecurrentFFLayer(layer_cfg(), top_down_features=3)
    x, z, old = torch.randn(2, 6, generator=gen(0)), torch.randn(2, 3, generator=gen(1)), torch.rand(2, 5, generator=gen(2))
    with torch.no_grad():
        layer.bias.fill_(0.1)
        h = layer(layer.pack(x, z, old))
    x_hat = x / torch.sqrt((x * x).mean(1, keepdim=True) + 1e-8)
    z_hat = z / torch.sqrt((z * z).mean(1, keepdim=True) + 1e-8)
    computed = torch.clamp(x_hat @ layer.weight.T + z_hat @ layer.top_down.T + 0.1, min=0)
    assert torch.allclose(h, 0.3 * old + 0.7 * computed, atol=1e-6)


def test_no_feedback_is_a_dense_layer_plus_damping():
    """An all-zero top-down input (nothing heard from above yet) adds nothing."""
    layer = RecurrentFFLayer(layer_cfg(), top_down_features=3)
    x = torch.randn(3, 6, generator=gen(0))
    with torch.no_grad():
        h = layer(layer.pack(x, torch.zeros(3, 3), torch.zeros(3, 5)))
        dense = torch.relu(torch.nn.functional.linear(rms_normalize(x), layer.weight, layer.bias))
    assert torch.allclose(h, 0.7 * dense)


def test_top_down_changes_the_output_and_learns():
    layer = RecurrentFFLayer(layer_cfg(), top_down_features=3)
    x = torch.randn(3, 6, generator=gen(0))
    with torch.no_grad():
        without = layer(layer.pack(x, torch.zeros(3, 3), torch.zeros(3, 5)))
        with_z = layer(layer.pack(x, torch.randn(3, 3, generator=gen(1)), torch.zeros(3, 5)))
    assert not torch.allclose(without, with_z)
    before = layer.top_down.detach().clone()
    layer.learn(packed(layer, 4))
    assert not torch.equal(before, layer.top_down), "U must take its own step"


def test_old_state_carries_no_gradient():
    layer = RecurrentFFLayer(layer_cfg(), top_down_features=2)
    rows = packed(layer, 0)
    grads, _, _ = layer.local_gradients(rows, positive=True)
    assert [tuple(g.shape) for g in grads] == [(5, 6), (5,), (5, 2)]
    again, _, _ = layer.local_gradients(rows.clone(), positive=True)
    assert all(torch.equal(a, b) for a, b in zip(grads, again))


def test_weights_round_trip_through_a_snapshot():
    a = RecurrentFFLayer(layer_cfg(), top_down_features=2)
    a.learn(packed(a, 0))
    b = RecurrentFFLayer(layer_cfg(seed=9), top_down_features=2)
    b.load_weights(a.weights(), version=a.version)
    rows = packed(a, 1)
    with torch.no_grad():
        assert torch.equal(a(rows), b(rows))
    assert set(a.weights()) == {"weight", "bias", "top_down"}


def test_top_layer_hears_the_label_or_nothing():
    cfgs = [LayerConfig(6, 5, seed=0), LayerConfig(5, 4, seed=1)]
    assert top_down_widths(cfgs, 10) == [4, 10]
    assert top_down_widths(cfgs, None) == [4, 0]
    stack = RecurrentStack(cfgs, num_classes=3, label_scale=2.0)
    assert torch.equal(stack.label_input(torch.tensor([2, 0]), 2), torch.tensor([[0.0, 0, 2], [2, 0, 0]]))
    assert torch.allclose(stack.label_input(None, 1), torch.full((1, 3), 2 / 3))
    assert RecurrentStack(cfgs).label_input(None, 2).shape == (2, 0)


def test_step_uses_below_now_and_above_one_step_late():
    cfgs = [LayerConfig(6, 5, seed=0), LayerConfig(5, 4, seed=1)]
    stack = RecurrentStack(cfgs, num_classes=None, recurrent=RecurrentConfig(iterations=3, window=(2, 3)))
    x = torch.randn(2, 6, generator=gen(0))
    inputs, history = stack.run(x)
    assert len(inputs) == len(history) == 3
    first, second = stack.layers
    # step 0: nothing from above, no old state; step 1: layer 1 hears layer 2's state of step 0
    assert torch.equal(inputs[0][0], first.pack(x, torch.zeros(2, 4), torch.zeros(2, 5)))
    assert torch.equal(inputs[1][0], first.pack(x, history[0][1], history[0][0]))
    assert torch.equal(inputs[1][1], second.pack(rms_normalize(history[1][0]), torch.zeros(2, 0), history[0][1]))


def test_label_scores_sum_the_window_of_each_clamped_run():
    cfgs = [LayerConfig(6, 5, seed=0), LayerConfig(5, 4, seed=1)]
    stack = RecurrentStack(cfgs, num_classes=3, recurrent=RecurrentConfig(iterations=8, window=(2, 3)))
    x = torch.randn(2, 6, generator=gen(0))
    scores = stack.label_scores(x)
    _, history = stack.run(x, torch.tensor([1, 1]), 3)
    expected = sum(history[t][i].pow(2).sum(1) for t in (1, 2) for i in (0, 1))
    assert torch.allclose(scores[:, 1], expected)
    assert stack.one_pass_scores(x).shape == (2, 3)


def test_recurrent_config_rejects():
    with pytest.raises(ValueError, match="window"):
        RecurrentConfig(iterations=4, window=(3, 5))
    with pytest.raises(ValueError, match="iterations"):
        RecurrentConfig(iterations=0, window=(1, 1))
    with pytest.raises(ValueError, match="damping"):
        RecurrentConfig(damping=1.0)


def test_hard_labels_are_wrong_and_seeded():
    cfgs = [LayerConfig(6, 5, seed=0), LayerConfig(5, 4, seed=1)]
    stack = RecurrentStack(cfgs, num_classes=4)
    x, y = torch.randn(50, 6, generator=gen(0)), torch.randint(0, 4, (50,), generator=gen(1))
    for hard in (True, False):
        wrong = stack.wrong_labels(x, y, hard, gen(2))
        assert (wrong != y).all()
        assert torch.equal(wrong, stack.wrong_labels(x, y, hard, gen(2)))


# The contract of every layer kind (STYLE.md 9), here for the recurrent layer and stack.
def train(stack: RecurrentStack) -> None:
    x = torch.randn(4, 6, generator=gen(0))
    labels, wrong = torch.tensor([0, 1, 2, 0]), torch.tensor([1, 2, 0, 2])
    stack.learn_interleaved(x, stack.label_input(labels, 4), x, stack.label_input(wrong, 4))


def stack_cfgs(seed: int = 0) -> list[LayerConfig]:
    return [LayerConfig(6, 5, seed=seed, lr=0.01), LayerConfig(5, 4, seed=seed + 1, lr=0.01)]


def test_contract_does_not_mutate_inputs():
    layer = RecurrentFFLayer(layer_cfg(), top_down_features=2)
    rows = packed(layer, 0)
    rows0 = rows.clone()
    layer.add_negative_inputs(rows)
    layer.learn(rows)
    assert torch.equal(rows, rows0)
    stack = RecurrentStack(stack_cfgs(), num_classes=3, recurrent=RecurrentConfig(iterations=2, window=(1, 2)))
    x = torch.randn(4, 6, generator=gen(1))
    x0 = x.clone()
    stack.label_scores(x)
    train(stack)
    assert torch.equal(x, x0)


def test_contract_state_dict_round_trip():
    a = RecurrentStack(stack_cfgs(), num_classes=3, recurrent=RecurrentConfig(iterations=2, window=(1, 2)))
    train(a)
    b = RecurrentStack(stack_cfgs(seed=7), num_classes=3, recurrent=RecurrentConfig(iterations=2, window=(1, 2)))
    for la, lb in zip(a.layers, b.layers):
        lb.load_state_dict(la.state_dict())
        assert lb.version == la.version == 2
    x = torch.randn(3, 6, generator=gen(5))
    assert torch.equal(a.label_scores(x), b.label_scores(x))


def test_contract_seeded_runs_identical():
    a, b = (RecurrentStack(stack_cfgs(), num_classes=3, recurrent=RecurrentConfig(iterations=2, window=(1, 2))) for _ in range(2))
    train(a)
    train(b)
    assert all(torch.equal(p, q) for la, lb in zip(a.layers, b.layers) for p, q in zip(la.parameters(), lb.parameters()))
    other = RecurrentFFLayer(dataclasses.replace(layer_cfg(), seed=4), top_down_features=2)
    assert not torch.equal(other.top_down, RecurrentFFLayer(layer_cfg(), top_down_features=2).top_down)


def test_unsupervised_top_layer_learns_with_nothing_above():
    layer = RecurrentFFLayer(layer_cfg(), top_down_features=0)
    h, _ = layer.learn(layer.pack(torch.randn(3, 6, generator=gen(0)), torch.zeros(3, 0), torch.zeros(3, 5)))
    assert torch.isfinite(h).all() and layer.version == 1


def test_a_shared_context_row_gives_the_same_result_as_repeating_it():
    """Video: one top-down row for the whole batch is computed once; values and gradients are those of the full matrix."""
    layer = RecurrentFFLayer(layer_cfg(), top_down_features=3)
    x, z = torch.randn(4, 6, generator=gen(0)), torch.randn(1, 3, generator=gen(1))
    shared = layer.pack(x, z.expand(4, 3), torch.zeros(4, 5))
    g_shared, _, h_shared = layer.local_gradients(shared, positive=True)
    with torch.enable_grad():
        full = torch.relu(torch.nn.functional.linear(rms_normalize(x), layer.weight, layer.bias)
                          + rms_normalize(z.repeat(4, 1)) @ layer.top_down.T) * 0.7
        loss = torch.nn.functional.softplus(-(full.pow(2).sum(1) - 5)).mean()
        expected = torch.autograd.grad(loss, [layer.top_down])[0]
    assert torch.allclose(h_shared, full.detach(), atol=1e-6)
    assert torch.allclose(g_shared[2], expected, atol=1e-6)


def test_scoring_a_clip_with_and_without_top_down():
    """`ffstream score` on a recurrent stack: one step a frame; silencing the layer above changes the goodness."""
    from ffstream.offline.score import recurrent_goodness

    stack = RecurrentStack([LayerConfig(6, 5, seed=0), LayerConfig(5, 4, seed=1)])
    clip = torch.rand(7, 1, 2, 3, generator=gen(0)).numpy()
    with_top_down, without = recurrent_goodness(stack, clip), recurrent_goodness(stack, clip, top_down=False)
    assert with_top_down.shape == without.shape == (7, 2)
    # frame 0: nothing from above yet in either run; later frames hear layer 2's previous state
    assert np.allclose(with_top_down[0], without[0])
    assert not np.allclose(with_top_down[1:, 0], without[1:, 0])
    _, history = stack.run(torch.from_numpy(clip[:1]).flatten(1), iterations=1)
    assert np.isclose(with_top_down[0, 0], float(history[0][0].pow(2).sum()))


def test_a_paired_step_keeps_each_batch_own_context_row():
    """Video: positives and negatives each share one context row; the paired step runs them as two passes, so that
    neither loses the one-row product, and its gradient is still the sum of the two batches' gradients."""
    layer, twin = RecurrentFFLayer(layer_cfg(), top_down_features=3), RecurrentFFLayer(layer_cfg(), top_down_features=3)
    x = torch.randn(4, 6, generator=gen(0))
    z_pos, z_neg = torch.randn(1, 3, generator=gen(1)), torch.randn(1, 3, generator=gen(2))
    pos, neg = layer.pack(x, z_pos.expand(4, 3), torch.zeros(4, 5)), layer.pack(x.flip(0), z_neg.expand(4, 3), torch.zeros(4, 5))
    grads, _, _, h_pos, h_neg = layer.paired_gradients(pos, neg)
    neg_grads, _, want_neg = twin.local_gradients(neg, positive=False)
    pos_grads, _, want_pos = twin.wake(pos)
    assert [tuple(g.shape) for g in grads] == [(5, 6), (5,), (5, 3)]
    for got, a, b in zip(grads, pos_grads, neg_grads):
        torch.testing.assert_close(got, a + b)
    torch.testing.assert_close(h_pos, want_pos)
    torch.testing.assert_close(h_neg, want_neg)
