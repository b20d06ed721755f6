"""Unsupervised FF on labelled video, in process: stream a video through a stack in order (or shuffled), then probe.

The probe is a logistic regression on frozen features of one stream, scored on another stream (another seed or
split). Beside FF: the same layers untrained, raw pixels, and the same layer shapes trained by backprop.

    PYTHONPATH=. python -m ffstream.bench.video_study --data shapes --negatives scff   # prints a JSON dict of figures

Measured (2 cores shared, 1 thread; layers conv:32x5x5/2,conv:64x3x3/2, SCFF, Adam 0.003, θ 256, batch 16, in order):
shapes 28x28, 30k frames: FF 92.2 % (init seed 0) and 92.3 % (seed 1) against 79.0 and 73.1 % untrained, 33.4 % pixels;
100k frames: 89.7 % in order, 83.3 % shuffled, 80.9 % untrained. Moving Fashion-MNIST 48x48, 30k: 76.6 % against 73.6 %
untrained, 69.0 % shuffled, 26.5 % pixels. Random features read raw (readout "raw") already give 93.5 % on shapes.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ffstream.ff.negatives import hybrid, temporal_negatives
from ffstream.ff.pairs import Reservoir, cross_pairs, self_pairs, successor_pairs
from ffstream.ff.schedule import RateSchedule
from ffstream.ff.spatial import SpatialConfig, channel_normalize
from ffstream.ff.spec import build_configs, parse_layers
from ffstream.ff.stack import FFStack

NEGATIVE_KINDS = ("hybrid", "temporal", "scff")
PAIRED_KINDS = ("temporal", "scff")  # the first layer sees two frames stacked along channels


@dataclass(frozen=True)
class StudyConfig:
    layers: str = "conv:32x5x5/2,conv:64x3x3/2"  # layer specs (spec.py)
    negatives: str = "scff"  # "hybrid", "temporal" or "scff"
    lr: float = 0.003  # Adam, every layer (shapes, 30k frames: 0.001 88.1 %, 0.003 87.7, 0.01 84.3, 0.03 87.5 at θ = channels)
    batch: int = 16  # consecutive frames per step
    threshold: float | None = 256.0  # θ per location (Σh²), every layer; None: the channel count (shapes, 30k: 87.7 %, 128: 91.2, 256: 92.2, 512: 91.9)
    batch_norm: bool = False  # SpatialConfig.batch_norm
    peer_weight: float = 0.03  # peer normalisation λ
    region: int = 1  # goodness pooled over region×region locations
    reservoir: int = 1024  # past frames that negatives' partners are drawn from
    center: bool = True  # subtract each frame's mean first: a clip's background level is then no cue for pairs
    readout: str = "norm"  # probe features: "norm" (channel-normalised map) or "raw" (h), each globally mean- and max-pooled
    shuffled: bool = False  # i.i.d. baseline: the same frames (or pairs) in a random order
    seed: int = 0
    positive: str = "successor"  # scff's positive: "successor" [x_t, x_t+1] or "self" [x_t, x_t] (the paper's)
    pairing: str = "stack"  # scff: "stack", the two frames along channels (layer 1 weighs each apart); "sum", their mean
    #                         (the same weights on both, as the paper's code: W·x + W·x' = W·(x + x')), a frame's shape
    align: bool = False  # scff: each negative's partner is shifted so that its centroid falls on the frame's (no position cue)
    min_age: int = 64  # a negative's partner is at least this many frames older
    lr_decay: bool = False  # the learning rate falls linearly to 1 % over the pass
    lr_half_life: int = 0  # frames over which the learning rate halves, down to lr_floor (a stream with no end); 0: off
    lr_floor: float = 0.1  # the lowest scale lr_half_life takes the learning rate to
    probe_grid: int = 1  # probe features: 1, each layer's map globally mean- and max-pooled; g > 1, its g×g cell means too
    block: int = 1  # shuffled: blocks of this many consecutive frames are shuffled, each kept in order (1: every frame)
    cursors: int = 1  # in order: a batch takes frames from this many evenly spaced places of the stream, each read in order
    up: str = "rms"  # what goes up: "rms" (each location's channels RMS-normalised) or "triangle" (minus the channel mean, ReLU, then RMS)
    gap: int = 1  # scff: the positive's second frame is this many frames later (1: the successor)
    passes: int = 1  # passes over the training frames, each in the same order (shuffled: a new order each pass)


def study_from_recipe(name: str = "video", **overrides) -> StudyConfig:
    """The study's config for a recipe's learning (layers, lr and its schedule, θ, peer λ, centring, negatives, reservoir), so that the
    bench measures what `ffstream run --recipe NAME` ships; the rest, and overrides, from StudyConfig."""
    from ffstream.config.recipes import read

    data = read(name).data
    model, stream, sleep = data.get("model", {}), data.get("stream", {}), data.get("sleep", {})
    layers = model.get("layers", StudyConfig.layers)
    fields = {"layers": layers if isinstance(layers, str) else ",".join(str(v) for v in layers), "lr": model.get("lr"),
              "threshold": model.get("threshold"), "peer_weight": model.get("peer_weight"), "center": stream.get("center"),
              "negatives": sleep.get("negatives"), "reservoir": sleep.get("reservoir"), "lr_half_life": model.get("lr_half_life"),
              "lr_floor": model.get("lr_floor")}
    return replace(StudyConfig(), **{**{k: v for k, v in fields.items() if v is not None}, **overrides})


def shapes_video(frames: int, seed: int, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """The built-in synthetic shapes, grey: (T, size, size) uint8 and labels (T,)."""
    from ffstream.sources import Preprocess
    from ffstream.sources.synthetic import SyntheticSource

    with SyntheticSource(Preprocess(size=(size, size), scale=1.0), frames, seed=seed) as src:
        pairs = [(f.pixels[0], f.label) for f in src]
    return np.stack([p for p, _ in pairs]).round().astype(np.uint8), np.array([y for _, y in pairs])


def as_input(frames: np.ndarray, center: bool = True) -> torch.Tensor:
    """(T, H, W) uint8 -> (T, 1, H, W) float in [0, 1], minus each frame's mean if center."""
    x = torch.from_numpy(frames).float().div_(255).unsqueeze(1)
    return x - x.mean(dim=(1, 2, 3), keepdim=True) if center else x


def stacked(cfg: StudyConfig) -> bool:
    """Whether layer 1 sees two frames stacked along channels."""
    return cfg.negatives in PAIRED_KINDS and not (cfg.negatives == "scff" and cfg.pairing == "sum")


def triangle(h: torch.Tensor) -> torch.Tensor:
    """Coates and Ng's triangle code, as SCFF passes activity up: each location minus its channels' mean, cut at 0."""
    return channel_normalize(torch.relu(h - h.mean(dim=1, keepdim=True)))


def make_stack(cfg: StudyConfig, frame_shape: tuple[int, int, int]) -> FFStack:
    c, h, w = frame_shape
    in_shape = (2 * c, h, w) if stacked(cfg) else (c, h, w)
    configs = build_configs(parse_layers(cfg.layers), in_shape, seed=cfg.seed, region=cfg.region, batch_norm=cfg.batch_norm,
                            lr=cfg.lr, threshold=cfg.threshold, peer_weight=cfg.peer_weight)
    stack = FFStack(configs)
    if cfg.up == "triangle":
        for layer in stack.layers:
            layer.normalize = triangle
    return stack


def centroid(x: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) -> (B, 2): the (row, column) centre of each frame's mass above its darkest pixel."""
    mass = x.sum(dim=1)
    mass = mass - mass.flatten(1).amin(dim=1).view(-1, 1, 1)  # (B, H, W), the background at 0
    total = mass.sum(dim=(1, 2)).clamp_min(1e-6)
    rows = torch.arange(x.shape[2], dtype=x.dtype)
    cols = torch.arange(x.shape[3], dtype=x.dtype)
    return torch.stack([(mass.sum(2) * rows).sum(1) / total, (mass.sum(1) * cols).sum(1) / total], dim=1)


def aligned(partners: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Each partner rolled so that its centroid lands on its frame's: a negative then differs in what, not where."""
    shift = (centroid(frames) - centroid(partners)).round().long().tolist()
    return torch.stack([p.roll(tuple(d), dims=(1, 2)) for p, d in zip(partners, shift)])


def step_inputs(cfg: StudyConfig, frames: torch.Tensor, succ: torch.Tensor, reservoir: Reservoir,
                gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(positives, negatives) for one step; frames (B, C, H, W), succ the frame after each (paired kinds)."""
    partners = reservoir.sample(len(frames))
    if cfg.align:
        partners = aligned(partners, frames)
    if cfg.negatives == "hybrid":
        return frames, hybrid(frames, partners, gen)
    if cfg.negatives == "scff":
        second = frames if cfg.positive == "self" else succ
        if cfg.pairing == "sum":
            return (frames + second) / 2, (frames + partners) / 2
        return torch.cat([frames, second], dim=1), cross_pairs(frames, partners)
    # temporal: frames out of their time order; half reversed pairs of the batch, half a frame beside an old one
    clip = torch.cat([frames, succ[-1:]])
    reordered = temporal_negatives(clip, gen)[: len(frames)]
    far = cross_pairs(frames, partners)
    pick = torch.rand(len(frames), generator=gen) < 0.5
    return successor_pairs(clip), torch.where(pick.view(-1, 1, 1, 1), reordered, far)


def visiting_order(cfg: StudyConfig, n: int, gen: torch.Generator) -> torch.Tensor:
    """The order the n frames are learned in: (n,) indices."""
    if cfg.shuffled:
        blocks = torch.arange(n).split(cfg.block)
        return torch.cat([blocks[i] for i in torch.randperm(len(blocks), generator=gen).tolist()])
    if cfg.cursors > 1:
        span = n // cfg.cursors  # cursor k reads frames k·span, k·span + 1, ...; a batch is one step of every cursor
        return (torch.arange(span).view(-1, 1) + span * torch.arange(cfg.cursors).view(1, -1)).flatten()
    return torch.arange(n)


def train_ff(stack: FFStack, cfg: StudyConfig, video: torch.Tensor) -> dict:
    """One pass over video (T, C, H, W); in order unless cfg.shuffled. Returns frames and frames/s."""
    gen = torch.Generator().manual_seed(cfg.seed)
    reservoir = Reservoir(cfg.reservoir, seed=cfg.seed + 1, min_age=cfg.min_age)
    starts = torch.arange(0, len(video) - cfg.gap - cfg.batch, cfg.batch).tolist()
    # linear: by the place in all passes (how a fixed set is trained); halving: by the frames learned (a stream's)
    schedule = RateSchedule(decay_frames=cfg.passes * len(video) if cfg.lr_decay else None,
                            half_life=cfg.lr_half_life or None, floor=cfg.lr_floor)
    frames = 0
    started = time.perf_counter()
    for p in range(cfg.passes):
        order = visiting_order(cfg, len(video) - cfg.gap, gen)
        for s in starts:
            rows = order[s : s + cfg.batch]
            x, succ = video[rows], video[rows + cfg.gap]
            if reservoir.ready():
                if cfg.lr_decay or cfg.lr_half_life:
                    stack.set_lr_scale(schedule.scale(p * len(video) + s if cfg.lr_decay else frames))
                pos, neg = step_inputs(cfg, x, succ, reservoir, gen)
                stack.learn_interleaved(pos.flatten(1), neg.flatten(1))
                frames += len(x)
            reservoir.add(x)
    wall = time.perf_counter() - started
    return {"frames": frames, "wall_s": round(wall, 1), "fps": round(frames / wall, 1)}


def pooled_features(h: torch.Tensor, readout: str = "norm", grid: int = 1) -> torch.Tensor:
    """h (B, C, H, W) -> (B, 2C): the (channel-normalised) map's global mean and max, so position does not count;
    grid > 1 adds its means over grid×grid cells, (B, (2 + grid²)C)."""
    n = channel_normalize(h) if readout == "norm" else h
    out = [n.mean(dim=(2, 3)), n.amax(dim=(2, 3))]
    if grid > 1:
        out.append(F.adaptive_avg_pool2d(n, (min(grid, n.shape[2]), min(grid, n.shape[3]))).flatten(1))
    return torch.cat(out, dim=1)


def ff_features(stack: FFStack, cfg: StudyConfig, video: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """Every layer's pooled features, (T, F); a paired stack sees each frame beside itself."""
    out = []
    for i in range(0, len(video), chunk):
        x = video[i : i + chunk]
        x = self_pairs(x) if stacked(cfg) else x
        hs = stack.activities(x.flatten(1))
        out.append(torch.cat([pooled_features(h, cfg.readout, cfg.probe_grid) for h in hs], dim=1))
    return torch.cat(out)


def probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, l2: float = 1e-4) -> float:
    """Test accuracy of a multinomial logistic regression (L-BFGS, standardised features) fitted on the train rows."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = (train_x - mean) / std, (test_x - mean) / std
    k = int(train_y.max()) + 1
    w = torch.zeros(a.shape[1], k, requires_grad=True)
    c = torch.zeros(k, requires_grad=True)
    opt = torch.optim.LBFGS([w, c], lr=1, max_iter=200, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(a @ w + c, train_y) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return float(((b @ w + c).argmax(1) == test_y).float().mean())


class BackpropNet(nn.Module):
    """The FF stack's conv shapes (kernel, stride, padding, pool), ReLU, global mean+max pool of every layer, linear head."""

    def __init__(self, configs: list[SpatialConfig], classes: int, in_channels: int):
        super().__init__()
        self.configs = configs
        convs, width, cin = [], 0, in_channels
        for c in configs:
            convs.append(nn.Conv2d(cin, c.channels, c.kernel, c.stride, c.padding))
            cin, width = c.channels, width + 2 * c.channels
        self.convs = nn.ModuleList(convs)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = []
        for conv, c in zip(self.convs, self.configs):
            x = torch.relu(conv(x))
            x = F.max_pool2d(x, c.pool) if c.pool > 1 else x
            feats += [x.mean(dim=(2, 3)), x.amax(dim=(2, 3))]
        return self.head(torch.cat(feats, dim=1))


def backprop_baseline(cfg: StudyConfig, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
                      lr: float = 1e-3) -> dict:
    """Supervised backprop on the same layer shapes, one pass in order, batches of cfg.batch consecutive frames."""
    video, labels = train
    configs = build_configs(parse_layers(cfg.layers), tuple(video.shape[1:]), seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    net = BackpropNet(configs, int(labels.max()) + 1, video.shape[1])
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    started = time.perf_counter()
    for s in range(0, len(video), cfg.batch):
        loss = F.cross_entropy(net(video[s : s + cfg.batch]), labels[s : s + cfg.batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    wall = time.perf_counter() - started
    with torch.no_grad():
        predicted = torch.cat([net(test[0][i : i + 512]).argmax(1) for i in range(0, len(test[0]), 512)])
    return {"accuracy": float((predicted == test[1]).float().mean()), "fps": round(len(video) / wall, 1)}


def video_study(cfg: StudyConfig, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], probe_every: int = 2,
                baselines: bool = True, progress: Callable[[str], None] | None = None,
                probe_set: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """Learn from the train video (T, H, W) uint8 unsupervised, probe on every probe_every-th train frame, score on test.

    Returns FF's probe accuracy and frames/s, and with baselines: untrained layers, raw pixels and backprop. The
    untrained and raw-pixel rows' frames/s ("*_fps") time their readout: features of the probe's train and test
    frames, the probe's fit and its scoring. progress, if given, is called with each row's name as it starts.
    probe_set, frames and labels (e.g. one frame each of many garments): a second probe fitted on them and scored on
    the same test frames, for FF and (with baselines) untrained and raw pixels: result["probe_set"].
    """
    note = progress or (lambda row: None)
    video, labels = as_input(train[0], cfg.center), torch.from_numpy(train[1]).long()
    test_video, test_labels = as_input(test[0], cfg.center), torch.from_numpy(test[1]).long()
    if probe_set is not None:
        set_video, set_labels = as_input(probe_set[0], cfg.center), torch.from_numpy(probe_set[1]).long()
    sub = slice(0, None, probe_every)
    readout_frames = len(video[sub]) + len(test_video)  # the frames a readout row featurises and probes

    @functools.cache
    def test_features(stack: FFStack) -> torch.Tensor:  # once per stack: the stream's probe and the set's score on them
        return ff_features(stack, cfg, test_video)

    def probe_stack(stack: FFStack) -> float:
        return probe(ff_features(stack, cfg, video[sub]), labels[sub], test_features(stack), test_labels)

    def probe_on_set(stack: FFStack) -> float:
        return probe(ff_features(stack, cfg, set_video), set_labels, test_features(stack), test_labels)

    def timed(fn) -> tuple[float, float]:
        """(fn's accuracy, readout frames/s)."""
        started = time.perf_counter()
        accuracy = fn()
        return accuracy, round(readout_frames / (time.perf_counter() - started), 1)

    result: dict = {"config": asdict(cfg), "train_frames": len(video), "test_frames": len(test_video)}
    on_set = result["probe_set"] = {} if probe_set is not None else None
    if baselines:
        note("untrained")
        untrained = make_stack(cfg, tuple(video.shape[1:]))
        result["untrained"], result["untrained_fps"] = timed(lambda: probe_stack(untrained))
        note("raw_pixels")
        result["raw_pixels"], result["raw_pixels_fps"] = timed(
            lambda: probe(video[sub].flatten(1), labels[sub], test_video.flatten(1), test_labels))
        if on_set is not None:
            note("untrained and raw_pixels, probe set")
            on_set["untrained"] = probe_on_set(untrained)
            on_set["raw_pixels"] = probe(set_video.flatten(1), set_labels, test_video.flatten(1), test_labels)
        note("backprop")
        result["backprop"] = backprop_baseline(cfg, (video, labels), (test_video, test_labels))
    note("ff_shuffled" if cfg.shuffled else "ff_in_order")
    stack = make_stack(cfg, tuple(video.shape[1:]))
    result["learning"] = train_ff(stack, cfg, video)
    result["ff"] = probe_stack(stack)
    if on_set is not None:
        on_set["ff"] = probe_on_set(stack)
    return result


def load_video(name: str, frames: int, test_frames: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """shapes: seed 0 to learn, seed 1 to test; fashion: moving Fashion-MNIST, the train split then the test split."""
    if name == "shapes":
        return shapes_video(frames, 0), shapes_video(test_frames, 1)
    from ffstream.sources.moving_fashion import moving_fashion

    return moving_fashion(frames, "train", 0), moving_fashion(test_frames, "test", 1)


def cached_video(cache: str, name: str, frames: int, test_frames: int):
    """load_video, kept in cache/NAME-FRAMES-TEST.npz when a cache folder is given (generating 100k shapes takes a while)."""
    if not cache:
        return load_video(name, frames, test_frames)
    import os

    path = os.path.join(cache, f"{name}-{frames}-{test_frames}.npz")
    if not os.path.exists(path):
        (a, b), (c, d) = load_video(name, frames, test_frames)
        np.savez(path, a=a, b=b, c=c, d=d)
    z = np.load(path)
    return (z["a"], z["b"]), (z["c"], z["d"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=("shapes", "fashion"), default="shapes")
    p.add_argument("--frames", type=int, default=50_000)
    p.add_argument("--test-frames", type=int, default=10_000)
    p.add_argument("--probe-every", type=int, default=2)
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument("--cache", default="", help="a folder where generated videos are kept as .npz between runs")
    for field, default in asdict(StudyConfig()).items():
        kind = {bool: lambda s: s.lower() in ("1", "true", "yes")}.get(type(default), type(default) if default is not None else float)
        p.add_argument("--" + field.replace("_", "-"), type=kind, default=default)
    args = vars(p.parse_args())
    torch.set_num_threads(1)
    cfg = StudyConfig(**{k: args[k] for k in asdict(StudyConfig())})
    train, test = cached_video(args["cache"], args["data"], args["frames"], args["test_frames"])
    print(json.dumps({"data": args["data"], **video_study(cfg, train, test, args["probe_every"], not args["no_baselines"])}))


if __name__ == "__main__":
    main()
