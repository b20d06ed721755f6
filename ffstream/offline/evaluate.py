"""Accuracy of saved weights on a labelled split: by energy and by the softmax head (or probe).

A checkpoint directory holds one kind of stack, which layer 1's metadata names: feedforward (`FFStack`), or
recurrent (`RecurrentStack`, from `ffstream run --recurrent`). `load_checkpoints` reads it once and builds that
kind; `evaluate` scores it that kind's way.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ffstream.ff import FFStack, LayerConfig, LinearReadout, checkpoint
from ffstream.ff.negatives import hybrid
from ffstream.ff.recurrent import RecurrentConfig, RecurrentStack
from ffstream.offline.readout_store import load_readout

EVAL_BATCH = 1000  # rows per forward pass; bounds memory, not results
HYBRID_SEED = 1  # the masks of the hybrids `hybrid_auroc` scores: the same for every checkpoint


def load_checkpoints(directory: str | os.PathLike) -> tuple[FFStack | RecurrentStack, dict]:
    """All layer checkpoints in a directory, bottom up, as the kind of stack layer 1's metadata names, and that
    metadata (frame shape, classes, task, and for a recurrent run its iterations, window and damping)."""
    paths = checkpoint.stack_layer_paths(directory)
    configs = [checkpoint.checkpoint_config(p)[0] for p in paths]
    meta = checkpoint.checkpoint_config(paths[0])[1]
    stack = _recurrent_stack(configs, meta) if "recurrent" in meta else FFStack(
        configs, label_scale=float(meta.get("label_scale", 1.0)), label_relative=bool(meta.get("label_relative", False)))
    for layer, path in zip(stack.layers, paths):
        checkpoint.load_layer(path, layer)
    return stack, meta


def _recurrent_stack(configs: list[LayerConfig], meta: dict) -> RecurrentStack:
    r = meta["recurrent"]
    recurrent = RecurrentConfig(iterations=int(r["iterations"]), window=tuple(r["window"]), damping=float(r["damping"]))
    return RecurrentStack(configs, r.get("label_classes"), float(meta.get("label_scale", 1.0)), recurrent)


def load_stack(directory: str | os.PathLike) -> tuple[FFStack, dict]:
    """A feedforward stack's checkpoints; CheckpointError when the directory holds a recurrent one."""
    stack, meta = load_checkpoints(directory)
    if not isinstance(stack, FFStack):
        raise checkpoint.CheckpointError(f"{directory} holds a recurrent (--recurrent) stack, where a feedforward one was expected")
    return stack, meta


def load_recurrent_stack(directory: str | os.PathLike) -> tuple[RecurrentStack, dict]:
    """A recurrent run's checkpoints; CheckpointError when the directory holds a feedforward stack."""
    stack, meta = load_checkpoints(directory)
    if not isinstance(stack, RecurrentStack):
        raise checkpoint.CheckpointError(f"{directory} holds a feedforward stack, where a recurrent (--recurrent) one was expected")
    return stack, meta


def is_recurrent(directory: str | os.PathLike) -> bool:
    """Whether layer 1's metadata says a recurrent run saved it (False when there is no layer 1)."""
    path = checkpoint.layer_path(directory, 1)
    return path.exists() and "recurrent" in checkpoint.checkpoint_config(path)[1]


def energy_accuracies(stack: FFStack, x: torch.Tensor, y: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Accuracy by energy, from one pass per label: goodness summed over layers 2..L (`accuracy_energy`, the
    paper's readout), over every layer (`accuracy_energy_all_layers`: layer 1 sees the label itself, and
    measured on 3×1000 after 5 epochs it was the best single layer, 86.6 % against 85.6 and 84.0 %), and
    the last layer's alone (`accuracy_energy_last_layer`, CwComp's published readout)."""
    first = 1 if len(stack) > 1 else 0
    correct = {"accuracy_energy": 0, "accuracy_energy_all_layers": 0, "accuracy_energy_last_layer": 0}
    for start in range(0, len(x), EVAL_BATCH):
        per_layer = stack.label_goodness(x[start : start + EVAL_BATCH], num_classes)
        truth = y[start : start + EVAL_BATCH]
        correct["accuracy_energy"] += int((per_layer[:, :, first:].sum(dim=2).argmax(dim=1) == truth).sum())
        correct["accuracy_energy_all_layers"] += int((per_layer.sum(dim=2).argmax(dim=1) == truth).sum())
        correct["accuracy_energy_last_layer"] += int((per_layer[:, :, -1].argmax(dim=1) == truth).sum())
    return {key: hits / len(x) for key, hits in correct.items()}


def hybrid_auroc(stack: FFStack, x: torch.Tensor, frame_shape: tuple[int, int, int]) -> float:
    """How well a competing stack tells real frames from the sleep worker's kind of negative: the area under the ROC
    curve of the last layer's top class probability, real frames (x: (N, D)) against hybrids of them (each blended
    with the frame N/2 rows on through the paper's mask). 1: every real frame scores above every hybrid; 0.5: chance."""
    frames = x.view(len(x), *frame_shape)
    hybrids = hybrid(frames, frames.roll(len(x) // 2, dims=0), torch.Generator().manual_seed(HYBRID_SEED)).flatten(1)
    classes = stack.layers[-1].cfg.competition
    scores = []
    for batch in (x, hybrids):
        scores.append(torch.cat([torch.softmax(stack.label_goodness(batch[i : i + EVAL_BATCH], classes)[:, :, -1], dim=1).amax(dim=1)
                                 for i in range(0, len(batch), EVAL_BATCH)]))
    real, hybrid_scores = scores[0], scores[1].sort().values
    # the chance that a real frame outranks a hybrid, a tie counting half: hybrids below each real frame's score
    below = torch.searchsorted(hybrid_scores, real, side="left") + torch.searchsorted(hybrid_scores, real, side="right")
    return float(below.double().mean() / 2 / len(hybrid_scores))


def readout_accuracy(stack: FFStack, readout: LinearReadout, layers: Sequence[int], x: torch.Tensor, y: torch.Tensor, num_classes: int | None) -> float:
    """num_classes: the label slots to fill with the neutral label (supervised stacks), None for unsupervised ones."""
    correct = 0
    for start in range(0, len(x), EVAL_BATCH):
        features = stack.readout_features(x[start : start + EVAL_BATCH], num_classes, layers)
        correct += int((readout.predict(features) == y[start : start + EVAL_BATCH]).sum())
    return correct / len(x)


def evaluate(directory: str | os.PathLike, images: np.ndarray, labels: np.ndarray) -> dict:
    """images: (N, C, H, W) float32 as the source delivers them; labels: (N,). Each stack kind is scored its own way."""
    stack, meta = load_checkpoints(directory)
    x = torch.from_numpy(np.ascontiguousarray(images, np.float32)).flatten(1)  # (N, D)
    y = torch.from_numpy(labels.astype(np.int64))
    if x.shape[1] != stack.layers[0].cfg.in_features:
        raise checkpoint.CheckpointError(
            f"frames of {x.shape[1]} values do not fit layer 1, which takes {stack.layers[0].cfg.in_features} (frame shape {meta.get('frame_shape')})"
        )
    result = {"n": len(x), "layers": [layer.cfg.width for layer in stack.layers], "task": meta.get("task")}
    try:
        readout: tuple[LinearReadout, list[int]] | None = load_readout(directory)
    except checkpoint.CheckpointError as exc:
        readout = None
        result["readout_error"] = str(exc)
    with torch.no_grad():
        if isinstance(stack, RecurrentStack):
            result.update(recurrent=meta["recurrent"], **_recurrent_accuracies(stack, readout, x, y))
        else:
            result.update(_feedforward_accuracies(stack, meta, readout, x, y))
    return result


def _feedforward_accuracies(stack: FFStack, meta: dict, readout: tuple[LinearReadout, list[int]] | None,
                            x: torch.Tensor, y: torch.Tensor) -> dict:
    """By energy (supervised), the hybrids' AUROC (competing stacks) and by the softmax head or probe, if saved."""
    supervised_classes = meta.get("num_classes")
    result: dict = (energy_accuracies(stack, x, y, supervised_classes) if supervised_classes
                    else {"accuracy_energy": None, "accuracy_energy_all_layers": None, "accuracy_energy_last_layer": None})
    if stack.competes:
        result["hybrid_auroc"] = hybrid_auroc(stack, x, tuple(meta["frame_shape"]))
    result["accuracy_softmax"] = readout_accuracy(stack, *readout, x, y, supervised_classes) if readout else None
    return result


def _recurrent_accuracies(stack: RecurrentStack, readout: tuple[LinearReadout, list[int]] | None, x: torch.Tensor, y: torch.Tensor) -> dict:
    """The paper's energy (each label clamped at the top, goodness summed over the window of iterations) and the
    softmax head on the window's last step with a neutral label."""
    energy = softmax = 0
    for start in range(0, len(x), EVAL_BATCH):
        xb, yb = x[start : start + EVAL_BATCH], y[start : start + EVAL_BATCH]
        if stack.num_classes:
            energy += int((stack.label_scores(xb).argmax(dim=1) == yb).sum())
        if readout is not None:
            head, layers = readout
            softmax += int((head.predict(stack.readout_features(xb, layers)) == yb).sum())
    return {"accuracy_energy": energy / len(x) if stack.num_classes else None,
            "accuracy_softmax": softmax / len(x) if readout is not None else None}


def batched_features(features: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """features(frames) over x in EVAL_BATCH chunks, without gradients."""
    with torch.no_grad():
        return torch.cat([features(x[i : i + EVAL_BATCH]) for i in range(0, len(x), EVAL_BATCH)])


def fit_probe(features: torch.Tensor, y: torch.Tensor, num_classes: int, epochs: int = 3, lr: float = 1e-3, seed: int = 0) -> LinearReadout:
    """A linear probe trained after the fact on frozen features (N, F), shuffled minibatches of 100."""
    probe = LinearReadout(features.shape[1], num_classes, lr=lr, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(features), generator=gen)
        for i in range(0, len(features), 100):
            rows = order[i : i + 100]
            probe.learn(features[rows], y[rows])
    return probe
