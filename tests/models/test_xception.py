"""Xception against the paper (Chollet 2017): Table 3's parameter count, the 36 convolutional layers
in 14 modules of §3, Figure 5's feature-map sizes, and timm's checkpoint names mapped by value."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from dcnn.layers.separable import SeparableConv2d
from dcnn.models import create_model, get_model_cfg
from dcnn.models.xception import XceptionBlock
from tests.models.key_map_checks import assert_same_values, load_synthesized_reference


def build_meta(**options) -> nn.Module:
    with torch.device("meta"):
        return create_model("xception", **options).eval()


def test_parameter_count_of_table_3():
    assert sum(p.numel() for p in build_meta().parameters()) == 22_855_952


def test_36_convolutional_layers_in_14_modules():
    """§3: 36 convolutional layers (a separable convolution counts once; the 1×1 shortcut
    convolutions are not counted) in 14 modules: the stem, 12 residual blocks, the last two layers."""
    model = build_meta()
    separable = [m for m in model.modules() if isinstance(m, SeparableConv2d)]
    plain = [m for m in model.stem.modules() if isinstance(m, nn.Conv2d)]
    assert len(separable) + len(plain) == 36
    blocks = [m for m in model.modules() if isinstance(m, XceptionBlock)]
    assert len(blocks) == 12 and len(model.middle_flow) == 8
    shortcuts = [block for block in blocks if not isinstance(block.skip, nn.Identity)]
    assert len(shortcuts) == 4  # entry flow ×3 and exit flow: the blocks that change shape


def test_feature_maps_follow_figure_5():
    model = build_meta()
    shapes = {}
    for name in ("stem", "entry_flow", "middle_flow", "exit_flow.0", "exit_flow"):
        model.get_submodule(name).register_forward_hook(
            lambda _m, _i, out, name=name: shapes.__setitem__(name, out.shape)
        )
    model(torch.zeros(1, 3, 299, 299, device="meta"))
    assert shapes == {
        "stem": (1, 64, 147, 147),
        "entry_flow": (1, 728, 19, 19),  # "19×19×728 feature maps"
        "middle_flow": (1, 728, 19, 19),
        "exit_flow.0": (1, 1024, 10, 10),
        "exit_flow": (1, 2048, 10, 10),
    }


def test_no_nonlinearity_between_depthwise_and_pointwise():
    """§4.7: the best results come with no intermediate activation; batch norm follows each
    separable convolution (§3), ReLU only where Figure 5 draws one."""
    model = build_meta()
    for unit in (m for m in model.modules() if isinstance(m, SeparableConv2d)):
        assert [name for name, _ in unit.depthwise.named_children()] == ["conv"]
        assert isinstance(unit.pointwise.bn, nn.BatchNorm2d)
    first_block, second_block = model.entry_flow[0], model.entry_flow[1]
    assert not hasattr(first_block.units[0], "act")  # follows the stem's ReLU directly
    assert isinstance(second_block.units[0].act, nn.ReLU)
    assert all(isinstance(unit.pointwise.act, nn.ReLU) for unit in model.exit_flow[1:])  # after 1536 and 2048


def test_dropout_before_the_classifier():
    assert build_meta().head.drop.p == 0.5  # §4.3, ImageNet


def test_timm_key_map_spot_checks_by_value():
    model, source = load_synthesized_reference("xception")
    pairs = {
        "conv1.weight": model.stem[0].conv.weight,
        "bn2.running_var": model.stem[1].bn.running_var,
        # block1 has no leading ReLU: separable convs at rep.0 and rep.3, their BNs at rep.1 and rep.4
        "block1.rep.0.conv1.weight": model.entry_flow[0].units[0].conv.depthwise.conv.weight,
        "block1.rep.4.bias": model.entry_flow[0].units[1].conv.pointwise.bn.bias,
        "block1.skip.weight": model.entry_flow[0].skip.conv.weight,
        "block3.skipbn.running_mean": model.entry_flow[2].skip.bn.running_mean,
        "block2.rep.4.pointwise.weight": model.entry_flow[1].units[1].conv.pointwise.conv.weight,
        "block4.rep.8.running_var": model.middle_flow[0].units[2].conv.pointwise.bn.running_var,
        "block11.rep.1.conv1.weight": model.middle_flow[7].units[0].conv.depthwise.conv.weight,
        "block12.rep.4.pointwise.weight": model.exit_flow[0].units[1].conv.pointwise.conv.weight,
        "conv3.conv1.weight": model.exit_flow[1].depthwise.conv.weight,
        "bn3.weight": model.exit_flow[1].pointwise.bn.weight,
        "conv4.pointwise.weight": model.exit_flow[2].pointwise.conv.weight,
        "bn4.running_mean": model.exit_flow[2].pointwise.bn.running_mean,
        "fc.weight": model.head.fc.weight,
    }
    assert_same_values(pairs, source)


def test_min_input_size_is_the_smallest_that_works():
    _, size, _ = get_model_cfg("xception").min_input_size
    model = build_meta()
    assert model(torch.zeros(1, 3, size, size, device="meta")).shape == (1, 1000)
    with pytest.raises(RuntimeError):
        model(torch.zeros(1, 3, size - 1, size - 1, device="meta"))
