"""The inverted residual with linear bottleneck of MobileNet v2 (Sandler et al. 2018, §3.3, Table 1).

A thin input of d' channels is expanded by a 1×1 convolution to t·d' channels (ReLU6), filtered by a
k×k depthwise convolution (ReLU6, stride s), and projected back by a 1×1 convolution to d'' channels
with no nonlinearity: the bottleneck is linear because ReLU destroys information in a low-dimensional
space (§3.2). The shortcut joins the thin bottlenecks (§3.3, Fig. 3b) when stride is 1 and d' = d''.
For h×w inputs the block costs h·w·d'·t·(d' + k² + d'') mult-adds (§3.3) at stride 1.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from dcnn.layers.conv_bn_act import ConvBnAct


class InvertedResidual(nn.Module):
    """Expansion 1×1 → depthwise k×k → linear projection 1×1, each with batch norm; residual when the
    stride is 1 and the channel count is kept.

    Submodules: `expand` (absent, an Identity, when ``expand_ratio == 1``: the first bottleneck of
    Table 2 starts from the 32-channel stem and needs no expansion), `depthwise`, `project` (no
    activation).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        expand_ratio: float = 6,
        kernel_size: int = 3,
        act: str | type[nn.Module] | None = "relu6",
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2 (Table 1), got {stride}")
        hidden = round(in_channels * expand_ratio)
        self.expand = ConvBnAct(in_channels, hidden, 1, bn_eps=bn_eps, act=act) if expand_ratio != 1 else nn.Identity()
        self.depthwise = ConvBnAct(hidden, hidden, kernel_size, stride=stride, groups=hidden, bn_eps=bn_eps, act=act)
        self.project = ConvBnAct(hidden, out_channels, 1, bn_eps=bn_eps, act=None)
        self.out_channels = out_channels
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.use_residual else out
