"""A contact sheet of examples, typically the hardest ones: each image with its true and predicted class.

Pick the examples with :func:`hardest_examples` (the k highest per-sample losses), then draw them
with :func:`save_contact_sheet`. Misclassified cells get a red caption and a red frame.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from dcnn.errors import DcnnError
from dcnn.fileio import atomic_output

MAX_IMAGES = 256
CELL_INCHES = 1.6
TITLE_INCHES = 0.4
DPI = 100
MARKER_COLOR = "#ff0000"  # misclassified: caption and frame
CAPTION_COLOR = "#000000"
FRAME_WIDTH = 4.0  # points
CAPTION_CHARS = 30  # longer captions break after "true: ... /" to fit the cell


def hardest_examples(losses: Tensor, k: int) -> Tensor:
    """Indices of the `k` highest losses, highest first; equal losses in index order.

    A `k` larger than the number of losses returns them all. NaN losses count as the highest (a
    diverged sample is what one wants to see first), as in :class:`dcnn.evaluate.ClassificationMetrics`.
    Returns int64 indices on the device of `losses`.
    """
    if not isinstance(losses, Tensor) or losses.ndim != 1 or not losses.is_floating_point():
        shape = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
        raise DcnnError(f"losses must be a 1-D float tensor of per-sample losses, got {shape}.")
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise DcnnError(f"k must be a number of examples (0 or more), got {k!r}.")
    key = torch.nan_to_num(losses, nan=math.inf)
    return torch.sort(key, descending=True, stable=True).indices[:k]


def save_contact_sheet(
    images: Tensor,
    true_labels: Sequence[int],
    predicted: Sequence[int],
    probabilities: Sequence[float],
    class_names: Sequence[str],
    path: Path,
    losses: Sequence[float] | None = None,
    title: str | None = None,
    columns: int = 8,
) -> Path:
    """Save a PNG grid of `images`, each captioned "true: cat / pred: dog 0.97" (and its loss).

    Args:
        images: uint8 (N, C, H, W) with C = 1 (grey) or 3 (RGB), 1 ≤ N ≤ 256.
        true_labels: the true class index of each image.
        predicted: the predicted class index of each image.
        probabilities: the predicted class's probability for each image, in [0, 1].
        class_names: the name of each class.
        path: where the PNG goes (written all or nothing).
        losses: optional per-image loss, added to the caption.
        title: optional title above the grid.
        columns: images per row (fewer when there are fewer images).

    Cells are 160 pixels square (1.6 inches at 100 dpi), so the picture is 160·min(columns, N)
    pixels wide and 160·ceil(N / columns) high, plus 40 for a title. Images are upscaled by nearest
    neighbour, so the pixels of a 32×32 CIFAR image stay sharp squares. A misclassified image gets
    a red frame and a red caption.
    """
    # The object-oriented Agg API draws without pyplot's global state or any GUI backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    truths, predictions, probs, loss_values = _checked_inputs(
        images, true_labels, predicted, probabilities, class_names, losses, columns
    )
    count = images.shape[0]
    grid_columns = min(columns, count)
    rows = math.ceil(count / grid_columns)
    title_inches = TITLE_INCHES if title else 0.0
    figure = Figure(
        figsize=(CELL_INCHES * grid_columns, CELL_INCHES * rows + title_inches), dpi=DPI, layout="constrained"
    )
    FigureCanvasAgg(figure)
    if title:
        figure.suptitle(title, fontsize=10)
    grid = figure.subplots(rows, grid_columns, squeeze=False)
    pictures = images.detach().cpu()
    for index, axes in enumerate(grid.flat):
        if index >= count:
            axes.set_axis_off()
            continue
        picture = pictures[index]
        if picture.shape[0] == 1:
            axes.imshow(picture[0].numpy(), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            axes.imshow(picture.permute(1, 2, 0).numpy(), interpolation="nearest")
        wrong = truths[index] != predictions[index]
        color = MARKER_COLOR if wrong else CAPTION_COLOR
        caption = _caption(
            class_names[truths[index]],
            class_names[predictions[index]],
            probs[index],
            None if loss_values is None else loss_values[index],
        )
        axes.set_title(caption, fontsize=6.5, color=color)
        axes.set_xticks([])
        axes.set_yticks([])
        for spine in axes.spines.values():
            spine.set_visible(wrong)
            spine.set_color(MARKER_COLOR)
            spine.set_linewidth(FRAME_WIDTH)
    with atomic_output(path) as handle:
        figure.savefig(handle, format="png")
    return Path(path)


def _caption(true_name: str, predicted_name: str, probability: float, loss: float | None) -> str:
    caption = f"true: {true_name} / pred: {predicted_name} {probability:.2f}"
    if len(caption) > CAPTION_CHARS:
        caption = caption.replace(" / ", " /\n", 1)
    return caption if loss is None else f"{caption}\nloss {loss:.3g}"


def _checked_inputs(
    images: Tensor,
    true_labels: Sequence[int],
    predicted: Sequence[int],
    probabilities: Sequence[float],
    class_names: Sequence[str],
    losses: Sequence[float] | None,
    columns: int,
) -> tuple[list[int], list[int], list[float], list[float] | None]:
    is_image_batch = isinstance(images, Tensor) and images.dtype == torch.uint8 and images.ndim == 4
    if not is_image_batch or images.shape[1] not in (1, 3):
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, Tensor) else type(images).__name__
        raise DcnnError(f"a contact sheet needs uint8 images (N, 1 or 3, H, W), got {got}.")
    count = images.shape[0]
    if not 1 <= count <= MAX_IMAGES:
        raise DcnnError(
            f"a contact sheet shows 1 to {MAX_IMAGES} images, got {count}; pick some with hardest_examples(losses, k)."
        )
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise DcnnError(f"columns must be a positive number of images per row, got {columns!r}.")
    if not class_names:
        raise DcnnError("class_names is empty; give the name of each class.")
    fields = {"true_labels": true_labels, "predicted": predicted, "probabilities": probabilities}
    if losses is not None:
        fields["losses"] = losses
    for name, values in fields.items():
        if len(values) != count:
            raise DcnnError(f"{name} has {len(values)} entries for {count} images; give one per image.")
    truths = _class_indices("true_labels", true_labels, class_names)
    predictions = _class_indices("predicted", predicted, class_names)
    probs = [float(p) for p in probabilities]
    if not all(0.0 <= p <= 1.0 for p in probs):
        bad = next(p for p in probs if not 0.0 <= p <= 1.0)
        raise DcnnError(f"probabilities must lie in [0, 1] (the predicted class's softmax), got {bad}.")
    loss_values = None if losses is None else [float(v) for v in losses]
    return truths, predictions, probs, loss_values


def _class_indices(name: str, labels: Sequence[int], class_names: Sequence[str]) -> list[int]:
    try:
        indices = [operator.index(label) for label in labels]
    except TypeError:
        raise DcnnError(f"{name} must be integer class indices, got {list(labels)[:3]!r}...") from None
    bad = [i for i in indices if not 0 <= i < len(class_names)]
    if bad:
        raise DcnnError(
            f"{name} holds class {bad[0]}, outside class_names (0 to {len(class_names) - 1}); "
            "check the labels and the class names."
        )
    return indices
