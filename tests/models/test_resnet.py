"""ImageNet ResNets, plain nets, Wide ResNets and ResNeXt: the papers' figures (He et al. 2016 Table 1,
Xie et al. 2017 Table 1), the plain-net construction, stride placement and the torchvision key map."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from dcnn.errors import DcnnError
from dcnn.models import create_model, load_pretrained
from dcnn.models.resnet import torchvision_key_map
from tests.models.key_map_checks import assert_same_values
from tests.models.reference import synthesize_state_dict


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_model(name: str, **options) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **options).eval()


def multiply_adds(model: nn.Module, size: int = 224) -> int:
    """Multiply-adds of the conv and fully connected layers for one size×size image (the papers'
    "FLOPs"), counted from the layer shapes on the meta device."""
    total = 0

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += output[0].numel() * module.in_channels // module.groups * kh * kw
        else:
            total += module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.empty(1, 3, size, size, device="meta"))
    for hook in hooks:
        hook.remove()
    return total


def weighted_layers_on_the_main_path(model: nn.Module) -> int:
    """Conv and fc layers outside the shortcuts: the depth in a ResNet's name (2016a, Table 1)."""
    return sum(
        isinstance(module, (nn.Conv2d, nn.Linear)) and ".shortcut" not in name
        for name, module in model.named_modules()
    )


# He et al. 2016a, Table 1: FLOPs (multiply-adds, ×10^9) at 224×224.
TABLE1_GFLOPS = {"resnet18": 1.8, "resnet34": 3.6, "resnet50": 3.8, "resnet101": 7.6, "resnet152": 11.3}


@pytest.mark.parametrize("name", TABLE1_GFLOPS)
def test_table1_flops_with_the_papers_stride_placement(name):
    gflops = multiply_adds(meta_model(name, bottleneck_stride="1x1")) / 1e9
    assert gflops == pytest.approx(TABLE1_GFLOPS[name], abs=0.07)


@pytest.mark.parametrize("name", ["resnet50", "resnet101", "resnet152"])
def test_torchvision_stride_placement_is_not_the_papers(name):
    """The default (torchvision "v1.5", stride on the 3×3) costs more than Table 1 says."""
    gflops = multiply_adds(meta_model(name)) / 1e9
    assert gflops - TABLE1_GFLOPS[name] > 0.15


def test_resnext_table1_flops_and_params():
    """Xie et al. 2017, Table 1 (stride on the 3×3 for both): ResNet-50 4.1 GFLOPs, 25.5M parameters;
    ResNeXt-50 (32×4d) 4.2 GFLOPs, 25.0M parameters."""
    resnet, resnext = meta_model("resnet50"), meta_model("resnext50_32x4d")
    assert multiply_adds(resnet) / 1e9 == pytest.approx(4.1, abs=0.05)
    assert multiply_adds(resnext) / 1e9 == pytest.approx(4.2, abs=0.05)
    assert count_params(resnet) / 1e6 == pytest.approx(25.5, abs=0.1)
    assert count_params(resnext) / 1e6 == pytest.approx(25.0, abs=0.05)


def test_plain34_flops():
    """2016a, §3.3: "Our 34-layer baseline has 3.6 billion FLOPs (multiply-adds)"."""
    assert multiply_adds(meta_model("plain34")) / 1e9 == pytest.approx(3.6, abs=0.07)


@pytest.mark.parametrize(
    ("name", "depth"),
    [("resnet18", 18), ("resnet34", 34), ("resnet50", 50), ("resnet101", 101), ("resnet152", 152),
     ("plain18", 18), ("plain34", 34), ("plain50", 50), ("resnext101_32x8d", 101), ("wide_resnet50_2", 50)],
)
def test_depth_counts_the_weighted_layers(name, depth):
    assert weighted_layers_on_the_main_path(meta_model(name)) == depth


def test_stage_output_sizes_of_table1():
    """2016a, Table 1: conv1 112, conv2_x 56, conv3_x 28, conv4_x 14, conv5_x 7 at 224×224."""
    model = meta_model("resnet50")
    shapes = []
    for layer in (model.stem.conv, *model.stages):
        layer.register_forward_hook(lambda module, inputs, output: shapes.append(tuple(output.shape[1:])))
    with torch.no_grad():
        model(torch.empty(1, 3, 224, 224, device="meta"))
    assert shapes == [(64, 112, 112), (256, 56, 56), (512, 28, 28), (1024, 14, 14), (2048, 7, 7)]


# --- plain nets (2016a, §4.1) ---------------------------------------------------------------------------


def projection_params(transitions: list[tuple[int, int]]) -> int:
    """Option B projections: a 1×1 conv and BN (scale, shift) per (in, out) channel change."""
    return sum(c_in * c_out + 2 * c_out for c_in, c_out in transitions)


@pytest.mark.parametrize(
    ("plain", "residual", "transitions"),
    [
        ("plain18", "resnet18", [(64, 128), (128, 256), (256, 512)]),
        ("plain34", "resnet34", [(64, 128), (128, 256), (256, 512)]),
        ("plain50", "resnet50", [(64, 256), (256, 512), (512, 1024), (1024, 2048)]),
    ],
)
def test_plain_nets_are_the_resnets_without_shortcuts(plain, residual, transitions):
    plain_model, residual_model = meta_model(plain), meta_model(residual)
    assert all(block.shortcut is None for stage in plain_model.stages for block in stage)
    assert count_params(residual_model) - count_params(plain_model) == projection_params(transitions)


def test_plain_net_computes_differently_with_the_same_weights():
    torch.manual_seed(0)
    residual = create_model("resnet18").eval()
    plain = create_model("plain18").eval()
    weights = {k: v for k, v in residual.state_dict().items() if ".shortcut." not in k}
    plain.load_state_dict(weights, strict=True)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(plain(x), residual(x), atol=1e-3)


# --- stride placement, torchvision checkpoints -----------------------------------------------------------


@pytest.mark.parametrize(("option", "conv1_stride", "conv2_stride"), [({}, 1, 2), ({"bottleneck_stride": "1x1"}, 2, 1)])
def test_bottleneck_stride_default_follows_torchvision(option, conv1_stride, conv2_stride):
    first_of_conv3 = meta_model("resnet50", **option).stages[1][0].residual
    assert first_of_conv3.conv1.conv.stride == (conv1_stride, conv1_stride)
    assert first_of_conv3.conv2.conv.stride == (conv2_stride, conv2_stride)


@pytest.fixture(scope="module")
def torchvision_resnet50() -> dict[str, torch.Tensor]:
    return synthesize_state_dict("torchvision/resnet50")


def test_key_map_puts_torchvision_tensors_in_the_expected_modules(torchvision_resnet50):
    model = create_model("resnet50").eval()
    model.load_state_dict(torchvision_key_map(torchvision_resnet50), strict=True)
    source = torchvision_resnet50
    spots = {
        "conv1.weight": model.stem.conv.weight,
        "bn1.running_mean": model.stem.bn.running_mean,
        "layer1.0.conv1.weight": model.stages[0][0].residual.conv1.conv.weight,
        "layer3.1.conv2.weight": model.stages[2][1].residual.conv2.conv.weight,
        "layer3.1.bn2.weight": model.stages[2][1].residual.conv2.bn.weight,
        "layer4.2.bn3.bias": model.stages[3][2].residual.conv3.bn.bias,
        "layer2.0.downsample.0.weight": model.stages[1][0].shortcut.conv.weight,
        "layer2.0.downsample.1.running_var": model.stages[1][0].shortcut.bn.running_var,
        "fc.weight": model.head.fc.weight,
        "fc.bias": model.head.fc.bias,
    }
    assert_same_values(spots, source)


def test_torchvision_checkpoint_loads_with_either_stride_placement(torchvision_resnet50, tmp_path):
    """Same keys and shapes; the paper's placement computes another function."""
    from safetensors.torch import save_file

    path = tmp_path / "resnet50.safetensors"
    save_file(torchvision_resnet50, str(path))
    default = load_pretrained(create_model("resnet50").eval(), path)
    paper = load_pretrained(create_model("resnet50", bottleneck_stride="1x1").eval(), path)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(default(x), paper(x), atol=1e-3)


# --- ResNeXt and Wide ResNet widths ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "inner_widths", "groups"),
    [
        ("resnet50", (64, 128, 256, 512), 1),
        ("resnext50_32x4d", (128, 256, 512, 1024), 32),  # Xie et al. Table 1: C = 32, d = 4
        ("resnext101_32x8d", (256, 512, 1024, 2048), 32),  # d = 8
        ("wide_resnet50_2", (128, 256, 512, 1024), 1),  # the bottleneck twice as wide
    ],
)
def test_bottleneck_inner_widths(name, inner_widths, groups):
    model = meta_model(name)
    for stage, width in zip(model.stages, inner_widths, strict=True):
        conv2 = stage[0].residual.conv2.conv
        assert (conv2.in_channels, conv2.out_channels, conv2.groups) == (width, width, groups)
    outputs = [stage[-1].residual.conv3.conv.out_channels for stage in model.stages]
    assert outputs == [256, 512, 1024, 2048]


# --- errors ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"shortcut": "D"}, "unknown shortcut option"),
        ({"bottleneck_stride": "2x2"}, "unknown bottleneck_stride"),
        ({"block_dropout": 0.3}, "needs pre-activation"),
        ({"stem": "mnist"}, "unknown stem"),
        ({"block": "wide"}, "unknown residual block"),
    ],
)
def test_bad_options_raise_one_clear_error(options, message):
    with pytest.raises(DcnnError, match=message):
        create_model("resnet50", **options)
