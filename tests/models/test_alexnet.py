"""AlexNet against the numbers of Krizhevsky et al. 2012 and torchvision's single-tower alexnet."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from dcnn import create_model
from dcnn.errors import DcnnError
from dcnn.layers.lrn import LocalResponseNorm2d
from dcnn.models import load_pretrained
from tests.models.reference import synthesize_state_dict


def params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_per_layer_parameters_hand_computed():
    with torch.device("meta"):
        model = create_model("alexnet")
    stages = model.features
    # conv2, conv4, conv5 read only their own tower (half the input maps): groups=2.
    assert params(stages.conv1) == 96 * 3 * 11 * 11 + 96
    assert params(stages.conv2) == 256 * 48 * 5 * 5 + 256
    assert params(stages.conv3) == 384 * 256 * 3 * 3 + 384
    assert params(stages.conv4) == 384 * 192 * 3 * 3 + 384
    assert params(stages.conv5) == 256 * 192 * 3 * 3 + 256
    head = model.head
    assert [params(head.fc6), params(head.fc7), params(head.fc8)] == [
        256 * 6 * 6 * 4096 + 4096,
        4096 * 4096 + 4096,
        4096 * 1000 + 1000,
    ]
    assert params(model) == 60_965_224  # "60 million parameters" (abstract)


def test_map_sizes_of_figure_2():
    with torch.device("meta"):
        model = create_model("alexnet")
        x = torch.empty(1, 3, 227, 227)
        conv1 = model.features.conv1
        assert conv1.act(conv1.conv(x)).shape == (1, 96, 55, 55)  # section 3.5: 55×55×96
        sizes = []
        for stage in model.features:
            x = stage(x)
            sizes.append(tuple(x.shape[1:]))
    assert sizes == [(96, 27, 27), (256, 13, 13), (384, 13, 13), (384, 13, 13), (256, 6, 6)]


def test_lrn_after_relu_before_pooling_with_the_papers_constants():
    model = create_model("alexnet")
    for name in ("conv1", "conv2"):
        stage = getattr(model.features, name)
        assert list(dict(stage.named_children())) == ["conv", "act", "lrn", "pool"]
        lrn = stage.lrn
        assert isinstance(lrn, LocalResponseNorm2d)
        assert (lrn.k, lrn.size, lrn.alpha, lrn.beta) == (2.0, 5, 1e-4, 0.75)
        assert (stage.pool.kernel_size, stage.pool.stride) == (3, 2)  # overlapping, section 3.4
    assert not any(isinstance(m, LocalResponseNorm2d) for m in model.features.conv3.modules())
    assert [stage.conv.groups for stage in model.features] == [1, 2, 1, 2, 2]


def test_towers_only_see_their_own_half():
    torch.manual_seed(0)
    conv2 = create_model("alexnet").features.conv2.conv
    x = torch.randn(1, 96, 9, 9)
    bumped = x.clone()
    bumped[:, :48] += 1.0  # first tower's maps
    changed = (conv2(bumped) - conv2(x)).abs().amax(dim=(0, 2, 3)) > 0
    assert changed[:128].all() and not changed[128:].any()


def test_initialization_of_section_5():
    torch.manual_seed(0)
    model = create_model("alexnet")
    convs = [stage.conv for stage in model.features]
    layers = [*convs, model.head.fc6, model.head.fc7, model.head.fc8]
    for layer in layers:
        assert layer.weight.std().item() == pytest.approx(0.01, rel=0.05)
    biases = [layer.bias.unique().tolist() for layer in layers]
    # "biases ... in the second, fourth, and fifth convolutional layers, as well as in the fully
    # connected hidden layers, with the constant 1 ... the remaining layers with the constant 0"
    assert biases == [[0.0], [1.0], [0.0], [1.0], [1.0], [1.0], [1.0], [0.0]]


@pytest.fixture(scope="module")
def torchvision_checkpoint(tmp_path_factory) -> tuple[dict[str, torch.Tensor], str]:
    source = synthesize_state_dict("torchvision/alexnet")
    path = tmp_path_factory.mktemp("alexnet") / "alexnet.safetensors"
    save_file(source, str(path))
    return source, str(path)


def test_torchvision_names_map_to_our_layers(torchvision_checkpoint):
    source, path = torchvision_checkpoint
    model = load_pretrained(create_model("alexnet_owt"), path)
    assert torch.equal(model.features.conv1.conv.weight, source["features.0.weight"])
    assert torch.equal(model.features.conv4.conv.bias, source["features.8.bias"])
    assert torch.equal(model.features.conv5.conv.weight, source["features.10.weight"])
    assert torch.equal(model.head.fc6.weight, source["classifier.1.weight"])
    assert torch.equal(model.head.fc8.bias, source["classifier.6.bias"])


def test_conv_head_computes_the_fc_heads_function_and_slides_beyond(torchvision_checkpoint):
    _, path = torchvision_checkpoint
    fc_model = load_pretrained(create_model("alexnet_owt"), path).eval()
    conv_model = load_pretrained(create_model("alexnet_owt", head="conv"), path).eval()
    assert conv_model.head.fc6.weight.shape == (4096, 256, 6, 6)
    torch.manual_seed(0)
    with torch.no_grad():
        for size in (224, 100):  # native 6×6 map, and a 2×2 map pooled up to 6×6
            x = torch.randn(1, 3, size, size)
            torch.testing.assert_close(conv_model(x), fc_model(x), rtol=1e-4, atol=1e-4)
            features = fc_model.forward_features(x)
            torch.testing.assert_close(
                conv_model.forward_head(features, pre_logits=True),
                fc_model.forward_head(features, pre_logits=True),
                rtol=1e-4,
                atol=1e-4,
            )
        x = torch.randn(1, 3, 256, 288)  # 7×8 map: fc6 slides to a 2×3 class map
        class_map = conv_model.head.class_map(conv_model.forward_features(x))
        assert class_map.shape == (1, 1000, 2, 3)
        torch.testing.assert_close(conv_model(x), class_map.mean(dim=(2, 3)))
        with pytest.raises(DcnnError, match="head='conv'"):
            fc_model.head.class_map(fc_model.forward_features(x))


def test_reset_classifier_to_features():
    model = create_model("alexnet", num_classes=10).eval()
    x = torch.randn(2, 3, 67, 67)
    with torch.no_grad():
        pre_logits = model.forward_head(model.forward_features(x), pre_logits=True)
        model.reset_classifier(0)
        assert model.num_features == 4096 and pre_logits.shape == (2, 4096)
        torch.testing.assert_close(model(x), pre_logits)
