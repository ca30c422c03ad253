"""Batched data augmentation, chosen by name in a recipe and run with kornia on whole batches.

A recipe lists augmentations in the order they apply; each entry is a bare name (default options) or
a one-key mapping from the name to its options::

    augment:
      - random_crop: {size: 32, padding: 4}
      - hflip
      - cutout: {size: 8}
      - mixup: {alpha: 0.2}

Every augmentation is a builder function registered with ``@register_augmentation("name")``; its
keyword parameters (with type hints and defaults) are the augmentation's options and the first line
of its docstring is its help text, so validation and ``describe_augmentations()`` come from the
builder itself.

:class:`BatchAugment` applies the list to a batch (N, C, H, W) on the batch's device: float in
[0, 1], or uint8 pixels. A uint8 batch goes through the augmentations that move, copy or zero pixels
(:class:`PixelOp`: crops, random-resized crops, flips, cutout) as uint8, and becomes float [0, 1]
(:func:`dcnn.data.preprocess.to_float`) just before the first augmentation that needs floats; a list
of pixel operations only returns uint8, which :meth:`dcnn.data.preprocess.Preprocess.normalize`
converts and normalizes into one new batch.
On a CPU, moving bytes and mapping new memory cost more than the arithmetic of augmentation: uint8
pixels are 4x fewer bytes than floats, and cropping first makes the float batch at the output's size.
A crop followed by a flip draws both and writes the mirrored crop itself, with no second copy of
the batch.
Randomness comes from torch's global generators (kornia samples from them), seeded from the call's
`seed` inside ``torch.random.fork_rng``: the same seed gives the same batch, and the caller's random
state is left as it was. Label-mixing augmentations (mixup, cutmix) turn the integer labels into
soft targets (N, num_classes).

Grayscale (C = 1) batches work with every augmentation except the colour parts of color_jitter:
saturation and hue need RGB, and a grayscale batch with either set raises a DcnnError (set them to 0
to jitter brightness and contrast only).
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from dcnn.data.preprocess import to_float
from dcnn.data.whitening import ColorPCA, fit_color_pca
from dcnn.errors import DcnnError, did_you_mean

# An image operation maps a float batch (N, C, H, W) in [0, 1] to an augmented one.
ImageOp = Callable[[Tensor], Tensor]


class PixelOp:
    """An image operation that also runs on uint8 batches (N, C, H, W), returning uint8: it moves,
    copies or zeros pixels (a resize rounds its result to the nearest level)."""

    def __call__(self, images: Tensor) -> Tensor:
        raise NotImplementedError


class LabelMix:
    """An augmentation that mixes pairs of images and their targets (soft targets (N, K) in and out)."""

    def __call__(self, images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


@dataclass(frozen=True)
class AugmentationEntry:
    """A registered augmentation: its builder, options (name → inspect.Parameter) and help text."""

    name: str
    fn: Callable[..., ImageOp | LabelMix]
    options: dict[str, inspect.Parameter]
    hints: dict[str, Any]
    help: str


_REGISTRY: dict[str, AugmentationEntry] = {}


def register_augmentation(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated builder under `name`; its keyword parameters are the options."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            raise ValueError(f"augmentation {name!r} is registered twice")
        params = dict(inspect.signature(fn).parameters)
        for param in params.values():
            if param.kind is not inspect.Parameter.KEYWORD_ONLY or param.default is inspect.Parameter.empty:
                raise ValueError(f"augmentation {name!r}: option {param.name!r} must be keyword-only with a default")
        help_text = (inspect.getdoc(fn) or "").split("\n", 1)[0]
        _REGISTRY[name] = AugmentationEntry(name, fn, params, typing.get_type_hints(fn), help_text)
        return fn

    return decorate


def augmentation_names() -> list[str]:
    """The registered augmentation names, sorted."""
    return sorted(_REGISTRY)


def describe_augmentations() -> list[tuple[str, dict[str, Any], str]]:
    """(name, options with their defaults, one-line help) for every augmentation, sorted by name."""
    return [
        (name, {k: p.default for k, p in entry.options.items()}, entry.help)
        for name, entry in sorted(_REGISTRY.items())
    ]


# ---------------------------------------------------------------------------------------------
# Validation of a recipe's augment list.


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        return f"a pair of {typing.get_args(hint)[0].__name__}s, e.g. [a, b]"
    return {bool: "true or false", int: "an integer", float: "a number"}.get(hint, getattr(hint, "__name__", str(hint)))


def _coerce(hint: Any, value: Any) -> Any:
    """`value` as the type `hint` names; raises TypeError when it is not one."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal and value in args:
        return value
    if origin in (typing.Union, types.UnionType):  # e.g. int | None
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(option, value)
            except TypeError:
                continue
    if origin is tuple and isinstance(value, list | tuple) and len(value) == len(args):
        return tuple(_coerce(h, v) for h, v in zip(args, value, strict=True))
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if (hint is bool and isinstance(value, bool)) or (hint is int and is_number and isinstance(value, int)):
        return value
    if hint is float and is_number:
        return float(value)
    raise TypeError


def _entry(name: Any) -> AugmentationEntry:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise DcnnError(
            f"unknown augmentation {name!r}.{did_you_mean(str(name), _REGISTRY)} "
            f"Known augmentations: {', '.join(augmentation_names())}."
        )
    return _REGISTRY[name]


def parse_augment_spec(spec: list[str | dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Validate a recipe's augment list; returns (name, options) pairs with every option explicit.

    Each entry is a name or a one-key mapping name → options. Unknown names and options, values of
    the wrong type and values out of range raise a DcnnError saying what to write instead.
    """
    if not isinstance(spec, list):
        raise DcnnError(f"augment must be a list of augmentations, got {type(spec).__name__}. Write e.g. [hflip].")
    parsed = []
    for item in spec:
        if isinstance(item, dict):
            if len(item) != 1:
                raise DcnnError(
                    f"augment entry {item!r} must have exactly one key (the augmentation's name); "
                    "write one list entry per augmentation."
                )
            ((name, given),) = item.items()
            given = {} if given is None else given
        else:
            name, given = item, {}
        entry = _entry(name)
        if not isinstance(given, dict):
            raise DcnnError(f"augmentation {name!r}: options must be a mapping (e.g. {{p: 0.5}}), got {given!r}.")
        options = {k: p.default for k, p in entry.options.items()}
        for key, value in given.items():
            if key not in entry.options:
                valid = ", ".join(entry.options) or "none"
                raise DcnnError(
                    f"augmentation {name!r} has no option {key!r}.{did_you_mean(str(key), entry.options)} "
                    f"Its options are: {valid}."
                )
            hint = entry.hints[key]
            try:
                options[key] = _coerce(hint, value)
            except TypeError:
                raise DcnnError(
                    f"augmentation {name!r}: option {key!r} must be {_type_name(hint)}, got {value!r}."
                ) from None
        _build_op(entry, options)  # range checks live in the builders
        parsed.append((name, options))
    return parsed


def _build_op(entry: AugmentationEntry, options: dict[str, Any]) -> ImageOp | LabelMix:
    try:
        return entry.fn(**options)
    except ValueError as err:
        raise DcnnError(f"augmentation {entry.name!r}: {err}.") from None


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _check_p(p: float) -> None:
    _check(0.0 <= p <= 1.0, f"p must be a probability in [0, 1], got {p}")


def _kornia() -> Any:
    """kornia.augmentation, imported when an augmentation is built (not when recipes are checked)."""
    import kornia.augmentation

    return kornia.augmentation


# ---------------------------------------------------------------------------------------------
# The batch augmenter.


class BatchAugment:
    """Applies a parsed augment list to batches; call it as ``augment(images, labels, seed)``.

    Attributes:
        spec: the (name, options) pairs, in order.
        num_classes: width of the soft targets when labels are mixed.
        mixes_labels: True when mixup or cutmix is in the list (the call then returns soft targets).
    """

    def __init__(self, spec: list[tuple[str, dict[str, Any]]], num_classes: int) -> None:
        if num_classes < 1:
            raise DcnnError(f"num_classes must be at least 1, got {num_classes}.")
        self.spec = spec
        self.num_classes = num_classes
        self._ops = [_build_op(_REGISTRY[name], options) for name, options in spec]
        self.mixes_labels = any(isinstance(op, LabelMix) for op in self._ops)

    def __repr__(self) -> str:
        return f"BatchAugment({self.spec!r}, num_classes={self.num_classes})"

    def fit(self, images: Tensor) -> None:
        """Fit the augmentations that need training-set statistics (pca_lighting) on uint8 training
        images (N, C, H, W)."""
        for op in self._ops:
            if hasattr(op, "fit"):
                op.fit(images)

    def __call__(self, images: Tensor, labels: Tensor, seed: int, index: Tensor | None = None,
                 epoch: int = 0) -> tuple[Tensor, Tensor]:
        """Augment a batch.

        Args:
            images: float (N, C, H, W) in [0, 1], or uint8 pixels, on any device.
            labels: int64 (N,) class indices, aligned with `images`.
            seed: the same seed gives the same output; the global random state is not changed.
            index, epoch: the images' positions in the training split and the epoch, for the
                augmentations that follow an image across epochs (hflip with alternate).

        Returns:
            The augmented images (same shape unless a crop sets another size) and the targets:
            `labels` unchanged, or float (N, num_classes) soft targets when :attr:`mixes_labels`.
            The images are float in [0, 1], or uint8 when uint8 came in and every augmentation of
            the list is a :class:`PixelOp`.
        """
        if images.ndim != 4 or not (images.is_floating_point() or images.dtype == torch.uint8):
            raise DcnnError(
                "augmentation needs a batch (N, C, H, W) of uint8 pixels or floats in [0, 1], "
                f"got {images.dtype} {tuple(images.shape)}."
            )
        if labels.shape != images.shape[:1] or labels.dtype != torch.long:
            raise DcnnError(
                f"augmentation needs int64 labels of shape ({images.shape[0]},), "
                f"got {labels.dtype} {tuple(labels.shape)}."
            )
        targets = labels
        if self.mixes_labels:
            if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < self.num_classes:
                raise DcnnError(
                    f"labels must lie in [0, {self.num_classes - 1}] to be mixed, "
                    f"got [{int(labels.min())}, {int(labels.max())}]."
                )
            soft = images.dtype if images.is_floating_point() else torch.float32
            targets = F.one_hot(labels, self.num_classes).to(soft)
        device = images.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.random.default_generator.manual_seed(seed)
            if device.type == "cuda":
                with torch.cuda.device(device):
                    torch.cuda.manual_seed(seed)
            fused = None  # a flip already applied by the crop before it
            given = images.untyped_storage().data_ptr()  # the caller's batch, which no op writes over
            for op, then in zip(self._ops, [*self._ops[1:], None], strict=True):
                if images.dtype == torch.uint8 and not isinstance(op, PixelOp):
                    images = to_float(images)
                if op is fused:
                    continue
                if isinstance(op, LabelMix):
                    images, targets = op(images, targets)
                elif isinstance(op, Crop) and isinstance(then, Flip):
                    images, fused = op(images, then_flip=then, index=index, epoch=epoch), then
                elif isinstance(op, Flip):
                    images = op(images, index, epoch)
                elif isinstance(op, Cutout):
                    images = op(images, in_place=images.untyped_storage().data_ptr() != given)
                else:
                    images = op(images)
        return images, targets


def build_augment(spec: list[str | dict[str, Any]] | None, num_classes: int) -> BatchAugment | None:
    """A :class:`BatchAugment` for a recipe's augment list (None when the list is empty or absent)."""
    if not spec:
        return None
    return BatchAugment(parse_augment_spec(spec), num_classes)


# ---------------------------------------------------------------------------------------------
# Helpers of the hand-written augmentations. Their random numbers are drawn on the CPU from torch's
# global generator (seeded by BatchAugment), so CPU and CUDA batches get the same draws.


def _bernoulli(n: int, p: float, device: torch.device) -> Tensor:
    """A (n,) boolean mask, each entry True with probability p."""
    return (torch.rand(n) < p).to(device)


# ---------------------------------------------------------------------------------------------
# Photometric augmentations.


@register_augmentation("color_jitter")
def color_jitter(
    *, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4, hue: float = 0.0, p: float = 1.0
) -> ImageOp:
    """Random brightness, contrast, saturation and hue in random order (Howard 2013; Szegedy et al. 2015)."""
    for option, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
        _check(value >= 0.0, f"{option} must be at least 0, got {value}")
    _check(0.0 <= hue <= 0.5, f"hue must lie in [0, 0.5], got {hue}")
    _check_p(p)
    # kornia's ColorJitter follows torchvision's: each factor is drawn from [1 - x, 1 + x] (hue: [-x, x]).
    jitter = _kornia().ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue, p=p)

    def apply(images: Tensor) -> Tensor:
        if images.shape[1] != 3 and (saturation or hue):
            raise DcnnError(
                f"color_jitter's saturation and hue need RGB images, got {images.shape[1]} channel(s); "
                "set saturation: 0 and hue: 0 to jitter brightness and contrast only."
            )
        return jitter(images)

    return apply


@register_augmentation("contrast_stretch")
def contrast_stretch(*, p: float = 0.5) -> ImageOp:
    """Stretch each image's values linearly so that its minimum becomes 0 and its maximum 1."""
    # Linear contrast stretching (Gonzalez & Woods, Digital Image Processing, Sec. 3.2), over all
    # channels of an image at once so that its colours keep their balance (the "autocontrast" of
    # AutoAugment, Cubuk et al. 2019, stretches each channel instead). A constant image is left as is.
    _check_p(p)

    def apply(images: Tensor) -> Tensor:
        flat = images.flatten(1)
        low = flat.amin(dim=1).view(-1, 1, 1, 1)
        span = flat.amax(dim=1).view(-1, 1, 1, 1) - low
        chosen = _bernoulli(images.shape[0], p, images.device).view(-1, 1, 1, 1) & (span > 0)
        stretched = (images - low) / torch.where(span > 0, span, torch.ones_like(span))
        return torch.where(chosen, stretched.clamp(0.0, 1.0), images)

    return apply


@register_augmentation("equalize")
def equalize(*, p: float = 0.5) -> ImageOp:
    """Histogram equalization of each channel (256 levels), as in AutoAugment (Cubuk et al. 2019)."""
    _check_p(p)
    return _kornia().RandomEqualize(p=p)


@register_augmentation("clahe")
def clahe(*, clip_limit: float = 40.0, grid_size: int = 8, p: float = 0.5) -> ImageOp:
    """Contrast-limited adaptive histogram equalization on a grid of tiles (Zuiderveld 1994)."""
    _check(clip_limit >= 0.0, f"clip_limit must be at least 0, got {clip_limit}")
    _check(grid_size >= 1, f"grid_size must be at least 1, got {grid_size}")
    _check_p(p)
    # kornia.augmentation.RandomClahe applies kornia.enhance.equalize_clahe to the chosen images.
    equalize_tiles = _kornia().RandomClahe(clip_limit=(clip_limit, clip_limit), grid_size=(grid_size, grid_size), p=p)

    def apply(images: Tensor) -> Tensor:
        try:
            return equalize_tiles(images)
        except ValueError as err:  # kornia's rule of the smallest image a grid admits
            raise DcnnError(f"clahe: {err} Lower grid_size.") from None

    return apply


@register_augmentation("gaussian_noise")
def gaussian_noise(*, std: float = 0.05, p: float = 1.0) -> ImageOp:
    """Add zero-mean Gaussian noise of standard deviation `std` to every pixel, clamped to [0, 1]."""
    # Training with additive noise (Bishop 1995, "Training with noise is equivalent to Tikhonov
    # regularization").
    _check(std >= 0.0, f"std must be at least 0, got {std}")
    _check_p(p)
    noise = _kornia().RandomGaussianNoise(mean=0.0, std=std, p=p)
    return lambda images: noise(images).clamp(0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Geometric augmentations (areas moved in from outside the image are zeros).


@register_augmentation("translate")
def translate(*, fraction: float = 0.1) -> ImageOp:
    """Shift by a whole number of pixels, up to `fraction` of the width and height each way."""
    # Translated copies of the training images (Simard et al. 2003, Sec. 2; LeCun et al. 1998).
    # Nearest-neighbour sampling of a pure translation shifts by whole pixels and keeps pixel values.
    _check(0.0 <= fraction <= 1.0, f"fraction must lie in [0, 1], got {fraction}")
    return _kornia().RandomAffine(degrees=0.0, translate=(fraction, fraction), resample="nearest", p=1.0)


@register_augmentation("scale")
def scale(*, min: float = 0.9, max: float = 1.1) -> ImageOp:
    """Zoom about the centre by a factor drawn uniformly from [min, max]."""
    # Scale distortions (Simard et al. 2003, Sec. 2).
    _check(0.0 < min <= max, f"scale needs 0 < min <= max, got min={min}, max={max}")
    return _kornia().RandomAffine(degrees=0.0, scale=(min, max), p=1.0)


@register_augmentation("rotate")
def rotate(*, degrees: float = 15.0) -> ImageOp:
    """Rotate about the centre by an angle drawn uniformly from [-degrees, degrees]."""
    # Rotation distortions (Simard et al. 2003, Sec. 2).
    _check(0.0 <= degrees <= 180.0, f"degrees must lie in [0, 180], got {degrees}")
    return _kornia().RandomRotation(degrees=degrees, p=1.0)


class Flip(PixelOp):
    """Mirror each image along `dim` with probability p, by flipping the chosen images of a copy (kornia's
    flips build and apply a transformation matrix per image, several times slower on a CPU).

    With `alternate`, an image is mirrored in every other epoch instead of at random (airbench's
    alternating flip, Jordan 2024): in even epochs the images whose position in the training
    split hashes to 1 (half of them, scattered), in odd epochs the other half, so that each pair of
    epochs shows every image once each way. Without positions (a lone batch, as `dcnn augment`
    draws), the batch positions stand in."""

    def __init__(self, p: float, dim: int, alternate: bool = False) -> None:
        _check_p(p)
        _check(not alternate or p == 0.5, f"alternate flips mirror each image in every other epoch, so p is 0.5, "
               f"not {p}; remove p")
        self.p, self.dim, self.alternate = p, dim, alternate

    def draw(self, n: int, index: Tensor | None = None, epoch: int = 0) -> Tensor:
        """Which of `n` images are mirrored: a (n,) boolean CPU tensor. `index`: the images' positions
        in the training split, `epoch` the epoch (read by alternating flips only)."""
        if not self.alternate:
            return _bernoulli(n, self.p, torch.device("cpu"))
        index = torch.arange(n) if index is None else index.cpu()
        half = (index * 2654435761 % 2**32) >> 31  # Knuth's multiplicative hash, its top bit
        return (half + epoch) % 2 == 1

    def __call__(self, images: Tensor, index: Tensor | None = None, epoch: int = 0) -> Tensor:
        # A copy with the chosen images mirrored one by one: a flip of the whole batch and a select
        # of the two took 10x as long on 64 photos of 224×224, indexing the chosen images 5x.
        out = images.clone()
        for i in self.draw(images.shape[0], index, epoch).nonzero().view(-1).tolist():
            out[i] = images[i].flip(self.dim)
        return out


class Crop(PixelOp):
    """A crop that can also apply the flip that follows it in the list, in the same pass: it draws
    its own random numbers first, then the flip's, as the two would one after the other."""

    def __call__(self, images: Tensor, then_flip: Flip | None = None, index: Tensor | None = None,
                 epoch: int = 0) -> Tensor:
        """`index` and `epoch` are passed to the flip's draw."""
        raise NotImplementedError


@register_augmentation("hflip")
def hflip(*, p: float = 0.5, alternate: bool = False) -> Flip:
    """Mirror left-right with probability p (Krizhevsky et al. 2012, Sec. 4.1), or alternate epochs (Jordan 2024)."""
    return Flip(p, -1, alternate)


@register_augmentation("vflip")
def vflip(*, p: float = 0.5) -> Flip:
    """Mirror top-bottom with probability p."""
    return Flip(p, -2)


@register_augmentation("perspective")
def perspective(*, distortion_scale: float = 0.5, p: float = 0.5) -> ImageOp:
    """Random perspective warp: each corner moves by up to distortion_scale of half the side."""
    _check(0.0 <= distortion_scale <= 1.0, f"distortion_scale must lie in [0, 1], got {distortion_scale}")
    _check_p(p)
    return _kornia().RandomPerspective(distortion_scale=distortion_scale, p=p)


# From this many pixels an image, random_crop on a CPU crops each image on its own
# (RandomCrop._one_by_one) rather than gathering runs of a padded batch (RandomCrop._as_runs): about
# even at 128×128, one by one 2x faster at 224×224, 5x slower at 32×32 (BENCHMARKS.md, data pipeline).
CROP_ONE_BY_ONE = 128 * 128


def _source_index(index: Tensor, size: int, padding_mode: str) -> tuple[Tensor, Tensor | None]:
    """Where positions `index` of an image padded on both sides read from in the image of `size`
    (index 0 is the image's first pixel): the positions, and for zero padding which ones are inside."""
    if padding_mode == "replicate":
        return index.clamp(0, size - 1), None
    if padding_mode == "reflect":  # mirrored about the edge pixel, which is not repeated (as F.pad's)
        index = index.abs()
        return torch.where(index >= size, 2 * (size - 1) - index, index), None
    return index.clamp(0, size - 1), (index >= 0) & (index < size)


class RandomCrop(Crop):
    """The random_crop augmentation: a window of the padded image, at a random offset per image."""

    def __init__(self, size: int | None, padding: int, padding_mode: str) -> None:
        _check(size is None or size >= 1, f"size must be at least 1, got {size}")
        _check(padding >= 0, f"padding must be at least 0, got {padding}")
        self.size, self.padding, self.padding_mode = size, padding, padding_mode

    def __call__(self, images: Tensor, then_flip: Flip | None = None, index: Tensor | None = None,
                 epoch: int = 0) -> Tensor:
        n, _, height, width = images.shape
        size, padding = self.size, self.padding
        out_h, out_w = (size, size) if size is not None else (height, width)
        if out_h > height + 2 * padding or out_w > width + 2 * padding:
            raise DcnnError(
                f"random_crop size {size} is larger than the padded image ({height}×{width} plus {padding} "
                "on each side); lower size or raise padding."
            )
        if self.padding_mode == "reflect" and padding >= min(height, width):
            raise DcnnError(f"random_crop reflect padding {padding} must be smaller than the image ({height}×{width}).")
        dy = torch.randint(0, height + 2 * padding - out_h + 1, (n, 1))
        dx = torch.randint(0, width + 2 * padding - out_w + 1, (n,))
        rows = dy - padding + torch.arange(out_h)
        mirrored = torch.zeros(n, dtype=torch.bool)  # left-right
        if then_flip is not None:
            mirror = then_flip.draw(n, index, epoch)
            if then_flip.dim == -1:
                mirrored = mirror
            else:
                rows = torch.where(mirror.view(n, 1), rows.flip(1), rows)
        rows, rows_in = _source_index(rows, height, self.padding_mode)
        large = images.device.type == "cpu" and height * width >= CROP_ONE_BY_ONE
        crop = self._one_by_one if large else self._as_runs  # (a GPU: fewer kernels as runs)
        out = crop(images.permute(0, 2, 3, 1), rows, dx, mirrored, out_w)
        if rows_in is not None and padding:  # zero padding: the rows outside the image, by index
            # (a mask broadcast over the batch took 8-9 ms for 64 photos of 224×224, this 0.1)
            image, row = (~rows_in).nonzero(as_tuple=True)
            out[image.to(images.device), row.to(images.device)] = 0
        return out.permute(0, 3, 1, 2)

    def _as_runs(self, pixels: Tensor, rows: Tensor, dx: Tensor, mirrored: Tensor, out_w: int) -> Tensor:
        # Small images. Every output row is a run of out_w pixels of one row of the batch padded left
        # and right, so the crop is one gather of whole runs (an index_select over a view of the padded
        # batch with one run starting at every pixel), not of single pixels: the padded batch is made
        # first, as pixel rows (N, H, W + 2p, C), with the images mirrored left-right after it, so a
        # left-right mirrored window is a forward run too; rows (padding, vertical mirroring) are
        # chosen by the run's index. A gather of single pixels took 1.3x as long on 256 CIFAR images.
        n, height, width, channels = pixels.shape
        padding, device = self.padding, pixels.device
        padded_w = width + 2 * padding
        flipped = mirrored.nonzero().view(-1)
        padded = torch.empty((n + len(flipped), height, padded_w, channels), dtype=pixels.dtype, device=device)
        padded[:n, :, padding : padding + width] = pixels
        if len(flipped):
            padded[n:, :, padding : padding + width] = pixels.index_select(0, flipped.to(device)).flip(2)
        border = torch.cat([torch.arange(-padding, 0), torch.arange(width, width + padding)])
        source, inside = _source_index(border, width, self.padding_mode)
        for column, read in zip((border + padding).tolist(), (source + padding).tolist(), strict=True):
            padded[:, :, column] = 0 if inside is not None else padded[:, :, read]  # faster than a gather
        image = torch.arange(n)
        image[flipped] = n + torch.arange(len(flipped))
        start = torch.where(mirrored, padded_w - out_w - dx, dx)  # the window in the mirrored row
        run = (image.view(n, 1) * height + rows) * padded_w + start.view(n, 1)
        runs = padded.view(-1).unfold(0, out_w * channels, channels)  # (pixels, a run from each)
        return runs.index_select(0, run.view(-1).to(device)).view(n, rows.shape[1], out_w, channels)

    def _one_by_one(self, pixels: Tensor, rows: Tensor, dx: Tensor, mirrored: Tensor, out_w: int) -> Tensor:
        # Large images. One gather of whole source rows for the batch (rows of W·C bytes: padding
        # rows and vertical mirroring are in the row index), then each image's window of columns:
        # one copy of the columns inside the image, a gather of the few padding columns, and a flip
        # of the whole window when it is mirrored (the window of a mirrored padded image is the
        # mirrored window). On 64 photos of 224×224 with their flips: 3.8 ms, against 7.5 for the
        # runs of a padded batch, whose mirrored copies and padding columns cost more than they save.
        n, height, width, channels = pixels.shape
        padding, device, out_h = self.padding, pixels.device, rows.shape[1]
        source_rows = (torch.arange(n).view(n, 1) * height + rows).view(-1).to(device)
        picked = pixels.reshape(n * height, width * channels).index_select(0, source_rows)
        picked = picked.view(n, out_h, width, channels)
        out = torch.empty((n, out_h, out_w, channels), dtype=pixels.dtype, device=device)
        sides = {}  # by the window's first column: the columns inside the image, what each side reads
        for left in set((dx - padding).tolist()):
            start, stop = max(0, -left), min(out_w, width - left)
            reads = []
            for side in (torch.arange(start), torch.arange(stop, out_w)):
                source, inside = _source_index(side + left, width, self.padding_mode)
                reads.append(None if inside is not None else source.to(device))
            sides[left] = (start, stop, *reads)
        for i, (left, mirror) in enumerate(zip((dx - padding).tolist(), mirrored.tolist(), strict=True)):
            start, stop, left_reads, right_reads = sides[left]
            window, image = out[i], picked[i]
            window[:, start:stop] = image[:, start + left : stop + left]
            for columns, reads in ((slice(0, start), left_reads), (slice(stop, out_w), right_reads)):
                if columns.start < columns.stop:
                    window[:, columns] = 0 if reads is None else image.index_select(1, reads)
            if mirror:
                window.copy_(window.flip(1))
        return out


@register_augmentation("random_crop")
def random_crop(
    *, size: int | None = None, padding: int = 4, padding_mode: Literal["zeros", "reflect", "replicate"] = "zeros"
) -> RandomCrop:
    """Pad each side by `padding` pixels, then take a random size×size window (default: the image's size)."""
    # The CIFAR protocol: pad 4, random 32×32 crop (He et al. 2016, Sec. 4.2); random crops of the
    # training images (Krizhevsky et al. 2012, Sec. 4.1); translations by a pixel or two for digits
    # (LeCun et al. 1998, Sec. V.B, "distortions").
    return RandomCrop(size, padding, padding_mode)


class ResizedCrop(Crop):
    """The random_resized_crop augmentation: a random box of each image, resized to size×size."""

    def __init__(self, size: int, scale: tuple[float, float], ratio: tuple[float, float]) -> None:
        _check(size >= 1, f"size must be at least 1, got {size}")
        _check(0.0 < scale[0] <= scale[1] <= 1.0, f"scale needs 0 < low <= high <= 1, got {list(scale)}")
        _check(0.0 < ratio[0] <= ratio[1], f"ratio needs 0 < low <= high, got {list(ratio)}")
        self.size, self.scale, self.ratio = size, scale, ratio

    def draw(self, n: int, height: int, width: int) -> Tensor:
        """The crop of each of `n` images of height×width: int64 (n, 4) rows of (top, left, height, width).

        torchvision's RandomResizedCrop sampling, drawn for the whole batch at once: 10 tries per
        image of an area fraction uniform in `scale` and an aspect ratio log-uniform in `ratio`, the
        first that fits placed uniformly; where none fits, the centre crop of the whole image with
        its aspect ratio clamped to `ratio`.
        """
        scale, ratio = self.scale, self.ratio
        area = height * width * torch.empty(n, 10).uniform_(scale[0], scale[1])
        aspect = torch.exp(torch.empty(n, 10).uniform_(math.log(ratio[0]), math.log(ratio[1])))
        crop_w, crop_h = (area * aspect).sqrt().round(), (area / aspect).sqrt().round()
        fits = (crop_w >= 1) & (crop_w <= width) & (crop_h >= 1) & (crop_h <= height)
        pick = fits.float().argmax(1)
        rows = torch.arange(n)
        in_ratio = width / height
        fallback_w = width if in_ratio <= ratio[1] else round(height * ratio[1])
        fallback_h = height if in_ratio >= ratio[0] else round(width / ratio[0])
        found = fits.any(1)
        crop_w = torch.where(found, crop_w[rows, pick], torch.tensor(float(fallback_w)))
        crop_h = torch.where(found, crop_h[rows, pick], torch.tensor(float(fallback_h)))
        top = torch.where(found, (torch.rand(n) * (height - crop_h + 1)).floor(), ((height - crop_h) / 2).floor())
        left = torch.where(found, (torch.rand(n) * (width - crop_w + 1)).floor(), ((width - crop_w) / 2).floor())
        return torch.stack([top, left, crop_h, crop_w], 1).long()

    def __call__(self, images: Tensor, then_flip: Flip | None = None, index: Tensor | None = None,
                 epoch: int = 0) -> Tensor:
        # Each crop is resized on its own (bilinear with antialiasing, pixel centres aligned: what
        # torchvision's RandomResizedCrop and Pillow's resize compute) from a channels-last copy
        # of the crop alone: torch's AVX2 kernels resize uint8 channels-last images directly, and
        # only the crop's pixels are read. The batch is channels-last too, so that each result is
        # stored by a plain copy (into an NCHW batch, a transposing uint8 copy, as long again as
        # the resize). Measured faster on a CPU than one grid_sample over the float batch,
        # separable gathers, or resizing each channel as a one-channel image.
        n, channels, height, width = images.shape
        boxes = self.draw(n, height, width).tolist()
        mirror = then_flip.draw(n, index, epoch).tolist() if then_flip is not None else [False] * n
        out = torch.empty((n, channels, self.size, self.size), dtype=images.dtype, device=images.device,
                          memory_format=torch.channels_last)
        for i, ((top, left, crop_h, crop_w), flip) in enumerate(zip(boxes, mirror, strict=True)):
            crop = images[i : i + 1, :, top : top + crop_h, left : left + crop_w]
            resized = _resize(crop.contiguous(memory_format=torch.channels_last), self.size)
            out[i : i + 1] = resized.flip(then_flip.dim) if flip and then_flip is not None else resized
        return out


def _resize(images: Tensor, size: int) -> Tensor:
    """Images (N, C, H, W) resized to size×size, bilinear with antialiasing, in their dtype (uint8
    rounded to the nearest level)."""
    if images.dtype == torch.uint8 and images.device.type != "cpu":  # kernels for floats only there
        resized = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True)
        return resized.round_().clamp_(0, 255).to(torch.uint8)
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True)


@register_augmentation("random_resized_crop")
def random_resized_crop(
    *, size: int = 224, scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3)
) -> ResizedCrop:
    """Crop a random area fraction `scale` and aspect ratio `ratio`, resized to size×size."""
    # The Inception crop (Szegedy et al. 2015, Sec. 6): 8%-100% of the area, aspect ratio 3/4-4/3.
    return ResizedCrop(size, scale, ratio)


class Cutout(PixelOp):
    """The cutout augmentation: a size×size square of zeros at a random centre of each image."""

    def __init__(self, size: int, p: float) -> None:
        _check(size >= 1, f"size must be at least 1, got {size}")
        _check_p(p)
        self.size, self.p = size, p

    def __call__(self, images: Tensor, in_place: bool = False) -> Tensor:
        """The batch with its holes; `in_place`: written over `images` (a batch an earlier augmentation
        of the same call made), else over a copy."""
        # The holes' pixels zeroed by one indexed write (N·size² pixels at most), not a mask of the
        # whole batch: at 224×224 a masked copy took 29 ms for 64 images, and the copy of the batch
        # (skipped in place) 0.7 ms of the remaining 1.0.
        n, _, height, width = images.shape
        size = self.size
        cy = torch.randint(0, height, (n,))
        cx = torch.randint(0, width, (n,))
        chosen = _bernoulli(n, self.p, torch.device("cpu"))
        shape = (n, size, size)  # every pixel of each square, clipped at the borders below
        rows = ((cy - size // 2).view(n, 1) + torch.arange(size)).view(n, size, 1).expand(shape)
        cols = ((cx - size // 2).view(n, 1) + torch.arange(size)).view(n, 1, size).expand(shape)
        hole = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width) & chosen.view(n, 1, 1)
        where = [i[hole].to(images.device) for i in (torch.arange(n).view(n, 1, 1).expand(shape), rows, cols)]
        out = images if in_place else images.clone()
        out.permute(0, 2, 3, 1)[tuple(where)] = 0  # (N, H, W, C): each index picks a pixel's C values
        return out


@register_augmentation("cutout")
def cutout(*, size: int = 16, p: float = 1.0) -> Cutout:
    """Zero a size×size square at a uniformly random centre (clipped at the borders) of each image."""
    # DeVries & Taylor 2017, Sec. 3: the centre may lie anywhere in the image, so the square may be
    # partly outside it; 16×16 on CIFAR-10, 8×8 on CIFAR-100.
    return Cutout(size, p)


# ---------------------------------------------------------------------------------------------
# Label mixing: one mixing weight and one partner permutation per batch, as in the papers' code.


def _beta(alpha: float) -> float:
    return float(torch.distributions.Beta(torch.tensor(alpha), torch.tensor(alpha)).sample())


class MixUp(LabelMix):
    """x = λ x_i + (1 - λ) x_j, y = λ y_i + (1 - λ) y_j with λ ~ Beta(α, α) (Zhang et al. 2018, Eq. 1)."""

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha

    def __call__(self, images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        lam = _beta(self.alpha)
        perm = torch.randperm(images.shape[0]).to(images.device)
        return lam * images + (1 - lam) * images[perm], lam * targets + (1 - lam) * targets[perm]


class CutMix(LabelMix):
    """Paste a box of a partner image; targets weighted by the pasted area (Yun et al. 2019, Sec. 3.1).

    λ ~ Beta(α, α); the box has sides sqrt(1 - λ)·(H, W) around a uniform random centre, clipped at
    the borders, and the label weight of the partner is the area actually pasted over H·W.
    """

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha

    def __call__(self, images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        height, width = images.shape[-2:]
        cut = (1.0 - _beta(self.alpha)) ** 0.5
        cut_h, cut_w = int(height * cut), int(width * cut)
        cy, cx = int(torch.randint(0, height, ())), int(torch.randint(0, width, ()))
        top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
        left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
        perm = torch.randperm(images.shape[0]).to(images.device)
        mixed = images.clone()
        mixed[:, :, top:bottom, left:right] = images[perm, :, top:bottom, left:right]
        pasted = (bottom - top) * (right - left) / (height * width)
        return mixed, (1 - pasted) * targets + pasted * targets[perm]


class PCALighting:
    """AlexNet's colour augmentation (Krizhevsky et al. 2012, Sec. 4.1): add to every pixel of an
    image the principal components of the training set's RGB values, each scaled by its eigenvalue
    times a N(0, std) draw per image. Needs the training split: :meth:`BatchAugment.fit`."""

    def __init__(self, std: float) -> None:
        self.std = std
        self.color_pca: ColorPCA | None = None

    def fit(self, images: Tensor) -> None:
        if images.shape[1] != 3:
            raise DcnnError(f"pca_lighting alters the RGB channels; these images have {images.shape[1]}.")
        self.color_pca = fit_color_pca(images)

    def __call__(self, images: Tensor) -> Tensor:
        if self.color_pca is None:
            raise DcnnError("pca_lighting must be fitted on the training images first (BatchAugment.fit).")
        return self.color_pca.augment(images, self.std).clamp_(0.0, 1.0)


@register_augmentation("pca_lighting")
def pca_lighting(*, std: float = 0.1) -> PCALighting:
    """AlexNet's PCA colour noise, fitted on the training images."""
    _check(std >= 0, f"std must be at least 0, got {std}")
    return PCALighting(std)


@register_augmentation("mixup")
def mixup(*, alpha: float = 0.2) -> LabelMix:
    """Blend each image and its target with another's, weight λ ~ Beta(alpha, alpha) (Zhang et al. 2018)."""
    _check(alpha > 0.0, f"alpha must be positive, got {alpha}")
    return MixUp(alpha)


@register_augmentation("cutmix")
def cutmix(*, alpha: float = 1.0) -> LabelMix:
    """Paste a random box from another image; targets weighted by pasted area (Yun et al. 2019)."""
    _check(alpha > 0.0, f"alpha must be positive, got {alpha}")
    return CutMix(alpha)
