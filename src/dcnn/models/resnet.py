"""ResNets on ImageNet (He et al. 2016a, "Deep Residual Learning for Image Recognition"), their plain
counterparts (§4.1), Wide ResNet-50/101-2 (Zagoruyko & Komodakis 2016) and ResNeXt (Xie et al. 2017).

One :class:`ResNet` class builds every residual network of the zoo from a stage table: the block kind,
blocks per stage, stage widths, groups and bottleneck width, the stem (ImageNet or CIFAR), post- or
pre-activation blocks and the shortcut option. The CIFAR nets (`cifar_resnet.py`) and the
pre-activation nets (`preact_resnet.py`) register their variants with the same class.

Where the stride sits in a down-sampling bottleneck block (``bottleneck_stride``):

- ``"1x1"``, the paper's: the first 1×1 conv has stride 2 (2016a, §3.3; the released Caffe models).
- ``"3x3"``, torchvision's ("ResNet v1.5", from fb.resnet.torch): the 3×3 conv has stride 2; about
  0.2 GFLOPs more for ResNet-50 and somewhat more accurate.

The models registered with a torchvision reference (``resnet50/101/152``, ``wide_resnet*``,
``resnext*``) default to ``"3x3"`` so that they load torchvision's checkpoints and compute its function;
``bottleneck_stride="1x1"`` gives the paper's network (same parameters, same checkpoint keys, a
different function). Models without a reference (``plain50``, the pre-activation nets) default to the
paper's ``"1x1"``. The basic-block nets (18, 34) are the same either way.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence
from itertools import chain
from typing import Any

import torch
import torch.nn as nn

from dcnn.errors import DcnnError
from dcnn.layers.conv_bn_act import ConvBnAct
from dcnn.layers.head import ClassifierHead
from dcnn.layers.init import he_init_fan_out
from dcnn.layers.residual import (
    BLOCK_EXPANSION,
    PreActResidualBlock,
    ResidualBlock,
    check_block_kind,
)
from dcnn.models._base import ImageClassifier
from dcnn.models._registry import ModelCfg, register_model
from dcnn.models.pretrained import StateDict, rename_prefixes

RESNET_PAPER = "He et al. 2016, Deep Residual Learning for Image Recognition"
RESNEXT_PAPER = "Xie et al. 2017, Aggregated Residual Transformations for Deep Neural Networks"
WRN_PAPER = "Zagoruyko & Komodakis 2016, Wide Residual Networks"

IMAGENET_STAGES: dict[int, tuple[str, tuple[int, ...]]] = {
    # 2016a, Table 1: block kind and blocks per stage (conv2_x, conv3_x, conv4_x, conv5_x).
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    # ResNet-200 of He et al. 2016b (Identity Mappings, Table 5), as in the authors' fb.resnet.torch.
    200: ("bottleneck", (3, 24, 36, 3)),
}
IMAGENET_WIDTHS = (64, 128, 256, 512)  # 2016a, Table 1: 3×3 filters per stage (bottleneck: ×4 out)
STEMS = ("imagenet", "cifar")


class ResNet(ImageClassifier):
    """A residual network configured by its stage table.

    ``stem → stages → [final BN-ReLU] → head``. Stage i has ``depths[i]`` blocks with
    ``widths[i] * expansion`` output channels (expansion 1 for basic, 4 for bottleneck blocks); its
    first block down-samples by 2, except in the first stage (2016a, §3.3).

    Args:
        depths: blocks per stage.
        widths: stage widths: the 3×3 filter count of a basic block, the base width of a bottleneck.
        block: "basic" or "bottleneck".
        groups: groups of the bottleneck 3×3 conv (ResNeXt cardinality C, Xie et al. §3.3).
        width_per_group: the bottleneck's inner width is ``widths[i] * width_per_group / 64 * groups``
            (64 for ResNet; 4 with 32 groups for ResNeXt-50 32×4d; 128 for Wide ResNet-50-2).
        stem: "imagenet" (7×7/2 conv, BN, ReLU, 3×3/2 max pool; 2016a Table 1) or "cifar" (3×3 conv,
            BN, ReLU; 2016a §4.2).
        stem_width: the stem's output channels.
        preact: pre-activation blocks (He et al. 2016b) with a final BN-ReLU before pooling.
        shortcut: "A", "B", "C" (2016a, §3.3) or None for the plain network (§4.1).
        bottleneck_stride: "1x1" (paper) or "3x3" (torchvision "v1.5"); see the module docstring.
        block_dropout: dropout between the convolutions of each block (pre-activation only; Wide
            ResNets, Zagoruyko & Komodakis §2.4).
        num_classes, in_chans, head, drop_rate: the classifier interface (drop_rate: dropout before
            the classifier).
    """

    def __init__(
        self,
        depths: Sequence[int],
        widths: Sequence[int] = IMAGENET_WIDTHS,
        block: str = "basic",
        groups: int = 1,
        width_per_group: int = 64,
        stem: str = "imagenet",
        stem_width: int = 64,
        preact: bool = False,
        shortcut: str | None = "B",
        bottleneck_stride: str = "1x1",
        block_dropout: float = 0.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        head: str = "fc",
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        check_block_kind(block)
        if len(depths) != len(widths):
            raise DcnnError(f"depths {tuple(depths)} and widths {tuple(widths)} must list one entry per stage.")
        if block_dropout > 0 and not preact:
            raise DcnnError("block_dropout needs pre-activation blocks (preact=True), as in Wide ResNets.")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.stem = _make_stem(stem, in_chans, stem_width)

        stages = []
        in_channels = stem_width
        for index, (depth, width) in enumerate(zip(depths, widths, strict=True)):
            out_channels = width * BLOCK_EXPANSION[block]
            common: dict[str, Any] = dict(
                kind=block,
                width=width * width_per_group // 64 * groups if block == "bottleneck" else None,
                groups=groups,
                bottleneck_stride=bottleneck_stride,
                shortcut=shortcut,
            )
            blocks: list[nn.Module] = []
            for position in range(depth):
                stride = 2 if position == 0 and index > 0 else 1
                if preact:
                    # The stem ends in BN-ReLU: the first block takes its input already activated.
                    first = index == 0 and position == 0
                    extra = dict(drop_rate=block_dropout, preactivate=not first)
                    blocks.append(PreActResidualBlock(in_channels, out_channels, stride, **common, **extra))
                else:
                    blocks.append(ResidualBlock(in_channels, out_channels, stride, **common))
                in_channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        # 2016b, §4: pre-activation nets add "an extra activation right after [the last unit's] addition".
        self.final_act = (
            nn.Sequential(OrderedDict(bn=nn.BatchNorm2d(in_channels), act=nn.ReLU())) if preact else nn.Identity()
        )
        self.num_features = in_channels
        self.head = ClassifierHead(in_channels, num_classes, drop_rate=drop_rate, head=head)
        self._init_weights()

    def _init_weights(self) -> None:
        # 2016a, §3.4: "We initialize the weights as in [He et al. 2015]" (fan-out, as the authors' code
        # resnet-1k-layers); the classifier keeps PyTorch's default initialization.
        he_init_fan_out(chain(self.stem.modules(), self.stages.modules(), self.final_act.modules()))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_act(self.stages(self.stem(x)))


def _make_stem(kind: str, in_chans: int, width: int) -> nn.Sequential:
    if kind == "imagenet":
        stem = ConvBnAct(in_chans, width, 7, stride=2)
        stem.add_module("pool", nn.MaxPool2d(3, stride=2, padding=1))
        return stem
    if kind == "cifar":
        return ConvBnAct(in_chans, width, 3)
    raise DcnnError(f"unknown stem {kind!r}; choose one of {', '.join(STEMS)}.")


def build_resnet(num_classes: int, in_chans: int, options: dict[str, Any], **arch: Any) -> ResNet:
    """A ResNet of architecture `arch` (ResNet keyword arguments); the user's `options` override it."""
    return ResNet(**{**arch, **options}, num_classes=num_classes, in_chans=in_chans)


def imagenet_arch(depth: int, **overrides: Any) -> dict[str, Any]:
    """The stage table of ImageNet ResNet-`depth` (2016a, Table 1) as ResNet keyword arguments."""
    block, depths = IMAGENET_STAGES[depth]
    return {**dict(block=block, depths=depths, widths=IMAGENET_WIDTHS), **overrides}


# --- torchvision checkpoints -------------------------------------------------------------------------

_TORCHVISION_STEM_AND_HEAD = {"conv1.": "stem.conv.", "bn1.": "stem.bn.", "fc.": "head.fc."}
_TORCHVISION_BLOCK = re.compile(
    r"^layer(?P<stage>\d)\.(?P<block>\d+)\.(?:(?P<layer>conv|bn)(?P<unit>\d)|downsample\.(?P<part>[01]))\."
)


def _rename_torchvision_block(match: re.Match[str]) -> str:
    prefix = f"stages.{int(match['stage']) - 1}.{match['block']}."
    if match["part"] is not None:  # downsample.0 is the projection conv, downsample.1 its BN
        return prefix + ("shortcut.conv." if match["part"] == "0" else "shortcut.bn.")
    return prefix + f"residual.conv{match['unit']}." + ("conv." if match["layer"] == "conv" else "bn.")


def torchvision_key_map(state_dict: StateDict) -> StateDict:
    """Rename a torchvision ResNet/ResNeXt/Wide ResNet state_dict to ours: ``conv1``/``bn1`` →
    ``stem.conv``/``stem.bn``; ``layer3.1.conv2`` → ``stages.2.1.residual.conv2.conv`` (``bn2`` →
    ``...conv2.bn``); ``downsample.0``/``.1`` → ``shortcut.conv``/``shortcut.bn``; ``fc`` → ``head.fc``."""
    renamed = rename_prefixes(state_dict, _TORCHVISION_STEM_AND_HEAD)
    return {_TORCHVISION_BLOCK.sub(_rename_torchvision_block, key): value for key, value in renamed.items()}


def _torchvision_cfg(paper: str, year: int, name: str, num_params: int) -> ModelCfg:
    return ModelCfg(
        paper=paper,
        year=year,
        num_params=num_params,
        reference=f"torchvision/{name}",
        key_map=torchvision_key_map,
        first_conv="stem.conv",
        classifier=("head.fc",),
    )


def _plain_cfg(num_params: int) -> ModelCfg:
    return ModelCfg(
        paper=RESNET_PAPER,
        year=2016,
        num_params=num_params,
        num_params_source="computed; the paper gives none",
        first_conv="stem.conv",
        classifier=("head.fc",),
    )


# Models with a torchvision reference put the bottleneck stride on the 3×3 conv, as torchvision does.
TORCHVISION_BOTTLENECK = dict(bottleneck_stride="3x3")

# --- ResNets (2016a, Table 1) --------------------------------------------------------------------------


@register_model(_torchvision_cfg(RESNET_PAPER, 2016, "resnet18", 11_689_512))
def resnet18(num_classes: int = 1000, in_chans: int = 3, **options: Any) -> ResNet:
    """ResNet-18 (2016a, Table 1): basic blocks, 2-2-2-2, option B shortcuts."""
    return build_resnet(num_classes, in_chans, options, **imagenet_arch(18))


@register_model(_torchvision_cfg(RESNET_PAPER, 2016, "resnet34", 21_797_672))
def resnet34(num_classes: int = 1000, in_chans: int = 3, **options: Any) -> ResNet:
    """ResNet-34 (2016a, Table 1): basic blocks, 3-4-6-3, option B shortcuts."""
    return build_resnet(num_classes, in_chans, options, **imagenet_arch(34))


@register_model(_torchvision_cfg(RESNET_PAPER, 2016, "resnet50", 25_557_032))
def resnet50(num_classes: int = 1000, in_chans: int = 3, **options: Any) -> ResNet:
    """ResNet-50 as torchvision builds it (stride on the 3×3: "v1.5"); ``bottleneck_stride="1x1"``
    gives the paper's (2016a, Table 1: bottlenecks, 3-4-6-3, 3.8 GFLOPs)."""
    return build_resnet(num_classes, in_chans, options, **imagenet_arch(50, **TORCHVISION_BOTTLENECK))


@register_model(_torchvision_cfg(RESNET_PAPER, 2016, "resnet101", 44_549_160))
def resnet101(num_classes: int = 1000, in_chans: int = 3, **options: Any) -> ResNet:
    """ResNet-101 as torchvision builds it (stride on the 3×3: "v1.5"); ``bottleneck_stride="1x1"``
    gives the paper's (2016a, Table 1: bottlenecks, 3-4-23-3, 7.6 GFLOPs)."""
    return build_resnet(num_classes, in_chans, options, **imagenet_arch(101, **TORCHVISION_BOTTLENECK))


@register_model(_torchvision_cfg(RESNET_PAPER, 2016, "resnet152", 60_192_808))
def resnet152(num_classes: int = 1000, in_chans: int = 3, **options: Any) -> ResNet:
    """ResNet-152 as torchvision builds it (stride on the 3×3: "v1.5"); ``bottleneck_stride="1x1"``
    gives the paper's (2016a, Table 1: bottlenecks, 3-8-36-3, 11.3 GFLOPs)."""
    return build_resnet(num_classes, in_chans, options, **imagenet_arch(152, **TORCHVISION_BOTTLENECK))


# --- Plain networks (2016a, §4.1: the same nets without shortcuts) --------------------------------------


@register_model(_plain_cfg(11_515_688))
def plain18(num_classes: int = 1000, in_chans: int = 3, **options: Any) -> ResNet:
    """Plain-18 (2016a, §4.1, Fig. 4 left): ResNet-18 without shortcuts."""
    return build_resnet(num_classes, in_chans, options, **imagenet_arch(18, shortcut=None))


@register_model(_plain_cfg(21_623_848))
def plain34(num_classes: int = 1000, in_chans: int = 3, **options: Any) -> ResNet:
    """Plain-34 (2016a, §4.1, Fig. 3 middle): ResNet-34 without shortcuts."""
    return build_resnet(num_classes, in_chans, options, **imagenet_arch(34, shortcut=None))


@register_model(_plain_cfg(22_780_456))
def plain50(num_classes: int = 1000, in_chans: int = 3, **options: Any) -> ResNet:
    """Plain-50: the paper's ResNet-50 (stride on the first 1×1) without shortcuts, in the spirit of §4.1
    (the paper trains plain nets of 18 and 34 layers only)."""
    return build_resnet(num_classes, in_chans, options, **imagenet_arch(50, shortcut=None))


# --- Wide ResNets (Zagoruyko & Komodakis 2016, §5 ImageNet: bottleneck width ×2) -------------------------


@register_model(_torchvision_cfg(WRN_PAPER, 2016, "wide_resnet50_2", 68_883_240))
def wide_resnet50_2(num_classes: int = 1000, in_chans: int = 3, **options: Any) -> ResNet:
    """Wide ResNet-50-2 (torchvision): ResNet-50 with bottleneck 3×3 convs twice as wide (128-1024),
    the same 256-2048 block outputs."""
    arch = imagenet_arch(50, width_per_group=128, **TORCHVISION_BOTTLENECK)
    return build_resnet(num_classes, in_chans, options, **arch)


@register_model(_torchvision_cfg(WRN_PAPER, 2016, "wide_resnet101_2", 126_886_696))
def wide_resnet101_2(num_classes: int = 1000, in_chans: int = 3, **options: Any) -> ResNet:
    """Wide ResNet-101-2 (torchvision): ResNet-101 with bottleneck 3×3 convs twice as wide."""
    arch = imagenet_arch(101, width_per_group=128, **TORCHVISION_BOTTLENECK)
    return build_resnet(num_classes, in_chans, options, **arch)


# --- ResNeXt (Xie et al. 2017, Table 1: cardinality C groups of width d in the 3×3) ---------------------


@register_model(_torchvision_cfg(RESNEXT_PAPER, 2017, "resnext50_32x4d", 25_028_904))
def resnext50_32x4d(num_classes: int = 1000, in_chans: int = 3, **options: Any) -> ResNet:
    """ResNeXt-50 (32×4d) (Xie et al. 2017, Table 1): ResNet-50 stages with a 3×3 of 32 groups of 4
    channels (128 in conv2); stride on the 3×3 as in the paper (§4)."""
    arch = imagenet_arch(50, groups=32, width_per_group=4, **TORCHVISION_BOTTLENECK)
    return build_resnet(num_classes, in_chans, options, **arch)


@register_model(_torchvision_cfg(RESNEXT_PAPER, 2017, "resnext101_32x8d", 88_791_336))
def resnext101_32x8d(num_classes: int = 1000, in_chans: int = 3, **options: Any) -> ResNet:
    """ResNeXt-101 (32×8d) (Xie et al. 2017, §5.1): ResNet-101 stages with a 3×3 of 32 groups of 8."""
    arch = imagenet_arch(101, groups=32, width_per_group=8, **TORCHVISION_BOTTLENECK)
    return build_resnet(num_classes, in_chans, options, **arch)
