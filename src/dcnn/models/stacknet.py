"""StackNet: the plain and residual CIFAR nets of He et al. 2016a (§4.2) with every part made a choice,
for controlled experiments (`dcnn experiment`): depth, width, activation, normalization, pooling,
kernel size, shortcuts, dropout and the scale of the initialization.

``stem → stage 1 → pool → stage 2 → pool → ... → global average pool → [dropout] → linear``

- The stem is one conv unit (``stem_kernel``×``stem_kernel``, ``widths[0]`` maps).
- Stage i holds ``depths[i]`` blocks of ``block_layers`` conv units with ``widths[i]`` maps; a unit
  is conv → [BN] → activation → [LRN], the order of batch normalization (Ioffe & Szegedy 2015, §3.2:
  normalize x = Wu before the nonlinearity) and of local response normalization (Krizhevsky et al.
  2012, §3.3: "applied after ReLU").
- A block with a shortcut computes act(F(x) + shortcut(x)) (He et al. 2016a, Eq. 1, post-activation:
  its last unit's activation, and LRN, follow the addition); shortcut options "A", "B", "C" as in
  :mod:`dcnn.layers.residual`, None for a plain block (§4.1), which is the same stack of units.
- Between stages the maps halve: by a 2×2 pooling of kind ``pool`` ("max", "avg", "stochastic"
  (Zeiler & Fergus 2013), "l2" (LP pooling with p = 2)), or, with ``pool="stride"``, by a stride of
  2 in the stage's first conv and shortcut, as in the ResNets (2016a, §3.3).
- ``drop_rate``: dropout (Srivastava et al. 2014, §6: also after convolutional layers) at the start
  of every stage after the first and before the classifier.
- Every conv starts from N(0, (s·g)² / fan_in), g the activation's gain (√2 for ReLU, 5/3 for tanh,
  1 for sigmoid; He et al. 2015, §2.2; Glorot & Bengio 2010 for the others' gains as PyTorch
  computes them) and s = ``init_scale`` (1: variance-preserving; larger values make the forward
  signal and the gradients grow layer by layer). The classifier keeps PyTorch's initialization.
  Residual blocks without batch norm start with the last conv of each branch scaled by 1/√L, L the
  number of blocks, as Fixup rescales residual branches (Zhang, Dauphin & Ma 2019, §3): the sum's
  variance then grows by a factor of at most 1 + 1/L per block, e ≈ 2.7 over the net, instead of
  doubling at every block.

The default, ``stacknet``, is the CIFAR plain-20 (n = 3: 16, 32, 64 maps, BN, ReLU, stride-2
down-sampling, no shortcut); with ``shortcut="A"`` it is ResNet-20, the same 269,722 parameters
(2016a Table 6 gives 0.27M). It differs from the zoo's `plain20` only in the initialization's fan mode
(fan-in here, fan-out there).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from dcnn.errors import DcnnError
from dcnn.layers.activations import get_act
from dcnn.layers.conv_bn_act import ConvBnAct
from dcnn.layers.head import ClassifierHead
from dcnn.layers.lrn import LocalResponseNorm2d
from dcnn.layers.pooling import LPPool2d, StochasticPool2d
from dcnn.layers.residual import make_shortcut
from dcnn.models._base import ImageClassifier
from dcnn.models._registry import register_model
from dcnn.models.cifar_resnet import cifar_cfg

NORMS = ("none", "bn", "lrn")
POOLS: dict[str, type[nn.Module] | None] = {
    "max": nn.MaxPool2d,
    "avg": nn.AvgPool2d,
    "stochastic": StochasticPool2d,
    "l2": LPPool2d,
    "stride": None,
}
# Activations whose gain PyTorch's calculate_gain knows; the others start with gain 1.
_GAINS = ("relu", "leaky_relu", "tanh", "sigmoid", "selu")


def _choice(kind: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise DcnnError(f"unknown {kind} {value!r}; choose one of {', '.join(allowed)}.")
    return value


def make_pool(kind: str) -> nn.Module:
    """A 2×2, stride-2 pooling of `kind` (not "stride", which down-samples in the conv instead)."""
    pool = POOLS[_choice("pool", kind, tuple(POOLS))]
    if pool is None:
        raise DcnnError("pool='stride' down-samples in the convolution and has no pooling layer.")
    return pool(p=2, kernel_size=2) if pool is LPPool2d else pool(kernel_size=2)


def conv_unit(in_channels: int, out_channels: int, kernel_size: int, stride: int, act: str | None,
              norm: str) -> ConvBnAct:
    """conv → [BN] → act → [LRN]; with `act` None, the conv and its BN alone (a block's last unit)."""
    unit = ConvBnAct(in_channels, out_channels, kernel_size, stride=stride, norm=norm == "bn", act=act)
    if norm == "lrn" and act is not None:
        unit.add_module("lrn", LocalResponseNorm2d())
    return unit


class StackBlock(nn.Module):
    """`layers` conv units; the last one's activation (and LRN) follows the addition of the shortcut,
    if any: ``post(F(x) + shortcut(x))`` (He et al. 2016a, Eq. 1 and Fig. 2). Submodules `units`,
    `shortcut` (None in a plain block), `post`."""

    def __init__(self, in_channels: int, out_channels: int, layers: int, kernel_size: int, stride: int,
                 act: str, norm: str, shortcut: str | None) -> None:
        super().__init__()
        units = [conv_unit(in_channels if i == 0 else out_channels, out_channels, kernel_size,
                           stride if i == 0 else 1, act if i < layers - 1 else None, norm) for i in range(layers)]
        self.units = nn.Sequential(OrderedDict((f"conv{i + 1}", unit) for i, unit in enumerate(units)))
        self.shortcut = make_shortcut(shortcut, in_channels, out_channels, stride, norm=norm == "bn")
        post: list[tuple[str, nn.Module]] = [("act", get_act(act)())]
        if norm == "lrn":
            post.append(("lrn", LocalResponseNorm2d()))
        self.post = nn.Sequential(OrderedDict(post))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.units(x)
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.post(out)


class StackNet(ImageClassifier):
    """A stem, stages of :class:`StackBlock` and a linear classifier; see the module docstring.

    Args:
        depths: blocks per stage.
        widths: maps of each stage (the stem has ``widths[0]``).
        block_layers: conv units per block (2: the basic block of 2016a, Fig. 5 left).
        kernel_size: the blocks' kernel side; stem_kernel: the stem's.
        act: activation name (dcnn.layers.activations); norm: "none", "bn" or "lrn".
        pool: "max", "avg", "stochastic", "l2" or "stride" (how the maps halve between stages).
        shortcut: "A", "B", "C" or None (plain).
        drop_rate: dropout after each down-sampling and before the classifier.
        init_scale: multiplies the standard deviation of every conv's initialization.
        num_classes, in_chans, head: the classifier interface.
    """

    def __init__(
        self,
        depths: Sequence[int] = (3, 3, 3),
        widths: Sequence[int] = (16, 32, 64),
        block_layers: int = 2,
        kernel_size: int = 3,
        stem_kernel: int = 3,
        act: str = "relu",
        norm: str = "bn",
        pool: str = "stride",
        shortcut: str | None = None,
        drop_rate: float = 0.0,
        init_scale: float = 1.0,
        num_classes: int = 10,
        in_chans: int = 3,
        head: str = "fc",
    ) -> None:
        super().__init__()
        if len(depths) != len(widths) or not depths:
            raise DcnnError(f"depths {tuple(depths)} and widths {tuple(widths)} must list one entry per stage.")
        if block_layers < 1 or min(depths) < 0 or min(widths) < 1:
            raise DcnnError("block_layers and widths must be at least 1, depths at least 0.")
        _choice("norm", norm, NORMS)
        _choice("pool", pool, tuple(POOLS))
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.act_name = act
        self.stem = conv_unit(in_chans, widths[0], stem_kernel, 1, act, norm)
        stages = []
        in_channels = widths[0]
        for index, (depth, width) in enumerate(zip(depths, widths, strict=True)):
            layers: list[nn.Module] = []
            if index > 0 and pool != "stride":
                layers.append(make_pool(pool))
            if index > 0 and drop_rate > 0:
                layers.append(nn.Dropout(drop_rate))
            for position in range(depth):
                stride = 2 if index > 0 and position == 0 and pool == "stride" else 1
                layers.append(StackBlock(in_channels, width, block_layers, kernel_size, stride, act, norm, shortcut))
                in_channels = width
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.num_features = in_channels
        self.head = ClassifierHead(in_channels, num_classes, drop_rate=drop_rate, head=head)
        self._init_weights(init_scale, rescale_branches=shortcut is not None and norm != "bn")

    def _init_weights(self, scale: float, rescale_branches: bool) -> None:
        gain = nn.init.calculate_gain(self.act_name) if self.act_name in _GAINS else 1.0
        for module in (*self.stem.modules(), *self.stages.modules()):
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                nn.init.normal_(module.weight, 0.0, scale * gain / fan_in**0.5)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        blocks = [m for m in self.stages.modules() if isinstance(m, StackBlock)]
        if rescale_branches and blocks:
            with torch.no_grad():
                for block in blocks:
                    block.units[-1].conv.weight.mul_(len(blocks) ** -0.5)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


@register_model(cifar_cfg(
    "He et al. 2016, Deep Residual Learning for Image Recognition (§4.2's CIFAR nets, every part a choice)",
    2016, 269_722, "plain20's count (the same layers); 2016a Table 6 gives 0.27M",
))
def stacknet(num_classes: int = 10, in_chans: int = 3, **options: Any) -> StackNet:
    """A plain or residual stack for experiments; by default the CIFAR plain-20 (module docstring)."""
    return StackNet(num_classes=num_classes, in_chans=in_chans, **options)
