"""Image sets on disk: class-per-folder trees and CSV lists, split, decoded to uint8 tensors.

- :func:`scan_image_folder` reads a class-per-folder tree (``root/<class>/**/*.jpg``), or one with
  ``train/`` and ``val/`` (or ``test/``) splits each holding the same class folders.
- :func:`read_csv_list` reads a ``path,label`` CSV; :func:`stratified_split` holds out a
  validation set with every class in proportion.
- :func:`decode_images` decodes a whole set into memory as uint8 (N, C, H, W) (small images:
  CIFAR-sized sets, a few thousand photos); :func:`load_or_decode` does the same through a disk
  cache that notices any added, removed, modified or relabelled file.
- :class:`LazyImageDataset` decodes item by item in DataLoader workers (large sets), with
  :func:`collate_skipping` dropping the files that fail and reporting them in the batch.

Every image goes through :func:`dcnn.data.images.open_image` (EXIF orientation applied) and,
for modes other than 8-bit L and RGB, :func:`~dcnn.data.images.decode_pixels` (16-bit, palette,
CMYK, transparency composited onto white), then is resized with Pillow's antialiased bilinear
filter: ``fit="crop"`` scales the shorter side to the target and takes the centre (torchvision's
``Resize`` + ``CenterCrop``), ``fit="stretch"`` scales to exactly (H, W). One channel is the BT.601
luminance, three channels repeat a grayscale image (:func:`~dcnn.data.images.to_channels`).

A file that cannot be decoded (empty, truncated, not an image, over ``max_pixels``, unreadable)
is never dropped silently: it is listed in ``skipped`` with the reason, or with ``strict=True``
stops the decoding with a DcnnError naming it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.utils.data import Dataset

from dcnn.data.images import decode_pixels, open_image, to_channels
from dcnn.data.mnist import cache_root
from dcnn.errors import DcnnError
from dcnn.fileio import atomic_output

Fit = Literal["crop", "stretch"]

IMAGE_EXTENSIONS = frozenset(
    (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
)
SPLIT_NAMES = ("train", "val", "test")
# Pillow's own limit (Image.MAX_IMAGE_PIXELS, about 89.5 million pixels: 1 GiB of 8-bit RGB / 4).
DEFAULT_MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3
# Bump when the decoded pixels of the same files would change (resize filter, geometry, ...).
CACHE_FORMAT = 2  # 2: the array is (N, H, W, C)
# A JPEG much larger than the target decodes at 1/2, 1/4 or 1/8 scale as long as it stays at least
# this many times the target in both sides; the antialiased resize does the rest.
_DRAFT_MARGIN = 2
# Pillow's resize first box-reduces by an integer factor while the image stays at least this many
# times the target (3: indistinguishable from a full resample, per Pillow's documentation).
_REDUCING_GAP = 3.0


@dataclass(frozen=True)
class Skipped:
    """A file (or folder) left out, and why."""

    path: Path
    reason: str


@dataclass
class ImageFiles:
    """Image paths with integer labels indexing `class_names`."""

    paths: list[Path]
    labels: list[int]
    class_names: list[str]

    def __post_init__(self) -> None:
        self.paths = [p if isinstance(p, Path) else Path(p) for p in self.paths]  # Path(a Path) parses it again
        self.labels = [int(label) for label in self.labels]
        if len(self.paths) != len(self.labels):
            raise DcnnError(f"{len(self.paths)} image paths but {len(self.labels)} labels; give one label per image.")
        bad = next((label for label in self.labels if not 0 <= label < len(self.class_names)), None)
        if bad is not None:
            raise DcnnError(f"label {bad} is out of range for {len(self.class_names)} class names.")

    def __len__(self) -> int:
        return len(self.paths)

    def class_counts(self) -> dict[str, int]:
        """The number of images of each class, in class order (zero for a class without images)."""
        counts = np.bincount(np.asarray(self.labels, dtype=np.int64), minlength=len(self.class_names))
        return {name: int(count) for name, count in zip(self.class_names, counts, strict=True)}

    def subset(self, indices: Sequence[int]) -> ImageFiles:
        """The files at `indices`, in that order, with the same class names."""
        return ImageFiles([self.paths[i] for i in indices], [self.labels[i] for i in indices], list(self.class_names))


@dataclass
class DecodedImages:
    """Decoded images: uint8 (N, C, H, W), int64 labels (N,), the files they came from, and the
    files that were skipped (with reasons)."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    paths: list[Path]
    skipped: list[Skipped]


# --- Scanning ---------------------------------------------------------------------------------


def _visible(entry: os.DirEntry[str] | Path) -> bool:
    return not entry.name.startswith(".")


def _subfolders(folder: Path) -> list[Path]:
    return sorted(Path(e.path) for e in os.scandir(folder) if _visible(e) and e.is_dir())


def _scan_class_folder(folder: Path, skipped: list[Skipped]) -> list[Path]:
    """Image files anywhere under `folder` (hidden files and folders ignored), sorted; other files
    go to `skipped`."""
    images: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith("."):
                continue
            path = Path(dirpath, name)
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                images.append(path)
            else:
                skipped.append(Skipped(path, "not an image file name"))
    return sorted(images)


def _scan_classes(
    root: Path, split_roots: dict[str, Path], skipped: list[Skipped]
) -> dict[str, ImageFiles]:
    """ImageFiles per split; each split root holds the same class folders."""
    class_folders = {split: _subfolders(folder) for split, folder in split_roots.items()}
    names = {split: [f.name for f in folders] for split, folders in class_folders.items()}
    reference = next(iter(names))
    for split, split_names in names.items():
        if split_names != names[reference]:
            only_here = sorted(set(split_names) - set(names[reference]))
            only_there = sorted(set(names[reference]) - set(split_names))
            raise DcnnError(
                f"the splits of {root} have different class folders: only in {split}/: {only_here or 'none'}, "
                f"only in {reference}/: {only_there or 'none'}. Give every split the same class folders."
            )
    if not names[reference]:
        where = ", ".join(f"{folder}" for folder in split_roots.values())
        raise DcnnError(f"no class folders in {where}; put the images of each class in a folder named after it.")
    for folder in split_roots.values():
        for entry in os.scandir(folder):
            if _visible(entry) and not entry.is_dir():
                skipped.append(Skipped(Path(entry.path), "file outside the class folders"))
    found = {
        split: [_scan_class_folder(f, skipped) for f in folders] for split, folders in class_folders.items()
    }
    # A class folder without images is reported; the class is kept while any split has images of
    # it (the splits keep the same label indices), and dropped when none has.
    keep = [any(found[split][c] for split in found) for c in range(len(names[reference]))]
    for split, per_class in found.items():
        for c, images in enumerate(per_class):
            if not images:
                note = "" if keep[c] else " (class dropped: no split has images of it)"
                skipped.append(Skipped(class_folders[split][c], "empty class folder" + note))
    class_names = [name for name, kept in zip(names[reference], keep, strict=True) if kept]
    splits: dict[str, ImageFiles] = {}
    for split, per_class in found.items():
        kept_classes = [images for images, kept in zip(per_class, keep, strict=True) if kept]
        paths = [path for images in kept_classes for path in images]
        labels = [label for label, images in enumerate(kept_classes) for _ in images]
        if not paths:
            raise DcnnError(f"no images in {split_roots[split]}; the recognized extensions are "
                            f"{', '.join(sorted(IMAGE_EXTENSIONS))}.")
        splits[split] = ImageFiles(paths, labels, list(class_names))
    return splits


def scan_image_folder(root: str | Path) -> tuple[dict[str, ImageFiles], list[Skipped]]:
    """The images of a class-per-folder tree, by split, and the entries left out.

    With a ``train/`` folder plus ``val/`` and/or ``test/`` the result has those keys, and the
    splits must hold the same class folders; otherwise the class folders of `root` form the key
    ``"all"`` (a lone ``train/``, ``val/`` or ``test/`` is an error, not a class). Class names are
    the sorted folder names; images are found recursively inside a class folder by extension (jpg,
    jpeg, png, bmp, gif, webp, tif, tiff, ppm, pgm, any case). Hidden
    files and folders are ignored; every other left-out entry is in the returned list with its
    reason: a file without an image extension, a file outside the class folders, a folder next to
    the splits, an empty class folder. A class folder empty in one split keeps its class (the
    splits share label indices); a class with no images in any split is dropped.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DcnnError(f"image folder {root} not found; check the path.")
    if not root.is_dir():
        raise DcnnError(f"{root} is not a folder; give a folder holding one folder of images per class.")
    skipped: list[Skipped] = []
    top = {folder.name: folder for folder in _subfolders(root)}
    if "train" in top and ("val" in top or "test" in top):
        split_roots = {name: top[name] for name in SPLIT_NAMES if name in top}
        for name, folder in top.items():
            if name not in split_roots:
                skipped.append(Skipped(folder, "folder next to the splits (expected train, val, test)"))
        for entry in os.scandir(root):
            if _visible(entry) and not entry.is_dir():
                skipped.append(Skipped(Path(entry.path), "file outside the split folders"))
    else:
        lone = next((name for name in SPLIT_NAMES if name in top), None)
        if lone is not None:
            raise DcnnError(
                f"{root} has a {lone}/ folder but not train/ with val/ or test/ beside it; add the other split, "
                f"or point at {top[lone]} to use its class folders as one set."
            )
        split_roots = {"all": root}
    splits = _scan_classes(root, split_roots, skipped)
    return splits, sorted(skipped, key=lambda s: s.path)


def _class_order(names: set[str]) -> list[str]:
    """Class names sorted; numerically when all are integers (so "10" comes after "9")."""
    if all(name.lstrip("-").isdigit() for name in names):
        return sorted(names, key=int)
    return sorted(names)


def read_csv_list(path: str | Path) -> ImageFiles:
    """The images of a CSV of ``path,label`` rows (an optional first row ``path,label``).

    Paths are relative to the CSV's folder (or absolute); labels are class names, sorted (by value
    when all are integers). Blank lines are ignored; a malformed row raises a DcnnError naming its
    line. Whether the files exist and decode is checked when they are decoded.
    """
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DcnnError(f"image list {path} not found; check the path.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DcnnError(f"cannot read image list {path}: {err}.") from None
    rows: list[tuple[Path, str]] = []
    reader = csv.reader(text.splitlines())
    first = True
    try:
        for row in reader:
            cells = [cell.strip() for cell in row]
            if not any(cells):
                continue
            if first and [c.lower() for c in cells] == ["path", "label"]:  # the header row
                first = False
                continue
            first = False
            if len(cells) != 2 or not cells[0] or not cells[1]:
                raise DcnnError(
                    f"{path}, line {reader.line_num}: expected 'path,label', got {','.join(row)!r}; "
                    "give one image path and its class name per line."
                )
            rows.append((path.parent / cells[0], cells[1]))
    except csv.Error as err:
        raise DcnnError(f"{path}, line {reader.line_num}: {err}; give one 'path,label' per line.") from None
    if not rows:
        raise DcnnError(f"image list {path} has no 'path,label' rows.")
    class_names = _class_order({label for _, label in rows})
    index = {name: i for i, name in enumerate(class_names)}
    return ImageFiles([p for p, _ in rows], [index[label] for _, label in rows], class_names)


def stratified_indices(labels: Sequence[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of (train, val) with `val_fraction` of every class in val (rounded), chosen at
    random with `seed`; both in ascending order.

    A class with at least two images keeps at least one in train and, when `val_fraction` > 0, at
    least one in val; a class with one image keeps it in train.
    """
    if not 0 <= val_fraction < 1:
        raise DcnnError(f"val_fraction must be in [0, 1), not {val_fraction}.")
    rng = random.Random(seed)
    by_class = _indices_by_class(labels)
    val: list[int] = []
    for label in sorted(by_class):
        members = by_class[label]
        count = len(members)
        # At least one in val (when asked for) and one in train, for a class with two or more.
        n_val = min(max(round(count * val_fraction), int(val_fraction > 0)), count - 1) if count >= 2 else 0
        val.extend(rng.sample(members, n_val))
    in_val = set(val)
    return [i for i in range(len(labels)) if i not in in_val], sorted(in_val)


def stratified_sample(labels: Sequence[int], count: int, seed: int) -> list[int]:
    """Indices of `count` examples (all of them when `count` is at least their number) with every
    class in proportion, chosen at random with `seed`; in ascending order.

    Class c gets count · n_c / N examples rounded by largest remainders (Hamilton's apportionment;
    equal remainders ordered at random), and at least one when `count` is at least the number of
    classes, taken back from the classes furthest above their share.
    """
    if count >= len(labels):
        return list(range(len(labels)))
    rng = random.Random(seed)
    by_class = _indices_by_class(labels)
    classes = sorted(by_class)
    sizes = [len(by_class[c]) for c in classes]
    shares = [count * size / len(labels) for size in sizes]
    takes = [math.floor(share) for share in shares]
    if count >= len(classes):
        takes = [max(1, take) for take in takes]
    order = [rng.random() for _ in classes]  # breaks ties between equal remainders
    while sum(takes) > count:
        k = max((k for k, take in enumerate(takes) if take > 1), key=lambda k: (takes[k] - shares[k], order[k]))
        takes[k] -= 1
    while sum(takes) < count:
        k = max((k for k, take in enumerate(takes) if take < sizes[k]), key=lambda k: (shares[k] - takes[k], order[k]))
        takes[k] += 1
    return sorted(i for c, take in zip(classes, takes, strict=True) for i in rng.sample(by_class[c], take))


def _indices_by_class(labels: Sequence[int]) -> dict[int, list[int]]:
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(i)
    return by_class


def stratified_split(files: ImageFiles, val_fraction: float, seed: int) -> tuple[ImageFiles, ImageFiles]:
    """Split into (train, val) by :func:`stratified_indices`; both parts keep the original order and
    all class names."""
    train_idx, val_idx = stratified_indices(files.labels, val_fraction, seed)
    return files.subset(train_idx), files.subset(val_idx)


# --- Decoding ---------------------------------------------------------------------------------


def _check_options(size: tuple[int, int], channels: int, fit: str, max_pixels: int) -> tuple[int, int]:
    problems = []
    if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
        problems.append(f"size must be (height, width) in whole pixels, not {size}")
    if channels not in (1, 3):
        problems.append(f"channels must be 1 (grayscale) or 3 (RGB), not {channels}")
    if fit not in ("crop", "stretch"):
        problems.append(f"fit must be 'crop' or 'stretch', not {fit!r}")
    if max_pixels < 1:
        problems.append(f"max_pixels must be positive, not {max_pixels}")
    if problems:
        raise DcnnError("invalid decoding options: " + "; ".join(problems) + ".")
    return int(size[0]), int(size[1])


def _to_8bit(image: Image.Image, channels: int) -> Image.Image:
    """The image as 8-bit L or RGB. Other modes (16-bit, palette, CMYK, transparency, ...) go
    through decode_pixels and to_channels, then are rounded to 8 bits."""
    if image.mode in ("L", "RGB") and "transparency" not in image.info:
        return image
    pixels = to_channels(decode_pixels(image), channels)
    array = (pixels * 255).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(array[:, :, 0] if channels == 1 else array, mode="L" if channels == 1 else "RGB")


def _resized_shape(width: int, height: int, size: tuple[int, int], fit: Fit) -> tuple[int, int]:
    """The (width, height) an image is resized to before the centre crop."""
    out_h, out_w = size
    if fit == "stretch":
        return out_w, out_h
    # The side that sets the scale lands exactly on its target; the other is truncated, as in
    # torchvision's Resize.
    if out_h * width >= out_w * height:
        return max(out_w, int(out_h * width / height)), out_h
    return out_w, max(out_h, int(out_w * height / width))


_RESAMPLING = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
               "nearest": Image.Resampling.NEAREST}


def fit_image(
    image: Image.Image, size: tuple[int, int], channels: int, fit: Fit = "crop", crop_pct: float = 1.0,
    interpolation: str = "bilinear",
) -> np.ndarray:
    """A decoded image as uint8 (channels, H, W) of `size`: "crop" resizes it to cover
    ``floor(size / crop_pct)`` and takes the centre `size` (crop_pct 1: the shorter side becomes the
    target, torchvision's Resize + CenterCrop; 0.875: timm's and torchvision's ImageNet evaluation),
    "stretch" resizes it to `size` whatever its aspect ratio."""
    pixels = _fit_pixels_last(image, size, channels, fit, crop_pct, interpolation)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def _fit_pixels_last(
    image: Image.Image, size: tuple[int, int], channels: int, fit: Fit = "crop", crop_pct: float = 1.0,
    interpolation: str = "bilinear",
) -> np.ndarray:
    """:func:`fit_image` as (H, W, channels), the layout Pillow decodes to (no transposing copy)."""
    out_h, out_w = size
    cover = (math.floor(out_h / crop_pct), math.floor(out_w / crop_pct)) if fit == "crop" else size
    image = _to_8bit(image, channels)
    new_w, new_h = _resized_shape(*image.size, cover, fit)
    if image.size != (new_w, new_h):
        image = image.resize((new_w, new_h), _RESAMPLING[interpolation], reducing_gap=_REDUCING_GAP)
    top, left = round((new_h - out_h) / 2), round((new_w - out_w) / 2)
    array = np.asarray(image)[top : top + out_h, left : left + out_w]
    array = array[:, :, None] if array.ndim == 2 else array
    if array.shape[2] != channels:
        luminance = to_channels(torch.from_numpy(array.transpose(2, 0, 1).astype(np.float32)), channels)
        return luminance.round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return array


def _decode(path: Path, size: tuple[int, int], channels: int, fit: Fit, max_pixels: int) -> np.ndarray:
    """One file as uint8 (H, W, channels); raises DcnnError for a file that cannot be decoded."""
    out_h, out_w = size
    image = open_image(path, max_pixels=max_pixels, draft_size=(_DRAFT_MARGIN * out_w, _DRAFT_MARGIN * out_h))
    return _fit_pixels_last(image, size, channels, fit)


def decode_image_file(
    path: str | Path, size: tuple[int, int], channels: int, fit: Fit = "crop", max_pixels: int = DEFAULT_MAX_PIXELS
) -> torch.Tensor:
    """One image file as uint8 (channels, H, W), as :func:`decode_images` decodes it; a file that
    cannot be decoded raises a DcnnError naming it and the reason."""
    size = _check_options(size, channels, fit, max_pixels)
    return torch.tensor(_decode(Path(path), size, channels, fit, max_pixels)).permute(2, 0, 1).contiguous()


def _progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("decoding images"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=Console(stderr=True), disable=not enabled, transient=True,
    )


def strict_error(skip: Skipped) -> DcnnError:
    return DcnnError(f"{skip.reason} (strict mode stops at the first bad file; without it, bad files are skipped "
                     "and listed)")


def decode_images(
    files: ImageFiles,
    size: tuple[int, int],
    channels: int,
    fit: Fit = "crop",
    strict: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = False,
) -> DecodedImages:
    """Decode every file into memory: uint8 images (N, channels, H, W) with `size` = (H, W), stored
    channels-last (:func:`dcnn.data.loader.pixels_last`), as Pillow decodes them.

    A file that cannot be decoded is left out and listed in ``skipped`` with the reason (the
    DcnnError message naming it); with `strict` the first one raises that DcnnError instead.
    """
    size = _check_options(size, channels, fit, max_pixels)
    images = np.empty((len(files), *size, channels), dtype=np.uint8)
    kept: list[int] = []
    skipped: list[Skipped] = []
    with _progress_bar(progress) as bar:
        task = bar.add_task("decode", total=len(files))
        for i, path in enumerate(files.paths):
            try:
                images[len(kept)] = _decode(path, size, channels, fit, max_pixels)
            except DcnnError as err:
                skip = Skipped(path, str(err))
                if strict:
                    raise strict_error(skip) from None
                skipped.append(skip)
            else:
                kept.append(i)
            if i % 256 == 255:
                bar.update(task, completed=i + 1)
    return DecodedImages(
        images=torch.from_numpy(images[: len(kept)]).permute(0, 3, 1, 2),
        labels=torch.tensor([files.labels[i] for i in kept], dtype=torch.int64),
        class_names=list(files.class_names),
        paths=[files.paths[i] for i in kept],
        skipped=skipped,
    )


# --- Disk cache -------------------------------------------------------------------------------


def cache_key(files: ImageFiles, size: tuple[int, int], channels: int, fit: Fit, max_pixels: int) -> str:
    """A hash of everything the decoded tensors depend on: each file's path, size, modification
    time and permissions, the labels and class names, the decoding options and the cache format."""
    digest = hashlib.blake2b(digest_size=16)
    options = {"format": CACHE_FORMAT, "size": list(size), "channels": channels, "fit": fit,
               "max_pixels": max_pixels, "class_names": files.class_names}
    digest.update(json.dumps(options, sort_keys=True).encode())
    for path, label in zip(files.paths, files.labels, strict=True):
        try:
            stat = os.stat(path)
            stamp = (stat.st_size, stat.st_mtime_ns, stat.st_mode)
        except OSError:
            stamp = (-1, -1, -1)
        digest.update(os.fsencode(path.absolute()) + f"\0{label}\0{stamp}\n".encode())
    return digest.hexdigest()


def _array_digest(array: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(array).data, digest_size=16).hexdigest()


def _read_cache(npy: Path, meta_path: Path, key: str) -> DecodedImages | None:
    """The cached entry, or None when it is missing or does not check out (then it is re-decoded)."""
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format") != CACHE_FORMAT or meta.get("key") != key:
            return None
        array = np.load(npy, allow_pickle=False)
        if (
            array.dtype != np.uint8
            or list(array.shape) != meta["shape"]
            or len(meta["labels"]) != array.shape[0]
            or len(meta["paths"]) != array.shape[0]
            or _array_digest(array) != meta["digest"]
        ):
            return None
        return DecodedImages(
            images=torch.from_numpy(array).permute(0, 3, 1, 2),
            labels=torch.tensor(meta["labels"], dtype=torch.int64),
            class_names=list(meta["class_names"]),
            paths=[Path(p) for p in meta["paths"]],
            skipped=[Skipped(Path(p), reason) for p, reason in meta["skipped"]],
        )
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        return None


def _write_cache(npy: Path, meta_path: Path, key: str, decoded: DecodedImages) -> None:
    array = decoded.images.permute(0, 2, 3, 1).contiguous().numpy()  # (N, H, W, C), as stored
    with atomic_output(npy) as handle:
        np.save(handle, array, allow_pickle=False)
    meta = {
        "format": CACHE_FORMAT,
        "key": key,
        "shape": list(array.shape),
        "digest": _array_digest(array),
        "labels": decoded.labels.tolist(),
        "class_names": decoded.class_names,
        "paths": [str(p) for p in decoded.paths],
        "skipped": [[str(s.path), s.reason] for s in decoded.skipped],
    }
    # Written last: the metadata names the digest of the array it belongs to.
    with atomic_output(meta_path) as handle:
        handle.write(json.dumps(meta).encode("utf-8"))


def load_or_decode(
    files: ImageFiles,
    size: tuple[int, int],
    channels: int,
    fit: Fit = "crop",
    strict: bool = False,
    cache_dir: Path | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = False,
) -> DecodedImages:
    """:func:`decode_images` through a disk cache.

    The entry (``<key>.npy`` with the images, ``<key>.json`` with labels, class names, paths and
    skipped files) lives in `cache_dir` (default ``cache_root()/decoded``) under a key that changes
    with any file added, removed, modified or relabelled (:func:`cache_key`). Both files are written
    atomically; an entry that does not check out (unreadable, wrong shape, digest mismatch) is
    decoded again and rewritten. With `strict`, a cached entry that skipped files raises as the
    decoding would have.
    """
    size = _check_options(size, channels, fit, max_pixels)
    folder = Path(cache_dir).expanduser() if cache_dir is not None else cache_root() / "decoded"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DcnnError(f"cannot create the image cache {folder}: {err.strerror or err}; "
                        "choose a writable cache_dir.") from None
    key = cache_key(files, size, channels, fit, max_pixels)
    npy, meta_path = folder / f"{key}.npy", folder / f"{key}.json"
    decoded = _read_cache(npy, meta_path, key)
    if decoded is None:
        decoded = decode_images(files, size, channels, fit, strict=strict, max_pixels=max_pixels, progress=progress)
        _write_cache(npy, meta_path, key, decoded)
    if strict and decoded.skipped:
        raise strict_error(decoded.skipped[0])
    return decoded


# --- Lazy decoding ----------------------------------------------------------------------------


class DecodeFailure(NamedTuple):
    """What :class:`LazyImageDataset` returns for a file that fails to decode."""

    skipped: Skipped
    shape: tuple[int, int, int]


class ImageBatch(NamedTuple):
    """A batch from :func:`collate_skipping`: the images that decoded, their labels, and the files
    of the batch that failed."""

    images: torch.Tensor
    labels: torch.Tensor
    skipped: list[Skipped]


def _header_problem(path: Path, max_pixels: int) -> str | None:
    """Why `path` cannot be decoded, judged from its header alone (None: it looks fine)."""
    try:
        open_image(path, max_pixels=max_pixels, load=False)
    except DcnnError as err:
        return str(err)
    return None


class LazyImageDataset(Dataset):
    """Images decoded on demand (in DataLoader workers), as :func:`decode_images` decodes them.

    An item is ``(uint8 tensor (channels, H, W), label)``, or a :class:`DecodeFailure` for a file
    that fails to decode; load with ``collate_fn=collate_skipping``, which drops failures and lists
    them in the batch's ``skipped``. With `check_headers` the constructor reads every file's header
    (no pixels): missing, empty, non-image and oversized files are left out up front and listed in
    :attr:`skipped`.
    """

    def __init__(
        self,
        files: ImageFiles,
        size: tuple[int, int],
        channels: int,
        fit: Fit = "crop",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        check_headers: bool = True,
    ) -> None:
        self.size = _check_options(size, channels, fit, max_pixels)
        self.channels, self.fit, self.max_pixels = channels, fit, max_pixels
        self.class_names = list(files.class_names)
        self.skipped: list[Skipped] = []
        self.paths: list[Path] = []
        self.labels: list[int] = []
        for path, label in zip(files.paths, files.labels, strict=True):
            problem = _header_problem(path, max_pixels) if check_headers else None
            if problem is None:
                self.paths.append(path)
                self.labels.append(label)
            else:
                self.skipped.append(Skipped(path, problem))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | DecodeFailure:
        path = self.paths[index]
        try:
            array = _decode(path, self.size, self.channels, self.fit, self.max_pixels)
        except DcnnError as err:
            return DecodeFailure(Skipped(path, str(err)), (self.channels, *self.size))
        return torch.tensor(array).permute(2, 0, 1), self.labels[index]


def collate_skipping(batch: Sequence[tuple[torch.Tensor, int] | DecodeFailure]) -> ImageBatch:
    """Collate :class:`LazyImageDataset` items: stack the images that decoded (channels-last, as
    decoded), list the failures."""
    good = [item for item in batch if not isinstance(item, DecodeFailure)]
    failed = [item for item in batch if isinstance(item, DecodeFailure)]
    if good:
        images = torch.stack([image.permute(1, 2, 0) for image, _ in good]).permute(0, 3, 1, 2)
    else:
        images = torch.empty((0, *failed[0].shape), dtype=torch.uint8)
    labels = torch.tensor([label for _, label in good], dtype=torch.int64)
    return ImageBatch(images, labels, [failure.skipped for failure in failed])

