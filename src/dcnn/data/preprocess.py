"""What the model sees: one description of preprocessing for train, eval, predict and export.

A :class:`Preprocess` says how an image becomes model input:

1. Geometry, to the model's ``input_size`` (C, H, W):
   - "crop": resize so that the image covers ``floor(size / crop_pct)`` and take the centre
     crop (crop_pct 1: the shorter side becomes the target, torchvision's Resize + CenterCrop,
     what training on photos uses; 0.875: the ImageNet evaluation protocol of timm and
     torchvision);
   - "stretch": resize to the input size whatever the aspect ratio;
   - "pad" (digit models): scale the image, keeping its aspect ratio, to fit inside
     `content_size` (MNIST's 28×28), then centre it on a black canvas of the input size
     (LeNet-5 reads 32×32 inputs holding a 28×28 MNIST image, LeCun et al. 1998, Sec. II.B, III.A).
2. Channels: 1 channel takes the BT.601 luminance, 3 channels repeat a grayscale image.
3. Optionally invert (1 - x): MNIST digits are white on black, a photo of a digit is dark on white.
4. Normalize: per-channel mean and std (the model's, or fitted on the training split), or a ZCA
   whitening fitted on the training split (Krizhevsky 2009, Appendix A), which replaces them.

Training applies steps 1-2 once when a dataset is loaded (:meth:`fit_batch` for tensor datasets,
:func:`dcnn.data.folder.fit_image` for files: the same function :meth:`pixels` uses), keeps uint8
pixels, augments batches (uint8 where an augmentation only moves pixels, [0, 1] floats otherwise)
and applies step 4 (:meth:`normalize`, which takes either). The description is
saved with every run and model file (:meth:`to_dict`, whitening tensors beside the weights), so
`eval`, `predict` and exporters prepare images exactly as training did.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from dcnn.data.folder import fit_image
from dcnn.data.images import decode_pixels, to_channels
from dcnn.data.whitening import Whitening
from dcnn.errors import DcnnError
from dcnn.models._registry import ModelCfg, get_model_cfg

# MNIST digits are 28×28 (LeCun et al. 1998, Sec. III.A).
MNIST_IMAGE_SIZE = 28
# Up to this many pixels of difference, a smaller dataset image is padded (as LeNet-5's 28→32)
# rather than resized.
MAX_PAD = 8
_TORCH_INTERPOLATION = {"nearest": "nearest-exact", "bilinear": "bilinear", "bicubic": "bicubic"}
ResizeMode = Literal["crop", "stretch", "pad"]


@dataclass(frozen=True)
class Preprocess:
    """How a model's input is prepared; calling it on a PIL image gives (C, H, W) model input.

    Attributes:
        input_size: (channels, height, width) the model reads; channels must be 1 or 3.
        mean, std: per-channel normalization, one value per channel.
        resize_mode: "crop", "stretch" or "pad" (see the module docstring).
        crop_pct: "crop" mode: fraction of the resized image kept by the centre crop.
        content_size: "pad" mode: the (height, width) box the image is fitted into (None: the
            whole input).
        interpolation: "bilinear", "bicubic" or "nearest" (antialiased when shrinking).
        invert: map x to 1 - x (dark-on-white photos for white-on-black models).
        background: grey level in [0, 1] transparent pixels are composited onto (1.0: white).
        whitening: a ZCA whitening fitted on the training split, applied instead of mean/std.
    """

    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize_mode: ResizeMode = "crop"
    crop_pct: float = 0.875
    content_size: tuple[int, int] | None = None
    interpolation: str = "bilinear"
    invert: bool = False
    background: float = 1.0
    whitening: Whitening | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        channels, height, width = self.input_size
        problems = []
        if channels not in (1, 3):
            problems.append(f"images give 1 (grayscale) or 3 (RGB) channels, not {channels}")
        if height < 1 or width < 1:
            problems.append(f"input size {self.input_size} has no pixels")
        if len(self.mean) != channels or len(self.std) != channels:
            problems.append(f"mean and std need {channels} values each, got {self.mean} and {self.std}")
        if any(s <= 0 for s in self.std):
            problems.append(f"std must be positive, got {self.std}")
        if self.resize_mode not in ("crop", "stretch", "pad"):
            problems.append(f"resize_mode must be 'crop', 'stretch' or 'pad', not {self.resize_mode!r}")
        if not 0 < self.crop_pct <= 1:
            problems.append(f"crop_pct must be in (0, 1], not {self.crop_pct}")
        if self.content_size is not None and not (
            0 < self.content_size[0] <= height and 0 < self.content_size[1] <= width
        ):
            problems.append(f"content_size {self.content_size} must fit inside {(height, width)}")
        if self.interpolation not in _TORCH_INTERPOLATION:
            problems.append(
                f"interpolation must be one of {', '.join(_TORCH_INTERPOLATION)}, not {self.interpolation!r}"
            )
        if not 0 <= self.background <= 1:
            problems.append(f"background must be a grey level in [0, 1], not {self.background}")
        if self.whitening is not None and self.whitening.output_shape != tuple(self.input_size):
            problems.append(f"the whitening maps images of {self.whitening.image_shape} to "
                            f"{self.whitening.output_shape}, not to the input size {tuple(self.input_size)}")
        if problems:
            raise DcnnError("invalid preprocessing: " + "; ".join(problems) + ".")

    # ----- construction ------------------------------------------------------------------------
    @classmethod
    def for_model(cls, model: nn.Module | str, *, invert: bool = False) -> Preprocess:
        """The preprocessing of a registered model (by name, or a model built by `create_model`).

        One-channel models read MNIST-format digits: the image fitted into 28×28, padded to the
        input size when that is at most 8 pixels larger (LeNet-5's 32×32), else fitted into the
        whole input. Three-channel models use the resize + centre crop of their configuration.
        """
        if isinstance(model, str):
            cfg = get_model_cfg(model)
            channels = cfg.input_size[0]
        else:
            cfg = getattr(model, "default_cfg", None)
            if not isinstance(cfg, ModelCfg):
                raise DcnnError(
                    f"{type(model).__name__} has no model configuration; build it with "
                    "dcnn.create_model, or describe its input with Preprocess(...)."
                )
            channels = model.in_chans
        _, height, width = cfg.input_size
        mean, std = per_channel(cfg.mean, channels), per_channel(cfg.std, channels)
        if channels == 1:
            fits_padded = all(0 <= size - MNIST_IMAGE_SIZE <= MAX_PAD for size in (height, width))
            return cls((1, height, width), mean, std, resize_mode="pad",
                       content_size=(MNIST_IMAGE_SIZE, MNIST_IMAGE_SIZE) if fits_padded else None,
                       interpolation=cfg.interpolation, invert=invert)
        return cls((channels, height, width), mean, std, resize_mode="crop", crop_pct=cfg.crop_pct,
                   interpolation=cfg.interpolation, invert=invert)

    @classmethod
    def for_training(
        cls, model_cfg: ModelCfg, channels: int, source_size: tuple[int, int] | None = None,
        fit: Literal["crop", "stretch"] = "crop", image_size: int | None = None,
    ) -> Preprocess:
        """How training data reaches a model: `source_size` is a tensor dataset's image size (None for
        image files of any size); `image_size` asks for a square input of that side.

        A dataset image as large as the model's minimum keeps its size; a smaller one is padded
        when it is at most MAX_PAD pixels smaller than the model's input (MNIST into LeNet-5),
        else resized. Photos are brought to the model's input size by `fit`.
        """
        _, min_h, min_w = model_cfg.min_input_size
        if image_size is not None:
            target = (image_size, image_size)
        elif source_size is not None and source_size[0] >= min_h and source_size[1] >= min_w:
            target = tuple(source_size)
        else:
            target = tuple(model_cfg.input_size[1:])
        mean, std = per_channel(model_cfg.mean, channels), per_channel(model_cfg.std, channels)
        if source_size is not None and channels == 1 and all(
            0 <= t - s <= MAX_PAD for t, s in zip(target, source_size, strict=True)
        ):  # digits: predictions fit a photo into the box a dataset digit fills
            return cls((1, *target), mean, std, "pad", content_size=tuple(source_size),
                       interpolation=model_cfg.interpolation)
        return cls((channels, *target), mean, std, fit, crop_pct=1.0, interpolation=model_cfg.interpolation)

    def with_stats(self, mean: tuple[float, ...], std: tuple[float, ...]) -> Preprocess:
        return replace(self, mean=tuple(mean), std=tuple(std))

    def with_whitening(self, whitening: Whitening | None) -> Preprocess:
        return replace(self, whitening=whitening)

    # ----- applying ----------------------------------------------------------------------------
    def __call__(self, image: Image.Image) -> torch.Tensor:
        """Preprocess a PIL image: a float32 tensor (C, H, W) ready for the model."""
        return self.normalize(self.pixels(image)[None])[0]

    def pixels(self, image: Image.Image) -> torch.Tensor:
        """A PIL image fitted to the input size, float32 (C, H, W) in [0, 1], not yet normalized."""
        channels, height, width = self.input_size
        if self.resize_mode == "pad":
            pixels = to_channels(decode_pixels(image, background=self.background), channels)
            if self.invert:
                pixels = 1.0 - pixels
            return self._pad(pixels)
        array = fit_image(image, (height, width), channels, self.resize_mode, self.crop_pct, self.interpolation)
        pixels = torch.from_numpy(array).float().div_(255.0)
        return 1.0 - pixels if self.invert else pixels

    def fit_batch(self, images: torch.Tensor) -> torch.Tensor:
        """A tensor dataset's uint8 images (N, H, W) or (N, C, H, W) brought to the input size and
        channel count, still uint8 (what training stores and augments)."""
        x = images.unsqueeze(1) if images.dim() == 3 else images
        channels, height, width = self.input_size
        if x.shape[1] != channels:
            if channels == 1:
                weights = torch.tensor((0.299, 0.587, 0.114), device=x.device).view(1, 3, 1, 1)
                x = (x.float() * weights).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
            else:
                x = x.expand(-1, channels, -1, -1)
        if x.shape[-2:] == (height, width):
            return x.contiguous()
        if self.resize_mode == "pad":  # the geometry of pixels(): fitted into the content box, centred
            (new_h, new_w), pad = self._pad_geometry(*x.shape[-2:])
            if x.shape[-2:] != (new_h, new_w):
                x = self._resize_uint8(x, (new_h, new_w))
            return F.pad(x, pad)
        return self._resize_uint8(x, (height, width))

    def _resize_uint8(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        mode = _TORCH_INTERPOLATION[self.interpolation]
        resized = F.interpolate(x.float(), size=size, mode=mode, antialias=mode != "nearest-exact")
        return resized.round_().clamp_(0, 255).to(torch.uint8)

    def normalize(self, x: torch.Tensor, fused: bool = False) -> torch.Tensor:
        """Pixels (N, C, H, W), uint8 or floats in [0, 1] → model input: whitened, or (x - mean) / std.
        uint8 pixels are converted and standardized on one new batch (:func:`to_float`, whose
        `fused` is for callers converting many batches)."""
        if x.dtype == torch.uint8:
            if self.whitening is None:
                return to_float(x, self.mean, self.std, fused=fused)
            x = to_float(x, fused=fused)
        if self.whitening is not None:
            return self.whitening.apply(x)
        return standardize(x, self.mean, self.std)

    def _pad_geometry(self, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
        """In "pad" mode: the size an image of (height, width) is scaled to (fitting the content box,
        aspect ratio kept) and the (left, right, top, bottom) margins centring it in the input."""
        _, out_h, out_w = self.input_size
        box_h, box_w = self.content_size or (out_h, out_w)
        scale = min(box_h / height, box_w / width)
        new_h = min(box_h, max(1, round(height * scale)))
        new_w = min(box_w, max(1, round(width * scale)))
        top, left = (out_h - new_h) // 2, (out_w - new_w) // 2
        return (new_h, new_w), (left, out_w - new_w - left, top, out_h - new_h - top)

    def _pad(self, pixels: torch.Tensor) -> torch.Tensor:
        (new_h, new_w), pad = self._pad_geometry(*pixels.shape[1:])
        if pixels.shape[1:] != (new_h, new_w):
            mode = _TORCH_INTERPOLATION[self.interpolation]
            pixels = F.interpolate(pixels[None], size=(new_h, new_w), mode=mode,
                                   antialias=mode != "nearest-exact")[0].clamp_(0.0, 1.0)
        return F.pad(pixels, pad, value=0.0)

    # ----- saving ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (whitening tensors go beside the weights: :meth:`tensors`)."""
        return {"input_size": list(self.input_size), "mean": list(self.mean), "std": list(self.std),
                "resize_mode": self.resize_mode, "crop_pct": self.crop_pct,
                "content_size": list(self.content_size) if self.content_size else None,
                "interpolation": self.interpolation, "background": self.background,
                "whitening": self.whitening.method if self.whitening is not None else None}

    def tensors(self) -> dict[str, torch.Tensor]:
        """Fitted tensors to save with the weights (prefixed ``preprocess.``)."""
        if self.whitening is None:
            return {}
        return {f"preprocess.whitening.{k}": v for k, v in self.whitening.to_tensors().items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any], tensors: dict[str, torch.Tensor] | None = None,
                  *, invert: bool = False) -> Preprocess:
        """The description :meth:`to_dict` wrote, with the fitted tensors :meth:`tensors` gave."""
        whitening = None
        if values.get("whitening"):
            prefix = "preprocess.whitening."
            found = {k[len(prefix):]: v for k, v in (tensors or {}).items() if k.startswith(prefix)}
            if not found:
                raise DcnnError("the model file's preprocessing uses whitening but holds no whitening tensors.")
            whitening = Whitening.from_tensors(found)
        content = values.get("content_size")
        return cls(tuple(values["input_size"]), tuple(values["mean"]), tuple(values["std"]),
                   values["resize_mode"], values["crop_pct"], tuple(content) if content else None,
                   values["interpolation"], invert, values["background"], whitening)


def per_channel(values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    """Normalization statistics for `channels` channels: as given when the counts match, else their
    mean repeated (an RGB model's statistics for a grayscale variant, and vice versa)."""
    if len(values) == channels:
        return tuple(values)
    return (sum(values) / len(values),) * channels


def _is_channels_last(x: torch.Tensor) -> bool:
    """Whether batch `x` (N, C, H, W) is stored channels-last (NHWC) and not also plain contiguous."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def standardize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float], in_place: bool = False) -> torch.Tensor:
    """(x - mean) / std per channel of a float batch (N, C, H, W); with `in_place`, written over `x`.

    A channels-last batch keeps its layout and is computed as rows of pixels (N·H, W·C) against the
    statistics repeated W times: the same arithmetic, run along rows rather than along each pixel's
    C values."""
    if _is_channels_last(x):
        n, channels, height, width = x.shape
        rows = x.permute(0, 2, 3, 1).view(n * height, width * channels)
        mean_t = torch.tensor(mean, device=x.device, dtype=x.dtype).repeat(width)
        std_t = torch.tensor(std, device=x.device, dtype=x.dtype).repeat(width)
        if not in_place:
            rows = rows.clone()
        rows.sub_(mean_t).div_(std_t)
        return rows.view(n, height, width, channels).permute(0, 3, 1, 2)
    mean_t = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return x.sub_(mean_t).div_(std_t) if in_place else (x - mean_t) / std_t


# Values a run must convert for the compiled conversion (:func:`to_float` with `fused`) to repay its
# compilation, once a process and number of threads (torch.compile's code is specific to it): about
# 2 s with inductor's cache on disk warm (mostly importing the compiler), 4-6 s cold. It then saves
# about 0.5 ns a value against the four passes of torch operators (64 photos of 224×224, 9.6 M
# values: 2.4-2.7 ms against 7.1-7.4 on one thread of the machine of BENCHMARKS.md). 2³³ values:
# 57,000 photos at 224×224, 56 epochs of CIFAR-10.
FUSED_REPAID = 1 << 33


def _convert(pixels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, out: torch.Tensor) -> None:
    """out = (pixels / 255 - mean) / std, the arithmetic of :func:`to_float` in the order it gives
    (inductor keeps each division a division, so the results are the operators' bit for bit)."""
    torch.div(pixels.float() / 255.0 - mean, std, out=out)


class _FusedConversion:
    """:func:`_convert` compiled for any shape, on first use; after a failure to compile (a machine
    without a C++ compiler), a warning once, and the operators from then on."""

    def __init__(self) -> None:
        self.compiled: Callable[..., None] | None = None
        self.failed = False

    def __call__(self, pixels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, out: torch.Tensor) -> bool:
        """Whether `out` was written."""
        if self.failed:
            return False
        try:
            if self.compiled is None:
                self.compiled = torch.compile(_convert, dynamic=True)
            self.compiled(pixels, mean, std, out)
            return True
        except Exception as error:  # the operators' arithmetic is the same, only slower
            self.failed = True
            lines = str(error).strip().splitlines()
            warnings.warn(f"the compiled conversion of image batches to floats failed ({type(error).__name__}: "
                          f"{lines[0] if lines else 'no message'}); converting with torch's operators instead",
                          RuntimeWarning, stacklevel=3)
            return False


_fused_conversion = _FusedConversion()


def to_float(images: torch.Tensor, mean: Sequence[float] | None = None,
             std: Sequence[float] | None = None, fused: bool = False) -> torch.Tensor:
    """uint8 pixels (N, C, H, W) as float32 x / 255 or, given `mean` and `std` (one value per
    channel), the model input (x / 255 - mean) / std: a new batch on the same device, channels-last
    when `images` is (as augmented batches are), else contiguous.

    Equal bit for bit to ``standardize(images.float() / 255, mean, std)``, computed in place on the
    one new tensor. On a CPU a new float batch costs more in page faults than in arithmetic
    (64×3×224×224 floats are 9,400 pages of 4 KiB), so no intermediate batch is made, and the batch
    is allocated by numpy, which asks the kernel for transparent huge pages on arrays of 4 MB and
    more (madvise; torch's allocator does so only with THP_MEM_ALLOC_ENABLE=1 set): about 20 faults
    of 2 MB instead, 4x faster on the machine of BENCHMARKS.md. The layout is kept because changing
    it is a transposing copy, 2.8x the time of a plain one (64 photos of 224×224: 5.5 against
    1.9 ms on the machine of BENCHMARKS.md); a model that wants the other layout converts once.

    `fused`: for callers that will convert enough batches to repay a compilation (a training run
    of :data:`FUSED_REPAID` values or more): on a CPU, one compiled pass over the batch (the same
    results) instead of four.
    """
    n, channels, height, width = images.shape
    channels_last = _is_channels_last(images)
    shape = (n, height, width, channels) if channels_last else (n, channels, height, width)
    if images.device.type == "cpu":
        out = torch.from_numpy(np.empty(shape, dtype=np.float32))
    else:
        out = torch.empty(shape, dtype=torch.float32, device=images.device)
    if fused and images.device.type == "cpu" and images.numel() and _convert_fused(images, mean, std, out):
        return out.permute(0, 3, 1, 2) if channels_last else out
    if channels_last:
        out = out.permute(0, 3, 1, 2)
    out.copy_(images).div_(255.0)
    return out if mean is None or std is None else standardize(out, mean, std, in_place=True)


def _convert_fused(images: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None,
                   out: torch.Tensor) -> bool:
    """:func:`to_float`'s conversion into `out` (laid out as `images`) by the compiled loop, over
    rows along which the statistics either cycle through the channels (channels-last: rows of
    W·C values against the statistics repeated W times) or stay (contiguous: rows of H·W values of
    one channel), so that the loop reads the pixels and the statistics as vectors. Without
    statistics, mean 0 and std 1, exact (v - 0 = v and v / 1 = v). Whether `out` was written:
    not for a batch in neither layout, or where compiling failed."""
    n, channels, height, width = images.shape
    mean_t = torch.tensor(mean if mean is not None and std is not None else (0.0,) * channels)
    std_t = torch.tensor(std if mean is not None and std is not None else (1.0,) * channels)
    if _is_channels_last(images):
        rows = images.permute(0, 2, 3, 1).view(n * height, width * channels)
        return _fused_conversion(rows, mean_t.repeat(width), std_t.repeat(width), out.view(n * height, -1))
    if images.is_contiguous():
        rows = images.view(n, channels, height * width)
        return _fused_conversion(rows, mean_t.view(-1, 1), std_t.view(-1, 1), out.view(n, channels, -1))
    return False
