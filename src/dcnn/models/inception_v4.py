"""Inception-v4 (Szegedy, Ioffe, Vanhoucke & Alemi 2016, "Inception-v4, Inception-ResNet and the
Impact of Residual Connections on Learning", §3.1, Figures 3-9), which loads timm's
``inception_v4`` checkpoints (ported from Google's TF-slim release).

=============  ================================================================  ============
layers         what                                                              output
=============  ================================================================  ============
stem           Figure 3: three 3×3 convs, then three concatenations of a         35×35×384
               convolution branch and a pooling or second convolution branch
inception_a    4 × Inception-A (Figure 4)                                        35×35×384
reduction_a    Reduction-A (Figure 7) with k, l, m, n = 192, 224, 256, 384        17×17×1024
inception_b    7 × Inception-B (Figure 5), 1×7 / 7×1 factorized convolutions     17×17×1024
reduction_b    Reduction-B (Figure 8)                                            8×8×1536
inception_c    3 × Inception-C (Figure 6), 1×3 and 3×1 side by side              8×8×1536
head           average pooling, dropout (keep 0.8), linear (Figure 9)            1000
=============  ================================================================  ============

"V" convolutions and pools in the figures are unpadded ("valid"), the rest keep the size. Batch
normalization (eps 0.001, as the release) follows every convolution, before its ReLU. The average
pools in the modules leave the padding out of the average (TensorFlow's "SAME" pooling, which timm
reproduces). One detail follows the release rather than Figure 3: the stem's 7×1 and 1×7
convolutions come in the order 1×7, 7×1. Dropout keeps 0.8 of the features as in Figure 9
(`drop_rate` 0.2; timm's default is 0).
"""

from __future__ import annotations

from typing import Any

from dcnn.layers.inception import (
    REDUCTION_POOL,
    Branch,
    Conv,
    Layer,
    Pool,
    Stack,
    build_layers,
    expanded_pair,
    reduction_a,
)
from dcnn.models._registry import INCEPTION_MEAN, INCEPTION_STD, ModelCfg, register_model
from dcnn.models.googlenet import TF_CONV, InceptionNet, block_prefixes
from dcnn.models.pretrained import StateDict, rename_prefixes

# TensorFlow's "SAME" average pooling divides by the number of pixels inside the image.
AVG_POOL = Pool("avg", 3, count_include_pad=False)


STEM: dict[str, Layer] = {  # Figure 3
    "conv_1a": Conv(32, 3, stride=2, padding=0),
    "conv_2a": Conv(32, 3, padding=0),
    "conv_2b": Conv(64, 3),
    "mixed_3a": ((REDUCTION_POOL,), (Conv(96, 3, stride=2, padding=0),)),
    "mixed_4a": (
        (Conv(64), Conv(96, 3, padding=0)),
        (Conv(64), Conv(64, (1, 7)), Conv(64, (7, 1)), Conv(96, 3, padding=0)),
    ),
    "mixed_5a": ((Conv(192, 3, stride=2, padding=0),), (REDUCTION_POOL,)),
}
INCEPTION_A: tuple[Branch, ...] = (  # Figure 4
    (Conv(96),),
    (Conv(64), Conv(96, 3)),
    (Conv(64), Conv(96, 3), Conv(96, 3)),
    (AVG_POOL, Conv(96)),
)
INCEPTION_B: tuple[Branch, ...] = (  # Figure 5
    (Conv(384),),
    (Conv(192), Conv(224, (1, 7)), Conv(256, (7, 1))),
    (Conv(192), Conv(192, (7, 1)), Conv(224, (1, 7)), Conv(224, (7, 1)), Conv(256, (1, 7))),
    (AVG_POOL, Conv(128)),
)
REDUCTION_B: tuple[Branch, ...] = (  # Figure 8
    (Conv(192), Conv(192, 3, stride=2, padding=0)),
    (Conv(256), Conv(256, (1, 7)), Conv(320, (7, 1)), Conv(320, 3, stride=2, padding=0)),
    (REDUCTION_POOL,),
)
INCEPTION_C: tuple[Branch, ...] = (  # Figure 6
    (Conv(256),),
    (Conv(384), expanded_pair(256)),
    (Conv(384), Conv(448, (3, 1)), Conv(512, (1, 3)), expanded_pair(256)),
    (AVG_POOL, Conv(256)),
)
INCEPTION_V4: dict[str, Layer] = {  # Figure 9
    **STEM,
    "inception_a": Stack((INCEPTION_A,) * 4),
    "reduction_a": reduction_a(k=192, l=224, m=256, n=384),  # Table 1
    "inception_b": Stack((INCEPTION_B,) * 7),
    "reduction_b": REDUCTION_B,
    "inception_c": Stack((INCEPTION_C,) * 3),
}
NUM_FEATURES = 1536

# timm's names inside its modules → ours; timm numbers its layers features.0 to features.21.
_SEQUENTIAL_BRANCHES = {"branch0": "branches.0", "branch1": "branches.1"}
_MODULE_BRANCHES = {"branch0": "branches.0.0", "branch1": "branches.1", "branch2": "branches.2",
                    "branch3": "branches.3"}  # fmt: skip
_INCEPTION_C_BRANCHES = {
    "branch0": "branches.0.0", "branch1_0": "branches.1.0",
    "branch1_1a": "branches.1.1.branches.0.0", "branch1_1b": "branches.1.1.branches.1.0",
    "branch2_0": "branches.2.0", "branch2_1": "branches.2.1", "branch2_2": "branches.2.2",
    "branch2_3a": "branches.2.3.branches.0.0", "branch2_3b": "branches.2.3.branches.1.0",
    "branch3": "branches.3",
}  # fmt: skip
_TIMM_LAYERS: tuple[tuple[str, dict[str, str]], ...] = (
    ("conv_1a", {}), ("conv_2a", {}), ("conv_2b", {}),
    ("mixed_3a", {"conv": "branches.1.0"}),
    ("mixed_4a", _SEQUENTIAL_BRANCHES),
    ("mixed_5a", {"conv": "branches.0.0"}),
    *((f"inception_a.{i}", _MODULE_BRANCHES) for i in range(4)),
    ("reduction_a", {"branch0": "branches.0.0", "branch1": "branches.1"}),
    *((f"inception_b.{i}", _MODULE_BRANCHES) for i in range(7)),
    ("reduction_b", _SEQUENTIAL_BRANCHES),
    *((f"inception_c.{i}", _INCEPTION_C_BRANCHES) for i in range(3)),
)  # fmt: skip


def build_inception_v4_family(
    table: dict[str, Layer], num_classes: int, in_chans: int, drop_rate: float, head: str
) -> InceptionNet:
    """Inception-v4 or Inception-ResNet from its layer table: BN eps 0.001 (the release's) and the
    average pool → dropout → linear head of Figures 9 and 15."""
    layers, channels = build_layers(in_chans, table, TF_CONV)
    return InceptionNet(layers, channels, num_classes, in_chans, drop_rate, head)


PAPER = "Szegedy et al. 2016, Inception-v4, Inception-ResNet and the Impact of Residual Connections"


def inception_v4_family_cfg(num_params: int, **fields: Any) -> ModelCfg:
    """The registry entry of Inception-v4 and Inception-ResNet: 299×299 inputs scaled to [−1, 1]
    (mean = std = 0.5), bicubic resizing; `fields` adds the rest (reference, key_map, ...)."""
    return ModelCfg(
        paper=PAPER,
        year=2016,
        num_params=num_params,
        input_size=(3, 299, 299),
        min_input_size=(3, 75, 75),
        mean=INCEPTION_MEAN,
        std=INCEPTION_STD,
        first_conv="features.conv_1a.conv",
        classifier=("head.fc",),
        interpolation="bicubic",
        **fields,
    )


def _timm_key_map(state_dict: StateDict) -> StateDict:
    """timm ``inception_v4`` names → ours."""
    prefixes = {"last_linear.": "head.fc."}
    for index, (ours, branches) in enumerate(_TIMM_LAYERS):
        prefixes |= block_prefixes(f"features.{index}", f"features.{ours}", branches)
        prefixes[f"features.{index}."] = f"features.{ours}."  # the stem convolutions
    return rename_prefixes(state_dict, prefixes)


@register_model(inception_v4_family_cfg(42_679_816, reference="timm/inception_v4", key_map=_timm_key_map))
def inception_v4(
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float = 0.2,
    head: str = "fc",
) -> InceptionNet:
    """Inception-v4 (Figure 9); takes inputs scaled to [−1, 1] (mean = std = 0.5)."""
    return build_inception_v4_family(INCEPTION_V4, num_classes, in_chans, drop_rate, head)
