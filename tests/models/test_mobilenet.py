"""MobileNet v1 and v2 against their papers: layer counts, mult-adds and parameters of the tables,
the width multiplier, and the reference checkpoints' names mapped by value."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from dcnn.errors import DcnnError
from dcnn.layers.separable import SeparableConv2d
from dcnn.models import create_model
from dcnn.models.mobilenet import scale_channels
from tests.layers.test_separable import mult_adds
from tests.models.key_map_checks import assert_same_values, load_synthesized_reference


def build_meta(name: str, **options) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **options).eval()


def millions(count: int) -> float:
    return count / 1e6


# ---------------------------------------------------------------- MobileNet v1 (Howard et al. 2017)


def test_v1_has_28_layers():
    """§3.2: counting depthwise and pointwise convolutions as separate layers, 28 layers."""
    weighted = [m for m in build_meta("mobilenet_v1").modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert len(weighted) == 28
    assert sum(isinstance(m, SeparableConv2d) for m in build_meta("mobilenet_v1").modules()) == 13


@pytest.mark.parametrize(
    ("name", "table_mult_adds", "table_params"),
    [
        ("mobilenet_v1", 569, 4.2),
        ("mobilenet_v1_075", 325, 2.6),
        ("mobilenet_v1_050", 149, 1.3),
        ("mobilenet_v1_025", 41, 0.5),
    ],
)
def test_v1_width_multipliers_match_table_6(name, table_mult_adds, table_params):
    model = build_meta(name)
    assert round(millions(sum(mult_adds(model, (1, 3, 224, 224)).values()))) == table_mult_adds
    assert round(millions(sum(p.numel() for p in model.parameters())), 1) == table_params


@pytest.mark.parametrize(("resolution", "table_mult_adds"), [(192, 418), (160, 290), (128, 186)])
def test_v1_resolution_multipliers_match_table_7(resolution, table_mult_adds):
    cost = millions(sum(mult_adds(build_meta("mobilenet_v1"), (1, 3, resolution, resolution)).values()))
    assert cost == pytest.approx(table_mult_adds, abs=1)  # 290.7M at 160 is printed as 290


def test_v1_resource_split_matches_table_2():
    """Table 2: share of mult-adds and of (weight) parameters per layer type. The paper's 1.19% for
    the 3×3 convolution is a transposed 1.91%: with it the column sums to 100%."""
    model = build_meta("mobilenet_v1")
    costs = mult_adds(model, (1, 3, 224, 224))

    def kind(layer: nn.Module) -> str:
        if isinstance(layer, nn.Linear):
            return "fc"
        return "dw" if layer.groups > 1 else f"conv{layer.kernel_size[0]}"

    total_cost, total_weights = sum(costs.values()), sum(layer.weight.numel() for layer in costs)
    split = {}
    for layer, cost in costs.items():
        share = split.setdefault(kind(layer), [0.0, 0.0])
        share[0] += 100 * cost / total_cost
        share[1] += 100 * layer.weight.numel() / total_weights
    table = {"conv1": (94.86, 74.59), "dw": (3.06, 1.06), "conv3": (1.91, 0.02), "fc": (0.18, 24.33)}
    assert split.keys() == table.keys()
    for name, (cost_share, weight_share) in table.items():
        assert split[name][0] == pytest.approx(cost_share, abs=0.005), name
        assert split[name][1] == pytest.approx(weight_share, abs=0.005), name


def test_v1_separable_layers_cost_8_to_9_times_less():
    """§3.1: with 3×3 kernels, depthwise-separable convolutions use 8 to 9 times less computation
    than standard ones, the ratio 1/N + 1/9 (eq. 5 / eq. 4)."""
    model = build_meta("mobilenet_v1")
    costs = mult_adds(model, (1, 3, 224, 224))
    separable_total = standard_total = 0
    for unit in (m for m in model.modules() if isinstance(m, SeparableConv2d)):
        depthwise, pointwise = unit.depthwise.conv, unit.pointwise.conv
        locations = costs[pointwise] // pointwise.weight.numel()  # D_F²
        standard = 9 * pointwise.in_channels * pointwise.out_channels * locations
        separable = costs[depthwise] + costs[pointwise]
        assert separable / standard == pytest.approx(1 / pointwise.out_channels + 1 / 9)
        separable_total += separable
        standard_total += standard
    assert 8 < standard_total / separable_total < 9  # 8.7 (7.9 for the 64-channel first unit)


def test_v1_relu6_variant_differs_only_in_its_activation():
    paper, timm_variant = create_model("mobilenet_v1"), create_model("mobilenet_v1_relu6")
    assert paper.state_dict().keys() == timm_variant.state_dict().keys()
    assert {type(m) for m in paper.modules()} - {type(m) for m in timm_variant.modules()} == {nn.ReLU}
    assert {type(m) for m in timm_variant.modules()} - {type(m) for m in paper.modules()} == {nn.ReLU6}
    assert create_model("mobilenet_v1", act="relu6").state_dict().keys() == paper.state_dict().keys()


def test_v1_timm_key_map_spot_checks_by_value():
    model, source = load_synthesized_reference("mobilenet_v1_relu6")
    pairs = {
        "conv_stem.weight": model.stem.conv.weight,
        "bn1.running_var": model.stem.bn.running_var,
        "blocks.0.0.conv_dw.weight": model.stages[0][0].depthwise.conv.weight,
        "blocks.3.5.bn1.bias": model.stages[3][5].depthwise.bn.bias,
        "blocks.4.1.conv_pw.weight": model.stages[4][1].pointwise.conv.weight,
        "blocks.2.0.bn2.running_mean": model.stages[2][0].pointwise.bn.running_mean,
        "classifier.bias": model.head.fc.bias,
    }
    assert_same_values(pairs, source)


# ---------------------------------------------------------------- MobileNet v2 (Sandler et al. 2018)


def test_v2_follows_table_2():
    """Each row t, c, n, s of Table 2, and the input sizes of the rows at 224×224."""
    model = build_meta("mobilenet_v2")
    rows = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    inputs = []
    for stage in model.stages:
        stage[0].register_forward_hook(lambda m, args, _out: inputs.append(tuple(args[0].shape[1:])))
    model(torch.zeros(1, 3, 224, 224, device="meta"))
    assert inputs == [
        (32, 112, 112),
        (16, 112, 112),
        (24, 56, 56),
        (32, 28, 28),
        (64, 14, 14),
        (96, 14, 14),
        (160, 7, 7),
    ]
    assert len(model.stages) == len(rows)
    channels = 32
    for stage, (t, c, n, s) in zip(model.stages, rows, strict=True):
        assert len(stage) == n
        for index, block in enumerate(stage):
            assert block.depthwise.conv.in_channels == t * channels  # expansion t
            assert block.depthwise.conv.stride == ((s, s) if index == 0 else (1, 1))
            assert block.project.conv.out_channels == c
            channels = c
    assert model.final_conv.conv.weight.shape == (1280, 320, 1, 1)


def test_v2_matches_table_4():
    """Table 4: 300M mult-adds, 3.4M parameters (3.47M weights; the batch norms add 34k)."""
    model = build_meta("mobilenet_v2")
    assert round(millions(sum(mult_adds(model, (1, 3, 224, 224)).values()))) == 301  # 300.8M, "300M"
    weights = sum(p.numel() for name, p in model.named_parameters() if ".bn." not in name)
    assert int(millions(weights) * 10) / 10 == 3.4


@pytest.mark.parametrize(
    ("width", "stem", "features"), [(0.35, 16, 1280), (0.5, 16, 1280), (1.0, 32, 1280), (1.4, 48, 1792)]
)
def test_v2_width_multiplier_keeps_the_last_layer_below_one(width, stem, features):
    """§6.1: multipliers below one thin every layer except the last convolution."""
    model = build_meta("mobilenet_v2", width_mult=width)
    assert model.stem.conv.out_channels == stem
    assert model.num_features == model.final_conv.conv.out_channels == features


def test_scale_channels_rounds_to_multiples_of_8_within_10_percent():
    assert scale_channels(32 * 0.35) == 16  # 11.2 → 8 would lose more than 10%
    assert scale_channels(24 * 1.4) == 32  # 33.6 → 32
    assert scale_channels(16 * 0.35) == 8  # 5.6 → at least 8
    assert scale_channels(1024 * 0.75) == 768
    assert scale_channels(96 * 0.35) == 32  # 33.6 → 32


def test_v2_torchvision_key_map_spot_checks_by_value():
    model, source = load_synthesized_reference("mobilenet_v2")
    pairs = {
        "features.0.0.weight": model.stem.conv.weight,
        "features.0.1.running_mean": model.stem.bn.running_mean,
        # the block without expansion: depthwise (conv, BN), projection conv, projection BN
        "features.1.conv.0.0.weight": model.stages[0][0].depthwise.conv.weight,
        "features.1.conv.1.weight": model.stages[0][0].project.conv.weight,
        "features.1.conv.2.bias": model.stages[0][0].project.bn.bias,
        # blocks with expansion: expand, depthwise, projection conv, projection BN
        "features.2.conv.0.0.weight": model.stages[1][0].expand.conv.weight,
        "features.7.conv.1.1.running_var": model.stages[3][0].depthwise.bn.running_var,
        "features.13.conv.2.weight": model.stages[4][2].project.conv.weight,
        "features.17.conv.3.weight": model.stages[6][0].project.bn.weight,
        "features.18.0.weight": model.final_conv.conv.weight,
        "features.18.1.bias": model.final_conv.bn.bias,
        "classifier.1.weight": model.head.fc.weight,
    }
    assert_same_values(pairs, source)


def test_width_multiplier_must_be_positive():
    for name in ("mobilenet_v1", "mobilenet_v2"):
        with pytest.raises(DcnnError, match="width_mult must be positive"):
            create_model(name, width_mult=0)
