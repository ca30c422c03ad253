"""LeNet-5 (LeCun, Bottou, Bengio & Haffner 1998, "Gradient-Based Learning Applied to Document
Recognition", section II.B), faithful, and the modern variant that most courses call LeNet-5.

`lenet5` follows the paper layer by layer:

=====  =====================================================  ==========================
layer  what                                                   trainable parameters
=====  =====================================================  ==========================
C1     6 maps, 5×5 conv on the 32×32 input                    156
S2     2×2 sum × trainable coefficient + trainable bias       12
C3     16 maps, 5×5 conv, partial connections of Table I       1,516
S4     as S2 on 16 maps                                       32
C5     120 maps, 5×5 conv (1×1 output on a 32×32 input)       48,120
F6     84 units, fully connected                              10,164
out    Euclidean RBF units with fixed ±1 codes (eq. 7)        0 (fixed, Appendix: "kept fixed")
=====  =====================================================  ==========================

Every layer up to F6 is followed by the scaled tanh f(a) = 1.7159·tanh(2a/3) (eq. 6 and Appendix A);
weights start uniform in ±2.4/F_i with F_i the fan-in (Appendix A). The paper's input normalization
maps the white background to -0.1 and the ink to 1.175 (section II.A): that is our mean and std.

Deviations, stated:
- The RBF units output y_i = Σ_j (x_j − w_ij)²; we return logits −y_i so that cross entropy applies.
  Cross entropy on −y is the paper's MAP criterion (eq. 9) with its "rubbish class" constant j → ∞.
- The paper draws its RBF codes as 7×12 bitmaps of the ASCII characters; we draw the ten digits on
  the same 7×12 grid (``DIGIT_BITMAPS``). For a class count other than 10 the codes are ±1 vectors
  drawn at random with a fixed seed.
- Training used stochastic diagonal Levenberg-Marquardt; our recipes use standard optimizers.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from dcnn.layers.activations import ScaledTanh, get_act
from dcnn.layers.conv import WholeMapConv2d
from dcnn.layers.head import check_head_type
from dcnn.layers.pooling import GlobalPool2d
from dcnn.models._base import ImageClassifier
from dcnn.models._registry import MNIST_MEAN, MNIST_STD, ModelCfg, register_model

# Table I: which S2 maps (rows 0-5) each C3 map (columns 0-15) reads. Six maps read three
# contiguous maps, six read four contiguous, three read four non-contiguous, one reads all six.
C3_CONNECTIONS: tuple[tuple[int, ...], ...] = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)  # fmt: skip

# The ten digits drawn on the paper's 7×12 grid (84 = F6's width): '#' is +1, '.' is -1.
DIGIT_BITMAPS: tuple[str, ...] = (
    ".#####.|##...##|##...##|##...##|##...##|##...##|##...##|##...##|##...##|##...##|.#####.|.......",
    "...##..|..###..|.####..|...##..|...##..|...##..|...##..|...##..|...##..|...##..|.######|.......",
    ".#####.|##...##|.....##|.....##|....##.|...##..|..##...|.##....|##.....|##.....|#######|.......",
    ".#####.|##...##|.....##|.....##|..####.|.....##|.....##|.....##|.....##|##...##|.#####.|.......",
    "....##.|...###.|..####.|.##.##.|##..##.|##..##.|#######|....##.|....##.|....##.|...####|.......",
    "#######|##.....|##.....|##.....|######.|.....##|.....##|.....##|.....##|##...##|.#####.|.......",
    "..####.|.##....|##.....|##.....|######.|##...##|##...##|##...##|##...##|##...##|.#####.|.......",
    "#######|.....##|.....##|....##.|...##..|..##...|..##...|..##...|..##...|..##...|..##...|.......",
    ".#####.|##...##|##...##|##...##|.#####.|##...##|##...##|##...##|##...##|##...##|.#####.|.......",
    ".#####.|##...##|##...##|##...##|##...##|.######|.....##|.....##|.....##|....##.|.####..|.......",
)
F6_UNITS = 84
PAPER_MAPS = (6, 16, 120)  # feature maps of C1, C3, C5


def rbf_codes(num_classes: int) -> torch.Tensor:
    """The fixed ±1 target codes of the RBF output layer, (num_classes, 84)."""
    if num_classes == len(DIGIT_BITMAPS):
        rows = [[1.0 if c == "#" else -1.0 for c in bitmap.replace("|", "")] for bitmap in DIGIT_BITMAPS]
        return torch.tensor(rows)
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 2, (num_classes, F6_UNITS), generator=gen).float() * 2 - 1


class TrainableSubsampling(nn.Module):
    """S2/S4: each unit adds a 2×2 block of its map, multiplies by the map's trainable coefficient and
    adds the map's trainable bias (section II.B): 2 parameters per map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels))
        self.bias = nn.Parameter(torch.empty(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The block sum as 4 × the block mean: bitwise the same (dividing and multiplying by a power of two
        # is exact in binary floating point, short of subnormal sums), and plain average pooling, which every
        # exporter and runtime translates (torch's ONNX exporter drops avg_pool2d's divisor_override).
        block_sum = F.avg_pool2d(x, 2) * 4
        return block_sum * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class PartiallyConnectedConv(nn.Module):
    """C3: a 5×5 convolution in which output map j reads only the input maps `connections[j]`.

    Only the connected kernels are parameters (1,500 weights + 16 biases for Table I), stored in
    (output map, input map) order; they are scattered into a dense kernel, zeros elsewhere, for one
    fast convolution.
    """

    def __init__(self, connections: tuple[tuple[int, ...], ...], in_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.connections = tuple(tuple(sorted(in_maps)) for in_maps in connections)
        self.in_channels = in_channels
        self.kernel_size = kernel_size
        num_kernels = sum(len(in_maps) for in_maps in connections)
        self.weight = nn.Parameter(torch.empty(num_kernels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(len(connections)))

    def reset_parameters(self) -> None:
        """Appendix A: uniform in ±2.4/F_i, where a C3 unit's fan-in F_i depends on how many maps it reads."""
        fan_in = [len(in_maps) * self.kernel_size**2 for in_maps in self.connections for _ in in_maps]
        bound = 2.4 / torch.tensor(fan_in, dtype=self.weight.dtype, device=self.weight.device).view(-1, 1, 1)
        with torch.no_grad():
            self.weight.uniform_(-1, 1).mul_(bound)
            self.bias.zero_()

    def dense_weight(self) -> torch.Tensor:
        pairs = [(out_map, in_map) for out_map, in_maps in enumerate(self.connections) for in_map in in_maps]
        rows, cols = torch.tensor(pairs, device=self.weight.device).unbind(1)
        dense = self.weight.new_zeros(len(self.connections), self.in_channels, self.kernel_size, self.kernel_size)
        return dense.index_put((rows, cols), self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.dense_weight(), self.bias)

    def to_conv2d(self) -> nn.Conv2d:
        """An ordinary convolution computing the same function (the unconnected kernels zero), for inference:
        its dense kernel is built once instead of at every call."""
        conv = nn.Conv2d(self.in_channels, len(self.connections), self.kernel_size, device=self.weight.device,
                         dtype=self.weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(self.dense_weight())
            conv.bias.copy_(self.bias)
        return conv


class EuclideanRBF(nn.Module):
    """Output layer: y_i = Σ_j (x_j − w_ij)² with fixed codes w (eq. 7); returns logits −scale·y.

    `scale` < 1 softens the softmax over the penalties (a temperature): the squared distances reach
    hundreds, which the paper's second-order optimizer tolerates and plain SGD does not."""

    def __init__(self, num_classes: int, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale
        self.register_buffer("codes", rbf_codes(num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -self.scale * (x.unsqueeze(1) - self.codes).pow(2).sum(dim=-1)


class LeNet5(ImageClassifier):
    """LeNet-5. `faithful=True` is the 1998 network above; `faithful=False` the modern variant:
    full C3, ReLU (or `act`), 2×2 max pooling, 28×28 input padded by C1, a linear output layer.
    `batch_norm` (modern variant only) normalizes C1, C3 and C5 before their activations
    (Ioffe & Szegedy 2015), which allows far larger learning rates. `pool_first` (modern variant
    only) max-pools C1 and C3 before their normalization and activation: without batch norm the
    network computes the same function (max pooling commutes with a monotonic activation), with it
    batch norm sees the pooled maps; either way 4× fewer values pass through both, the cheaper order
    that fast CPU/GPU training recipes use. `maps` (modern variant only) sets the number of C1, C3 and
    C5 feature maps, the paper's (6, 16, 120) by default."""

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 1,
        faithful: bool = True,
        act: str | None = None,
        head: str = "fc",
        drop_rate: float = 0.0,
        batch_norm: bool = False,
        pool_first: bool = False,
        maps: tuple[int, int, int] = PAPER_MAPS,
        rbf_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if faithful and batch_norm:
            raise ValueError("batch_norm is an option of lenet5_modern; the 1998 network has no normalization")
        if faithful and pool_first:
            raise ValueError("pool_first is an option of lenet5_modern; the 1998 network subsamples after its "
                             "activations (S2, S4)")
        if not faithful and rbf_scale != 1.0:
            raise ValueError("rbf_scale is an option of lenet5; the modern variant has a linear output, no RBF layer")
        maps = tuple(maps)
        if faithful and maps != PAPER_MAPS:
            raise ValueError(f"maps is an option of lenet5_modern; the 1998 network has {PAPER_MAPS} maps "
                             "(Table I connects C3 to exactly 6 S2 maps)")
        if len(maps) != 3 or min(maps) < 1:
            raise ValueError(f"maps must be three positive counts (C1, C3, C5), got {maps}")
        self.num_classes, self.in_chans, self.num_features = num_classes, in_chans, F6_UNITS
        self.faithful = faithful
        self.rbf_scale = rbf_scale
        self.head_type = check_head_type(head)
        act_layer = get_act(act) if act else (ScaledTanh if faithful else nn.ReLU)

        def pool(channels: int) -> nn.Module:
            return TrainableSubsampling(channels) if faithful else nn.MaxPool2d(2)

        def conv_stage(index: int, conv: nn.Module, channels: int) -> None:
            """C1+S2 or C3+S4: conv, [bn], activation, pooling (pool_first: conv, pooling, [bn], activation)."""
            c, s = f"c{index}", f"s{index + 1}"
            layers = [(c, conv)] + ([(s, pool(channels))] if pool_first else [])
            if batch_norm:
                layers.append((f"bn{index}", nn.BatchNorm2d(channels)))
            layers.append((f"act{index}", act_layer()))
            if not pool_first:
                layers.append((s, pool(channels)))
            layers.append((f"act{index + 1}", act_layer() if faithful else nn.Identity()))
            for name, module in layers:
                self.features.add_module(name, module)

        c1_maps, c3_maps, c5_maps = maps
        self.features = nn.Sequential()
        conv_stage(1, nn.Conv2d(in_chans, c1_maps, 5, padding=0 if faithful else 2), c1_maps)
        c3 = PartiallyConnectedConv(C3_CONNECTIONS, 6, 5) if faithful else nn.Conv2d(c1_maps, c3_maps, 5)
        conv_stage(3, c3, c3_maps)
        self.features.add_module("c5", WholeMapConv2d(c3_maps, c5_maps, 5))
        if batch_norm:
            self.features.add_module("bn5", nn.BatchNorm2d(c5_maps))
        self.features.add_module("act5", act_layer())

        self.global_pool = GlobalPool2d("avg", flatten=head == "fc")
        self.f6 = nn.Linear(c5_maps, F6_UNITS) if head == "fc" else nn.Conv2d(c5_maps, F6_UNITS, 1)
        self.act6 = act_layer()
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.output = self._make_output(num_classes)
        self._init_weights()

    def _make_output(self, num_classes: int) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        if self.faithful:
            return EuclideanRBF(num_classes, self.rbf_scale)
        if self.head_type == "conv":
            return nn.Conv2d(F6_UNITS, num_classes, 1)
        return nn.Linear(F6_UNITS, num_classes)

    def _init_weights(self) -> None:
        """Appendix A: weights uniform in ±2.4/F_i (F_i = the unit's fan-in); biases zero."""
        if not self.faithful:
            return  # the modern variant keeps PyTorch's default (Kaiming-uniform) initialization
        for module in self.modules():
            if isinstance(module, PartiallyConnectedConv):
                module.reset_parameters()
                continue
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
            elif isinstance(module, TrainableSubsampling):
                fan_in = 4
            else:
                continue
            nn.init.uniform_(module.weight, -2.4 / fan_in, 2.4 / fan_in)
            nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.head_type == "fc":
            x = self.drop(self.act6(self.f6(self.global_pool(x))))
            return x if pre_logits else self.output(x)
        x = self.drop(self.act6(self.f6(x)))
        if pre_logits:
            return x.mean(dim=(2, 3))
        if isinstance(self.output, EuclideanRBF):  # the RBF layer at every location, as a 1×1 "conv"
            n, c, h, w = x.shape
            x = self.output(x.permute(0, 2, 3, 1).reshape(-1, c)).reshape(n, h, w, -1).permute(0, 3, 1, 2)
        else:
            x = self.output(x)
        return x.mean(dim=(2, 3))

    def get_classifier(self) -> nn.Module:
        return self.output

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.output = self._make_output(num_classes)


# The paper's normalization (section II.A): background (0) → -0.1, ink (1) → 1.175.
PAPER_MEAN, PAPER_STD = (0.1 / 1.275,), (1 / 1.275,)


@register_model(
    ModelCfg(
        paper="LeCun et al. 1998, Gradient-Based Learning Applied to Document Recognition",
        year=1998,
        num_params=156 + 12 + 1516 + 32 + 48120 + 10164,
        num_params_source="paper section II.B, per layer",
        input_size=(1, 32, 32),
        min_input_size=(1, 32, 32),
        num_classes=10,
        mean=PAPER_MEAN,
        std=PAPER_STD,
        first_conv="features.c1",
        classifier=("output",),
    )
)
def lenet5(
    num_classes: int = 10, in_chans: int = 1, act: str | None = None, head: str = "fc", drop_rate: float = 0.0,
    rbf_scale: float = 1.0, batch_norm: bool = False, pool_first: bool = False, maps: tuple[int, int, int] = PAPER_MAPS,
) -> LeNet5:
    """LeNet-5 as published: scaled tanh, trainable subsampling, C3 partial connections, RBF output.
    (batch_norm, pool_first and maps are listed so that asking for them says why they do not apply.)"""
    return LeNet5(num_classes, in_chans, True, act, head, drop_rate, batch_norm, pool_first, maps, rbf_scale)


@register_model(
    ModelCfg(
        paper="LeCun et al. 1998 (modern variant: ReLU, max pooling, full C3, linear output)",
        year=1998,
        num_params=156 + 2416 + 48120 + 10164 + 850,
        num_params_source="computed; the variant is not in the paper",
        input_size=(1, 28, 28),
        min_input_size=(1, 28, 28),
        num_classes=10,
        mean=MNIST_MEAN,
        std=MNIST_STD,
        first_conv="features.c1",
        classifier=("output",),
    )
)
def lenet5_modern(
    num_classes: int = 10, in_chans: int = 1, act: str | None = None, head: str = "fc", drop_rate: float = 0.0,
    batch_norm: bool = False, pool_first: bool = False, maps: tuple[int, int, int] = PAPER_MAPS,
    rbf_scale: float = 1.0,
) -> LeNet5:
    """The LeNet-5 of today's courses: ReLU, max pooling, every C3 map reads all S2 maps, softmax output.
    (rbf_scale is listed so that asking for it says why it does not apply.)"""
    return LeNet5(num_classes, in_chans, False, act, head, drop_rate, batch_norm, pool_first, maps, rbf_scale)
