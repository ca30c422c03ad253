"""Image files to pixels: decoding any image Pillow reads, in any mode, the right way up.

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

What the model then sees (size, normalization) is :class:`dcnn.data.preprocess.Preprocess`.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from dcnn.errors import DcnnError

if TYPE_CHECKING:
    from dcnn.data.preprocess import Preprocess

# Bit depth scales of the modes decoded with numpy; every other mode is converted by Pillow first.
_MODE_SCALE = {"L": 255.0, "LA": 255.0, "RGB": 255.0, "RGBA": 255.0, "I": 65535.0, "F": 255.0}
_MODE_SCALE.update(dict.fromkeys(("I;16", "I;16L", "I;16B", "I;16N"), 65535.0))
# Pillow modes converted before decoding: premultiplied alpha, bilevel, and other colour spaces.
_PILLOW_CONVERSION = {"La": "LA", "RGBa": "RGBA", "PA": "RGBA", "1": "L"}
# ITU-R BT.601 luma weights of R, G, B.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


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
