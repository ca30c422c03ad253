"""Network in Network: mlpconv blocks, global average pooling of class maps (Lin et al. 2013)."""

from __future__ import annotations

import torch
import torch.nn as nn

from dcnn import create_model
from dcnn.models import load_pretrained


def params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_cifar_parameters_hand_computed():
    with torch.device("meta"):
        model = create_model("nin_cifar")
    blocks = model.features
    assert params(blocks.block1) == (192 * 3 * 25 + 192) + (160 * 192 + 160) + (96 * 160 + 96)
    assert params(blocks.block2) == (192 * 96 * 25 + 192) + 2 * (192 * 192 + 192)
    assert params(blocks.block3) == (192 * 192 * 9 + 192) + (192 * 192 + 192)
    assert params(model.head) == 10 * 192 + 10
    assert params(model) == 966_986 and model.num_classes == 10


def test_mlpconv_blocks_are_a_kxk_conv_and_two_1x1_convs_with_relu():
    model = create_model("nin")
    for block in model.features:
        layers = [m for m in block if hasattr(m, "conv")]
        assert [type(layer.act) for layer in layers] == [nn.ReLU] * len(layers)  # eq. 2
        assert all(layer.conv.kernel_size == (1, 1) for layer in layers[1:])
    kernels = [block.layer1.conv.kernel_size[0] for block in model.features]
    assert kernels == [11, 5, 3, 3]
    # The last block's third layer is the classifier: 1024 -> 1000 class maps.
    assert model.head.fc.weight.shape == (1000, 1024, 1, 1)


def test_map_sizes_and_dropout_between_blocks():
    with torch.device("meta"):
        sizes = {}
        for name, side in (("nin_cifar", 32), ("nin", 224)):
            model = create_model(name)
            x = torch.empty(1, 3, side, side)
            sizes[name] = []
            for block in model.features:
                x = block(x)
                sizes[name].append(x.shape[-1])
    assert sizes == {"nin_cifar": [16, 8, 8], "nin": [27, 13, 6, 6]}  # pooling halves, rounding up
    blocks = list(create_model("nin_cifar").features)
    assert [block.drop.p for block in blocks[:-1]] == [0.5, 0.5] and not hasattr(blocks[-1], "drop")
    assert [type(block.pool) for block in blocks[:-1]] == [nn.MaxPool2d, nn.AvgPool2d]


def test_scores_are_the_global_average_of_rectified_class_maps():
    torch.manual_seed(0)
    model = create_model("nin_cifar").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.forward_features(x)
        class_map = model.head.class_map(features)
        assert class_map.shape == (2, 10, 8, 8) and (class_map >= 0).all()
        torch.testing.assert_close(model(x), class_map.mean(dim=(2, 3)))
        assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)
        assert model.num_features == 192


def test_fc_head_is_pooling_then_linear_and_its_checkpoint_loads_into_the_conv_head(tmp_path):
    torch.manual_seed(0)
    fc_model = create_model("nin_cifar", head="fc").eval()
    assert isinstance(fc_model.head.fc, nn.Linear)
    path = tmp_path / "nin_fc.pth"
    torch.save(fc_model.state_dict(), path)
    conv_model = load_pretrained(create_model("nin_cifar"), path).eval()
    x = torch.randn(2, 3, 40, 36)
    with torch.no_grad():
        features = fc_model.forward_features(x)
        linear_scores = fc_model.head.fc(features.mean(dim=(2, 3)))
        torch.testing.assert_close(fc_model(x), linear_scores)
        # The conv head rectifies the class maps before pooling; without that ReLU it is the same.
        maps = conv_model.head.fc(features)
        torch.testing.assert_close(maps.mean(dim=(2, 3)), linear_scores, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(conv_model(x), maps.relu().mean(dim=(2, 3)))


def test_reset_classifier_keeps_the_head_type():
    model = create_model("nin", num_classes=0).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1024)
        model.reset_classifier(20)
        assert isinstance(model.head.fc, nn.Conv2d)
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 20)
