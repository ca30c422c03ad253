"""Classifier heads: global pooling with a linear classifier, or a fully convolutional one.

``head="fc"``: global pool → dropout → linear (Lin et al. 2013 replace the big fully connected
layers with global pooling). ``head="conv"``: dropout → 1×1 conv giving a class score map → global
pool, as in fully convolutional networks (Long et al. 2015): the same function for a linear
classifier, since pooling and a 1×1 conv commute, but the class map is there for any input size.
The classifier is named `fc` in both, with weight (K, C) or (K, C, 1, 1).

:class:`FullyConnectedHead` is the fc6-fc7-fc8 stack of AlexNet, ZFNet and VGG, with its own
``head="conv"`` form (fc6 as a k×k convolution, fc7 and fc8 as 1×1, as in OverFeat and FCN).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import skip_init

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


def init_gaussian(layer: nn.Module, std: float, bias: float) -> None:
    """Weights from N(0, std²), biases constant: the initialization of Krizhevsky et al. (section 5)."""
    nn.init.normal_(layer.weight, 0.0, std)
    nn.init.constant_(layer.bias, bias)


class FullyConnectedHead(nn.Module):
    """fc6 → ReLU → dropout → fc7 → ReLU → dropout → fc8 over a map pooled to `pool_size`².

    With ``head="conv"`` fc6 is a `pool_size`×`pool_size` convolution and fc7, fc8 are 1×1
    convolutions; the class map is averaged globally. Submodules `fc6`, `fc7`, `fc8` hold the
    weights in both forms (fc8 is the classifier that `reset` replaces).

    With `init_std`, weights start from N(0, init_std²), fc6 and fc7 biases at `hidden_bias` and fc8's
    at 0 (the papers' initialization); without it, PyTorch's default initialization.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        pool_size: int,
        hidden: int = 4096,
        drop_rate: float = 0.5,
        head: str = "fc",
        init_std: float | None = None,
        hidden_bias: float = 0.0,
    ) -> None:
        super().__init__()
        self.head_type = check_head_type(head)
        self.pool_size = pool_size
        self.hidden = hidden
        self.init_std = init_std
        self.fc6 = self._layer(in_channels, hidden, pool_size, hidden_bias)
        self.fc7 = self._layer(hidden, hidden, 1, hidden_bias)
        self.act6, self.act7 = nn.ReLU(), nn.ReLU()
        self.drop6, self.drop7 = nn.Dropout(drop_rate), nn.Dropout(drop_rate)
        self.global_pool = GlobalPool2d("avg", flatten=True)
        self.fc8 = self._make_classifier(num_classes)

    def _layer(self, in_channels: int, out_channels: int, kernel_size: int, bias: float) -> nn.Module:
        """A `kernel_size`² convolution, or the linear layer over its flattened input."""
        if self.head_type == "conv":
            layer_type, args = nn.Conv2d, (in_channels, out_channels, kernel_size)
        else:
            layer_type, args = nn.Linear, (in_channels * kernel_size**2, out_channels)
        if self.init_std is None:
            return layer_type(*args)
        # Skip the default initialization: on fc6's ~10^8 weights it costs as much as ours.
        layer = skip_init(layer_type, *args, device=torch.get_default_device())
        init_gaussian(layer, self.init_std, bias)
        return layer

    def _make_classifier(self, num_classes: int) -> nn.Module:
        return self._layer(self.hidden, num_classes, 1, 0.0) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int) -> None:
        self.fc8 = self._make_classifier(num_classes)

    def _fit(self, x: torch.Tensor) -> torch.Tensor:
        """fc: average-pool to exactly pool_size²; conv: pool up to at least pool_size² per side."""
        k = self.pool_size
        if self.head_type == "fc":
            return F.adaptive_avg_pool2d(x, k).flatten(1)
        height, width = x.shape[-2:]
        if height < k or width < k:
            return F.adaptive_avg_pool2d(x, (max(height, k), max(width, k)))
        return x

    def _hidden(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop6(self.act6(self.fc6(self._fit(x))))
        return self.drop7(self.act7(self.fc7(x)))

    def class_map(self, x: torch.Tensor) -> torch.Tensor:
        """Per-location class scores (N, K, H', W') of a feature map; only for ``head="conv"``."""
        if self.head_type != "conv":
            raise DcnnError("class maps need a fully convolutional head: create the model with head='conv'.")
        return self.fc8(self._hidden(x))

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.head_type == "fc":
            features = self._hidden(x)
            return features if pre_logits else self.fc8(features)
        if pre_logits:
            return self.global_pool(self._hidden(x))
        return self.global_pool(self.class_map(x))
