"""DenseNet (Huang et al. 2017, Densely Connected Convolutional Networks, CVPR).

Dense blocks in which every layer sees the feature maps of all layers before it (§3, eq. 2), joined
by transition layers that compress and downsample; the layers live in `dcnn.layers.dense`.

- ImageNet DenseNet-BC (Table 1): 7×7/2 conv with 2k channels, 3×3/2 max pool, four dense blocks with
  bottleneck layers (1×1 conv to 4k maps, then 3×3 conv to k), transitions with compression θ = 0.5,
  a final BN → ReLU, global average pooling and a linear classifier. `densenet121/161/169/201`
  match torchvision's models and load their checkpoints (DenseNet-161, k = 48, is the authors'
  released model, not in the paper's tables).
- CIFAR DenseNet-BC (§3 "Implementation Details", Table 2): a 3×3 conv with 2k channels on 32×32
  inputs, three dense blocks of equal size at 32×32, 16×16 and 8×8; L = 100, k = 12 gives 16
  bottleneck layers per block and 0.8M parameters (`densenet_bc_100_k12`).

Dropout (§4.2: rate 0.2 after each convolution but the first, used for the CIFAR and SVHN runs
without data augmentation) is the `drop_rate` option; torchvision drops only after the 3×3
convolutions, which is the same function in eval mode. Convolutions are initialized as in He et al.
2015 (§4.2, "we use the weight initialization introduced by [10]").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from dcnn.layers.conv_bn_act import ConvBnAct
from dcnn.layers.dense import DenseBlock, Transition
from dcnn.layers.head import ClassifierHead
from dcnn.models._base import ImageClassifier
from dcnn.models._registry import ModelCfg, register_model
from dcnn.models.cifar_resnet import cifar_cfg

PAPER = "Huang et al. 2017, Densely Connected Convolutional Networks"


@dataclass(frozen=True)
class DenseNetSpec:
    """One DenseNet: growth rate k, layers per dense block, stem width, stem kind, bottleneck width
    (`bn_size`·k, None for no bottleneck) and transition compression θ."""

    growth_rate: int
    block_layers: tuple[int, ...]
    stem_channels: int
    imagenet_stem: bool = True
    bn_size: int | None = 4
    compression: float = 0.5


SPECS = {
    # Table 1: k = 32. DenseNet-161 (k = 48) is not in the paper: the authors released it with their code.
    "densenet121": DenseNetSpec(32, (6, 12, 24, 16), 64),
    "densenet161": DenseNetSpec(48, (6, 12, 36, 24), 96),
    "densenet169": DenseNetSpec(32, (6, 12, 32, 32), 64),
    "densenet201": DenseNetSpec(32, (6, 12, 48, 32), 64),
    # §3 Implementation Details: three blocks of (L - 4) / 6 = 16 bottleneck layers, stem of 2k maps.
    "densenet_bc_100_k12": DenseNetSpec(12, (16, 16, 16), 24, imagenet_stem=False),
}


class DenseNet(ImageClassifier):
    """A DenseNet built from a :class:`DenseNetSpec`.

    Submodules: `stem` (conv, and for ImageNet BN + ReLU), `stem_pool` (3×3/2 max pool for ImageNet),
    `blocks` (dense blocks), `transitions` (one fewer), `final_bn` and `final_act` (BN → ReLU after the
    last block), `head`.
    """

    def __init__(
        self,
        spec: DenseNetSpec,
        num_classes: int = 1000,
        in_chans: int = 3,
        head: str = "fc",
        drop_rate: float = 0.0,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        if not 0 < spec.compression <= 1:
            raise ValueError(f"compression must be in (0, 1] (§3, DenseNet-C), got {spec.compression}")
        if not 0 <= drop_rate < 1:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        if spec.imagenet_stem:
            self.stem = ConvBnAct(in_chans, spec.stem_channels, 7, stride=2)
            self.stem_pool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.stem = ConvBnAct(in_chans, spec.stem_channels, 3, bias=False, norm=False, act=None)
            self.stem_pool = nn.Identity()

        channels = spec.stem_channels
        self.blocks = nn.ModuleList()
        self.transitions = nn.ModuleList()
        for index, num_layers in enumerate(spec.block_layers):
            block = DenseBlock(num_layers, channels, spec.growth_rate, spec.bn_size, drop_rate, memory_efficient)
            self.blocks.append(block)
            channels = block.out_channels
            if index < len(spec.block_layers) - 1:
                transition = Transition(channels, int(spec.compression * channels), drop_rate)
                self.transitions.append(transition)
                channels = transition.out_channels
        self.final_bn = nn.BatchNorm2d(channels)
        self.final_act = nn.ReLU()
        self.num_features = channels
        self.head = ClassifierHead(channels, num_classes, head=head)

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_pool(self.stem(x))
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index < len(self.transitions):
                x = self.transitions[index](x)
        return self.final_act(self.final_bn(x))


# torchvision's names → ours. Its published checkpoints use an older spelling inside dense layers
# ("denselayer1.norm.1.weight" for "denselayer1.norm1.weight"), accepted as well.
_TORCHVISION_OLD_LAYER_KEY = re.compile(r"(denselayer\d+\.(?:norm|conv))\.([12])\.")
_TORCHVISION_RENAMES = [
    (re.compile(r"^features\.conv0\."), "stem.conv."),
    (re.compile(r"^features\.norm0\."), "stem.bn."),
    (re.compile(r"^features\.norm5\."), "final_bn."),
    (re.compile(r"^classifier\."), "head.fc."),
    (re.compile(r"^features\.transition(\d+)\.(norm|conv)\."), lambda m: f"transitions.{int(m[1]) - 1}.{_UNIT[m[2]]}."),
    (
        re.compile(r"^features\.denseblock(\d+)\.denselayer(\d+)\.(norm|conv)([12])\."),
        lambda m: f"blocks.{int(m[1]) - 1}.layers.{int(m[2]) - 1}.{_LAYER_UNIT[m[4]]}.{_UNIT[m[3]]}.",
    ),
]
_UNIT = {"norm": "bn", "conv": "conv"}
_LAYER_UNIT = {"1": "bottleneck", "2": "composite"}


def torchvision_key_map(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Rename a torchvision DenseNet state_dict (either key spelling) to ours."""
    renamed = {}
    for key, value in state_dict.items():
        key = _TORCHVISION_OLD_LAYER_KEY.sub(r"\1\2.", key)
        for pattern, replacement in _TORCHVISION_RENAMES:
            key, count = pattern.subn(replacement, key)
            if count:
                break
        renamed[key] = value
    return renamed


def _torchvision_cfg(name: str, num_params: int) -> ModelCfg:
    return ModelCfg(
        paper=PAPER,
        year=2017,
        num_params=num_params,
        min_input_size=(3, 29, 29),  # 29 → 15 → 8 → 4 → 2 → 1 through stem, pool and three transitions
        reference=f"torchvision/{name}",
        key_map=torchvision_key_map,
        first_conv="stem.conv",
        classifier=("head.fc",),
    )


@register_model(_torchvision_cfg("densenet121", 7_978_856))
def densenet121(
    num_classes: int = 1000,
    in_chans: int = 3,
    head: str = "fc",
    drop_rate: float = 0.0,
    memory_efficient: bool = False,
) -> DenseNet:
    """DenseNet-121 (Table 1): blocks of 6, 12, 24, 16 bottleneck layers, k = 32."""
    return DenseNet(SPECS["densenet121"], num_classes, in_chans, head, drop_rate, memory_efficient)


@register_model(_torchvision_cfg("densenet161", 28_681_000))
def densenet161(
    num_classes: int = 1000,
    in_chans: int = 3,
    head: str = "fc",
    drop_rate: float = 0.0,
    memory_efficient: bool = False,
) -> DenseNet:
    """DenseNet-161: blocks of 6, 12, 36, 24 bottleneck layers, k = 48 and a 2k = 96-channel stem; not
    in the paper's tables but released by its authors (and torchvision) with the ImageNet models."""
    return DenseNet(SPECS["densenet161"], num_classes, in_chans, head, drop_rate, memory_efficient)


@register_model(_torchvision_cfg("densenet169", 14_149_480))
def densenet169(
    num_classes: int = 1000,
    in_chans: int = 3,
    head: str = "fc",
    drop_rate: float = 0.0,
    memory_efficient: bool = False,
) -> DenseNet:
    """DenseNet-169 (Table 1): blocks of 6, 12, 32, 32 bottleneck layers, k = 32."""
    return DenseNet(SPECS["densenet169"], num_classes, in_chans, head, drop_rate, memory_efficient)


@register_model(_torchvision_cfg("densenet201", 20_013_928))
def densenet201(
    num_classes: int = 1000,
    in_chans: int = 3,
    head: str = "fc",
    drop_rate: float = 0.0,
    memory_efficient: bool = False,
) -> DenseNet:
    """DenseNet-201 (Table 1): blocks of 6, 12, 48, 32 bottleneck layers, k = 32 (20M parameters, §4.4)."""
    return DenseNet(SPECS["densenet201"], num_classes, in_chans, head, drop_rate, memory_efficient)


# The smallest input survives the two 2×2 poolings of the transitions.
@register_model(cifar_cfg(PAPER, 2017, 769_162, "computed; paper Table 2 gives 0.8M", min_input_size=(3, 4, 4)))
def densenet_bc_100_k12(
    num_classes: int = 10,
    in_chans: int = 3,
    head: str = "fc",
    drop_rate: float = 0.0,
    memory_efficient: bool = False,
) -> DenseNet:
    """DenseNet-BC (L = 100, k = 12) for 32×32 CIFAR images (Table 2: 0.8M parameters, 4.51% error on
    C10+). §4.2 uses `drop_rate=0.2` when training without data augmentation."""
    return DenseNet(SPECS["densenet_bc_100_k12"], num_classes, in_chans, head, drop_rate, memory_efficient)
