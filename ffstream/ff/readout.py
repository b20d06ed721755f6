"""A linear softmax readout: the supervised head, and the probe of unsupervised features."""

from __future__ import annotations

import torch
from torch import nn

from ffstream.ff.optim import Adam


class LinearReadout(nn.Module):
    """logits = A·f + c on features f: (B, F), learnt online by cross-entropy (predict, then learn)."""

    def __init__(self, in_features: int, num_classes: int, lr: float = 1e-3, seed: int = 0):
        super().__init__()
        # nn.Linear draws from the global generator; fork it so that the caller's random stream is left alone.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.linear = nn.Linear(in_features, num_classes)
        self.optimizer = Adam(self.parameters(), lr=lr)  # fused: torch.optim's unfused Adam differs in the last bits

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self(features).argmax(dim=1)

    def learn(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        with torch.enable_grad():
            loss = nn.functional.cross_entropy(self(features.detach()), labels.long())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        self.optimizer.step()
        return float(loss.detach())
