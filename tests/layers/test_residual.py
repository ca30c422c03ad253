"""Residual blocks: shortcut options, the plain switch, stride placement, groups, and both orders of
operations checked against an independent functional computation."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dcnn.errors import DcnnError
from dcnn.layers.residual import (
    PreActResidualBlock,
    ResidualBlock,
    ZeroPadShortcut,
    make_shortcut,
)


def count_params(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def randomize_bn(module: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial statistics and affine parameters."""
    gen = torch.Generator().manual_seed(seed)
    for bn in module.modules():
        if isinstance(bn, nn.BatchNorm2d):
            n = bn.num_features
            bn.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
            bn.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            bn.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            bn.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)


def bn_eval(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    """Inference-mode batch norm written out: (x - mean) / sqrt(var + eps) * gamma + beta."""
    shape = (1, -1, 1, 1)
    normalized = (x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps)
    return normalized * bn.weight.view(shape) + bn.bias.view(shape)


# --- option A ---------------------------------------------------------------------------------------------


def test_option_a_is_the_subsampled_identity_with_zero_channels_appended():
    shortcut = make_shortcut("A", 2, 4, stride=2)
    assert isinstance(shortcut, ZeroPadShortcut)
    assert count_params(shortcut) == 0
    x = torch.arange(32.0).reshape(1, 2, 4, 4)
    expected = torch.tensor(
        [[[[0.0, 2.0], [8.0, 10.0]], [[16.0, 18.0], [24.0, 26.0]], [[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]]
    )
    assert torch.equal(shortcut(x), expected)


def test_option_a_matches_the_strided_conv_grid_on_odd_sizes():
    block = ResidualBlock(4, 8, stride=2, shortcut="A").eval()
    x = torch.randn(1, 4, 7, 7)
    assert block(x).shape == (1, 8, 4, 4)
    assert torch.equal(block.shortcut(x)[:, :4], x[:, :, ::2, ::2])


def test_option_a_adds_no_parameters_to_a_block():
    with_a = ResidualBlock(16, 32, stride=2, shortcut="A")
    plain = ResidualBlock(16, 32, stride=2, shortcut=None)
    # two 3×3 convs with BN: 16·32·9 + 2·32 + 32·32·9 + 2·32
    assert count_params(with_a) == count_params(plain) == 4608 + 64 + 9216 + 64


def test_option_a_cannot_remove_channels():
    with pytest.raises(DcnnError, match="option 'B'"):
        make_shortcut("A", 64, 32, stride=1)


# --- options B, C, none ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "in_channels", "out_channels", "stride", "expected_params"),
    [
        ("A", 8, 8, 1, 0),
        ("B", 8, 8, 1, 0),  # same shape: identity
        ("B", 8, 16, 1, 8 * 16 + 2 * 16),  # 1×1 conv + BN
        ("B", 8, 8, 2, 8 * 8 + 2 * 8),
        ("C", 8, 8, 1, 8 * 8 + 2 * 8),  # projection everywhere
    ],
)
def test_shortcut_options(option, in_channels, out_channels, stride, expected_params):
    shortcut = make_shortcut(option, in_channels, out_channels, stride)
    assert count_params(shortcut) == expected_params
    x = torch.randn(1, in_channels, 6, 6)
    assert shortcut.eval()(x).shape == (1, out_channels, 6 // stride, 6 // stride)
    if expected_params == 0 and in_channels == out_channels and stride == 1:
        assert torch.equal(shortcut(x), x)


def test_pre_activation_projections_have_no_bn():
    assert count_params(make_shortcut("B", 8, 16, 2, norm=False)) == 8 * 16


def test_no_shortcut_and_unknown_option():
    assert make_shortcut(None, 8, 16, 2) is None
    with pytest.raises(DcnnError, match="unknown shortcut option 'D'"):
        make_shortcut("D", 8, 16, 2)


# --- post-activation blocks ----------------------------------------------------------------------------------


def test_post_activation_basic_block_matches_the_functional_computation():
    torch.manual_seed(0)
    block = ResidualBlock(4, 8, stride=2, kind="basic", shortcut="B").eval()
    randomize_bn(block)
    x = torch.randn(2, 4, 9, 9)
    conv1, conv2, proj = block.residual.conv1, block.residual.conv2, block.shortcut
    h = F.relu(bn_eval(F.conv2d(x, conv1.conv.weight, stride=2, padding=1), conv1.bn))
    h = bn_eval(F.conv2d(h, conv2.conv.weight, padding=1), conv2.bn)
    s = bn_eval(F.conv2d(x, proj.conv.weight, stride=2), proj.bn)
    with torch.no_grad():
        torch.testing.assert_close(block(x), F.relu(h + s))


def test_plain_block_drops_only_the_shortcut():
    torch.manual_seed(0)
    residual = ResidualBlock(8, 8, shortcut="B").eval()
    plain = ResidualBlock(8, 8, shortcut=None).eval()
    plain.load_state_dict(residual.state_dict())  # identity shortcut: the same parameters
    randomize_bn(residual)
    randomize_bn(plain)
    x = torch.randn(1, 8, 5, 5)
    with torch.no_grad():
        f = residual.residual(x)
        torch.testing.assert_close(plain(x), F.relu(f))
        torch.testing.assert_close(residual(x), F.relu(f + x))
        assert not torch.allclose(plain(x), residual(x))


@pytest.mark.parametrize(("where", "strided"), [("1x1", "conv1"), ("3x3", "conv2")])
def test_bottleneck_stride_placement(where, strided):
    block = ResidualBlock(64, 256, stride=2, kind="bottleneck", bottleneck_stride=where)
    strides = {name: unit.conv.stride for name, unit in block.residual.named_children()}
    assert strides == {"conv1": (1, 1), "conv2": (1, 1), "conv3": (1, 1), strided: (2, 2)}
    assert [unit.conv.kernel_size for unit in block.residual] == [(1, 1), (3, 3), (1, 1)]
    assert block(torch.randn(1, 64, 8, 8)).shape == (1, 256, 4, 4)


def test_bottleneck_stride_placement_changes_the_function_not_the_parameters():
    torch.manual_seed(0)
    paper = ResidualBlock(16, 64, stride=2, kind="bottleneck", bottleneck_stride="1x1").eval()
    v15 = ResidualBlock(16, 64, stride=2, kind="bottleneck", bottleneck_stride="3x3").eval()
    v15.load_state_dict(paper.state_dict())
    x = torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        assert not torch.allclose(paper(x), v15(x))


def test_grouped_bottleneck():
    # ResNeXt-50 32×4d, conv2 (Xie et al. 2017, Table 1): 1×1 128, 3×3 128 with C = 32, 1×1 256.
    block = ResidualBlock(64, 256, kind="bottleneck", width=128, groups=32)
    conv2 = block.residual.conv2.conv
    assert conv2.groups == 32 and conv2.weight.shape == (128, 4, 3, 3)
    assert block.residual.conv1.conv.out_channels == 128
    with pytest.raises(DcnnError, match="not divisible by groups=32"):
        ResidualBlock(64, 256, kind="bottleneck", width=100, groups=32)
    with pytest.raises(DcnnError, match="need kind='bottleneck'"):
        ResidualBlock(64, 64, kind="basic", groups=32)
    with pytest.raises(DcnnError, match="unknown residual block"):
        ResidualBlock(64, 64, kind="triple")


# --- pre-activation blocks -------------------------------------------------------------------------------------


def test_pre_activation_bottleneck_matches_the_functional_computation():
    """He et al. 2016b, Fig. 4e; the projection sees the pre-activated input (resnet-1k-layers)."""
    torch.manual_seed(0)
    block = PreActResidualBlock(8, 32, stride=2, kind="bottleneck", shortcut="B").eval()
    randomize_bn(block)
    x = torch.randn(2, 8, 7, 7)
    r = block.residual
    a = F.relu(bn_eval(x, block.preact.bn))
    h = F.conv2d(a, r.conv1.weight, stride=2)
    h = F.conv2d(F.relu(bn_eval(h, r.conv2.bn)), r.conv2.conv.weight, padding=1)
    h = F.conv2d(F.relu(bn_eval(h, r.conv3.bn)), r.conv3.conv.weight)
    s = F.conv2d(a, block.shortcut.conv.weight, stride=2)
    with torch.no_grad():
        torch.testing.assert_close(block(x), h + s)


def test_pre_activation_identity_shortcut_carries_the_raw_input():
    torch.manual_seed(0)
    block = PreActResidualBlock(8, 8, shortcut="B").eval()
    randomize_bn(block)
    x = torch.randn(1, 8, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(block(x), block.residual(block.preact(x)) + x)


def test_zero_residual_is_the_identity_only_with_pre_activation():
    """2016b, Eq. 3-4: with F = 0 a pre-activation block passes x unchanged, negative values included;
    the post-activation block's ReLU after the addition clips them."""
    x = torch.randn(2, 8, 5, 5)
    pre = nn.Sequential(*(PreActResidualBlock(8, 8, shortcut="B") for _ in range(3))).eval()
    post = ResidualBlock(8, 8, shortcut="B").eval()
    with torch.no_grad():
        for block in pre:
            block.residual.conv2.conv.weight.zero_()
        post.residual.conv2.bn.weight.zero_()
        post.residual.conv2.bn.bias.zero_()
        assert torch.equal(pre(x), x)
        assert torch.equal(post(x), F.relu(x))
        assert not torch.equal(post(x), x)


def test_first_block_after_an_activated_stem_has_no_pre_activation():
    block = PreActResidualBlock(16, 64, kind="bottleneck", preactivate=False).eval()
    assert isinstance(block.preact, nn.Identity)
    x = torch.randn(1, 16, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(block(x), block.residual(x) + block.shortcut(x))


def test_pre_activation_units_are_bn_relu_conv_with_dropout_between_convs():
    block = PreActResidualBlock(8, 8, drop_rate=0.5)
    assert list(block.preact._modules) == ["bn", "act"]
    assert isinstance(block.residual.conv1, nn.Conv2d)
    conv2 = block.residual.conv2
    assert [type(m) for m in conv2] == [nn.BatchNorm2d, nn.ReLU, nn.Dropout, nn.Conv2d]
    assert conv2.drop.p == 0.5
    x = torch.randn(2, 8, 6, 6)
    block.train()
    torch.manual_seed(0)
    first = block(x)
    assert not torch.equal(first, block(x))
    block.eval()
    with torch.no_grad():
        assert torch.equal(block(x), block(x))
