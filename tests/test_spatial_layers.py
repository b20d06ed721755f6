"""Conv and locally-connected FF layers (ffstream/ff/spatial.py, conv.py, local.py, spec.py) against hand values.

The contract tests (inputs not mutated, state_dict round trip, seeded runs identical) run for these kinds
in test_ff_math.py, with the dense layer's.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ffstream.ff import FFStack, make_layer
from ffstream.ff.conv import ConvFFLayer
from ffstream.ff.local import LocalFFLayer
from ffstream.ff.spatial import SpatialConfig, channel_normalize
from ffstream.ff.spec import Field, build_configs, parse_layers

SGD = dict(optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.0, peer_weight=0.0)


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def test_channel_normalize_works_per_location():
    h = torch.zeros(1, 2, 1, 3)
    h[0, :, 0, 0] = torch.tensor([3.0, 4.0])  # mean square 12.5
    h[0, :, 0, 1] = torch.tensor([0.0, 2.0])  # mean square 2
    out = channel_normalize(h)  # location 2 is silent and stays 0
    expected = torch.tensor([[3 / math.sqrt(12.5), 0.0, 0.0], [4 / math.sqrt(12.5), math.sqrt(2), 0.0]])
    torch.testing.assert_close(out[0, :, 0, :], expected)


def one_by_one_conv(**kw) -> ConvFFLayer:
    """A 1x1 conv from 1 to 2 channels on a 1x2 image, weights [1, -1], bias 0."""
    layer = ConvFFLayer(SpatialConfig.build("conv", (1, 1, 2), channels=2, kernel=(1, 1), **{**SGD, **kw}))
    layer.load_weights({**layer.weights(), "weight": torch.tensor([1.0, -1.0]).view(2, 1, 1, 1), "bias": torch.zeros(2)})
    return layer


def test_goodness_and_loss_are_per_location():
    layer = one_by_one_conv(threshold=1.0)
    x = torch.tensor([[3.0, -1.0]])  # RMS √5 -> x̂ = [3, -1]/√5
    h = layer(x)
    # location 0: h = relu([3, -3]/√5) = [3/√5, 0], G = 9/5; location 1: relu([-1, 1]/√5) = [0, 1/√5], G = 1/5
    torch.testing.assert_close(layer.region_goodness(h), torch.tensor([[[9 / 5, 1 / 5]]]))
    loss, g = layer.local_loss(h, positive=True)
    # each location its own loss: mean of softplus(−(G − θ)) over the two locations
    assert loss.item() == pytest.approx((softplus(-(9 / 5 - 1)) + softplus(-(1 / 5 - 1))) / 2, rel=1e-6)
    torch.testing.assert_close(g, torch.tensor([1.0]))  # the reported goodness is the mean location's, (9/5 + 1/5)/2


def test_region_pools_goodness_before_the_loss():
    layer = one_by_one_conv(threshold=1.0, region=2)
    h = layer(torch.tensor([[3.0, -1.0]]))
    torch.testing.assert_close(layer.region_goodness(h), torch.tensor([[[1.0]]]))  # (9/5 + 1/5)/2, one region
    loss, _ = layer.local_loss(h, positive=True)
    assert loss.item() == pytest.approx(softplus(0.0), rel=1e-6)


def test_local_layer_with_one_filter_everywhere_equals_conv():
    conv = ConvFFLayer(SpatialConfig.build("conv", (2, 5, 5), channels=3, kernel=(3, 3), stride=2, seed=1))
    local = LocalFFLayer(SpatialConfig.build("local", (2, 5, 5), channels=3, kernel=(3, 3), stride=2, seed=2))
    locations = local.cfg.out_hw[0] * local.cfg.out_hw[1]
    weight = conv.weight.detach().reshape(3, -1).expand(locations, 3, 18).clone()
    bias = conv.bias.detach().view(3, 1, 1).expand(local.cfg.out_shape).clone() + 0.25
    local.load_weights({"weight": weight, "bias": bias})
    conv.load_weights({"weight": conv.weight.detach(), "bias": conv.bias.detach() + 0.25})
    x = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(local(x), conv(x))


def test_local_layer_does_not_share_weights():
    local = LocalFFLayer(SpatialConfig.build("local", (1, 4, 4), channels=2, kernel=(3, 3), stride=1, **SGD))
    before = local.weight.detach().clone()
    x = torch.zeros(1, 16)
    x[0, 0] = 1.0  # one lit pixel, top left: only locations whose window covers it get a gradient
    local.learn(x)
    changed = (local.weight.detach() - before).abs().flatten(1).sum(dim=1) > 0  # (L,)
    assert changed.view(4, 4)[0, 0] and not changed.view(4, 4)[3, 3], changed.view(4, 4)


def test_competition_scores_are_group_goodness_and_loss_is_cross_entropy():
    layer = ConvFFLayer(SpatialConfig.build("conv", (1, 1, 1), channels=4, kernel=(1, 1), competition=2, **SGD))
    h = torch.tensor([1.0, 3.0, 2.0, 0.0]).view(1, 4, 1, 1)
    scores = layer.class_scores(h)  # group 0: mean(1, 9) = 5; group 1: mean(4, 0) = 2
    torch.testing.assert_close(scores.view(2), torch.tensor([5.0, 2.0]))
    loss, _ = layer.local_loss(h, positive=True, labels=torch.tensor([1]))
    assert loss.item() == pytest.approx(-math.log(math.exp(2) / (math.exp(5) + math.exp(2))), rel=1e-6)


def test_competition_teaches_a_negative_that_it_is_no_class():
    """A hybrid's loss is the cross-entropy against uniform class scores, times outlier_weight; weight 0 takes no negatives."""
    h = torch.tensor([1.0, 3.0, 2.0, 0.0]).view(1, 4, 1, 1)  # class scores 5 and 2, as above
    layer = ConvFFLayer(SpatialConfig.build("conv", (1, 1, 1), channels=4, kernel=(1, 1), competition=2, outlier_weight=0.5, **SGD))
    loss, _ = layer.local_loss(h, positive=False)
    log_p = torch.log_softmax(torch.tensor([5.0, 2.0]), dim=0)
    assert loss.item() == pytest.approx(-0.5 * float(log_p.mean()), rel=1e-6)
    assert layer.cfg.takes_negatives
    idle = ConvFFLayer(SpatialConfig.build("conv", (1, 1, 1), channels=4, kernel=(1, 1), competition=2, **SGD))
    assert not idle.cfg.takes_negatives and idle.local_loss(h, positive=False)[0].item() == 0.0
    assert ConvFFLayer(SpatialConfig.build("conv", (1, 1, 1), channels=4, kernel=(1, 1), **SGD)).cfg.takes_negatives  # plain FF
    level = torch.tensor([2.0, 2.0, 2.0, 2.0]).view(1, 4, 1, 1)  # equal scores: as low as this loss goes, log 2 per unit weight
    assert layer.local_loss(level, positive=False)[0].item() == pytest.approx(0.5 * math.log(2), rel=1e-6)


def test_hybrid_auroc_is_the_chance_that_a_real_frame_outranks_a_hybrid():
    """The rank formula against every (real, hybrid) pair compared by hand, on a small competing stack."""
    from ffstream.ff.negatives import hybrid
    from ffstream.offline.evaluate import HYBRID_SEED, hybrid_auroc

    stack = FFStack(build_configs(parse_layers("conv:4x3x3,conv:4x3x3"), (1, 8, 8), competition=2))
    x = torch.rand(30, 64, generator=torch.Generator().manual_seed(3))
    frames = x.view(30, 1, 8, 8)
    hybrids = hybrid(frames, frames.roll(15, dims=0), torch.Generator().manual_seed(HYBRID_SEED)).flatten(1)
    real_p, hybrid_p = (torch.softmax(stack.label_goodness(b, 2)[:, :, -1], dim=1).amax(dim=1) for b in (x, hybrids))
    above, tied = real_p.unsqueeze(1) > hybrid_p.unsqueeze(0), real_p.unsqueeze(1) == hybrid_p.unsqueeze(0)
    assert tied.any(), "a tie (a frame blended with one of its own copies) keeps the half-count honest"
    pairs = (above.double() + 0.5 * tied.double()).mean()
    assert hybrid_auroc(stack, x, (1, 8, 8)) == pytest.approx(float(pairs), abs=1e-6)


def test_receptive_field_decides_which_competing_layers_take_hybrids():
    """kernel, stride and pooling widen what one location sees; only layers that see the whole frame learn from hybrids."""
    specs = parse_layers("conv:20x3x3+pool,conv:80x3x3+pool,conv:240x3x3+pool,conv:480x3x3")
    fields = []
    field = Field()
    for spec in specs:
        field = field.through(spec)
        fields.append((field.size, field.jump))
    assert fields == [(4, 2), (10, 4), (22, 8), (38, 8)]
    assert Field().through(parse_layers("conv:8x5x5/2")[0]) == Field(5, 2)
    configs = build_configs(specs, (1, 28, 28), competition=10, outlier_weight=0.02)
    assert [c.outlier_weight for c in configs] == [0.0, 0.0, 0.0, 0.02]
    assert [c.takes_negatives for c in configs] == [False, False, False, True]
    assert [c.takes_negatives for c in build_configs(specs, (1, 28, 28))] == [True] * 4  # plain FF: every layer


def test_competition_learns_two_classes_without_negatives():
    """Two textures, labels 0 and 1; after positive steps alone the right channel group wins on fresh samples."""
    cfg = SpatialConfig.build("conv", (1, 6, 6), channels=4, kernel=(3, 3), competition=2, seed=0, optimizer="adam", lr=0.02)
    stack = FFStack([cfg, SpatialConfig.build("conv", cfg.out_shape, 4, (3, 3), competition=2, seed=1, optimizer="adam", lr=0.02)])
    gen = torch.Generator().manual_seed(0)

    def batch(n: int):
        y = torch.randint(0, 2, (n,), generator=gen)
        stripes = torch.zeros(n, 1, 6, 6)
        stripes[y == 0, :, ::2, :] = 1.0  # horizontal stripes
        stripes[y == 1, :, :, ::2] = 1.0  # vertical stripes
        return (stripes + 0.3 * torch.rand(n, 1, 6, 6, generator=gen)).flatten(1), y

    for _ in range(60):
        x, y = batch(16)
        stack.learn_positive(x, y)
    x, y = batch(200)
    assert stack.competes
    accuracy = (stack.label_scores(x, 2).argmax(dim=1) == y).float().mean().item()
    assert accuracy > 0.95, accuracy


def test_specs_parse_and_chain_shapes():
    specs = parse_layers("conv:32x3x3,conv:64x3x3/2,local:8x5x5/2,dense:100")
    configs = build_configs(specs, (3, 28, 28), seed=5)
    assert [type(c).__name__ for c in configs] == ["SpatialConfig", "SpatialConfig", "SpatialConfig", "LayerConfig"]
    assert configs[0].out_shape == (32, 28, 28)  # "same" padding at stride 1
    assert configs[1].out_shape == (64, 14, 14)  # (28 + 2 − 3)//2 + 1
    assert configs[2].out_shape == (8, 7, 7)  # (14 + 4 − 5)//2 + 1
    assert configs[3].in_features == 8 * 7 * 7 and configs[3].width == 100
    assert [c.seed for c in configs] == [5, 6, 7, 8]
    assert [type(make_layer(c)).__name__ for c in configs] == ["ConvFFLayer", "ConvFFLayer", "LocalFFLayer", "FFLayer"]
    assert parse_layers([500, "500"]) == parse_layers("dense:500,500")
    assert [str(s) for s in parse_layers("conv")] == ["conv:16x5x5/2", "conv:32x3x3/2", "conv:64x3x3/2"]  # the default conv stack
    assert parse_layers(("conv",)) == parse_layers("conv")  # as a config file or FFSTREAM_MODEL_LAYERS gives it


def test_pooled_specs_parse_and_halve_the_map():
    specs = parse_layers("conv:20x3x3+pool,local:8x3x3/2+pool3,conv:40x3x3")
    assert [s.pool for s in specs] == [2, 3, 1]
    assert [str(s) for s in specs] == ["conv:20x3x3+pool", "local:8x3x3/2+pool3", "conv:40x3x3"]  # round trip
    configs = build_configs(specs, (1, 28, 28))
    assert configs[0].map_hw == (28, 28) and configs[0].out_shape == (20, 14, 14)  # the map, then its 2x2 maxima
    assert configs[1].map_hw == (7, 7) and configs[1].out_shape == (8, 2, 2)  # 7//3: an edge block short of 3 is dropped
    local = make_layer(configs[1])
    assert tuple(local.weight.shape) == (49, 8, 20 * 9)  # a filter bank per location of the map, not of the pooled map
    assert tuple(local(torch.rand(2, configs[1].in_features)).shape) == (2, 8, 2, 2)
    with pytest.raises(ValueError, match="max-pool does not fit"):
        build_configs(parse_layers("conv:4x3x3/2+pool3"), (1, 4, 4))  # a 2x2 map


@pytest.mark.parametrize("text", ["conv:32x3", "conv:0x3x3", "conv:8x3x3/0", "pool:2", "dense:-1", "", "conv:8x3x3,",
                                  "conv:8x3x3+pool0", "conv:8x3x3+max", "dense:8+pool"])
def test_bad_specs_are_refused(text):
    with pytest.raises(ValueError, match="layer"):
        parse_layers(text)


def test_dense_below_conv_is_refused():
    with pytest.raises(ValueError, match="needs an image below it"):
        build_configs(parse_layers("100,conv:8x3x3"), (1, 8, 8))


def test_stack_passes_channel_normalised_maps_up():
    stack = FFStack(build_configs(parse_layers("conv:4x3x3,conv:6x3x3/2"), (1, 8, 8)))
    x = torch.rand(3, 64, generator=torch.Generator().manual_seed(1))
    h1, h2 = stack.activities(x)
    assert h1.shape == (3, 4, 8, 8) and h2.shape == (3, 6, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(h2, stack.layers[1](channel_normalize(h1)))
    lit = channel_normalize(h2).pow(2).mean(dim=1)  # every location that fires has mean square 1
    torch.testing.assert_close(lit[lit > 0], torch.ones(int((lit > 0).sum())))
    # A readout sees each channel-normalised map averaged over a 7x7 grid: layer 1's 8x8 is pooled, layer 2's 4x4 kept whole.
    features = stack.readout_features(x, None, [0, 1])
    assert features.shape == (3, 4 * 49 + 6 * 16)
    torch.testing.assert_close(features[:, :196], F.adaptive_avg_pool2d(channel_normalize(h1), 7).flatten(1))
    torch.testing.assert_close(features[:, 196:], channel_normalize(h2).flatten(1))


def test_batch_norm_standardises_channels_by_running_statistics_of_positive_steps():
    layer = one_by_one_conv(batch_norm=True, stats_ema=0.0)  # EMA 0: the statistics are the last positive batch's
    x = torch.tensor([[3.0, -1.0], [1.0, 1.0]])
    # x̂ = [3, -1]/√5 and [1, 1]: channel 0 (weight 1) is relu(x̂), channel 1 (weight −1) relu(−x̂).
    r5 = math.sqrt(5)
    values = {0: [3 / r5, 0.0, 1.0, 1.0], 1: [0.0, 1 / r5, 0.0, 0.0]}  # each channel over both frames and both locations
    mean = {c: sum(v) / 4 for c, v in values.items()}
    var = {c: sum((u - mean[c]) ** 2 for u in v) / 4 for c, v in values.items()}  # the batch's, not unbiased

    before = {k: v.clone() for k, v in layer.weights().items()}
    layer.add_negative(layer.local_gradients(x, positive=False)[0])
    torch.testing.assert_close(layer.channel_mean, torch.zeros(2))  # a negative pass moves nothing
    h, _ = layer.learn(x)
    torch.testing.assert_close(layer.channel_mean, torch.tensor([mean[0], mean[1]]))
    torch.testing.assert_close(layer.channel_var, torch.tensor([var[0], var[1]]))

    # What goes up: (h − mean)/√(var + 1e-5) per channel, cut at zero, then each location's RMS.
    standard = {c: [max(0.0, (u - mean[c]) / math.sqrt(var[c] + 1e-5)) for u in v] for c, v in values.items()}
    expected = channel_normalize(torch.tensor([[standard[0][0:2], standard[1][0:2]], [standard[0][2:4], standard[1][2:4]]]).unsqueeze(2))
    torch.testing.assert_close(layer.normalize(h), expected)
    torch.testing.assert_close(layer.features(h), channel_normalize(h).flatten(1))  # a readout reads the map before the cut

    # A snapshot (the sleep worker's, the sink's) carries the statistics; without batch_norm it has none.
    assert set(layer.weights()) == {"weight", "bias", "channel_mean", "channel_var"} and set(before) == set(layer.weights())
    copy = one_by_one_conv(batch_norm=True)
    copy.load_weights(layer.weights())
    torch.testing.assert_close(copy.normalize(h), layer.normalize(h))
    assert set(one_by_one_conv().weights()) == {"weight", "bias"}


def test_max_pool_keeps_each_blocks_largest_activity():
    layer = ConvFFLayer(SpatialConfig.build("conv", (1, 2, 4), channels=2, kernel=(1, 1), pool=2, **SGD))
    layer.load_weights({"weight": torch.tensor([1.0, -1.0]).view(2, 1, 1, 1), "bias": torch.zeros(2)})
    x = torch.tensor([[1.0, -2.0, 0.0, 0.0], [-1.0, 0.0, 3.0, -1.0]])  # two rows of one frame, mean square 16/8 = 2
    h = layer(x.view(1, -1))
    x_hat = x / math.sqrt(2)
    # channel 0 is relu(x̂), channel 1 relu(−x̂); each keeps the largest of its two 2x2 blocks (columns 0-1, 2-3)
    expected = torch.tensor([[[1.0, 3.0]], [[2.0, 1.0]]]) / math.sqrt(2)
    torch.testing.assert_close(h[0], expected)
    torch.testing.assert_close(h[0], F.max_pool2d(torch.stack([x_hat.relu(), (-x_hat).relu()]), 2))


def competing_conv(**kw) -> ConvFFLayer:
    """one_by_one_conv with two label groups of one channel each, CwComp's batch norm and the class scores of the whole map."""
    return one_by_one_conv(competition=2, batch_stats=True, region=2, **kw)


def test_batch_stats_standardise_by_the_learning_batch_and_keep_running_statistics():
    layer = competing_conv(stats_ema=0.0)  # EMA 0: the running statistics are the last positive batch's
    x = torch.tensor([[3.0, -1.0], [1.0, 1.0]])
    r5 = math.sqrt(5)
    values = torch.tensor([[[[3 / r5, 0.0]], [[0.0, 1 / r5]]], [[[1.0, 1.0]], [[0.0, 0.0]]]])  # relu(±x̂): (B, C, H, W)
    var, mean = torch.var_mean(values, dim=(0, 2, 3), correction=0, keepdim=True)
    standard = (values - mean) / torch.sqrt(var + 1e-5)

    with torch.enable_grad():  # a learning pass: the batch's own statistics
        torch.testing.assert_close(layer(x), standard)
    with torch.no_grad():  # before any positive step the running statistics are 0 and 1
        torch.testing.assert_close(layer(x), values / math.sqrt(1 + 1e-5))
    layer.add_negative(layer.local_gradients(x, positive=False)[0])
    torch.testing.assert_close(layer.channel_mean, torch.zeros(2))  # nothing but a positive step moves them
    h, _ = layer.learn(x, torch.tensor([0, 1]))
    torch.testing.assert_close(h, standard)  # what goes up is the standardised map, as it is
    torch.testing.assert_close(layer.normalize(h), h)
    assert not torch.equal(layer.channel_scale.detach(), torch.ones(2))  # the step moved the learned scale
    torch.testing.assert_close(layer.channel_mean, mean.flatten())  # the map's statistics, not the standardised one's
    torch.testing.assert_close(layer.channel_var, var.flatten())
    plain = one_by_one_conv(competition=2, region=2)  # the same filters without the standardisation
    plain.load_weights({"weight": layer.weight.detach(), "bias": layer.bias.detach()})
    shape = (1, -1, 1, 1)
    with torch.no_grad():  # readouts and tests: the running statistics
        running = (plain(x) - layer.channel_mean.view(shape)) / torch.sqrt(layer.channel_var.view(shape) + 1e-5)
        running = running * layer.channel_scale.view(shape) + layer.channel_shift.view(shape)  # learned, and moved by the step
        torch.testing.assert_close(layer(x), running)
    with torch.enable_grad():  # a batch of one has no spread: the running statistics stand in
        torch.testing.assert_close(layer(x[:1]), running[:1])
    assert set(layer.weights()) == {"weight", "bias", "channel_mean", "channel_var", "channel_scale", "channel_shift"}
    copy = competing_conv()  # snapshots and checkpoints carry the statistics and the learned scale and shift
    copy.load_weights(layer.weights())
    with torch.no_grad():
        torch.testing.assert_close(copy(x), layer(x))


def test_batch_stats_judge_negatives_by_the_positives_or_the_running_statistics():
    """Paired with positives, negatives are standardised by the positive batch's statistics (so both are judged on one
    scale); alone, by the running ones; never by their own batch's, which would make hybrids look as usual as real frames."""
    layer = competing_conv(outlier_weight=1.0)
    layer.load_weights({**layer.weights(), "channel_mean": torch.tensor([0.5, 0.1]), "channel_var": torch.tensor([2.0, 0.5]),
                        "channel_scale": torch.tensor([1.5, 0.5]), "channel_shift": torch.tensor([0.2, -0.1])})
    x_pos, x_neg = torch.tensor([[3.0, -1.0], [1.0, 2.0], [-2.0, 1.0]]), torch.tensor([[1.0, -3.0], [2.0, 2.0]])
    plain = one_by_one_conv(competition=2, region=2)
    shape = (1, -1, 1, 1)

    def standardised(x, mean, var):
        with torch.no_grad():
            return (plain(x) - mean.view(shape)) * torch.rsqrt(var.view(shape) + 1e-5) * layer.channel_scale.view(shape) + layer.channel_shift.view(shape)

    with torch.enable_grad():
        h_neg, h_pos = layer.paired_forward(x_pos, x_neg)
        alone = layer.negative_forward(x_neg)
    var, mean = torch.var_mean(plain(x_pos).detach(), dim=(0, 2, 3), correction=0)
    torch.testing.assert_close(h_pos.detach(), standardised(x_pos, mean, var))
    torch.testing.assert_close(h_neg.detach(), standardised(x_neg, mean, var))
    torch.testing.assert_close(alone.detach(), standardised(x_neg, layer.channel_mean, layer.channel_var))
    grads, _, neg_stats, _, _ = layer.paired_gradients(x_pos, x_neg, torch.tensor([0, 1, 1]))
    assert all(torch.isfinite(g).all() for g in grads) and neg_stats["loss"] > 0


def test_batch_stats_gradient_runs_through_the_batch_statistics():
    """CwComp's loss sees each channel relative to the batch: its gradient includes the statistics' dependence on the weights."""
    layer = competing_conv()
    layer.load_weights({**layer.weights(), "channel_scale": torch.tensor([1.5, 0.5]), "channel_shift": torch.tensor([0.2, -0.1])})
    x, labels = torch.tensor([[3.0, -1.0], [1.0, 2.0], [-2.0, 1.0]]), torch.tensor([0, 1, 1])
    grads, _, _ = layer.local_gradients(x, positive=True, labels=labels)
    params = [t.detach().clone().requires_grad_(True) for t in (layer.weight, layer.bias, layer.channel_scale, layer.channel_shift)]
    weight, bias, scale, shift = params
    x_hat = (x / torch.sqrt(x.pow(2).mean(1, keepdim=True))).view(3, 1, 1, 2)
    maps = F.batch_norm(F.relu(F.conv2d(x_hat, weight, bias)), None, None, scale, shift, training=True, eps=1e-5)  # torch's
    scores = maps.pow(2).mean(dim=(2, 3))  # (B, 2): each group's (one channel's) mean square over the whole map
    expected = torch.autograd.grad(F.cross_entropy(scores, labels), params)
    assert len(grads) == 4  # the filters' weight and bias, then batch norm's scale and shift
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)


def test_batch_stats_config_is_checked():
    with pytest.raises(ValueError, match="needs competition"):
        one_by_one_conv(batch_stats=True)
    with pytest.raises(ValueError, match="choose one"):
        competing_conv(batch_norm=True)
    from ffstream import config
    env = {"FFSTREAM_MODEL_LAYERS": "conv:4x3x3", "FFSTREAM_MODEL_BATCH_STATS": "true", "FFSTREAM_STREAM_SOURCE": "fashion-mnist",
           "FFSTREAM_SLEEP_ENABLED": "false"}
    with pytest.raises(config.ConfigError, match="model.competition"):
        config.load(environ=env).check()
    config.load(environ={**env, "FFSTREAM_MODEL_COMPETITION": "true"}).check()


def test_competition_with_the_sleep_worker_is_checked():
    """CwComp's negatives are the sleep worker's hybrids, made on snapshots, for layers that see the whole frame."""
    from ffstream import config
    env = {"FFSTREAM_MODEL_LAYERS": "conv:10x3x3+pool,conv:20x3x3+pool,conv:20x7x7", "FFSTREAM_MODEL_COMPETITION": "true",
           "FFSTREAM_STREAM_SOURCE": "fashion-mnist", "FFSTREAM_STREAM_NUM_CLASSES": "10"}  # as resolve_stream sets it from the source
    cfg = config.load(environ=env)
    cfg.check()
    assert cfg.sleep_plan().negatives == "hybrid"  # a labelled stream, but no label slot to write a wrong label into
    assert [c.takes_negatives for c in cfg.layer_configs()] == [False, False, True]  # fields of 4, 10 and 34 pixels, of 28
    with pytest.raises(config.ConfigError, match="sleep.negatives=hybrid"):
        config.load(environ={**env, "FFSTREAM_SLEEP_NEGATIVES": "random"}).check()
    with pytest.raises(config.ConfigError, match="sleep.route=snapshot"):
        config.load(environ={**env, "FFSTREAM_SLEEP_ROUTE": "chain"}).check()
    with pytest.raises(config.ConfigError, match="sees the whole frame"):
        config.load(environ={**env, "FFSTREAM_MODEL_LAYERS": "conv:10x3x3+pool,conv:20x3x3"}).check()
    config.load(environ={**env, "FFSTREAM_MODEL_LAYERS": "conv:10x3x3+pool,conv:20x3x3", "FFSTREAM_SLEEP_ENABLED": "false"}).check()
    with pytest.raises(config.ConfigError, match="outlier_weight"):
        config.load(environ={**env, "FFSTREAM_MODEL_OUTLIER_WEIGHT": "-1"}).check()


def test_batch_norm_config_is_checked():
    with pytest.raises(ValueError, match="stats_ema"):
        one_by_one_conv(batch_norm=True, stats_ema=1.0)
    from ffstream import config
    with pytest.raises(config.ConfigError, match="model.batch_norm"):
        config.load(environ={"FFSTREAM_MODEL_LAYERS": "100,100", "FFSTREAM_MODEL_BATCH_NORM": "true"}).check()


def test_config_expands_the_default_conv_stack_to_one_entry_per_layer():
    """The supervisor starts one worker per entry of model.layers, so "conv" from a file or the environment must become three."""
    from ffstream import config

    cfg = config.load(environ={"FFSTREAM_MODEL_LAYERS": "conv", "FFSTREAM_STREAM_SIZE": "64x64", "FFSTREAM_STREAM_COLOR": "true"})
    assert cfg.model.layers == ("conv:16x5x5/2", "conv:32x3x3/2", "conv:64x3x3/2")
    assert [c.out_shape for c in cfg.layer_configs()] == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
