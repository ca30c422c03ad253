"""The interface every dcnn model shares (after timm's): features, head, classifier reset.

A model is ``forward_head(forward_features(x))``. `forward_features` returns the last feature map
(N, C, H, W); `forward_head` pools it and classifies. Models with auxiliary classifiers (GoogLeNet,
Inception v3) return a tuple ``(logits, aux_logits_1, ...)`` in training mode when their
``aux_logits`` option is on, and plain logits in eval mode; the trainer adds the auxiliary losses
with configurable weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn as nn

if TYPE_CHECKING:
    from dcnn.models._registry import ModelCfg


class ImageClassifier(nn.Module):
    """Base class of every registered model.

    Subclasses set `num_classes`, `in_chans`, `num_features` and a `head` (usually a
    :class:`~dcnn.layers.ClassifierHead`) and implement `forward_features`. Models whose head is not a
    single `ClassifierHead` (AlexNet's and VGG's fully connected stacks, auxiliary classifiers)
    override `forward_head` and `reset_classifier`.
    """

    num_classes: int
    in_chans: int
    num_features: int
    default_cfg: ModelCfg
    model_name: str
    head: nn.Module
    #: how many training images :meth:`init_from_data` reads (0: the model has no data-dependent init)
    data_init_images: int = 0

    def init_from_data(self, images: torch.Tensor) -> None:
        """Data-dependent initialization from normalized training images (N, C, H, W), un-augmented;
        the trainer calls it before a new run's first step when `data_init_images` is set."""
        raise NotImplementedError(f"{type(self).__name__} has no data-dependent initialization")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool and classify a feature map; with `pre_logits`, return the pooled features."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a freshly initialized one for `num_classes` (0: no classifier)."""
        self.num_classes = num_classes
        self.head.reset(num_classes)
