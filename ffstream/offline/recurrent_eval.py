"""Accuracy of saved recurrent weights: the paper's energy (each label clamped at the top, goodness summed over
the window of iterations) and the softmax head on the window's last step with a neutral label."""

from __future__ import annotations

import os

import torch

from ffstream.ff import checkpoint
from ffstream.ff.recurrent import RecurrentConfig, RecurrentStack
from ffstream.offline.readout_store import load_readout

EVAL_BATCH = 1000  # rows per pass; bounds memory, not results


def load_recurrent_stack(directory: str | os.PathLike) -> tuple[RecurrentStack, dict]:
    """The layer checkpoints of a recurrent run, bottom up, as one RecurrentStack, and layer 1's metadata."""
    paths = checkpoint.stack_layer_paths(directory)
    configs = [checkpoint.checkpoint_config(p)[0] for p in paths]
    meta = checkpoint.checkpoint_config(paths[0])[1]
    r = meta["recurrent"]
    recurrent = RecurrentConfig(iterations=int(r["iterations"]), window=tuple(r["window"]), damping=float(r["damping"]))
    stack = RecurrentStack(configs, r.get("label_classes"), float(meta.get("label_scale", 1.0)), recurrent)
    for layer, path in zip(stack.layers, paths):
        checkpoint.load_layer(path, layer)
    return stack, meta


def is_recurrent(directory: str | os.PathLike) -> bool:
    path = checkpoint.layer_path(directory, 1)
    return path.exists() and "recurrent" in checkpoint.checkpoint_config(path)[1]


def evaluate_recurrent(directory: str | os.PathLike, x: torch.Tensor, y: torch.Tensor) -> dict:
    """x: (N, D) frames as the source delivers them, flattened; y: (N,) labels."""
    stack, meta = load_recurrent_stack(directory)
    if x.shape[1] != stack.layers[0].cfg.in_features:
        raise checkpoint.CheckpointError(f"frames of {x.shape[1]} values do not fit layer 1, which takes {stack.layers[0].cfg.in_features}")
    result = {"n": len(x), "layers": [layer.cfg.width for layer in stack.layers], "task": meta.get("task"), "recurrent": meta["recurrent"]}
    energy = softmax = 0
    try:
        readout, layers = load_readout(directory)
    except checkpoint.CheckpointError as exc:
        readout, layers = None, None
        result["readout_error"] = str(exc)
    with torch.no_grad():
        for start in range(0, len(x), EVAL_BATCH):
            xb, yb = x[start : start + EVAL_BATCH], y[start : start + EVAL_BATCH]
            if stack.num_classes:
                energy += int((stack.label_scores(xb).argmax(dim=1) == yb).sum())
            if readout is not None:
                softmax += int((readout.predict(stack.readout_features(xb, layers)) == yb).sum())
    result["accuracy_energy"] = energy / len(x) if stack.num_classes else None
    result["accuracy_softmax"] = softmax / len(x) if readout is not None else None
    return result
