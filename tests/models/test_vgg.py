"""VGG against Table 1, Table 2 and section 2.3 of Simonyan & Zisserman 2014, and torchvision's names.

Loading torchvision checkpoints by value, for every key and the function, is tested for each variant in
test_zoo.py; loading linear weights into the convolutional head (shared with AlexNet) in test_alexnet.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from dcnn import create_model
from dcnn.models import get_model_cfg
from dcnn.models.vgg import vgg_stage
from tests.models.reference import reference

VARIANTS = ["vgg11", "vgg13", "vgg16", "vgg19"]


def meta_model(name: str, **options) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **options)


def convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.features.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize(
    ("name", "depth", "millions"), [("vgg11", 11, 133), ("vgg13", 13, 133), ("vgg16", 16, 138), ("vgg19", 19, 144)]
)
def test_table_1_weight_layers_and_table_2_parameters(name, depth, millions):
    model = meta_model(name)
    layers = convs(model)
    assert len(layers) + 3 == depth  # conv layers + fc6, fc7, fc8
    assert all(c.kernel_size == (3, 3) and c.stride == (1, 1) and c.padding == (1, 1) for c in layers)
    widths = [[m.out_channels for m in stage.modules() if isinstance(m, nn.Conv2d)] for stage in model.features]
    assert [set(w) for w in widths] == [{64}, {128}, {256}, {512}, {512}]
    assert all((stage.pool.kernel_size, stage.pool.stride) == (2, 2) for stage in model.features)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6) == millions  # Table 2


def test_batch_norm_after_every_convolution():
    model = meta_model("vgg16_bn")
    blocks = [m for stage in model.features for m in stage if not isinstance(m, nn.MaxPool2d)]
    assert len(blocks) == 13
    for block in blocks:
        assert list(dict(block.named_children())) == ["conv", "bn", "act"]
        assert block.conv.bias is not None and block.bn.eps == 1e-5  # as torchvision
    assert not any(isinstance(m, nn.BatchNorm2d) for m in meta_model("vgg16").modules())


def test_three_3x3_layers_hold_27c2_weights_against_49c2_with_the_same_7x7_receptive_field():
    # Section 2.3, counted on our layers: VGG-16's fifth stage is three 3×3 convs of C = 512 maps.
    stage5 = meta_model("vgg16").features.stage5
    c = 512
    stacked = [m.weight.numel() for m in stage5.modules() if isinstance(m, nn.Conv2d)]
    assert stacked == [9 * c * c] * 3 and sum(stacked) == 27 * c * c
    assert nn.Conv2d(c, c, 7, bias=False).to("meta").weight.numel() == 49 * c * c

    # Receptive field: which input pixels move one output unit, with positive weights so that
    # every ReLU passes. Built with the same `vgg_stage` our models use (small C), pool left out.
    small = 4
    stack = vgg_stage(small, small, 3, batch_norm=False)[:-1]
    single = nn.Conv2d(small, small, 7, padding=3)
    footprints = []
    for layers in (stack, single):
        for param in layers.parameters():
            nn.init.constant_(param, 0.05)
        x = torch.ones(1, small, 15, 15, requires_grad=True)
        layers(x)[0, 0, 7, 7].backward()
        footprints.append(x.grad[0].abs().sum(dim=0) > 0)
    window = torch.zeros(15, 15, dtype=torch.bool)
    window[4:11, 4:11] = True  # 7×7 around the centre
    assert torch.equal(footprints[0], window) and torch.equal(footprints[1], window)


@pytest.mark.parametrize("name", [*VARIANTS, *(f"{v}_bn" for v in VARIANTS)])
def test_key_map_renames_every_torchvision_key_to_ours_with_the_same_shape(name):
    cfg = get_model_cfg(name)
    names_and_shapes = reference(cfg.reference)["state_dict"]
    mapped = cfg.key_map({key: torch.empty(shape, device="meta") for key, shape in names_and_shapes})
    ours = meta_model(name).state_dict()
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {k: tuple(v.shape) for k, v in ours.items()}


def test_torchvision_names_spot_checks():
    prefixes = get_model_cfg("vgg16_bn").key_map
    renamed = prefixes(
        {k: torch.zeros(1) for k in ("features.40.weight", "features.41.running_var", "classifier.3.bias")}
    )
    assert set(renamed) == {
        "features.stage5.conv3.conv.weight",  # torchvision's 14th module triple: conv, BN, ReLU
        "features.stage5.conv3.bn.running_var",
        "head.fc7.bias",
    }
    renamed = get_model_cfg("vgg19").key_map({"features.34.weight": torch.zeros(1)})
    assert set(renamed) == {"features.stage5.conv4.conv.weight"}


def test_any_input_from_32_pixels_and_pre_logits():
    torch.manual_seed(0)
    model = create_model("vgg11", num_classes=5).eval()
    with torch.no_grad():
        features = model.forward_features(torch.randn(2, 3, 32, 40))
        assert features.shape == (2, 512, 1, 1)
        assert model.forward_head(features, pre_logits=True).shape == (2, 4096) and model.num_features == 4096
        model.reset_classifier(0)
        assert model(torch.randn(1, 3, 33, 33)).shape == (1, 4096)
