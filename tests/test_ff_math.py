"""The Forward-Forward maths (`ffstream/ff/`) against hand-computed values.

Every expected number is worked out in the test (or in a comment beside it)
from the formulas of DESIGN.md §1, never by calling the code under test.
The contract tests at the end run for every layer kind and negative generator
(STYLE.md 9): inputs are not mutated, state_dict round-trips, seeded runs are
identical.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F

from ffstream.ff import (
    FFLayer,
    FFStack,
    LayerConfig,
    LinearReadout,
    embed_label,
    neutral_label,
    probability_positive,
    rms_normalize,
)
from ffstream.ff.goodness import ff_loss, goodness
from ffstream.ff.negatives import (
    BLUR_KERNEL,
    blur_matrix,
    blurred_mask,
    hard_wrong_labels,
    hybrid,
    random_wrong_labels,
    temporal_negatives,
    temporal_pairs,
)
from ffstream.ff.spatial import SpatialConfig
from ffstream.ff.spec import config_from_dict, make_layer
from ffstream.ff.stack import readout_layers


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def sgd_cfg(in_features: int, width: int, **kw) -> LayerConfig:
    """Plain SGD, no momentum, no decay, no peer loss: one step is exactly W − lr·grad."""
    base = dict(optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.0, peer_weight=0.0)
    base.update(kw)
    return LayerConfig(in_features=in_features, width=width, **base)


def manual_gradients(w, b, x, *, positive, theta, temperature=1.0, variant="max", kind="sumsq"):
    """The FF gradient by the chain rule, without autograd.

    L = mean_b softplus(∓s·(G_b − θ)/T), with s = +1 for "max" and −1 for "min";
    dL/dG_b = coef_b / B, where for a positive coef = −s·σ(−s(G−θ)/T)/T and for a
    negative coef = +s·σ(s(G−θ)/T)/T. dG/dh = 2h (sumsq) or 2h/N (meansq), and
    relu' is already in h (h = 0 where it is off). dL/dW = Σ_b dL/dh_b · x̂_bᵀ.
    """
    x_hat = x / torch.sqrt((x * x).mean(dim=1, keepdim=True) + 1e-8)  # (B, D)
    h = torch.clamp(x_hat @ w.T + b, min=0.0)  # (B, N)
    n = h.shape[1]
    g = (h * h).sum(dim=1) if kind == "sumsq" else (h * h).mean(dim=1)  # (B,)
    s = 1.0 if variant == "max" else -1.0
    z = s * (g - theta) / temperature  # the logit of p(positive)
    coef = -s * torch.sigmoid(-z) / temperature if positive else s * torch.sigmoid(z) / temperature  # (B,)
    dg_dh = 2 * h if kind == "sumsq" else 2 * h / n  # (B, N)
    dl_dh = coef[:, None] * dg_dh / x.shape[0]  # (B, N), the 1/B of the batch mean
    return dl_dh.T @ x_hat, dl_dh.sum(dim=0), h  # (N, D), (N,), (B, N)


# A 2×3 layer whose forward pass is worked out by hand below.
W23 = torch.tensor([[1.0, 0.0, -1.0], [0.5, 1.0, 0.5]])
B23 = torch.tensor([0.5, -1.0])
X23 = torch.tensor([[3.0, 0.0, 4.0], [-1.0, -1.0, -1.0]])


def layer23(**kw) -> FFLayer:
    layer = FFLayer(sgd_cfg(3, 2, **kw))
    layer.load_weights({"weight": W23, "bias": B23})
    return layer


# ---------------------------------------------------------------- norm


def test_rms_normalize_hand_values():
    x = torch.tensor([[3.0, 4.0], [0.0, 2.0], [-1.0, -1.0]])
    out = rms_normalize(x)
    # [3, 4]: mean square (9 + 16)/2 = 12.5 -> [3, 4]/√12.5 = [0.848528, 1.131371]
    # [0, 2]: mean square 2 -> [0, √2]
    # [-1, -1]: mean square 1 -> unchanged; the (negative) mean is NOT subtracted
    expected = torch.tensor([[3 / math.sqrt(12.5), 4 / math.sqrt(12.5)], [0.0, math.sqrt(2)], [-1.0, -1.0]])
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out.pow(2).mean(dim=1), torch.ones(3))


def test_rms_normalize_zero_row_stays_finite():
    out = rms_normalize(torch.zeros(1, 4))
    assert torch.equal(out, torch.zeros(1, 4)), "a silent row must come out as zeros, not NaN"


def test_rms_normalize_ignores_scale():
    x = torch.tensor([[1.0, -2.0, 0.5]])
    torch.testing.assert_close(rms_normalize(100 * x), rms_normalize(x))


# ---------------------------------------------------------------- goodness


def test_goodness_sumsq_and_meansq():
    h = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 2.0]])
    # sumsq: 1 + 4 + 9 = 14 and 4; meansq: 14/3 and 4/3
    torch.testing.assert_close(goodness(h, "sumsq"), torch.tensor([14.0, 4.0]))
    torch.testing.assert_close(goodness(h, "meansq"), torch.tensor([14 / 3, 4 / 3]))


def test_probability_positive_max_and_min():
    theta, t = 4.0, 2.0
    g = torch.tensor([4.0, 6.0, 2.0])
    # max: σ((G − θ)/T) = σ(0), σ(1), σ(−1) = 0.5, 0.731059, 0.268941
    p_max = probability_positive(g, theta, t, "max")
    torch.testing.assert_close(p_max, torch.tensor([0.5, sigmoid(1.0), sigmoid(-1.0)]))
    # min flips the sign: σ((θ − G)/T) = 0.5, 0.268941, 0.731059
    p_min = probability_positive(g, theta, t, "min")
    torch.testing.assert_close(p_min, torch.tensor([0.5, sigmoid(-1.0), sigmoid(1.0)]))
    torch.testing.assert_close(p_max + p_min, torch.ones(3))


def test_probability_at_threshold_is_half():
    g = torch.tensor([7.0])
    assert probability_positive(g, theta=7.0).item() == 0.5
    assert probability_positive(g, theta=7.0, temperature=0.1, variant="min").item() == 0.5


def test_ff_loss_is_softplus():
    theta = 3.0
    g = torch.tensor([theta + 2.0])
    # positive: −log σ(2) = softplus(−2) = 0.126928; negative: −log(1 − σ(2)) = softplus(2) = 2.126928
    assert ff_loss(g, True, theta).item() == pytest.approx(softplus(-2.0), rel=1e-6)
    assert ff_loss(g, False, theta).item() == pytest.approx(softplus(2.0), rel=1e-6)
    # min variant: a high goodness is unlikely to be positive, so the positive loss is the large one
    assert ff_loss(g, True, theta, variant="min").item() == pytest.approx(softplus(2.0), rel=1e-6)
    # G = θ: log 2 either way
    assert ff_loss(torch.tensor([theta]), True, theta).item() == pytest.approx(math.log(2), rel=1e-6)
    # batch mean, with T = 2: G − θ = ±2 -> logits ±1 -> (softplus(−1) + softplus(1))/2 = 0.813262
    gb = torch.tensor([theta + 2.0, theta - 2.0])
    assert ff_loss(gb, True, theta, 2.0).item() == pytest.approx((softplus(-1.0) + softplus(1.0)) / 2, rel=1e-6)


def test_ff_loss_is_stable_for_extreme_goodness():
    g = torch.tensor([1e6])
    assert ff_loss(g, False, 0.0).item() == pytest.approx(1e6)
    assert ff_loss(g, True, 0.0).item() == 0.0


# ---------------------------------------------------------------- config


def test_theta_defaults():
    assert LayerConfig(in_features=4, width=7).theta == 7.0
    assert LayerConfig(in_features=4, width=7, goodness="meansq").theta == 2.0
    assert LayerConfig(in_features=4, width=7, goodness="meansq", threshold=3).theta == 3.0
    assert LayerConfig(in_features=4, width=7, threshold=0.5).theta == 0.5


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(in_features=0, width=3), "positive"),
        (dict(in_features=3, width=-1), "positive"),
        (dict(in_features=3, width=3, goodness="abs"), "goodness"),
        (dict(in_features=3, width=3, variant="mid"), "variant"),
        (dict(in_features=3, width=3, optimizer="rmsprop"), "optimizer"),
        (dict(in_features=3, width=3, lr=0.0), "lr"),
        (dict(in_features=3, width=3, lr=float("nan")), "lr"),
        (dict(in_features=3, width=3, temperature=0.0), "temperature"),
    ],
)
def test_config_rejects(kw, match):
    with pytest.raises(ValueError, match=match):
        LayerConfig(**kw)


def test_config_is_frozen_and_digest_ignores_lr():
    cfg = LayerConfig(in_features=4, width=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.width = 5  # type: ignore[misc]
    assert cfg.digest() == dataclasses.replace(cfg, lr=0.5).digest()
    assert cfg.digest() != dataclasses.replace(cfg, width=5).digest()
    assert cfg.to_dict()["width"] == 3


# ---------------------------------------------------------------- labels


def test_embed_label_writes_one_hot_into_first_k():
    x = torch.full((2, 5), 7.0)
    out = embed_label(x, torch.tensor([2, 0]), num_classes=3)
    expected = torch.tensor([[0.0, 0.0, 1.0, 7.0, 7.0], [1.0, 0.0, 0.0, 7.0, 7.0]])
    assert torch.equal(out, expected)
    assert torch.equal(x, torch.full((2, 5), 7.0)), "embed_label must not mutate its input"
    scaled = embed_label(x, torch.tensor([1, 1]), num_classes=3, scale=2.0)
    assert torch.equal(scaled[:, :3], torch.tensor([[0.0, 2.0, 0.0]] * 2))


def test_neutral_label():
    x = torch.full((1, 6), 5.0)
    out = neutral_label(x, num_classes=4)
    # 1/K = 0.25 in each of the 4 label slots, the rest untouched
    assert torch.equal(out, torch.tensor([[0.25, 0.25, 0.25, 0.25, 5.0, 5.0]]))
    assert torch.equal(x, torch.full((1, 6), 5.0)), "neutral_label must not mutate its input"


# ---------------------------------------------------------------- FFLayer


def test_forward_by_hand():
    layer = layer23()
    # row 1: x = [3, 0, 4], mean square 25/3 -> x̂ = [3, 0, 4]/√(25/3) = [1.039230, 0, 1.385641]
    #   z1 = 1.039230 − 1.385641 + 0.5 = 0.153590 -> h1 = 0.153590
    #   z2 = 0.5·1.039230 + 0.5·1.385641 − 1 = 0.212436 -> h2 = 0.212436
    # row 2: x = [−1, −1, −1], mean square 1 -> x̂ = x
    #   z1 = −1 + 1 + 0.5 = 0.5; z2 = −0.5 − 1 − 0.5 − 1 = −3 -> relu -> 0
    r = math.sqrt(25 / 3)
    xh = [3 / r, 0.0, 4 / r]
    expected = torch.tensor([[xh[0] - xh[2] + 0.5, 0.5 * xh[0] + 0.5 * xh[2] - 1.0], [0.5, 0.0]])
    with torch.no_grad():
        h = layer(X23)
    torch.testing.assert_close(h, expected)
    # goodness of row 1: 0.153590² + 0.212436² = 0.068719
    g = layer.goodness(h)
    assert g[0].item() == pytest.approx(expected[0, 0].item() ** 2 + expected[0, 1].item() ** 2, rel=1e-5)


def test_local_gradients_positive_sumsq_by_hand():
    layer = layer23(threshold=0.0)
    grads, stats, h = layer.local_gradients(X23, positive=True)
    # dL/dW = mean_b (−(1 − p_b)/T)·2h_b·x̂_bᵀ, dL/db = mean_b (−(1 − p_b)/T)·2h_b
    r = math.sqrt(25 / 3)
    xh1 = torch.tensor([3 / r, 0.0, 4 / r])
    h1 = torch.tensor([xh1[0] - xh1[2] + 0.5, 0.5 * xh1[0] + 0.5 * xh1[2] - 1.0])
    h2, xh2 = torch.tensor([0.5, 0.0]), torch.tensor([-1.0, -1.0, -1.0])
    c1 = -(1 - sigmoid(float((h1 * h1).sum()))) * 2 * h1  # (N,) row 1, θ = 0, T = 1
    c2 = -(1 - sigmoid(0.25)) * 2 * h2  # row 2: G = 0.5² = 0.25
    dw = (torch.outer(c1, xh1) + torch.outer(c2, xh2)) / 2
    db = (c1 + c2) / 2
    torch.testing.assert_close(grads[0], dw)
    torch.testing.assert_close(grads[1], db)
    torch.testing.assert_close(h, torch.stack([h1, h2]))
    assert stats["goodness"] == pytest.approx(float(((h1 * h1).sum() + 0.25) / 2), rel=1e-5)
    # nothing changed
    assert torch.equal(layer.weight.detach(), W23) and layer.version == 0


@pytest.mark.parametrize("positive", [True, False])
@pytest.mark.parametrize("variant", ["max", "min"])
@pytest.mark.parametrize("kind", ["sumsq", "meansq"])
def test_local_gradients_match_manual_formula(positive, variant, kind):
    cfg = sgd_cfg(6, 5, goodness=kind, variant=variant, temperature=0.7, seed=3)
    layer = FFLayer(cfg)
    x = torch.randn(8, 6, generator=gen(1))
    grads, _, _ = layer.local_gradients(x, positive=positive)
    dw, db, _ = manual_gradients(
        layer.weight.detach(), layer.bias.detach(), x,
        positive=positive, theta=cfg.theta, temperature=0.7, variant=variant, kind=kind,
    )  # fmt: skip
    assert dw.abs().sum() > 0, "the test data should switch some units on"
    torch.testing.assert_close(grads[0], dw)
    torch.testing.assert_close(grads[1], db)


def test_learn_sgd_step_is_minus_lr_grad():
    layer = FFLayer(sgd_cfg(6, 5, lr=0.05, seed=2))
    x = torch.randn(4, 6, generator=gen(0))
    w0, b0 = layer.weight.detach().clone(), layer.bias.detach().clone()
    dw, db, h_manual = manual_gradients(w0, b0, x, positive=True, theta=5.0)
    h, stats = layer.learn(x)
    assert layer.version == 1
    torch.testing.assert_close(h, h_manual, msg="learn() returns h from before the step")
    torch.testing.assert_close(layer.weight.detach(), w0 - 0.05 * dw)
    torch.testing.assert_close(layer.bias.detach(), b0 - 0.05 * db)
    assert not torch.equal(layer.weight.detach(), w0)
    assert stats["negatives_applied"] == 0
    assert set(stats) >= {"goodness", "p", "loss"}


def test_add_negative_then_learn_is_one_combined_step():
    layer = FFLayer(sgd_cfg(6, 5, lr=0.05, seed=4))
    x_pos = torch.randn(4, 6, generator=gen(0))
    x_neg = torch.randn(3, 6, generator=gen(1))
    w0, b0 = layer.weight.detach().clone(), layer.bias.detach().clone()
    dw_pos, db_pos, _ = manual_gradients(w0, b0, x_pos, positive=True, theta=5.0)
    dw_neg, db_neg, _ = manual_gradients(w0, b0, x_neg, positive=False, theta=5.0)

    neg, _, _ = layer.local_gradients(x_neg, positive=False)
    layer.add_negative(neg)
    assert layer.version == 0 and layer.pending_count == 1, "add_negative only queues"
    _, stats = layer.learn(x_pos)

    assert layer.version == 1, "positive and negative must go in ONE optimiser step"
    assert stats["negatives_applied"] == 1 and layer.pending_count == 0
    torch.testing.assert_close(layer.weight.detach(), w0 - 0.05 * (dw_pos + dw_neg))
    torch.testing.assert_close(layer.bias.detach(), b0 - 0.05 * (db_pos + db_neg))


def test_add_negative_scales_and_sums():
    layer = FFLayer(sgd_cfg(3, 2, lr=1.0))
    w0 = layer.weight.detach().clone()
    g1 = [torch.ones(2, 3), torch.ones(2)]
    g2 = [torch.full((2, 3), 4.0), torch.full((2,), 4.0)]
    layer.add_negative(g1, scale=0.5)
    layer.add_negative(g2, scale=0.25)
    layer.apply_gradients()  # no positive: only the pending negatives, 0.5·1 + 0.25·4 = 1.5
    torch.testing.assert_close(layer.weight.detach(), w0 - 1.5)
    torch.testing.assert_close(layer.bias.detach(), torch.full((2,), -1.5))
    assert torch.equal(g1[0], torch.ones(2, 3)) and torch.equal(g2[0], torch.full((2, 3), 4.0)), "queued grads not mutated"
    assert layer.version == 1


def test_apply_gradients_with_nothing_is_a_no_op():
    layer = FFLayer(sgd_cfg(3, 2))
    w0 = layer.weight.detach().clone()
    layer.apply_gradients()
    assert layer.version == 0 and torch.equal(layer.weight.detach(), w0)


def test_load_weights_sets_version():
    layer = layer23()
    layer.load_weights({"weight": W23 * 2, "bias": B23}, version=17)
    assert layer.version == 17 and torch.equal(layer.weights()["weight"], W23 * 2)


@pytest.mark.parametrize("variant", ["max", "min"])
def test_positive_learning_moves_goodness_the_right_way(variant):
    # max: repeated positive steps raise goodness; min: they lower it. A sign error fails this.
    # min: θ = 1 sits below the starting goodness (≈ 7), so positives have somewhere to go
    threshold = None if variant == "max" else 1.0
    layer = FFLayer(LayerConfig(in_features=10, width=16, variant=variant, threshold=threshold, lr=0.01, peer_weight=0.0))
    x = torch.randn(16, 10, generator=gen(5))
    with torch.no_grad():
        before = layer.goodness(layer(x)).mean().item()
    for _ in range(30):
        layer.learn(x)
    with torch.no_grad():
        after = layer.goodness(layer(x)).mean().item()
    if variant == "max":
        assert after > before * 1.5, f"goodness should rise: {before:.3f} -> {after:.3f}"
    else:
        assert after < before * 0.5, f"goodness should fall: {before:.3f} -> {after:.3f}"


def test_negative_steps_lower_goodness():
    layer = FFLayer(LayerConfig(in_features=10, width=16, lr=0.01, threshold=1.0, peer_weight=0.0))
    x = torch.randn(16, 10, generator=gen(6))
    with torch.no_grad():
        before = layer.goodness(layer(x)).mean().item()
    for _ in range(30):
        layer.add_negative(layer.local_gradients(x, positive=False)[0])
        layer.apply_gradients()
    with torch.no_grad():
        after = layer.goodness(layer(x)).mean().item()
    assert after < before * 0.5, f"goodness of negatives should fall: {before:.3f} -> {after:.3f}"


def test_peer_loss_gradient():
    x = torch.randn(8, 3, generator=gen(7))
    # Unequal units: the peer term adds a nonzero gradient.
    with_peer = FFLayer(sgd_cfg(3, 4, peer_weight=0.5, seed=1))
    no_peer = FFLayer(sgd_cfg(3, 4, peer_weight=0.0, seed=1))
    diff = with_peer.local_gradients(x, True)[0][0] - no_peer.local_gradients(x, True)[0][0]
    assert diff.abs().max() > 1e-4, "peer loss should pull unequal units"
    # Negative gradients never include the peer term.
    torch.testing.assert_close(with_peer.local_gradients(x, False)[0][0], no_peer.local_gradients(x, False)[0][0])
    # Identical units: every unit's mean activity equals the layer average, so the peer gradient is 0.
    same_w = {"weight": torch.tensor([[1.0, 0.5, -0.2]] * 4), "bias": torch.zeros(4)}
    with_peer.load_weights(same_w)
    no_peer.load_weights(same_w)
    diff = with_peer.local_gradients(x, True)[0][0] - no_peer.local_gradients(x, True)[0][0]
    assert diff.abs().max() < 1e-7


def test_running_mean_moves_only_on_learn():
    layer = FFLayer(sgd_cfg(3, 2, peer_weight=0.03, peer_ema=0.9))
    layer.load_weights({"weight": W23, "bias": B23})
    layer.local_gradients(X23, True)
    assert torch.equal(layer.running_mean, torch.zeros(2))
    h, _ = layer.learn(X23)
    torch.testing.assert_close(layer.running_mean, 0.1 * h.mean(dim=0))  # 0.9·0 + 0.1·mean h


# ---------------------------------------------------------------- negatives


def test_blurred_mask_is_binary_coherent_and_seeded():
    m = blurred_mask((8, 28, 28), gen(0), blur_steps=8)
    assert m.shape == (8, 28, 28)
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    right_equal = (m[:, :, 1:] == m[:, :, :-1]).float().mean().item()
    down_equal = (m[:, 1:, :] == m[:, :-1, :]).float().mean().item()
    # random bits agree with their neighbour half the time; the blurred mask has large regions
    assert right_equal > 0.8 and down_equal > 0.8, (right_equal, down_equal)
    assert 0.2 < m.mean().item() < 0.8, "both regions should be present"
    assert torch.equal(m, blurred_mask((8, 28, 28), gen(0), blur_steps=8))
    assert not torch.equal(m, blurred_mask((8, 28, 28), gen(1), blur_steps=8))


def blur_by_convolution(mask: torch.Tensor, blur_steps: int) -> torch.Tensor:
    """The paper's blur pass by pass on (B, H, W): [1/4, 1/2, 1/4] each way, the edge value repeated."""
    mask = mask.unsqueeze(1)
    k = torch.tensor(BLUR_KERNEL, dtype=mask.dtype)
    horizontal, vertical = k.view(1, 1, 1, 3), k.view(1, 1, 3, 1)
    for _ in range(blur_steps):
        mask = F.conv2d(F.pad(mask, (1, 1, 0, 0), mode="replicate"), horizontal)
        mask = F.conv2d(F.pad(mask, (0, 0, 1, 1), mode="replicate"), vertical)
    return mask.squeeze(1)


@pytest.mark.parametrize("shape, steps", [((3, 28, 28), 8), ((2, 17, 40), 3), ((2, 5, 9), 1), ((1, 6, 6), 0)])
def test_blur_matrix_is_the_papers_pass_by_pass_blur(shape, steps):
    bits = torch.randint(0, 2, shape, generator=gen(3)).double()
    by_matrix = blur_matrix(shape[1], steps).double() @ bits @ blur_matrix(shape[2], steps).double().T
    torch.testing.assert_close(by_matrix, blur_by_convolution(bits, steps), atol=1e-6, rtol=0)


def test_blurred_mask_without_blur_is_noise():
    m = blurred_mask((8, 28, 28), gen(0), blur_steps=0)
    right_equal = (m[:, :, 1:] == m[:, :, :-1]).float().mean().item()
    assert 0.4 < right_equal < 0.6, "the blur is what makes the regions coherent"


def test_hybrid_takes_each_pixel_from_a_or_b():
    a = torch.rand(4, 3, 16, 16, generator=gen(0))
    b = torch.rand(4, 3, 16, 16, generator=gen(1)) + 10.0  # disjoint ranges, so a and b cannot be confused
    out = hybrid(a, b, gen(2))
    from_a, from_b = out == a, out == b
    assert bool((from_a | from_b).all()), "every output pixel equals a or b at that pixel"
    assert from_a.any() and from_b.any()
    # the mask is shared across channels
    assert torch.equal(from_a[:, 0], from_a[:, 1]) and torch.equal(from_a[:, 0], from_a[:, 2])


def test_hybrid_rejects_bad_shapes():
    with pytest.raises(ValueError):
        hybrid(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 5), gen())
    with pytest.raises(ValueError):
        hybrid(torch.zeros(2, 4, 4), torch.zeros(2, 4, 4), gen())


def test_random_wrong_labels():
    k = 5
    labels = torch.randint(0, k, (5000,), generator=gen(0))
    wrong = random_wrong_labels(labels, k, gen(1))
    assert not bool((wrong == labels).any()), "a wrong label must never be the true one"
    assert wrong.min() >= 0 and wrong.max() < k
    # every other class comes up, about equally often (1/(K−1) = 1/4 each)
    threes = wrong[labels == 3]
    counts = torch.bincount(threes, minlength=k)
    assert counts[3] == 0
    assert set(threes.unique().tolist()) == {0, 1, 2, 4}
    frac = counts[[0, 1, 2, 4]].float() / len(threes)
    assert bool(((frac - 0.25).abs() < 0.06).all()), frac


def test_hard_wrong_labels_follow_the_scores():
    k, n = 4, 4000
    labels = torch.randint(0, k, (n,), generator=gen(0))
    # class 2 has a huge score: it should be picked nearly always, except where it is the true label
    scores = torch.zeros(n, k)
    scores[:, 2] = 50.0
    picked = hard_wrong_labels(labels, scores, gen(1))
    assert not bool((picked == labels).any())
    others = labels != 2
    assert (picked[others] == 2).float().mean() > 0.99
    assert not bool((picked[~others] == 2).any())

    # proportional to softmax with the true class masked: scores log[1, 2, 3, 4], truth 0 -> [0, 2/9, 3/9, 4/9]
    scores = torch.log(torch.tensor([[1.0, 2.0, 3.0, 4.0]])).repeat(n, 1)
    picked = hard_wrong_labels(torch.zeros(n, dtype=torch.long), scores, gen(2))
    frac = torch.bincount(picked, minlength=k).float() / n
    torch.testing.assert_close(frac, torch.tensor([0.0, 2 / 9, 3 / 9, 4 / 9]), atol=0.03, rtol=0)


def numbered_frames(t: int, c: int = 2, hw: int = 3) -> torch.Tensor:
    """(T, C, H, W) with every pixel of frame t equal to t, so a pair's indices can be read back."""
    return torch.arange(t, dtype=torch.float32).view(t, 1, 1, 1).expand(t, c, hw, hw).clone()


def test_temporal_pairs():
    frames = numbered_frames(5)
    pairs = temporal_pairs(frames)
    assert pairs.shape == (4, 4, 3, 3)  # (T − 1, 2C, H, W)
    for t in range(4):
        assert bool((pairs[t, :2] == t).all()) and bool((pairs[t, 2:] == t + 1).all())


@pytest.mark.parametrize("t, min_gap", [(3, 2), (4, 2), (7, 2), (12, 2), (7, 3), (12, 4)])
def test_temporal_negatives_are_never_in_order(t, min_gap):
    frames = numbered_frames(t)
    reversals = jumps = 0
    for seed in range(40):
        neg = temporal_negatives(frames, gen(seed), min_gap=min_gap)
        assert neg.shape == (t - 1, 4, 3, 3)
        first, second = neg[:, 0, 0, 0].long(), neg[:, 2, 0, 0].long()
        assert bool((neg[:, :2] == first.view(-1, 1, 1, 1).float()).all()), "a frame's channels stay together"
        assert not bool((second == first + 1).any()), f"pair in true order: {list(zip(first.tolist(), second.tolist()))}"
        assert not bool((second == first).any())
        reversal = first == second + 1
        assert bool(((second - first).abs() >= min_gap)[~reversal].all()), "a jump shorter than min_gap"
        reversals += int(reversal.sum())
        jumps += int((~reversal).sum())
    assert reversals > 0 and jumps > 0, "both kinds of negative should occur"


def test_temporal_negatives_rejects():
    with pytest.raises(ValueError):
        temporal_negatives(numbered_frames(2), gen())
    with pytest.raises(ValueError):
        temporal_negatives(numbered_frames(6), gen(), min_gap=1)


# ---------------------------------------------------------------- readout


def blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Four well-separated Gaussian blobs at (±3, ±3): linearly separable."""
    g = gen(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    centres = torch.tensor([[3.0, 3.0], [-3.0, 3.0], [-3.0, -3.0], [3.0, -3.0]])
    return centres[labels] + 0.5 * torch.randn(n, 2, generator=g), labels


def test_linear_readout_learns_separable_problem():
    readout = LinearReadout(2, 4, lr=0.05, seed=0)
    x, y = blobs(3200, seed=0)
    for i in range(0, 3200, 32):  # predict, then learn
        readout.learn(x[i : i + 32], y[i : i + 32])
    x_test, y_test = blobs(1000, seed=1)
    acc = (readout.predict(x_test) == y_test).float().mean().item()
    assert acc > 0.95, f"accuracy {acc:.3f}"


def test_linear_readout_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    LinearReadout(4, 3, seed=0)
    assert torch.equal(torch.rand(3), expected), "constructing a readout must not reseed the caller's RNG"


# ---------------------------------------------------------------- FFStack


def stack_cfgs(widths=(6, 5, 4, 3), **kw) -> list[LayerConfig]:
    return [sgd_cfg(d, n, seed=i, **kw) for i, (d, n) in enumerate(zip(widths, widths[1:]))]


def test_stack_widths_must_chain():
    with pytest.raises(ValueError, match="chain"):
        FFStack([LayerConfig(in_features=4, width=3), LayerConfig(in_features=5, width=2)])


def test_learn_positive_equals_manual_layer_by_layer():
    cfgs = stack_cfgs()
    stack = FFStack(cfgs)
    x = torch.randn(4, 6, generator=gen(0))
    # manual: each layer steps W − lr·grad on its input, then hands up rms(h from before its step)
    expected, inp = [], x
    for layer in stack.layers:
        w, b = layer.weight.detach().clone(), layer.bias.detach().clone()
        dw, db, h = manual_gradients(w, b, inp, positive=True, theta=layer.cfg.theta)
        expected.append((w - 0.1 * dw, b - 0.1 * db))
        inp = h / torch.sqrt((h * h).mean(dim=1, keepdim=True) + 1e-8)
    stats = stack.learn_positive(x)
    assert len(stats) == 3
    for layer, (w, b) in zip(stack.layers, expected):
        torch.testing.assert_close(layer.weight.detach(), w)
        torch.testing.assert_close(layer.bias.detach(), b)
        assert layer.version == 1


def test_learn_positive_equals_separate_layers():
    cfgs = [dataclasses.replace(c, optimizer="adam", lr=0.01, peer_weight=0.03) for c in stack_cfgs()]
    stack, layers = FFStack(cfgs), [FFLayer(c) for c in cfgs]
    for step in range(3):
        x = torch.randn(4, 6, generator=gen(step))
        stack.learn_positive(x)
        for layer in layers:
            h, _ = layer.learn(x)
            x = rms_normalize(h)
    for a, b in zip(stack.layers, layers):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.running_mean, b.running_mean)


def manual_forward(stack: FFStack, x: torch.Tensor) -> list[torch.Tensor]:
    hs = []
    for layer in stack.layers:
        x_hat = x / torch.sqrt((x * x).mean(dim=1, keepdim=True) + 1e-8)
        x = torch.clamp(x_hat @ layer.weight.detach().T + layer.bias.detach(), min=0.0)
        hs.append(x)
    return hs


@pytest.mark.parametrize("variant", ["max", "min"])
def test_label_scores_sum_goodness_over_layers_2_to_l(variant):
    stack = FFStack(stack_cfgs((8, 6, 5, 4), variant=variant))
    x = torch.rand(3, 8, generator=gen(0))
    k = 4
    scores = stack.label_scores(x, k)
    assert scores.shape == (3, k)
    sign = 1.0 if variant == "max" else -1.0
    for c in range(k):
        xc = x.clone()
        xc[:, :k] = 0.0
        xc[:, c] = 1.0  # one-hot label in the first K inputs
        hs = manual_forward(stack, xc)
        expected = sign * sum((h * h).sum(dim=1) for h in hs[1:])  # layer 1 is skipped
        torch.testing.assert_close(scores[:, c], expected)
    with_first = stack.label_scores(x, k, skip_first=False)
    xc = x.clone()
    xc[:, :k] = 0.0
    xc[:, 0] = 1.0
    hs = manual_forward(stack, xc)
    torch.testing.assert_close(with_first[:, 0], sign * sum((h * h).sum(dim=1) for h in hs))


def test_a_relative_label_is_the_scale_times_the_frame_rms():
    x = torch.rand(3, 10, generator=gen(0))
    x[2] *= 5.0  # a brighter frame
    rms = torch.sqrt((x[:, 4:] ** 2).mean(dim=1))  # the pixels outside the 4 label slots
    labelled = embed_label(x, torch.tensor([1, 3, 0]), 4, 2.0, relative=True)
    torch.testing.assert_close(labelled[torch.arange(3), torch.tensor([1, 3, 0])], 2.0 * rms)
    assert (labelled[:, :4] != 0).sum() == 3 and torch.equal(labelled[:, 4:], x[:, 4:])
    torch.testing.assert_close(neutral_label(x, 4, 2.0, relative=True)[:, :4], (2.0 * rms / 4)[:, None].expand(3, 4))
    # After layer 1's normalisation the label weighs the same in a dark and a bright copy of a frame.
    bright = torch.cat([x[:1, :4], 3.0 * x[:1, 4:]], dim=1)
    a, b = (rms_normalize(embed_label(f, torch.tensor([2]), 4, 2.0, relative=True)) for f in (x[:1], bright))
    torch.testing.assert_close(a, b)
    assert torch.equal(embed_label(x, torch.tensor([1, 3, 0]), 4, 2.0), embed_label(x, torch.tensor([1, 3, 0]), 4, 2.0, relative=False))


def test_label_goodness_is_each_layer_and_energy_reads_both_ways():
    from ffstream.offline.evaluate import energy_accuracies

    stack = FFStack(stack_cfgs((8, 6, 5, 4)))
    x, k = torch.rand(40, 8, generator=gen(0)), 4
    per_layer = stack.label_goodness(x, k)
    assert per_layer.shape == (40, k, 3)
    hs = manual_forward(stack, embed_label(x, torch.full((40,), 2), k, stack.label_scale))
    for i, h in enumerate(hs):
        torch.testing.assert_close(per_layer[:, 2, i], (h * h).sum(dim=1))
    y = torch.randint(0, k, (40,), generator=gen(1))
    got = energy_accuracies(stack, x, y, k)
    skip_first = float((per_layer[:, :, 1:].sum(dim=2).argmax(dim=1) == y).float().mean())
    every_layer = float((per_layer.sum(dim=2).argmax(dim=1) == y).float().mean())
    last_layer = float((per_layer[:, :, 2].argmax(dim=1) == y).float().mean())
    assert got == pytest.approx({"accuracy_energy": skip_first, "accuracy_energy_all_layers": every_layer, "accuracy_energy_last_layer": last_layer})


def test_label_scores_single_layer_uses_it():
    stack = FFStack([sgd_cfg(6, 5)])
    x = torch.rand(2, 6, generator=gen(0))
    hs = manual_forward(stack, embed_label(x, torch.tensor([1, 1]), 3))
    torch.testing.assert_close(stack.label_scores(x, 3)[:, 1], (hs[0] ** 2).sum(dim=1))


def test_activities_match_manual_forward_and_do_not_learn():
    stack = FFStack(stack_cfgs())
    x = torch.randn(4, 6, generator=gen(0))
    for got, want in zip(stack.activities(x), manual_forward(stack, x)):
        torch.testing.assert_close(got, want)
    assert all(layer.version == 0 for layer in stack.layers)


def test_learn_interleaved_with_zero_negative_equals_positive():
    # A zero frame normalises to zeros, so h = relu(b) = 0 at the start: its gradient is exactly zero.
    x = torch.randn(4, 6, generator=gen(0))
    a, b = FFStack(stack_cfgs()), FFStack(stack_cfgs())
    a.learn_interleaved(x, torch.zeros(4, 6))
    b.learn_positive(x)
    for la, lb in zip(a.layers, b.layers):
        # to rounding: the paired step's one product over both batches sums the rows in another order
        torch.testing.assert_close(la.weight, lb.weight, rtol=1e-6, atol=1e-8)
        assert la.version == lb.version == 1


def test_learn_interleaved_equals_manual_combined_step():
    stack = FFStack(stack_cfgs())
    x_pos = torch.randn(4, 6, generator=gen(0))
    x_neg = torch.randn(4, 6, generator=gen(1))
    expected, p, n = [], x_pos, x_neg
    for layer in stack.layers:
        w, b = layer.weight.detach().clone(), layer.bias.detach().clone()
        dwp, dbp, hp = manual_gradients(w, b, p, positive=True, theta=layer.cfg.theta)
        dwn, dbn, hn = manual_gradients(w, b, n, positive=False, theta=layer.cfg.theta)
        expected.append((w - 0.1 * (dwp + dwn), b - 0.1 * (dbp + dbn)))
        p, n = rms_normalize(hp), rms_normalize(hn)
    stats = stack.learn_interleaved(x_pos, x_neg)
    assert [set(s) for s in stats] == [{"pos", "neg"}] * 3
    for layer, (w, b) in zip(stack.layers, expected):
        torch.testing.assert_close(layer.weight.detach(), w)
        torch.testing.assert_close(layer.bias.detach(), b)
        assert layer.version == 1, "one step per layer, positive and negative together"


def test_negative_gradients_change_nothing():
    stack = FFStack(stack_cfgs())
    before = [layer.weight.detach().clone() for layer in stack.layers]
    out = stack.negative_gradients(torch.randn(4, 6, generator=gen(0)))
    assert len(out) == 3 and out[1][0][0].shape == (4, 5)
    assert all(torch.equal(layer.weight, w) and layer.version == 0 for layer, w in zip(stack.layers, before))


def test_readout_features_and_layers():
    assert readout_layers(4, supervised=True) == [1, 2, 3]
    assert readout_layers(1, supervised=True) == [0]
    assert readout_layers(5, supervised=False) == [2, 3, 4]
    assert readout_layers(2, supervised=False) == [0, 1]
    stack = FFStack(stack_cfgs())
    x = torch.rand(2, 6, generator=gen(0))
    f = stack.readout_features(x, 3, [1, 2])
    assert f.shape == (2, 4 + 3)
    hs = manual_forward(stack, neutral_label(x, 3))
    torch.testing.assert_close(f, torch.cat([rms_normalize(hs[1]), rms_normalize(hs[2])], dim=1))


# ---------------------------------------------------------------- contracts (STYLE.md 9)

LEARNING = {
    "sumsq-max-sgd": dict(optimizer="sgd", momentum=0.9, weight_decay=1e-3),
    "meansq-min-adam": dict(goodness="meansq", variant="min", optimizer="adam", lr=0.01),
    "sumsq-max-adam-nopeer": dict(optimizer="adam", lr=0.01, peer_weight=0.0, temperature=2.0),
}
# Every layer kind meets the same contract: dense, conv and locally connected, each with every learning recipe above.
SHAPES = {
    "dense": lambda **kw: LayerConfig(in_features=6, width=5, seed=11, **kw),
    "conv": lambda **kw: SpatialConfig.build("conv", (2, 5, 5), channels=4, kernel=(3, 3), stride=2, seed=11, **kw),
    "local": lambda **kw: SpatialConfig.build("local", (2, 5, 5), channels=4, kernel=(3, 3), stride=1, seed=11, **kw),
    "conv-region-cwcomp": lambda **kw: SpatialConfig.build("conv", (1, 6, 6), channels=4, kernel=(3, 3), seed=11, region=2, competition=2,
                                                           outlier_weight=0.5, **kw),
    "conv-batchnorm": lambda **kw: SpatialConfig.build("conv", (2, 5, 5), channels=4, kernel=(3, 3), seed=11, batch_norm=True, **kw),
    "local-pool": lambda **kw: SpatialConfig.build("local", (2, 5, 5), channels=4, kernel=(3, 3), pool=2, seed=11, **kw),
    "conv-pool-batchstats-cwcomp": lambda **kw: SpatialConfig.build("conv", (1, 6, 6), channels=4, kernel=(3, 3), pool=2, seed=11,
                                                                    region=3, competition=2, batch_stats=True, outlier_weight=0.5, **kw),
}
LAYER_KINDS = {f"{shape}-{recipe}": (shape, recipe) for shape in SHAPES for recipe in LEARNING}


@pytest.fixture(params=list(LAYER_KINDS), ids=list(LAYER_KINDS))
def layer_cfg(request) -> LayerConfig:
    shape, recipe = LAYER_KINDS[request.param]
    return SHAPES[shape](**LEARNING[recipe])


def inputs(cfg: LayerConfig, rows: int, seed: int) -> torch.Tensor:
    return torch.randn(rows, cfg.in_features, generator=gen(seed))


def train(layer: FFLayer, steps: int = 3) -> None:
    for i in range(steps):
        layer.add_negative(layer.local_gradients(inputs(layer.cfg, 4, 100 + i), False)[0])
        layer.learn(inputs(layer.cfg, 4, i), torch.tensor([0, 1, 1, 0]))  # labels: used only by competing layers


def test_contract_layer_does_not_mutate_inputs(layer_cfg):
    layer = make_layer(layer_cfg)
    x = inputs(layer_cfg, 4, 0)
    labels = torch.tensor([1, 0, 1, 1])
    x0, labels0 = x.clone(), labels.clone()
    grads = [g.clone() for g in layer.local_gradients(x, False)[0]]
    grads0 = [g.clone() for g in grads]
    with torch.no_grad():
        layer(x)
    layer.local_gradients(x, True, labels)
    layer.add_negative(grads)
    layer.add_negative_inputs(x)
    layer.learn(x, labels)
    assert torch.equal(x, x0), "the input frames were mutated"
    assert torch.equal(labels, labels0), "the labels were mutated"
    assert all(torch.equal(g, g0) for g, g0 in zip(grads, grads0)), "a queued gradient was mutated"


def test_contract_paired_gradients_equal_the_two_passes(layer_cfg):
    """One pass over positives and negatives gives the sum of each one's gradient, stats and activity, and moves
    the peer running mean as the positive step alone would."""
    if getattr(layer_cfg, "batch_stats", False):
        pytest.skip("batch statistics judge paired negatives by the positives' statistics, which a pass alone has not "
                    "(test_spatial_layers checks both)")
    paired, separate = make_layer(layer_cfg), make_layer(layer_cfg)
    x_pos, x_neg = inputs(layer_cfg, 4, 0), inputs(layer_cfg, 3, 1)
    labels = torch.tensor([0, 1, 1, 0])  # used only by competing layers
    seen = []
    grads, pos_stats, neg_stats, h_pos, h_neg = paired.paired_gradients(
        x_pos, x_neg, labels, on_negative_forward=lambda h: seen.append(("neg", len(h))), on_positive_forward=lambda h: seen.append(("pos", len(h))))
    neg_grads, want_neg_stats, want_h_neg = separate.local_gradients(x_neg, positive=False)
    pos_grads, want_pos_stats, want_h_pos = separate.wake(x_pos, labels)
    assert seen == [("neg", 3), ("pos", 4)], "the negatives' activity is handed on first"
    for got, pos, neg in zip(grads, pos_grads, neg_grads):
        torch.testing.assert_close(got, pos + neg, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h_pos, want_h_pos, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h_neg, want_h_neg, rtol=1e-5, atol=1e-6)
    for (name, got), (_, want) in zip(paired.named_buffers(), separate.named_buffers()):  # the peer mean, batch-norm statistics
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7, msg=name)
    for got, want in ((pos_stats, want_pos_stats), (neg_stats, want_neg_stats)):
        assert got.keys() == want.keys()
        assert all(math.isclose(got[k], want[k], rel_tol=1e-4, abs_tol=1e-6) for k in got)
    assert paired.version == 0, "gradients only: no step taken"


def test_contract_layer_state_dict_round_trip(layer_cfg):
    layer = make_layer(layer_cfg)
    train(layer)
    fresh = make_layer(dataclasses.replace(layer_cfg, seed=99))
    fresh.load_state_dict(layer.state_dict())
    x = inputs(layer_cfg, 5, 9)
    with torch.no_grad():
        h = layer(x)
        assert torch.equal(fresh(x), h)
        assert torch.equal(fresh.normalize(h), layer.normalize(h))  # what goes up: batch-norm statistics came along
    assert fresh.version == layer.version == 3
    assert torch.equal(fresh.running_mean, layer.running_mean)


def test_contract_layer_seeded_runs_identical(layer_cfg):
    a, b = make_layer(layer_cfg), make_layer(layer_cfg)
    train(a)
    train(b)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    other = make_layer(dataclasses.replace(layer_cfg, seed=layer_cfg.seed + 1))
    assert not torch.equal(other.weight, make_layer(layer_cfg).weight), "the seed should matter"


def test_contract_layer_config_round_trips_through_json(layer_cfg):
    """Checkpoints keep the config as JSON; the kind, shapes and digest must come back the same."""
    back = config_from_dict(json.loads(json.dumps(layer_cfg.to_dict())))
    assert back == layer_cfg and type(back) is type(layer_cfg) and back.digest() == layer_cfg.digest()
    assert type(make_layer(back)) is type(make_layer(layer_cfg))


def test_contract_stack_and_readout_seeded_and_round_trip():
    cfgs = [dataclasses.replace(c, optimizer="adam", lr=0.01) for c in stack_cfgs()]
    a, b = FFStack(cfgs), FFStack(cfgs)
    for s in (a, b):
        s.learn_interleaved(torch.randn(4, 6, generator=gen(0)), torch.randn(4, 6, generator=gen(1)))
    assert all(torch.equal(la.weight, lb.weight) for la, lb in zip(a.layers, b.layers))

    r1, r2 = LinearReadout(4, 3, seed=5), LinearReadout(4, 3, seed=5)
    f, y = torch.randn(8, 4, generator=gen(2)), torch.randint(0, 3, (8,), generator=gen(3))
    f0 = f.clone()
    assert r1.learn(f, y) == r2.learn(f, y)
    assert torch.equal(f, f0)
    fresh = LinearReadout(4, 3, seed=6)
    fresh.load_state_dict(r1.state_dict())
    assert torch.equal(fresh(f), r1(f))


# Each generator as (call with a generator, inputs it must not mutate).
def _frames():
    return torch.rand(6, 2, 8, 8, generator=gen(50))


GENERATORS = {
    "blurred_mask": lambda g, ins: blurred_mask((2, 8, 8), g),
    "hybrid": lambda g, ins: hybrid(ins[0], ins[1], g),
    "random_wrong_labels": lambda g, ins: random_wrong_labels(ins[2], 4, g),
    "hard_wrong_labels": lambda g, ins: hard_wrong_labels(ins[2], ins[3], g),
    "temporal_pairs": lambda g, ins: temporal_pairs(ins[0]),
    "temporal_negatives": lambda g, ins: temporal_negatives(ins[0], g),
}


def _inputs():
    return [_frames(), _frames() + 1, torch.tensor([0, 1, 2, 3, 0, 1]), torch.rand(6, 4, generator=gen(51))]


@pytest.mark.parametrize("name", list(GENERATORS))
def test_contract_generator_does_not_mutate_inputs(name):
    ins = _inputs()
    GENERATORS[name](gen(0), ins)
    assert all(torch.equal(a, b) for a, b in zip(ins, _inputs())), f"{name} mutated its input"


@pytest.mark.parametrize("name", list(GENERATORS))
def test_contract_generator_seeded_runs_identical(name):
    first = GENERATORS[name](gen(3), _inputs())
    assert torch.equal(first, GENERATORS[name](gen(3), _inputs()))
    # and the seed is the only source of randomness: the global RNG does not matter
    torch.manual_seed(1)
    again = GENERATORS[name](gen(3), _inputs())
    assert torch.equal(first, again)
