"""Training curves: what each panel plots, and the PNG every run writes."""

from __future__ import annotations

import math

from PIL import Image

from dcnn.train.curves import curves_figure, save_training_curves

ROWS = [
    {"epoch": "1", "train_loss": "2.0", "val_loss": "1.5", "train_acc": "0.4", "val_acc": "0.5", "lr": "0.1"},
    {"epoch": "2", "train_loss": "1.0", "val_loss": "1.2", "train_acc": "0.7", "val_acc": "0.6", "lr": "0.01"},
    {"epoch": "3", "train_loss": "0.5", "val_loss": "nan", "train_acc": "0.9", "val_acc": "nan", "lr": "0.001"},
]


def lines_of(axes) -> dict[str, tuple[list, list]]:
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in axes.get_lines()}


def test_panels_plot_the_metrics_by_epoch():
    loss, accuracy, lr = curves_figure(ROWS, "lenet").axes
    assert lines_of(loss) == {"train": ([1, 2, 3], [2.0, 1.0, 0.5]), "validation": ([1, 2], [1.5, 1.2])}
    assert lines_of(accuracy)["validation"] == ([1, 2], [0.5, 0.6])  # an epoch without validation is left out
    (_, (epochs, rates)), = lines_of(lr).items()
    assert epochs == [1, 2, 3] and rates == [0.1, 0.01, 0.001] and lr.get_yscale() == "log"


def test_without_validation_only_training_is_drawn(tmp_path):
    rows = [{**r, "val_loss": "nan", "val_acc": math.nan} for r in ROWS]
    loss, _, _ = curves_figure(rows).axes
    assert set(lines_of(loss)) == {"train"}
    path = save_training_curves(rows, tmp_path / "curves.png")
    assert Image.open(path).size == (1200, 360)
