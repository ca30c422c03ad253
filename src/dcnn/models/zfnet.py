"""ZFNet (Zeiler & Fergus 2013, "Visualizing and Understanding Convolutional Networks", section 3,
Figure 3): AlexNet's layout with a smaller, denser first layer, found by visualizing AlexNet's filters.

=====  ===============================================================  ============  ==========
layer  what                                                             output (224)  parameters
=====  ===============================================================  ============  ==========
conv1  96 × 7×7, stride 2; ReLU; 3×3 max pool, stride 2; contrast norm   96 × 55²          14,208
conv2  256 × 5×5, stride 2; ReLU; 3×3 max pool, stride 2; contrast norm  256 × 13²        614,656
conv3  384 × 3×3; ReLU                                                   384 × 13²        885,120
conv4  384 × 3×3; ReLU                                                   384 × 13²      1,327,488
conv5  256 × 3×3; ReLU; 3×3 max pool, stride 2                           256 × 6²         884,992
fc6    4096, ReLU, dropout 0.5                                           4096        37,752,832
fc7    4096, ReLU, dropout 0.5                                           4096        16,781,312
fc8    1000                                                              1000         4,097,000
=====  ===============================================================  ============  ==========

62,357,608 parameters, computed; the paper gives none. The network was trained on one GPU, so no
layer is split into towers. Figure 3's map sizes (110, 55, 26, 13, 13, 6) fix the details the text
leaves open: conv1 is padded by 1, conv2 by 0, and pooling rounds up (ceil mode, as in Caffe).
Pooling comes before the normalization ("pooled ... and contrast normalized across feature maps",
Figure 3), the reverse of AlexNet's order. Initialization follows section 3: weights N(0, 0.01²),
biases 0.

Deviations, stated:
- "Contrast normalized across feature maps" gives no constants; we use AlexNet's local response
  normalization across maps (k=2, n=5, α=1e-4, β=0.75), the network ZFNet is built on.
- The renormalization of section 3 (filters whose RMS exceeds 0.1 are scaled back) is a training
  step, not part of the model.
- An adaptive average pool to 6×6 before fc6 lets inputs other than 224×224 work (identity at 224).

The heads are AlexNet's (:class:`~dcnn.layers.head.FullyConnectedHead`): ``head="conv"`` turns
fc6-fc8 into 6×6 and 1×1 convolutions; `num_features` is fc7's width, 4096.
"""

from __future__ import annotations

from dcnn.models._registry import ModelCfg, register_model
from dcnn.models.alexnet import AlexNet, ConvFcArch, ConvStage

ZFNET = ConvFcArch(
    stages=(
        ConvStage(96, 7, stride=2, padding=1, then=("pool", "lrn")),
        ConvStage(256, 5, stride=2, then=("pool", "lrn")),
        ConvStage(384, 3, padding=1),
        ConvStage(384, 3, padding=1),
        ConvStage(256, 3, padding=1, then=("pool",)),
    ),
    pool_ceil_mode=True,
    init_std=0.01,
)


class ZFNet(AlexNet):
    """ZFNet: an :class:`~dcnn.models.alexnet.AlexNet` built from the `ZFNET` stage table."""


@register_model(
    ModelCfg(
        paper="Zeiler & Fergus 2013, Visualizing and Understanding Convolutional Networks",
        year=2013,
        num_params=62_357_608,
        num_params_source="computed; the paper gives none",
        min_input_size=(3, 47, 47),
        first_conv="features.conv1.conv",
        classifier=("head.fc8",),
    )
)
def zfnet(num_classes: int = 1000, in_chans: int = 3, head: str = "fc", drop_rate: float = 0.5) -> ZFNet:
    """ZFNet of Figure 3: 7×7 stride-2 conv1, 224×224 input, dropout 0.5 in fc6 and fc7."""
    return ZFNet(ZFNET, num_classes, in_chans, head, drop_rate)
