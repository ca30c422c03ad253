"""Activation functions as modules, chosen by name (modules, not functional calls, so that forward
hooks and attribution methods see every nonlinearity)."""

from __future__ import annotations

import torch
import torch.nn as nn

from dcnn.errors import DcnnError, did_you_mean


class ScaledTanh(nn.Module):
    """LeCun's squashing function f(a) = A·tanh(S·a) with A = 1.7159, S = 2/3 (LeCun et al. 1998,
    Appendix A): f(±1) = ±1 and the second derivative peaks at ±1."""

    def __init__(self, amplitude: float = 1.7159, slope: float = 2.0 / 3.0) -> None:
        super().__init__()
        self.amplitude = amplitude
        self.slope = slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.amplitude * torch.tanh(self.slope * x)

    def extra_repr(self) -> str:
        return f"amplitude={self.amplitude}, slope={self.slope:.4f}"


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "leaky_relu": nn.LeakyReLU,
    "prelu": nn.PReLU,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "mish": nn.Mish,
    "hardswish": nn.Hardswish,
    "softplus": nn.Softplus,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "scaled_tanh": ScaledTanh,
    "identity": nn.Identity,
}


def get_act(name: str | type[nn.Module] | None) -> type[nn.Module]:
    """The activation class for a name ("relu", "tanh", ...) or a class; None gives Identity."""
    if name is None:
        return nn.Identity
    if isinstance(name, type):
        return name
    try:
        return ACTIVATIONS[name.lower()]
    except KeyError:
        raise DcnnError(
            f"unknown activation {name!r}.{did_you_mean(name, ACTIVATIONS)} "
            f"Choose one of: {', '.join(ACTIVATIONS)}."
        ) from None
