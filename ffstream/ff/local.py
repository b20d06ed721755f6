"""A locally-connected FF layer: a filter bank of its own at every location, no weight sharing (the paper's CIFAR net)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ffstream.ff.spatial import SpatialFFLayer


class LocalFFLayer(SpatialFFLayer):
    """h[:, :, y, x] = relu(W[y, x] · patch(x̂, y, x) + b[:, y, x]); goodness per location (see spatial.py).

    W: (L, C', C·kh·kw), one matrix per output location l = y·W' + x; b: (C', H', W').

    >>> from ffstream.ff.spatial import SpatialConfig
    >>> layer = LocalFFLayer(SpatialConfig.build("local", (1, 8, 8), channels=4, kernel=(3, 3), stride=2))
    >>> h, stats = layer.learn(torch.rand(2, 64))
    >>> tuple(h.shape), tuple(layer.weight.shape)
    ((2, 4, 4, 4), (16, 4, 9))
    """

    def initial_parameters(self, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.cfg
        fan_in = c.in_shape[0] * c.kernel[0] * c.kernel[1]
        locations = c.map_hw[0] * c.map_hw[1]
        return torch.randn(locations, c.channels, fan_in, generator=gen) / fan_in**0.5, torch.zeros(c.channels, *c.map_hw)

    def linear_map(self, x: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        patches = F.unfold(x, c.kernel, padding=c.padding, stride=c.stride)  # (B, C·kh·kw, L)
        out = torch.bmm(patches.permute(2, 0, 1), self.weight.transpose(1, 2))  # (L, B, C')
        return out.permute(1, 2, 0).reshape(len(x), c.channels, *c.map_hw) + self.bias
