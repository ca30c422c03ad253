"""Weight initializations shared by model families."""

from __future__ import annotations

from collections.abc import Iterable

import torch.nn as nn


def he_init_fan_out(modules: Iterable[nn.Module]) -> None:
    """He et al. 2015 ("Delving Deep into Rectifiers", §2.2) initialization in fan-out mode for every
    convolution in `modules`, and batch norms reset to the identity (scale 1, shift 0).

    Fan-out is the mode of the ResNet authors' code and of TensorFlow's variance-scaling initializer
    in the NASNet release. Linear layers are left alone (PyTorch's default).
    """
    for module in modules:
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
