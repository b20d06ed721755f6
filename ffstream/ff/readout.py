"""A linear softmax readout: the supervised head, and the probe of unsupervised features."""

from __future__ import annotations

import torch
from torch import nn

from ffstream.ff.optim import Adam

MOMENTS_PREFIX = "adam."  # the optimiser's state, saved beside a head's weights (readout_store.py)


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

    def moments(self) -> dict[str, torch.Tensor]:
        """Adam's state per parameter (step, first and second moments), as tensors to save beside the weights."""
        return {f"{MOMENTS_PREFIX}{name}.{key}": torch.as_tensor(value).detach().clone()
                for name, param in self.named_parameters() for key, value in self.optimizer.state.get(param, {}).items()}

    def restore_moments(self, saved: dict[str, torch.Tensor]) -> bool:
        """Adam's state from `moments()` (a resumed head goes on where it was instead of taking Adam's large first
        steps again); False, and nothing changed, when it does not fit these parameters."""
        state = {}
        for index, (name, param) in enumerate(self.named_parameters()):
            entry = {key: saved.get(f"{MOMENTS_PREFIX}{name}.{key}") for key in ("step", "exp_avg", "exp_avg_sq")}
            if any(v is None for v in entry.values()) or entry["exp_avg"].shape != param.shape or entry["exp_avg_sq"].shape != param.shape:
                return False
            state[index] = entry
        groups = self.optimizer.state_dict()["param_groups"]  # this head's hyperparameters (its lr), not the saved ones
        self.optimizer.load_state_dict({"state": state, "param_groups": groups})
        return True

    def learn(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        with torch.enable_grad():
            loss = nn.functional.cross_entropy(self(features.detach()), labels.long())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        self.optimizer.step()
        return float(loss.detach())
