"""MobileNet v1 (Howard et al. 2017) and MobileNet v2 (Sandler et al. 2018).

MobileNet v1 (Table 1): a 3×3/2 convolution with 32 channels, then 13 depthwise-separable
convolutions (`dcnn.layers.separable`, BN and ReLU after both the depthwise and the pointwise part,
Fig. 3), global average pooling and a linear classifier; 28 layers counting depthwise and
pointwise separately. The width multiplier α (§4.2, `width_mult`) thins every layer to α·M channels;
Table 6 reports 1.0, 0.75, 0.5 and 0.25 (4.2M, 2.6M, 1.3M, 0.5M parameters). The paper's last
depthwise layer is listed with stride 2 in Table 1, a known typo: the map stays 7×7 there.

`mobilenet_v1_relu6` is the variant timm ships as ``mobilenetv1_100`` (and TensorFlow's reference
implementation trains): the same layers with ReLU6 (min(max(x, 0), 6)) where the paper says ReLU.
It loads timm's checkpoints; `mobilenet_v1` (the paper's ReLU) loads them too but then computes
another function.

MobileNet v2 (Table 2): a 3×3/2 convolution with 32 channels, 17 inverted residual blocks with
linear bottlenecks (`dcnn.layers.inverted_residual`), a 1×1 convolution to 1280 channels, global
average pooling and a linear classifier, ReLU6 throughout. The width multiplier scales every layer
but the last convolution, which it only widens (§6.1, "for multipliers less than one, we apply
width multiplier to all layers except the very last convolutional layer"). `mobilenet_v2` matches
torchvision's and loads its checkpoints; torchvision's 3,504,872 parameters are the "3.4M" of
Table 4 (3.47M when the batch-norm parameters are left out).

Channel counts α·c are rounded to a multiple of 8 as in the TensorFlow reference implementations
(and torchvision/timm), never below 90% of α·c; at α = 1, 0.75, 0.5, 0.25 every v1 width is
already a multiple of 8.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import torch
import torch.nn as nn

from dcnn.layers.conv_bn_act import ConvBnAct
from dcnn.layers.head import ClassifierHead
from dcnn.layers.inverted_residual import InvertedResidual
from dcnn.layers.separable import SeparableConv2d
from dcnn.models._base import ImageClassifier
from dcnn.models._registry import INCEPTION_MEAN, INCEPTION_STD, ModelCfg, register_model
from dcnn.models.pretrained import rename_prefixes

V1_PAPER = "Howard et al. 2017, MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications"
V2_PAPER = "Sandler et al. 2018, MobileNetV2: Inverted Residuals and Linear Bottlenecks"

STEM_CHANNELS = 32
# Every convolution is padded, so any size runs; 32, the total stride, is the smallest that gives
# the last stage a map of its own rather than a padded copy of one pixel.
MIN_INPUT_SIZE = (3, 32, 32)

# MobileNet v1, Table 1: (output channels, number of separable convs, stride of the first), one
# row per resolution (112, 56, 28, 14, 7).
V1_STAGES = ((64, 1, 1), (128, 2, 2), (256, 2, 2), (512, 6, 2), (1024, 2, 2))

# MobileNet v2, Table 2: (expansion t, output channels c, repeats n, stride s of the first).
V2_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
V2_LAST_CHANNELS = 1280


def scale_channels(channels: float, divisor: int = 8) -> int:
    """α·c rounded to the nearest multiple of `divisor`, at least `divisor` and never below 90% of α·c."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded


def init_weights(model: nn.Module) -> None:
    """He (fan-out) initialization of convolutions and N(0, 0.01) linear classifiers, as torchvision
    initializes MobileNets (the papers train from TensorFlow's defaults and do not say)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.01)
            nn.init.zeros_(module.bias)


def _check_width(width_mult: float) -> None:
    if width_mult <= 0:
        raise ValueError(f"width_mult must be positive (the paper uses 0.25 to 1.4), got {width_mult}")


BlockFactory = Callable[..., nn.Module]
"""Builds one block from (in_channels, out_channels, stride=...)."""


def build_stages(
    in_channels: int, rows: Iterable[tuple[int, int, int, BlockFactory]]
) -> tuple[nn.Sequential, int]:
    """One Sequential per row (out_channels, repeats, stride, block) of the papers' tables (v1 Table 1,
    v2 Table 2): `repeats` blocks, the first with the row's stride, the rest with stride 1. Returns the
    stages and their output channels."""
    stages = []
    channels = in_channels
    for out_channels, repeats, stride, make_block in rows:
        blocks = []
        for index in range(repeats):
            blocks.append(make_block(channels, out_channels, stride=stride if index == 0 else 1))
            channels = out_channels
        stages.append(nn.Sequential(*blocks))
    return nn.Sequential(*stages), channels


class MobileNetV1(ImageClassifier):
    """MobileNet v1: submodules `stem` (3×3/2 conv, BN, activation), `stages` (one Sequential of
    :class:`~dcnn.layers.separable.SeparableConv2d` per row of `V1_STAGES`), `head`."""

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        head: str = "fc",
        drop_rate: float = 0.0,
        width_mult: float = 1.0,
        act: str = "relu",
    ) -> None:
        super().__init__()
        _check_width(width_mult)
        self.num_classes = num_classes
        self.in_chans = in_chans
        channels = scale_channels(STEM_CHANNELS * width_mult)
        self.stem = ConvBnAct(in_chans, channels, 3, stride=2, act=act)
        separable = partial(SeparableConv2d, kernel_size=3, act=act, depthwise_act=act)
        self.stages, self.num_features = build_stages(
            channels, ((scale_channels(width * width_mult), n, s, separable) for width, n, s in V1_STAGES)
        )
        self.head = ClassifierHead(self.num_features, num_classes, drop_rate=drop_rate, head=head)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


class MobileNetV2(ImageClassifier):
    """MobileNet v2: submodules `stem` (3×3/2 conv), `stages` (one Sequential of
    :class:`~dcnn.layers.inverted_residual.InvertedResidual` per row of `V2_STAGES`), `final_conv`
    (1×1 to 1280 channels), `head`."""

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        head: str = "fc",
        drop_rate: float = 0.2,
        width_mult: float = 1.0,
    ) -> None:
        super().__init__()
        _check_width(width_mult)
        self.num_classes = num_classes
        self.in_chans = in_chans
        channels = scale_channels(STEM_CHANNELS * width_mult)
        self.stem = ConvBnAct(in_chans, channels, 3, stride=2, act="relu6")
        self.stages, channels = build_stages(
            channels,
            (
                (scale_channels(width * width_mult), n, s, partial(InvertedResidual, expand_ratio=t))
                for t, width, n, s in V2_STAGES
            ),
        )
        self.num_features = scale_channels(V2_LAST_CHANNELS * max(1.0, width_mult))
        self.final_conv = ConvBnAct(channels, self.num_features, 1, act="relu6")
        self.head = ClassifierHead(self.num_features, num_classes, drop_rate=drop_rate, head=head)

        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_conv(self.stages(self.stem(x)))


def timm_v1_key_map(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Rename timm's MobileNet v1 (EfficientNet-builder names) to ours."""
    renamed = rename_prefixes(state_dict, {"conv_stem.": "stem.conv.", "bn1.": "stem.bn.", "classifier.": "head.fc."})
    parts = {"conv_dw": "depthwise.conv", "bn1": "depthwise.bn", "conv_pw": "pointwise.conv", "bn2": "pointwise.bn"}
    block = re.compile(r"^blocks\.(\d+)\.(\d+)\.(conv_dw|bn1|conv_pw|bn2)\.")
    return {block.sub(lambda m: f"stages.{m[1]}.{m[2]}.{parts[m[3]]}.", k): v for k, v in renamed.items()}


def _torchvision_v2_prefixes() -> dict[str, str]:
    """torchvision's MobileNetV2 prefixes → ours. Its blocks are flat `features.i.conv` Sequentials
    of [expand (conv, BN),] depthwise (conv, BN), project conv, project BN: the indices shift for
    the block without expansion."""
    prefixes = {"features.0.0.": "stem.conv.", "features.0.1.": "stem.bn.", "classifier.1.": "head.fc."}
    index = 1
    for stage, (expansion, _, repeats, _) in enumerate(V2_STAGES):
        units = ("expand", "depthwise") if expansion != 1 else ("depthwise",)
        for block in range(repeats):
            ours, theirs = f"stages.{stage}.{block}", f"features.{index}.conv"
            for position, unit in enumerate(units):
                prefixes[f"{theirs}.{position}.0."] = f"{ours}.{unit}.conv."
                prefixes[f"{theirs}.{position}.1."] = f"{ours}.{unit}.bn."
            prefixes[f"{theirs}.{len(units)}."] = f"{ours}.project.conv."
            prefixes[f"{theirs}.{len(units) + 1}."] = f"{ours}.project.bn."
            index += 1
    prefixes[f"features.{index}.0."] = "final_conv.conv."
    prefixes[f"features.{index}.1."] = "final_conv.bn."
    return prefixes


def torchvision_v2_key_map(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Rename torchvision's MobileNetV2 state_dict to ours."""
    return rename_prefixes(state_dict, _torchvision_v2_prefixes())


def _v1_cfg(num_params: int, source: str, **overrides: Any) -> ModelCfg:
    return ModelCfg(
        paper=V1_PAPER,
        year=2017,
        num_params=num_params,
        num_params_source=source,
        min_input_size=MIN_INPUT_SIZE,
        mean=INCEPTION_MEAN,
        std=INCEPTION_STD,
        first_conv="stem.conv",
        classifier=("head.fc",),
        **overrides,
    )


@register_model(_v1_cfg(4_231_976, "computed; paper Table 8 gives 4.2M"))
def mobilenet_v1(
    num_classes: int = 1000,
    in_chans: int = 3,
    head: str = "fc",
    drop_rate: float = 0.0,
    width_mult: float = 1.0,
    act: str = "relu",
) -> MobileNetV1:
    """1.0 MobileNet-224 as in the paper (Table 1, ReLU); `width_mult` is the multiplier α (§4.2)."""
    return MobileNetV1(num_classes, in_chans, head, drop_rate, width_mult, act)


@register_model(_v1_cfg(2_585_560, "computed; paper Table 6 gives 2.6M"))
def mobilenet_v1_075(
    num_classes: int = 1000, in_chans: int = 3, head: str = "fc", drop_rate: float = 0.0, act: str = "relu"
) -> MobileNetV1:
    """0.75 MobileNet-224 (Table 6)."""
    return MobileNetV1(num_classes, in_chans, head, drop_rate, 0.75, act)


@register_model(_v1_cfg(1_331_592, "computed; paper Table 6 gives 1.3M"))
def mobilenet_v1_050(
    num_classes: int = 1000, in_chans: int = 3, head: str = "fc", drop_rate: float = 0.0, act: str = "relu"
) -> MobileNetV1:
    """0.5 MobileNet-224 (Table 6)."""
    return MobileNetV1(num_classes, in_chans, head, drop_rate, 0.5, act)


@register_model(_v1_cfg(470_072, "computed; paper Table 6 gives 0.5M"))
def mobilenet_v1_025(
    num_classes: int = 1000, in_chans: int = 3, head: str = "fc", drop_rate: float = 0.0, act: str = "relu"
) -> MobileNetV1:
    """0.25 MobileNet-224 (Table 6)."""
    return MobileNetV1(num_classes, in_chans, head, drop_rate, 0.25, act)


@register_model(
    _v1_cfg(
        4_231_976,
        "reference",
        reference="timm/mobilenetv1_100",
        key_map=timm_v1_key_map,
        interpolation="bicubic",
    )
)
def mobilenet_v1_relu6(
    num_classes: int = 1000, in_chans: int = 3, head: str = "fc", drop_rate: float = 0.0, width_mult: float = 1.0
) -> MobileNetV1:
    """MobileNet v1 with ReLU6 instead of the paper's ReLU: timm's ``mobilenetv1_100``, whose
    checkpoints it loads (and TensorFlow's reference implementation)."""
    return MobileNetV1(num_classes, in_chans, head, drop_rate, width_mult, "relu6")


@register_model(
    ModelCfg(
        paper=V2_PAPER,
        year=2018,
        num_params=3_504_872,
        min_input_size=MIN_INPUT_SIZE,
        reference="torchvision/mobilenet_v2",
        key_map=torchvision_v2_key_map,
        first_conv="stem.conv",
        classifier=("head.fc",),
    )
)
def mobilenet_v2(
    num_classes: int = 1000, in_chans: int = 3, head: str = "fc", drop_rate: float = 0.2, width_mult: float = 1.0
) -> MobileNetV2:
    """MobileNet v2 (Table 2); `width_mult` is the width multiplier (§6.1: 0.35 to 1.4). Dropout 0.2
    before the classifier, as in torchvision and TensorFlow's reference implementation."""
    return MobileNetV2(num_classes, in_chans, head, drop_rate, width_mult)
