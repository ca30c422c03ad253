"""The contact sheet: PNG size from rows × columns, red marks on misclassified cells only, sharp pixels,
hardest_examples against an independent sort, error messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dcnn.errors import DcnnError
from dcnn.visualize.contact_sheet import _caption, hardest_examples, save_contact_sheet

CLASSES = ["airplane", "cat", "dog"]
CELL = 160  # pixels: 1.6-inch cells at 100 dpi


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as png:
        assert png.format == "PNG"
        return np.asarray(png.convert("RGB")).astype(np.int16)


def grey_images(n: int, size: int = 8, channels: int = 3) -> torch.Tensor:
    """Grey gradients (no red anywhere), uint8 (n, channels, size, size)."""
    ramp = torch.linspace(40, 220, size).round().to(torch.uint8)
    return ramp.reshape(1, 1, 1, size).expand(n, channels, size, size).contiguous()


def red_pixels(pixels: np.ndarray) -> int:
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    return int(((r > 200) & (g < 80) & (b < 80)).sum())


def test_sheet_size_follows_rows_and_columns(tmp_path: Path) -> None:
    n = 5
    path = save_contact_sheet(
        grey_images(n, channels=1), [0] * n, [0] * n, [0.9] * n, CLASSES, tmp_path / "sheet.png", columns=2
    )
    assert path == tmp_path / "sheet.png"
    assert read_png(path).shape[:2] == (3 * CELL, 2 * CELL)  # ceil(5 / 2) rows of 2
    titled = save_contact_sheet(
        grey_images(3), [0, 1, 2], [0, 1, 2], [0.5] * 3, CLASSES, tmp_path / "titled.png", title="hardest", columns=8
    )
    assert read_png(titled).shape[:2] == (CELL + 40, 3 * CELL)  # fewer images than columns: one short row
    assert not list(tmp_path.glob(".*.part"))  # written atomically, nothing left behind


def test_misclassified_cells_are_marked_red_and_correct_ones_are_not(tmp_path: Path) -> None:
    truths, predictions = [0, 1, 2, 1], [0, 2, 2, 0]  # cells 1 and 3 are wrong
    path = save_contact_sheet(
        grey_images(4), truths, predictions, [0.97, 0.6, 0.8, 0.55], CLASSES, tmp_path / "sheet.png",
        losses=[0.03, 2.1, 0.2, 1.7], columns=2,
    )
    pixels = read_png(path)
    assert pixels.shape[:2] == (2 * CELL, 2 * CELL)
    cells = [pixels[r * CELL : (r + 1) * CELL, c * CELL : (c + 1) * CELL] for r in range(2) for c in range(2)]
    counts = [red_pixels(cell) for cell in cells]
    assert counts[0] == 0 and counts[2] == 0, counts
    assert counts[1] > 4 * CELL and counts[3] > 4 * CELL, counts  # a frame at least as long as the cell's sides


def test_small_images_are_upscaled_by_nearest_neighbour(tmp_path: Path) -> None:
    # A 4x4 blue/green checkerboard: smooth interpolation would blend them into teal pixels.
    checker = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    mask = (torch.arange(4)[:, None] + torch.arange(4)[None, :]) % 2 == 0
    checker[0, 2][mask] = 255
    checker[0, 1][~mask] = 255
    pixels = read_png(save_contact_sheet(checker, [1], [1], [1.0], CLASSES, tmp_path / "one.png"))
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    blue, green = (r < 10) & (g < 10) & (b > 245), (r < 10) & (g > 245) & (b < 10)
    blended = (r < 40) & (g > 60) & (g < 200) & (b > 60) & (b < 200)
    assert blue.sum() > 2000 and green.sum() > 2000
    assert blended.sum() < 0.01 * (blue.sum() + green.sum())


def test_caption() -> None:
    assert _caption("cat", "dog", 0.968, None) == "true: cat / pred: dog 0.97"
    assert _caption("cat", "cat", 0.5, 1.23456) == "true: cat / pred: cat 0.50\nloss 1.23"
    assert _caption("automobile", "airplane", 0.8, None) == "true: automobile /\npred: airplane 0.80"


def test_hardest_examples_against_an_independent_sort() -> None:
    losses = torch.tensor([0.5, 2.0, 0.1, 2.0, 3.0, 0.5, 2.0])
    assert hardest_examples(losses, 4).tolist() == [4, 1, 3, 6]  # ties in index order
    assert hardest_examples(losses, 100).tolist() == [4, 1, 3, 6, 0, 5, 2]  # k clamps to N
    assert hardest_examples(losses, 0).tolist() == []
    assert hardest_examples(torch.tensor([1.0, float("nan"), 5.0]), 2).tolist() == [1, 2]  # NaN counts as worst
    generator = torch.Generator().manual_seed(0)
    many = torch.randint(0, 20, (500,), generator=generator).float() / 4  # many ties
    expected = sorted(range(500), key=lambda i: (-many[i].item(), i))[:37]
    picked = hardest_examples(many, 37)
    assert picked.dtype == torch.int64 and picked.tolist() == expected


def test_bad_inputs_give_clear_messages(tmp_path: Path) -> None:
    images, path = grey_images(2), tmp_path / "bad.png"
    good = dict(true_labels=[0, 1], predicted=[1, 1], probabilities=[0.5, 0.9], class_names=CLASSES, path=path)

    def save(**changes: object) -> None:
        arguments = {**good, **changes}
        save_contact_sheet(arguments.pop("images", images), **arguments)  # type: ignore[arg-type]

    with pytest.raises(DcnnError, match=r"uint8 images \(N, 1 or 3, H, W\), got torch.float32"):
        save(images=images.float())
    with pytest.raises(DcnnError, match=r"got torch.uint8 \(2, 8, 8\)"):
        save(images=images[:, 0])
    with pytest.raises(DcnnError, match="1 to 256 images, got 0"):
        save(images=images[:0], true_labels=[], predicted=[], probabilities=[])
    with pytest.raises(DcnnError, match="predicted has 1 entries for 2 images"):
        save(predicted=[1])
    with pytest.raises(DcnnError, match="losses has 3 entries for 2 images"):
        save(losses=[1.0, 2.0, 3.0])
    with pytest.raises(DcnnError, match=r"true_labels holds class 3, outside class_names \(0 to 2\)"):
        save(true_labels=[0, 3])
    with pytest.raises(DcnnError, match="predicted must be integer class indices"):
        save(predicted=[0.0, 1.0])
    with pytest.raises(DcnnError, match=r"probabilities must lie in \[0, 1\].*got 1.5"):
        save(probabilities=[0.5, 1.5])
    with pytest.raises(DcnnError, match="class_names is empty"):
        save(class_names=[])
    with pytest.raises(DcnnError, match="columns must be a positive"):
        save(columns=0)
    assert not path.exists()
    with pytest.raises(DcnnError, match="1-D float tensor"):
        hardest_examples(torch.tensor([1, 2, 3]), 2)
    with pytest.raises(DcnnError, match="k must be a number of examples"):
        hardest_examples(torch.tensor([1.0]), -1)
