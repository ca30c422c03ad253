"""Report files: JSON and CSV round trips, a real PNG, nothing partial left when writing fails."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dcnn.errors import DcnnError
from dcnn.evaluate import (
    ClassificationMetrics,
    ClassificationResult,
    plot_confusion_matrix,
    read_confusion_csv,
    write_confusion_csv,
    write_report,
)

CLASS_NAMES = ["cat", "dog, large", 'bird "tweety"']  # separators and quotes must survive the CSV


def three_class_result() -> ClassificationResult:
    metrics = ClassificationMetrics(num_classes=3, topk=(1, 5), num_hardest=2)
    logits = torch.tensor([[3.0, 1.0, 0.0], [2.0, 0.0, 1.0], [1.0, 0.0, 2.0], [0.0, 1.0, 5.0]])
    metrics.update(logits, torch.tensor([0, 2, 1, 2]))
    return metrics.compute()


def leftover_temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_write_report_round_trips(tmp_path: Path) -> None:
    result = three_class_result()
    paths = write_report(result, tmp_path / "out", CLASS_NAMES)
    assert sorted(p.name for p in paths.values()) == [
        "confusion_matrix.csv",
        "confusion_matrix.png",
        "metrics.json",
    ]

    summary = json.loads(paths["metrics.json"].read_text())
    assert summary["top1_accuracy"] == 0.5
    assert summary["top1_error"] == 0.5
    assert summary["top5_accuracy"] == 1.0
    assert summary["top5_error"] == 0.0
    assert [c["name"] for c in summary["per_class"]] == CLASS_NAMES
    assert [c["accuracy"] for c in summary["per_class"]] == [1.0, 0.0, 0.5]
    assert [h["index"] for h in summary["hardest"]] == [2, 1]

    matrix, names = read_confusion_csv(paths["confusion_matrix.csv"])
    assert torch.equal(matrix, result.confusion_matrix)
    assert names == CLASS_NAMES

    with Image.open(paths["confusion_matrix.png"]) as png:
        assert png.format == "PNG"
        assert png.width >= 300 and png.height >= 300
        pixels = np.asarray(png.convert("RGB"))
    assert pixels.std() > 10  # a drawn figure, not a blank canvas
    assert leftover_temp_files(tmp_path / "out") == []


def test_csv_layout_has_class_names_on_both_axes(tmp_path: Path) -> None:
    path = write_confusion_csv(torch.tensor([[5, 1], [0, 7]]), tmp_path / "cm.csv", ["no", "yes"])
    assert path.read_text().splitlines() == ["true\\predicted,no,yes", "no,5,1", "yes,0,7"]


@pytest.mark.parametrize("num_classes", [1, 25, 120])
def test_csv_round_trip_on_random_matrices(tmp_path: Path, num_classes: int) -> None:
    matrix = torch.randint(0, 10_000, (num_classes, num_classes), generator=torch.Generator().manual_seed(3))
    write_confusion_csv(matrix, tmp_path / "cm.csv")
    read_back, names = read_confusion_csv(tmp_path / "cm.csv")
    assert torch.equal(read_back, matrix)
    assert names == [str(i) for i in range(num_classes)]


@pytest.mark.parametrize("num_classes", [2, 25, 120])
def test_png_for_small_and_large_class_counts(tmp_path: Path, num_classes: int) -> None:
    matrix = torch.eye(num_classes, dtype=torch.int64) * 9 + 1
    matrix[0] = 0  # a class without samples must not break the row normalization
    path = plot_confusion_matrix(matrix, tmp_path / "cm.png")
    with Image.open(path) as png:
        png.verify()
        assert png.width >= 300 and png.height >= 300


def test_png_labels_classes_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The drawn figure carries the class names on both axes and one count annotation per cell."""
    from matplotlib.figure import Figure

    drawn: list[Figure] = []
    original_savefig = Figure.savefig

    def capture(self: Figure, *args: object, **kwargs: object) -> None:
        drawn.append(self)
        original_savefig(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", capture)
    plot_confusion_matrix(torch.tensor([[5, 1], [2, 7]]), tmp_path / "cm.png", ["no", "yes"])
    axes = drawn[0].axes[0]
    assert [t.get_text() for t in axes.get_xticklabels()] == ["no", "yes"]
    assert [t.get_text() for t in axes.get_yticklabels()] == ["no", "yes"]
    assert sorted(t.get_text() for t in axes.texts) == ["1", "2", "5", "7"]
    # Row-normalized colours: 5/6 of class "no" and 7/9 of class "yes" are on the diagonal.
    np.testing.assert_allclose(axes.images[0].get_array(), [[5 / 6, 1 / 6], [2 / 9, 7 / 9]])


def test_failed_write_keeps_the_previous_file_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = three_class_result()
    paths = write_report(result, tmp_path, CLASS_NAMES)
    before = {name: path.read_bytes() for name, path in paths.items()}

    def broken_savefig(*args: object, **kwargs: object) -> None:
        raise ValueError("renderer crashed")

    from matplotlib.figure import Figure

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(ValueError, match="renderer crashed"):
        write_report(result, tmp_path, ["a", "b", "c"])
    assert paths["confusion_matrix.png"].read_bytes() == before["confusion_matrix.png"]
    assert leftover_temp_files(tmp_path) == []


def test_unwritable_folder_raises_dcnn_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(DcnnError, match=r"cannot write .*cm\.csv"):
        write_confusion_csv(torch.eye(2, dtype=torch.int64), tmp_path / "a-file" / "cm.csv")


def test_target_that_is_a_folder_raises_dcnn_error_and_cleans_up(tmp_path: Path) -> None:
    (tmp_path / "cm.csv").mkdir()
    with pytest.raises(DcnnError, match="cannot write"):
        write_confusion_csv(torch.eye(2, dtype=torch.int64), tmp_path / "cm.csv")
    assert leftover_temp_files(tmp_path) == []


def test_wrong_number_of_class_names_raises(tmp_path: Path) -> None:
    with pytest.raises(DcnnError, match="got 2 class names for 3 classes"):
        write_report(three_class_result(), tmp_path, ["a", "b"])
    assert list(tmp_path.iterdir()) == []


def test_malformed_csv_raises(tmp_path: Path) -> None:
    path = tmp_path / "cm.csv"
    path.write_text("true\\predicted,a,b\na,1,2\n")
    with pytest.raises(DcnnError, match="not a square confusion matrix"):
        read_confusion_csv(path)
    path.write_text("true\\predicted,a,b\na,1,2\nb,x,4\n")
    with pytest.raises(DcnnError, match="not an integer"):
        read_confusion_csv(path)


def test_non_square_matrix_raises(tmp_path: Path) -> None:
    with pytest.raises(DcnnError, match="must be square"):
        write_confusion_csv(torch.zeros(2, 3, dtype=torch.int64), tmp_path / "cm.csv")
