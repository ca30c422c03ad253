"""Xception (Chollet 2017, Xception: Deep Learning with Depthwise Separable Convolutions, CVPR).

Inception modules taken to the extreme: 36 convolutional layers, almost all depthwise-separable
(`dcnn.layers.separable`, with no nonlinearity between the depthwise and the pointwise part, §4.7),
in 14 modules with linear residual connections (Fig. 5):

- entry flow: two plain 3×3 convolutions (32 channels stride 2, then 64; unpadded, as in the Keras
  implementation), then three blocks of ReLU → SeparableConv (×2) → 3×3/2 max pool with a strided
  1×1 conv + BN on the shortcut (128, 256, 728 channels; the first block starts without ReLU, its
  input has just been through one);
- middle flow: eight blocks of ReLU → SeparableConv 728 (×3) with identity shortcuts;
- exit flow: one block (728 then 1024 channels, max pool, 1×1 conv shortcut), SeparableConv 1536 →
  ReLU, SeparableConv 2048 → ReLU, global average pooling, logistic regression.

Every convolution is followed by batch normalization (§3). For ImageNet the paper adds dropout 0.5
before the classifier (§4.3): the default `drop_rate`. `xception` matches timm's ``legacy_xception``
(22,855,952 parameters, the figure of Table 3) and loads its checkpoints; timm's batch norm uses
PyTorch's ε = 1e-5 where Keras uses 1e-3, and so does ours.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.nn as nn

from dcnn.layers.conv_bn_act import ConvBnAct
from dcnn.layers.head import ClassifierHead
from dcnn.layers.separable import SeparableConv2d
from dcnn.models._base import ImageClassifier
from dcnn.models._registry import INCEPTION_MEAN, INCEPTION_STD, ModelCfg, register_model
from dcnn.models.pretrained import rename_prefixes

# Figure 5. A block: (output channels of each separable conv, stride of its max pool).
STEM_CHANNELS = (32, 64)
ENTRY_FLOW = (((128, 128), 2), ((256, 256), 2), ((728, 728), 2))
MIDDLE_FLOW = (((728, 728, 728), 1),) * 8
EXIT_BLOCK = ((728, 1024), 2)
EXIT_CONVS = (1536, 2048)


def _xception_separable(in_channels: int, out_channels: int, act: str | None) -> SeparableConv2d:
    """3×3 depthwise → 1×1 pointwise → BN (→ `act`): no nonlinearity in between (§4.7)."""
    return SeparableConv2d(in_channels, out_channels, 3, depthwise_norm=False, depthwise_act=None, act=act)


class XceptionBlock(nn.Module):
    """ReLU → SeparableConv → BN, once per entry of `widths`, then a 3×3 max pool when `stride` is 2,
    plus a shortcut (identity, or 1×1 conv with `stride` + BN when the shape changes).

    Submodules: `units` (each a Sequential of `act` (absent with ``act_first=False``) and `conv`),
    `pool`, `skip`.
    """

    def __init__(self, in_channels: int, widths: tuple[int, ...], stride: int = 1, act_first: bool = True) -> None:
        super().__init__()
        units = []
        channels = in_channels
        for index, width in enumerate(widths):
            parts: OrderedDict[str, nn.Module] = OrderedDict()
            if act_first or index > 0:
                parts["act"] = nn.ReLU()
            parts["conv"] = _xception_separable(channels, width, act=None)
            units.append(nn.Sequential(parts))
            channels = width
        self.units = nn.Sequential(*units)
        self.pool = nn.MaxPool2d(3, stride, padding=1) if stride != 1 else nn.Identity()
        if stride != 1 or channels != in_channels:
            self.skip: nn.Module = ConvBnAct(in_channels, channels, 1, stride=stride, act=None)
        else:
            self.skip = nn.Identity()
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.units(x)) + self.skip(x)


class Xception(ImageClassifier):
    """Xception (Fig. 5): submodules `stem` (two plain convolutions), `entry_flow`, `middle_flow`,
    `exit_flow` (a block and two separable convolutions), `head`."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, head: str = "fc", drop_rate: float = 0.5) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_chans = in_chans
        first, second = STEM_CHANNELS
        self.stem = nn.Sequential(
            ConvBnAct(in_chans, first, 3, stride=2, padding=0),
            ConvBnAct(first, second, 3, padding=0),
        )
        channels = second
        flows = []
        for flow in (ENTRY_FLOW, MIDDLE_FLOW):
            blocks = []
            for widths, stride in flow:
                # The stem ends in a ReLU, so the first block does not start with one (Fig. 5).
                blocks.append(XceptionBlock(channels, widths, stride, act_first=bool(flows or blocks)))
                channels = widths[-1]
            flows.append(nn.Sequential(*blocks))
        self.entry_flow, self.middle_flow = flows
        exit_units: list[nn.Module] = [XceptionBlock(channels, *EXIT_BLOCK)]
        channels = EXIT_BLOCK[0][-1]
        for width in EXIT_CONVS:
            exit_units.append(_xception_separable(channels, width, act="relu"))
            channels = width
        self.exit_flow = nn.Sequential(*exit_units)
        self.num_features = channels
        self.head = ClassifierHead(channels, num_classes, drop_rate=drop_rate, head=head)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.exit_flow(self.middle_flow(self.entry_flow(self.stem(x))))


def _timm_prefixes() -> dict[str, str]:
    """timm's ``legacy_xception`` prefixes → ours. Its blocks are `blockN.rep` Sequentials of
    [ReLU,] SeparableConv2d (`conv1` depthwise, `pointwise`), BatchNorm2d per unit."""
    prefixes = {"conv1.": "stem.0.conv.", "bn1.": "stem.0.bn.", "conv2.": "stem.1.conv.", "bn2.": "stem.1.bn."}
    blocks = [(f"entry_flow.{i}", widths) for i, (widths, _) in enumerate(ENTRY_FLOW)]
    blocks += [(f"middle_flow.{i}", widths) for i, (widths, _) in enumerate(MIDDLE_FLOW)]
    blocks += [("exit_flow.0", EXIT_BLOCK[0])]
    for number, (ours, widths) in enumerate(blocks, start=1):
        theirs = f"block{number}"
        prefixes[f"{theirs}.skip."] = f"{ours}.skip.conv."
        prefixes[f"{theirs}.skipbn."] = f"{ours}.skip.bn."
        first_sep = 0 if number == 1 else 1  # block1's Sequential has no leading ReLU
        for unit in range(len(widths)):
            sep = first_sep + 3 * unit
            prefixes[f"{theirs}.rep.{sep}.conv1."] = f"{ours}.units.{unit}.conv.depthwise.conv."
            prefixes[f"{theirs}.rep.{sep}.pointwise."] = f"{ours}.units.{unit}.conv.pointwise.conv."
            prefixes[f"{theirs}.rep.{sep + 1}."] = f"{ours}.units.{unit}.conv.pointwise.bn."
    for index, name in enumerate(("conv3", "conv4"), start=1):
        prefixes[f"{name}.conv1."] = f"exit_flow.{index}.depthwise.conv."
        prefixes[f"{name}.pointwise."] = f"exit_flow.{index}.pointwise.conv."
        prefixes[f"bn{index + 2}."] = f"exit_flow.{index}.pointwise.bn."
    prefixes["fc."] = "head.fc."
    return prefixes


def timm_key_map(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Rename a timm ``legacy_xception`` state_dict to ours."""
    return rename_prefixes(state_dict, _timm_prefixes())


@register_model(
    ModelCfg(
        paper="Chollet 2017, Xception: Deep Learning with Depthwise Separable Convolutions",
        year=2017,
        num_params=22_855_952,
        input_size=(3, 299, 299),
        min_input_size=(3, 7, 7),  # two unpadded 3×3 convs: 7 → 3 → 1; the padded pools keep 1
        mean=INCEPTION_MEAN,
        std=INCEPTION_STD,
        reference="timm/legacy_xception",
        key_map=timm_key_map,
        first_conv="stem.0.conv",
        classifier=("head.fc",),
        interpolation="bicubic",
        crop_pct=0.8975,
    )
)
def xception(num_classes: int = 1000, in_chans: int = 3, head: str = "fc", drop_rate: float = 0.5) -> Xception:
    """Xception for 299×299 ImageNet images (Fig. 5; Table 3: 22,855,952 parameters)."""
    return Xception(num_classes, in_chans, head, drop_rate)
