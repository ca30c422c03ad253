"""Network in Network (Lin, Chen & Yan 2013, "Network In Network").

An mlpconv block (section 3.1) slides a small multilayer perceptron over the input: a k×k
convolution followed by two 1×1 convolutions ("cascaded cross channel parametric pooling"), each
with ReLU (eq. 2). Blocks end in pooling, and dropout follows every block but the last (section 4.1).
The last mlpconv layer produces one map per class and global average pooling turns the maps into
class scores (section 3.2): no fully connected layers.

Two configurations. The paper leaves the layer settings to the models the authors released
(section 4.1 points to the supplementary material), so both follow those releases:

- `nin_cifar`, the paper's CIFAR-10 network (section 4.2, 10.41% test error): three mlpconv blocks,
  5×5 conv 192 → 160 → 96, 3×3 stride-2 max pool; 5×5 conv 192 → 192 → 192, 3×3 stride-2 average
  pool; 3×3 conv 192 → 192 → 10 maps; 32×32 input.
- `nin`, the authors' ImageNet model (released with Caffe, not described in the paper): four blocks,
  11×11 stride-4 conv 96 → 96 → 96, 5×5 conv 256 → 256 → 256, 3×3 conv 384 → 384 → 384 (each with
  a 3×3 stride-2 max pool), then 3×3 conv 1024 → 1024 → 1000 maps; 224×224 input.

Pooling rounds up, as cuda-convnet and Caffe do, so a 32×32 input halves to 16 and 8 (and 224
gives 54, 27, 13, 6). The paper gives no parameter count; `num_params` is computed.

Heads. ``head="conv"`` (the default) is the paper's: the last 1×1 conv gives K class maps, ReLU as in
every mlpconv layer (eq. 2; the released models have it too), then global average pooling.
``head="fc"`` is the modern equivalent: global average pooling of the last hidden maps, then a linear
classifier of the same weights (no ReLU on the scores). The two differ only by that ReLU; a
checkpoint of the fc head loads into the conv head (`load_pretrained` reshapes linear weights into
1×1 convs). `num_features` is the width of the last hidden maps (1024 or 192),
what ``forward_head(x, pre_logits=True)`` returns.

Deviations, stated:
- The released ImageNet model applies dropout after its third block only; we follow the paper's rule
  (after every block but the last) in both configurations.
- The paper does not give its initialization; we use He et al. 2015's (Kaiming normal) for every
  convolution, biases 0.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn as nn

from dcnn.layers.conv_bn_act import ConvBnAct
from dcnn.layers.head import ClassifierHead
from dcnn.models._base import ImageClassifier
from dcnn.models._registry import CIFAR_MEAN, CIFAR_STD, ModelCfg, register_model


@dataclass(frozen=True)
class MlpconvBlock:
    """A k×k conv then 1×1 convs of `widths` (the first is the k×k layer's), then `pool` ("max",
    "avg"; None for the last block, whose final 1×1 layer is the classifier)."""

    kernel_size: int
    widths: tuple[int, ...]
    stride: int = 1
    padding: int = 0
    pool: str | None = "max"


NIN_IMAGENET = (
    MlpconvBlock(11, (96, 96, 96), stride=4),
    MlpconvBlock(5, (256, 256, 256), padding=2),
    MlpconvBlock(3, (384, 384, 384), padding=1),
    MlpconvBlock(3, (1024, 1024), padding=1, pool=None),  # + 1×1 conv to the class maps
)

NIN_CIFAR = (
    MlpconvBlock(5, (192, 160, 96), padding=2),
    MlpconvBlock(5, (192, 192, 192), padding=2, pool="avg"),
    MlpconvBlock(3, (192, 192), padding=1, pool=None),  # + 1×1 conv to the class maps
)

POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


class ClassMapHead(ClassifierHead):
    """The last mlpconv layer and global average pooling (section 3.2).

    ``head="conv"``: 1×1 conv to one map per class, ReLU (eq. 2), global average pooling.
    ``head="fc"``: global average pooling, then a linear classifier.
    """

    def __init__(self, in_features: int, num_classes: int, head: str = "conv") -> None:
        super().__init__(in_features, num_classes, pool="avg", drop_rate=0.0, head=head)
        self.act = nn.ReLU()

    def class_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().class_map(x))


class NIN(ImageClassifier):
    """mlpconv blocks `features.block1` ... (layers `layer1`, `layer2`, `layer3` as in eq. 2's
    index n) and a :class:`ClassMapHead`.

    Args:
        blocks: the block table (`NIN_IMAGENET` or `NIN_CIFAR`).
        num_classes: number of class maps (0: no classifier; the model returns pooled features).
        in_chans: input channels.
        head: "conv" (the paper's class maps) or "fc" (pool, then linear).
        drop_rate: dropout after every block but the last (0.5 in the released models).
    """

    def __init__(
        self,
        blocks: tuple[MlpconvBlock, ...],
        num_classes: int = 1000,
        in_chans: int = 3,
        head: str = "conv",
        drop_rate: float = 0.5,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_chans = in_chans
        features: OrderedDict[str, nn.Module] = OrderedDict()
        channels = in_chans
        for index, block in enumerate(blocks, start=1):
            layers: OrderedDict[str, nn.Module] = OrderedDict()
            for depth, width in enumerate(block.widths, start=1):
                if depth == 1:
                    layer = ConvBnAct(channels, width, block.kernel_size, block.stride, block.padding, norm=False)
                else:
                    layer = ConvBnAct(channels, width, 1, norm=False)
                layers[f"layer{depth}"] = layer
                channels = width
            if block.pool is not None:
                layers["pool"] = POOLS[block.pool](3, stride=2, ceil_mode=True)
            if index < len(blocks):
                layers["drop"] = nn.Dropout(drop_rate)
            features[f"block{index}"] = nn.Sequential(layers)
        self.features = nn.Sequential(features)
        self.num_features = channels
        self.head = ClassMapHead(channels, num_classes, head)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


PAPER = "Lin, Chen & Yan 2013, Network In Network"


@register_model(
    ModelCfg(
        paper=PAPER + " (ImageNet model of the authors' Caffe release)",
        year=2013,
        num_params=7_595_176,
        num_params_source="computed; the paper gives none (and describes no ImageNet model)",
        min_input_size=(3, 39, 39),
        first_conv="features.block1.layer1.conv",
        classifier=("head.fc",),
    )
)
def nin(num_classes: int = 1000, in_chans: int = 3, head: str = "conv", drop_rate: float = 0.5) -> NIN:
    """ImageNet NIN: four mlpconv blocks of 96, 256, 384 and 1024 channels, 224×224 input."""
    return NIN(NIN_IMAGENET, num_classes, in_chans, head, drop_rate)


@register_model(
    ModelCfg(
        paper=PAPER,
        year=2013,
        num_params=966_986,
        num_params_source="computed; the paper gives none",
        input_size=(3, 32, 32),
        min_input_size=(3, 4, 4),
        num_classes=10,
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
        first_conv="features.block1.layer1.conv",
        classifier=("head.fc",),
    )
)
def nin_cifar(num_classes: int = 10, in_chans: int = 3, head: str = "conv", drop_rate: float = 0.5) -> NIN:
    """The paper's CIFAR-10 NIN: three mlpconv blocks of 192 channels, 32×32 input."""
    return NIN(NIN_CIFAR, num_classes, in_chans, head, drop_rate)
