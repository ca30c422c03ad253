"""onnxruntime computes what PyTorch computes, for one model of every family in the zoo."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import pytest
import torch

from dcnn.data.preprocess import Preprocess
from dcnn.export import export_classifier
from dcnn.export.exporter import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET
from dcnn.export.runtime import OnnxClassifier
from dcnn.models import create_model, list_models
from dcnn.models._registry import get_entry
from tests.export.conftest import calibrate

# One model a family. Those listed: a variant with what defines the family (plain18 and plain20 lack the
# shortcuts, mobilenet_v2 has inverted residuals, googlenet its auxiliary classifiers, vgg11_bn batch norm),
# small enough to export quickly. Any other family (one added later too): its variant with the fewest
# parameters.
REPRESENTATIVES = {"resnet": "resnet18", "cifar_resnet": "resnet20", "preact_resnet": "preact_resnet18",
                   "mobilenet": "mobilenet_v2", "densenet": "densenet_bc_100_k12", "googlenet": "googlenet",
                   "alexnet": "alexnet", "vgg": "vgg11_bn"}
FAMILIES: dict[str, list[str]] = {}
for _name in list_models():
    FAMILIES.setdefault(get_entry(_name).family, []).append(_name)
# torch's exporter takes 2 to 33 s of CPU a model, 130 to 210 s for one of every family (BENCHMARKS.md); the
# cases spread over the test workers. The lowest and highest operator sets on LeNet-5 (sum pooling as 4 x
# average pooling, scaled tanh, RBF output) and GoogLeNet (auxiliary classifiers: main output only);
# torch.onnx's default elsewhere.
OPSETS = {"lenet": MIN_OPSET, "googlenet": MAX_OPSET}


def representative(family: str) -> str:
    return REPRESENTATIVES.get(family) or min(FAMILIES[family], key=lambda n: get_entry(n).cfg.num_params or 0)


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_onnxruntime_matches_pytorch(family, tmp_path):
    name = representative(family)
    _, min_h, min_w = get_entry(name).cfg.min_input_size
    torch.manual_seed(0)
    model = create_model(name, num_classes=10)
    size = (model.in_chans, max(min_h, 32), max(min_w, 32))  # small, at least the model's minimum
    images = torch.randn(9, *size, generator=torch.Generator().manual_seed(0))
    model = calibrate(model, images[1:])
    prep = replace(Preprocess.for_model(model), input_size=size)
    opset = OPSETS.get(family, DEFAULT_OPSET)
    path = export_classifier(model, prep, [str(i) for i in range(10)], tmp_path / "m.onnx", opset=opset)
    assert [(o.domain, o.version) for o in onnx.load(str(path)).opset_import] == [("", opset)]
    session = OnnxClassifier(path)
    assert [o.name for o in session.session.get_outputs()] == ["logits"]  # auxiliary heads are not exported
    assert session.session.get_inputs()[0].shape == [1, *size]
    x = images[:1]
    with torch.no_grad():
        expected = model(x).numpy()
    got = session(x).numpy()
    spread = expected.max() - expected.min()
    assert got.shape == (1, 10) and spread > 1e-6
    # fp32 parity: below 1e-4 of the logits' spread (what decides a prediction; 1e-4 itself where logits are
    # O(1), as a trained model's are: from random weights they range from 1e-3 to 1e2), plus 64 float32
    # roundings of their magnitude (LeNet-5's RBF logits are all near -84, their spread 0.01).
    tolerance = 1e-4 * spread + 64 * np.finfo(np.float32).eps * np.abs(expected).max()
    assert np.abs(got - expected).max() < tolerance, f"{name}: {np.abs(got - expected).max()} > {tolerance}"
