"""Depthwise-separable convolution: a k×k depthwise convolution (one filter per input channel) followed
by a 1×1 pointwise convolution that mixes channels (Sifre 2014; Howard et al. 2017, §3.1; Chollet 2017, §2).

A standard k×k convolution from M to N channels on a D_F×D_F map costs k²·M·N·D_F² mult-adds
(MobileNet eq. 2); the separable one costs k²·M·D_F² + M·N·D_F² (eq. 5), a fraction 1/N + 1/k²
of it. The two papers differ in what sits between the two convolutions:

- MobileNet (Howard et al. 2017, Fig. 3): batch norm and ReLU after both convolutions.
- Xception (Chollet 2017, §4.7 and Fig. 10): nothing between them ("absence of any
  non-linearity leads to both faster convergence and better final performance"), batch norm after
  the pointwise convolution.
"""

from __future__ import annotations

import torch.nn as nn

from dcnn.layers.conv_bn_act import ConvBnAct


class SeparableConv2d(nn.Sequential):
    """Depthwise k×k convolution then pointwise 1×1 convolution: submodules `depthwise` and
    `pointwise`, each a :class:`~dcnn.layers.conv_bn_act.ConvBnAct`.

    The stride (and dilation) applies to the depthwise convolution. `norm`/`act` configure what
    follows the pointwise convolution, `depthwise_norm`/`depthwise_act` what follows the depthwise one:
    the defaults give MobileNet's unit (BN + ReLU after each); ``depthwise_norm=False,
    depthwise_act=None, act=None`` gives Xception's (BN only, after the pointwise convolution).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        dilation: int = 1,
        norm: bool = True,
        act: str | type[nn.Module] | None = "relu",
        depthwise_norm: bool = True,
        depthwise_act: str | type[nn.Module] | None = "relu",
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.depthwise = ConvBnAct(
            in_channels,
            in_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=in_channels,
            bias=False,
            norm=depthwise_norm,
            bn_eps=bn_eps,
            act=depthwise_act,
        )
        self.pointwise = ConvBnAct(in_channels, out_channels, 1, norm=norm, bn_eps=bn_eps, act=act)

    @property
    def out_channels(self) -> int:
        return self.pointwise.out_channels
