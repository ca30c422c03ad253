"""DenseNet against the paper (Huang et al. 2017): Table 1's depths and feature-map sizes, the CIFAR
DenseNet-BC of Table 2, and torchvision's checkpoint names mapped by value."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn as nn

from dcnn.errors import DcnnError
from dcnn.models import create_model, get_model_cfg
from dcnn.models.densenet import torchvision_key_map
from tests.models.key_map_checks import assert_same_values
from tests.models.reference import synthesize_state_dict


def build_meta(name: str, **options) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **options).eval()


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "depth"), [("densenet121", 121), ("densenet161", 161), ("densenet169", 169), ("densenet201", 201)]
)
def test_depth_counts_convolutions_and_the_classifier(name, depth):
    model = build_meta(name)
    weighted = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert len(weighted) == depth  # Table 1: the number in the name


def test_densenet121_feature_maps_follow_table_1():
    model = build_meta("densenet121")
    shapes = {}
    for name in ("stem", "stem_pool", "blocks.0", "transitions.0", "blocks.1", "transitions.1", "blocks.2",
                 "transitions.2", "blocks.3"):  # fmt: skip
        model.get_submodule(name).register_forward_hook(
            lambda _m, _i, out, name=name: shapes.__setitem__(name, out.shape)
        )
    model(torch.zeros(1, 3, 224, 224, device="meta"))
    # Table 1's output sizes, and channels 64 + 32·L per block, halved by each transition.
    assert shapes == {
        "stem": (1, 64, 112, 112),
        "stem_pool": (1, 64, 56, 56),
        "blocks.0": (1, 64 + 6 * 32, 56, 56),
        "transitions.0": (1, 128, 28, 28),
        "blocks.1": (1, 128 + 12 * 32, 28, 28),
        "transitions.1": (1, 256, 14, 14),
        "blocks.2": (1, 256 + 24 * 32, 14, 14),
        "transitions.2": (1, 512, 7, 7),
        "blocks.3": (1, 512 + 16 * 32, 7, 7),
    }
    assert model.num_features == 1024


def test_densenet201_has_20m_parameters():
    assert round(count_params(build_meta("densenet201")) / 1e6) == 20  # §4.4, "DenseNet-201 with 20M parameters"


def test_densenet_bc_100_k12_matches_table_2_and_section_3():
    model = build_meta("densenet_bc_100_k12")
    assert round(count_params(model) / 1e5) / 10 == 0.8  # Table 2: 0.8M
    weighted = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert len(weighted) == 100  # L = 100
    assert model.stem.conv.weight.shape == (24, 3, 3, 3)  # 2k channels, 3×3
    assert [len(block.layers) for block in model.blocks] == [16, 16, 16]
    sizes = []
    for block in model.blocks:
        block.register_forward_hook(lambda _m, _i, out: sizes.append(tuple(out.shape[2:])))
    assert model(torch.zeros(1, 3, 32, 32, device="meta")).shape == (1, 10)
    assert sizes == [(32, 32), (16, 16), (8, 8)]  # §3 Implementation Details
    # Compression θ = 0.5: 24 + 16·12 = 216 → 108, 108 + 192 = 300 → 150, 150 + 192 = 342.
    assert [t.conv.out_channels for t in model.transitions] == [108, 150]
    assert model.num_features == 342


def test_dropout_follows_every_convolution_but_the_first():
    model = build_meta("densenet_bc_100_k12", drop_rate=0.2)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert len(dropouts) == len(convs) - 1 and all(d.p == 0.2 for d in dropouts)  # §4.2


def test_memory_efficient_option_reaches_every_dense_layer():
    model = build_meta("densenet121", memory_efficient=True)
    layers = [layer for block in model.blocks for layer in block.layers]
    assert len(layers) == 58 and all(layer.memory_efficient for layer in layers)


def test_key_map_spot_checks_by_value():
    source = synthesize_state_dict("torchvision/densenet121")
    model = create_model("densenet121")
    model.load_state_dict(torchvision_key_map(source))
    pairs = {
        "features.conv0.weight": model.stem.conv.weight,
        "features.norm0.running_mean": model.stem.bn.running_mean,
        "features.denseblock1.denselayer1.norm1.weight": model.blocks[0].layers[0].bottleneck.bn.weight,
        "features.denseblock3.denselayer6.conv2.weight": model.blocks[2].layers[5].composite.conv.weight,
        "features.denseblock4.denselayer16.norm2.running_var": model.blocks[3].layers[15].composite.bn.running_var,
        "features.transition2.norm.bias": model.transitions[1].bn.bias,
        "features.transition3.conv.weight": model.transitions[2].conv.weight,
        "features.norm5.weight": model.final_bn.weight,
        "classifier.weight": model.head.fc.weight,
    }
    assert_same_values(pairs, source)


def test_key_map_accepts_torchvision_old_layer_key_spelling():
    """torchvision's published files spell dense-layer keys 'denselayer1.norm.1.weight'."""
    source = synthesize_state_dict("torchvision/densenet121")
    old = {re.sub(r"(denselayer\d+\.(norm|conv))([12])\.", r"\1.\3.", key): v for key, v in source.items()}
    assert "features.denseblock2.denselayer3.norm.1.weight" in old and "features.norm5.weight" in old
    assert "features.denseblock4.denselayer16.conv.2.weight" in old
    assert torchvision_key_map(old).keys() == torchvision_key_map(source).keys()


def test_bad_drop_rate_is_a_clear_error():
    with pytest.raises(DcnnError, match="drop_rate"):
        create_model("densenet121", drop_rate=1.5)


def test_min_input_size_is_the_smallest_that_works():
    _, size, _ = get_model_cfg("densenet121").min_input_size
    model = build_meta("densenet121")
    assert model(torch.zeros(1, 3, size, size, device="meta")).shape == (1, 1000)
    with pytest.raises(RuntimeError):
        model(torch.zeros(1, 3, size - 1, size - 1, device="meta"))
