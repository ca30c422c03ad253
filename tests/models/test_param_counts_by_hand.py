"""Parameter counts of the models whose `num_params` is computed and has no outside figure, derived by
hand from each paper's architecture table.

Each count below is an arithmetic formula written out layer by layer (block by block) from the paper,
with no module of the model code instantiated in the derivation. The implementation is read only for
what the paper leaves open (bias or not, where batch normalization sits), and a comment says so wherever
the derivation follows it. The test then checks that the derived count equals both the built model's
parameter count and `ModelCfg.num_params`.

Costs: a k_h×k_w convolution c_in → c_out costs k_h·k_w·c_in·c_out (+ c_out with a bias); batch
normalization costs 2·c (scale and shift; the running statistics are buffers); a linear layer
in → out costs in·out + out; pooling, ReLU, LRN and dropout cost nothing.
"""

from __future__ import annotations

import pytest
import torch

from dcnn.models import create_model, get_model_cfg, list_models


def conv(k: int | tuple[int, int], c_in: int, c_out: int, bias: bool = False) -> int:
    """A k×k (or k_h×k_w) convolution c_in → c_out, with or without a bias."""
    kh, kw = (k, k) if isinstance(k, int) else k
    return kh * kw * c_in * c_out + (c_out if bias else 0)


def bn(c: int) -> int:
    """Batch normalization over c channels: a scale and a shift per channel."""
    return 2 * c


def linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def conv_bn(k: int | tuple[int, int], c_in: int, c_out: int) -> int:
    """Conv (no bias: BN's shift replaces it, Ioffe & Szegedy 2015 §3.2) → BN (→ ReLU)."""
    return conv(k, c_in, c_out) + bn(c_out)


# --- Inception-ResNet-v1 (Szegedy et al. 2016, "Inception-v4, Inception-ResNet ...") ----------------------
# Every "ordinary" convolution is conv → BN → ReLU (§3.2: BN on top of the traditional layers). The
# linear 1×1 "filter expansion" convolution of each residual block (Figures 10, 11, 13) has no BN (§3.2:
# not on top of the summations); the paper does not say whether it has a bias: the implementation gives it
# one (as Google's released Inception-ResNet-v2 does), so we count it.

def inception_resnet_v1_params(num_classes: int = 1000) -> int:
    stem = (  # Figure 14: 299×299×3 → 35×35×256
        conv_bn(3, 3, 32)  # 3×3 conv 32, stride 2 V     → 149×149×32
        + conv_bn(3, 32, 32)  # 3×3 conv 32 V            → 147×147×32
        + conv_bn(3, 32, 64)  # 3×3 conv 64              → 147×147×64
        # 3×3 max pool, stride 2 V                       → 73×73×64
        + conv_bn(1, 64, 80)  # 1×1 conv 80              → 73×73×80
        + conv_bn(3, 80, 192)  # 3×3 conv 192 V          → 71×71×192
        + conv_bn(3, 192, 256)  # 3×3 conv 256, stride 2 V → 35×35×256
    )
    block_a = (  # Figure 10, on 35×35×256
        conv_bn(1, 256, 32)  # 1×1 32
        + conv_bn(1, 256, 32) + conv_bn(3, 32, 32)  # 1×1 32 → 3×3 32
        + conv_bn(1, 256, 32) + conv_bn(3, 32, 32) + conv_bn(3, 32, 32)  # 1×1 32 → 3×3 32 → 3×3 32
        + conv(1, 32 + 32 + 32, 256, bias=True)  # 1×1 conv 256 (linear)
    )
    k, l, m, n = 192, 192, 256, 384  # Table 1, Inception-ResNet-v1
    reduction_a = (  # Figure 7: 35×35×256 → 17×17×(256 + n + m) = 896; the max pool costs nothing
        conv_bn(3, 256, n)  # 3×3 conv n, stride 2 V
        + conv_bn(1, 256, k) + conv_bn(3, k, l) + conv_bn(3, l, m)  # 1×1 k → 3×3 l → 3×3 m, stride 2 V
    )
    c17 = 256 + n + m
    assert c17 == 896
    block_b = (  # Figure 11, on 17×17×896
        conv_bn(1, c17, 128)  # 1×1 128
        + conv_bn(1, c17, 128) + conv_bn((1, 7), 128, 128) + conv_bn((7, 1), 128, 128)  # 1×1 → 1×7 → 7×1
        + conv(1, 128 + 128, c17, bias=True)  # 1×1 conv 896 (linear)
    )
    reduction_b = (  # Figure 12: 17×17×896 → 8×8×(896 + 384 + 256 + 256) = 1792
        conv_bn(1, c17, 256) + conv_bn(3, 256, 384)  # 1×1 256 → 3×3 384, stride 2 V
        + conv_bn(1, c17, 256) + conv_bn(3, 256, 256)  # 1×1 256 → 3×3 256, stride 2 V
        + conv_bn(1, c17, 256) + conv_bn(3, 256, 256) + conv_bn(3, 256, 256)  # 1×1 → 3×3 → 3×3/2 V
    )
    c8 = c17 + 384 + 256 + 256
    assert c8 == 1792
    block_c = (  # Figure 13, on 8×8×1792
        conv_bn(1, c8, 192)  # 1×1 192
        + conv_bn(1, c8, 192) + conv_bn((1, 3), 192, 192) + conv_bn((3, 1), 192, 192)  # 1×1 → 1×3 → 3×1
        + conv(1, 192 + 192, c8, bias=True)  # 1×1 conv 1792 (linear)
    )
    # Figure 15: stem, 5 × A, Reduction-A, 10 × B, Reduction-B, 5 × C, average pool, dropout, softmax.
    return stem + 5 * block_a + reduction_a + 10 * block_b + reduction_b + 5 * block_c + linear(c8, num_classes)


# --- Network in Network (Lin, Chen & Yan 2013) ------------------------------------------------------------
# mlpconv block (§3.1, eq. 2): a k×k conv then two 1×1 convs ("cascaded cross channel parametric
# pooling"), each with a bias and ReLU, no normalization. The last block's last 1×1 conv gives one map
# per class (§3.2). The paper leaves the widths to the authors' released models (§4.1); we use the widths
# the code documents from those releases (src/dcnn/models/nin.py docstring).

def mlpconv(k: int, c_in: int, widths: tuple[int, ...]) -> int:
    first, *rest = widths
    total = conv(k, c_in, first, bias=True)
    for c_prev, c_next in zip(widths, rest, strict=False):
        total += conv(1, c_prev, c_next, bias=True)
    return total


def nin_params(num_classes: int = 1000) -> int:
    # The authors' Caffe ImageNet model (not in the paper): 11×11/4 conv 96 → 96 → 96; 5×5 conv
    # 256 → 256 → 256; 3×3 conv 384 → 384 → 384; 3×3 conv 1024 → 1024 → classes.
    return (
        mlpconv(11, 3, (96, 96, 96))
        + mlpconv(5, 96, (256, 256, 256))
        + mlpconv(3, 256, (384, 384, 384))
        + mlpconv(3, 384, (1024, 1024, num_classes))
    )


def nin_cifar_params(num_classes: int = 10) -> int:
    # The paper's CIFAR-10 model (§4.2, released with cuda-convnet): 5×5 conv 192 → 160 → 96;
    # 5×5 conv 192 → 192 → 192; 3×3 conv 192 → 192 → 10.
    return (
        mlpconv(5, 3, (192, 160, 96))
        + mlpconv(5, 96, (192, 192, 192))
        + mlpconv(3, 192, (192, 192, num_classes))
    )


# --- ResNets (He et al. 2016a, "Deep Residual Learning"; 2016b, "Identity Mappings") ----------------------
# 2016a Table 1: conv1 7×7/2 64, 3×3/2 max pool, then conv2_x ... conv5_x of 3×3 widths 64, 128, 256, 512
# (bottlenecks: 1×1 w, 3×3 w, 1×1 4w), average pool, 1000-d fc. Blocks per stage from Table 1; ResNet-200
# is 3-24-36-3 (2016b Table 5, as in the authors' fb.resnet.torch). Convolutions have no bias (BN follows
# or, in pre-activation nets, precedes each one).
IMAGENET_BLOCKS = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3),
}
IMAGENET_WIDTHS = (64, 128, 256, 512)
CIFAR_WIDTHS = (16, 32, 64)  # 2016a §4.2; 2016b §4: bottleneck outputs ×4 (64, 128, 256)


def preact_basic_unit(c_in: int, w: int, first_unit: bool, projection: bool) -> int:
    """2016b Fig. 4e, basic: BN-ReLU-conv3×3 w, BN-ReLU-conv3×3 w, identity addition.

    The first unit of the net has no BN of its own: the paper activates "right after conv1 and before
    splitting into two paths" (§4), i.e. the stem's BN-ReLU. A projection shortcut (option B where the
    shape changes) is a bare 1×1 conv of the pre-activated input: no BN, as in the authors' code
    (resnet-1k-layers), which the implementation follows (the paper does not detail it)."""
    return (
        (0 if first_unit else bn(c_in))
        + conv(3, c_in, w)
        + bn(w) + conv(3, w, w)
        + (conv(1, c_in, w) if projection else 0)
    )


def preact_bottleneck_unit(c_in: int, w: int, first_unit: bool) -> int:
    """2016b Fig. 4e, bottleneck: BN-ReLU-1×1 w, BN-ReLU-3×3 w, BN-ReLU-1×1 4w; the first unit of every
    stage changes the shape (c_in ≠ 4w) and projects with a bare 1×1 conv (see above)."""
    return (
        (0 if first_unit else bn(c_in))
        + conv(1, c_in, w)
        + bn(w) + conv(3, w, w)
        + bn(w) + conv(1, w, 4 * w)
        + (conv(1, c_in, 4 * w) if c_in != 4 * w else 0)
    )


def preact_stages(blocks: tuple[int, ...], widths: tuple[int, ...], c_stem: int, bottleneck: bool,
                  project: bool) -> tuple[int, int]:
    """The stages of a pre-activation net: each stage's first unit (down-sampling from the second stage
    on), then n − 1 identical identity units. Returns (parameters, output channels). `project`: option
    B projections where the shape changes; otherwise option A (zero padding, parameter-free)."""
    total, c_in = 0, c_stem
    for stage, (n, w) in enumerate(zip(blocks, widths, strict=True)):
        first_unit = stage == 0
        if bottleneck:
            total += preact_bottleneck_unit(c_in, w, first_unit) + (n - 1) * preact_bottleneck_unit(4 * w, w, False)
            c_in = 4 * w
        else:
            needs_projection = project and c_in != w
            total += preact_basic_unit(c_in, w, first_unit, needs_projection)
            total += (n - 1) * preact_basic_unit(w, w, False, False)
            c_in = w
    return total, c_in


def preact_imagenet_params(depth: int, num_classes: int = 1000) -> int:
    stem = conv(7, 3, 64) + bn(64)  # conv1 7×7/2 64, BN-ReLU (2016b §4: the first activation)
    stages, c_out = preact_stages(IMAGENET_BLOCKS[depth], IMAGENET_WIDTHS, 64, depth >= 50, project=True)
    # 2016b §4: "an extra activation right after [the last unit's] addition": BN-ReLU, then the fc.
    return stem + stages + bn(c_out) + linear(c_out, num_classes)


def preact_cifar_params(depth: int, num_classes: int = 10) -> int:
    """2016a §4.2 / 2016b §4: 3×3 conv 16, then three stages of n units on 32², 16², 8²; 6n + 2 layers
    with basic units (option A shortcuts, 2016a §4.2), 9n + 2 with bottlenecks (option B, 2016b §4 and
    resnet-1k-layers); final BN-ReLU, global average pool, 10-way fc."""
    bottleneck = depth in (164, 1001)
    n = (depth - 2) // (9 if bottleneck else 6)
    stem = conv(3, 3, 16) + bn(16)
    stages, c_out = preact_stages((n, n, n), CIFAR_WIDTHS, 16, bottleneck, project=bottleneck)
    return stem + stages + bn(c_out) + linear(c_out, num_classes)


def plain_imagenet_params(depth: int, num_classes: int = 1000) -> int:
    """2016a §4.1: the plain nets are Table 1's without shortcuts, post-activation: conv → BN → ReLU
    (§3.4: "BN right after each convolution and before activation")."""
    total, c_in = conv_bn(7, 3, 64), 64
    for n, w in zip(IMAGENET_BLOCKS[depth], IMAGENET_WIDTHS, strict=True):
        for _ in range(n):
            if depth >= 50:
                total += conv_bn(1, c_in, w) + conv_bn(3, w, w) + conv_bn(1, w, 4 * w)
                c_in = 4 * w
            else:
                total += conv_bn(3, c_in, w) + conv_bn(3, w, w)
                c_in = w
    return total + linear(c_in, num_classes)


# --- BN-Inception (Ioffe & Szegedy 2015, appendix Figure 5) ------------------------------------------------
# Every convolution is conv → BN → ReLU (§3.2), no bias. Columns of Figure 5: #1×1, #3×3 reduce, #3×3,
# double #3×3 reduce, double #3×3, pool + proj. 4c and 4d use 96-filter pool projections, not the 128 the
# table prints (the implementation's choice: it makes the table's 576-channel outputs hold).
BN_INCEPTION_TABLE = (  # (#1×1, #3×3 reduce, #3×3, double reduce, double #3×3, pool proj)
    (64, 64, 64, 64, 96, 32),  # 3a
    (64, 64, 96, 64, 96, 64),  # 3b
    (0, 128, 160, 64, 96, 0),  # 3c, stride 2: no 1×1, max pool passed through
    (224, 64, 96, 96, 128, 128),  # 4a
    (192, 96, 128, 96, 128, 128),  # 4b
    (160, 128, 160, 128, 160, 96),  # 4c
    (96, 128, 192, 160, 192, 96),  # 4d
    (0, 128, 192, 192, 256, 0),  # 4e, stride 2
    (352, 192, 320, 160, 224, 128),  # 5a
    (352, 192, 320, 192, 224, 128),  # 5b
)


def bn_inception_params(num_classes: int = 1000) -> int:
    # conv1 7×7/2 64, "depthwise separable with depth multiplier 8" (Figure 5): a 7×7 depthwise conv to
    # 3·8 maps, then a 1×1 conv to 64. The implementation puts BN only after the pointwise conv and no
    # bias on the depthwise one (as TF-slim's separable convolution).
    total = 7 * 7 * 3 * 8 + conv_bn(1, 3 * 8, 64)
    total += conv_bn(1, 64, 64) + conv_bn(3, 64, 192)  # conv2: 1×1 64 reduce, 3×3 192
    c = 192
    for n1, r3, n3, rd, nd, proj in BN_INCEPTION_TABLE:
        total += (
            (conv_bn(1, c, n1) if n1 else 0)
            + conv_bn(1, c, r3) + conv_bn(3, r3, n3)
            + conv_bn(1, c, rd) + conv_bn(3, rd, nd) + conv_bn(3, nd, nd)
            + (conv_bn(1, c, proj) if proj else 0)
        )
        c = n1 + n3 + nd + (proj if proj else c)  # stride-2 modules pass the pooled input through
    assert c == 1024
    return total + linear(c, num_classes)  # average pool, linear, softmax


# --- ZFNet (Zeiler & Fergus 2013, Figure 3) and the modern LeNet-5 ------------------------------------------

def zfnet_params(num_classes: int = 1000) -> int:
    # Figure 3, one GPU (no towers); every layer has a bias; contrast normalization and pooling are free.
    return (
        conv(7, 3, 96, bias=True)  # layer 1: 96 7×7, stride 2
        + conv(5, 96, 256, bias=True)  # layer 2: 256 5×5, stride 2
        + conv(3, 256, 384, bias=True)  # layer 3: 384 3×3
        + conv(3, 384, 384, bias=True)  # layer 4: 384 3×3
        + conv(3, 384, 256, bias=True)  # layer 5: 256 3×3, pooled to 6×6
        + linear(256 * 6 * 6, 4096)  # layer 6
        + linear(4096, 4096)  # layer 7
        + linear(4096, num_classes)  # output
    )


def lenet5_modern_params(num_classes: int = 10) -> int:
    # LeCun et al. 1998 §II.B's layer sizes with modern parts (not in the paper; the implementation's
    # variant): C1 5×5 6 maps (28×28 input padded by 2), C3 5×5 16 maps connected to all six S2 maps,
    # C5 120 units on the 16×5×5 maps, F6 84, then a 10-way linear output instead of the RBF units.
    return (
        conv(5, 1, 6, bias=True)
        + conv(5, 6, 16, bias=True)
        + linear(16 * 5 * 5, 120)
        + linear(120, 84)
        + linear(84, num_classes)
    )


DERIVED = {
    "inception_resnet_v1": inception_resnet_v1_params(),
    "nin": nin_params(),
    "nin_cifar": nin_cifar_params(),
    **{f"preact_resnet{d}": preact_imagenet_params(d) for d in (18, 34, 50, 101, 152, 200)},
    **{f"preact_resnet{d}": preact_cifar_params(d) for d in (110, 164, 1001)},
    **{f"plain{d}": plain_imagenet_params(d) for d in (18, 34, 50)},
    "bn_inception": bn_inception_params(),
    "zfnet": zfnet_params(),
    "lenet5_modern": lenet5_modern_params(),
}

# Computed counts that have an outside (rounded) figure, checked against it in their family's tests.
WITH_OUTSIDE_FIGURE = {
    "alexnet": "60 million (abstract; test_alexnet.py)",
    "densenet_bc_100_k12": "0.8M (Table 2; test_densenet.py)",
    "googlenet": "Table 1 (test_googlenet.py)",
    "mobilenet_v1": "4.2M (Table 8; test_mobilenet.py)",
    "mobilenet_v1_025": "0.5M (Table 6; test_mobilenet.py)",
    "mobilenet_v1_050": "1.3M (Table 6; test_mobilenet.py)",
    "mobilenet_v1_075": "2.6M (Table 6; test_mobilenet.py)",
    "nasnet_a_mobile": "5.3M (Table 2; test_nasnet.py)",
    **{f"resnet{d}": "2016a Table 6 (test_cifar_resnet.py)" for d in (20, 32, 44, 56, 110)},
    **{f"plain{d}": "2016a Table 6, the residual net's (test_cifar_resnet.py)" for d in (20, 32, 44, 56, 110)},
    "wrn28_10": "36.5M (Table 4; test_cifar_resnet.py)",
}


def test_every_computed_count_is_derived_here_or_has_an_outside_figure():
    computed = {n for n in list_models() if get_model_cfg(n).num_params_source.startswith("computed")}
    assert computed == set(DERIVED) | set(WITH_OUTSIDE_FIGURE)


@pytest.mark.parametrize("name", sorted(DERIVED))
def test_hand_derived_count_matches_model_and_registry(name):
    with torch.device("meta"):
        model = create_model(name)
    built = sum(p.numel() for p in model.parameters())
    assert DERIVED[name] == built == get_model_cfg(name).num_params


def test_resnet1001_figure_is_the_count_without_batch_norm():
    """2016b Table 4 gives 10.2M for ResNet-1001; the BN scales and shifts (derived here as
    2·channels per BN) are what lift the exact count to 10.33M."""
    n = (1001 - 2) // 9
    bn_params = bn(16)  # the stem's
    c_in = 16
    for stage, w in enumerate(CIFAR_WIDTHS):
        bn_params += (0 if stage == 0 else bn(c_in)) + 2 * bn(w)  # first unit
        bn_params += (n - 1) * (bn(4 * w) + 2 * bn(w))  # identity units
        c_in = 4 * w
    bn_params += bn(c_in)  # final BN-ReLU
    without_bn = DERIVED["preact_resnet1001"] - bn_params
    assert without_bn == 10_178_490
    assert f"{without_bn / 1e6:.1f}M" == "10.2M"
