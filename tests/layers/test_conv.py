"""WholeMapConv2d against nn.Conv2d with the same parameters."""

from __future__ import annotations

import pytest
import torch

from dcnn.layers.conv import WholeMapConv2d


@pytest.mark.parametrize("size", [5, 7])
@pytest.mark.parametrize("channels_last", [False, True])
def test_same_function_and_gradients_as_a_convolution(size, channels_last):
    torch.manual_seed(0)
    fast, plain = WholeMapConv2d(4, 6, 5), torch.nn.Conv2d(4, 6, 5)
    plain.load_state_dict(fast.state_dict())
    x = torch.randn(3, 4, size, size)
    if channels_last:
        fast, plain = fast.to(memory_format=torch.channels_last), plain.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    x_fast, x_plain = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_fast, out_plain = fast(x_fast), plain(x_plain)
    assert out_fast.shape == (3, 6, size - 4, size - 4)
    torch.testing.assert_close(out_fast, out_plain)
    out_fast.square().sum().backward()
    out_plain.square().sum().backward()
    torch.testing.assert_close(x_fast.grad, x_plain.grad)
    torch.testing.assert_close(fast.weight.grad, plain.weight.grad)
    torch.testing.assert_close(fast.bias.grad, plain.bias.grad)
