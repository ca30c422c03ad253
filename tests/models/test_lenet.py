"""LeNet-5 against the paper's numbers and hand computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dcnn import create_model
from dcnn.errors import DcnnError
from dcnn.layers.activations import ScaledTanh
from dcnn.models.lenet import C3_CONNECTIONS, EuclideanRBF, PartiallyConnectedConv, TrainableSubsampling, rbf_codes


def params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_per_layer_parameters_match_the_paper():
    model = create_model("lenet5")
    layers = model.features
    assert [params(layers.c1), params(layers.s2), params(layers.c3)] == [156, 12, 1516]
    assert [params(layers.s4), params(layers.c5), params(model.f6)] == [32, 48120, 10164]
    assert params(model.output) == 0  # the RBF codes are fixed


def test_c3_reads_only_the_maps_of_table_1():
    torch.manual_seed(0)
    c3 = create_model("lenet5").features.c3
    x = torch.randn(1, 6, 14, 14)
    base = c3(x)
    for in_map in range(6):
        bumped = x.clone()
        bumped[:, in_map] += 1.0
        changed = (c3(bumped) - base).abs().amax(dim=(0, 2, 3)) > 0
        expected = torch.tensor([in_map in maps for maps in C3_CONNECTIONS])
        assert torch.equal(changed, expected), in_map
    assert sum(len(m) for m in C3_CONNECTIONS) == 60  # 6x3 + 9x4 + 1x6


def test_scaled_tanh_maps_one_to_one():
    f = ScaledTanh()
    assert abs(f(torch.tensor(1.0)).item() - 1.0) < 1e-3
    assert abs(f(torch.tensor(-1.0)).item() + 1.0) < 1e-3
    assert abs(f(torch.tensor(100.0)).item() - 1.7159) < 1e-6


def test_trainable_subsampling_is_coefficient_times_block_sum_plus_bias():
    layer = TrainableSubsampling(1)
    with torch.no_grad():
        layer.weight.fill_(0.5)
        layer.bias.fill_(-1.0)
    x = torch.tensor([[[[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]]])
    expected = torch.tensor([[[[0.5 * (1 + 2 + 5 + 6) - 1, 0.5 * (3 + 4 + 7 + 8) - 1]]]])
    torch.testing.assert_close(layer(x), expected)


def test_block_sum_as_four_block_means_is_bitwise_the_sum_pooling():
    """S2/S4 compute the 2×2 block sum as avg_pool2d × 4; on random inputs of every scale (normal numbers)
    it equals the sum pooling avg_pool2d(divisor_override=1) bit for bit, in both memory layouts."""
    generator = torch.Generator().manual_seed(0)
    for scale in (1e-30, 1e-3, 1.0, 1e3, 1e30):
        x = torch.randn(4, 6, 28, 28, generator=generator) * scale
        for layout in (torch.contiguous_format, torch.channels_last):
            y = x.contiguous(memory_format=layout)
            assert torch.equal(F.avg_pool2d(y, 2) * 4, F.avg_pool2d(y, 2, divisor_override=1))


def test_c3_as_an_ordinary_convolution_computes_the_same_function():
    torch.manual_seed(0)
    c3 = PartiallyConnectedConv(C3_CONNECTIONS, 6, 5)
    c3.reset_parameters()
    with torch.no_grad():
        c3.bias.uniform_(-1, 1)
    conv = c3.to_conv2d()
    assert type(conv) is torch.nn.Conv2d and conv.weight.shape == (16, 6, 5, 5)
    assert int((conv.weight.abs().sum(dim=(2, 3)) > 0).sum()) == 60  # the 60 connections of Table I, zeros elsewhere
    x = torch.randn(2, 6, 14, 14)
    with torch.no_grad():
        assert torch.equal(conv(x), c3(x))


def test_rbf_output_is_negative_squared_distance_to_fixed_codes():
    codes = rbf_codes(10)
    assert codes.shape == (10, 84) and set(codes.unique().tolist()) == {-1.0, 1.0}
    assert len({tuple(c.tolist()) for c in codes}) == 10  # distinct digit codes
    rbf = EuclideanRBF(10)
    x = codes[3:4].clone()
    x[0, :5] = 0.0  # five units off by one from digit 3's code
    logits = rbf(x)
    assert logits[0, 3].item() == -5.0
    assert logits.argmax().item() == 3
    other = ((codes[7] - x[0]) ** 2).sum()
    assert logits[0, 7].item() == -other.item()


def test_modern_variant_counts_and_layers():
    model = create_model("lenet5_modern")
    assert params(model) == 61706  # the well-known count of the ReLU/max-pool LeNet-5
    assert isinstance(model.features.s2, torch.nn.MaxPool2d)
    assert isinstance(model.features.act1, torch.nn.ReLU)


def test_faithful_initialization_follows_appendix_a():
    model = create_model("lenet5")
    bound_c1 = 2.4 / 25
    assert model.features.c1.weight.abs().max() <= bound_c1
    assert model.features.c1.weight.abs().max() > 0.8 * bound_c1
    assert model.f6.weight.abs().max() <= 2.4 / 120


def test_batch_norm_option_of_the_modern_variant():
    plain, normed = create_model("lenet5_modern"), create_model("lenet5_modern", batch_norm=True)
    assert params(normed) - params(plain) == 2 * (6 + 16 + 120)  # a scale and a shift per channel
    assert [n for n, m in normed.named_modules() if isinstance(m, torch.nn.BatchNorm2d)] == [
        "features.bn1", "features.bn3", "features.bn5"]
    with pytest.raises(DcnnError, match="batch_norm is an option of lenet5_modern"):
        create_model("lenet5", batch_norm=True)


def test_pool_first_without_batch_norm_computes_the_same_function():
    torch.manual_seed(0)
    default, pooled_first = create_model("lenet5_modern"), create_model("lenet5_modern", pool_first=True)
    pooled_first.load_state_dict(default.state_dict())  # same parameter names and shapes
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(pooled_first(x), default(x))  # max(relu(a)) == relu(max(a))
    assert [n for n, _ in pooled_first.features.named_children()][:4] == ["c1", "s2", "act1", "act2"]


def test_pool_first_normalizes_the_pooled_maps():
    model = create_model("lenet5_modern", batch_norm=True, pool_first=True)
    seen = {}

    def record(name: str):
        def hook(module: torch.nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
            seen[name] = tuple(inputs[0].shape)
        return hook

    model.features.bn1.register_forward_hook(record("bn1"))
    model.features.bn3.register_forward_hook(record("bn3"))
    model(torch.randn(2, 1, 28, 28))
    assert seen == {"bn1": (2, 6, 14, 14), "bn3": (2, 16, 5, 5)}
    assert params(model) == params(create_model("lenet5_modern", batch_norm=True))


def test_maps_sets_the_feature_map_counts():
    model = create_model("lenet5_modern", batch_norm=True, maps=[8, 24, 120])
    c1, c3, c5 = 8 * 25 + 8, 24 * 8 * 25 + 24, 120 * 24 * 25 + 120
    f6, output, norms = 120 * 84 + 84, 84 * 10 + 10, 2 * (8 + 24 + 120)
    assert params(model) == c1 + c3 + c5 + f6 + output + norms == 88_470
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(DcnnError, match="maps must be three positive counts"):
        create_model("lenet5_modern", maps=(8, 0, 120))


def test_faithful_lenet5_rejects_the_modern_options():
    with pytest.raises(DcnnError, match="pool_first is an option of lenet5_modern"):
        create_model("lenet5", pool_first=True)
    with pytest.raises(DcnnError, match="maps is an option of lenet5_modern"):
        create_model("lenet5", maps=(8, 24, 120))


def test_rbf_scale_is_a_temperature_on_the_penalties():
    x = torch.randn(2, 84)
    plain, scaled = EuclideanRBF(10), EuclideanRBF(10, scale=0.1)
    torch.testing.assert_close(scaled(x), 0.1 * plain(x))
    assert create_model("lenet5", rbf_scale=0.1).output.scale == 0.1
