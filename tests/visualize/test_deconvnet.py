"""The deconvnet against a projection computed by hand with explicit loops, and on zoo models
against captum's neuron deconvolution (an independent implementation through autograd hooks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from captum.attr import NeuronDeconvolution

from dcnn.errors import DcnnError
from dcnn.models import create_model
from dcnn.visualize.deconvnet import deconvnet, unpool
from tests.visualize.tiny import Net, seeded

W1 = np.array([[[[1, 0, -1], [2, 0, -2], [1, 0, -1]]], [[[0, 1, 0], [1, -4, 1], [0, 1, 0]]]], dtype=np.float64)
B1 = np.array([0.5, -0.25])
BN_MEAN, BN_VAR, BN_GAMMA, BN_BETA = np.array([0.1, -0.2]), np.array([4.0, 0.25]), np.array([3.0, -0.5]), \
    np.array([0.3, 0.1])
W2 = np.round(np.random.default_rng(5).normal(size=(2, 2, 3, 3)), 1)  # 3x3 conv 2→2, padding 1


def tiny_net() -> Net:
    """conv 3x3 (1→2) → BN → ReLU → conv 3x3 (2→2, padded) → ReLU → max pool 2: an 8x8 input gives
    3x3 maps."""
    features = nn.Sequential()
    features.add_module("conv1", nn.Conv2d(1, 2, 3))
    features.add_module("bn", nn.BatchNorm2d(2, eps=0.0))
    features.add_module("relu1", nn.ReLU())
    features.add_module("conv2", nn.Conv2d(2, 2, 3, padding=1, bias=False))
    features.add_module("relu2", nn.ReLU())
    features.add_module("pool", nn.MaxPool2d(2))
    net = Net(features, 2).double()
    with torch.no_grad():
        net.features.conv1.weight.copy_(torch.from_numpy(W1))
        net.features.conv1.bias.copy_(torch.from_numpy(B1))
        for name, value in (("running_mean", BN_MEAN), ("running_var", BN_VAR), ("weight", BN_GAMMA),
                            ("bias", BN_BETA)):
            getattr(net.features.bn, name).copy_(torch.from_numpy(value))
        net.features.conv2.weight.copy_(torch.from_numpy(W2))
    return net.eval()


def by_hand(x: np.ndarray, channel: int | None, keep: str) -> tuple[np.ndarray, int, tuple[int, int]]:
    """Zeiler & Fergus, Sec. 2.1, one loop at a time, for an (8, 8) input."""
    conv1 = np.zeros((2, 6, 6))
    for c in range(2):
        for i in range(6):
            for j in range(6):
                conv1[c, i, j] = B1[c] + sum(W1[c, 0, a, b] * x[i + a, j + b] for a in range(3) for b in range(3))
    scale = BN_GAMMA / np.sqrt(BN_VAR)
    relu1 = np.maximum((conv1 - BN_MEAN[:, None, None]) * scale[:, None, None] + BN_BETA[:, None, None], 0)
    padded = np.pad(relu1, ((0, 0), (1, 1), (1, 1)))
    conv2 = np.zeros((2, 6, 6))
    for o in range(2):
        for i in range(6):
            for j in range(6):
                conv2[o, i, j] = sum(W2[o, c, a, b] * padded[c, i + a, j + b]
                                     for c in range(2) for a in range(3) for b in range(3))
    relu2 = np.maximum(conv2, 0)
    pooled, switches = np.zeros((2, 3, 3)), {}
    for c in range(2):
        for i in range(3):
            for j in range(3):
                window = relu2[c, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
                a, b = divmod(int(window.argmax()), 2)
                pooled[c, i, j], switches[c, i, j] = window[a, b], (2 * i + a, 2 * j + b)
    if channel is None:
        channel = int(pooled.reshape(2, -1).max(axis=1).argmax())
    position = divmod(int(pooled[channel].argmax()), 3)
    signal = np.zeros((2, 3, 3))
    if keep == "max":
        signal[channel][position] = pooled[channel][position]
    else:
        signal[channel] = pooled[channel]
    unpooled = np.zeros((2, 6, 6))
    for (c, i, j), (a, b) in switches.items():
        unpooled[c, a, b] += signal[c, i, j]
    rectified, back2 = np.maximum(unpooled, 0), np.zeros((2, 8, 8))  # ReLU, then conv2's transpose (padded)
    for o in range(2):
        for i in range(6):
            for j in range(6):
                for c in range(2):
                    back2[c, i:i + 3, j:j + 3] += W2[o, c] * rectified[o, i, j]
    back2 = back2[:, 1:-1, 1:-1]
    back1 = np.maximum(back2, 0) * scale[:, None, None]  # ReLU, then BN's transpose (its scale)
    pixels = np.zeros((8, 8))
    for c in range(2):
        for i in range(6):
            for j in range(6):
                for a in range(3):
                    for b in range(3):
                        pixels[i + a, j + b] += W1[c, 0, a, b] * back1[c, i, j]
    return pixels, channel, position


@pytest.mark.parametrize(("channel", "keep"), [(None, "max"), (None, "map"), (1, "max")])
def test_projection_equals_the_hand_computed_one(channel, keep):
    x = np.random.default_rng(0).normal(size=(8, 8))
    expected, expected_channel, position = by_hand(x, channel, keep)
    net = tiny_net()
    projection = deconvnet(net, torch.from_numpy(x)[None, None], "features.pool", channel, keep)
    assert projection.layer == "features.pool"
    assert int(projection.channel[0]) == expected_channel and tuple(projection.position[0].tolist()) == position
    np.testing.assert_allclose(projection.pixels[0, 0].numpy(), expected, rtol=1e-12, atol=1e-12)
    assert np.abs(expected).max() > 0  # not a zero projection, which any rule would match


def test_unpooling_adds_values_sent_to_the_same_place():
    signal = torch.tensor([[[[1.0, 2.0, 3.0]]]])
    switches = torch.tensor([[[[0, 2, 2]]]])  # overlapping windows whose maxima coincide
    assert unpool(signal, switches, torch.Size([1, 1, 1, 4])).tolist() == [[[[1.0, 0.0, 5.0, 0.0]]]]


def neuron_deconvolution(model: nn.Module, x: torch.Tensor, layer: str, channel: int, position: list[int],
                         activation: float) -> torch.Tensor:
    """captum's deconvolution of one unit, scaled by its activation (the deconvnet's signal)."""
    module = dict(model.named_modules())[layer]
    with pytest.warns(UserWarning):
        return NeuronDeconvolution(model, module).attribute(x, (channel, *position)) * activation


@pytest.mark.parametrize(("name", "size", "layer"), [
    # overlapping 3x3 stride-2 max pools (ceil mode), LRN, inception branches joined by concatenation
    ("googlenet", 32, "features.inception_3b"),
    ("resnet18", 64, "stages.0"),  # the first stage: batch norm, residual sums, a stride-2 7x7 stem
])
def test_zoo_models_project_to_the_input(name, size, layer):
    torch.manual_seed(0)
    model = create_model(name, num_classes=2).eval()
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    projection = deconvnet(model, x, layer)
    assert projection.pixels.shape == x.shape
    expected = neuron_deconvolution(model, x, projection.layer, int(projection.channel[0]),
                                    projection.position[0].tolist(), float(projection.activation[0]))
    torch.testing.assert_close(projection.pixels, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))
    assert float(projection.pixels.abs().max()) > 0


def test_in_place_relus_are_handled_and_restored():
    features = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2))
    net = seeded(Net(features, 2))
    x = torch.randn(1, 1, 6, 6, generator=torch.Generator().manual_seed(2))
    reference = seeded(Net(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2)), 2))
    torch.testing.assert_close(deconvnet(net, x, "features.2").pixels, deconvnet(reference, x, "features.2").pixels)
    assert features[1].inplace


def test_user_errors_name_the_problem():
    net = tiny_net()
    x = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    with pytest.raises(DcnnError, match=r"no layer 'features.pol'.*Did you mean 'features.pool'"):
        deconvnet(net, x, "features.pol")
    with pytest.raises(DcnnError, match=r"channel 2 is out of range: layer 'features.pool' has 2 channels"):
        deconvnet(net, x, "features.pool", channel=2)
    with pytest.raises(DcnnError, match=r"layer 'fc' outputs nothing inside forward_features"):
        deconvnet(net, x, "fc")
    with pytest.raises(DcnnError, match="keep must be 'max'"):
        deconvnet(net, x, keep="all")
    tanh = seeded(Net(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.MaxPool2d(2)), 2))
    with pytest.raises(DcnnError, match=r"no nn.ReLU below layer 'features.2'.*use saliency or gradcam"):
        deconvnet(tanh, torch.zeros(1, 1, 6, 6), "features.2")
