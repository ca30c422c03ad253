"""Tests every registered model: parameter counts against the reference facts, the uniform interface,
and reference checkpoints that load into the right tensors and compute the reference's function."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from dcnn.errors import DcnnError
from dcnn.models import create_model, get_model_cfg, list_models, load_pretrained
from tests.models.reference import (
    fixed_input,
    load_output_fixture,
    reference,
    synthesize_state_dict,
)

ALL_MODELS = list_models()
REFERENCED = [n for n in ALL_MODELS if get_model_cfg(n).reference]


def logits_of(output: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_is_populated():
    assert "lenet5" in ALL_MODELS


@pytest.mark.parametrize("name", ALL_MODELS)
def test_parameter_count(name):
    cfg = get_model_cfg(name)
    with torch.device("meta"):
        model = create_model(name)
    assert cfg.num_params is not None, f"{name}: ModelCfg.num_params must give the reference or paper count"
    assert count_params(model) == cfg.num_params
    if cfg.reference:
        assert cfg.num_params == reference(cfg.reference)["params"]


@pytest.mark.parametrize("name", ALL_MODELS)
def test_interface_forward_backward(name):
    cfg = get_model_cfg(name)
    _, h, w = cfg.min_input_size
    torch.manual_seed(0)
    model = create_model(name, num_classes=7)
    assert model.num_classes == 7 and model.in_chans == cfg.input_size[0]
    model.train()
    for size in ((h, w), (h + 13, w + 21)):
        out = model(torch.randn(2, cfg.input_size[0], *size))
        outputs = out if isinstance(out, tuple) else (out,)
        for o in outputs:
            assert o.shape == (2, 7), f"{name} at {size}"
            assert torch.isfinite(o).all()
    sum(o.sum() for o in outputs).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)

    model.eval()
    x = torch.randn(1, cfg.input_size[0], h, w)
    features = model.forward_features(x)
    assert features.dim() == 4
    assert model.forward_head(features, pre_logits=True).shape == (1, model.num_features)
    model.reset_classifier(3)
    assert model.num_classes == 3
    with torch.no_grad():
        assert logits_of(model(x)).shape == (1, 3)

    with torch.device("meta"):  # no second initialization: the weights come from `model`
        clone = create_model(name, num_classes=3)
    clone.load_state_dict(model.state_dict(), assign=True)
    clone.eval()
    with torch.no_grad():
        torch.testing.assert_close(clone(x), model(x))


@pytest.mark.parametrize("name", ALL_MODELS)
def test_grayscale_and_conv_head(name):
    cfg = get_model_cfg(name)
    _, h, w = cfg.min_input_size
    model = create_model(name, num_classes=5, in_chans=1, head="conv").eval()
    assert model.in_chans == 1
    with torch.no_grad():
        out = model(torch.randn(1, 1, h + 8, w + 8))
    assert logits_of(out).shape == (1, 5)


@pytest.mark.parametrize("name", REFERENCED)
def test_reference_checkpoint_loads_and_computes_the_same(name):
    cfg = get_model_cfg(name)
    source = synthesize_state_dict(cfg.reference)
    model = create_model(name).eval()
    load_pretrained(model, source)

    ours = model.state_dict()
    mapped = cfg.key_map(dict(source)) if cfg.key_map else source
    assert len(mapped) == len(source) == len(ours)
    for key, value in mapped.items():
        assert torch.equal(ours[key], value.reshape(ours[key].shape)), key

    fixture = load_output_fixture(cfg.reference)
    assert fixture is not None, f"record {cfg.reference} with scripts/make_reference_outputs.py"
    with torch.no_grad():
        logits = logits_of(model(fixed_input(fixture["input_shape"])))[0]
    expected = torch.tensor(fixture["logits"])
    scale = fixture["abs_sum"] / logits.numel()
    torch.testing.assert_close(logits[: len(expected)], expected, atol=1e-4 * scale + 1e-5, rtol=1e-4)
    assert logits.sum().item() == pytest.approx(fixture["sum"], abs=1e-4 * fixture["abs_sum"] + 1e-4)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_reference_files_load_with_another_class_count_and_grayscale(suffix, tmp_path):
    cfg = get_model_cfg("resnet18")
    source = synthesize_state_dict(cfg.reference)
    path = tmp_path / f"reference{suffix}"
    if suffix == ".pth":
        torch.save({"state_dict": source}, path)  # a wrapped checkpoint is unwrapped
    else:
        save_file(source, str(path))
    model = create_model("resnet18", num_classes=10, in_chans=1)
    fresh_fc = model.state_dict()["head.fc.weight"].clone()
    load_pretrained(model, path)
    ours = model.state_dict()
    torch.testing.assert_close(ours["head.fc.weight"], fresh_fc)  # re-initialized classifier kept
    # The grayscale first conv is the RGB kernel summed over channels.
    torch.testing.assert_close(ours[f"{cfg.first_conv}.weight"], source["conv1.weight"].sum(1, keepdim=True))
    torch.testing.assert_close(ours["stages.2.1.residual.conv2.conv.weight"], source["layer3.1.conv2.weight"])
    assert logits_of(model.eval()(torch.randn(1, 1, 40, 40))).shape == (1, 10)


def test_mismatched_checkpoint_lists_the_problem_keys(tmp_path):
    source = synthesize_state_dict("torchvision/resnet18")
    del source["layer1.0.bn1.running_mean"]
    source["extra.weight"] = torch.zeros(1)
    source["layer4.1.conv2.weight"] = torch.zeros(3, 3, 3, 3)
    path = tmp_path / "broken.safetensors"
    save_file(source, str(path))
    with pytest.raises(DcnnError) as info:
        load_pretrained(create_model("resnet18"), path)
    message = str(info.value)
    assert "missing keys: stages.0.0" in message and "unexpected keys: extra.weight" in message
    assert "mis-shaped keys: stages.3.1.residual.conv2.conv.weight (file (3, 3, 3, 3)" in message


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": object()}, path)
    with pytest.raises(DcnnError, match="refused to load"):
        load_pretrained(create_model("resnet18"), path)
    (tmp_path / "cut.safetensors").write_bytes(b"\x10\x00")
    with pytest.raises(DcnnError, match="not a readable checkpoint"):
        load_pretrained(create_model("resnet18"), tmp_path / "cut.safetensors")


@pytest.mark.parametrize(("options", "fragment"), [({"num_classes": -3}, "num_classes must be"),
                                                   ({"in_chans": 0}, "in_chans must be at least 1")])
def test_impossible_class_or_channel_counts_are_refused(options, fragment):
    with pytest.raises(DcnnError, match=fragment):
        create_model("resnet18", **options)
    assert create_model("resnet18", num_classes=0)(torch.zeros(1, 3, 64, 64)).shape == (1, 512)  # timm: features


def test_lenet_options_are_listed_and_inapplicable_ones_explained():
    with pytest.raises(DcnnError, match="Its options are: act, batch_norm, drop_rate, head, maps, pool_first"):
        create_model("lenet5_modern", batchnorm=True)
    with pytest.raises(DcnnError, match="rbf_scale is an option of lenet5"):
        create_model("lenet5_modern", rbf_scale=0.1)
