"""Local response normalization against the formula of Krizhevsky et al. 2012, section 3.3."""

from __future__ import annotations

import pytest
import torch

from dcnn.errors import DcnnError
from dcnn.layers.lrn import LocalResponseNorm2d


def test_matches_a_hand_computation_of_the_paper_formula():
    # Seven maps holding 1..7 at one position; n = 5 sums over maps i-2 .. i+2, clipped at the ends.
    lrn = LocalResponseNorm2d(size=5, alpha=0.1, beta=0.75, k=2.0)
    x = torch.arange(1.0, 8.0).view(1, 7, 1, 1)
    out = lrn(x).flatten()
    assert out[0].item() == pytest.approx(1 / (2 + 0.1 * (1 + 4 + 9)) ** 0.75, rel=1e-6)  # maps 0..2
    assert out[3].item() == pytest.approx(4 / (2 + 0.1 * (4 + 9 + 16 + 25 + 36)) ** 0.75, rel=1e-6)  # maps 1..5
    assert out[6].item() == pytest.approx(7 / (2 + 0.1 * (25 + 36 + 49)) ** 0.75, rel=1e-6)  # maps 4..6


def paper_formula(a: torch.Tensor, n: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """b^i = a^i / (k + α Σ_{j=max(0,i-n/2)}^{min(N-1,i+n/2)} (a^j)²)^β, written as loops over maps."""
    maps = a.shape[1]
    out = torch.empty_like(a)
    for i in range(maps):
        window = a[:, max(0, i - n // 2) : min(maps - 1, i + n // 2) + 1]
        out[:, i] = a[:, i] / (k + alpha * window.square().sum(dim=1)) ** beta
    return out


def test_paper_constants_on_random_maps():
    torch.manual_seed(0)
    a = 30 * torch.rand(2, 11, 4, 5)  # large enough that the α term matters
    lrn = LocalResponseNorm2d()  # k=2, n=5, α=1e-4, β=0.75
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, 1e-4, 0.75, 2.0)
    expected = paper_formula(a.double(), 5, 1e-4, 0.75, 2.0)
    torch.testing.assert_close(lrn(a).double(), expected, rtol=1e-6, atol=1e-7)
    # torch's LocalResponseNorm divides α by n: with the paper's α unchanged it normalizes less.
    torch_convention = torch.nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)(a)
    assert (torch_convention - lrn(a)).abs().max() > 1e-3


def test_even_window_is_refused():
    with pytest.raises(DcnnError, match="odd window"):
        LocalResponseNorm2d(size=4)
