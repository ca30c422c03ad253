"""Tiny networks with the model interface (forward_features, forward, num_classes) whose every
number can be followed by hand."""

from __future__ import annotations

import torch
import torch.nn as nn


class Net(nn.Module):
    """``features`` (a Sequential) then global average pooling and a linear classifier."""

    def __init__(self, features: nn.Sequential, channels: int, num_classes: int = 3) -> None:
        super().__init__()
        self.features = features
        self.fc = nn.Linear(channels, num_classes)
        self.num_classes = num_classes

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x).mean(dim=(2, 3)))


def seeded(net: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter drawn from N(0, 1) with a fixed seed; eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=gen))
    return net.eval()
