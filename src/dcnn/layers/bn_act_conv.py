"""The pre-activation unit BN → ReLU → convolution, shared by pre-activation ResNets (He et al. 2016b,
"Identity Mappings in Deep Residual Networks", Fig. 4e) and DenseNets (Huang et al. 2017, §3, the
composite function H_ℓ)."""

from __future__ import annotations

import torch.nn as nn

from dcnn.layers.conv_bn_act import same_padding

DROPOUT_PLACES = ("before_conv", "after_conv")


class BnActConv(nn.Sequential):
    """Batch norm → ReLU → convolution (bias-free, "same" padding), submodules `bn`, `act`, `conv`.

    With `drop_rate` > 0 a `drop` dropout joins them, where the paper puts it (`dropout`):
    "before_conv" between the ReLU and the convolution (Wide ResNets, Zagoruyko & Komodakis 2016,
    §2.4), or "after_conv" after the convolution (DenseNet, Huang et al. 2017, §4.2).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        drop_rate: float = 0.0,
        dropout: str = "after_conv",
    ) -> None:
        super().__init__()
        if dropout not in DROPOUT_PLACES:
            raise ValueError(f"dropout must be one of {DROPOUT_PLACES}, got {dropout!r}")
        self.bn = nn.BatchNorm2d(in_channels)
        self.act = nn.ReLU()
        if drop_rate > 0 and dropout == "before_conv":
            self.drop = nn.Dropout(drop_rate)
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=same_padding(kernel_size),
            groups=groups,
            bias=False,
        )
        if drop_rate > 0 and dropout == "after_conv":
            self.drop = nn.Dropout(drop_rate)
