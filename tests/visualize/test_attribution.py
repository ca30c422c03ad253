"""Grad-CAM, saliency, guided backprop and occlusion against their definitions computed directly
with torch.autograd on tiny networks; heat-map overlays against known colours."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from dcnn.errors import DcnnError
from dcnn.models import create_model
from dcnn.visualize.attribution import (
    grad_cam,
    guided_backprop,
    map_layer,
    occlusion,
    overlay_heatmap,
    saliency,
)
from tests.visualize.tiny import Net, seeded


def conv_net() -> Net:
    """conv 3x3 (2→4, padded: maps at the input's size) → ReLU → conv 3x3 stride 2 → ReLU; the last
    map is 3x3 for a 6x6 input."""
    features = nn.Sequential()
    features.add_module("conv1", nn.Conv2d(2, 4, 3, padding=1))
    features.add_module("act1", nn.ReLU())
    features.add_module("conv2", nn.Conv2d(4, 5, 3, stride=2, padding=1))
    features.add_module("act2", nn.ReLU())
    return seeded(Net(features, 5))


def inputs(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 2, 6, 6, generator=torch.Generator().manual_seed(seed))


def test_grad_cam_is_the_relu_of_gradient_weighted_maps():
    net, x = conv_net(), inputs()
    maps: list[torch.Tensor] = []
    handle = net.features.act1.register_forward_hook(lambda m, a, out: maps.append(out))
    scores = net(x)[:, 1]
    handle.remove()
    (grads,) = torch.autograd.grad(scores.sum(), maps[0])
    alpha = grads.mean(dim=(2, 3), keepdim=True)  # Selvaraju et al. 2017, eq. 1
    cam = (alpha * maps[0]).sum(dim=1).clamp_min(0)  # eq. 2
    expected = cam / cam.flatten(1).amax(dim=1).view(-1, 1, 1)
    # act1's maps are 6x6, the input's size: no upsampling between the formula and the result.
    torch.testing.assert_close(grad_cam(net, x, target=1, layer="features.act1").detach(), expected.detach())
    assert grad_cam(net, x, 1, net.features.act1).shape == (2, 6, 6)  # a module works as well as its name


def test_grad_cam_defaults_to_the_predicted_class_and_the_last_spatial_map():
    net, x = conv_net(), inputs()
    predicted = net(x).argmax(dim=1)
    found = map_layer(net, x)
    assert (found.name, found.shape) == ("features.act2", (1, 5, 3, 3))
    heat = grad_cam(net, x)
    assert heat.shape == (2, 6, 6) and float(heat.min()) >= 0 and float(heat.max()) == 1.0
    for i in range(2):
        torch.testing.assert_close(heat[i], grad_cam(net, x[i:i + 1], int(predicted[i]), "features.act2")[0])
    # In a zoo model the last map larger than 1x1 is found inside forward_features (LeNet-5's c5 is 1x1).
    lenet = create_model("lenet5", num_classes=10)
    assert map_layer(lenet, torch.zeros(1, 1, 32, 32)).name == "features.act4"


def test_saliency_is_the_magnitude_of_the_input_gradient():
    net, x = conv_net(), inputs()
    leaf = x.clone().requires_grad_(True)
    (grads,) = torch.autograd.grad(net(leaf)[:, 2].sum(), leaf)
    torch.testing.assert_close(saliency(net, x, target=2), grads.abs())


def test_guided_backprop_drops_exactly_the_negative_relu_gradients():
    # input → ReLU → conv: the gradient reaching the ReLU is the conv's (signed) transpose; guided
    # backprop keeps it where it is positive, plain backprop keeps it whatever its sign.
    features = nn.Sequential()
    features.add_module("act", nn.ReLU())
    features.add_module("conv", nn.Conv2d(2, 3, 3, padding=1))
    net, x = seeded(Net(features, 3)), inputs()
    leaf = x.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(net(leaf)[:, 0].sum(), leaf)
    guided = guided_backprop(net, x, target=0)
    assert (plain < 0).any() and (plain > 0).any()
    torch.testing.assert_close(guided, plain.clamp_min(0))
    assert torch.equal(guided != plain, plain < 0)


class PatchScorer(nn.Module):
    """Class 0's logit is 10 × the sum of the pixels in rows 4-5, columns 2-3; class 1's is 0."""

    num_classes = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = 10.0 * x[:, :, 4:6, 2:4].sum(dim=(1, 2, 3))
        return torch.stack([score, torch.zeros_like(score)], dim=1)


def test_occluding_the_only_informative_patch_changes_the_score_most():
    x = torch.ones(1, 1, 8, 8)
    drop = occlusion(PatchScorer(), x, target=0, window=2, stride=2)
    # p(class 0) = sigmoid(40) with the patch, 0.5 without: only windows over the patch change it.
    expected = torch.zeros(1, 8, 8)
    expected[0, 4:6, 2:4] = torch.sigmoid(torch.tensor(40.0)) - 0.5
    torch.testing.assert_close(drop, expected)
    with pytest.raises(DcnnError, match="window"):
        occlusion(PatchScorer(), x, window=9)


def test_default_occlusion_window_is_an_eighth_of_the_image():
    x = torch.ones(1, 1, 32, 32)
    drop = occlusion(PatchScorer(), x, target=0)  # window 4, stride 2
    assert set((drop[0] > 0).nonzero()[:, 0].tolist()) == set(range(2, 8))  # windows at rows 2-7 touch rows 4-5


def test_methods_for_relu_networks_refuse_others_in_one_line():
    tanh = seeded(Net(nn.Sequential(nn.Conv2d(2, 3, 3), nn.Tanh()), 3))
    with pytest.raises(DcnnError, match=r"guided backprop changes the backward pass of nn\.ReLU layers"):
        guided_backprop(tanh, inputs())
    with pytest.raises(DcnnError, match="target class 3 is out of range: the model has 3 classes"):
        saliency(conv_net(), inputs(), target=3)
    with pytest.raises(DcnnError, match=r"layer 'fc' outputs nothing inside forward_features, not a feature map"):
        grad_cam(conv_net(), inputs(), layer="fc")


def test_overlay_blends_the_jet_colours_over_the_image():
    image = torch.zeros(1, 2, 2)  # black, one channel
    image[0, 1, 1] = 1.0
    heat = torch.tensor([[0.0, 1.0], [0.5, 0.0]])
    pixels = [tuple(p) for p in np.asarray(overlay_heatmap(image, heat, alpha=0.5)).reshape(-1, 3).tolist()]
    # jet: 0 → dark blue (0, 0, 0.5), 1 → dark red (0.5, 0, 0), 0.5 → a light green (0.49, 1, 0.48)
    assert pixels[0] == (0, 0, 64) and pixels[1] == (64, 0, 0)
    assert pixels[2][1] == 128 and pixels[3] == (128, 128, 191)  # white under blue: (1 + 0) / 2, (1 + 0.5) / 2
    assert overlay_heatmap(image.expand(3, -1, -1), heat, alpha=0.0).getpixel((1, 1)) == (255, 255, 255)
    with pytest.raises(DcnnError, match="must have the image's size"):
        overlay_heatmap(image, torch.zeros(3, 3))
