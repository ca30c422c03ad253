"""BN-Inception, the "Inception v2" of Ioffe & Szegedy 2015 ("Batch Normalization: Accelerating Deep
Network Training by Reducing Internal Covariate Shift", §4.2 and the appendix's Figure 5).

GoogLeNet with batch normalization before every nonlinearity (§3.2: on the convolution's output, whose
bias it makes redundant) and the appendix's architecture changes:
- every 5×5 convolution replaced by two consecutive 3×3 convolutions (the "double 3×3" branch);
- three 28×28 Inception modules instead of two;
- average or max pooling inside the modules, as Figure 5 lists them;
- no pooling layers between the modules: the stride-2 modules 3c and 4e reduce the grid with stride-2
  convolutions and a max pool whose output passes through unprojected;
- the first convolution is depthwise separable with depth multiplier 8 (a 7×7 depthwise convolution
  to 8 maps per input channel, then a 1×1 convolution to 64); ``separable_stem=False`` gives the plain
  7×7 convolution of the popular Caffe reproduction.
§4.2.1's changes that belong to the network are applied too: no local response normalization and no
dropout (`drop_rate` 0).

Choices, stated:
- Figure 5 lists 128-filter pool projections in modules 4c and 4d, which contradicts the 576-channel
  output size it gives for them (160 + 160 + 160 + 128 = 608). We use 96, which makes every output
  size of Figure 5 hold, as Google's TF-slim ``inception_v2`` does; the Caffe reproduction keeps 128
  (608 and 1056 channels).
- The paper gives no padding and no batch-normalization ε: the stride-2 max pools are padded by one
  pixel (so that a stride-2 module's pool and convolutions always agree in size, ⌈H/2⌉, as
  TensorFlow's "SAME" pooling), average pools leave the padding out of the average (also "SAME"), and
  ε = 0.001 (TF-slim's).
- The 7×7 average pool before the classifier is a global average pool (the same at 224×224).

Parameters: 11,188,288, computed from Figure 5 (11,194,984 with ``separable_stem=False``); the
appendix gives no per-layer counts to check them against.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import torch.nn as nn

from dcnn.layers.conv_bn_act import ConvBnAct
from dcnn.layers.inception import Branch, Conv, Layer, Pool, build_layers
from dcnn.models._registry import ModelCfg, register_model
from dcnn.models.googlenet import InceptionNet


class BNInceptionModule(NamedTuple):
    """A row of Figure 5. `pool_proj` 0 is "pass through"; stride-2 modules have no 1×1 branch."""

    n1x1: int
    n3x3_reduce: int
    n3x3: int
    double_reduce: int
    double: int
    pool: str
    pool_proj: int
    stride: int = 1

    def branches(self) -> tuple[Branch, ...]:
        s = self.stride
        pool = MAX_POOL_S2 if s == 2 else Pool(self.pool, 3, count_include_pad=False)
        return (
            *(((Conv(self.n1x1),),) if self.n1x1 else ()),
            (Conv(self.n3x3_reduce), Conv(self.n3x3, 3, stride=s)),
            (Conv(self.double_reduce), Conv(self.double, 3), Conv(self.double, 3, stride=s)),
            (pool, Conv(self.pool_proj)) if self.pool_proj else (pool,),
        )


# Every stride-2 max pool: padded so that its output is ⌈H/2⌉ like the stride-2 convolutions'.
MAX_POOL_S2 = Pool("max", 3, stride=2, padding=1)
# Figure 5 (pool projections of 4c and 4d: 96, see the module docstring).
BN_INCEPTION_MODULES: dict[str, BNInceptionModule] = {
    "inception_3a": BNInceptionModule(64, 64, 64, 64, 96, "avg", 32),
    "inception_3b": BNInceptionModule(64, 64, 96, 64, 96, "avg", 64),
    "inception_3c": BNInceptionModule(0, 128, 160, 64, 96, "max", 0, stride=2),
    "inception_4a": BNInceptionModule(224, 64, 96, 96, 128, "avg", 128),
    "inception_4b": BNInceptionModule(192, 96, 128, 96, 128, "avg", 128),
    "inception_4c": BNInceptionModule(160, 128, 160, 128, 160, "avg", 96),
    "inception_4d": BNInceptionModule(96, 128, 192, 160, 192, "avg", 96),
    "inception_4e": BNInceptionModule(0, 128, 192, 192, 256, "max", 0, stride=2),
    "inception_5a": BNInceptionModule(352, 192, 320, 160, 224, "avg", 128),
    "inception_5b": BNInceptionModule(352, 192, 320, 192, 224, "max", 128),
}
BN_INCEPTION: dict[str, Layer] = {
    "pool1": MAX_POOL_S2,
    "conv2_reduce": Conv(64),
    "conv2": Conv(192, 3),
    "pool2": MAX_POOL_S2,
    **{name: module.branches() for name, module in BN_INCEPTION_MODULES.items()},
}
DEPTH_MULTIPLIER = 8


def bn_inception_stem(in_chans: int, separable: bool, bn_eps: float) -> nn.Module:
    """conv1, 7×7/2 to 64 maps: depthwise separable with depth multiplier 8 (batch normalization and
    ReLU after the pointwise convolution, as TF-slim's separable convolution), or a plain convolution."""
    if not separable:
        return ConvBnAct(in_chans, 64, 7, stride=2, bn_eps=bn_eps)
    depthwise_out = in_chans * DEPTH_MULTIPLIER
    stem = nn.Sequential()
    stem.add_module(
        "depthwise", ConvBnAct(in_chans, depthwise_out, 7, stride=2, groups=in_chans, norm=False, bias=False,
                               act=None),
    )  # fmt: skip
    stem.add_module("pointwise", ConvBnAct(depthwise_out, 64, 1, bn_eps=bn_eps))
    return stem


@register_model(
    ModelCfg(
        paper="Ioffe & Szegedy 2015, Batch Normalization: Accelerating Deep Network Training by Reducing "
        "Internal Covariate Shift",
        year=2015,
        num_params=11_188_288,
        num_params_source="computed from Figure 5",
        min_input_size=(3, 1, 1),  # padded throughout: a 1×1 input still leaves a 1×1 map
        first_conv="features.conv1.depthwise.conv",
        classifier=("head.fc",),
    )
)
def bn_inception(
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    separable_stem: bool = True,
    head: str = "fc",
) -> InceptionNet:
    """BN-Inception (Figure 5 with batch normalization), without LRN and dropout as in §4.2.1."""
    bn_eps = 1e-3
    layers, channels = build_layers(64, BN_INCEPTION, partial(ConvBnAct, bn_eps=bn_eps))
    features = {"conv1": bn_inception_stem(in_chans, separable_stem, bn_eps), **layers}
    return InceptionNet(features, channels, num_classes, in_chans, drop_rate, head)
