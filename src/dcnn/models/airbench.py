"""The airbench94 network (Jordan 2024, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU",
arXiv:2404.00498), as a dcnn model.

Architecture (paper Sec. 3, and the published airbench94 hyperparameters): a 2×2 convolution without
padding whose 2·C·2·2 = 24 filters are the eigenvectors of the training images' 2×2 patch covariance,
scaled by 1/sqrt(eigenvalue + 5e-4), and their negatives (the "whitening" layer; its weights are frozen,
its bias trained), a GELU, then three blocks of conv 3×3 → max pool 2 → BN → GELU → conv 3×3 → BN →
GELU with 64, 256 and 256 filters (base width 64; widths 1×, 4×, 4×), a 3×3 max pool (global on
32×32 inputs), a linear classifier and a fixed output scale of 1/9. The convolutions have no bias,
the first half of each conv's filters starts as the identity (Dirac initialization), and the batch
norms use eps 1e-12, a running-average momentum of 0.4 (airbench's "0.6" counts the other way),
a frozen scale of 1 and a trained shift whose learning rate is 64 times the others'.

The whitening filters are fitted, as airbench fits them, on 5,000 un-augmented training images
(``data_init_images``): dcnn's trainer passes them to :meth:`AirbenchNet.init_from_data` before the
first step. Trained in a loop of one's own, the model fits them on the first training batch it sees.
The buffer ``whitening.fitted`` records that it was done, so a saved model is not fitted again.

What differs, so that dcnn's ordinary trainer can train it:
- The 64× learning rate of the BN shifts is a reparametrization: the shift is stored divided by
  sqrt(64) = 8 and multiplied by 8 in the forward pass, which makes plain SGD move it 64 times as
  far (``bias_lr_scale``). The trainer does not decay 1-D parameters, so those shifts are not decayed.
- The classifier is dcnn's ClassifierHead (global max pool, then linear), so it has a bias: 10
  parameters more than airbench's.
The paper gives no parameter count; ModelCfg records the computed one (derived by hand in
tests/models/test_airbench.py).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from dcnn.layers.head import ClassifierHead, check_head_type
from dcnn.models._base import ImageClassifier
from dcnn.models._registry import CIFAR_MEAN, CIFAR_STD, ModelCfg, register_model

AIRBENCH_PAPER = "Jordan 2024, 94% on CIFAR-10 in 3.29 Seconds on a Single GPU"
WIDTHS = (64, 256, 256)  # base width 64; blocks 1×, 4×, 4×
WHITENING_KERNEL = 2
WHITENING_EPS = 5e-4
BN_EPS = 1e-12
BN_MOMENTUM = 0.4  # torch's convention: the weight of the new batch (airbench writes 1 - 0.6)
BIAS_LR_SCALE = 64.0
OUTPUT_SCALE = 1 / 9


class PatchWhitening(nn.Module):
    """A k×k convolution (no padding) whose filters whiten k×k patches: the covariance's eigenvectors
    over sqrt(eigenvalue + eps), and their negatives (2·C·k² filters). Weights frozen, bias trained."""

    def __init__(self, in_chans: int, kernel_size: int = WHITENING_KERNEL, eps: float = WHITENING_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.conv = nn.Conv2d(in_chans, 2 * in_chans * kernel_size ** 2, kernel_size, bias=True)
        self.conv.weight.requires_grad_(False)
        nn.init.zeros_(self.conv.bias)
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> None:
        """Set the filters from the patches of `x` (N, C, H, W), normalized model input."""
        c, (kh, kw) = x.shape[1], self.conv.kernel_size
        patches = x.float().unfold(2, kh, 1).unfold(3, kw, 1)  # N, C, H', W', kh, kw
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * kh * kw).double()
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        filters = (eigenvectors.T / torch.sqrt(eigenvalues.clamp_min(0) + self.eps)[:, None]).flip(0)
        filters = filters.reshape(c * kh * kw, c, kh, kw).to(self.conv.weight)
        self.conv.weight.copy_(torch.cat([filters, -filters]))
        self.fitted.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not bool(self.fitted):
            with torch.autocast(x.device.type, enabled=False):
                self.fit(x)
        return self.conv(x)


class ScaledBiasBatchNorm(nn.BatchNorm2d):
    """Batch norm with a frozen scale of 1 and a shift stored as shift / sqrt(s): SGD then moves the
    shift as it would with s times the learning rate (airbench's BN-bias learning-rate multiplier)."""

    def __init__(self, num_features: int, bias_lr_scale: float = BIAS_LR_SCALE) -> None:
        super().__init__(num_features, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.weight.requires_grad_(False)
        self.multiplier = math.sqrt(bias_lr_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias * self.multiplier,
                            self.training, self.momentum, self.eps)


def dirac_conv(in_chans: int, out_chans: int) -> nn.Conv2d:
    """3×3 conv, 'same' padding, no bias; the first min(in, out) filters start as the identity."""
    conv = nn.Conv2d(in_chans, out_chans, 3, padding=1, bias=False)
    nn.init.dirac_(conv.weight.data[:in_chans])
    return conv


class ConvGroup(nn.Sequential):
    """conv → max pool 2 → BN → GELU → conv → BN → GELU (airbench's block)."""

    def __init__(self, in_chans: int, out_chans: int, bias_lr_scale: float) -> None:
        super().__init__(
            dirac_conv(in_chans, out_chans), nn.MaxPool2d(2), ScaledBiasBatchNorm(out_chans, bias_lr_scale), nn.GELU(),
            dirac_conv(out_chans, out_chans), ScaledBiasBatchNorm(out_chans, bias_lr_scale), nn.GELU(),
        )


class AirbenchNet(ImageClassifier):
    def __init__(self, num_classes: int = 10, in_chans: int = 3, widths: tuple[int, ...] = WIDTHS,
                 bias_lr_scale: float = BIAS_LR_SCALE, output_scale: float = OUTPUT_SCALE, head: str = "fc") -> None:
        super().__init__()
        self.num_classes, self.in_chans, self.num_features = num_classes, in_chans, widths[-1]
        self.output_scale = output_scale
        self.whitening = PatchWhitening(in_chans)
        self.act = nn.GELU()
        chans = [self.whitening.conv.out_channels, *widths]
        self.blocks = nn.Sequential(*(ConvGroup(a, b, bias_lr_scale) for a, b in itertools.pairwise(chans)))
        self.head = ClassifierHead(widths[-1], num_classes, pool="max", head=check_head_type(head))

    data_init_images = 5000  # airbench94 fits the whitening on 5,000 training images

    def init_from_data(self, images: torch.Tensor) -> None:
        """Fit the whitening filters on normalized images (N, C, H, W) rather than the first batch."""
        self.whitening.fit(images)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.act(self.whitening(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        out = self.head(x, pre_logits=pre_logits)
        return out if pre_logits else out * self.output_scale


def airbench_cfg(num_params: int) -> ModelCfg:
    return ModelCfg(paper=AIRBENCH_PAPER, year=2024, num_params=num_params,
                    num_params_source="counted by hand from the widths (tests/models/test_airbench.py); "
                                      "the paper gives none",
                    input_size=(3, 32, 32), min_input_size=(3, 9, 9), num_classes=10, mean=CIFAR_MEAN,
                    std=CIFAR_STD, first_conv="whitening.conv", classifier=("head.fc",), crop_pct=1.0)


@register_model(airbench_cfg(1_972_802))
def airbench94(num_classes: int = 10, in_chans: int = 3, **options: Any) -> AirbenchNet:
    """The airbench94 network (Jordan 2024): whitening conv, blocks of 64/256/256 filters, scale 1/9."""
    return AirbenchNet(num_classes, in_chans, **options)
