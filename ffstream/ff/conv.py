"""A convolutional FF layer: one filter bank shared by every location, goodness per location (see spatial.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ffstream.ff.spatial import SpatialFFLayer


class ConvFFLayer(SpatialFFLayer):
    """h = relu(conv(x̂, W) + b), W: (C', C, kh, kw) shared by every location.

    >>> from ffstream.ff.spatial import SpatialConfig
    >>> layer = ConvFFLayer(SpatialConfig.build("conv", (1, 8, 8), channels=4, kernel=(3, 3), stride=2))
    >>> h, stats = layer.learn(torch.rand(2, 64))
    >>> tuple(h.shape)
    (2, 4, 4, 4)
    """

    def initial_parameters(self, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.cfg
        fan_in = c.in_shape[0] * c.kernel[0] * c.kernel[1]
        return torch.randn(c.channels, c.in_shape[0], *c.kernel, generator=gen) / fan_in**0.5, torch.zeros(c.channels)

    def linear_map(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, stride=self.cfg.stride, padding=self.cfg.padding)
