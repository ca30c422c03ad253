"""Pooling layers against hand computations: global, stochastic (Zeiler & Fergus 2013) and LP pooling."""

from __future__ import annotations

import math

import pytest
import torch

from dcnn.errors import DcnnError
from dcnn.layers.pooling import GlobalPool2d, LPPool2d, StochasticPool2d

# One 2x2 region holding 1, 2, 3, 4: stochastic pooling draws them with probabilities 0.1 .. 0.4.
REGION = torch.tensor([[1.0, 2.0], [3.0, 4.0]])


def test_global_pool_kinds():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 6.0]]]])
    assert GlobalPool2d("avg")(x).item() == 3.0
    assert GlobalPool2d("max")(x).item() == 6.0
    assert GlobalPool2d("avgmax", flatten=False)(x).shape == (1, 1, 1, 1)
    assert GlobalPool2d("avgmax")(x).item() == 4.5


def test_stochastic_pool_test_mode_is_the_probability_weighted_average():
    pool = StochasticPool2d(kernel_size=2).eval()
    x = torch.zeros(1, 1, 2, 4)
    x[0, 0, :, :2] = REGION
    x[0, 0, :, 2:] = torch.tensor([[-5.0, 0.0], [0.0, 2.0]])  # negatives count as zero
    out = pool(x).flatten()
    # eq. 5: Σ p_i a_i = Σ a_i² / Σ a_i
    assert out[0].item() == pytest.approx((1 + 4 + 9 + 16) / (1 + 2 + 3 + 4))
    assert out[1].item() == pytest.approx(2.0)
    assert pool(torch.zeros(1, 1, 2, 2)).item() == 0.0


def test_stochastic_pool_training_draws_in_proportion_to_the_activations():
    torch.manual_seed(0)
    pool = StochasticPool2d(kernel_size=2).train()
    draws = 40_000
    x = REGION.repeat(1, draws, 1, 1)  # one region per channel
    out = pool(x).flatten()
    assert set(out.unique().tolist()) <= {1.0, 2.0, 3.0, 4.0}
    frequencies = torch.stack([(out == v).float().mean() for v in (1.0, 2.0, 3.0, 4.0)])
    expected = torch.tensor([0.1, 0.2, 0.3, 0.4])
    # 5 standard deviations of a frequency over 40,000 draws is at most 0.0125.
    torch.testing.assert_close(frequencies, expected, atol=0.0125, rtol=0)
    # Averaged over the draws, training matches the test-time expectation (eq. 5).
    assert out.mean().item() == pytest.approx(3.0, abs=0.03)


def test_stochastic_pool_gradient_reaches_only_the_drawn_location():
    torch.manual_seed(1)
    x = REGION.view(1, 1, 2, 2).clone().requires_grad_(True)
    out = StochasticPool2d(kernel_size=2).train()(x)
    out.sum().backward()
    assert x.grad.sum().item() == 1.0 and (x.grad != 0).sum().item() == 1
    assert x[x.grad == 1].item() == out.item()


def test_stochastic_pool_shapes_and_overlap():
    x = torch.rand(2, 3, 7, 9)
    assert StochasticPool2d(3, stride=2).eval()(x).shape == (2, 3, 3, 4)
    assert StochasticPool2d(3, stride=2).train()(x).shape == (2, 3, 3, 4)
    with pytest.raises(DcnnError, match="window"):
        StochasticPool2d(3)(torch.rand(1, 1, 2, 2))


def test_l2_pool_matches_a_hand_computation():
    x = torch.tensor([[[[3.0, -4.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]]]])
    out = LPPool2d(p=2, kernel_size=2)(x).flatten()
    assert out.tolist() == pytest.approx([5.0, 2.0])  # sqrt(9 + 16), sqrt(4 x 1)
    big = LPPool2d(p=2, kernel_size=2)(x * 1e30).flatten()  # (1e30)² overflows float32; the result does not
    assert big.tolist() == pytest.approx([5e30, 2e30])


def test_lp_pool_other_norms():
    x = torch.tensor([[[[1.0, 2.0], [-3.0, 4.0]]]])
    assert LPPool2d(p=1, kernel_size=2)(x).item() == pytest.approx(10.0)
    assert LPPool2d(p=3, kernel_size=2)(x).item() == pytest.approx((1 + 8 + 27 + 64) ** (1 / 3))
    assert LPPool2d(p=64, kernel_size=2)(x).item() == pytest.approx(4.0, rel=0.03)  # tends to the max
    padded = LPPool2d(p=2, kernel_size=3, stride=1, padding=1)(torch.ones(1, 1, 3, 3))
    assert padded[0, 0, 0, 0].item() == pytest.approx(2.0)  # corner: 4 ones, zero padding
    assert padded[0, 0, 1, 1].item() == pytest.approx(3.0)  # centre: 9 ones
    with pytest.raises(DcnnError, match="p >= 1"):
        LPPool2d(p=math.inf)


def test_lp_pool_zero_window_has_a_finite_gradient():
    x = torch.zeros(1, 1, 2, 4)
    x[0, 0, :, 2:] = 1.0
    x.requires_grad_(True)
    out = LPPool2d(p=2, kernel_size=2)(x)
    assert out.flatten().tolist() == pytest.approx([0.0, 2.0])
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(x.grad[0, 0, :, 2:], torch.full((2, 2), 0.5))  # d sqrt(Σx²)/dx = x/2
