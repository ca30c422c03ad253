"""Inception-ResNet v1 and v2 (Szegedy, Ioffe, Vanhoucke & Alemi 2016, "Inception-v4,
Inception-ResNet and the Impact of Residual Connections on Learning", §3.2-3.3, Figures 10-19).

An Inception-ResNet block concatenates Inception branches, brings them back to the block's width with
a linear 1×1 convolution, scales that residual and adds it to the input, then applies a ReLU
(:class:`~dcnn.layers.inception.InceptionResidualBlock`). Batch normalization sits on the ordinary
convolutions only, "not on top of the summations" (§3.2). §3.3: residuals scaled by factors
"between 0.1 and 0.3" keep very wide residual networks from dying early in training; we use 0.17,
0.10 and 0.20 for the A, B and C blocks, the values of Google's released Inception-ResNet-v2 (the
paper names no per-block values).

`inception_resnet_v1` follows the paper: the stem of Figure 14 (35×35×256), 5 × Inception-ResNet-A
(Figure 10), Reduction-A (Figure 7 with k, l, m, n = 192, 192, 256, 384 from Table 1), 10 ×
Inception-ResNet-B (Figure 11), Reduction-B (Figure 12), 5 × Inception-ResNet-C (Figure 13), average
pooling, dropout (keep 0.8) and a linear classifier (Figure 15). There is no reference implementation
to load; the paper gives no parameter count, so ours is computed: 22,756,328.

`inception_resnet_v2` is the network Google released and timm ports (whose checkpoints it loads).
It differs from the paper's Figures 15-19 in ways the checkpoints fix, stated here:
- the stem is Inception v3's (convolutions to 192 channels, max pool) followed by an Inception module
  of 320 channels (``mixed_5b``), not Figure 3's 384-channel stem;
- 10, 20 and 10 blocks of types A, B, C (Figure 15: 5, 10, 5), at widths 320, 1088 and 2080
  (Figures 16-19: 384, 1154 and 2048) — the block interiors are the figures';
- the last C block has no ReLU and its residual is not scaled, and a 1×1 convolution to 1536
  channels (``conv_7b``) precedes the pooling.
Reduction-A uses k, l, m, n = 256, 256, 384, 384 (Table 1); Reduction-B is Figure 18's.

Both use BN eps 0.001 and average pools that leave the padding out of the average (TensorFlow's
"SAME" pooling), and take inputs scaled to [−1, 1] (mean = std = 0.5). `drop_rate` 0.2 is the paper's
"keep 0.8" (timm's default is 0; it changes nothing in eval mode).
"""

from __future__ import annotations

from dcnn.layers.inception import (
    REDUCTION_POOL,
    Branch,
    Conv,
    Layer,
    Pool,
    Residual,
    Stack,
    reduction_a,
)
from dcnn.models._registry import register_model
from dcnn.models.googlenet import InceptionNet, block_prefixes
from dcnn.models.inception_v3 import RELEASED_STEM
from dcnn.models.inception_v4 import build_inception_v4_family, inception_v4_family_cfg
from dcnn.models.pretrained import StateDict, rename_prefixes

# §3.3: residual scaling factors of the A (35×35), B (17×17) and C (8×8) blocks.
SCALE_A, SCALE_B, SCALE_C = 0.17, 0.10, 0.20
STRIDE_2 = {"stride": 2, "padding": 0}  # the "stride 2 V" convolutions of the figures


def reduction_b(widths: tuple[int, int, int, int], reductions: int = 256) -> tuple[Branch, ...]:
    """Reduction-B of Inception-ResNet (Figures 12 and 18): 1×1 → 3×3/2; 1×1 → 3×3/2;
    1×1 → 3×3 → 3×3/2; 3×3/2 max pool. `widths` are the three branches' 3×3 widths in order."""
    first, second, third, last = widths
    return (
        (Conv(reductions), Conv(first, 3, **STRIDE_2)),
        (Conv(reductions), Conv(second, 3, **STRIDE_2)),
        (Conv(reductions), Conv(third, 3), Conv(last, 3, **STRIDE_2)),
        (REDUCTION_POOL,),
    )


def residual_stack(branches: tuple[Branch, ...], count: int, scale: float) -> Stack:
    return Stack((Residual(branches, scale),) * count)


INCEPTION_RESNET_V1: dict[str, Layer] = {
    # Figure 14: the stem, 299×299×3 → 35×35×256: Inception v3's released stem with a stride-2
    # convolution to 256 channels in place of its last max pool.
    **{name: layer for name, layer in RELEASED_STEM.items() if name != "pool_5a"},
    "conv_4b": Conv(256, 3, **STRIDE_2),
    "inception_resnet_a": residual_stack(  # Figure 10
        ((Conv(32),), (Conv(32), Conv(32, 3)), (Conv(32), Conv(32, 3), Conv(32, 3))), 5, SCALE_A
    ),
    "reduction_a": reduction_a(k=192, l=192, m=256, n=384),  # Table 1
    "inception_resnet_b": residual_stack(  # Figure 11
        ((Conv(128),), (Conv(128), Conv(128, (1, 7)), Conv(128, (7, 1)))), 10, SCALE_B
    ),
    "reduction_b": reduction_b((384, 256, 256, 256)),  # Figure 12
    "inception_resnet_c": residual_stack(  # Figure 13
        ((Conv(192),), (Conv(192), Conv(192, (1, 3)), Conv(192, (3, 1)))), 5, SCALE_C
    ),
}

V2_BLOCK_C: tuple[Branch, ...] = ((Conv(192),), (Conv(192), Conv(224, (1, 3)), Conv(256, (3, 1))))  # Figure 19
INCEPTION_RESNET_V2: dict[str, Layer] = {
    # The released stem: Inception v3's, then a 320-channel Inception module.
    **RELEASED_STEM,
    "mixed_5b": (
        (Conv(96),),
        (Conv(48), Conv(64, 5)),
        (Conv(64), Conv(96, 3), Conv(96, 3)),
        (Pool("avg", 3, count_include_pad=False), Conv(64)),
    ),
    "inception_resnet_a": residual_stack(  # Figure 16
        ((Conv(32),), (Conv(32), Conv(32, 3)), (Conv(32), Conv(48, 3), Conv(64, 3))), 10, SCALE_A
    ),
    "reduction_a": reduction_a(k=256, l=256, m=384, n=384),  # Table 1
    "inception_resnet_b": residual_stack(  # Figure 17
        ((Conv(192),), (Conv(128), Conv(160, (1, 7)), Conv(192, (7, 1)))), 20, SCALE_B
    ),
    "reduction_b": reduction_b((384, 288, 288, 320)),  # Figure 18
    "inception_resnet_c": Stack(
        (Residual(V2_BLOCK_C, SCALE_C),) * 9 + (Residual(V2_BLOCK_C, 1.0, activate=False),)
    ),
    "conv_7b": Conv(1536),
}

# timm's names → ours.
_RESIDUAL_BRANCHES = {"branch0": "branches.0.0", "branch1": "branches.1", "branch2": "branches.2",
                      "conv2d": "project"}  # fmt: skip
_TIMM_LAYERS: dict[str, tuple[str, dict[str, str]]] = {
    "mixed_5b": ("mixed_5b", {**_RESIDUAL_BRANCHES, "branch3": "branches.3"}),
    **{f"repeat.{i}": (f"inception_resnet_a.{i}", _RESIDUAL_BRANCHES) for i in range(10)},
    "mixed_6a": ("reduction_a", _RESIDUAL_BRANCHES),
    **{f"repeat_1.{i}": (f"inception_resnet_b.{i}", _RESIDUAL_BRANCHES) for i in range(20)},
    "mixed_7a": ("reduction_b", {"branch0": "branches.0", "branch1": "branches.1", "branch2": "branches.2"}),
    **{f"repeat_2.{i}": (f"inception_resnet_c.{i}", _RESIDUAL_BRANCHES) for i in range(9)},
    "block8": ("inception_resnet_c.9", _RESIDUAL_BRANCHES),
}
_TIMM_CONVS = {"conv2d_1a": "conv_1a", "conv2d_2a": "conv_2a", "conv2d_2b": "conv_2b", "conv2d_3b": "conv_3b",
               "conv2d_4a": "conv_4a", "conv2d_7b": "conv_7b"}  # fmt: skip


def _timm_key_map(state_dict: StateDict) -> StateDict:
    """timm ``inception_resnet_v2`` names → ours."""
    prefixes = {f"{theirs}.": f"features.{ours}." for theirs, ours in _TIMM_CONVS.items()}
    for theirs, (ours, branches) in _TIMM_LAYERS.items():
        prefixes |= block_prefixes(theirs, f"features.{ours}", branches)
    prefixes["classif."] = "head.fc."
    return rename_prefixes(state_dict, prefixes)


@register_model(inception_v4_family_cfg(22_756_328, num_params_source="computed; the paper gives none"))
def inception_resnet_v1(
    num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.2, head: str = "fc"
) -> InceptionNet:
    """Inception-ResNet-v1 as in the paper (Figures 7, 10-15)."""
    return build_inception_v4_family(INCEPTION_RESNET_V1, num_classes, in_chans, drop_rate, head)


@register_model(
    inception_v4_family_cfg(55_843_464, reference="timm/inception_resnet_v2", key_map=_timm_key_map, crop_pct=0.8975)
)
def inception_resnet_v2(
    num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.2, head: str = "fc"
) -> InceptionNet:
    """Inception-ResNet-v2 as released by Google (timm's ``inception_resnet_v2``)."""
    return build_inception_v4_family(INCEPTION_RESNET_V2, num_classes, in_chans, drop_rate, head)
