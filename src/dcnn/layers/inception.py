"""Inception modules described by data, shared by GoogLeNet, BN-Inception, Inception v3/v4 and
Inception-ResNet.

An Inception module runs parallel branches on the same input and concatenates their outputs along
the channels (Szegedy et al. 2014, "Going Deeper with Convolutions", §4 and Figure 2). A branch is a
sequence of steps, each a :class:`Conv`, a :class:`Pool` or a :class:`Split`: parallel convolutions on
the same input whose outputs are concatenated, the "expanded filter bank" of Szegedy et al. 2016,
"Rethinking the Inception Architecture", Figure 7. A family writes each module as a tuple of branches,
e.g. GoogLeNet's inception (3a)::

    (
        (Conv(64),),                    # 1×1
        (Conv(96), Conv(128, 3)),       # 1×1 reduction, 3×3
        (Conv(16), Conv(32, 5)),        # 1×1 reduction, 5×5
        (Pool("max"), Conv(32)),        # 3×3 max pool, 1×1 projection
    )

and chooses the convolution unit (conv + ReLU in GoogLeNet, conv + BN + ReLU from BN-Inception on)
with a `ConvFactory`. Also here: the residual Inception block of Inception-ResNet, the auxiliary
classifier of GoogLeNet and Inception v3, and the input renormalization of the checkpoints that were
ported from TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

ConvFactory = Callable[..., nn.Module]
"""Builds one convolution unit: ``conv(in_channels, out_channels, kernel_size, stride=, padding=)``
(padding None: "same"), e.g. ``functools.partial(ConvBnAct, bn_eps=1e-3)``."""


@dataclass(frozen=True)
class Conv:
    """A convolution unit with `out_channels` filters; padding None keeps the size at stride 1
    ("same"), 0 is a "valid" convolution (the "V" of Szegedy et al. 2016b's figures)."""

    out_channels: int
    kernel_size: int | tuple[int, int] = 1
    stride: int = 1
    padding: int | tuple[int, int] | None = None


@dataclass(frozen=True)
class Pool:
    """A "max" or "avg" pooling window; padding None is kernel_size // 2 ("same" at stride 1)."""

    kind: str
    kernel_size: int = 3
    stride: int = 1
    padding: int | None = None
    ceil_mode: bool = False
    count_include_pad: bool = True


@dataclass(frozen=True)
class Split:
    """Parallel convolutions on the same input, concatenated (Szegedy et al. 2016, Figure 7)."""

    convs: tuple[Conv, ...]


Step = Conv | Pool | Split
Branch = tuple[Step, ...]


@dataclass(frozen=True)
class Residual:
    """A residual Inception block (:class:`InceptionResidualBlock`) on these branches."""

    branches: tuple[Branch, ...]
    scale: float
    activate: bool = True


@dataclass(frozen=True)
class Stack:
    """Layers applied one after the other, kept together as one ``nn.Sequential`` (e.g. "4 ×
    Inception-A")."""

    layers: tuple[Layer, ...]


Layer = Step | Residual | Stack | tuple[Branch, ...] | nn.Module
"""One layer of a network table: a step, a residual block, a stack, an Inception module (its tuple of
branches) or a ready module that keeps the channel count (e.g. a normalization; a table holding one
must be made anew for each model, or the models would share it)."""


def make_pool(spec: Pool) -> nn.Module:
    padding = spec.kernel_size // 2 if spec.padding is None else spec.padding
    if spec.kind == "max":
        return nn.MaxPool2d(spec.kernel_size, spec.stride, padding, ceil_mode=spec.ceil_mode)
    if spec.kind == "avg":
        return nn.AvgPool2d(
            spec.kernel_size, spec.stride, padding, ceil_mode=spec.ceil_mode,
            count_include_pad=spec.count_include_pad,
        )
    raise ValueError(f"unknown pooling {spec.kind!r}; use 'max' or 'avg'")


def build(spec: Layer, in_channels: int, conv: ConvFactory) -> tuple[nn.Module, int]:
    """The module described by `spec` on `in_channels` inputs, and its output channel count."""
    if isinstance(spec, Conv):
        out = spec.out_channels
        return conv(in_channels, out, spec.kernel_size, stride=spec.stride, padding=spec.padding), out
    if isinstance(spec, Pool):
        return make_pool(spec), in_channels
    if isinstance(spec, nn.Module):
        return spec, in_channels
    block: InceptionBlock
    if isinstance(spec, Split):
        block = InceptionBlock(in_channels, [(c,) for c in spec.convs], conv)
    elif isinstance(spec, Residual):
        block = InceptionResidualBlock(in_channels, spec.branches, conv, spec.scale, spec.activate)
    elif isinstance(spec, Stack):
        layers, channels = build_layers(in_channels, numbered(spec.layers), conv)
        return nn.Sequential(*layers.values()), channels
    else:
        block = InceptionBlock(in_channels, spec, conv)
    return block, block.out_channels


def build_layers(
    in_channels: int, specs: Mapping[str, Layer], conv: ConvFactory
) -> tuple[dict[str, nn.Module], int]:
    """The named layers of a network table, chained from `in_channels`, and the output channel count."""
    layers: dict[str, nn.Module] = {}
    channels = in_channels
    for name, spec in specs.items():
        layers[name], channels = build(spec, channels, conv)
    return layers, channels


def numbered(specs: Sequence[Layer]) -> dict[str, Layer]:
    """A sequence of layers as a table named "0", "1", ... (the names ``nn.Sequential`` gives)."""
    return {str(i): spec for i, spec in enumerate(specs)}


class InceptionBlock(nn.Module):
    """Parallel branches on one input, concatenated along the channels (Szegedy et al. 2014, §4).

    ``branches[i]`` is an ``nn.Sequential`` of the i-th branch's steps, in the order of `branches`
    (which is also the order of the channels in the output).
    """

    def __init__(self, in_channels: int, branches: Sequence[Branch], conv: ConvFactory) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.branches = nn.ModuleList()
        self.out_channels = 0
        for branch in branches:
            layers, channels = build_layers(in_channels, numbered(branch), conv)
            self.branches.append(nn.Sequential(*layers.values()))
            self.out_channels += channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


class InceptionResidualBlock(InceptionBlock):
    """Residual Inception block (Szegedy et al. 2016b, "Inception-v4, Inception-ResNet and the Impact of
    Residual Connections on Learning", §3.2 and Figures 10-13, 16-19).

    The concatenated branches are brought back to the input width by a linear 1×1 convolution (with
    bias, no batch normalization: BN is used "only on top of the traditional layers, but not on top of
    the summations"), scaled by `scale` (§3.3: "scaling factors between 0.1 and 0.3" keep training
    stable) and added to the input; then a ReLU unless `activate` is False.
    """

    def __init__(
        self,
        channels: int,
        branches: Sequence[Branch],
        conv: ConvFactory,
        scale: float,
        activate: bool = True,
    ) -> None:
        super().__init__(channels, branches, conv)
        self.project = nn.Conv2d(self.out_channels, channels, kernel_size=1)
        self.scale = scale
        self.act = nn.ReLU() if activate else nn.Identity()
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.scale * self.project(super().forward(x)))

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


# The grid-reduction pool of Inception v3, v4 and Inception-ResNet: 3×3/2 max pool, unpadded.
REDUCTION_POOL = Pool("max", 3, stride=2, padding=0)


def expanded_pair(width: int) -> Split:
    """1×3 and 3×1 convolutions side by side on the same input, concatenated: the expanded filter bank
    of Szegedy et al. 2016, Figure 7 (also Inception-v4's Inception-C, Szegedy et al. 2016b, Figure 6)."""
    return Split((Conv(width, (1, 3)), Conv(width, (3, 1))))


def reduction_a(k: int, l: int, m: int, n: int) -> tuple[Branch, ...]:
    """Reduction-A, the 35×35 → 17×17 module of Szegedy et al. 2016b (Figure 7), with the filter
    counts k, l, m, n of its Table 1 (Inception-v4: 192, 224, 256, 384)."""
    return (
        (Conv(n, 3, stride=2, padding=0),),
        (Conv(k), Conv(l, 3), Conv(m, 3, stride=2, padding=0)),
        (REDUCTION_POOL,),
    )


class AuxPool(nn.Module):
    """The auxiliary classifiers' pooling: an average over `kernel_size` windows at `stride` (the
    papers' 5×5/3), then an adaptive average to the fixed `grid` their classifier expects.

    At the papers' input sizes the first gives the grid exactly (14×14 → 4×4 in GoogLeNet, 17×17 →
    5×5 in Inception v3) and the second changes nothing. At other sizes the second adapts, and on
    maps smaller than the window the window is clipped to the map, so the auxiliary classifiers work
    at any input size the network accepts. ``kernel_size=None`` skips the first step.
    """

    def __init__(self, kernel_size: int | None, stride: int, grid: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.grid = grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel_size is not None:
            window = (min(self.kernel_size, x.shape[-2]), min(self.kernel_size, x.shape[-1]))
            x = F.avg_pool2d(x, window, self.stride)
        return F.adaptive_avg_pool2d(x, self.grid)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, grid={self.grid}"


def _conv_output_size(size: int, spec: Conv) -> int:
    """The side of a square map after the square convolution `spec`."""
    if not isinstance(spec.kernel_size, int) or not isinstance(spec.padding, int | None):
        raise ValueError("auxiliary classifier convolutions must be square")
    padding = spec.kernel_size // 2 if spec.padding is None else spec.padding
    return (size + 2 * padding - spec.kernel_size) // spec.stride + 1


class AuxClassifier(nn.Module):
    """An auxiliary classifier on an intermediate feature map (Szegedy et al. 2014, §5; Szegedy et
    al. 2016, §4): pool to a small grid, convolutions, then optionally a hidden fully connected layer
    with ReLU and dropout, and a linear classifier `fc`.

    GoogLeNet's: 5×5/3 average pool (4×4 grid), 1×1 conv with 128 filters, FC 1024 + ReLU, dropout
    0.7, linear. Inception v3's: 5×5/3 average pool (5×5 grid), 1×1 conv 128, 5×5 conv 768 (valid, to
    1×1), linear.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        conv: ConvFactory,
        convs: Sequence[Conv] = (Conv(128),),
        pool_kernel: int | None = 5,
        pool_stride: int = 3,
        grid: int = 4,
        hidden: int = 1024,
        drop_rate: float = 0.7,
    ) -> None:
        super().__init__()
        self.pool = AuxPool(pool_kernel, pool_stride, grid)
        layers, channels = build_layers(in_channels, numbered(convs), conv)
        self.convs = nn.Sequential(*layers.values())
        size = grid
        for spec in convs:
            size = _conv_output_size(size, spec)
        self.in_features = channels * size * size
        if hidden:
            self.hidden: nn.Module = nn.Sequential(
                nn.Linear(self.in_features, hidden), nn.ReLU(), nn.Dropout(drop_rate)
            )
        else:
            self.hidden = nn.Identity()
        self.num_features = hidden or self.in_features
        self.fc = self._make_classifier(num_classes)

    def _make_classifier(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int) -> None:
        self.fc = self._make_classifier(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.hidden(self.convs(self.pool(x)).flatten(1)))


class Renormalize(nn.Module):
    """Re-normalize inputs per channel: x was normalized with (mean, std), the network wants
    (target_mean, target_std): ``x · std / target_std + (mean − target_mean) / target_std``.

    The Inception checkpoints ported from TensorFlow expect pixels scaled to [−1, 1] (mean = std =
    0.5); torchvision's ``transform_input`` converts ImageNet-normalized inputs to that, and so does
    this module with the default arguments. No parameters or buffers: nothing in the state_dict.
    """

    def __init__(
        self,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        target_mean: Sequence[float] = (0.5, 0.5, 0.5),
        target_std: Sequence[float] = (0.5, 0.5, 0.5),
    ) -> None:
        super().__init__()
        self.scale = tuple(s / t for s, t in zip(std, target_std, strict=True))
        self.shift = tuple((m - tm) / t for m, tm, t in zip(mean, target_mean, target_std, strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Plain floats, no buffers: nothing to load, and nothing left behind on another device.
        scale, shift = (x.new_tensor(v).view(1, -1, 1, 1) for v in (self.scale, self.shift))
        return x * scale + shift

    def extra_repr(self) -> str:
        return f"scale={tuple(round(v, 4) for v in self.scale)}, shift={tuple(round(v, 4) for v in self.shift)}"
