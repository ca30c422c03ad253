"""GoogLeNet (Szegedy et al. 2014): the paper's claims and Table 1, and torchvision's variant."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from dcnn.errors import DcnnError
from dcnn.layers.conv_bn_act import ConvBnAct
from dcnn.layers.inception import Conv, InceptionBlock, Pool
from dcnn.layers.lrn import LocalResponseNorm2d
from dcnn.models import create_model, get_model_cfg
from dcnn.models.pretrained import load_pretrained
from tests.models.reference import reference, synthesize_state_dict
from tests.models.test_inception import layer_shapes, renamed_reference_keys


def count(module: torch.nn.Module, weights_only: bool = False) -> int:
    return sum(p.numel() for n, p in module.named_parameters() if not (weights_only and n.endswith("bias")))


def test_reductions_cut_inception_3a_parameters():
    """§4: 1×1 convolutions "compute reductions before the expensive 3×3 and 5×5 convolutions"."""
    # Hand count, weights + biases, on inception (3a)'s 192 input channels.
    unreduced_by_hand = (
        (192 * 64 + 64)  # 1×1, 64
        + (192 * 9 * 128 + 128)  # 3×3, 128, directly on the input
        + (192 * 25 * 32 + 32)  # 5×5, 32, directly on the input
        + (192 * 32 + 32)  # pool projection, 32
    )
    reduced_by_hand = (
        (192 * 64 + 64)
        + (192 * 96 + 96) + (96 * 9 * 128 + 128)  # 1×1 reduction to 96, then 3×3
        + (192 * 16 + 16) + (16 * 25 * 32 + 32)  # 1×1 reduction to 16, then 5×5
        + (192 * 32 + 32)
    )  # fmt: skip
    assert (unreduced_by_hand, reduced_by_hand) == (393_472, 163_696)

    with torch.device("meta"):
        model = create_model("googlenet")
        unreduced = InceptionBlock(
            192, ((Conv(64),), (Conv(128, 3),), (Conv(32, 5),), (Pool("max"), Conv(32))), partial(ConvBnAct, norm=False)
        )
    assert unreduced.out_channels == model.features.inception_3a.out_channels == 256
    assert count(unreduced) == unreduced_by_hand
    assert count(model.features.inception_3a) == reduced_by_hand
    assert unreduced_by_hand / reduced_by_hand > 2.4  # the same 256 output maps for 42% of the parameters


# Table 1's "params" column, in K = 1024 weights (no biases): 3a is 163,328 = 159.5K, printed 159K.
TABLE_1_PARAMS_K = {
    "conv1": 2.7, "conv2": 112, "inception_3a": 159, "inception_3b": 380, "inception_4a": 364,
    "inception_4b": 437, "inception_4c": 463, "inception_4d": 580, "inception_4e": 840,
    "inception_5a": 1072, "inception_5b": 1388, "linear": 1000,
}  # fmt: skip


def test_parameters_against_table_1():
    with torch.device("meta"):
        model = create_model("googlenet", aux_logits=False)
    ours = {name: count(layer, weights_only=True) for name, layer in model.features.named_children()}
    ours["conv2"] += ours.pop("conv2_reduce")  # Table 1's conv2 row holds the 1×1 reduction too
    ours["linear"] = count(model.head, weights_only=True)
    for name in ("conv2", "inception_3a", "inception_3b", "inception_4b", "linear"):
        assert ours[name] / 1024 == pytest.approx(TABLE_1_PARAMS_K[name], abs=1.0), name
    table_total = sum(TABLE_1_PARAMS_K.values()) * 1024  # 6,797.7K: the "6.8M" of the paper
    assert sum(ours.values()) == 6_990_272
    assert sum(ours.values()) == pytest.approx(table_total, rel=0.005)
    assert count(model) == 6_998_552  # with biases: the main network of the docstring


def test_default_count_includes_both_auxiliary_classifiers():
    with torch.device("meta"):
        model = create_model("googlenet")
    aux = [count(head) for head in model.aux_heads.values()]
    # 1×1 conv 128 (+bias), FC 2048→1024, FC 1024→1000 (§5), on 512 and 528 channels.
    assert aux == [c * 128 + 128 + 2048 * 1024 + 1024 + 1024 * 1000 + 1000 for c in (512, 528)]
    assert count(model) == 6_998_552 + sum(aux) == get_model_cfg("googlenet").num_params


def test_table_1_output_sizes():
    with torch.device("meta"):
        shapes = layer_shapes(create_model("googlenet"), 224)
    expected = {
        "conv1": (64, 112, 112), "pool1": (64, 56, 56), "conv2": (192, 56, 56), "pool2": (192, 28, 28),
        "inception_3a": (256, 28, 28), "inception_3b": (480, 28, 28), "pool3": (480, 14, 14),
        "inception_4a": (512, 14, 14), "inception_4b": (512, 14, 14), "inception_4c": (512, 14, 14),
        "inception_4d": (528, 14, 14), "inception_4e": (832, 14, 14), "pool4": (832, 7, 7),
        "inception_5a": (832, 7, 7), "inception_5b": (1024, 7, 7),
    }  # fmt: skip
    assert {name: shapes[name] for name in expected} == expected


def test_paper_layers_lrn_and_5x5_versus_torchvision_variant():
    with torch.device("meta"):
        paper, tv = create_model("googlenet"), create_model("googlenet_bn")
    names = list(paper.features._modules)
    assert names[names.index("pool1") + 1] == "norm1" and names[names.index("conv2") + 1] == "norm2"
    assert all(isinstance(getattr(paper.features, n), LocalResponseNorm2d) for n in ("norm1", "norm2"))
    assert not any(isinstance(m, LocalResponseNorm2d) for m in tv.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in paper.modules())
    assert paper.features.inception_3a.branches[2][1].conv.kernel_size == (5, 5)
    assert tv.features.inception_3a.branches[2][1].conv.kernel_size == (3, 3)
    assert all(m.eps == 1e-3 for m in tv.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert paper.head.drop.p == 0.4 and tv.head.drop.p == 0.2
    assert (paper.features.pool4.kernel_size, tv.features.pool4.kernel_size) == (3, 2)


@pytest.mark.parametrize("name", ["googlenet", "googlenet_bn"])
def test_auxiliary_outputs_in_training_mode_only(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5)
    assert model.aux_loss_weights == (0.3, 0.3)
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(1)  # the auxiliary classifier's dropout is the first random draw of a forward pass
    logits, aux1, aux2 = model.train()(x)
    assert logits.shape == aux1.shape == aux2.shape == (2, 5)
    # aux1 reads inception (4a), aux2 inception (4d): network order, unlike torchvision's tuple.
    up_to_4a = model.features[: list(model.features._modules).index("inception_4a") + 1]
    torch.manual_seed(1)
    torch.testing.assert_close(model.aux_heads.inception_4a(up_to_4a(model.input_transform(x))), aux1)
    with torch.no_grad():
        assert isinstance(model.eval()(x), torch.Tensor)
    with torch.device("meta"):
        plain = create_model(name, num_classes=5, aux_logits=False).train()
        assert isinstance(plain(x.to("meta")), torch.Tensor) and plain.aux_loss_weights == ()
    assert not any(k.startswith("aux") for k in plain.state_dict())


def test_torchvision_names_map_by_value():
    cfg = get_model_cfg("googlenet_bn")
    renamed = renamed_reference_keys(cfg)
    assert renamed["conv2.conv.weight"] == "features.conv2_reduce.conv.weight"
    assert renamed["conv3.bn.running_var"] == "features.conv2.bn.running_var"
    assert renamed["inception3a.branch1.conv.weight"] == "features.inception_3a.branches.0.0.conv.weight"
    assert renamed["inception4e.branch3.1.bn.bias"] == "features.inception_4e.branches.2.1.bn.bias"
    assert renamed["inception5b.branch4.1.conv.weight"] == "features.inception_5b.branches.3.1.conv.weight"
    assert renamed["aux2.fc1.weight"] == "aux_heads.inception_4d.hidden.0.weight"
    assert renamed["aux1.fc2.bias"] == "aux_heads.inception_4a.fc.bias"
    assert renamed["fc.weight"] == "head.fc.weight"
    shapes = dict(reference(cfg.reference)["state_dict"])
    assert shapes["inception3a.branch3.1.conv.weight"] == [32, 16, 3, 3]  # torchvision's "5×5" is 3×3


def test_transform_input_takes_imagenet_normalized_inputs():
    torch.manual_seed(0)
    default = create_model("googlenet_bn", aux_logits=False).eval()
    with torch.device("meta"):
        raw = create_model("googlenet_bn", aux_logits=False, transform_input=False).eval()
    raw.load_state_dict(default.state_dict(), assign=True)
    pixels = torch.rand(1, 3, 32, 32)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    imagenet = (pixels - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(default(imagenet), raw((pixels - 0.5) / 0.5), atol=1e-4, rtol=1e-4)
    assert isinstance(create_model("googlenet_bn", in_chans=1).input_transform, torch.nn.Identity)
    with pytest.raises(DcnnError, match="transform_input=False"):
        create_model("googlenet_bn", in_chans=1, transform_input=True)


def test_checkpoint_with_auxiliary_classifiers_loads_into_a_model_without_them():
    checkpoint = synthesize_state_dict(get_model_cfg("googlenet_bn").reference)
    assert any(key.startswith("aux1.") for key in checkpoint)
    with_aux = load_pretrained(create_model("googlenet_bn"), checkpoint).eval()
    without_aux = load_pretrained(create_model("googlenet_bn", aux_logits=False), checkpoint).eval()  # strict
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(without_aux(x), with_aux(x))
