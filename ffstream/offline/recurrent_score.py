"""`ffstream score` for a recurrent stack: per-frame goodness with top-down over time, and without it.

The video's frames are the steps, one frame a step, in order, as in a recurrent
run on video: each layer hears the layer above's state of the previous frame
and keeps 0.3 of its own. "Without top-down" runs the same weights with every
top-down input silenced (each layer's damped state is kept), so the difference
between the two is what the feedback from above does to each frame's goodness.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import torch

from ffstream.ff.checkpoint import CheckpointError
from ffstream.ff.recurrent import RecurrentStack
from ffstream.offline.recurrent_eval import load_recurrent_stack
from ffstream.offline.score import Scores, novelty
from ffstream.sources import Preprocess, VideoFileSource


def recurrent_goodness(stack: RecurrentStack, frames: np.ndarray, top_down: bool = True) -> np.ndarray:
    """frames: float32 (N, C, H, W) in time order -> goodness (N, L), one step per frame."""
    x = torch.from_numpy(np.ascontiguousarray(frames, np.float32)).flatten(1)  # (N, D)
    states = stack.initial_states(1)
    top = stack.label_input(None, 1)  # the neutral label (supervised) or nothing
    out = np.empty((len(x), len(stack.layers)))
    for t in range(len(x)):
        _, states = stack.step(x[t : t + 1], top, states, top_down=top_down)
        out[t] = [float(layer.goodness(h)) for layer, h in zip(stack.layers, states)]
    return out


def score_recurrent_video(video: str | os.PathLike, directory: str | os.PathLike) -> tuple[Scores, Scores]:
    """The video's scores with top-down and without it, from the recurrent checkpoints in `directory`."""
    stack, meta = load_recurrent_stack(directory)
    channels, height, width = (int(v) for v in meta.get("frame_shape") or [1, 28, 28])
    if channels * height * width != stack.layers[0].cfg.in_features:
        raise CheckpointError(f"{directory}: layer 1 takes {stack.layers[0].cfg.in_features} values, but its frames are {channels}x{height}x{width}")
    source = VideoFileSource(video, Preprocess(size=(height, width), color=channels == 3))
    with source:
        decoded = [(frame.index, frame.pixels) for frame in source]
    if not decoded:
        raise CheckpointError(f"no frames decoded from {video}")
    frames = np.asarray([i for i, _ in decoded], np.int64)
    pixels = np.stack([p for _, p in decoded])
    rate = source.frame_rate
    thresholds = [float(layer.cfg.theta) for layer in stack.layers]
    variant = stack.layers[0].cfg.variant
    with_top_down = recurrent_goodness(stack, pixels, top_down=True)
    scores = Scores(frames=frames, times=frames / rate if rate else frames.astype(np.float64), goodness=with_top_down,
                    thresholds=thresholds, novelty=novelty(with_top_down, thresholds, variant), frame_rate=rate,
                    source=os.fspath(video), checkpoint_dir=os.fspath(directory))
    without = recurrent_goodness(stack, pixels, top_down=False)
    return scores, dataclasses.replace(scores, goodness=without, novelty=novelty(without, thresholds, variant))


def comparison_line(with_top_down: Scores, without: Scores) -> str:
    """One line: mean goodness / θ, mean novelty and frame-to-frame change of goodness, with and without top-down."""
    def figures(s: Scores) -> str:
        total = s.goodness.sum(axis=1)
        change = float(np.abs(np.diff(total)).mean() / total.mean()) if len(total) > 1 else float("nan")
        ratio = float((s.goodness / np.asarray(s.thresholds)).mean())
        return f"goodness/θ {ratio:.3f}, novelty {float(s.novelty.mean()):+.4f}, frame-to-frame change {change:.4f}"
    return f"recurrent vs feedforward: with top-down {figures(with_top_down)}; without top-down {figures(without)}"
