"""Test-time views: scoring a model on several crops (and mirrors) of each image, averaged.

A view is a named set of crops of the model's input size taken from a (possibly larger) image:

- ``"center"``: the center crop alone (the standard single-crop protocol of timm and torchvision).
- ``"flip"``: the center crop and its horizontal mirror.
- ``"ten_crop"``: the four corner crops and the center crop, and their horizontal reflections
  (Krizhevsky et al. 2012, ImageNet Classification with Deep Convolutional Neural Networks,
  Sec. 4.1: "extracting five 224 × 224 patches (the four corner patches and the center patch) as
  well as their horizontal reflections (hence ten patches in all), and averaging the predictions
  made by the network's softmax layer on the ten patches").
- ``"flip_shift"``: the center crop, the same crop translated by one pixel up-left and by one
  pixel down-right (reflect padding at the border), and the mirrors of the three: six views. This is
  the multi-crop test-time augmentation of airbench (Jordan 2024, "94% on CIFAR-10 in 3.29 Seconds on
  a Single GPU"), for small images trained with translation augmentation.

:class:`ViewModel` wraps a classifier so that it scores a batch this way and returns the log of
the view-averaged softmax probabilities, which :func:`dcnn.evaluate.evaluate` and cross-entropy
treat like logits. :func:`eval_source_size` says at what size to prepare the images so that the
corner crops differ from the center one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from dcnn.errors import DcnnError, did_you_mean

CropPosition = Literal["center", "top_left", "top_right", "bottom_left", "bottom_right"]


@dataclass(frozen=True)
class ViewSpec:
    """One test-time view.

    Attributes:
        name: the view's name, the key in :data:`EVAL_VIEWS`.
        description: one line for users.
        crops: where the crops are taken, in this order.
        shifts: the (down, right) pixel translations at which each crop is scored, the image
            reflect-padded at its border (crop-major: every shift of the first crop, then the next).
        mirror: whether each crop is also scored horizontally mirrored (the mirrors follow all the
            crops, in the same order).
        enlarge: whether images should be prepared larger than the model's input (by
            ``1 / crop_pct``) so that the crops see different parts of the image.
    """

    name: str
    description: str
    crops: tuple[CropPosition, ...]
    mirror: bool = False
    enlarge: bool = False
    shifts: tuple[tuple[int, int], ...] = ((0, 0),)

    @property
    def num_views(self) -> int:
        """How many images the model scores per input image."""
        return len(self.crops) * len(self.shifts) * (2 if self.mirror else 1)


EVAL_VIEWS: dict[str, ViewSpec] = {}


def register_view(spec: ViewSpec) -> ViewSpec:
    """Add `spec` to :data:`EVAL_VIEWS` under its name (a name may be registered once)."""
    if spec.name in EVAL_VIEWS:
        raise ValueError(f"evaluation view {spec.name!r} is registered twice")
    EVAL_VIEWS[spec.name] = spec
    return spec


register_view(ViewSpec("center", "one center crop of the input size", crops=("center",)))
register_view(
    ViewSpec("flip", "the center crop and its horizontal mirror, probabilities averaged", ("center",), mirror=True)
)
register_view(
    ViewSpec(
        "ten_crop",
        "four corner crops, the center crop and their mirrors, probabilities averaged "
        "(Krizhevsky et al. 2012, Sec. 4.1)",
        crops=("top_left", "top_right", "bottom_left", "bottom_right", "center"),
        mirror=True,
        enlarge=True,
    )
)
register_view(
    ViewSpec(
        "flip_shift",
        "the center crop and the same translated by one pixel up-left and down-right, and their mirrors: "
        "six views, probabilities averaged (airbench's multi-crop evaluation, Jordan 2024)",
        crops=("center",),
        mirror=True,
        shifts=((0, 0), (-1, -1), (1, 1)),
    )
)


def view_names() -> list[str]:
    """The registered view names, in registration order."""
    return list(EVAL_VIEWS)


def get_view(name: str) -> ViewSpec:
    """The spec of view `name`; an unknown name raises a DcnnError listing the views."""
    try:
        return EVAL_VIEWS[name]
    except KeyError:
        raise DcnnError(
            f"unknown evaluation view {name!r}.{did_you_mean(name, EVAL_VIEWS)} "
            f"Choose one of: {', '.join(EVAL_VIEWS)}."
        ) from None


def eval_source_size(view: str, input_size: tuple[int, int], crop_pct: float = 0.875) -> tuple[int, int]:
    """The (height, width) to prepare images at before `view` takes its crops of `input_size`.

    Views of the center crop only ("center", "flip") need nothing more than the input size. Views
    with corner crops ("ten_crop") need a margin: ``floor(size / crop_pct)``, the resize-then-crop
    size of timm's evaluation transform. With the default crop_pct 0.875 this gives AlexNet's 256
    for 224 (Krizhevsky et al. 2012, Sec. 2 and 4.1: 224 × 224 patches of 256 × 256 images), and
    36 for CIFAR's 32 (floor(36.57)), so the corner crops are offset by 4 pixels from each other.
    """
    spec = get_view(view)
    height, width = _checked_size(input_size)
    if not 0 < crop_pct <= 1:
        raise DcnnError(f"crop_pct must be in (0, 1] (the fraction of the image a crop covers), not {crop_pct}.")
    if not spec.enlarge:
        return height, width
    return math.floor(height / crop_pct), math.floor(width / crop_pct)


def crop_offset(position: CropPosition, source: tuple[int, int], crop: tuple[int, int]) -> tuple[int, int]:
    """The (top, left) pixel of a `crop`-sized crop at `position` in a `source`-sized image.

    The center crop's offset is ``round((source - crop) / 2)``, as torchvision's ``center_crop``
    (and ``five_crop``/``ten_crop``) compute it, so a ten-crop here matches theirs.
    """
    (source_h, source_w), (crop_h, crop_w) = source, crop
    bottom, right = source_h - crop_h, source_w - crop_w
    offsets = {
        "top_left": (0, 0),
        "top_right": (0, right),
        "bottom_left": (bottom, 0),
        "bottom_right": (bottom, right),
        "center": (round(bottom / 2), round(right / 2)),
    }
    return offsets[position]


class ViewModel(nn.Module):
    """A classifier scored on the crops of a test-time view, returning log view-averaged probabilities.

    >>> scored = ViewModel(model, "ten_crop", (224, 224))       # doctest: +SKIP
    >>> result = evaluate(scored, loader_of_256_pixel_images)   # doctest: +SKIP

    `forward(x)` takes a normalized float batch (N, C, H', W') at least as large as `input_size`
    (see :func:`eval_source_size`), takes the view's crops, runs the wrapped model once on all
    N·V crops, and returns ``log(mean over views of softmax(logits))`` of shape (N, num_classes).
    Averaging probabilities rather than logits follows Krizhevsky et al. 2012, Sec. 4.1. The log keeps
    the output usable as logits: its argmax is the averaged prediction, its softmax the averaged
    probabilities, so accuracy and cross-entropy mean what they say. A model returning a tuple
    (auxiliary classifiers) is scored on its first element.

    The wrapped model is the submodule ``model``, so ``.eval()``, ``.train()`` and ``.to()`` reach it;
    the wrapper starts in the wrapped model's mode.
    """

    def __init__(self, model: nn.Module, view: str, input_size: tuple[int, int]) -> None:
        super().__init__()
        self.spec = get_view(view)
        self.input_size = _checked_size(input_size)
        self.model = model
        self.train(model.training)  # a new wrapper takes the model's mode, so restoring it changes nothing

    @property
    def view(self) -> str:
        return self.spec.name

    @property
    def num_views(self) -> int:
        return self.spec.num_views

    @property
    def num_classes(self) -> int:
        """The wrapped model's ``num_classes`` (an AttributeError when it has none)."""
        return self.model.num_classes

    def views(self, x: torch.Tensor) -> torch.Tensor:
        """The view's crops of a batch as one (V·N, C, h, w) batch, view-major (view v of sample n at v·N + n)."""
        if x.ndim != 4:
            raise DcnnError(
                f"a view model takes a batch of images (N, C, H, W), got a tensor of shape {tuple(x.shape)}."
            )
        crop_h, crop_w = self.input_size
        source_h, source_w = x.shape[-2:]
        if source_h < crop_h or source_w < crop_w:
            raise DcnnError(
                f"the {self.view!r} view crops {crop_h}x{crop_w} pixels but the images are {source_h}x{source_w}; "
                f"prepare them at eval_source_size({self.view!r}, ...) or larger."
            )
        crops = []
        for position in self.spec.crops:
            top, left = crop_offset(position, (source_h, source_w), (crop_h, crop_w))
            crop = x[:, :, top : top + crop_h, left : left + crop_w]
            crops += [crop if shift == (0, 0) else shifted(crop, *shift) for shift in self.spec.shifts]
        if self.spec.mirror:
            crops += [crop.flip(-1) for crop in crops]
        return crops[0] if len(crops) == 1 else torch.cat(crops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = self.model(self.views(x))
        logits = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
        if logits.dtype in (torch.float16, torch.bfloat16):  # autocast: average in float32
            logits = logits.float()
        log_probs = logits.log_softmax(dim=-1).reshape(self.num_views, x.shape[0], -1)
        # log(mean_v p_v) = logsumexp_v(log p_v) - log V: no underflow to log(0) for tiny probabilities.
        return torch.logsumexp(log_probs, dim=0) - math.log(self.num_views)

    def extra_repr(self) -> str:
        return f"view={self.view!r}, input_size={self.input_size}, num_views={self.num_views}"


def shifted(x: torch.Tensor, down: int, right: int) -> torch.Tensor:
    """`x` (N, C, H, W) translated by (down, right) pixels, the uncovered border filled by reflection."""
    pad = max(abs(down), abs(right))
    padded = F.pad(x, (pad,) * 4, mode="reflect")
    height, width = x.shape[-2:]
    top, left = pad - down, pad - right
    return padded[:, :, top : top + height, left : left + width]


def _checked_size(input_size: tuple[int, int]) -> tuple[int, int]:
    size = tuple(input_size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise DcnnError(
            f"input_size must be (height, width) in positive pixels, got {input_size!r}; "
            "from a model's cfg.input_size (C, H, W) pass cfg.input_size[1:]."
        )
    return size  # type: ignore[return-value]
