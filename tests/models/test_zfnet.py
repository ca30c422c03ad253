"""ZFNet against Figure 3 of Zeiler & Fergus 2013."""

from __future__ import annotations

import pytest
import torch

from dcnn import create_model
from dcnn.layers.lrn import LocalResponseNorm2d


def params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_map_sizes_of_figure_3():
    with torch.device("meta"):
        model = create_model("zfnet")
        x = torch.empty(1, 3, 224, 224)
        before_pooling, after_stage = [], []
        for stage in model.features:
            before_pooling.append(tuple(stage.act(stage.conv(x)).shape[1:]))
            x = stage(x)
            after_stage.append(tuple(x.shape[1:]))
    assert before_pooling[:2] == [(96, 110, 110), (256, 26, 26)]
    assert after_stage == [(96, 55, 55), (256, 13, 13), (384, 13, 13), (384, 13, 13), (256, 6, 6)]


def test_parameters_hand_computed_no_towers():
    with torch.device("meta"):
        model = create_model("zfnet")
    stages = model.features
    assert [params(s) for s in stages] == [
        96 * 3 * 7 * 7 + 96,
        256 * 96 * 5 * 5 + 256,
        384 * 256 * 3 * 3 + 384,
        384 * 384 * 3 * 3 + 384,
        256 * 384 * 3 * 3 + 256,
    ]
    assert all(stage.conv.groups == 1 for stage in stages)  # trained on a single GPU
    assert [s.conv.kernel_size for s in stages][:2] == [(7, 7), (5, 5)]
    assert [s.conv.stride for s in stages][:2] == [(2, 2), (2, 2)]
    assert params(model) == 62_357_608


def test_pooling_then_contrast_normalization_in_layers_1_and_2():
    model = create_model("zfnet")
    for stage in (model.features.conv1, model.features.conv2):
        assert list(dict(stage.named_children())) == ["conv", "act", "pool", "lrn"]
        assert isinstance(stage.lrn, LocalResponseNorm2d)
        assert (stage.pool.kernel_size, stage.pool.stride, stage.pool.ceil_mode) == (3, 2, True)
    assert list(dict(model.features.conv3.named_children())) == ["conv", "act"]


def test_initialization_of_section_3():
    torch.manual_seed(0)
    model = create_model("zfnet")
    for layer in [*(s.conv for s in model.features), model.head.fc6, model.head.fc7, model.head.fc8]:
        assert layer.weight.std().item() == pytest.approx(0.01, rel=0.05)
        assert not layer.bias.any()


def test_dropout_in_the_fully_connected_layers_only_in_training():
    torch.manual_seed(0)
    model = create_model("zfnet", num_classes=4)
    assert model.head.drop6.p == model.head.drop7.p == 0.5
    x = torch.randn(1, 3, 47, 47)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), model(x))
        assert not torch.equal(model.train()(x), model(x))
