"""Dense connectivity (Huang et al. 2017, Densely Connected Convolutional Networks, §3).

Layer ℓ of a dense block receives the concatenation of the block input and the outputs of all
layers before it, x_ℓ = H_ℓ([x_0, x_1, ..., x_{ℓ-1}]) (eq. 2), and adds k feature maps (the growth
rate) to it. H_ℓ is a pre-activation composite function BN → ReLU → 3×3 conv, optionally preceded by a
1×1 bottleneck BN → ReLU → conv to 4k channels (DenseNet-B). Transition layers between blocks
(BN → ReLU → 1×1 conv → 2×2 average pooling) halve the resolution and keep ⌊θ·m⌋ of m channels
(compression θ, DenseNet-C).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from dcnn.layers.bn_act_conv import BnActConv


class DenseLayer(nn.Module):
    """One H_ℓ: [bottleneck 1×1 to `bn_size`·k channels →] 3×3 conv to k = `growth_rate` channels
    (submodules `bottleneck`, an Identity when `bn_size` is None, and `composite`).

    Takes the list of all earlier feature maps and returns only the k new ones; the block does the
    concatenation. With `memory_efficient`, the concatenation and bottleneck are recomputed in the
    backward pass instead of stored (Pleiss et al. 2017), trading compute for memory that otherwise
    grows quadratically with depth.
    """

    def __init__(
        self,
        in_channels: int,
        growth_rate: int,
        bn_size: int | None = 4,
        drop_rate: float = 0.0,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        width = bn_size * growth_rate if bn_size else in_channels
        self.bottleneck = BnActConv(in_channels, width, 1, drop_rate=drop_rate) if bn_size else nn.Identity()
        self.composite = BnActConv(width, growth_rate, 3, drop_rate=drop_rate)
        self.memory_efficient = memory_efficient

    def _concat_bottleneck(self, *features: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(torch.cat(features, dim=1))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if self.memory_efficient and torch.is_grad_enabled() and any(f.requires_grad for f in features):
            x = checkpoint(self._concat_bottleneck, *features, use_reentrant=False)
        else:
            x = self._concat_bottleneck(*features)
        return self.composite(x)


class DenseBlock(nn.Module):
    """`num_layers` dense layers; the output concatenates the input and every layer's k new maps,
    in_channels + num_layers·k channels at the input's resolution (submodule list `layers`)."""

    def __init__(
        self,
        num_layers: int,
        in_channels: int,
        growth_rate: int,
        bn_size: int | None = 4,
        drop_rate: float = 0.0,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DenseLayer(in_channels + i * growth_rate, growth_rate, bn_size, drop_rate, memory_efficient)
            for i in range(num_layers)
        )
        self.out_channels = in_channels + num_layers * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, dim=1)


class Transition(BnActConv):
    """BN → ReLU → 1×1 conv to `out_channels` → 2×2 average pooling, stride 2 (§3, "Pooling layers")."""

    def __init__(self, in_channels: int, out_channels: int, drop_rate: float = 0.0) -> None:
        super().__init__(in_channels, out_channels, 1, drop_rate=drop_rate)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)
        self.out_channels = out_channels
