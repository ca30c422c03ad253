"""Training curves: loss and accuracy on the training and validation splits, and the learning rate,
per epoch; what every run draws into ``curves.png`` as it goes."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from dcnn.fileio import atomic_output


def _series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(epochs, values) of a metric, leaving out epochs where it is missing (no validation split)."""
    points = [(int(r["epoch"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
    points = [(e, v) for e, v in points if not math.isnan(v)]
    return [e for e, _ in points], [v for _, v in points]


def curves_figure(rows: Sequence[dict[str, Any]], title: str = "") -> Figure:
    """Three panels: train/val loss, train/val accuracy, learning rate (log scale), by epoch."""
    figure = Figure(figsize=(12, 3.6), layout="constrained")
    loss, accuracy, lr = figure.subplots(1, 3)
    for axes, key, name in ((loss, "loss", "loss"), (accuracy, "acc", "accuracy")):
        for split, style in (("train", "-o"), ("val", "-s")):
            epochs, values = _series(rows, f"{split}_{key}")
            if epochs:
                axes.plot(epochs, values, style, markersize=3, label=f"{'validation' if split == 'val' else split}")
        axes.set_xlabel("epoch")
        axes.set_ylabel(name)
        axes.grid(alpha=0.3)
        axes.legend()
    epochs, values = _series(rows, "lr")
    lr.plot(epochs, values, "-o", markersize=3, color="tab:green")
    if values and min(values) > 0:
        lr.set_yscale("log")
    lr.set_xlabel("epoch")
    lr.set_ylabel("learning rate (end of epoch)")
    lr.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    return figure


def save_training_curves(rows: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Draw :func:`curves_figure` into a PNG, written all or nothing."""
    buffer = io.BytesIO()
    curves_figure(rows, title).savefig(buffer, format="png", dpi=100)
    with atomic_output(path) as handle:
        handle.write(buffer.getvalue())
    return Path(path)
