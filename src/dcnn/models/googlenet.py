"""GoogLeNet (Szegedy et al. 2014, "Going Deeper with Convolutions"), faithful to the paper, and the
batch-normalized variant of torchvision's ``googlenet``. Also the network class every Inception
version shares (:class:`InceptionNet`).

`googlenet` follows Table 1 and Figure 3 of the paper:

===============  =========================================================================
stage            what
===============  =========================================================================
conv1            7×7/2 convolution, 64 filters → 112×112 (on 224×224)
pool1, norm1     3×3/2 max pool → 56×56, local response normalization
conv2            1×1 reduction to 64, 3×3 convolution with 192 filters
norm2, pool2     local response normalization, 3×3/2 max pool → 28×28
inception 3a-3b  Inception modules (Figure 2b: 1×1; 1×1 → 3×3; 1×1 → 5×5; 3×3 max pool → 1×1)
pool3            3×3/2 max pool → 14×14
inception 4a-4e  Inception modules; auxiliary classifiers on the outputs of 4a and 4d (§5)
pool4            3×3/2 max pool → 7×7
inception 5a-5b  Inception modules → 7×7×1024
head             global average pool, dropout 40%, linear classifier
===============  =========================================================================

Every convolution, inside the modules too, is followed by a ReLU (§5); there is no batch
normalization (it came later). The auxiliary classifiers (§5): 5×5/3 average pool (→ 4×4), 1×1
convolution with 128 filters and ReLU, fully connected layer of 1024 units with ReLU, 70% dropout,
linear classifier. In training mode with ``aux_logits=True`` the model returns
``(logits, aux1, aux2)``; in eval mode plain logits. The paper adds the auxiliary losses with weight
0.3; the trainer reads that from the model's ``aux_loss_weights`` attribute, ``(0.3, 0.3)``.

Parameters: the "params" column of Table 1 sums to 6,797.7K ≈ the 6.8M usually quoted; it counts the
main network's weights, without biases or auxiliary classifiers, and some entries are rounded loosely
(conv1 is listed as 2.7K; 7·7·3·64 = 9,408). Ours, exactly: the main network's weights are 6,990,272,
6,998,552 with biases; the auxiliary classifiers add 3,188,840 (on 4a) and 3,190,888 (on 4d), so the
default model (``aux_logits=True``) has 13,378,280. ``tests/models/test_googlenet.py`` checks these
against Table 1.

Choices the paper leaves open, stated:
- Local response normalization: the paper gives no hyperparameters; we use those of the BVLC Caffe
  reproduction (window 5, α = 1e-4 divided by the window as Caffe does, β = 0.75, k = 1).
- The stride-2 max pools use ``ceil_mode`` (Caffe's rounding), which gives Table 1's 56, 28, 14 and
  7 on a 224×224 input.
- The global average pool replaces the 7×7 average pool, so that any input size works; at 224×224
  they are the same.

`googlenet_bn` is torchvision's ``googlenet``, which loads its checkpoints: batch normalization after
every convolution (eps 0.001), no LRN, a 3×3 convolution where the paper has 5×5 (a known slip of the
original port, torchvision issue #906), a 2×2/2 pool4, auxiliary classifiers that pool adaptively to
4×4, dropout 0.2. Its checkpoint (ported from the original model) expects pixels scaled to [−1, 1];
torchvision converts ImageNet-normalized inputs with ``transform_input=True`` when it loads it. Our
default does the same (``transform_input`` is on for RGB input), so ImageNet-normalized inputs give
torchvision's outputs; pass ``transform_input=False`` to feed [−1, 1] inputs directly.
Unlike torchvision, which returns ``(logits, aux2, aux1)``, the auxiliary outputs come in network
order: ``(logits, aux1, aux2)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

import torch
import torch.nn as nn

from dcnn.errors import DcnnError
from dcnn.layers.conv_bn_act import ConvBnAct
from dcnn.layers.head import ClassifierHead
from dcnn.layers.inception import (
    AuxClassifier,
    Branch,
    Conv,
    ConvFactory,
    Layer,
    Pool,
    Renormalize,
    build_layers,
)
from dcnn.layers.lrn import LocalResponseNorm2d
from dcnn.models._base import ImageClassifier
from dcnn.models._registry import ModelCfg, register_model
from dcnn.models.pretrained import StateDict, rename_prefixes


class InceptionNet(ImageClassifier):
    """A stem and Inception modules in one named sequence (`features`), then global average pooling,
    dropout and a linear classifier (`head`), with auxiliary classifiers (`aux_heads`, keyed by the
    name of the layer they read) that run in training mode.

    Args:
        features: the layers in order, by name.
        num_features: channels of the last feature map.
        aux_heads: auxiliary classifiers by the name of the layer whose output they classify.
        aux_loss_weights: the weight of each auxiliary loss, for the trainer (same order).
        input_transform: applied to the input first (e.g. :class:`Renormalize`), or None.
    """

    def __init__(
        self,
        features: Mapping[str, nn.Module],
        num_features: int,
        num_classes: int,
        in_chans: int,
        drop_rate: float,
        head: str,
        aux_heads: Mapping[str, AuxClassifier] | None = None,
        aux_loss_weights: tuple[float, ...] = (),
        input_transform: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.num_features = num_features
        self.input_transform = input_transform if input_transform is not None else nn.Identity()
        self.features = nn.Sequential()
        for name, layer in features.items():
            self.features.add_module(name, layer)
        self.aux_heads = nn.ModuleDict(aux_heads or {})
        unknown = set(self.aux_heads) - set(features)
        if unknown:
            raise ValueError(f"auxiliary classifiers on unknown layers {sorted(unknown)}")
        self.aux_logits = len(self.aux_heads) > 0
        self.aux_loss_weights = aux_loss_weights if self.aux_logits else ()
        self.head = ClassifierHead(num_features, num_classes, drop_rate=drop_rate, head=head)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.input_transform(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:  # type: ignore[override]
        x = self.input_transform(x)
        aux_outputs = []
        for name, layer in self.features.named_children():
            x = layer(x)
            if self.training and name in self.aux_heads:
                aux_outputs.append(self.aux_heads[name](x))
        logits = self.forward_head(x)
        return (logits, *aux_outputs) if aux_outputs else logits

    def reset_classifier(self, num_classes: int) -> None:
        super().reset_classifier(num_classes)
        for aux in self.aux_heads.values():
            aux.reset(num_classes)


def input_renormalization(transform_input: bool | None, in_chans: int) -> nn.Module | None:
    """torchvision's ``transform_input`` for checkpoints that expect [−1, 1] pixels: on by default for
    RGB input (ImageNet-normalized inputs then give the checkpoint's function), off otherwise."""
    if transform_input is None:
        transform_input = in_chans == 3
    if not transform_input:
        return None
    if in_chans != 3:
        raise DcnnError(
            f"transform_input converts ImageNet-normalized RGB inputs, but in_chans={in_chans}; "
            "pass transform_input=False."
        )
    return Renormalize()


def block_prefixes(theirs: str, ours: str, names: Mapping[str, str]) -> dict[str, str]:
    """Key-map prefixes for one block: ``{theirs.name.: ours.our_name.}`` for each pair of `names`."""
    return {f"{theirs}.{their_name}.": f"{ours}.{our_name}." for their_name, our_name in names.items()}


# Table 1: #1×1, #3×3 reduce, #3×3, #5×5 reduce, #5×5, pool proj of each Inception module, and the
# stride-2 max pools between them.
GOOGLENET_MODULES: dict[str, tuple[int, int, int, int, int, int] | None] = {
    "inception_3a": (64, 96, 128, 16, 32, 32),
    "inception_3b": (128, 128, 192, 32, 96, 64),
    "pool3": None,
    "inception_4a": (192, 96, 208, 16, 48, 64),
    "inception_4b": (160, 112, 224, 24, 64, 64),
    "inception_4c": (128, 128, 256, 24, 64, 64),
    "inception_4d": (112, 144, 288, 32, 64, 64),
    "inception_4e": (256, 160, 320, 32, 128, 128),
    "pool4": None,
    "inception_5a": (256, 160, 320, 32, 128, 128),
    "inception_5b": (384, 192, 384, 48, 128, 128),
}
AUX_TAPS = ("inception_4a", "inception_4d")  # §5: on the outputs of (4a) and (4d)
NUM_FEATURES = 1024

# The stride-2 max pools of Table 1 with Caffe's rounding (56, 28, 14, 7 on a 224×224 input).
STAGE_POOL = Pool("max", 3, stride=2, padding=0, ceil_mode=True)


def inception_v1_module(
    n1x1: int, n3x3_reduce: int, n3x3: int, n5x5_reduce: int, n5x5: int, pool_proj: int, wide_kernel: int = 5
) -> tuple[Branch, ...]:
    """Figure 2b: 1×1; 1×1 → 3×3; 1×1 → 5×5 (`wide_kernel`); 3×3/1 max pool → 1×1 projection."""
    return (
        (Conv(n1x1),),
        (Conv(n3x3_reduce), Conv(n3x3, 3)),
        (Conv(n5x5_reduce), Conv(n5x5, wide_kernel)),
        (Pool("max", 3), Conv(pool_proj)),
    )


def googlenet_lrn() -> LocalResponseNorm2d:
    """The paper gives no LRN hyperparameters: BVLC's Caffe GoogLeNet uses a window of 5, β = 0.75,
    k = 1 and Caffe's α = 1e-4, which Caffe divides by the window (LocalResponseNorm2d does not)."""
    return LocalResponseNorm2d(size=5, alpha=1e-4 / 5, beta=0.75, k=1.0)


def googlenet_table(lrn: bool, wide_kernel: int, pool4: Pool) -> dict[str, Layer]:
    """The layers of Table 1, with LRN after pool1 and after conv2 when `lrn` (Figure 3)."""
    table: dict[str, Layer] = {"conv1": Conv(64, 7, stride=2), "pool1": STAGE_POOL}
    if lrn:
        table["norm1"] = googlenet_lrn()
    table |= {"conv2_reduce": Conv(64), "conv2": Conv(192, 3)}
    if lrn:
        table["norm2"] = googlenet_lrn()
    table["pool2"] = STAGE_POOL
    for name, widths in GOOGLENET_MODULES.items():
        if widths is None:
            table[name] = pool4 if name == "pool4" else STAGE_POOL
        else:
            table[name] = inception_v1_module(*widths, wide_kernel=wide_kernel)
    return table


def googlenet_aux_heads(
    conv: ConvFactory, num_classes: int, pool_kernel: int | None
) -> dict[str, AuxClassifier]:
    """§5: on 4a (512 channels) and 4d (528): pool to 4×4, 1×1 conv 128, FC 1024, dropout 0.7, linear."""
    channels = {"inception_4a": 512, "inception_4d": 528}
    return {
        tap: AuxClassifier(channels[tap], num_classes, conv, convs=(Conv(128),), pool_kernel=pool_kernel)
        for tap in AUX_TAPS
    }


# Conv → BN (eps 0.001, the TensorFlow releases' and torchvision's ports') → ReLU.
TF_CONV = partial(ConvBnAct, bn_eps=1e-3)


# torchvision's branch names in its Inception modules → ours.
_TORCHVISION_BRANCHES = {"branch1": "branches.0.0", "branch2": "branches.1", "branch3": "branches.2",
                         "branch4": "branches.3"}  # fmt: skip
_TORCHVISION_AUX = {"conv": "convs.0", "fc1": "hidden.0", "fc2": "fc"}


def _torchvision_key_map(state_dict: StateDict) -> StateDict:
    """torchvision ``googlenet`` names → ours."""
    prefixes = {"conv1.": "features.conv1.", "conv2.": "features.conv2_reduce.", "conv3.": "features.conv2.",
                "fc.": "head.fc."}  # fmt: skip
    for name, widths in GOOGLENET_MODULES.items():
        if widths is not None:
            prefixes |= block_prefixes(name.replace("_", ""), f"features.{name}", _TORCHVISION_BRANCHES)
    for theirs, tap in zip(("aux1", "aux2"), AUX_TAPS, strict=True):
        prefixes |= block_prefixes(theirs, f"aux_heads.{tap}", _TORCHVISION_AUX)
    return rename_prefixes(state_dict, prefixes)


CLASSIFIERS = ("head.fc", *(f"aux_heads.{tap}.fc" for tap in AUX_TAPS))


def build_googlenet(
    conv: ConvFactory,
    table: dict[str, Layer],
    aux_pool_kernel: int | None,
    num_classes: int,
    in_chans: int,
    drop_rate: float,
    aux_logits: bool,
    head: str,
    input_transform: nn.Module | None = None,
) -> InceptionNet:
    """A GoogLeNet from its layer table, with the two auxiliary classifiers of §5 (loss weight 0.3
    each) when `aux_logits`."""
    features, _ = build_layers(in_chans, table, conv)
    return InceptionNet(
        features,
        NUM_FEATURES,
        num_classes,
        in_chans,
        drop_rate,
        head,
        aux_heads=googlenet_aux_heads(conv, num_classes, aux_pool_kernel) if aux_logits else None,
        aux_loss_weights=(0.3, 0.3),
        input_transform=input_transform,
    )


@register_model(
    ModelCfg(
        paper="Szegedy et al. 2014, Going Deeper with Convolutions",
        year=2014,
        num_params=13_378_280,
        num_params_source=(
            "computed: main network 6,998,552 + auxiliary classifiers 6,379,728; the paper gives "
            "≈6.8M for the main network (Table 1's params column, weights only, sums to 6,797.7K)"
        ),
        min_input_size=(3, 31, 31),
        first_conv="features.conv1.conv",
        classifier=CLASSIFIERS,
    )
)
def googlenet(
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float = 0.4,
    aux_logits: bool = True,
    head: str = "fc",
) -> InceptionNet:
    """GoogLeNet as in the paper: 5×5 branches, LRN, no batch normalization, two auxiliary
    classifiers (returned in training mode when `aux_logits`; weights 0.3 in ``aux_loss_weights``)."""
    table = googlenet_table(lrn=True, wide_kernel=5, pool4=STAGE_POOL)
    conv = partial(ConvBnAct, norm=False)
    return build_googlenet(conv, table, 5, num_classes, in_chans, drop_rate, aux_logits, head)


@register_model(
    ModelCfg(
        paper="Szegedy et al. 2014, Going Deeper with Convolutions (torchvision's batch-normalized variant)",
        year=2014,
        num_params=13_004_888,
        reference="torchvision/googlenet",
        min_input_size=(3, 15, 15),
        key_map=_torchvision_key_map,
        first_conv="features.conv1.conv",
        classifier=CLASSIFIERS,
    )
)
def googlenet_bn(
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float = 0.2,
    aux_logits: bool = True,
    transform_input: bool | None = None,
    head: str = "fc",
) -> InceptionNet:
    """torchvision's ``googlenet``: BN (eps 0.001) after every conv, 3×3 in place of 5×5, no LRN.

    `transform_input` (default: on for RGB) converts ImageNet-normalized inputs to the [−1, 1]
    scaling torchvision's checkpoint expects, as torchvision does when it loads it.
    """
    table = googlenet_table(lrn=False, wide_kernel=3, pool4=Pool("max", 2, stride=2, padding=0, ceil_mode=True))
    transform = input_renormalization(transform_input, in_chans)
    return build_googlenet(TF_CONV, table, None, num_classes, in_chans, drop_rate, aux_logits, head, transform)
