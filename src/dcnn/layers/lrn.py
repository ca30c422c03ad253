"""Local response normalization across channels (Krizhevsky, Sutskever & Hinton 2012, section 3.3).

The paper's formula, for the activity a^i_{x,y} of kernel map i at position (x, y) among N maps:

    b^i_{x,y} = a^i_{x,y} / (k + α Σ_{j=max(0, i−n/2)}^{min(N−1, i+n/2)} (a^j_{x,y})²)^β

with k = 2, n = 5, α = 1e-4, β = 0.75. The sum runs over n adjacent maps, so n is odd and n/2 is
rounded down. Mind the convention: `torch.nn.LocalResponseNorm` multiplies the sum by α/n (Caffe's
convention), the paper by α; this layer takes the paper's α and passes α·n to torch.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from dcnn.errors import DcnnError


class LocalResponseNorm2d(nn.Module):
    """Normalizes each activation by the squared activity of the `size` maps around it (section 3.3).

    Args:
        size: n, the number of adjacent kernel maps in the sum (odd; the map itself in the middle).
        alpha: α, the coefficient of the plain sum of squares (the paper's, not divided by n).
        beta: β, the exponent.
        k: the additive constant.
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0) -> None:
        super().__init__()
        if size < 1 or size % 2 == 0:
            raise DcnnError(
                f"local response normalization needs an odd window size n (the map and n//2 maps on each "
                f"side), got {size}; use e.g. 5 as in Krizhevsky et al. 2012."
            )
        self.size = size
        self.alpha = alpha
        self.beta = beta
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torch divides its alpha by the window size; multiplying by it gives the paper's plain sum.
        return F.local_response_norm(x, self.size, alpha=self.alpha * self.size, beta=self.beta, k=self.k)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
