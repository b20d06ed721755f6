"""A linear probe on a frozen stack: what its features tell a linear classifier about the labels (`ffstream probe`).

Features are each layer's readout features (`FFStack.readout_features`: the normalised activity, or a conv map
pooled on a small grid), computed once on a train stream and once on a test stream. The probe is a multinomial
logistic regression (offline/logistic.py, the in-process video study's probe) unless `method` is "ridge": ridge
regression onto one-hot targets, in closed form, deterministic, with no learning rate or epochs:

    W = (XᵀX + λI)⁻¹ Xᵀ Y        X: (N, F) standardised features, Y: (N, K) centred one-hot labels

λ is picked from a small grid on the last fifth of the train stream (held out contiguously: neighbouring video frames
are near copies, so a random split would leak), then the probe is refit on all of it. The cost is one eigen-
decomposition of an m×m matrix per fit, m = min(N, F) (the dual form XXᵀ when there are fewer frames than features).

>>> result = probe_checkpoint("ck", train_arrays, test_arrays)   # doctest: +SKIP
>>> result.layers["3"], result.all, result.pixels                  # test accuracies, 0..1
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ffstream.ff import FFStack
from ffstream.ff.checkpoint import CheckpointError
from ffstream.offline.evaluate import batched_features
from ffstream.offline.logistic import LogisticProbe, fit_logistic
from ffstream.offline.score import load_scoring_stack
from ffstream.sources import Preprocess, SourceError, open_source

RIDGES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)  # λ per unit of mean eigenvalue (the features' mean square, summed over rows)
HOLDOUT = 0.2  # the share of the train stream, from its end, that picks λ
METHODS = ("logistic", "ridge")  # probe_stack's `method`; on one pipeline checkpoint (30k shapes frames) 91.9 against 84.0 %


@dataclass
class ProbeResult:
    layers: dict[str, float]  # "1".."L": test accuracy of a probe on that layer's features alone, 0..1
    all: float  # test accuracy of a probe on every layer's features side by side
    pixels: float | None  # test accuracy of a probe on the raw frames, the baseline features must beat; None: skipped
    n_train: int  # frames the probes were fitted on
    n_test: int  # frames they were scored on
    num_classes: int  # label range, the largest label of either stream + 1
    method: str = "logistic"  # which probe (METHODS)

    def to_json(self) -> dict:
        return {"layers": self.layers, "all": self.all, "pixels": self.pixels, "n_train": self.n_train,
                "n_test": self.n_test, "num_classes": self.num_classes, "method": self.method}


@dataclass
class RidgeProbe:
    mean: torch.Tensor  # (F,) feature means of the train rows, float64
    scale: torch.Tensor  # (F,) feature standard deviations (1 where a feature is constant)
    weight: torch.Tensor  # (F, K) on standardised features
    bias: torch.Tensor  # (K,) the train rows' class frequencies
    ridge: float  # the λ picked, per unit of mean eigenvalue

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, F) -> (N,) class indices."""
        return (((x.double() - self.mean) / self.scale) @ self.weight + self.bias).argmax(dim=1)


def fit_ridge(x: torch.Tensor, y: torch.Tensor, num_classes: int, ridges: tuple[float, ...] = RIDGES) -> RidgeProbe:
    """A ridge probe on x: (N, F), y: (N,) int64; λ picked on the last HOLDOUT of the rows when there are several."""
    x, y = x.double(), y.long()
    held = int(len(x) * HOLDOUT)
    ridge = ridges[0]
    if len(ridges) > 1 and held >= 1 and len(x) - held >= 2:
        fit = _fit(x[:-held], y[:-held], num_classes, ridges)
        scores = [float((probe.predict(x[-held:]) == y[-held:]).double().mean()) for probe in fit]
        ridge = ridges[int(np.argmax(scores))]  # the first best: the smallest λ among ties
    return _fit(x, y, num_classes, (ridge,))[0]


def _fit(x: torch.Tensor, y: torch.Tensor, num_classes: int, ridges: tuple[float, ...]) -> list[RidgeProbe]:
    """One eigendecomposition, a probe per λ."""
    mean = x.mean(dim=0)
    scale = x.std(dim=0, correction=0)
    scale = torch.where(scale > 1e-8, scale, torch.ones_like(scale))
    xs = (x - mean) / scale  # (N, F)
    targets = torch.nn.functional.one_hot(y, num_classes).double()  # (N, K)
    bias = targets.mean(dim=0)
    targets = targets - bias
    primal = xs.shape[1] <= xs.shape[0]
    gram = xs.T @ xs if primal else xs @ xs.T  # (F, F) or (N, N)
    eigenvalues, vectors = torch.linalg.eigh(gram)
    eigenvalues = eigenvalues.clamp(min=0)
    unit = float(eigenvalues.sum()) / xs.shape[1] or 1.0  # the mean eigenvalue of XᵀX, whichever form: λ means the same in both
    projected = vectors.T @ (xs.T @ targets if primal else targets)  # (m, K)
    probes = []
    for ridge in ridges:
        solved = vectors @ (projected / (eigenvalues + ridge * unit)[:, None])  # (m, K)
        weight = solved if primal else xs.T @ solved  # (F, K)
        probes.append(RidgeProbe(mean, scale, weight, bias, ridge))
    return probes


def accuracy(probe: RidgeProbe | LogisticProbe, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((probe.predict(x) == y).double().mean())


def layer_features(stack: FFStack, x: torch.Tensor, num_classes: int | None) -> list[torch.Tensor]:
    """x: (N, D) frames -> one (N, F_l) tensor per layer, from a single pass (`FFStack.readout_features`)."""
    layers = list(range(len(stack)))
    with torch.no_grad():
        widths = [stack.readout_features(x[:1], num_classes, [i]).shape[1] for i in layers]
    features = batched_features(lambda rows: stack.readout_features(rows, num_classes, layers), x)
    return list(features.split(widths, dim=1))


def probe_stack(stack: FFStack, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                input_classes: int | None = None, pixels: bool = True, method: str = "logistic") -> ProbeResult:
    """train, test: (float32 (N, C, H, W) frames, int64 (N,) labels). input_classes: the label slots a supervised
    stack reads (filled with the neutral label), None for an unsupervised one. pixels: also probe the raw frames.
    method: "logistic" or "ridge" (METHODS)."""
    if method not in METHODS:
        raise ValueError(f"probe method must be one of {METHODS}, got {method!r}")
    fit = fit_logistic if method == "logistic" else fit_ridge
    (x_train, y_train), (x_test, y_test) = ((torch.from_numpy(np.ascontiguousarray(x, np.float32)).flatten(1),
                                             torch.from_numpy(np.asarray(y, np.int64))) for x, y in (train, test))
    if x_train.shape[1] != stack.layers[0].cfg.in_features:
        raise SourceError(f"frames of {x_train.shape[1]} values do not fit layer 1, which takes {stack.layers[0].cfg.in_features}")
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    per_train = layer_features(stack, x_train, input_classes)
    per_test = layer_features(stack, x_test, input_classes)

    def score(a: torch.Tensor, b: torch.Tensor) -> float:
        return accuracy(fit(a, y_train, num_classes), b, y_test)

    return ProbeResult(
        layers={str(i): score(a, b) for i, (a, b) in enumerate(zip(per_train, per_test), start=1)},
        all=score(torch.cat(per_train, dim=1), torch.cat(per_test, dim=1)),
        pixels=score(x_train, x_test) if pixels else None,
        n_train=len(y_train),
        n_test=len(y_test),
        num_classes=num_classes,
        method=method,
    )


def probe_checkpoint(directory: str | os.PathLike, train_spec: str, test_spec: str, *, train_labels: str | None = None,
                     test_labels: str | None = None, max_frames: int | None = None, pixels: bool = True,
                     method: str = "logistic") -> ProbeResult:
    """The stack saved in `directory`, probed on the first `max_frames` frames of two labelled sources."""
    stack, meta, preprocess = load_scoring_stack(directory)
    if not isinstance(stack, FFStack):  # its layers also take the state from above: a plain forward pass would be wrong
        raise CheckpointError(f"{directory} holds a recurrent (--recurrent) stack; ffstream probe reads feedforward stacks only")
    input_classes = meta.get("num_classes") if meta.get("task") != "unsupervised" else None
    train = labelled_frames(train_spec, preprocess, train_labels, max_frames)
    test = labelled_frames(test_spec, preprocess, test_labels, max_frames)
    return probe_stack(stack, train, test, input_classes, pixels=pixels, method=method)


def labelled_frames(spec: str, preprocess: Preprocess, labels: str | None = None, max_frames: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The first max_frames frames of a labelled source in stream order (datasets unshuffled): (N, C, H, W), (N,)."""
    with open_source(spec, preprocess, labels=labels, shuffle=False) as src:
        if src.num_classes is None:
            raise SourceError(f"{spec} has no labels: a probe needs a labelled source (a video file with a frame,label "
                              f"CSV beside it or named by --labels, synthetic[:N][:seed=S], fashion-mnist, idx:DIR)")
        pixels, labels_out = [], []
        for frame in src:
            pixels.append(frame.pixels)
            labels_out.append(frame.label)
            if max_frames is not None and len(pixels) >= max_frames:
                break
    if not pixels:
        raise SourceError(f"no frames in {spec}")
    return np.stack(pixels), np.asarray(labels_out, dtype=np.int64)
