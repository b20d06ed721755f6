"""How far can these layers and this probe go? The video recipe's layers trained by supervised backprop, then read
as FF's are; and an object-centred readout (each map read in a window around the garment) for every row.

    PYTHONPATH=. python -m ffstream.bench.video_ceiling ceiling --frames 10000 --test-frames 4000 --passes 1,3,5
    PYTHONPATH=. python -m ffstream.bench.video_ceiling centred --frames 10000 --test-frames 4000 --seeds 0,1

Each prints one JSON line per row. Measured (BENCHMARKS.md, Video, "The ceiling of these layers"): moving Fashion-MNIST,
10k frames, the probe fitted on the stream: backprop ceiling 79.37 / 76.82 % (seeds 0 / 1) against FF 74.95 / 74.48 %
and untrained 65.30 / 69.80 %; the probe fitted on 15,000 distinct garments instead: FF 84.78 / 85.10 %. The ceiling trains the very FFStack layers (same forward: the input RMS-normalised,
conv, ReLU, the channel-normalised map going up) end to end through a linear head on the probe's own pooled features,
on shuffled frames with labels, each shown as the probe shows it (the recipe's stacked layer 1: the frame beside
itself); then the frozen layers are read by `video_study`'s probe, exactly as FF's are. (A stacked layer read on
[x, x] is a single-frame layer with W_a + W_b, so single frames would give the same ceiling.)
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from ffstream.bench.video_study import (StudyConfig, as_input, cached_video, ff_features, make_stack, pooled_features, probe,
                                        stacked, study_from_recipe, train_ff)
from ffstream.ff.pairs import self_pairs
from ffstream.ff.spatial import channel_normalize
from ffstream.ff.stack import FFStack
from ffstream.sources.moving_fashion import GARMENT


def stack_forward(stack: FFStack, x: torch.Tensor) -> list[torch.Tensor]:
    """FFStack.activities with gradients: every layer's h for x (B, D)."""
    hs = []
    for layer in stack.layers:
        h = layer(x)
        hs.append(h)
        x = layer.normalize(h)
    return hs


def train_supervised(stack: FFStack, cfg: StudyConfig, video: torch.Tensor, labels: torch.Tensor, passes: int, lr: float = 1e-3,
                     batch: int = 64, on_pass=None) -> dict:
    """Backprop through the stack's layers and a linear head on their pooled features, shuffled frames, `passes` passes.
    on_pass(p, stack) is called after each pass (p from 1). Returns the head's loss of the last pass and frames/s."""
    torch.manual_seed(cfg.seed)
    width = sum(2 * layer.cfg.channels for layer in stack.layers)
    # the pooled features sit far from zero and vary little (BENCHMARKS.md, vpipe): standardised by batch norm the
    # head learns in a pass what it otherwise learns in many (the probe standardises its features too)
    head = torch.nn.Sequential(torch.nn.BatchNorm1d(width), torch.nn.Linear(width, int(labels.max()) + 1))
    params = [p for layer in stack.layers for p in (layer.weight, layer.bias)] + list(head.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    started, loss_sum, steps = time.perf_counter(), 0.0, 0
    for p in range(1, passes + 1):
        order = torch.randperm(len(video), generator=gen)
        loss_sum, steps = 0.0, 0
        with torch.enable_grad():
            for s in range(0, len(video), batch):
                rows = order[s : s + batch]
                x = video[rows]
                x = self_pairs(x) if stacked(cfg) else x
                feats = torch.cat([pooled_features(h, cfg.readout) for h in stack_forward(stack, x.flatten(1))], dim=1)
                loss = F.cross_entropy(head(feats), labels[rows])
                opt.zero_grad()
                loss.backward()
                opt.step()
                loss_sum, steps = loss_sum + loss.item(), steps + 1
        if on_pass:
            on_pass(p, stack, head)
    wall = time.perf_counter() - started
    return {"train_loss": round(loss_sum / max(steps, 1), 4), "fps": round(passes * len(video) / wall, 1)}


def centroids(video: torch.Tensor) -> torch.Tensor:
    """(T, C, H, W) -> (T, 2): each frame's (row, column) centre of mass above its darkest pixel (the background)."""
    from ffstream.bench.video_study import centroid

    return torch.cat([centroid(video[i : i + 1024]) for i in range(0, len(video), 1024)])


def window(maps: torch.Tensor, centres: torch.Tensor, frame_hw: tuple[int, int], side: int) -> torch.Tensor:
    """maps (B, C, h, w), centres (B, 2) in frame pixels -> (B, C, side, side): each map sampled (bilinear, zeros
    outside) on a side×side grid around its frame's centre, spanning a garment's extent on that map."""
    b, _, h, w = maps.shape
    fh, fw = frame_hw
    # the window spans GARMENT frame pixels around the centre; in grid_sample's [-1, 1] coordinates (align_corners
    # False) a frame pixel's centre r sits at (2r + 1) / fh - 1 on any map that covers the frame
    span = torch.linspace(-0.5, 0.5, side) * GARMENT * (side - 1) / side
    rows = (2 * (centres[:, 0:1] + span.view(1, -1)) + 1) / fh - 1  # (B, side)
    cols = (2 * (centres[:, 1:2] + span.view(1, -1)) + 1) / fw - 1
    grid = torch.stack([cols.view(b, 1, side).expand(b, side, side), rows.view(b, side, 1).expand(b, side, side)], dim=-1)
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def centred_features(hs: list[torch.Tensor], centres: torch.Tensor, frame_hw: tuple[int, int], grid: int,
                     with_global: bool = False) -> torch.Tensor:
    """Every layer's channel-normalised map read around the garment: the window (about a garment's size on that map)
    mean- and max-pooled, plus its grid×grid cell means; with_global adds the whole map's pooled features too."""
    out = []
    for h in hs:
        n = channel_normalize(h)
        side = max(2, round(GARMENT * h.shape[2] / frame_hw[0]))
        win = window(n, centres, frame_hw, side)
        out += [win.mean(dim=(2, 3)), win.amax(dim=(2, 3))]
        if grid > 1:
            out.append(F.adaptive_avg_pool2d(win, grid).flatten(1))
        if with_global:
            out.append(pooled_features(n, "raw"))
    return torch.cat(out, dim=1)


def stack_centred_features(stack: FFStack, cfg: StudyConfig, video: torch.Tensor, grid: int, with_global: bool = False,
                           chunk: int = 512) -> torch.Tensor:
    frame_hw = tuple(video.shape[2:])
    out = []
    for i in range(0, len(video), chunk):
        x = video[i : i + chunk]
        centres = centroids(x)
        xs = self_pairs(x) if stacked(cfg) else x
        out.append(centred_features(stack.activities(xs.flatten(1)), centres, frame_hw, grid, with_global))
    return torch.cat(out)


def pixel_crops(video: torch.Tensor) -> torch.Tensor:
    """(T, 1, H, W) -> (T, GARMENT²): each frame sampled on a garment-sized grid around its centroid, flattened."""
    frame_hw = tuple(video.shape[2:])
    return torch.cat([window(video[i : i + 1024], centroids(video[i : i + 1024]), frame_hw, GARMENT).flatten(1)
                      for i in range(0, len(video), 1024)])


def static_pixels(sizes: list[int]) -> None:
    """The probe on still, aligned 28×28 Fashion-MNIST pixels (what a perfectly centred pixel readout can give), fitted
    on the first n images of a seeded order of the train split, scored on the whole test split; one JSON line per n."""
    from ffstream.sources.idx import FASHION_MNIST_DIR, load_split

    (xa, ya), (xb, yb) = load_split(FASHION_MNIST_DIR, "train"), load_split(FASHION_MNIST_DIR, "test")
    order = np.random.default_rng(0).permutation(len(xa))
    flat = lambda x: torch.from_numpy(x.reshape(len(x), -1)).float() / 255
    for n in sizes:
        rows = order[:n]
        acc = probe(flat(xa[rows]), torch.from_numpy(ya[rows]).long(), flat(xb), torch.from_numpy(yb).long())
        emit({"row": "still aligned pixels", "garments": n, "accuracy": round(acc * 100, 2)})


def successor_features(stack: FFStack, video: torch.Tensor, grid: int = 0, chunk: int = 512) -> torch.Tensor:
    """As the pipeline reads a stacked layer 1: each frame beside the one before it (the first beside itself), not
    beside itself; globally pooled (grid 0) or centred on the later frame's centroid with grid×grid cells."""
    out = []
    for i in range(0, len(video), chunk):
        x = video[i : i + chunk]
        before = video[max(i - 1, 0) : i - 1 + len(x)] if i > 0 else torch.cat([video[:1], video[: len(x) - 1]])
        hs = stack.activities(torch.cat([before, x], dim=1).flatten(1))
        if grid:
            out.append(centred_features(hs, centroids(x), tuple(video.shape[2:]), grid))
        else:
            out.append(torch.cat([pooled_features(h, "norm") for h in hs], dim=1))
    return torch.cat(out)


def pair_weights(stack: FFStack) -> dict:
    """Layer 1's two halves (the earlier frame's weights W_a, the later's W_b): the mean cosine of W_a and W_b per
    filter, and |W_a + W_b| / (|W_a| + |W_b|), what a frame beside itself still drives."""
    w = stack.layers[0].weight.detach()
    c = w.shape[1] // 2
    a, b = w[:, :c].flatten(1), w[:, c:].flatten(1)
    return {"cos_ab": round(float(F.cosine_similarity(a, b).mean()), 3),
            "self_gain": round(float(((a + b).norm(dim=1) / (a.norm(dim=1) + b.norm(dim=1))).mean()), 3)}


def emit(row: dict) -> None:
    print(json.dumps(row), flush=True)


def readouts(name: str, stack: FFStack, cfg: StudyConfig, data, grids: list[int], extra: dict) -> None:
    """Probe the stack with the global readout and the centred one at each grid; one JSON line each."""
    (video, labels), (test_video, test_labels), sub = data[:3]
    if len(data) > 3:  # a probe set of its own
        (video, labels), sub = data[3], slice(None)
    extra = {**extra, "probe_frames": len(video[sub])}
    started = time.perf_counter()
    acc = probe(ff_features(stack, cfg, video[sub]), labels[sub], ff_features(stack, cfg, test_video), test_labels)
    emit({"row": name, "readout": "global", "accuracy": round(acc * 100, 2), "s": round(time.perf_counter() - started), **extra})
    for g in grids:
        started = time.perf_counter()
        acc = probe(stack_centred_features(stack, cfg, video[sub], g), labels[sub],
                    stack_centred_features(stack, cfg, test_video, g), test_labels)
        emit({"row": name, "readout": f"centred g{g}", "accuracy": round(acc * 100, 2), "s": round(time.perf_counter() - started),
              **extra})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("ceiling", "centred", "pixels", "static", "pairread"))
    p.add_argument("--garments", default="334,1012,60000", help="static: train set sizes (distinct images)")
    p.add_argument("--frames", type=int, default=10_000)
    p.add_argument("--test-frames", type=int, default=4_000)
    p.add_argument("--probe-every", type=int, default=2)
    p.add_argument("--seeds", default="0")
    p.add_argument("--passes", default="1,3,5", help="ceiling: probe after each of these passes")
    p.add_argument("--lr", type=float, default=1e-3, help="ceiling: Adam's learning rate")
    p.add_argument("--grids", default="", help="centred readouts to add, e.g. 1,2,3")
    p.add_argument("--cache", default="/tmp/vcache")
    p.add_argument("--distinct", type=int, default=0,
                   help="ceiling: train on this many frames of a stream whose every frame is a new garment (segment 1), "
                        "not on the probe's stream; the probe still reads the usual streams")
    p.add_argument("--probe-distinct", type=int, default=0,
                   help="fit the probe on this many frames of new garments (one a frame) instead of the training stream")
    p.add_argument("--negatives", default="", help="override the recipe's (hybrid: a single-frame layer 1)")
    args = p.parse_args()
    torch.set_num_threads(1)
    import os

    os.makedirs(args.cache, exist_ok=True)
    if args.what == "static":
        static_pixels([int(n) for n in args.garments.split(",")])
        return
    (a, b), (c, d) = cached_video(args.cache, "fashion", args.frames, args.test_frames)
    base = study_from_recipe("video", **({"negatives": args.negatives} if args.negatives else {}))
    video, labels = as_input(a, base.center), torch.from_numpy(b).long()
    test_video, test_labels = as_input(c, base.center), torch.from_numpy(d).long()
    sub = slice(0, None, args.probe_every)
    data = ((video, labels), (test_video, test_labels), sub)
    if args.probe_distinct:  # the probe fitted on frames of new garments, one a frame, not on the training stream
        from ffstream.sources.moving_fashion import moving_fashion

        frames, classes = moving_fashion(args.probe_distinct, "train", 11, segment=(1, 1))
        data = ((video, labels), (test_video, test_labels), sub,
                (as_input(frames, base.center), torch.from_numpy(classes).long()))
    grids = [int(g) for g in args.grids.split(",") if g]
    size = {"frames": args.frames, "test_frames": args.test_frames}
    if args.what == "pixels":
        if len(data) > 3:
            video, labels = data[3]
            sub = slice(None)
        for name, tr, te in (("pixels", video[sub].flatten(1), test_video.flatten(1)),
                             ("pixels cropped", pixel_crops(video[sub]), pixel_crops(test_video))):
            emit({"row": name, "accuracy": round(probe(tr, labels[sub], te, test_labels) * 100, 2), "probe_frames": len(tr), **size})
        return
    for seed in [int(s) for s in args.seeds.split(",")]:
        cfg = replace(base, seed=seed)
        if args.what == "pairread":
            for name in ("untrained", "FF in order"):
                stack = make_stack(cfg, tuple(video.shape[1:]))
                if name != "untrained":
                    train_ff(stack, cfg, video)
                for g in [0] + grids:
                    acc = probe(successor_features(stack, video, g)[sub], labels[sub], successor_features(stack, test_video, g),
                                test_labels)
                    emit({"row": name, "readout": f"successor pairs, {'global' if not g else f'centred g{g}'}",
                          "accuracy": round(acc * 100, 2), "seed": seed, **pair_weights(stack), **size})
            continue
        if args.what == "ceiling":
            passes = sorted(int(v) for v in args.passes.split(","))
            stack = make_stack(cfg, tuple(video.shape[1:]))

            def on_pass(p, stack, head, cfg=cfg):
                if p in passes:
                    head.eval()
                    with torch.no_grad():
                        feats = torch.cat([ff_features_head(stack, cfg, test_video[i : i + 512]) for i in range(0, len(test_video), 512)])
                        head_acc = float((head(feats).argmax(1) == test_labels).float().mean())
                    readouts("backprop ceiling", stack, cfg, data, grids,
                             {"seed": seed, "passes": p, "head": round(head_acc * 100, 2), "stacked": stacked(cfg),
                              "distinct": args.distinct, **size})
                    head.train()

            learn = (video, labels)
            if args.distinct:
                from ffstream.sources.moving_fashion import moving_fashion

                frames, classes = moving_fashion(args.distinct, "train", seed + 7, segment=(1, 1))
                learn = (as_input(frames, base.center), torch.from_numpy(classes).long())
            info = train_supervised(stack, cfg, *learn, max(passes), lr=args.lr, on_pass=on_pass)
            emit({"row": "backprop ceiling, done", "seed": seed, **info})
        else:
            readouts("untrained", make_stack(cfg, tuple(video.shape[1:])), cfg, data, grids, {"seed": seed, **size})
            stack = make_stack(cfg, tuple(video.shape[1:]))
            info = train_ff(stack, cfg, video)
            readouts("FF in order", stack, cfg, data, grids, {"seed": seed, "learn_s": info["wall_s"], **size})


def ff_features_head(stack: FFStack, cfg: StudyConfig, x: torch.Tensor) -> torch.Tensor:
    """The head's input: every layer's pooled features, as in training (not standardised, unlike the probe's)."""
    xs = self_pairs(x) if stacked(cfg) else x
    return torch.cat([pooled_features(h, cfg.readout) for h in stack.activities(xs.flatten(1))], dim=1)


if __name__ == "__main__":
    main()
