"""Pre-activation ResNets (He et al. 2016b): the paper's parameter figures, BN-ReLU-conv order, the
first and last activations, 9n+2 depths and the identity path of Eq. 4."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from dcnn.layers.bn_act_conv import BnActConv
from dcnn.layers.residual import PreActResidualBlock
from dcnn.models import create_model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_params_without_bn(model: nn.Module) -> int:
    bn = sum(count_params(m) for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    return count_params(model) - bn


def meta_model(name: str, **options) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **options).eval()


@pytest.mark.parametrize(("name", "figure"), [("preact_resnet110", "1.7M"), ("preact_resnet164", "1.7M")])
def test_parameter_counts_round_to_table4(name, figure):
    model = meta_model(name)
    assert f"{count_params(model) / 1e6:.1f}M" == figure
    assert f"{count_params_without_bn(model) / 1e6:.1f}M" == figure


def test_resnet1001_figure_counts_the_weights_without_bn():
    """Table 4 gives 10.2M for ResNet-1001: the conv and fc weights (10.18M); with the BN scales and
    shifts the exact count is 10.33M."""
    model = meta_model("preact_resnet1001")
    assert f"{count_params_without_bn(model) / 1e6:.1f}M" == "10.2M"
    assert count_params(model) == 10_327_706


@pytest.mark.parametrize(("name", "depth", "layers_per_block"), [
    ("preact_resnet110", 110, 2), ("preact_resnet164", 164, 3), ("preact_resnet1001", 1001, 3),
    ("preact_resnet152", 152, 3), ("preact_resnet200", 200, 3),
])
def test_depth_counts_the_weighted_layers(name, depth, layers_per_block):
    model = meta_model(name)
    blocks = [block for stage in model.stages for block in stage]
    assert all(isinstance(block, PreActResidualBlock) for block in blocks)
    assert 2 + layers_per_block * len(blocks) == depth
    main_path = [m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and ".shortcut" not in n]
    assert len(main_path) == depth


def test_cifar_bottleneck_widths():
    """resnet-1k-layers: stages of 16→64, 32→128, 64→256 bottlenecks after a 16-filter conv."""
    model = meta_model("preact_resnet164")
    assert model.stem.conv.out_channels == 16
    assert [(s[0].residual.conv1.out_channels, s[0].residual.conv3.conv.out_channels) for s in model.stages] == [
        (16, 64), (32, 128), (64, 256)
    ]
    assert model.num_features == 256


@pytest.mark.parametrize("name", ["preact_resnet18", "preact_resnet50", "preact_resnet164", "preact_resnet110"])
def test_bn_relu_conv_order_and_the_first_and_last_activations(name):
    model = meta_model(name)
    blocks = [block for stage in model.stages for block in stage]
    # §4: the first activation follows the first conv (the stem's BN-ReLU) and serves both paths ...
    assert [type(m) for m in model.stem][:3] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert isinstance(blocks[0].preact, nn.Identity)
    # ... every other unit starts with BN-ReLU, and each later conv is preceded by BN-ReLU (Fig. 4e) ...
    for block in blocks[1:]:
        assert [type(m) for m in block.preact] == [nn.BatchNorm2d, nn.ReLU]
    for block in blocks:
        assert isinstance(block.residual.conv1, nn.Conv2d)
        for unit in list(block.residual)[1:]:
            assert isinstance(unit, BnActConv) and [type(m) for m in unit] == [nn.BatchNorm2d, nn.ReLU, nn.Conv2d]
    # ... and an extra BN-ReLU follows the last addition, before pooling.
    assert [type(m) for m in model.final_act] == [nn.BatchNorm2d, nn.ReLU]


def test_imagenet_preact_uses_the_papers_stride_placement():
    model = meta_model("preact_resnet50")
    residual = model.stages[1][0].residual
    assert residual.conv1.stride == (2, 2) and residual.conv2.conv.stride == (1, 1)
    moved = meta_model("preact_resnet50", bottleneck_stride="3x3").stages[1][0].residual
    assert moved.conv1.stride == (1, 1) and moved.conv2.conv.stride == (2, 2)


def test_identity_path_through_the_whole_net():
    """Eq. 4: x_L = x_l + Σ F(x_i). With every residual function zeroed, the features are the stem's
    output carried by the option-A shortcuts alone: subsampled by 4 and zero-padded to 64 channels."""
    torch.manual_seed(0)
    model = create_model("preact_resnet110").eval()
    with torch.no_grad():
        for stage in model.stages:
            for block in stage:
                block.residual.conv2.conv.weight.zero_()
        x = torch.randn(1, 3, 16, 16)
        stem = model.stem(x)
        carried = model.stages(stem)
        expected = torch.cat([stem[:, :, ::4, ::4], torch.zeros(1, 48, 4, 4)], dim=1)
        assert torch.equal(carried, expected)
