"""VGG (Simonyan & Zisserman 2014, "Very Deep Convolutional Networks for Large-Scale Image
Recognition"): configurations A, B, D and E of Table 1 as `vgg11`, `vgg13`, `vgg16`, `vgg19`, and
with batch normalization after every convolution (Ioffe & Szegedy 2015) as `vgg11_bn` ... `vgg19_bn`.

Every convolution is 3×3 with stride 1 and padding 1, followed by ReLU (section 2.1); five 2×2
stride-2 max pools close the five stages of 64, 128, 256, 512 and 512 channels. Stacking three 3×3
layers gives the receptive field of one 7×7 layer with 27C² instead of 49C² weights and three
nonlinearities instead of one (section 2.3). Then fc6 and fc7 of 4096 units with dropout 0.5
(section 3.1) and fc8.

The models equal torchvision's ``vgg*``: the same parameter counts (Table 2 rounds them to 133, 133,
138 and 144 million), and they load torchvision checkpoints and compute the same function, including
the adaptive average pool to 7×7 before fc6 that lets any input of at least 32×32 work.

Deviations, stated:
- Initialization: the paper trains A from N(0, 0.01²) weights and initializes the deeper nets from
  it (section 3.1), noting that Glorot & Bengio's random initialization works without pre-training;
  we use its ReLU form (He et al. 2015, fan-out) for the convolutions, N(0, 0.01²) for the fully
  connected layers and zero biases, as torchvision does.
- Dropout follows the ReLU of fc6 and fc7, as in torchvision; configuration C (1×1 convolutions) and
  A-LRN of Table 1 are not provided.

Heads: ``head="conv"`` is the paper's own test-time form (section 3.2): "the fully-connected layers
are first converted to convolutional layers (the first FC layer to a 7×7 conv. layer, the last two
FC layers to 1×1 conv. layers)", and the class score map is spatially averaged. `num_features` is
fc7's width, 4096, as in timm.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torch
import torch.nn as nn

from dcnn.layers.conv_bn_act import ConvBnAct
from dcnn.layers.head import FullyConnectedHead
from dcnn.models._base import ImageClassifier
from dcnn.models._registry import ModelCfg, register_model
from dcnn.models.pretrained import rename_prefixes

# Table 1: the width of each of the five stages and, per configuration, its number of 3×3 convs.
STAGE_WIDTHS = (64, 128, 256, 512, 512)
STAGE_DEPTHS = {
    "A": (1, 1, 2, 2, 2),  # VGG-11
    "B": (2, 2, 2, 2, 2),  # VGG-13
    "D": (2, 2, 3, 3, 3),  # VGG-16
    "E": (2, 2, 4, 4, 4),  # VGG-19
}
# Parameter counts of torchvision's models (Table 2 gives 133, 133, 138, 144 million).
NUM_PARAMS = {
    ("A", False): 132_863_336,
    ("B", False): 133_047_848,
    ("D", False): 138_357_544,
    ("E", False): 143_667_240,
    ("A", True): 132_868_840,
    ("B", True): 133_053_736,
    ("D", True): 138_365_992,
    ("E", True): 143_678_248,
}
FC_POOL_SIZE = 7  # fc6 reads the 7×7 map of a 224×224 input
FC_WIDTH = 4096


def vgg_stage(in_channels: int, width: int, depth: int, batch_norm: bool) -> nn.Sequential:
    """`depth` 3×3 convs (conv → [BN] → ReLU, biases kept as in torchvision) and a 2×2 max pool."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for index in range(depth):
        layers[f"conv{index + 1}"] = ConvBnAct(
            in_channels if index == 0 else width, width, 3, padding=1, norm=batch_norm, bias=True
        )
    layers["pool"] = nn.MaxPool2d(2, stride=2)
    return nn.Sequential(layers)


class VGG(ImageClassifier):
    """Stages `features.stage1` ... `features.stage5` and AlexNet's fully connected head.

    Args:
        depths: convs per stage (a value of `STAGE_DEPTHS`).
        num_classes: output classes (0: no classifier; the model returns fc7's features).
        in_chans: input channels.
        batch_norm: batch normalization after every convolution.
        head: "fc" or "conv" (fc6-fc8 as 7×7 and 1×1 convolutions, section 3.2).
        drop_rate: dropout after fc6 and fc7 (0.5, section 3.1).
    """

    def __init__(
        self,
        depths: tuple[int, ...],
        num_classes: int = 1000,
        in_chans: int = 3,
        batch_norm: bool = False,
        head: str = "fc",
        drop_rate: float = 0.5,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.num_features = FC_WIDTH
        stages: OrderedDict[str, nn.Module] = OrderedDict()
        channels = in_chans
        for index, (width, depth) in enumerate(zip(STAGE_WIDTHS, depths, strict=True), start=1):
            stages[f"stage{index}"] = vgg_stage(channels, width, depth, batch_norm)
            channels = width
        self.features = nn.Sequential(stages)
        self.head = FullyConnectedHead(channels, num_classes, FC_POOL_SIZE, FC_WIDTH, drop_rate, head, init_std=0.01)
        for module in self.features.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def torchvision_key_map(depths: tuple[int, ...], batch_norm: bool) -> dict[str, str]:
    """Prefixes of torchvision's flat ``features.{i}`` (conv, [BN], ReLU per conv; a pool per stage)
    and ``classifier.{0,3,6}`` → ours."""
    prefixes = {}
    index = 0
    for stage, depth in enumerate(depths, start=1):
        for conv in range(1, depth + 1):
            prefixes[f"features.{index}."] = f"features.stage{stage}.conv{conv}.conv."
            if batch_norm:
                prefixes[f"features.{index + 1}."] = f"features.stage{stage}.conv{conv}.bn."
            index += 3 if batch_norm else 2
        index += 1  # the stage's max pool
    prefixes.update({"classifier.0.": "head.fc6.", "classifier.3.": "head.fc7.", "classifier.6.": "head.fc8."})
    return prefixes


def _cfg(config: str, batch_norm: bool) -> ModelCfg:
    layers = {"A": 11, "B": 13, "D": 16, "E": 19}[config]
    name = f"vgg{layers}" + ("_bn" if batch_norm else "")
    paper = "Simonyan & Zisserman 2014, Very Deep Convolutional Networks for Large-Scale Image Recognition"
    return ModelCfg(
        paper=paper + (" (with batch normalization, Ioffe & Szegedy 2015)" if batch_norm else ""),
        year=2014,
        num_params=NUM_PARAMS[config, batch_norm],
        reference=f"torchvision/{name}",
        key_map=partial(rename_prefixes, prefixes=torchvision_key_map(STAGE_DEPTHS[config], batch_norm)),
        min_input_size=(3, 32, 32),
        first_conv="features.stage1.conv1.conv",
        classifier=("head.fc8",),
    )


def _vgg(config: str, batch_norm: bool, num_classes: int, in_chans: int, head: str, drop_rate: float) -> VGG:
    return VGG(STAGE_DEPTHS[config], num_classes, in_chans, batch_norm, head, drop_rate)


@register_model(_cfg("A", batch_norm=False))
def vgg11(num_classes: int = 1000, in_chans: int = 3, head: str = "fc", drop_rate: float = 0.5) -> VGG:
    """VGG-11, configuration A of Table 1."""
    return _vgg("A", False, num_classes, in_chans, head, drop_rate)


@register_model(_cfg("A", batch_norm=True))
def vgg11_bn(num_classes: int = 1000, in_chans: int = 3, head: str = "fc", drop_rate: float = 0.5) -> VGG:
    """VGG-11 (configuration A) with batch normalization."""
    return _vgg("A", True, num_classes, in_chans, head, drop_rate)


@register_model(_cfg("B", batch_norm=False))
def vgg13(num_classes: int = 1000, in_chans: int = 3, head: str = "fc", drop_rate: float = 0.5) -> VGG:
    """VGG-13, configuration B of Table 1."""
    return _vgg("B", False, num_classes, in_chans, head, drop_rate)


@register_model(_cfg("B", batch_norm=True))
def vgg13_bn(num_classes: int = 1000, in_chans: int = 3, head: str = "fc", drop_rate: float = 0.5) -> VGG:
    """VGG-13 (configuration B) with batch normalization."""
    return _vgg("B", True, num_classes, in_chans, head, drop_rate)


@register_model(_cfg("D", batch_norm=False))
def vgg16(num_classes: int = 1000, in_chans: int = 3, head: str = "fc", drop_rate: float = 0.5) -> VGG:
    """VGG-16, configuration D of Table 1."""
    return _vgg("D", False, num_classes, in_chans, head, drop_rate)


@register_model(_cfg("D", batch_norm=True))
def vgg16_bn(num_classes: int = 1000, in_chans: int = 3, head: str = "fc", drop_rate: float = 0.5) -> VGG:
    """VGG-16 (configuration D) with batch normalization."""
    return _vgg("D", True, num_classes, in_chans, head, drop_rate)


@register_model(_cfg("E", batch_norm=False))
def vgg19(num_classes: int = 1000, in_chans: int = 3, head: str = "fc", drop_rate: float = 0.5) -> VGG:
    """VGG-19, configuration E of Table 1."""
    return _vgg("E", False, num_classes, in_chans, head, drop_rate)


@register_model(_cfg("E", batch_norm=True))
def vgg19_bn(num_classes: int = 1000, in_chans: int = 3, head: str = "fc", drop_rate: float = 0.5) -> VGG:
    """VGG-19 (configuration E) with batch normalization."""
    return _vgg("E", True, num_classes, in_chans, head, drop_rate)
