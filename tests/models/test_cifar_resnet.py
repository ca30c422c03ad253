"""CIFAR ResNets and plain nets (He et al. 2016a, §4.2, Table 6) and WRN-28-10 (Zagoruyko &
Komodakis 2016): parameter counts against the papers, 6n+2 layers, option A shortcuts, map sizes."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from dcnn.errors import DcnnError
from dcnn.layers.residual import ZeroPadShortcut
from dcnn.models import create_model, get_model_cfg
from dcnn.models.cifar_resnet import cifar_depths, wrn_arch
from dcnn.models.resnet import ResNet


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_model(name: str, **options) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **options).eval()


# 2016a, Table 6: "# params" of the CIFAR-10 ResNets, as printed.
TABLE6 = {"resnet20": "0.27M", "resnet32": "0.46M", "resnet44": "0.66M", "resnet56": "0.85M", "resnet110": "1.7M"}


@pytest.mark.parametrize("name", TABLE6)
def test_parameter_counts_round_to_table6(name):
    figure = TABLE6[name]
    decimals = len(figure.split(".")[1]) - 1  # "0.27M" -> 2, "1.7M" -> 1
    assert f"{count_params(meta_model(name)) / 1e6:.{decimals}f}M" == figure


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_6n_plus_2_weighted_layers(depth):
    n = (depth - 2) // 6
    model = meta_model(f"resnet{depth}")
    assert [len(stage) for stage in model.stages] == [n, n, n]
    weighted = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(weighted) == depth  # option A adds no convolutions


def test_section_4_2_layout():
    """§4.2: 3×3 conv with 16 filters, then maps of 32, 16, 8 with 16, 32, 64 filters; 10 classes."""
    model = meta_model("resnet20")
    assert model.stem.conv.kernel_size == (3, 3) and model.stem.conv.out_channels == 16
    shapes = []
    for stage in model.stages:
        stage.register_forward_hook(lambda module, inputs, output: shapes.append(tuple(output.shape[1:])))
    with torch.no_grad():
        logits = model(torch.empty(1, 3, 32, 32, device="meta"))
    assert shapes == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
    assert logits.shape == (1, 10)


def test_option_a_shortcuts_only():
    model = meta_model("resnet56")
    shortcuts = [block.shortcut for stage in model.stages for block in stage]
    assert sum(isinstance(s, ZeroPadShortcut) for s in shortcuts) == 2  # 16→32 and 32→64
    assert all(isinstance(s, (ZeroPadShortcut, nn.Identity)) for s in shortcuts)
    assert all(count_params(s) == 0 for s in shortcuts)


def test_option_a_shortcut_in_the_model_is_the_padded_identity():
    torch.manual_seed(0)
    block = create_model("resnet20").eval().stages[1][0]  # 16 → 32 channels, 32×32 → 16×16
    x = torch.randn(1, 16, 32, 32)
    expected = torch.cat([x[:, :, ::2, ::2], torch.zeros(1, 16, 16, 16)], dim=1)
    assert torch.equal(block.shortcut(x), expected)


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_plain_nets_have_no_shortcuts_and_the_same_parameters(depth):
    plain, residual = meta_model(f"plain{depth}"), meta_model(f"resnet{depth}")
    assert all(block.shortcut is None for stage in plain.stages for block in stage)
    assert count_params(plain) == count_params(residual)


def test_plain_net_loads_the_resnet_weights_and_computes_differently():
    torch.manual_seed(0)
    residual = create_model("resnet20").eval()
    plain = create_model("plain20").eval()
    plain.load_state_dict(residual.state_dict(), strict=True)  # option A: nothing to leave out
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(plain(x), residual(x), atol=1e-3)


def test_depth_must_be_6n_plus_2():
    assert cifar_depths(1202) == (200, 200, 200)  # ResNet-1202 of §4.2
    with pytest.raises(DcnnError, match="6n\\+2"):
        cifar_depths(21)


# --- WRN-28-10 ----------------------------------------------------------------------------------------------


def test_wrn28_10_has_the_papers_36_5m_parameters():
    """Zagoruyko & Komodakis 2016, Table 4: WRN-28-10 has 36.5M parameters."""
    assert f"{count_params(meta_model('wrn28_10')) / 1e6:.1f}M" == "36.5M"


def test_wrn28_10_structure():
    """Table 1: conv1 16; conv2-4 groups of N = 4 B(3,3) blocks with 16k, 32k, 64k filters (k = 10);
    28 = 6N + 4 convolutions, the three 1×1 projections where the width changes included."""
    model = meta_model("wrn28_10")
    assert model.stem.conv.out_channels == 16
    assert [len(stage) for stage in model.stages] == [4, 4, 4]
    assert [stage[-1].residual.conv2.conv.out_channels for stage in model.stages] == [160, 320, 640]
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 28
    # pre-activation blocks and a final BN-ReLU before pooling
    assert isinstance(model.final_act[0], nn.BatchNorm2d) and isinstance(model.final_act[1], nn.ReLU)
    assert model.num_features == 640


def test_wrn_dropout_between_convolutions():
    model = create_model("wrn28_10", block_dropout=0.3)
    dropouts = [(name, m.p) for name, m in model.named_modules() if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 12  # one per block
    assert all(name.endswith("residual.conv2.drop") and p == 0.3 for name, p in dropouts)
    assert count_params(model) == get_model_cfg("wrn28_10").num_params


def test_wrn_depth_must_be_6n_plus_4():
    assert wrn_arch(16, 8)["depths"] == (2, 2, 2)
    with pytest.raises(DcnnError, match="6N\\+4"):
        wrn_arch(27, 10)


def test_wrn_width_scales_the_parameter_count():
    """A wider net from the same table: WRN-16-8 (Table 4: 11.0M parameters)."""
    with torch.device("meta"):
        model = ResNet(**wrn_arch(16, 8), num_classes=10)
    assert f"{count_params(model) / 1e6:.1f}M" == "11.0M"
