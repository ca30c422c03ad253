"""Inception v3 (Szegedy, Vanhoucke, Ioffe, Shlens & Wojna 2016, "Rethinking the Inception
Architecture for Computer Vision"), as released by Google and ported by torchvision, whose checkpoints
it loads.

The paper's ideas, and where they are in the network:
- §3.1, Figure 5: a 5×5 convolution factorized into two 3×3 (the third branch of ``mixed_5b-5d``; the
  released model keeps one 5×5 branch as well).
- §3.2, Figure 6: n×n factorized into 1×n and n×1 with n = 7 on the 17×17 grid (``mixed_6b-6e``).
- §5, Figure 10: the grid reduced by parallel stride-2 convolutions and pooling (``mixed_6a``,
  ``mixed_7a``) instead of pooling before or after an Inception module.
- §6, Figure 7: expanded filter banks (1×3 and 3×1 side by side) on the 8×8 grid (``mixed_7b-7c``).
- §4: one auxiliary classifier, on top of the last 17×17 layer (``mixed_6e``): 5×5/3 average pool,
  1×1 conv 128, 5×5 conv 768, linear. In training mode with ``aux_logits=True`` the model returns
  ``(logits, aux)``. The paper gives no loss weight; ``aux_loss_weights = (0.4,)`` is the weight of
  Google's TF-slim training code and torchvision's reference recipe.
- 299×299 input, batch normalization (eps 0.001) after every convolution.

Deviations, stated: the stem of the released model differs from the paper's Table 1 (which lists
3×3/1 80 → 3×3/2 192 → 3×3/1 288 after the first pool): it has 1×1 80 → 3×3 192 → 3×3/2 max pool, and
Inception modules of 256, 288 and 288 channels on the 35×35 grid. We follow the released model,
since its checkpoints are what users load. The auxiliary classifier pools adaptively to a 5×5 grid
(:class:`~dcnn.layers.inception.AuxPool`): the same as torchvision's at 299×299, and it works down to
75×75 inputs, where torchvision's fails in training mode. On inputs larger than 299×299 torchvision
pools to a larger grid and averages after the 5×5 convolution, so the auxiliary outputs differ there;
the main output is the same at every size.

Input: the checkpoints expect pixels scaled to [−1, 1]. With ``transform_input`` on (the default for
RGB input) the model takes ImageNet-normalized inputs and converts them, as torchvision does when it
loads its weights; ``transform_input=False`` takes [−1, 1] inputs directly.
"""

from __future__ import annotations

from dcnn.layers.inception import (
    REDUCTION_POOL,
    AuxClassifier,
    Branch,
    Conv,
    Layer,
    Pool,
    build_layers,
    expanded_pair,
)
from dcnn.models._registry import ModelCfg, register_model
from dcnn.models.googlenet import TF_CONV, InceptionNet, block_prefixes, input_renormalization
from dcnn.models.pretrained import StateDict, rename_prefixes


def inception_a(pool_proj: int) -> tuple[Branch, ...]:
    """35×35 module (Figure 5, plus a 5×5 branch as released): 1×1; 1×1 → 5×5; 1×1 → 3×3 → 3×3;
    3×3 average pool → 1×1."""
    return (
        (Conv(64),),
        (Conv(48), Conv(64, 5)),
        (Conv(64), Conv(96, 3), Conv(96, 3)),
        (Pool("avg"), Conv(pool_proj)),
    )


def inception_c(width: int) -> tuple[Branch, ...]:
    """17×17 module (Figure 6, n = 7): 1×1; 1×1 → 1×7 → 7×1; 1×1 → (7×1 → 1×7) twice; pool → 1×1."""
    return (
        (Conv(192),),
        (Conv(width), Conv(width, (1, 7)), Conv(192, (7, 1))),
        (Conv(width), Conv(width, (7, 1)), Conv(width, (1, 7)), Conv(width, (7, 1)), Conv(192, (1, 7))),
        (Pool("avg"), Conv(192)),
    )


# The released model's stem, 299×299×3 → 35×35×192 (see the module docstring), by TF-slim's names;
# Inception-ResNet builds on it.
RELEASED_STEM: dict[str, Layer] = {
    "conv_1a": Conv(32, 3, stride=2, padding=0),
    "conv_2a": Conv(32, 3, padding=0),
    "conv_2b": Conv(64, 3),
    "pool_3a": REDUCTION_POOL,
    "conv_3b": Conv(80),
    "conv_4a": Conv(192, 3, padding=0),
    "pool_5a": REDUCTION_POOL,
}
# The layers, by TF-slim's and torchvision's names in lower case.
INCEPTION_V3: dict[str, Layer] = {
    **RELEASED_STEM,
    "mixed_5b": inception_a(32),
    "mixed_5c": inception_a(64),
    "mixed_5d": inception_a(64),
    "mixed_6a": (  # Figure 10: 35×35 → 17×17
        (Conv(384, 3, stride=2, padding=0),),
        (Conv(64), Conv(96, 3), Conv(96, 3, stride=2, padding=0)),
        (REDUCTION_POOL,),
    ),
    "mixed_6b": inception_c(128),
    "mixed_6c": inception_c(160),
    "mixed_6d": inception_c(160),
    "mixed_6e": inception_c(192),
    "mixed_7a": (  # 17×17 → 8×8
        (Conv(192), Conv(320, 3, stride=2, padding=0)),
        (Conv(192), Conv(192, (1, 7)), Conv(192, (7, 1)), Conv(192, 3, stride=2, padding=0)),
        (REDUCTION_POOL,),
    ),
    "mixed_7b": (  # Figure 7, 8×8
        (Conv(320),),
        (Conv(384), expanded_pair(384)),
        (Conv(448), Conv(384, 3), expanded_pair(384)),
        (Pool("avg"), Conv(192)),
    ),
}
INCEPTION_V3["mixed_7c"] = INCEPTION_V3["mixed_7b"]
AUX_TAP = "mixed_6e"
NUM_FEATURES = 2048

# torchvision's names of each module's convolutions → our positions in `branches`, by module kind.
_TORCHVISION_BRANCHES: dict[str, dict[str, str]] = {
    "a": {
        "branch1x1": "0.0", "branch5x5_1": "1.0", "branch5x5_2": "1.1",
        "branch3x3dbl_1": "2.0", "branch3x3dbl_2": "2.1", "branch3x3dbl_3": "2.2", "branch_pool": "3.1",
    },
    "b": {"branch3x3": "0.0", "branch3x3dbl_1": "1.0", "branch3x3dbl_2": "1.1", "branch3x3dbl_3": "1.2"},
    "c": {
        "branch1x1": "0.0", "branch7x7_1": "1.0", "branch7x7_2": "1.1", "branch7x7_3": "1.2",
        **{f"branch7x7dbl_{i + 1}": f"2.{i}" for i in range(5)}, "branch_pool": "3.1",
    },
    "d": {
        "branch3x3_1": "0.0", "branch3x3_2": "0.1", **{f"branch7x7x3_{i + 1}": f"1.{i}" for i in range(4)},
    },
    "e": {
        "branch1x1": "0.0", "branch3x3_1": "1.0",
        "branch3x3_2a": "1.1.branches.0.0", "branch3x3_2b": "1.1.branches.1.0",
        "branch3x3dbl_1": "2.0", "branch3x3dbl_2": "2.1",
        "branch3x3dbl_3a": "2.2.branches.0.0", "branch3x3dbl_3b": "2.2.branches.1.0", "branch_pool": "3.1",
    },
}  # fmt: skip
_MODULE_KINDS = {"5b": "a", "5c": "a", "5d": "a", "6a": "b", "6b": "c", "6c": "c", "6d": "c", "6e": "c",
                 "7a": "d", "7b": "e", "7c": "e"}  # fmt: skip
_TORCHVISION_STEM = {"Conv2d_1a_3x3": "conv_1a", "Conv2d_2a_3x3": "conv_2a", "Conv2d_2b_3x3": "conv_2b",
                     "Conv2d_3b_1x1": "conv_3b", "Conv2d_4a_3x3": "conv_4a"}  # fmt: skip


def _torchvision_key_map(state_dict: StateDict) -> StateDict:
    """torchvision ``inception_v3`` names → ours."""
    prefixes = {f"{theirs}.": f"features.{ours}." for theirs, ours in _TORCHVISION_STEM.items()}
    for grid, kind in _MODULE_KINDS.items():
        ours = f"features.mixed_{grid}.branches"
        prefixes |= block_prefixes(f"Mixed_{grid}", ours, _TORCHVISION_BRANCHES[kind])
    aux = {"conv0": "convs.0", "conv1": "convs.1", "fc": "fc"}
    prefixes |= block_prefixes("AuxLogits", f"aux_heads.{AUX_TAP}", aux)
    prefixes["fc."] = "head.fc."
    return rename_prefixes(state_dict, prefixes)


@register_model(
    ModelCfg(
        paper="Szegedy et al. 2016, Rethinking the Inception Architecture for Computer Vision",
        year=2016,
        num_params=27_161_264,
        reference="torchvision/inception_v3",
        input_size=(3, 299, 299),
        min_input_size=(3, 75, 75),
        key_map=_torchvision_key_map,
        first_conv="features.conv_1a.conv",
        classifier=("head.fc", f"aux_heads.{AUX_TAP}.fc"),
    )
)
def inception_v3(
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float = 0.5,
    aux_logits: bool = True,
    transform_input: bool | None = None,
    head: str = "fc",
) -> InceptionNet:
    """Inception v3 as released (torchvision's ``inception_v3``), with its auxiliary classifier.

    `transform_input` (default: on for RGB) converts ImageNet-normalized inputs to the [−1, 1]
    scaling of the checkpoints; `drop_rate` 0.5 before the classifier, as torchvision.
    """
    layers, _ = build_layers(in_chans, INCEPTION_V3, TF_CONV)
    aux = AuxClassifier(768, num_classes, TF_CONV, convs=(Conv(128), Conv(768, 5, padding=0)), grid=5, hidden=0)
    return InceptionNet(
        layers,
        NUM_FEATURES,
        num_classes,
        in_chans,
        drop_rate,
        head,
        aux_heads={AUX_TAP: aux} if aux_logits else None,
        aux_loss_weights=(0.4,),
        input_transform=input_renormalization(transform_input, in_chans),
    )
