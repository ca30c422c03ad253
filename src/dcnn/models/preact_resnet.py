"""Pre-activation ResNets (He et al. 2016b, "Identity Mappings in Deep Residual Networks").

Each block is BN → ReLU → conv, repeated, with nothing after the addition (Fig. 1b, 4e), so the
shortcuts form a clean identity path from any block to any later one (Eq. 4). The first activation
comes right after the first conv, shared by both paths of the first block, and the last block is
followed by an extra BN-ReLU before pooling (§4). Projection shortcuts (option B, where the shape
changes) are bare 1×1 convs applied to the pre-activated input, as in the authors' code
(resnet-1k-layers).

- ImageNet ``preact_resnet18 ... 200``: the stage tables of 2016a Table 1 (and ResNet-200 of Table 5),
  stem 7×7/2 conv, BN, ReLU, 3×3/2 max pool. The bottleneck stride is on the first 1×1 as in the
  original ResNet (``bottleneck_stride="3x3"`` moves it to the 3×3 as fb.resnet.torch does).
  There is no reference checkpoint and the paper gives no parameter counts: the counts are computed.
- CIFAR ``preact_resnet110`` (basic blocks, option A shortcuts as the CIFAR nets of 2016a §4.2),
  ``preact_resnet164`` and ``preact_resnet1001`` (bottlenecks 16-64, 32-128, 64-256, option B, stride
  on the first 1×1, as in resnet-1k-layers). Table 4 gives 1.7M for ResNet-164 and 10.2M for
  ResNet-1001 (and 1.7M for the original ResNet-110, whose count the pre-activation one shares). The
  exact counts are 1,703,258, 10,327,706 and 1,727,962; 10.2M is the count of ResNet-1001 without
  its BN scales and shifts (10,178,490), which round the same way for the other two.
"""

from __future__ import annotations

from typing import Any

from dcnn.models._registry import ModelCfg, register_model
from dcnn.models.cifar_resnet import CIFAR_STEM, CIFAR_WIDTHS, cifar_cfg, cifar_depths
from dcnn.models.resnet import ResNet, build_resnet, imagenet_arch

PREACT_PAPER = "He et al. 2016, Identity Mappings in Deep Residual Networks"


def _imagenet_cfg(num_params: int) -> ModelCfg:
    return ModelCfg(
        paper=PREACT_PAPER,
        year=2016,
        num_params=num_params,
        num_params_source="computed; the paper gives none",
        first_conv="stem.conv",
        classifier=("head.fc",),
    )


def _cifar_arch(depth: int, block: str, shortcut: str) -> dict[str, Any]:
    return dict(
        block=block,
        depths=cifar_depths(depth, block),
        widths=CIFAR_WIDTHS,
        preact=True,
        shortcut=shortcut,
        **CIFAR_STEM,
    )


def _cifar_cfg(num_params: int, figure: str) -> ModelCfg:
    return cifar_cfg(PREACT_PAPER, 2016, num_params, f"computed; the paper gives {figure} (Table 4)")


# --- ImageNet ---------------------------------------------------------------------------------------------


@register_model(_imagenet_cfg(11_687_720))
def preact_resnet18(num_classes: int = 1000, in_chans: int = 3, **options: Any) -> ResNet:
    """Pre-activation ResNet-18: the stages of 2016a Table 1 with full pre-activation blocks."""
    return build_resnet(num_classes, in_chans, options, **imagenet_arch(18, preact=True))


@register_model(_imagenet_cfg(21_795_880))
def preact_resnet34(num_classes: int = 1000, in_chans: int = 3, **options: Any) -> ResNet:
    """Pre-activation ResNet-34: the stages of 2016a Table 1 with full pre-activation blocks."""
    return build_resnet(num_classes, in_chans, options, **imagenet_arch(34, preact=True))


@register_model(_imagenet_cfg(25_549_352))
def preact_resnet50(num_classes: int = 1000, in_chans: int = 3, **options: Any) -> ResNet:
    """Pre-activation ResNet-50: the stages of 2016a Table 1 with full pre-activation bottlenecks."""
    return build_resnet(num_classes, in_chans, options, **imagenet_arch(50, preact=True))


@register_model(_imagenet_cfg(44_541_480))
def preact_resnet101(num_classes: int = 1000, in_chans: int = 3, **options: Any) -> ResNet:
    """Pre-activation ResNet-101: the stages of 2016a Table 1 with full pre-activation bottlenecks."""
    return build_resnet(num_classes, in_chans, options, **imagenet_arch(101, preact=True))


@register_model(_imagenet_cfg(60_185_128))
def preact_resnet152(num_classes: int = 1000, in_chans: int = 3, **options: Any) -> ResNet:
    """Pre-activation ResNet-152 (2016b, Table 5)."""
    return build_resnet(num_classes, in_chans, options, **imagenet_arch(152, preact=True))


@register_model(_imagenet_cfg(64_666_152))
def preact_resnet200(num_classes: int = 1000, in_chans: int = 3, **options: Any) -> ResNet:
    """Pre-activation ResNet-200 (2016b, Table 5): bottlenecks, 3-24-36-3."""
    return build_resnet(num_classes, in_chans, options, **imagenet_arch(200, preact=True))


# --- CIFAR-10 ---------------------------------------------------------------------------------------------


@register_model(_cifar_cfg(1_727_962, "1.7M for the original ResNet-110"))
def preact_resnet110(num_classes: int = 10, in_chans: int = 3, **options: Any) -> ResNet:
    """Pre-activation ResNet-110 on CIFAR (2016b, Table 3): basic blocks, n = 18."""
    return build_resnet(num_classes, in_chans, options, **_cifar_arch(110, "basic", shortcut="A"))


@register_model(_cifar_cfg(1_703_258, "1.7M"))
def preact_resnet164(num_classes: int = 10, in_chans: int = 3, **options: Any) -> ResNet:
    """Pre-activation ResNet-164 on CIFAR (2016b, Table 4): bottlenecks, n = 18."""
    return build_resnet(num_classes, in_chans, options, **_cifar_arch(164, "bottleneck", shortcut="B"))


@register_model(
    cifar_cfg(
        PREACT_PAPER,
        2016,
        10_327_706,
        "computed; the paper gives 10.2M (Table 4), the count without BN parameters (10,178,490)",
    )
)
def preact_resnet1001(num_classes: int = 10, in_chans: int = 3, **options: Any) -> ResNet:
    """Pre-activation ResNet-1001 on CIFAR (2016b, Table 4): bottlenecks, n = 111."""
    return build_resnet(num_classes, in_chans, options, **_cifar_arch(1001, "bottleneck", shortcut="B"))
