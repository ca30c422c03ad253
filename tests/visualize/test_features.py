"""Filter grids, feature maps and top-9 patches: grid geometry, the layers' own tensors, and the
top activations against a brute-force search over every image."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dcnn.data.preprocess import Preprocess
from dcnn.errors import DcnnError
from dcnn.models import create_model
from dcnn.visualize.features import (
    Field,
    cut_patch,
    feature_maps,
    filter_weights,
    mosaic,
    receptive_field,
    top_patches,
)
from tests.visualize.tiny import Net, seeded


def test_mosaic_places_tiles_row_by_row_between_separators():
    tiles = torch.arange(5.0).view(5, 1, 1, 1).expand(5, 1, 3, 2)
    grid = mosaic(tiles, columns=3, pad=1, fill=-1.0)
    assert grid.shape == (1, 2 * (3 + 1) + 1, 3 * (2 + 1) + 1)  # 2 rows of 3 columns
    for index in range(5):
        top, left = 1 + (index // 3) * 4, 1 + (index % 3) * 3
        assert torch.equal(grid[0, top:top + 3, left:left + 2], torch.full((3, 2), float(index)))
    assert float(grid[0, 5:8, 7:9].sum()) == -6.0  # the sixth cell is empty
    assert (grid[0, 0] == -1).all() and (grid[0, :, 0] == -1).all() and (grid[0, 4] == -1).all()


def test_filters_and_feature_maps_are_the_layers_own_tensors():
    model = create_model("lenet5_modern").eval()
    x = torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    name, weight = filter_weights(model, x)  # the configured first convolution
    assert name == "features.c1" and torch.equal(weight, model.features.c1.weight)
    name, maps = feature_maps(model, x)
    assert name == "features.c1"
    torch.testing.assert_close(maps, model.features.c1(x))
    name, maps = feature_maps(model, x, "features.act3")
    torch.testing.assert_close(maps, model.features[:6](x))
    assert maps.shape == (1, 16, 10, 10)
    with pytest.raises(DcnnError, match=r"layer 'features.c3' reads 6 channels"):
        filter_weights(model, x, "features.c3")
    with pytest.raises(DcnnError, match=r"layer 'features.act1' \(ReLU\) is not a convolution"):
        filter_weights(model, x, "features.act1")


def test_receptive_field_of_lenet_follows_the_layers():
    model = create_model("lenet5_modern").eval()
    # c1 5x5 pad 2 → s2 2x2/2 → c3 5x5 → s4 2x2/2 (Araujo et al. 2019, eqs. 1-3 by hand):
    # size 5, 6, 14, 16; jump 1, 2, 2, 4; start 0, 0.5, 4.5, 5.5.
    field = receptive_field(model, torch.zeros(1, 1, 28, 28), "features.s4")
    assert field == Field((16, 16), (4.0, 4.0), (5.5, 5.5))
    assert field.window(0, 0) == (-2, -2) and field.window(4, 1) == (14, 2)


def test_cut_patch_fills_outside_the_image():
    image = torch.arange(16.0).view(1, 4, 4)
    field = Field((3, 3), (1.0, 1.0), (0.0, 0.0))  # a 3x3 padded convolution
    patch = cut_patch(image, field, 0, 0, fill=-1.0)
    assert patch.tolist() == [[[-1, -1, -1], [-1, 0, 1], [-1, 4, 5]]]
    assert cut_patch(image, field, 2, 2).tolist() == [[[5, 6, 7], [9, 10, 11], [13, 14, 15]]]


def conv_net() -> Net:
    """conv 3x3, no padding (field 3, jump 1, start 1) → ReLU."""
    features = nn.Sequential()
    features.add_module("conv", nn.Conv2d(3, 4, 3))
    features.add_module("act", nn.ReLU())
    return seeded(Net(features, 4))


def test_top_patches_are_the_highest_activations_of_all_images():
    net = conv_net()
    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    prep = Preprocess((3, 8, 8), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    top = top_patches(net, images.split(16), prep, "features.act", channels=[0, 2])  # batches of 16, 16, 8
    # Brute force: every image's strongest activation per channel, then the 9 strongest images.
    pixels = images.float() / 255
    maps = net.features(prep.normalize(pixels)).detach()
    for row, channel in enumerate([0, 2]):
        best, where = maps[:, channel].flatten(1).max(dim=1)
        values, order = best.topk(9)
        torch.testing.assert_close(top.values[row], values)
        assert top.images[row].tolist() == order.tolist()
        for k in range(9):
            i, j = divmod(int(where[order[k]]), 6)
            assert top.positions[row, k].tolist() == [i, j]
            torch.testing.assert_close(top.patches[row, k], pixels[order[k], :, i:i + 3, j:j + 3])
    assert top.channels == [0, 2] and top.images_read == 40 and top.field == Field((3, 3), (1.0, 1.0), (1.0, 1.0))
    first = top_patches(net, images.split(16), prep, "features.act", max_images=20)
    assert first.images_read == 20 and int(first.images.max()) < 20 and first.channels == [0, 1, 2, 3]
    with pytest.raises(DcnnError, match=r"channel 4 is out of range: layer 'features.act' has 4 channels"):
        top_patches(net, images.split(16), prep, "features.act", channels=[4])


def test_padding_in_the_field_is_cut_as_fill():
    # A padded 3x3 convolution over a constant image: the border units' fields reach outside.
    features = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, bias=False))
    net = Net(features, 1)
    with torch.no_grad():
        features[0].weight.copy_(F.pad(torch.ones(1, 1, 1, 1), (2, 0, 2, 0)))  # reads the pixel down-right
    images = torch.full((1, 1, 4, 4), 255, dtype=torch.uint8)
    images[0, 0, 0, 0] = 0
    top = top_patches(net, [images], Preprocess((1, 4, 4), (0.0,), (1.0,)), "features.0", k=1)
    # The first unit to reach the maximum is (0, 0), whose field starts one pixel outside.
    assert top.positions[0, 0].tolist() == [0, 0]
    assert top.patches[0, 0, 0].tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 1]]
