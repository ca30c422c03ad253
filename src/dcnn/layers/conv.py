"""Convolutions with a faster path for a common special case."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class WholeMapConv2d(nn.Conv2d):
    """A convolution whose kernel is meant to cover its whole input map, as LeNet-5's C5 (5×5
    kernels on 5×5 maps, section II.B). On such an input each output unit sees every input value,
    so the convolution is a matrix product: computed as one (``F.linear``), it is the same function
    with the same parameters, several times faster than the general convolution kernels on a CPU.
    A larger input (a fully convolutional use) is convolved as usual."""

    # No padding, dilation or groups: with any of them the matrix product would not be the same function.
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != self.kernel_size:
            return super().forward(x)
        return F.linear(x.flatten(1), self.weight.flatten(1), self.bias)[:, :, None, None]
