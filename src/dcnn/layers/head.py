"""Classifier heads: global pooling with a linear classifier, or a fully convolutional one.

``head="fc"``: global pool → dropout → linear (Lin et al. 2013 replace the big fully connected
layers with global pooling). ``head="conv"``: dropout → 1×1 conv giving a class score map → global
pool, as in fully convolutional networks (Long et al. 2015): the same function for a linear
classifier, since pooling and a 1×1 conv commute, but the class map is there for any input size.
The classifier is named `fc` in both, with weight (K, C) or (K, C, 1, 1).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from dcnn.errors import DcnnError
from dcnn.layers.pooling import GlobalPool2d

HEAD_TYPES = ("fc", "conv")


def check_head_type(head: str) -> str:
    if head not in HEAD_TYPES:
        raise DcnnError(
            f"unknown head {head!r}; choose 'fc' (pool then linear) or 'conv' (1x1 conv class map)."
        )
    return head


class ClassifierHead(nn.Module):
    def __init__(
        self,
        in_features: int,
        num_classes: int,
        pool: str = "avg",
        drop_rate: float = 0.0,
        head: str = "fc",
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.head_type = check_head_type(head)
        self.global_pool = GlobalPool2d(pool, flatten=True)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = self._make_classifier(num_classes)

    def _make_classifier(self, num_classes: int) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        if self.head_type == "conv":
            return nn.Conv2d(self.in_features, num_classes, kernel_size=1)
        return nn.Linear(self.in_features, num_classes)

    def reset(self, num_classes: int) -> None:
        self.fc = self._make_classifier(num_classes)

    def class_map(self, x: torch.Tensor) -> torch.Tensor:
        """Per-location class scores (N, K, H, W); only for ``head="conv"``."""
        if self.head_type != "conv":
            raise DcnnError("class maps need a fully convolutional head: create the model with head='conv'.")
        return self.fc(self.drop(x))

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits:
            return self.global_pool(x)
        if self.head_type == "conv" and not isinstance(self.fc, nn.Identity):
            return self.global_pool(self.class_map(x))
        return self.fc(self.drop(self.global_pool(x)))
