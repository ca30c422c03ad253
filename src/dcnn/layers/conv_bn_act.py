"""Convolution, optional batch normalization, activation: the unit most modern CNNs repeat."""

from __future__ import annotations

import torch.nn as nn

from dcnn.layers.activations import get_act


def same_padding(kernel_size: int | tuple[int, int], dilation: int = 1) -> int | tuple[int, int]:
    """Padding that keeps the spatial size at stride 1 for odd kernels (k // 2 per dimension)."""
    if isinstance(kernel_size, int):
        return dilation * (kernel_size - 1) // 2
    return tuple(dilation * (k - 1) // 2 for k in kernel_size)  # type: ignore[return-value]


class ConvBnAct(nn.Sequential):
    """Conv2d → BatchNorm2d → activation, with submodules named `conv`, `bn`, `act`.

    Without `norm` the conv gets a bias (unless told otherwise) and there is no `bn`; with `act=None`
    there is no `act`. Factorized 1×n / n×1 kernels are given as tuples, e.g. ``kernel_size=(1, 7)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | None = None,
        groups: int = 1,
        dilation: int = 1,
        bias: bool | None = None,
        norm: bool = True,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        act: str | type[nn.Module] | None = "relu",
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=same_padding(kernel_size, dilation) if padding is None else padding,
            dilation=dilation,
            groups=groups,
            bias=(not norm) if bias is None else bias,
        )
        if norm:
            self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)
        if act is not None:
            self.act = get_act(act)()

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels
