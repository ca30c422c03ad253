"""Pooling layers: global pooling (Lin et al. 2013, §3.2) and the other pooling schemes of the
literature."""

from __future__ import annotations

import torch
import torch.nn as nn

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
