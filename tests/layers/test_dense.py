"""Dense connectivity: each layer adds k maps to the concatenation of all before it (eq. 2);
transitions compress and halve the resolution; the memory-efficient path computes the same."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from dcnn.layers.dense import DenseBlock, DenseLayer, Transition


def test_dense_layer_adds_growth_rate_channels_through_a_4k_bottleneck():
    layer = DenseLayer(40, growth_rate=12, bn_size=4)
    features = [torch.randn(2, 24, 8, 8), torch.randn(2, 16, 8, 8)]
    assert layer(features).shape == (2, 12, 8, 8)
    assert layer.bottleneck.conv.weight.shape == (48, 40, 1, 1)  # 4k maps (§3, DenseNet-B)
    assert layer.composite.conv.weight.shape == (12, 48, 3, 3)


def test_dense_layer_without_bottleneck_convolves_the_concatenation():
    layer = DenseLayer(40, growth_rate=12, bn_size=None)
    assert isinstance(layer.bottleneck, nn.Identity)
    assert layer.composite.conv.weight.shape == (12, 40, 3, 3)
    assert layer([torch.randn(1, 40, 5, 5)]).shape == (1, 12, 5, 5)


def test_block_output_is_input_then_each_layers_new_maps():
    """x_ℓ = H_ℓ([x_0, ..., x_{ℓ-1}]) and the block outputs [x_0, x_1, ..., x_L]: recomputed layer by layer."""
    torch.manual_seed(0)
    block = DenseBlock(num_layers=3, in_channels=10, growth_rate=4).eval()
    x = torch.randn(2, 10, 6, 6)
    with torch.no_grad():
        out = block(x)
        assert out.shape == (2, 10 + 3 * 4, 6, 6) and block.out_channels == 22
        assert torch.equal(out[:, :10], x)
        for index, layer in enumerate(block.layers):
            start = 10 + 4 * index
            assert layer.bottleneck.bn.num_features == start
            torch.testing.assert_close(out[:, start : start + 4], layer([out[:, :start]]))


def test_transition_compresses_and_halves_resolution():
    transition = Transition(256, 128)
    assert [name for name, _ in transition.named_children()] == ["bn", "act", "conv", "pool"]
    assert transition.conv.weight.shape == (128, 256, 1, 1)
    assert transition(torch.randn(1, 256, 14, 14)).shape == (1, 128, 7, 7)


@pytest.mark.parametrize("bn_size", [4, None])
def test_memory_efficient_block_computes_the_same_values_and_gradients(bn_size):
    torch.manual_seed(0)
    plain = DenseBlock(3, 6, growth_rate=4, bn_size=bn_size).train()
    efficient = DenseBlock(3, 6, growth_rate=4, bn_size=bn_size, memory_efficient=True).train()
    efficient.load_state_dict(plain.state_dict())
    x = torch.randn(2, 6, 5, 5)
    inputs = (x.clone().requires_grad_(), x.clone().requires_grad_())
    outputs = (plain(inputs[0]), efficient(inputs[1]))
    torch.testing.assert_close(outputs[0], outputs[1])
    weights = torch.randn_like(outputs[0])
    for out in outputs:
        (out * weights).sum().backward()
    torch.testing.assert_close(inputs[0].grad, inputs[1].grad)
    for (name, p), q in zip(plain.named_parameters(), efficient.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_memory_efficient_layer_recomputes_its_bottleneck_in_the_backward_pass():
    calls = []
    for memory_efficient in (False, True):
        layer = DenseLayer(6, growth_rate=4, memory_efficient=memory_efficient).train()
        layer.bottleneck.register_forward_pre_hook(lambda *_, flag=memory_efficient: calls.append(flag))
        layer([torch.randn(2, 6, 5, 5, requires_grad=True)]).sum().backward()
    assert calls.count(False) == 1 and calls.count(True) == 2
