"""MobileNet v2's inverted residual: the cost formula of §3.3, the linear bottleneck and when the
shortcut is there."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from dcnn.layers.inverted_residual import InvertedResidual
from tests.layers.test_separable import mult_adds


@pytest.mark.parametrize(
    ("d_in", "d_out", "t", "k", "size"), [(24, 24, 6, 3, 56), (64, 96, 6, 3, 14), (16, 8, 3, 5, 7)]
)
def test_cost_is_h_w_d_t_times_d_plus_k2_plus_d_out(d_in, d_out, t, k, size):
    with torch.device("meta"):
        block = InvertedResidual(d_in, d_out, stride=1, expand_ratio=t, kernel_size=k).eval()
    cost = sum(mult_adds(block, (1, d_in, size, size)).values())
    assert cost == size * size * d_in * t * (d_in + k * k + d_out)  # §3.3


def test_shape_and_structure():
    block = InvertedResidual(24, 32, stride=2, expand_ratio=6)
    assert block.expand.conv.weight.shape == (144, 24, 1, 1) and isinstance(block.expand.act, nn.ReLU6)
    assert block.depthwise.conv.weight.shape == (144, 1, 3, 3) and block.depthwise.conv.stride == (2, 2)
    assert isinstance(block.depthwise.act, nn.ReLU6)
    assert block.project.conv.weight.shape == (32, 144, 1, 1)
    assert not hasattr(block.project, "act")  # linear bottleneck (§3.2)
    assert block(torch.randn(2, 24, 15, 15)).shape == (2, 32, 8, 8)


def test_no_expansion_when_ratio_is_one():
    block = InvertedResidual(32, 16, expand_ratio=1)
    assert isinstance(block.expand, nn.Identity)
    assert block.depthwise.conv.weight.shape == (32, 1, 3, 3)
    assert sum(p.numel() for p in block.parameters()) == 32 * 9 + 2 * 32 + 32 * 16 + 2 * 16


@pytest.mark.parametrize(
    ("d_in", "d_out", "stride", "residual"), [(24, 24, 1, True), (24, 24, 2, False), (24, 32, 1, False)]
)
def test_shortcut_only_at_stride_one_with_equal_widths(d_in, d_out, stride, residual):
    """With the projection's BN zeroed the residual branch outputs 0: the block is then the identity
    when it has a shortcut, and zero when it does not."""
    block = InvertedResidual(d_in, d_out, stride=stride).eval()
    nn.init.zeros_(block.project.bn.weight)
    nn.init.zeros_(block.project.bn.bias)
    x = torch.randn(2, d_in, 8, 8)
    with torch.no_grad():
        out = block(x)
    assert block.use_residual is residual
    torch.testing.assert_close(out, x if residual else torch.zeros_like(out))


def test_projection_output_can_be_negative():
    """No ReLU after the projection (§3.2): outputs take both signs."""
    torch.manual_seed(0)
    block = InvertedResidual(8, 16, stride=1).eval()
    with torch.no_grad():
        out = block(torch.randn(2, 8, 6, 6))
    assert (out < 0).any() and (out > 0).any()


def test_bad_stride_is_a_clear_error():
    with pytest.raises(ValueError, match="stride must be 1 or 2"):
        InvertedResidual(8, 8, stride=3)
