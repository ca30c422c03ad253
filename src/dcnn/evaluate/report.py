"""Write evaluation results: metrics.json, confusion_matrix.csv and confusion_matrix.png.

Every file is written to a temporary file in the destination folder and renamed into place, so a
failure (full disk, an interrupted run, a plotting error) never leaves a partial file behind and an
existing file is either kept whole or replaced whole.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dcnn.errors import DcnnError
from dcnn.evaluate.metrics import ClassificationResult, resolve_class_names
from dcnn.fileio import atomic_output

METRICS_FILE = "metrics.json"
CONFUSION_CSV_FILE = "confusion_matrix.csv"
CONFUSION_PNG_FILE = "confusion_matrix.png"
CSV_CORNER = "true\\predicted"
# Cell annotations stay legible up to about this many classes, tick labels up to MAX_LABELLED_CLASSES.
MAX_ANNOTATED_CLASSES = 20
MAX_LABELLED_CLASSES = 100


def write_report(
    result: ClassificationResult, out_dir: str | Path, class_names: Sequence[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write metrics.json, confusion_matrix.csv and confusion_matrix.png into `out_dir` (created if
    needed); `extra` adds fields to metrics.json (how the figures were made: view, dataset, ...).
    Returns the written paths by file name."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DcnnError(
            f"cannot create the output folder {out_dir}: {err}. Choose a writable folder."
        ) from None
    names = resolve_class_names(class_names, result.num_classes)
    paths = {
        METRICS_FILE: write_metrics_json(result, out_dir / METRICS_FILE, names, extra),
        CONFUSION_CSV_FILE: write_confusion_csv(result.confusion_matrix, out_dir / CONFUSION_CSV_FILE, names),
        CONFUSION_PNG_FILE: plot_confusion_matrix(
            result.confusion_matrix, out_dir / CONFUSION_PNG_FILE, names
        ),
    }
    return paths


def write_metrics_json(
    result: ClassificationResult, path: str | Path, class_names: Sequence[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the JSON summary of :meth:`ClassificationResult.to_dict` (and `extra`) to `path`."""
    text = json.dumps({**(extra or {}), **result.to_dict(class_names)}, indent=2, allow_nan=False) + "\n"
    with atomic_output(path) as handle:
        handle.write(text.encode())
    return Path(path)


def write_confusion_csv(
    matrix: torch.Tensor, path: str | Path, class_names: Sequence[str] | None = None
) -> Path:
    """Write a confusion matrix as CSV: a header row and a first column of class names (rows = true
    class, columns = predicted class), then the counts."""
    matrix = _checked_matrix(matrix)
    names = resolve_class_names(class_names, matrix.shape[0])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([CSV_CORNER, *names])
    for name, row in zip(names, matrix.tolist(), strict=True):
        writer.writerow([name, *row])
    text = buffer.getvalue()
    with atomic_output(path) as handle:
        handle.write(text.encode())
    return Path(path)


def read_confusion_csv(path: str | Path) -> tuple[torch.Tensor, list[str]]:
    """Read a file written by :func:`write_confusion_csv`: (int64 matrix, class names)."""
    path = Path(path)
    try:
        rows = list(csv.reader(path.read_text().splitlines()))
    except (OSError, UnicodeDecodeError) as err:
        raise DcnnError(f"cannot read the confusion matrix {path}: {err}.") from None
    names = rows[0][1:] if rows else []
    body = rows[1:]
    if not names or len(body) != len(names) or any(len(row) != len(names) + 1 for row in body):
        raise DcnnError(
            f"{path} is not a square confusion matrix with a header row and column of class names; "
            "write it with write_confusion_csv."
        )
    if [row[0] for row in body] != names:
        raise DcnnError(f"{path}: the row names do not match the column names.")
    try:
        counts = [[int(cell) for cell in row[1:]] for row in body]
    except ValueError as err:
        raise DcnnError(f"{path}: a count is not an integer ({err}).") from None
    return torch.tensor(counts, dtype=torch.int64), names


def plot_confusion_matrix(
    matrix: torch.Tensor, path: str | Path, class_names: Sequence[str] | None = None
) -> Path:
    """Save a PNG of the confusion matrix: colour = fraction of the true class (each row normalized
    to sum to 1; a class without samples stays blank), cells annotated with counts when there are at
    most 20 classes, class names on the axes (a subset of them beyond 100 classes)."""
    # The object-oriented Agg API draws without pyplot's global state or any GUI backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    matrix = _checked_matrix(matrix)
    num_classes = matrix.shape[0]
    names = resolve_class_names(class_names, num_classes)
    counts = matrix.double()
    row_fraction = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)

    # About a quarter inch per class, from 4 to 14 inches (beyond, pixels cost time, not legibility).
    side = min(max(4.0, 0.25 * num_classes + 2.5), 14.0)
    figure = Figure(figsize=(side + 1.0, side), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(row_fraction.numpy(), cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="fraction of true class")
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(f"Confusion matrix ({int(matrix.sum())} samples)")

    if num_classes <= MAX_LABELLED_CLASSES:
        axes.set_xticks(range(num_classes), labels=names)
        axes.set_yticks(range(num_classes), labels=names)
    else:  # too many to label them all: matplotlib picks evenly spaced classes to name

        def class_name(position: float, _tick_number: int) -> str:
            index = round(position)
            return names[index] if index == position and 0 <= index < num_classes else ""

        for axis in (axes.xaxis, axes.yaxis):
            axis.set_major_locator(MaxNLocator(integer=True))
            axis.set_major_formatter(FuncFormatter(class_name))
    axes.tick_params(axis="x", labelrotation=90 if num_classes > 10 else 0)
    axes.tick_params(labelsize=10 if num_classes <= 20 else 7 if num_classes <= 50 else 5)

    if num_classes <= MAX_ANNOTATED_CLASSES:
        for true_class in range(num_classes):
            for predicted in range(num_classes):
                fraction = float(row_fraction[true_class, predicted])
                axes.text(
                    predicted,
                    true_class,
                    str(int(matrix[true_class, predicted])),
                    ha="center",
                    va="center",
                    fontsize=8 if num_classes > 10 else 10,
                    color="white" if fraction > 0.5 else "black",
                )
    with atomic_output(path) as handle:
        figure.savefig(handle, format="png")
    return Path(path)


def _checked_matrix(matrix: torch.Tensor) -> torch.Tensor:
    matrix = torch.as_tensor(matrix).detach().cpu()
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise DcnnError(
            f"a confusion matrix must be square (classes x classes), got shape {tuple(matrix.shape)}."
        )
    return matrix.long()
