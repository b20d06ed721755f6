"""The in-process reference: the pipeline's layers, data, negatives and readout in one process, zero staleness.

Every batch: the readout predicts, then learns, on a forward-only pass (as
the sink does); then each layer takes one step on the positive batch plus a
negative batch made from it (as the sleep worker does), with the negatives
judged by the current weights. It shares every line of maths with the workers.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ffstream.config import RunConfig
from ffstream.ff import FFStack, LinearReadout, embed_label
from ffstream.ff.checkpoint import layer_path, save_layer
from ffstream.ff.dreamer import Dreamer
from ffstream.ff.stack import readout_layers
from ffstream.offline.readout_store import save_readout
from ffstream.sources import Preprocess, open_source


def batches(source, size: int, limit: int | None):
    """(pixels (B, C, H, W), labels or None) in the order the source worker would send them."""
    frames, sent = [], 0
    for frame in source:
        frames.append(frame)
        if len(frames) == size or (limit is not None and sent + len(frames) >= limit):
            yield np.stack([f.pixels for f in frames]), [f.label for f in frames] if frames[0].label is not None else None
            sent += len(frames)
            frames = []
            if limit is not None and sent >= limit:
                return
    if frames:
        yield np.stack([f.pixels for f in frames]), [f.label for f in frames] if frames[0].label is not None else None


def train_reference(cfg: RunConfig, checkpoint_dir: str | Path, with_negatives: bool = True) -> dict:
    """Train in one process and save checkpoints like the pipeline's; returns frames, wall time and accuracy."""
    s = cfg.stream
    torch.manual_seed(s.seed)
    stack = FFStack(cfg.layer_configs(), label_scale=cfg.model.label_scale, label_relative=cfg.model.label_relative)
    classes = s.num_classes if s.supervised else None
    with_negatives = with_negatives and cfg.sleep.enabled
    dreamer = Dreamer(cfg.sleep_plan().negatives, classes, cfg.sleep.reservoir, s.seed) if with_negatives else None
    layers = readout_layers(len(stack), s.supervised)
    readout: LinearReadout | None = None
    frames = correct = evaluated = 0
    started = time.time()
    with open_source(s.source, Preprocess(size=s.size, color=s.color), seed=s.seed, epochs=s.epochs, labels=s.labels) as source:
        schedule = cfg.rate_schedule()
        for index, (pixels, labels) in enumerate(batches(source, s.batch, s.max_frames)):
            stack.set_lr_scale(schedule.scale(frames))
            flat = torch.from_numpy(pixels).flatten(1)
            y = torch.tensor(labels) if labels is not None else None
            if y is not None and s.eval_every and index % s.eval_every == 0:
                features = stack.readout_features(flat, classes, layers)
                if readout is None:
                    readout = LinearReadout(features.shape[1], s.num_classes, lr=cfg.model.readout_lr, seed=s.seed)
                correct += int((readout.predict(features) == y).sum())
                evaluated += len(y)
                readout.learn(features, y)
            x = embed_label(flat, y, classes, stack.label_scale, stack.label_relative) if classes and not stack.competes else flat
            if dreamer is None:
                stack.learn_positive(x, y if stack.competes else None)
            else:
                head = (readout, layers) if readout is not None else None
                negatives = dreamer.negatives(pixels, labels, stack, head)
                dreamer.observe(pixels)
                stack.learn_interleaved(x, negatives, y if stack.competes else None)
            frames += len(flat)
    wall = time.time() - started
    meta = {"num_classes": classes, "label_scale": stack.label_scale, "label_relative": stack.label_relative, "frame_shape": [3 if s.color else 1, *s.size], "task": s.task}
    for i, layer in enumerate(stack.layers, start=1):
        save_layer(layer_path(checkpoint_dir, i), layer, {"index": i, **meta})
    if readout is not None:
        save_readout(checkpoint_dir, readout, layers, s.num_classes)
    return {"frames": frames, "wall_s": round(wall, 2), "fps": round(frames / wall, 1), "progressive_accuracy": correct / evaluated if evaluated else None}
