"""The augmentation grid: a PNG of the expected size, one distinct row per image, augmented cells."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dcnn.data.augment import build_augment
from dcnn.errors import DcnnError
from dcnn.visualize import save_augmentation_grid
from dcnn.visualize.augment_grid import _title
from tests.conftest import data_dir

CLASSES = ["airplane", "cat", "ship"]


@pytest.fixture(scope="module")
def cifar_images() -> tuple[torch.Tensor, torch.Tensor]:
    """The first test image of three CIFAR-10 classes, uint8 (3, 3, 32, 32)."""
    root = data_dir() / "cifar10-jpeg" / "test"
    if not root.is_dir():
        pytest.fail(f"CIFAR-10 JPEGs not found in {root}; set DCNN_DATA_DIR to the folder holding cifar10-jpeg/")
    pictures = []
    for name in CLASSES:
        first = sorted((root / name).glob("*.jpg"))[0]
        pictures.append(torch.from_numpy(np.array(Image.open(first).convert("RGB"))).permute(2, 0, 1))
    return torch.stack(pictures), torch.arange(3)


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as png:
        assert png.format == "PNG"
        return np.asarray(png.convert("RGB")).astype(np.int16)


def test_grid_has_one_row_per_image_and_a_column_per_copy(tmp_path: Path, cifar_images) -> None:
    images, labels = cifar_images
    augment = build_augment([{"random_crop": {"size": 32, "padding": 4}}, {"hflip": {"p": 1.0}}, "cutout"], 3)
    path = save_augmentation_grid(images, labels, CLASSES, augment, tmp_path / "grid.png", copies=4)
    assert path == tmp_path / "grid.png"
    pixels = read_png(path)
    assert pixels.shape[:2] == (3 * 150, 5 * 150)  # 1.5-inch cells at 100 dpi
    strips = np.split(pixels, 3, axis=0)
    for a in range(3):
        for b in range(a + 1, 3):
            assert np.abs(strips[a] - strips[b]).mean() > 5, f"rows {a} and {b} look the same"
    assert not list(tmp_path.glob(".*.part"))  # written atomically, nothing left behind


def test_augmented_cells_differ_from_unaugmented_ones(tmp_path: Path, cifar_images) -> None:
    images, labels = cifar_images
    plain = read_png(save_augmentation_grid(images, labels, CLASSES, None, tmp_path / "plain.png", copies=2))
    flip = build_augment([{"hflip": {"p": 1.0}}], 3)
    flipped = read_png(save_augmentation_grid(images, labels, CLASSES, flip, tmp_path / "flip.png", copies=2))
    third = plain.shape[1] // 3
    assert np.array_equal(plain[:, :third], flipped[:, :third])  # the originals
    assert np.abs(plain[:, third:] - flipped[:, third:]).mean() > 3  # the copies are mirrored


def test_mixed_labels_title_the_two_heaviest_classes(tmp_path: Path, cifar_images) -> None:
    assert _title(torch.tensor([0.3, 0.0, 0.7]), CLASSES) == "ship 0.70 / airplane 0.30"
    assert _title(torch.tensor([0.0, 1.0, 0.0]), CLASSES) == "cat"
    assert _title(torch.tensor(2), CLASSES) == "ship"
    images, labels = cifar_images
    mix = build_augment([{"mixup": {"alpha": 1.0}}], 3)
    grey = images.float().mean(1, keepdim=True).round().byte()
    path = save_augmentation_grid(grey, labels, CLASSES, mix, tmp_path / "mix.png", copies=1)
    assert read_png(path).shape[:2] == (450, 300)


def test_bad_inputs_get_one_clear_message(tmp_path: Path, cifar_images) -> None:
    images, labels = cifar_images
    with pytest.raises(DcnnError, match="uint8 images"):
        save_augmentation_grid(images.float(), labels, CLASSES, None, tmp_path / "x.png")
    with pytest.raises(DcnnError, match="labels must index class_names"):
        save_augmentation_grid(images, labels, CLASSES[:2], None, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
