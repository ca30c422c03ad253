"""Pooling layers: global pooling (Lin et al. 2013, §3.2) and the other pooling schemes of the
literature."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from dcnn.errors import DcnnError


class GlobalPool2d(nn.Module):
    """Pool each channel of an (N, C, H, W) map to one value: "avg", "max" or "avgmax" (their mean).

    With `flatten` the output is (N, C), otherwise (N, C, 1, 1). Works for any spatial size, which is
    what lets a classifier accept inputs of any size.
    """

    KINDS = ("avg", "max", "avgmax")

    def __init__(self, kind: str = "avg", flatten: bool = True) -> None:
        super().__init__()
        if kind not in self.KINDS:
            raise DcnnError(f"unknown global pooling {kind!r}; choose one of {', '.join(self.KINDS)}.")
        self.kind = kind
        self.flatten = flatten

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "avg":
            y = x.mean(dim=(2, 3), keepdim=True)
        elif self.kind == "max":
            y = x.amax(dim=(2, 3), keepdim=True)
        else:
            y = 0.5 * (x.mean(dim=(2, 3), keepdim=True) + x.amax(dim=(2, 3), keepdim=True))
        return y.flatten(1) if self.flatten else y

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, flatten={self.flatten}"


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def pooling_windows(
    x: torch.Tensor,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int] = (0, 0),
) -> torch.Tensor:
    """The pooling windows of an (N, C, H, W) map as (N, C, H', W', kh·kw), zero-padded by `padding`."""
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    height, width = x.shape[-2] + 2 * ph, x.shape[-1] + 2 * pw
    if height < kh or width < kw:
        raise DcnnError(
            f"pooling with a {kh}x{kw} window needs maps at least that large, got "
            f"{x.shape[-2]}x{x.shape[-1]}; use a larger input or a smaller kernel_size."
        )
    padded = F.pad(x, (pw, pw, ph, ph)) if ph or pw else x
    return padded.unfold(2, kh, sh).unfold(3, kw, sw).flatten(-2)


class StochasticPool2d(nn.Module):
    """Stochastic pooling (Zeiler & Fergus 2013, "Stochastic Pooling for Regularization of Deep
    Convolutional Neural Networks", section 3).

    In each pooling region R_j the activations a_i give probabilities p_i = a_i / Σ_{k∈R_j} a_k
    (eq. 3). In training the output is one activation a_l drawn with l ~ Multinomial(p) (eq. 4), and
    the gradient flows to the drawn location only, as max pooling's does to the maximum. At test time
    the output is the probability-weighted average Σ_i p_i a_i (eq. 5).

    The paper pools rectified activations; negative inputs count as zero here (the layer acts on
    max(a, 0)). A region whose activations are all zero outputs 0 in both modes.
    """

    def __init__(self, kernel_size: int | tuple[int, int] = 3, stride: int | tuple[int, int] | None = None) -> None:
        super().__init__()
        self.kernel_size = _pair(kernel_size)
        self.stride = self.kernel_size if stride is None else _pair(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        regions = pooling_windows(x.clamp_min(0), self.kernel_size, self.stride)
        totals = regions.sum(dim=-1, keepdim=True)
        if self.training:
            # All-zero regions draw uniformly among their zeros (multinomial needs a positive total).
            weights = torch.where(totals > 0, regions, torch.ones_like(regions)).detach()
            drawn = torch.multinomial(weights.flatten(0, -2), 1).view(*regions.shape[:-1], 1)
            return regions.gather(-1, drawn).squeeze(-1)
        safe_totals = torch.where(totals > 0, totals, torch.ones_like(totals))
        return (regions.square().sum(dim=-1, keepdim=True) / safe_totals).squeeze(-1)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class LPPool2d(nn.Module):
    """LP pooling: y = (Σ_{i∈R} |x_i|^p)^(1/p) over each window R (Sermanet, Chintala & LeCun 2012,
    section II.A, with uniform weights; the L2 pooling of Hyvärinen and of Le et al. is p = 2).

    p = 1 sums magnitudes, p = 2 is L2 pooling, and as p grows the output tends to the window's
    largest magnitude (max pooling). Unlike `torch.nn.LPPool2d`, negative inputs enter through their
    magnitude, large p or large inputs do not overflow (each window is scaled by its largest
    magnitude m: y = m·(Σ (|x_i|/m)^p)^(1/p)), and an all-zero window outputs 0 with a zero gradient.
    """

    def __init__(
        self,
        p: float = 2.0,
        kernel_size: int | tuple[int, int] = 2,
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        if not 1.0 <= p < float("inf"):
            raise DcnnError(f"LP pooling needs a finite p >= 1, got {p}; for p = infinity use max pooling.")
        self.p = float(p)
        self.kernel_size = _pair(kernel_size)
        self.stride = self.kernel_size if stride is None else _pair(stride)
        self.padding = _pair(padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        magnitudes = pooling_windows(x.abs(), self.kernel_size, self.stride, self.padding)
        largest = magnitudes.amax(dim=-1, keepdim=True)
        positive = largest > 0
        scale = torch.where(positive, largest, torch.ones_like(largest))
        # Scaled, a window's sum is at least 1 (its largest term); the clamp only touches all-zero
        # windows, keeping the root's infinite slope at 0 out of the gradient.
        scaled_sums = (magnitudes / scale).pow(self.p).sum(dim=-1, keepdim=True).clamp_min(1.0)
        norms = scale * scaled_sums.pow(1.0 / self.p)
        return torch.where(positive, norms, torch.zeros_like(norms)).squeeze(-1)

    def extra_repr(self) -> str:
        return f"p={self.p}, kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
