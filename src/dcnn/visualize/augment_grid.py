"""A PNG grid of training images and their augmented versions, to see what a recipe's augmentation does."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from dcnn.data.augment import BatchAugment
from dcnn.errors import DcnnError
from dcnn.fileio import atomic_output

MAX_ROWS = 32
CELL_INCHES = 1.5
DPI = 100


def save_augmentation_grid(
    images: Tensor,
    labels: Tensor,
    class_names: Sequence[str],
    augment: BatchAugment | None,
    path: Path,
    seed: int = 0,
    copies: int = 4,
) -> Path:
    """Save a PNG with one row per image: the original, then `copies` augmented versions.

    Args:
        images: uint8 (N, C, H, W) with C = 1 (grey) or 3 (RGB), N at most 32.
        labels: int64 (N,) class indices into `class_names`.
        class_names: the name of each class, used as the titles.
        augment: the batch augmentation to show (None: the copies are the originals).
        path: where the PNG goes (written all or nothing).
        seed: copy k is the batch augmented with seed `seed + k`.
        copies: augmented versions per image.

    Titles name the class; where the augmentation mixes labels (mixup, cutmix), an augmented image's
    title names its two heaviest classes with their weights. Each cell is 150 pixels square, so the
    picture is 150·(copies + 1) pixels wide and about 150·N high.
    """
    # The object-oriented Agg API draws without pyplot's global state or any GUI backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    _check_inputs(images, labels, class_names, copies)
    originals = images.float().div(255.0)
    columns = [(originals, labels)]
    for k in range(copies):
        columns.append(augment(originals, labels, seed + k) if augment is not None else (originals, labels))

    rows = images.shape[0]
    figure = Figure(figsize=(CELL_INCHES * (copies + 1), CELL_INCHES * rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.subplots(rows, copies + 1, squeeze=False)
    for column, (batch, targets) in enumerate(columns):
        for row in range(rows):
            axes = grid[row][column]
            picture = batch[row].detach().cpu().clamp(0.0, 1.0)
            if picture.shape[0] == 1:
                axes.imshow(picture[0].numpy(), cmap="gray", vmin=0.0, vmax=1.0)
            else:
                axes.imshow(picture.permute(1, 2, 0).numpy())
            title = _title(targets[row].detach().cpu(), class_names)
            axes.set_title(title if column else f"{title} (original)", fontsize=7)
            axes.set_axis_off()
    with atomic_output(path) as handle:
        figure.savefig(handle, format="png")
    return Path(path)


def _title(target: Tensor, class_names: Sequence[str]) -> str:
    """The class name of an int label; the two heaviest classes and their weights of a soft target."""
    if target.ndim == 0:
        return class_names[int(target)]
    weights, indices = torch.topk(target, k=min(2, target.numel()))
    parts = [f"{class_names[int(i)]} {float(w):.2f}" for w, i in zip(weights, indices, strict=True) if w > 0]
    return " / ".join(parts) if len(parts) > 1 else class_names[int(indices[0])]


def _check_inputs(images: Tensor, labels: Tensor, class_names: Sequence[str], copies: int) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise DcnnError(
            f"an augmentation grid needs uint8 images (N, 1 or 3, H, W), got {images.dtype} {tuple(images.shape)}."
        )
    if not 1 <= images.shape[0] <= MAX_ROWS:
        raise DcnnError(f"an augmentation grid shows 1 to {MAX_ROWS} images, got {images.shape[0]}; pass fewer.")
    if labels.shape != images.shape[:1]:
        raise DcnnError(f"need one label per image ({images.shape[0]}), got shape {tuple(labels.shape)}.")
    if not 0 <= int(labels.min()) <= int(labels.max()) < len(class_names):
        raise DcnnError(
            f"labels must index class_names (0 to {len(class_names) - 1}), got {int(labels.min())} to "
            f"{int(labels.max())}."
        )
    if copies < 1:
        raise DcnnError(f"copies must be at least 1, got {copies}.")
