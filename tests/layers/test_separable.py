"""Depthwise-separable convolution: the cost of MobileNet eq. 5 against eq. 4, and the factorization
it is (a standard convolution whose kernel is a pointwise matrix times per-channel filters)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dcnn.layers.separable import SeparableConv2d


def mult_adds(model: nn.Module, input_shape: tuple[int, ...], device: str = "meta") -> dict[nn.Module, int]:
    """Mult-adds of every Conv2d and Linear for one input: each weight is used once per output
    location (MobileNet §3.1's cost D_K·D_K·M·N·D_F·D_F for a standard convolution)."""
    costs: dict[nn.Module, int] = {}

    def record(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        locations = output.shape[2] * output.shape[3] if output.dim() == 4 else 1
        costs[module] = costs.get(module, 0) + module.weight.numel() * locations

    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    handles = [m.register_forward_hook(record) for m in layers]
    try:
        with torch.no_grad():
            model(torch.zeros(input_shape, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return costs


@pytest.mark.parametrize(
    ("in_channels", "out_channels", "kernel", "size"), [(32, 64, 3, 112), (512, 512, 3, 14), (16, 24, 5, 9)]
)
def test_cost_ratio_is_one_over_n_plus_one_over_k_squared(in_channels, out_channels, kernel, size):
    with torch.device("meta"):
        separable = SeparableConv2d(in_channels, out_channels, kernel).eval()
        standard = nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False)
    shape = (1, in_channels, size, size)
    separable_cost = sum(mult_adds(separable, shape).values())
    standard_cost = sum(mult_adds(standard, shape).values())
    # eq. 4: D_K²·M·N·D_F²; eq. 5: D_K²·M·D_F² + M·N·D_F²
    assert standard_cost == kernel**2 * in_channels * out_channels * size**2
    assert separable_cost == kernel**2 * in_channels * size**2 + in_channels * out_channels * size**2
    assert separable_cost / standard_cost == pytest.approx(1 / out_channels + 1 / kernel**2, rel=1e-12)
    # The same ratio from the weights alone: each is applied once per location at stride 1.
    separable_weights = separable.depthwise.conv.weight.numel() + separable.pointwise.conv.weight.numel()
    assert separable_weights / standard.weight.numel() == pytest.approx(1 / out_channels + 1 / kernel**2, rel=1e-12)


def test_mobilenet_unit_has_bn_and_relu_after_both_convolutions():
    unit = SeparableConv2d(8, 16, 3, stride=2)
    assert unit.depthwise.conv.groups == 8 and unit.depthwise.conv.weight.shape == (8, 1, 3, 3)
    assert unit.depthwise.conv.stride == (2, 2) and unit.pointwise.conv.stride == (1, 1)
    assert unit.pointwise.conv.weight.shape == (16, 8, 1, 1)
    for part in (unit.depthwise, unit.pointwise):
        assert isinstance(part.bn, nn.BatchNorm2d) and isinstance(part.act, nn.ReLU)
        assert part.conv.bias is None
    assert unit(torch.randn(2, 8, 9, 9)).shape == (2, 16, 5, 5)
    assert unit.out_channels == 16


def test_xception_unit_is_a_standard_conv_with_a_factorized_kernel():
    """With nothing between the two parts (Chollet §4.7), the unit is one convolution whose kernel
    W[n, m] = P[n, m]·D[m]: checked against F.conv2d with that kernel."""
    torch.manual_seed(0)
    unit = SeparableConv2d(6, 10, 3, norm=False, act=None, depthwise_norm=False, depthwise_act=None)
    unit.pointwise.conv.bias.data.zero_()
    depthwise = unit.depthwise.conv.weight  # (M, 1, k, k)
    pointwise = unit.pointwise.conv.weight[:, :, 0, 0]  # (N, M)
    kernel = pointwise[:, :, None, None] * depthwise[None, :, 0]  # (N, M, k, k)
    x = torch.randn(2, 6, 11, 13)
    torch.testing.assert_close(unit(x), F.conv2d(x, kernel, padding=1))


def test_xception_unit_applies_batch_norm_only_after_the_pointwise_convolution():
    unit = SeparableConv2d(6, 10, 3, depthwise_norm=False, depthwise_act=None, act=None)
    assert [name for name, _ in unit.depthwise.named_children()] == ["conv"]
    assert [name for name, _ in unit.pointwise.named_children()] == ["conv", "bn"]
