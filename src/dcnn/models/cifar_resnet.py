"""ResNets and plain nets for CIFAR-10 (He et al. 2016a, §4.2) and the Wide ResNet WRN-28-10
(Zagoruyko & Komodakis 2016).

He et al. §4.2: a 3×3 conv with 16 filters, then three stages of 2n layers (n basic blocks) on 32×32,
16×16 and 8×8 maps with 16, 32 and 64 filters, global average pooling and a 10-way classifier: 6n+2
weighted layers. Shortcuts are option A (zero-padded identity, parameter-free), so a plain net has
exactly the parameters of its residual counterpart.

The paper's Table 6 gives the parameter counts rounded (0.27M, 0.46M, 0.66M, 0.85M, 1.7M); ModelCfg
records the exact computed counts, and tests/models/test_cifar_resnet.py checks them against Table 6.

WRN-28-10: pre-activation basic blocks B(3,3) in three groups of N = (28 - 4) / 6 = 4 blocks with
16k, 32k, 64k filters for k = 10, after a 16-filter 3×3 conv; 1×1 projections where the width
changes; optional dropout between the convolutions (``block_dropout``, §2.4; the paper's best
CIFAR results use 0.3).
"""

from __future__ import annotations

from typing import Any

from dcnn.errors import DcnnError
from dcnn.models._registry import CIFAR_MEAN, CIFAR_STD, ModelCfg, register_model
from dcnn.models.resnet import RESNET_PAPER, WRN_PAPER, ResNet, build_resnet

CIFAR_WIDTHS = (16, 32, 64)  # 2016a, §4.2: filters of the three stages
CIFAR_STEM = dict(stem="cifar", stem_width=16)


LAYERS_PER_BLOCK = {"basic": 2, "bottleneck": 3}


def cifar_depths(depth: int, block: str = "basic") -> tuple[int, int, int]:
    """Blocks per stage of a CIFAR net of `depth` weighted layers: 6n+2 with basic blocks (2016a, §4.2),
    9n+2 with bottlenecks (He et al. 2016b, §4); the 2 are the first conv and the classifier."""
    layers_per_stage_block = 3 * LAYERS_PER_BLOCK[block]
    n, rest = divmod(depth - 2, layers_per_stage_block)
    if rest or n < 1:
        raise DcnnError(
            f"a CIFAR ResNet with {block} blocks has {layers_per_stage_block}n+2 layers; "
            f"{depth} is not of that form."
        )
    return (n, n, n)


def cifar_arch(depth: int, **overrides: Any) -> dict[str, Any]:
    """The stage table of the CIFAR ResNet-`depth` of 2016a §4.2 as ResNet keyword arguments."""
    arch = dict(block="basic", depths=cifar_depths(depth), widths=CIFAR_WIDTHS, shortcut="A", **CIFAR_STEM)
    return {**arch, **overrides}


def cifar_cfg(
    paper: str, year: int, num_params: int, source: str, min_input_size: tuple[int, int, int] = (3, 8, 8)
) -> ModelCfg:
    """The registry entry of a CIFAR-10 model (32×32 inputs, CIFAR mean/std, no crop) with a `stem.conv`
    first convolution and a `head.fc` classifier; the default minimum input size is the CIFAR ResNets'."""
    return ModelCfg(
        paper=paper,
        year=year,
        num_params=num_params,
        num_params_source=source,
        input_size=(3, 32, 32),
        min_input_size=min_input_size,
        num_classes=10,
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
        first_conv="stem.conv",
        classifier=("head.fc",),
        crop_pct=1.0,
    )


def _table6(num_params: int, figure: str) -> ModelCfg:
    return cifar_cfg(RESNET_PAPER, 2016, num_params, f"computed; 2016a Table 6 gives {figure}")


# --- ResNets (2016a, §4.2, Table 6) --------------------------------------------------------------------


@register_model(_table6(269_722, "0.27M"))
def resnet20(num_classes: int = 10, in_chans: int = 3, **options: Any) -> ResNet:
    """CIFAR ResNet-20 (2016a, §4.2): n = 3."""
    return build_resnet(num_classes, in_chans, options, **cifar_arch(20))


@register_model(_table6(464_154, "0.46M"))
def resnet32(num_classes: int = 10, in_chans: int = 3, **options: Any) -> ResNet:
    """CIFAR ResNet-32 (2016a, §4.2): n = 5."""
    return build_resnet(num_classes, in_chans, options, **cifar_arch(32))


@register_model(_table6(658_586, "0.66M"))
def resnet44(num_classes: int = 10, in_chans: int = 3, **options: Any) -> ResNet:
    """CIFAR ResNet-44 (2016a, §4.2): n = 7."""
    return build_resnet(num_classes, in_chans, options, **cifar_arch(44))


@register_model(_table6(853_018, "0.85M"))
def resnet56(num_classes: int = 10, in_chans: int = 3, **options: Any) -> ResNet:
    """CIFAR ResNet-56 (2016a, §4.2): n = 9."""
    return build_resnet(num_classes, in_chans, options, **cifar_arch(56))


@register_model(_table6(1_727_962, "1.7M"))
def resnet110(num_classes: int = 10, in_chans: int = 3, **options: Any) -> ResNet:
    """CIFAR ResNet-110 (2016a, §4.2): n = 18."""
    return build_resnet(num_classes, in_chans, options, **cifar_arch(110))


# --- Plain nets (2016a, §4.2, Fig. 6 left: the same nets without shortcuts) ------------------------------


@register_model(_table6(269_722, "0.27M for the residual net"))
def plain20(num_classes: int = 10, in_chans: int = 3, **options: Any) -> ResNet:
    """CIFAR plain-20 (2016a, Fig. 6): ResNet-20 without shortcuts."""
    return build_resnet(num_classes, in_chans, options, **cifar_arch(20, shortcut=None))


@register_model(_table6(464_154, "0.46M for the residual net"))
def plain32(num_classes: int = 10, in_chans: int = 3, **options: Any) -> ResNet:
    """CIFAR plain-32 (2016a, Fig. 6): ResNet-32 without shortcuts."""
    return build_resnet(num_classes, in_chans, options, **cifar_arch(32, shortcut=None))


@register_model(_table6(658_586, "0.66M for the residual net"))
def plain44(num_classes: int = 10, in_chans: int = 3, **options: Any) -> ResNet:
    """CIFAR plain-44 (2016a, Fig. 6): ResNet-44 without shortcuts."""
    return build_resnet(num_classes, in_chans, options, **cifar_arch(44, shortcut=None))


@register_model(_table6(853_018, "0.85M for the residual net"))
def plain56(num_classes: int = 10, in_chans: int = 3, **options: Any) -> ResNet:
    """CIFAR plain-56 (2016a, Fig. 6): ResNet-56 without shortcuts."""
    return build_resnet(num_classes, in_chans, options, **cifar_arch(56, shortcut=None))


@register_model(_table6(1_727_962, "1.7M for the residual net"))
def plain110(num_classes: int = 10, in_chans: int = 3, **options: Any) -> ResNet:
    """CIFAR plain-110 (2016a, §4.2 trains it only to show it fails): ResNet-110 without shortcuts."""
    return build_resnet(num_classes, in_chans, options, **cifar_arch(110, shortcut=None))


# --- Wide ResNet (Zagoruyko & Komodakis 2016, Table 1 structure, §2.3 notation WRN-n-k) ------------------


def wrn_arch(depth: int, widen_factor: int) -> dict[str, Any]:
    """WRN-`depth`-`widen_factor`: pre-activation basic blocks, (depth - 4) / 6 per group (Table 1)."""
    n, rest = divmod(depth - 4, 6)
    if rest or n < 1:
        raise DcnnError(f"a Wide ResNet has 6N+4 layers; {depth} is not of that form.")
    widths = tuple(widen_factor * w for w in CIFAR_WIDTHS)
    return dict(block="basic", depths=(n, n, n), widths=widths, preact=True, shortcut="B", **CIFAR_STEM)


@register_model(cifar_cfg(WRN_PAPER, 2016, 36_479_194, "computed; the paper gives 36.5M (Table 4)"))
def wrn28_10(num_classes: int = 10, in_chans: int = 3, **options: Any) -> ResNet:
    """WRN-28-10 (Zagoruyko & Komodakis 2016): 4 pre-activation basic blocks per group, widths
    160-320-640; ``block_dropout=0.3`` adds the paper's dropout between convolutions."""
    return build_resnet(num_classes, in_chans, options, **wrn_arch(28, 10))
