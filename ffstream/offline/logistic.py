"""A logistic probe: multinomial logistic regression on standardised features, fitted by L-BFGS (full batch).

The probe the in-process video study scores with (bench/video_study.py), so that a checkpoint made by the pipeline
and a stack trained in one process are read the same way. On one pipeline checkpoint (`ffstream run --recipe video`,
30k shapes frames) it read 91.9 % where the ridge probe read 84.0 %: least squares on one-hot targets spends its fit
on frames that are already right, and pooled conv features are far from the Gaussian classes it suits.

    >>> probe = fit_logistic(x, y, num_classes=4)     # doctest: +SKIP
    >>> (probe.predict(x_test) == y_test).float().mean()

One fit, with video_study's small fixed L2 weight on standardised features, so both read a stack alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

L2 = 1e-4  # L2 weight on the weights of the standardised features (video_study's probe: 1e-4)
MAX_ITER = 200  # L-BFGS iterations per fit (video_study's probe: 200)


@dataclass
class LogisticProbe:
    mean: torch.Tensor  # (F,) feature means of the train rows
    scale: torch.Tensor  # (F,) feature standard deviations (1 where a feature is constant)
    weight: torch.Tensor  # (F, K) on standardised features
    bias: torch.Tensor  # (K,)
    l2: float  # the L2 weight it was fitted with

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, F) -> (N,) class indices."""
        with torch.no_grad():
            return (((x.float() - self.mean) / self.scale) @ self.weight + self.bias).argmax(dim=1)


def fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float = L2) -> LogisticProbe:
    """A logistic probe on x: (N, F), y: (N,) int64, fitted from zero weights (the same rows give the same probe)."""
    x, y = x.float(), y.long()
    mean = x.mean(dim=0)
    scale = x.std(dim=0, correction=0)
    scale = torch.where(scale > 1e-6, scale, torch.ones_like(scale))
    xs = (x - mean) / scale  # (N, F)
    w = torch.zeros(x.shape[1], num_classes, requires_grad=True)  # zeros: the fit is deterministic
    c = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, c], lr=1, max_iter=MAX_ITER, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(xs @ w + c, y) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return LogisticProbe(mean, scale, w.detach(), c.detach(), l2)
