"""AlexNet (Krizhevsky, Sutskever & Hinton 2012, "ImageNet Classification with Deep Convolutional
Neural Networks") and the single-tower variant of "One weird trick" (Krizhevsky 2014).

`alexnet` follows the 2012 paper (section 3, Figure 2):

=====  ==========================================================  ============  ==========
layer  what                                                        output (227)  parameters
=====  ==========================================================  ============  ==========
conv1  96 × 11×11, stride 4; ReLU; LRN; 3×3 max pool, stride 2      96 × 27²          34,944
conv2  256 × 5×5, two towers (groups=2); ReLU; LRN; max pool        256 × 13²        307,456
conv3  384 × 3×3, reads both towers                                 384 × 13²        885,120
conv4  384 × 3×3, two towers                                        384 × 13²        663,936
conv5  256 × 3×3, two towers; ReLU; max pool                        256 × 6²         442,624
fc6    4096, ReLU, dropout 0.5                                     4096          37,752,832
fc7    4096, ReLU, dropout 0.5                                     4096          16,781,312
fc8    1000                                                        1000           4,097,000
=====  ==========================================================  ============  ==========

60,965,224 parameters in all; the paper says "60 million parameters" (abstract, section 4).
The two GPUs of section 3.2 become grouped convolutions: conv2, conv4 and conv5 read only the maps of
their own tower, conv3 and the fully connected layers read both. Local response normalization
(section 3.3, :class:`~dcnn.layers.lrn.LocalResponseNorm2d`, k=2, n=5, α=1e-4, β=0.75) follows
the ReLU of conv1 and conv2; max pooling is overlapping, 3×3 with stride 2 (section 3.4). The input
is 227×227: the paper's "224×224" does not give its 55×55 conv1 maps with an 11×11 stride-4 kernel.
Initialization follows section 5: weights N(0, 0.01²), biases 1 in conv2, conv4, conv5 and the
hidden fully connected layers, 0 elsewhere.

`alexnet_owt` is torchvision's ``alexnet``: one tower of 64-192-384-256-256 filters, padding 2 in
conv1, no LRN (Krizhevsky 2014, "One weird trick for parallelizing convolutional neural networks");
it loads torchvision checkpoints and computes the same function.

Deviations, stated:
- An adaptive average pool to 6×6 before fc6 (as torchvision has) lets any input at or above the
  minimum size work; at 227×227 (224 for `alexnet_owt`) it is the identity.
- Dropout follows the ReLU of fc6 and fc7 as in section 4.2; torchvision applies it before fc6 and
  fc7 instead. Both are identity in eval mode, so pretrained outputs agree.

Heads. ``head="fc"`` is the paper's. ``head="conv"`` turns the stack into convolutions (OverFeat,
Sermanet et al. 2014; FCN, Long et al. 2015): fc6 is a 6×6 convolution over the pooled map, fc7 and
fc8 are 1×1 convolutions, and the class map is averaged globally. Maps smaller than 6×6 are first
pooled up to 6×6, so both heads compute the same function up to the native input size; larger inputs
slide the classifier over the image. `load_pretrained` reshapes linear weights into these convs.
`num_features` is fc7's width (4096), what ``forward_head(x, pre_logits=True)`` returns, as timm does
for VGG.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn as nn

from dcnn.layers.conv_bn_act import ConvBnAct
from dcnn.layers.head import FullyConnectedHead, init_gaussian
from dcnn.layers.lrn import LocalResponseNorm2d
from dcnn.models._base import ImageClassifier
from dcnn.models._registry import ModelCfg, register_model
from dcnn.models.pretrained import rename_prefixes


@dataclass(frozen=True)
class ConvStage:
    """One convolution + ReLU, then `then` in order: "lrn" (section 3.3) and/or "pool" (section 3.4).

    `bias_init` is the bias the paper initializes this layer with (used when the architecture gives
    an `init_std`).
    """

    out_channels: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    groups: int = 1
    then: tuple[str, ...] = ()
    bias_init: float = 0.0


@dataclass(frozen=True)
class ConvFcArch:
    """Five conv stages and a 3-layer fully connected head: AlexNet and ZFNet.

    Attributes:
        stages: the convolution stages, first to last.
        pool_ceil_mode: round pooled sizes up (Caffe and cuda-convnet) instead of down.
        pool_size: side of the map fc6 reads (6 for a 227×227 AlexNet input).
        hidden: width of fc6 and fc7.
        init_std: the paper's N(0, std²) weight initialization; None keeps PyTorch's default.
        hidden_bias_init: bias of fc6 and fc7 under the paper's initialization.
    """

    stages: tuple[ConvStage, ...]
    pool_ceil_mode: bool = False
    pool_size: int = 6
    hidden: int = 4096
    init_std: float | None = None
    hidden_bias_init: float = 0.0


ALEXNET = ConvFcArch(
    stages=(
        ConvStage(96, 11, stride=4, then=("lrn", "pool")),
        ConvStage(256, 5, padding=2, groups=2, then=("lrn", "pool"), bias_init=1.0),
        ConvStage(384, 3, padding=1),
        ConvStage(384, 3, padding=1, groups=2, bias_init=1.0),
        ConvStage(256, 3, padding=1, groups=2, then=("pool",), bias_init=1.0),
    ),
    init_std=0.01,
    hidden_bias_init=1.0,
)

ALEXNET_OWT = ConvFcArch(
    stages=(
        ConvStage(64, 11, stride=4, padding=2, then=("pool",)),
        ConvStage(192, 5, padding=2, then=("pool",)),
        ConvStage(384, 3, padding=1),
        ConvStage(256, 3, padding=1),
        ConvStage(256, 3, padding=1, then=("pool",)),
    ),
)


def stage_op(op: str, pool_ceil_mode: bool) -> nn.Module:
    """The layer a stage applies after its ReLU: "lrn" or "pool"."""
    if op == "lrn":  # section 3.3: k = 2, n = 5, α = 1e-4, β = 0.75
        return LocalResponseNorm2d(size=5, alpha=1e-4, beta=0.75, k=2.0)
    if op == "pool":  # section 3.4: overlapping pooling, z = 3, s = 2
        return nn.MaxPool2d(3, stride=2, ceil_mode=pool_ceil_mode)
    raise ValueError(f"unknown stage operation {op!r}; use 'lrn' or 'pool'")


class AlexNet(ImageClassifier):
    """Five convolution stages (`features.conv1` ... `features.conv5`) and a fully connected head.

    Args:
        arch: the stage table (`ALEXNET`, `ALEXNET_OWT`, or ZFNet's).
        num_classes: output classes (0: no classifier; the model returns fc7's features).
        in_chans: input channels.
        head: "fc" (the paper's) or "conv" (fully convolutional, see the module docstring).
        drop_rate: dropout probability after fc6 and fc7 (0.5 in the paper, section 4.2).
    """

    def __init__(
        self,
        arch: ConvFcArch,
        num_classes: int = 1000,
        in_chans: int = 3,
        head: str = "fc",
        drop_rate: float = 0.5,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.num_features = arch.hidden
        stages: OrderedDict[str, nn.Module] = OrderedDict()
        channels = in_chans
        for index, spec in enumerate(arch.stages, start=1):
            stage = ConvBnAct(
                channels,
                spec.out_channels,
                spec.kernel_size,
                spec.stride,
                spec.padding,
                spec.groups,
                norm=False,
            )
            for op in spec.then:
                stage.add_module(op, stage_op(op, arch.pool_ceil_mode))
            stages[f"conv{index}"] = stage
            channels = spec.out_channels
        self.features = nn.Sequential(stages)
        self.head = FullyConnectedHead(
            channels,
            num_classes,
            arch.pool_size,
            arch.hidden,
            drop_rate,
            head,
            init_std=arch.init_std,
            hidden_bias=arch.hidden_bias_init,
        )
        if arch.init_std is not None:
            for stage, spec in zip(self.features, arch.stages, strict=True):
                init_gaussian(stage.conv, arch.init_std, spec.bias_init)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


# torchvision's alexnet: features.{0,3,6,8,10} are the convs, classifier.{1,4,6} the linear layers.
TORCHVISION_ALEXNET_KEYS = {
    "features.0.": "features.conv1.conv.",
    "features.3.": "features.conv2.conv.",
    "features.6.": "features.conv3.conv.",
    "features.8.": "features.conv4.conv.",
    "features.10.": "features.conv5.conv.",
    "classifier.1.": "head.fc6.",
    "classifier.4.": "head.fc7.",
    "classifier.6.": "head.fc8.",
}


@register_model(
    ModelCfg(
        paper=("Krizhevsky, Sutskever & Hinton 2012, ImageNet Classification with Deep Convolutional Neural Networks"),
        year=2012,
        num_params=60_965_224,
        num_params_source="computed; the paper says '60 million parameters' (abstract, section 4)",
        input_size=(3, 227, 227),
        min_input_size=(3, 67, 67),
        first_conv="features.conv1.conv",
        classifier=("head.fc8",),
    )
)
def alexnet(num_classes: int = 1000, in_chans: int = 3, head: str = "fc", drop_rate: float = 0.5) -> AlexNet:
    """AlexNet as in the 2012 paper: two towers as grouped convolutions, LRN, 227×227 input."""
    return AlexNet(ALEXNET, num_classes, in_chans, head, drop_rate)


@register_model(
    ModelCfg(
        paper="Krizhevsky 2014, One weird trick for parallelizing convolutional neural networks",
        year=2014,
        num_params=61_100_840,
        reference="torchvision/alexnet",
        key_map=partial(rename_prefixes, prefixes=TORCHVISION_ALEXNET_KEYS),
        min_input_size=(3, 63, 63),
        first_conv="features.conv1.conv",
        classifier=("head.fc8",),
    )
)
def alexnet_owt(num_classes: int = 1000, in_chans: int = 3, head: str = "fc", drop_rate: float = 0.5) -> AlexNet:
    """Single-tower AlexNet of "One weird trick", equal to torchvision's ``alexnet``."""
    return AlexNet(ALEXNET_OWT, num_classes, in_chans, head, drop_rate)
