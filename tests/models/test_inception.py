"""BN-Inception, Inception v3, Inception-v4 and Inception-ResNet: the papers' tables and figures (sizes,
widths, block counts, residual scales), their claims about factorization, minimum input sizes, and the
reference names each key map renames, checked by value."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn as nn

from dcnn.layers.conv_bn_act import ConvBnAct
from dcnn.layers.inception import Conv, InceptionResidualBlock, build
from dcnn.models import ModelCfg, create_model, get_model_cfg
from tests.models.reference import reference

FAMILY = ["googlenet", "googlenet_bn", "bn_inception", "inception_v3", "inception_v4",
          "inception_resnet_v1", "inception_resnet_v2"]  # fmt: skip


def layer_shapes(model: nn.Module, size: int) -> dict[str, tuple[int, ...]]:
    """(C, H, W) after each named layer of `model.features` on a size×size input (meta device)."""
    x = torch.empty(1, model.in_chans, size, size, device="meta")
    shapes = {}
    for name, layer in model.features.named_children():
        x = layer(x)
        shapes[name] = tuple(x.shape[1:])
    return shapes


def renamed_reference_keys(cfg: ModelCfg) -> dict[str, str]:
    """Each reference state_dict key → the key that `cfg.key_map` moves its tensor to, found by value
    (every tensor is a distinct placeholder)."""
    names = [key for key, _ in reference(cfg.reference)["state_dict"]]
    assert cfg.key_map is not None
    mapped = cfg.key_map({key: torch.tensor(i) for i, key in enumerate(names)})
    return {names[int(value)]: key for key, value in mapped.items()}


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", FAMILY)
def test_min_input_size_is_the_smallest_that_works(name):
    _, h, _ = get_model_cfg(name).min_input_size
    with torch.device("meta"):
        model = create_model(name).eval()
        assert model(torch.empty(1, 3, h, h)).shape == (1, 1000)
        if h > 1:
            with pytest.raises(RuntimeError):
                model(torch.empty(1, 3, h - 1, h - 1))


# ---------------------------------------------------------------- BN-Inception (Ioffe & Szegedy 2015)


def test_bn_inception_figure_5_output_sizes():
    with torch.device("meta"):
        shapes = layer_shapes(create_model("bn_inception"), 224)
    assert shapes == {
        "conv1": (64, 112, 112), "pool1": (64, 56, 56), "conv2_reduce": (64, 56, 56), "conv2": (192, 56, 56),
        "pool2": (192, 28, 28), "inception_3a": (256, 28, 28), "inception_3b": (320, 28, 28),
        "inception_3c": (576, 14, 14), "inception_4a": (576, 14, 14), "inception_4b": (576, 14, 14),
        "inception_4c": (576, 14, 14), "inception_4d": (576, 14, 14), "inception_4e": (1024, 7, 7),
        "inception_5a": (1024, 7, 7), "inception_5b": (1024, 7, 7),
    }  # fmt: skip


def test_bn_inception_double_3x3_pooling_and_batch_norm():
    with torch.device("meta"):
        model = create_model("bn_inception")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.kernel_size in ((1, 1), (3, 3)) for c in convs[1:])  # no 5×5: two 3×3 instead
    # BN on every convolution but the depthwise half of the separable stem, whose BN follows the pointwise.
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == len(convs) - 1
    assert all(c.bias is None for c in convs)  # §3.2: BN makes the bias redundant
    pools = {name: type(block.branches[-1][0]) for name, block in model.features.named_children()
             if name.startswith("inception")}  # fmt: skip
    assert [n for n, kind in pools.items() if kind is nn.MaxPool2d] == ["inception_3c", "inception_4e", "inception_5b"]
    assert all(not b.branches[-1][0].count_include_pad for n, b in model.features.named_children()
               if n.startswith("inception") and pools[n] is nn.AvgPool2d)  # fmt: skip
    assert model.head.drop.__class__ is nn.Identity  # §4.2.1: dropout removed


def test_bn_inception_stride_2_module_passes_the_pool_through():
    with torch.device("meta"):
        block = create_model("bn_inception").features.inception_3c
    assert len(block.branches) == 3 and len(block.branches[2]) == 1  # no 1×1 branch, no pool projection
    assert block.branches[0][1].conv.stride == (2, 2) and block.branches[1][2].conv.stride == (2, 2)
    assert block.out_channels == 160 + 96 + 320


def test_bn_inception_separable_stem():
    with torch.device("meta"):
        separable = create_model("bn_inception").features.conv1
        plain = create_model("bn_inception", separable_stem=False).features.conv1
    depthwise = separable.depthwise.conv
    assert depthwise.weight.shape == (24, 1, 7, 7) and depthwise.groups == 3  # depth multiplier 8
    assert separable.pointwise.conv.weight.shape == (64, 24, 1, 1)
    assert plain.conv.weight.shape == (64, 3, 7, 7)
    # Figure 5's 3a by hand: 1×1 64; 1×1 64 → 3×3 64; 1×1 64 → 3×3 96 → 3×3 96; avg pool → 1×1 32 (+BN γ, β).
    weights = 192 * 64 + 192 * 64 + 64 * 9 * 64 + 192 * 64 + 64 * 9 * 96 + 96 * 9 * 96 + 192 * 32
    bn = 2 * (64 + 64 + 64 + 64 + 96 + 96 + 32)
    assert count(create_model("bn_inception").features.inception_3a) == weights + bn


# ------------------------------------------------------------------ Inception v3 (Szegedy et al. 2016)


def test_inception_v3_grids():
    with torch.device("meta"):
        shapes = layer_shapes(create_model("inception_v3"), 299)
    assert shapes["conv_1a"] == (32, 149, 149) and shapes["pool_5a"] == (192, 35, 35)
    assert [shapes[f"mixed_5{c}"] for c in "bcd"] == [(256, 35, 35), (288, 35, 35), (288, 35, 35)]
    assert shapes["mixed_6a"] == shapes["mixed_6e"] == (768, 17, 17)
    assert shapes["mixed_7a"] == (1280, 8, 8) and shapes["mixed_7c"] == (2048, 8, 8)


def test_factorization_savings_of_section_3():
    conv = partial(ConvBnAct, norm=False, bias=False)
    c = 64

    def weights(*steps: Conv) -> int:
        return count(build((tuple(steps),), c, conv)[0])

    # §3.1: a 5×5 as two 3×3 costs (9 + 9) / 25 of it: "a relative gain of 28%".
    assert 1 - weights(Conv(c, 3), Conv(c, 3)) / weights(Conv(c, 5)) == pytest.approx(0.28)
    # §3.2: 3×1 then 1×3 is "33% cheaper" than a 3×3; 1×7 then 7×1 vs 7×7 saves 5/7.
    assert 1 - weights(Conv(c, (3, 1)), Conv(c, (1, 3))) / weights(Conv(c, 3)) == pytest.approx(1 / 3)
    assert 1 - weights(Conv(c, (1, 7)), Conv(c, (7, 1))) / weights(Conv(c, 7)) == pytest.approx(5 / 7)

    with torch.device("meta"):
        model = create_model("inception_v3")
    kernels = [[layer.conv.kernel_size for layer in branch] for branch in model.features.mixed_6b.branches[1:3]]
    assert kernels == [[(1, 1), (1, 7), (7, 1)], [(1, 1), (7, 1), (1, 7), (7, 1), (1, 7)]]


def test_inception_v3_auxiliary_head():
    with torch.device("meta"):
        model = create_model("inception_v3", num_classes=4)
        assert list(model.aux_heads) == ["mixed_6e"] and model.aux_loss_weights == (0.4,)
        logits, aux = model.train()(torch.empty(2, 3, 75, 75))
        assert logits.shape == aux.shape == (2, 4)
        assert isinstance(model.eval()(torch.empty(1, 3, 75, 75)), torch.Tensor)


def test_torchvision_inception_v3_names_map_by_value():
    renamed = renamed_reference_keys(get_model_cfg("inception_v3"))
    assert renamed["Conv2d_4a_3x3.conv.weight"] == "features.conv_4a.conv.weight"
    assert renamed["Mixed_5b.branch_pool.bn.weight"] == "features.mixed_5b.branches.3.1.bn.weight"
    assert renamed["Mixed_6e.branch7x7dbl_5.conv.weight"] == "features.mixed_6e.branches.2.4.conv.weight"
    assert renamed["Mixed_7a.branch7x7x3_4.bn.running_var"] == "features.mixed_7a.branches.1.3.bn.running_var"
    assert (renamed["Mixed_7b.branch3x3dbl_3b.bn.running_mean"]
            == "features.mixed_7b.branches.2.2.branches.1.0.bn.running_mean")  # fmt: skip
    assert renamed["AuxLogits.conv1.conv.weight"] == "aux_heads.mixed_6e.convs.1.conv.weight"
    assert renamed["fc.bias"] == "head.fc.bias"


# ----------------------------------------------------------- Inception-v4 (Szegedy et al. 2016b)


def test_inception_v4_figure_9_sizes_and_repeats():
    with torch.device("meta"):
        model = create_model("inception_v4")
        shapes = layer_shapes(model, 299)
    assert shapes == {
        "conv_1a": (32, 149, 149), "conv_2a": (32, 147, 147), "conv_2b": (64, 147, 147),
        "mixed_3a": (160, 73, 73), "mixed_4a": (192, 71, 71), "mixed_5a": (384, 35, 35),
        "inception_a": (384, 35, 35), "reduction_a": (1024, 17, 17), "inception_b": (1024, 17, 17),
        "reduction_b": (1536, 8, 8), "inception_c": (1536, 8, 8),
    }  # fmt: skip
    assert [len(getattr(model.features, n)) for n in ("inception_a", "inception_b", "inception_c")] == [4, 7, 3]
    avg_pools = [m for m in model.modules() if isinstance(m, nn.AvgPool2d)]
    assert len(avg_pools) == 14 and not any(p.count_include_pad for p in avg_pools)
    assert {m.eps for m in model.modules() if isinstance(m, nn.BatchNorm2d)} == {1e-3}
    assert model.head.drop.p == 0.2  # Figure 9: dropout, keep 0.8


def test_timm_inception_v4_names_map_by_value():
    renamed = renamed_reference_keys(get_model_cfg("inception_v4"))
    assert renamed["features.0.conv.weight"] == "features.conv_1a.conv.weight"
    assert renamed["features.3.conv.bn.weight"] == "features.mixed_3a.branches.1.0.bn.weight"
    assert renamed["features.4.branch1.3.conv.weight"] == "features.mixed_4a.branches.1.3.conv.weight"
    assert renamed["features.9.branch3.1.bn.bias"] == "features.inception_a.3.branches.3.1.bn.bias"
    assert renamed["features.10.branch1.2.conv.weight"] == "features.reduction_a.branches.1.2.conv.weight"
    assert (renamed["features.21.branch2_3b.conv.weight"]
            == "features.inception_c.2.branches.2.3.branches.1.0.conv.weight")  # fmt: skip
    assert renamed["last_linear.weight"] == "head.fc.weight"


# --------------------------------------------------------- Inception-ResNet (Szegedy et al. 2016b)


def residual_blocks(model: nn.Module, stage: str) -> list[InceptionResidualBlock]:
    return list(getattr(model.features, stage))


def test_inception_resnet_v1_figure_15_sizes_blocks_and_scales():
    with torch.device("meta"):
        model = create_model("inception_resnet_v1")
        shapes = layer_shapes(model, 299)
    assert shapes["conv_4b"] == (256, 35, 35)  # Figure 14's stem output
    assert shapes["reduction_a"] == (896, 17, 17) and shapes["reduction_b"] == (1792, 8, 8)
    stages = ("inception_resnet_a", "inception_resnet_b", "inception_resnet_c")
    assert [len(getattr(model.features, s)) for s in stages] == [5, 10, 5]
    for stage, scale in zip(stages, (0.17, 0.10, 0.20), strict=True):
        assert all(0.1 <= b.scale <= 0.3 and b.scale == scale for b in residual_blocks(model, stage))
        assert all(isinstance(b.act, nn.ReLU) for b in residual_blocks(model, stage))
    # Figure 10 by hand: branches 1×1 32; 1×1 32 → 3×3 32; 1×1 32 → 3×3 32 → 3×3 32 (BN γ, β each), then
    # the linear 1×1 from 96 back to 256 with bias.
    branches = 3 * (256 * 32 + 64) + 3 * (32 * 9 * 32 + 64)
    assert count(model.features.inception_resnet_a[0]) == branches + 96 * 256 + 256


def test_inception_resnet_v2_as_released():
    with torch.device("meta"):
        model = create_model("inception_resnet_v2")
        shapes = layer_shapes(model, 299)
    assert shapes["mixed_5b"] == (320, 35, 35) and shapes["reduction_a"] == (1088, 17, 17)
    assert shapes["reduction_b"] == (2080, 8, 8) and shapes["conv_7b"] == (1536, 8, 8)
    blocks_c = residual_blocks(model, "inception_resnet_c")
    assert [len(getattr(model.features, s)) for s in ("inception_resnet_a", "inception_resnet_b")] == [10, 20]
    assert len(blocks_c) == 10 and all(b.scale == 0.2 and isinstance(b.act, nn.ReLU) for b in blocks_c[:9])
    assert blocks_c[9].scale == 1.0 and isinstance(blocks_c[9].act, nn.Identity)


def test_residual_blocks_keep_batch_norm_off_the_sum():
    torch.manual_seed(0)
    block = create_model("inception_resnet_v1").features.inception_resnet_b[0].eval()
    assert isinstance(block.project, nn.Conv2d) and block.project.bias is not None
    x = torch.randn(1, 896, 5, 5)
    with torch.no_grad():
        residual = block.project(torch.cat([branch(x) for branch in block.branches], dim=1))
        torch.testing.assert_close(block(x), torch.relu(x + 0.1 * residual))


def test_timm_inception_resnet_v2_names_map_by_value():
    renamed = renamed_reference_keys(get_model_cfg("inception_resnet_v2"))
    assert renamed["conv2d_4a.conv.weight"] == "features.conv_4a.conv.weight"
    assert renamed["mixed_5b.branch3.1.bn.weight"] == "features.mixed_5b.branches.3.1.bn.weight"
    assert renamed["repeat.9.conv2d.bias"] == "features.inception_resnet_a.9.project.bias"
    assert (renamed["repeat_1.19.branch1.2.bn.running_mean"]
            == "features.inception_resnet_b.19.branches.1.2.bn.running_mean")  # fmt: skip
    assert renamed["mixed_7a.branch2.2.conv.weight"] == "features.reduction_b.branches.2.2.conv.weight"
    assert renamed["block8.conv2d.weight"] == "features.inception_resnet_c.9.project.weight"
    assert renamed["conv2d_7b.bn.bias"] == "features.conv_7b.bn.bias"
    assert renamed["classif.weight"] == "head.fc.weight"
