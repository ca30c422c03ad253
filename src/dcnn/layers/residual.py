"""Residual blocks (He et al. 2016a, "Deep Residual Learning for Image Recognition"; He et al. 2016b,
"Identity Mappings in Deep Residual Networks").

A block computes ``y = F(x) + shortcut(x)`` (2016a, Eq. 1-2). Two residual functions F:

- ``"basic"``: two 3×3 convolutions (2016a, Fig. 5 left; ResNet-18/34 and the CIFAR nets).
- ``"bottleneck"``: 1×1 (reduce) → 3×3 → 1×1 (restore, 4× the stage width) (2016a, Fig. 5 right).
  The 3×3 may be grouped (ResNeXt, Xie et al. 2017, Fig. 3c) and wider than the stage width
  (Wide ResNet-50-2). Where the stride of a down-sampling block sits is a choice:
  ``bottleneck_stride="1x1"`` is the paper's (2016a, §3.3: "down-sampling directly by convolutional
  layers that have a stride of 2", the first 1×1 in the released models), ``"3x3"`` is what
  torchvision builds ("ResNet v1.5", from fb.resnet.torch), which ResNeXt adopts (Xie et al. §4).

Two orders of operations:

- :class:`ResidualBlock`, post-activation (2016a): each conv is followed by BN, ReLU after the
  addition: ``y = relu(F(x) + shortcut(x))``.
- :class:`PreActResidualBlock`, pre-activation (2016b, Fig. 1b, 4e): BN → ReLU precede each conv and
  nothing follows the addition, so the shortcut path is a pure identity: ``y = x + F(x)`` (Eq. 3).

Shortcut options (2016a, §3.3 and §4.1, the paper's letters):

- ``"A"``: identity; where the shape changes, the input is subsampled by the stride and zero channels
  are appended (parameter-free; the CIFAR nets of §4.2).
- ``"B"``: identity; a 1×1 projection (conv + BN in post-activation blocks) where the shape changes
  (the ImageNet nets; torchvision's ``downsample``).
- ``"C"``: a projection on every block.
- ``None``: no shortcut: the "plain" counterpart of the network (§4.1, the degradation experiment).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from dcnn.errors import DcnnError
from dcnn.layers.bn_act_conv import BnActConv
from dcnn.layers.conv_bn_act import ConvBnAct, same_padding

BLOCK_EXPANSION = {"basic": 1, "bottleneck": 4}
"""Output channels per unit of stage width: the bottleneck's last 1×1 restores 4× (2016a, Table 1)."""
SHORTCUT_OPTIONS = ("A", "B", "C")
BOTTLENECK_STRIDES = ("1x1", "3x3")


def check_block_kind(kind: str) -> str:
    if kind not in BLOCK_EXPANSION:
        raise DcnnError(f"unknown residual block {kind!r}; choose 'basic' (two 3x3 convs) or 'bottleneck'.")
    return kind


def check_shortcut_option(option: str | None) -> str | None:
    if option is not None and option not in SHORTCUT_OPTIONS:
        raise DcnnError(
            f"unknown shortcut option {option!r}; choose 'A' (zero-padded identity), 'B' (projection where "
            "the shape changes), 'C' (projection everywhere) or None (a plain net without shortcuts)."
        )
    return option


def check_bottleneck_stride(where: str) -> str:
    if where not in BOTTLENECK_STRIDES:
        raise DcnnError(
            f"unknown bottleneck_stride {where!r}; choose '1x1' (the paper's: the first 1x1 conv "
            "down-samples) or '3x3' (torchvision's 'v1.5': the 3x3 conv down-samples)."
        )
    return where


class ConvSpec(NamedTuple):
    """One convolution of a residual function."""

    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    groups: int


def residual_convs(
    kind: str,
    in_channels: int,
    out_channels: int,
    stride: int,
    width: int | None = None,
    groups: int = 1,
    bottleneck_stride: str = "1x1",
) -> list[ConvSpec]:
    """The convolutions of residual function F, in order (2016a, Fig. 5).

    `width` is the bottleneck's inner width (default: ``out_channels // 4``); `groups` splits its 3×3
    (ResNeXt's cardinality). A basic block has no inner width and no groups.
    """
    check_block_kind(kind)
    if kind == "basic":
        if groups != 1 or width not in (None, out_channels):
            raise DcnnError("grouped or widened 3x3 convolutions need kind='bottleneck' blocks.")
        return [
            ConvSpec(in_channels, out_channels, 3, stride, 1),
            ConvSpec(out_channels, out_channels, 3, 1, 1),
        ]
    width = out_channels // BLOCK_EXPANSION["bottleneck"] if width is None else width
    if width % groups:
        raise DcnnError(f"bottleneck width {width} is not divisible by groups={groups}; pick a divisor.")
    first_stride, middle_stride = (stride, 1) if check_bottleneck_stride(bottleneck_stride) == "1x1" else (1, stride)
    return [
        ConvSpec(in_channels, width, 1, first_stride, 1),
        ConvSpec(width, width, 3, middle_stride, groups),
        ConvSpec(width, out_channels, 1, 1, 1),
    ]


class ZeroPadShortcut(nn.Module):
    """Option A (2016a, §3.3): the identity, subsampled by `stride`, with zero channels appended.

    Parameter-free. Subsampling keeps every `stride`-th pixel from the first, which is the output grid
    of a stride-`stride` 3×3 conv with padding 1; the zeros go after the input's channels, as in
    fb.resnet.torch (concat(identity, 0·identity)).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise DcnnError(
                f"shortcut option 'A' pads channels and cannot reduce {in_channels} to {out_channels}; "
                "use option 'B' (projection)."
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.out_channels - self.in_channels))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


def make_shortcut(
    option: str | None, in_channels: int, out_channels: int, stride: int, norm: bool = True
) -> nn.Module | None:
    """The shortcut of a block for shortcut `option` ("A", "B", "C" or None: no shortcut).

    Projections are a strided 1×1 conv, followed by BN when `norm` (post-activation blocks; 2016a
    Eq. 2 with W_s). Pre-activation blocks project without BN, as the authors' code does (He et al.
    2016b, resnet-1k-layers): the sum is normalized by the next block's pre-activation.
    """
    if check_shortcut_option(option) is None:
        return None
    same_shape = in_channels == out_channels and stride == 1
    if option == "C" or (option == "B" and not same_shape):
        return ConvBnAct(in_channels, out_channels, 1, stride=stride, norm=norm, bias=False, act=None)
    if same_shape:
        return nn.Identity()
    return ZeroPadShortcut(in_channels, out_channels, stride)


def _conv_bn_act(spec: ConvSpec, act: str | None) -> ConvBnAct:
    return ConvBnAct(
        spec.in_channels, spec.out_channels, spec.kernel_size, stride=spec.stride, groups=spec.groups, act=act
    )


def _conv(spec: ConvSpec) -> nn.Conv2d:
    return nn.Conv2d(
        spec.in_channels,
        spec.out_channels,
        spec.kernel_size,
        stride=spec.stride,
        padding=same_padding(spec.kernel_size),
        groups=spec.groups,
        bias=False,
    )


class ResidualBlock(nn.Module):
    """Post-activation residual block (2016a): ``relu(F(x) + shortcut(x))``, F = conv-BN(-ReLU) units.

    Submodules: `residual` (``conv1``, ``conv2`` [, ``conv3``], each a ConvBnAct, the last without
    ReLU), `shortcut` (None in a plain block), `act`.

    Args:
        in_channels, out_channels: block input and output channels.
        stride: 2 for the first block of a down-sampling stage.
        kind: "basic" or "bottleneck".
        width: bottleneck inner width (default ``out_channels // 4``).
        groups: groups of the bottleneck's 3×3 conv (ResNeXt cardinality).
        bottleneck_stride: "1x1" (paper) or "3x3" (torchvision) — which bottleneck conv down-samples.
        shortcut: "A", "B", "C", or None for a plain block.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        kind: str = "basic",
        width: int | None = None,
        groups: int = 1,
        bottleneck_stride: str = "1x1",
        shortcut: str | None = "B",
    ) -> None:
        super().__init__()
        convs = residual_convs(kind, in_channels, out_channels, stride, width, groups, bottleneck_stride)
        last = len(convs) - 1
        self.residual = nn.Sequential(
            OrderedDict(
                (f"conv{i + 1}", _conv_bn_act(spec, act=None if i == last else "relu"))
                for i, spec in enumerate(convs)
            )
        )
        self.shortcut = make_shortcut(shortcut, in_channels, out_channels, stride, norm=True)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.residual(x)
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.act(out)


def _bn_act_conv(spec: ConvSpec, drop_rate: float) -> BnActConv:
    """The pre-activation unit (2016b, Fig. 4e) with the Wide ResNets' dropout before the conv."""
    return BnActConv(
        spec.in_channels,
        spec.out_channels,
        spec.kernel_size,
        stride=spec.stride,
        groups=spec.groups,
        drop_rate=drop_rate,
        dropout="before_conv",
    )


class PreActResidualBlock(nn.Module):
    """Pre-activation residual block (2016b, Fig. 1b and 4e): ``x + F(x)``, F = BN-ReLU-conv units.

    The first BN-ReLU (`preact`) is shared by the residual function and a projection shortcut, as in
    the authors' code (resnet-1k-layers: "common BN, ReLU" for units that change dimensions); an
    identity shortcut (options A/B on same-shape blocks) carries `x` itself, untouched. A block that
    follows an activated stem takes ``preactivate=False``: the paper applies the first activation
    "right after conv1 and before splitting into two paths" (2016b, §4).

    Submodules: `preact` (BN, ReLU; Identity without `preactivate`), `residual` (``conv1``: a bare
    conv; ``conv2`` [, ``conv3``]: :class:`BnActConv`), `shortcut` (None in a plain block).

    Args:
        drop_rate: dropout between the convolutions, after the ReLU (Wide ResNets, Zagoruyko &
            Komodakis 2016, §2.4). Other arguments as for :class:`ResidualBlock`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        kind: str = "basic",
        width: int | None = None,
        groups: int = 1,
        bottleneck_stride: str = "1x1",
        shortcut: str | None = "B",
        drop_rate: float = 0.0,
        preactivate: bool = True,
    ) -> None:
        super().__init__()
        convs = residual_convs(kind, in_channels, out_channels, stride, width, groups, bottleneck_stride)
        self.preact = (
            nn.Sequential(OrderedDict(bn=nn.BatchNorm2d(in_channels), act=nn.ReLU()))
            if preactivate
            else nn.Identity()
        )
        units: list[tuple[str, nn.Module]] = [("conv1", _conv(convs[0]))]
        units += [(f"conv{i + 1}", _bn_act_conv(spec, drop_rate)) for i, spec in enumerate(convs) if i > 0]
        self.residual = nn.Sequential(OrderedDict(units))
        self.shortcut = make_shortcut(shortcut, in_channels, out_channels, stride, norm=False)
        self.projects = isinstance(self.shortcut, ConvBnAct)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.preact(x)
        out = self.residual(activated)
        if self.shortcut is None:
            return out
        return out + self.shortcut(activated if self.projects else x)
