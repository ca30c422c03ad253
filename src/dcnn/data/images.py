"""Image files to model input, preprocessed as the model was trained.

Any image Pillow decodes (PNG, JPEG, ...), in any mode, becomes a float tensor (C, H, W):

1. Decode to [0, 1] floats: 8-bit modes divide by 255, 16-bit grayscale (``I;16``, and ``I`` as
   Pillow opens 16-bit PNGs) by 65535, float (``F``) images are read as 0-255; palette, CMYK,
   YCbCr, LAB and HSV images go through Pillow's RGB conversion. The EXIF orientation of camera
   photos is applied.
2. Composite transparency (an alpha channel or a transparent palette colour) onto a plain
   background, white by default: transparent pixels look as an image viewer or web page shows
   them, whatever colour the file happens to store under them.
3. Match the model's channel count: 1 channel takes the luminance Y = 0.299 R + 0.587 G + 0.114 B
   (ITU-R BT.601, the weights of Pillow's own "L" conversion, computed here in floating point);
   3 channels repeat a grayscale image.
4. Optionally invert (1 - x): MNIST digits are white on black, a photo of a handwritten digit is
   dark on white.
5. Resize to the model's input size:
   - "crop" (ImageNet models, the evaluation protocol of timm and torchvision): scale the image so
     that it covers ``floor(size / crop_pct)`` (for a square input: the shorter side becomes
     that), then take the centre ``size`` crop;
   - "pad" (digit models): scale the image, keeping its aspect ratio, to fit inside
     `content_size` (MNIST's 28×28), then centre it on a black canvas of the input size (LeNet-5
     reads 32×32 inputs holding a 28×28 MNIST image, LeCun et al. 1998, Sec. II.B and III.A).
6. Normalize with the model's mean and std.
"""

from __future__ import annotations

import math
import os
import stat
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from dcnn.data.prepare import MAX_PAD
from dcnn.errors import DcnnError
from dcnn.models._registry import ModelCfg, get_model_cfg

# MNIST digits are 28×28 (LeCun et al. 1998, Sec. III.A).
MNIST_IMAGE_SIZE = 28
# A digit model whose input is at most MAX_PAD pixels larger than 28 reads a padded 28×28 digit
# (LeNet-5: 32 = 28 + 2×2); a larger input was trained on digits resized to fill it.
# Bit depth scales of the modes decoded with numpy; every other mode is converted by Pillow first.
_MODE_SCALE = {"L": 255.0, "LA": 255.0, "RGB": 255.0, "RGBA": 255.0, "I": 65535.0, "F": 255.0}
_MODE_SCALE.update(dict.fromkeys(("I;16", "I;16L", "I;16B", "I;16N"), 65535.0))
# Pillow modes converted before decoding: premultiplied alpha, bilevel, and other colour spaces.
_PILLOW_CONVERSION = {"La": "LA", "RGBa": "RGBA", "PA": "RGBA", "1": "L"}
# ITU-R BT.601 luma weights of R, G, B.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
_TORCH_INTERPOLATION = {"nearest": "nearest-exact", "bilinear": "bilinear", "bicubic": "bicubic"}


@dataclass(frozen=True)
class Preprocess:
    """How a model's input was prepared in training; calling it on a PIL image gives (C, H, W).

    Attributes:
        input_size: (channels, height, width) the model reads; channels must be 1 or 3.
        mean, std: per-channel normalization, one value per channel.
        resize_mode: "crop" (resize to cover, centre crop) or "pad" (fit inside `content_size`,
            centre on a black canvas).
        crop_pct: "crop" mode: fraction of the resized image kept by the centre crop.
        content_size: "pad" mode: the (height, width) box the image is fitted into (None: the
            whole input).
        interpolation: "bilinear", "bicubic" or "nearest" (antialiased when shrinking).
        invert: map x to 1 - x before resizing (dark-on-white photos for white-on-black models).
        background: grey level in [0, 1] transparent pixels are composited onto (1.0: white).
    """

    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize_mode: Literal["crop", "pad"] = "crop"
    crop_pct: float = 0.875
    content_size: tuple[int, int] | None = None
    interpolation: str = "bilinear"
    invert: bool = False
    background: float = 1.0
    _mean: torch.Tensor = field(init=False, repr=False, compare=False)
    _std: torch.Tensor = field(init=False, repr=False, compare=False)

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
        if self.resize_mode not in ("crop", "pad"):
            problems.append(f"resize_mode must be 'crop' or 'pad', not {self.resize_mode!r}")
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
        if problems:
            raise DcnnError("invalid preprocessing: " + "; ".join(problems) + ".")
        object.__setattr__(self, "_mean", torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1))
        object.__setattr__(self, "_std", torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1))

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
        mean, std = _per_channel(cfg.mean, channels), _per_channel(cfg.std, channels)
        if channels == 1:
            fits_padded = all(0 <= size - MNIST_IMAGE_SIZE <= MAX_PAD for size in (height, width))
            return cls(
                (1, height, width),
                mean,
                std,
                resize_mode="pad",
                content_size=(MNIST_IMAGE_SIZE, MNIST_IMAGE_SIZE) if fits_padded else None,
                interpolation=cfg.interpolation,
                invert=invert,
            )
        return cls(
            (channels, height, width),
            mean,
            std,
            resize_mode="crop",
            crop_pct=cfg.crop_pct,
            interpolation=cfg.interpolation,
            invert=invert,
        )

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """Preprocess a PIL image: a float32 tensor (C, H, W) ready for the model."""
        pixels = decode_pixels(image, background=self.background)
        pixels = to_channels(pixels, self.input_size[0])
        if self.invert:
            pixels = 1.0 - pixels
        pixels = self._crop(pixels) if self.resize_mode == "crop" else self._pad(pixels)
        return (pixels - self._mean) / self._std

    def _crop(self, pixels: torch.Tensor) -> torch.Tensor:
        _, out_h, out_w = self.input_size
        # timm's eval transform: resize to floor(size / crop_pct), then centre crop `size`.
        cover_h, cover_w = math.floor(out_h / self.crop_pct), math.floor(out_w / self.crop_pct)
        height, width = pixels.shape[1:]
        scale = max(cover_h / height, cover_w / width)
        # The side that sets the scale lands exactly on its target; the other is truncated, as
        # torchvision's Resize does.
        new_h, new_w = max(cover_h, int(height * scale)), max(cover_w, int(width * scale))
        pixels = self._resize(pixels, new_h, new_w)
        top, left = round((new_h - out_h) / 2), round((new_w - out_w) / 2)
        return pixels[:, top : top + out_h, left : left + out_w]

    def _pad(self, pixels: torch.Tensor) -> torch.Tensor:
        _, out_h, out_w = self.input_size
        box_h, box_w = self.content_size or (out_h, out_w)
        height, width = pixels.shape[1:]
        scale = min(box_h / height, box_w / width)
        new_h = min(box_h, max(1, round(height * scale)))
        new_w = min(box_w, max(1, round(width * scale)))
        pixels = self._resize(pixels, new_h, new_w)
        top, left = (out_h - new_h) // 2, (out_w - new_w) // 2
        return F.pad(pixels, (left, out_w - new_w - left, top, out_h - new_h - top), value=0.0)

    def _resize(self, pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
        if pixels.shape[1:] == (height, width):
            return pixels
        mode = _TORCH_INTERPOLATION[self.interpolation]
        resized = F.interpolate(pixels[None], size=(height, width), mode=mode, antialias=mode != "nearest-exact")
        # Bicubic overshoots; keep the [0, 1] range an 8-bit resize would keep.
        return resized[0].clamp_(0.0, 1.0)


def _per_channel(values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    """Normalization statistics for `channels` channels: as given when the counts match, else their
    mean repeated (an RGB model's statistics for a grayscale variant, and vice versa)."""
    if len(values) == channels:
        return tuple(values)
    return (sum(values) / len(values),) * channels


def decode_pixels(image: Image.Image, background: float = 1.0) -> torch.Tensor:
    """A PIL image as float32 (1 or 3, H, W) in [0, 1], transparency composited onto `background`."""
    has_transparency = "transparency" in image.info
    mode = image.mode
    if mode in _PILLOW_CONVERSION:
        image = image.convert(_PILLOW_CONVERSION[mode])
    elif mode in ("P", "L", "RGB") and has_transparency:  # a transparent palette entry or colour key
        image = image.convert("RGBA")
    elif mode not in _MODE_SCALE:  # CMYK, YCbCr, LAB, HSV, RGBX, palette without transparency
        try:
            image = image.convert("RGB")
        except (ValueError, OSError) as err:
            raise DcnnError(f"cannot convert an image of mode {mode!r} to RGB ({err}).") from None
    array = np.asarray(image, dtype=np.float32) / _MODE_SCALE[image.mode]
    pixels = torch.from_numpy(np.clip(array, 0.0, 1.0).reshape(*array.shape[:2], -1)).permute(2, 0, 1)
    if image.mode in ("LA", "RGBA"):
        color, alpha = pixels[:-1], pixels[-1:]
        pixels = color * alpha + background * (1.0 - alpha)
    return pixels.contiguous()


def to_channels(pixels: torch.Tensor, channels: int) -> torch.Tensor:
    """Grayscale or RGB pixels (1 or 3, H, W) as `channels` channels: BT.601 luminance for 1,
    a repeated grayscale for 3."""
    if pixels.shape[0] == channels:
        return pixels
    if channels == 1:
        weights = torch.tensor(LUMA_WEIGHTS, dtype=pixels.dtype).view(3, 1, 1)
        return (pixels * weights).sum(dim=0, keepdim=True)
    return pixels.expand(channels, -1, -1).contiguous()


def open_image(
    path: str | os.PathLike[str],
    *,
    max_pixels: int | None = None,
    draft_size: tuple[int, int] | None = None,
    load: bool = True,
) -> Image.Image:
    """Open and fully decode an image file, upright (EXIF orientation applied).

    `max_pixels` refuses images with more pixels than that (checked from the header, before any
    decoding: a decompression bomb never reaches memory); None keeps Pillow's own limit.
    `draft_size` (width, height) lets a JPEG decode at a reduced scale (1/2, 1/4 or 1/8, from the
    DCT, several times faster) while the upright image stays at least that size in both sides.
    `load=False` only reads the header, to check a file cheaply: the image returned has its size,
    mode and info but no pixels (the file is closed) and no orientation applied.

    A missing, empty, unreadable, truncated, oversized or non-image file raises a DcnnError naming
    the file and the reason.
    """
    path = path if isinstance(path, Path) else Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise DcnnError(f"image {path} not found; check the path.") from None
    except OSError as err:
        raise DcnnError(f"cannot read {path}: {err.strerror or err}; check the path and its permissions.") from None
    if stat.S_ISDIR(info.st_mode):
        raise DcnnError(f"{path} is a folder, not an image; give the path of an image file.")
    if info.st_size == 0:
        raise DcnnError(f"{path} is empty (0 bytes), not an image file; re-export or re-download it.")
    try:
        with Image.open(path) as image:
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise DcnnError(
                    f"{path} has {width}×{height} = {width * height:,} pixels, over the limit of "
                    f"{max_pixels:,} (a possible decompression bomb); raise max_pixels if you trust it."
                )
            if not load:
                return image
            # A reduced scale is at least 2: nothing to gain unless both sides are twice the smaller target.
            if draft_size is not None and min(width, height) >= 2 * min(draft_size):
                # Orientations 5-8 transpose the stored image: ask for the transposed size.
                transposed = draft_size[0] != draft_size[1] and image.getexif().get(0x0112) in (5, 6, 7, 8)
                image.draft(None, draft_size[::-1] if transposed else draft_size)
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
            return image
    except UnidentifiedImageError:
        raise DcnnError(f"{path} is not an image file Pillow can read; give a PNG or JPEG image.") from None
    except Image.DecompressionBombError as err:
        raise DcnnError(f"{path} is too large to decode safely (a possible decompression bomb): {err}") from None
    except PermissionError:
        raise DcnnError(f"cannot read {path}: permission denied; check the file's permissions.") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as err:
        raise DcnnError(f"{path} is truncated or corrupt ({err}); re-export or re-download the image.") from None


def load_image(path: str | os.PathLike[str], preprocess: Preprocess) -> torch.Tensor:
    """One image file as model input, a float32 tensor (C, H, W)."""
    image = open_image(path)
    try:
        return preprocess(image)
    except DcnnError as err:
        raise DcnnError(f"{path}: {err}") from None


def load_images(
    paths: Iterable[str | os.PathLike[str]], preprocess: Preprocess
) -> tuple[torch.Tensor, list[Path], list[tuple[Path, str]]]:
    """Load many images, going on past bad ones.

    Returns the batch (N, C, H, W) of the images that loaded, their paths in the same order, and a
    (path, message) pair for each file that failed.
    """
    tensors: list[torch.Tensor] = []
    good_paths: list[Path] = []
    errors: list[tuple[Path, str]] = []
    for path in map(Path, paths):
        try:
            tensors.append(load_image(path, preprocess))
            good_paths.append(path)
        except DcnnError as err:
            errors.append((path, str(err)))
    batch = torch.stack(tensors) if tensors else torch.empty((0, *preprocess.input_size))
    return batch, good_paths, errors
