"""NASNet-A convolutional cells (Zoph et al. 2018, Learning Transferable Architectures for Scalable
Image Recognition, Figure 4), described by data.

A cell takes two hidden states, h_i (the previous cell's output, "current") and h_{i-1} (the one
before, "previous"), and builds B = 5 blocks (Section 3, Figure 3). Each block applies an operation to
each of two chosen hidden states and adds the results; its sum becomes a new hidden state. The cell's
output concatenates some of the hidden states along channels. A :class:`CellGenotype` is that table;
:class:`NasNetCell` builds any genotype, so the Normal and the Reduction cell are the same class fed
different tables (:data:`NASNET_A_NORMAL`, :data:`NASNET_A_REDUCTION`).

Operations (Section 3's search space, as used by NASNet-A):
  - ``sepK``: ReLU, K×K depthwise-separable conv, BN, applied twice (Appendix A.4: "we found it
    beneficial to apply the separable convolutions twice"); only the first one strides;
  - ``avg3`` / ``max3``: 3×3 average / max pooling;
  - ``identity``.
In a Reduction cell the operations reading the cell inputs use stride 2 (Section 3).

Padding follows TensorFlow's "SAME" (the authors' implementation): the output is ceil(size / stride)
and a stride-2 window pads less before than after on even sizes. Stride-1 average pooling does not
count the padding. Stride-2 average pooling zero-pads first and then averages over the whole window,
counting the padded zeros: timm's port computes this (TensorFlow would not count them), and dcnn
reproduces it so that timm's checkpoints compute the same function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

# Hidden-state indices in a cell: its two inputs, then block b's output at 2 + b.
CURRENT = 0  # h_i, after the cell's own ReLU-1x1 conv-BN
PREVIOUS = 1  # h_{i-1}, brought to the cell's width (and resolution) by its preprocessing


def block_output(index: int) -> int:
    """The hidden-state index of block `index`'s output."""
    return 2 + index


# Batch normalization of the TensorFlow release (epsilon 0.001); the momentum is PyTorch's (as in
# timm's port; TensorFlow's moving-average decay of 0.9997 would be momentum 0.0003).
BN_EPS = 1e-3
BN_MOMENTUM = 0.1

OPERATIONS = ("sep3", "sep5", "sep7", "avg3", "max3", "identity")

Operand = tuple[int, str]  # (hidden-state index, operation name)


@dataclass(frozen=True)
class CellGenotype:
    """A convolutional cell as data.

    Attributes:
        name: "normal" or "reduction".
        blocks: per block, its two (hidden-state index, operation) pairs, summed.
        concat: the hidden states concatenated into the cell output, in order.
        reduction: whether operations on the cell inputs use stride 2.
    """

    name: str
    blocks: tuple[tuple[Operand, Operand], ...]
    concat: tuple[int, ...]
    reduction: bool

    def __post_init__(self) -> None:
        for index, operands in enumerate(self.blocks):
            for state, op in operands:
                if op not in OPERATIONS:
                    raise ValueError(f"{self.name} cell block {index}: unknown operation {op!r}")
                if not 0 <= state < block_output(index):
                    raise ValueError(f"{self.name} cell block {index}: state {state} is not computed yet")
        if not all(0 <= state < block_output(len(self.blocks)) for state in self.concat):
            raise ValueError(f"{self.name} cell: concat {self.concat} names states that do not exist")

    @property
    def num_outputs(self) -> int:
        """How many hidden states (each `channels` wide) the output concatenates."""
        return len(self.concat)


# Figure 4 (left): the NASNet-A Normal cell. The output concatenates h_{i-1} and the five block outputs.
NASNET_A_NORMAL = CellGenotype(
    name="normal",
    blocks=(
        ((CURRENT, "sep5"), (PREVIOUS, "sep3")),
        ((PREVIOUS, "sep5"), (PREVIOUS, "sep3")),
        ((CURRENT, "avg3"), (PREVIOUS, "identity")),
        ((PREVIOUS, "avg3"), (PREVIOUS, "avg3")),
        ((CURRENT, "sep3"), (CURRENT, "identity")),
    ),
    concat=(PREVIOUS, *(block_output(b) for b in range(5))),
    reduction=False,
)

# Figure 4 (right): the NASNet-A Reduction cell. Blocks 3 and 4 read earlier block outputs (at
# stride 1); the output concatenates blocks 1 to 4.
NASNET_A_REDUCTION = CellGenotype(
    name="reduction",
    blocks=(
        ((CURRENT, "sep5"), (PREVIOUS, "sep7")),
        ((CURRENT, "max3"), (PREVIOUS, "sep7")),
        ((CURRENT, "avg3"), (PREVIOUS, "sep5")),
        ((block_output(1), "identity"), (block_output(0), "avg3")),
        ((block_output(0), "sep3"), (CURRENT, "max3")),
    ),
    concat=tuple(block_output(b) for b in range(1, 5)),
    reduction=True,
)


def same_padding_amounts(size: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (before, after) of one dimension: the output is ceil(size / stride)."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel_size - size, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel_size: int, stride: int, value: float = 0.0) -> torch.Tensor:
    """Pad an (N, C, H, W) map for a "SAME" window of `kernel_size` at `stride`."""
    top, bottom = same_padding_amounts(x.shape[-2], kernel_size, stride)
    left, right = same_padding_amounts(x.shape[-1], kernel_size, stride)
    return F.pad(x, (left, right, top, bottom), value=value)


class SameConv2d(nn.Conv2d):
    """A bias-free Conv2d with "SAME" padding: fixed and symmetric at stride 1 (odd kernels),
    computed from the input size at larger strides."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1) -> None:
        if kernel_size % 2 == 0:
            raise ValueError(f"SameConv2d needs an odd kernel, got {kernel_size}")
        fixed = stride == 1
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2 if fixed else 0,
            groups=groups,
            bias=False,
        )
        self.pads_input = not fixed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pads_input:
            x = pad_same(x, self.kernel_size[0], self.stride[0])
        return super().forward(x)


class SamePool2d(nn.Module):
    """3×3 (or k×k) max or average pooling with "SAME" padding (see the module docstring for which
    padded values the average counts)."""

    def __init__(self, kind: str, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__()
        if kind not in ("avg", "max"):
            raise ValueError(f"unknown pooling {kind!r}; choose 'avg' or 'max'")
        self.kind = kind
        self.kernel_size = kernel_size
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size, self.stride
        if self.kind == "max":
            return F.max_pool2d(pad_same(x, k, s, value=-math.inf), k, s)
        if s == 1:
            return F.avg_pool2d(x, k, 1, padding=k // 2, count_include_pad=False)
        return F.avg_pool2d(pad_same(x, k, s), k, s)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, kernel_size={self.kernel_size}, stride={self.stride}"


class ReluConvBn(nn.Sequential):
    """ReLU → 1×1 conv → BN: how a cell brings an input to its own width (Section 3, the
    TensorFlow release's ``prev_1x1``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.act = nn.ReLU()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class FactorizedReduction(nn.Module):
    """Halve the resolution of h_{i-1} when it is twice that of h_i, without losing half the pixels.

    ReLU, then two stride-2 1×1 convs, each giving half the output channels: one samples the even
    pixels, the other the odd ones (the map is zero-padded on the bottom and right, then cropped of
    its first row and column, so the shifted grid also yields ceil(size / 2) pixels); BN on the
    concatenation. From the authors' TensorFlow release (``factorized_reduction``).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        if out_channels % 2:
            raise ValueError(f"factorized reduction needs an even width, got {out_channels}")
        self.act = nn.ReLU()
        self.path_1 = nn.Conv2d(in_channels, out_channels // 2, 1, stride=2, bias=False)
        self.path_2 = nn.Conv2d(in_channels, out_channels // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(x)
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return self.bn(torch.cat([self.path_1(x), self.path_2(shifted)], dim=1))


class SeparableStack(nn.Sequential):
    """The ``sepK`` operation: (ReLU → K×K depthwise conv → 1×1 pointwise conv → BN) twice
    (Appendix A.4). The first depthwise conv carries the stride; both pointwise convs give
    `out_channels`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__()
        for index, (channels, unit_stride) in enumerate(((in_channels, stride), (out_channels, 1)), start=1):
            self.add_module(f"act_{index}", nn.ReLU())
            self.add_module(
                f"depthwise_{index}", SameConv2d(channels, channels, kernel_size, unit_stride, groups=channels)
            )
            self.add_module(f"pointwise_{index}", nn.Conv2d(channels, out_channels, 1, bias=False))
            self.add_module(f"bn_{index}", nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM))


def make_operation(name: str, in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """The module for operation `name` of :data:`OPERATIONS`, reading `in_channels`, giving `out_channels`."""
    if name.startswith("sep"):
        return SeparableStack(in_channels, out_channels, int(name[3:]), stride)
    if in_channels != out_channels:
        raise ValueError(f"{name} keeps the width, but reads {in_channels} channels for {out_channels}")
    if name == "identity":
        if stride != 1:
            raise ValueError("identity cannot stride")
        return nn.Identity()
    return SamePool2d(name[:3], int(name[3:]), stride)


class CellBlock(nn.Module):
    """One block (Figure 3): two operations on two hidden states, added."""

    def __init__(
        self, operands: tuple[Operand, Operand], state_channels: list[int], channels: int, reduction: bool
    ) -> None:
        super().__init__()
        self.inputs = tuple(state for state, _ in operands)
        self.ops = nn.ModuleList(
            # Section 3: in a Reduction cell the operations applied to the cell inputs use stride 2.
            make_operation(op, state_channels[state], channels, 2 if reduction and state < 2 else 1)
            for state, op in operands
        )

    def forward(self, states: list[torch.Tensor]) -> torch.Tensor:
        first, second = (op(states[i]) for op, i in zip(self.ops, self.inputs, strict=True))
        return first + second


PREVIOUS_PREPROCESSING = ("none", "conv", "factorized")


class NasNetCell(nn.Module):
    """A NASNet convolutional cell built from a :class:`CellGenotype`.

    Args:
        genotype: the cell's table (:data:`NASNET_A_NORMAL` or :data:`NASNET_A_REDUCTION`).
        current_channels: width of h_i (the latest output).
        previous_channels: width of h_{i-1}.
        channels: the cell's width: every block output has this many channels.
        previous: how h_{i-1} is brought to the cell: "conv" (ReLU-1×1 conv-BN to `channels`),
            "factorized" (it has twice h_i's resolution: :class:`FactorizedReduction`), or "none"
            (used as it is; the first stem cell, whose h_{i-1} is h_i itself, the stem conv's output).

    ``forward(x, x_prev)`` returns ``genotype.num_outputs * channels`` channels at the resolution of
    `x`, halved (rounding up) for a Reduction cell.
    """

    def __init__(
        self,
        genotype: CellGenotype,
        current_channels: int,
        previous_channels: int,
        channels: int,
        previous: str = "conv",
    ) -> None:
        super().__init__()
        if previous not in PREVIOUS_PREPROCESSING:
            raise ValueError(f"unknown preprocessing {previous!r}; choose one of {PREVIOUS_PREPROCESSING}")
        self.genotype = genotype
        self.out_channels = genotype.num_outputs * channels
        self.pre_current = ReluConvBn(current_channels, channels)
        if previous == "factorized":
            self.pre_previous: nn.Module = FactorizedReduction(previous_channels, channels)
        elif previous == "conv":
            self.pre_previous = ReluConvBn(previous_channels, channels)
        else:
            self.pre_previous = nn.Identity()
        state_channels = [channels, channels if previous != "none" else previous_channels]
        blocks = []
        for operands in genotype.blocks:
            blocks.append(CellBlock(operands, state_channels, channels, genotype.reduction))
            state_channels.append(channels)
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor) -> torch.Tensor:
        states = [self.pre_current(x), self.pre_previous(x_prev)]
        for block in self.blocks:
            states.append(block(states))
        return torch.cat([states[i] for i in self.genotype.concat], dim=1)

    def extra_repr(self) -> str:
        return f"genotype={self.genotype.name!r}, out_channels={self.out_channels}"
