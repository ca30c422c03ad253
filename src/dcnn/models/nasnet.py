"""NASNet-A (Zoph, Vasudevan, Shlens & Le 2018, "Learning Transferable Architectures for Scalable
Image Recognition").

The cells were found by architecture search on CIFAR-10 (Section 3) and stacked for ImageNet
(Figure 2, right): a 3×3 stride-2 stem conv, two Reduction cells as a stem (at 1/4 and 1/2 of the
base width), then three stacks of N Normal cells with a Reduction cell between stacks, doubling the
width at each reduction (Section 3). "NASNet-A (N @ P)" names N Normal cells per stack and P filters
in the penultimate layer: the last stack's Normal cells concatenate 6 block outputs of width
P / 6, so the base width is P / 24 (Table 2). After the last cell: ReLU, global average pooling,
dropout, linear classifier.

The cells are data (:mod:`dcnn.layers.nasnet_cells`): the Normal and Reduction tables of Figure 4 and
one cell class that builds either.

Model details the paper leaves to the authors' TensorFlow release (which timm's port follows):
- The stem conv has no padding ("VALID") and is followed by BN without a nonlinearity; every cell
  starts from ReLU.
- The first stem cell's h_{i-1} is the stem conv's output itself; each later cell brings h_{i-1} to its
  width with ReLU-1×1 conv-BN, or with a factorized reduction when h_{i-1} has twice the resolution.
- The Normal cell right after a Reduction cell reads, as h_{i-1}, the output from before the
  Reduction cell's input (NASNet-A Large) or the Reduction cell's input (NASNet-A Mobile): the
  release's ``skip_reduction_layer_input`` is 1 and 0 in its large and mobile configurations.

Not built: the auxiliary classifier and ScheduledDropPath (Section 4, training aids), which neither
timm nor Keras include. The paper trains with dropout 0.5 before the classifier; ``drop_rate``
defaults to 0 as in timm.
"""

from __future__ import annotations

import re
from typing import Any

import torch
import torch.nn as nn

from dcnn.layers.conv_bn_act import ConvBnAct
from dcnn.layers.head import ClassifierHead
from dcnn.layers.init import he_init_fan_out
from dcnn.layers.nasnet_cells import (
    BN_EPS,
    BN_MOMENTUM,
    NASNET_A_NORMAL,
    NASNET_A_REDUCTION,
    CellGenotype,
    NasNetCell,
)
from dcnn.models._base import ImageClassifier
from dcnn.models._registry import INCEPTION_MEAN, INCEPTION_STD, ModelCfg, register_model

PAPER = "Zoph et al. 2018, Learning Transferable Architectures for Scalable Image Recognition"
NUM_STACKS = 3
# A Normal cell concatenates 6 hidden states, and the width doubles at each of the 2 reductions
# between the 3 stacks: P = 6 · 4 · base width.
PENULTIMATE_PER_BASE_WIDTH = 6 * 2 ** (NUM_STACKS - 1)

# (genotype, width, which earlier output is the cell's h_{i-1}: 1 = the same as h_i, 2 = the output
# before h_i, 3 = the one before that)
CellPlan = list[tuple[CellGenotype, int, int]]


def cell_plan(num_normal_cells: int, base_width: int, skip_reduction_input: bool) -> CellPlan:
    """The cells of NASNet-A in order (Figure 2, right, with the ImageNet stem)."""
    # Two stem Reduction cells at 1/4 and 1/2 of the base width; the first sees only the stem conv.
    plan: CellPlan = [(NASNET_A_REDUCTION, base_width // 4, 1), (NASNET_A_REDUCTION, base_width // 2, 2)]
    for stack in range(NUM_STACKS):
        width = base_width * 2**stack
        if stack > 0:
            plan.append((NASNET_A_REDUCTION, width, 2))
        for index in range(num_normal_cells):
            after_reduction = stack > 0 and index == 0
            plan.append((NASNET_A_NORMAL, width, 3 if after_reduction and skip_reduction_input else 2))
    return plan


class NASNet(ImageClassifier):
    """NASNet-A (N @ P).

    Args:
        num_normal_cells: N, Normal cells per stack.
        penultimate_filters: P, the width of the last feature map (a multiple of 24).
        stem_channels: output channels of the 3×3 stem conv.
        skip_reduction_input: whether the Normal cell after a Reduction cell reads the output from
            before the Reduction cell's input as its h_{i-1} (see the module docstring).
        num_classes, in_chans, drop_rate, head: as for every dcnn model.
    """

    def __init__(
        self,
        num_normal_cells: int,
        penultimate_filters: int,
        stem_channels: int,
        skip_reduction_input: bool,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        head: str = "fc",
    ) -> None:
        super().__init__()
        # The stem cells run at 1/4 of the base width and a factorized reduction halves its width
        # into two paths, so the base width P / 24 must be a multiple of 4.
        if num_normal_cells < 1 or penultimate_filters % (4 * PENULTIMATE_PER_BASE_WIDTH):
            raise ValueError(
                f"NASNet needs at least one Normal cell per stack and penultimate filters divisible by "
                f"{4 * PENULTIMATE_PER_BASE_WIDTH} (got {num_normal_cells} @ {penultimate_filters})"
            )
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.stem = ConvBnAct(
            in_chans, stem_channels, 3, stride=2, padding=0, bn_eps=BN_EPS, bn_momentum=BN_MOMENTUM, act=None
        )
        base_width = penultimate_filters // PENULTIMATE_PER_BASE_WIDTH
        outputs = [(stem_channels, 2)]  # (channels, stride) of the stem and of each cell
        cells = []
        previous_offsets = []
        for genotype, width, offset in cell_plan(num_normal_cells, base_width, skip_reduction_input):
            current_channels, current_stride = outputs[-1]
            previous_channels, previous_stride = outputs[-offset]
            if offset == 1:
                previous = "none"
            elif previous_stride != current_stride:
                previous = "factorized"
            else:
                previous = "conv"
            cell = NasNetCell(genotype, current_channels, previous_channels, width, previous)
            cells.append(cell)
            previous_offsets.append(offset)
            outputs.append((cell.out_channels, current_stride * (2 if genotype.reduction else 1)))
        self.cells = nn.ModuleList(cells)
        self.previous_offsets = tuple(previous_offsets)
        self.num_features = outputs[-1][0]
        self.act = nn.ReLU()
        self.head = ClassifierHead(self.num_features, num_classes, drop_rate=drop_rate, head=head)
        self._init_weights()

    def _init_weights(self) -> None:
        # He initialization, fan-out mode (the TensorFlow release's variance-scaling initializer).
        he_init_fan_out(self.modules())

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        recent = [self.stem(x)]  # the last few outputs: a cell reads at most three back
        for cell, offset in zip(self.cells, self.previous_offsets, strict=True):
            recent = [*recent[-2:], cell(recent[-1], recent[-offset])]
        return self.act(recent[-1])


# timm's module names in forward order (NASNet-A 6 @ 4032), then how its names map to ours.
_TIMM_CELLS = (
    "cell_stem_0",
    "cell_stem_1",
    *(f"cell_{i}" for i in range(6)),
    "reduction_cell_0",
    *(f"cell_{i}" for i in range(6, 12)),
    "reduction_cell_1",
    *(f"cell_{i}" for i in range(12, 18)),
)
_TIMM_CELL_INDEX = {name: index for index, name in enumerate(_TIMM_CELLS)}
_TIMM_RENAMES = (
    (r"^conv0\.", "stem."),
    (r"^last_linear\.", "head.fc."),
    (r"^(\w+)\.", lambda m: f"cells.{_TIMM_CELL_INDEX[m[1]]}." if m[1] in _TIMM_CELL_INDEX else m[0]),
    (r"\.conv_1x1\.", ".pre_current."),
    (r"\.conv_prev_1x1\.", ".pre_previous."),
    (r"\.path_(\d)\.conv\.", r".pre_previous.path_\1."),
    (r"\.final_path_bn\.", ".pre_previous.bn."),
    # timm's "left" and "right" operation of each block are the genotype's first and second.
    (r"\.comb_iter_(\d)_left\.", r".blocks.\1.ops.0."),
    (r"\.comb_iter_(\d)_right\.", r".blocks.\1.ops.1."),
    (r"\.separable_(\d)\.depthwise_conv2d\.", r".depthwise_\1."),
    (r"\.separable_(\d)\.pointwise_conv2d\.", r".pointwise_\1."),
    (r"\.bn_sep_(\d)\.", r".bn_\1."),
)


def timm_key_map(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Rename a timm ``nasnetalarge`` state_dict to :func:`nasnet_a_large`'s names."""
    renamed = {}
    for key, value in state_dict.items():
        for pattern, replacement in _TIMM_RENAMES:
            key = re.sub(pattern, replacement, key)
        renamed[key] = value
    return renamed


@register_model(
    ModelCfg(
        paper=PAPER,
        year=2018,
        num_params=88_753_150,
        input_size=(3, 331, 331),
        min_input_size=(3, 3, 3),
        mean=INCEPTION_MEAN,
        std=INCEPTION_STD,
        reference="timm/nasnetalarge",
        key_map=timm_key_map,
        first_conv="stem.conv",
        classifier=("head.fc",),
        interpolation="bicubic",
        crop_pct=0.911,
    )
)
def nasnet_a_large(num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0, head: str = "fc") -> NASNet:
    """NASNet-A (6 @ 4032) for 331×331 inputs (Table 2), 96 stem filters; loads timm's
    ``nasnetalarge`` checkpoints (88,753,150 parameters as timm counts them; Table 2 gives 88.9M)."""
    return NASNet(6, 4032, 96, True, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, head=head)


@register_model(
    ModelCfg(
        paper=PAPER,
        year=2018,
        num_params=5_289_978,
        num_params_source="computed; the paper gives 5.3M (Table 2)",
        input_size=(3, 224, 224),
        min_input_size=(3, 3, 3),
        mean=INCEPTION_MEAN,
        std=INCEPTION_STD,
        first_conv="stem.conv",
        classifier=("head.fc",),
    )
)
def nasnet_a_mobile(num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0, head: str = "fc") -> NASNet:
    """NASNet-A (4 @ 1056) for 224×224 inputs, 32 stem filters: 5,289,978 parameters, the paper's
    5.3M (Table 2)."""
    return NASNet(4, 1056, 32, False, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, head=head)
