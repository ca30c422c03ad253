"""Inception modules built from data: channel bookkeeping, branch order, residual scaling, pooling
conventions and the auxiliary classifier, checked against independent computations."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dcnn.layers.conv_bn_act import ConvBnAct
from dcnn.layers.inception import (
    AuxClassifier,
    AuxPool,
    Conv,
    InceptionBlock,
    InceptionResidualBlock,
    Pool,
    Renormalize,
    Residual,
    Stack,
    build,
    expanded_pair,
    reduction_a,
)

PLAIN_CONV = partial(ConvBnAct, norm=False)  # conv + bias + ReLU, as in GoogLeNet
BN_CONV = partial(ConvBnAct, bn_eps=1e-3)

# GoogLeNet's inception (3a), Table 1.
INCEPTION_3A = (
    (Conv(64),),
    (Conv(96), Conv(128, 3)),
    (Conv(16), Conv(32, 5)),
    (Pool("max"), Conv(32)),
)


def test_block_concatenates_branches_in_order():
    torch.manual_seed(0)
    block = InceptionBlock(192, INCEPTION_3A, PLAIN_CONV).eval()
    assert block.out_channels == 64 + 128 + 32 + 32 == 256
    x = torch.randn(1, 192, 7, 9)
    with torch.no_grad():
        y = block(x)
        assert y.shape == (1, 256, 7, 9)
        start = 0
        for branch, width in zip(block.branches, (64, 128, 32, 32), strict=True):
            torch.testing.assert_close(y[:, start : start + width], branch(x))
            start += width


def test_split_is_two_convolutions_side_by_side():
    torch.manual_seed(0)
    split, channels = build(expanded_pair(5), 4, PLAIN_CONV)
    assert channels == 10
    one_by_three, three_by_one = (branch[0].conv for branch in split.branches)
    assert one_by_three.kernel_size == (1, 3) and one_by_three.padding == (0, 1)
    assert three_by_one.kernel_size == (3, 1) and three_by_one.padding == (1, 0)
    x = torch.randn(2, 4, 6, 6)
    expected = torch.cat([F.relu(one_by_three(x)), F.relu(three_by_one(x))], dim=1)
    torch.testing.assert_close(split(x), expected)


@pytest.mark.parametrize("activate", [True, False])
def test_residual_block_adds_the_scaled_projection(activate):
    torch.manual_seed(0)
    branches = ((Conv(3),), (Conv(2), Conv(4, 3)))
    block = InceptionResidualBlock(6, branches, PLAIN_CONV, scale=0.17, activate=activate)
    assert block.project.in_channels == 7 and block.project.out_channels == 6 == block.out_channels
    assert block.project.bias is not None  # linear 1×1 with bias, no batch normalization
    x = torch.randn(2, 6, 5, 5)
    mixed = torch.cat([branch(x) for branch in block.branches], dim=1)
    summed = x + 0.17 * F.conv2d(mixed, block.project.weight, block.project.bias)
    torch.testing.assert_close(block(x), F.relu(summed) if activate else summed)
    if not activate:
        assert (block(x) < 0).any()


def test_residual_block_with_zero_projection_is_relu_of_input():
    block = InceptionResidualBlock(4, ((Conv(2),),), PLAIN_CONV, scale=0.1)
    nn.init.zeros_(block.project.weight)
    nn.init.zeros_(block.project.bias)
    x = torch.randn(1, 4, 3, 3)
    torch.testing.assert_close(block(x), x.clamp(min=0))


def test_average_pool_padding_conventions():
    ones = torch.ones(1, 1, 4, 4)
    excluded, _ = build(Pool("avg", 3, count_include_pad=False), 1, PLAIN_CONV)
    included, _ = build(Pool("avg", 3), 1, PLAIN_CONV)
    assert torch.equal(excluded(ones), ones)  # TensorFlow "SAME": the mean of the pixels inside
    # Caffe/PyTorch default: a corner window holds 4 pixels and 5 zeros of padding.
    assert included(ones)[0, 0, 0, 0].item() == pytest.approx(4 / 9)
    assert included(ones)[0, 0, 1, 1].item() == pytest.approx(1.0)


def test_reduction_a_halves_the_grid_and_adds_n_and_m_to_the_input():
    with torch.device("meta"):
        block, channels = build(reduction_a(k=192, l=224, m=256, n=384), 384, BN_CONV)
        assert channels == 384 + 256 + 384  # conv n, conv m, pass-through max pool: Inception-v4's 1024
        assert block(torch.empty(1, 384, 35, 35)).shape == (1, 1024, 17, 17)


def test_stack_chains_layers_and_channels():
    stack, channels = build(Stack((Conv(8, 3), Residual(((Conv(4),),), 0.2), Pool("max", 2, 2, 0))), 3, BN_CONV)
    assert isinstance(stack, nn.Sequential) and len(stack) == 3 and channels == 8
    assert stack(torch.randn(2, 3, 6, 6)).shape == (2, 8, 3, 3)


def test_aux_pool_is_the_papers_window_at_the_design_size():
    x = torch.randn(1, 2, 14, 14)
    pooled = AuxPool(5, 3, 4)(x)
    assert pooled.shape == (1, 2, 4, 4)
    for i in range(4):
        for j in range(4):
            window = x[0, :, 3 * i : 3 * i + 5, 3 * j : 3 * j + 5]
            torch.testing.assert_close(pooled[0, :, i, j], window.mean(dim=(1, 2)))


def test_aux_pool_clips_the_window_on_small_maps():
    x = torch.randn(1, 2, 3, 3)
    pooled = AuxPool(5, 3, 4)(x)  # a 3×3 window → 1×1 → spread over the 4×4 grid
    expected = x.mean(dim=(2, 3), keepdim=True).expand(1, 2, 4, 4)
    torch.testing.assert_close(pooled, expected)


def test_aux_classifier_shapes_of_googlenet_and_inception_v3():
    googlenet_aux = AuxClassifier(512, 10, PLAIN_CONV)
    assert googlenet_aux.in_features == 128 * 4 * 4 == googlenet_aux.hidden[0].in_features
    assert googlenet_aux.hidden[2].p == 0.7
    v3_aux = AuxClassifier(768, 10, BN_CONV, convs=(Conv(128), Conv(768, 5, padding=0)), grid=5, hidden=0)
    assert v3_aux.in_features == 768 and v3_aux.fc.in_features == 768
    for aux, channels, size in ((googlenet_aux, 512, 14), (v3_aux, 768, 17)):
        assert aux.train()(torch.randn(2, channels, size, size)).shape == (2, 10)
    v3_aux.reset(3)
    assert v3_aux.fc.out_features == 3


def test_renormalize_maps_imagenet_normalization_to_minus_one_one():
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    pixels = torch.rand(2, 3, 4, 4)
    imagenet = (pixels - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    module = Renormalize()
    torch.testing.assert_close(module(imagenet), (pixels - 0.5) / 0.5)
    assert module.state_dict() == {}
