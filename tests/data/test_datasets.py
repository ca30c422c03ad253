"""Datasets by name or path: the registry, folders and CSV lists, held-out validation, the test split."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image

from dcnn.data import mnist
from dcnn.data.datasets import (
    DATASETS,
    TensorImages,
    hold_out,
    labels_of,
    limit,
    load_dataset,
    load_test_split,
)
from dcnn.data.folder import ImageFiles
from dcnn.errors import DcnnError


def class_counts(split, num_classes: int) -> list[int]:
    return torch.bincount(torch.as_tensor(labels_of(split), dtype=torch.long), minlength=num_classes).tolist()

# Label counts of the canonical MNIST test file (LeCun et al.'s distribution).
MNIST_TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def save_image(path: Path, value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (5, 4), (value, 255 - value, value // 2)).save(path)
    return path


def make_tree(root: Path, layout: dict[str, dict[str, int]]) -> Path:
    """root/<split>/<class>/<i>.png for {split: {class: count}} ("" as split: a flat folder)."""
    for split, classes in layout.items():
        for name, count in classes.items():
            for i in range(count):
                save_image(root / split / name / f"{i}.png", 10 * i)
    return root


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv(mnist.CACHE_DIR_ENV, str(cache))
    return cache


# --- the registry -------------------------------------------------------------------------------


def test_every_registered_name_is_listed_with_a_description() -> None:
    assert set(DATASETS) == {"mnist", "fashion_mnist", "kmnist", "mnist_sample", "cifar10", "cifar100"}
    for name, entry in DATASETS.items():
        assert entry.name == name and name in DATASETS
        assert len(entry.description) > 10
    assert DATASETS["mnist_sample"].downloads is False
    assert "imagenet" not in DATASETS


def test_the_embedded_sample_loads_by_name_with_both_splits() -> None:
    splits = load_dataset("mnist_sample")
    assert splits.class_names == [str(d) for d in range(10)]
    assert (len(splits.train), len(splits.test)) == (10_000, 2_000)
    assert splits.train.images.shape == (10_000, 28, 28) and splits.train.images.dtype == torch.uint8
    assert splits.val is None and isinstance(splits.train, TensorImages)
    # class-balanced sample: 1,000 train and 200 test images of each digit
    assert class_counts(splits.train, 10) == [1000] * 10
    assert class_counts(splits.test, 10) == [200] * 10


def test_an_unknown_name_suggests_close_names() -> None:
    with pytest.raises(DcnnError, match=r"Did you mean 'mnist'"):
        load_dataset("mnits")
    with pytest.raises(DcnnError, match="cifar10"):
        load_dataset("cifar-10")


def test_a_file_that_is_not_a_csv_is_refused(tmp_path: Path) -> None:
    path = save_image(tmp_path / "one.png")
    with pytest.raises(DcnnError, match=r"not a \.csv list"):
        load_dataset(str(path))


def test_a_missing_path_is_refused_without_a_name_hint(tmp_path: Path) -> None:
    with pytest.raises(DcnnError, match="neither a known name") as err:
        load_dataset(str(tmp_path / "missing" / "mnist"))
    assert "Did you mean" not in str(err.value)


# --- folders and CSV lists ----------------------------------------------------------------------


def test_a_folder_with_train_and_val_gives_splits_sharing_class_indices(tmp_path: Path) -> None:
    # "ant" has no validation images: it keeps its index 0, so val's "cat" is still 1
    make_tree(tmp_path, {"train": {"ant": 2, "cat": 3, "dog": 1}, "val": {"cat": 2, "dog": 1}})
    (tmp_path / "val" / "ant").mkdir()
    splits = load_dataset(str(tmp_path))
    assert isinstance(splits.train, ImageFiles) and splits.test is None
    assert splits.class_names == ["ant", "cat", "dog"]
    assert splits.train.class_names == splits.val.class_names == ["ant", "cat", "dog"]
    assert splits.train.labels == [0, 0, 1, 1, 1, 2]
    assert splits.val.labels == [1, 1, 2]
    assert all(p.parent.parent.name == "val" for p in splits.val.paths)
    assert [p.parent.name for p in splits.val.paths] == [splits.class_names[i] for i in splits.val.labels]
    assert [s.path for s in splits.skipped] == [tmp_path / "val" / "ant"]


def test_a_folder_with_train_val_and_test_gives_three_splits(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train": {"a": 2, "b": 2}, "val": {"a": 1, "b": 1}, "test": {"a": 1, "b": 3}})
    splits = load_dataset(str(tmp_path))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (4, 2, 4)
    assert splits.test.labels == [0, 1, 1, 1]


def test_a_flat_folder_gives_a_train_split_only(tmp_path: Path) -> None:
    make_tree(tmp_path, {"": {"b": 2, "a": 3}})
    splits = load_dataset(str(tmp_path))
    assert splits.test is None and splits.val is None
    assert splits.class_names == ["a", "b"]
    assert splits.train.labels == [0, 0, 0, 1, 1]


def test_a_csv_list_gives_its_rows_as_a_train_split(tmp_path: Path) -> None:
    for name in ("x.png", "y.png", "z.png"):
        save_image(tmp_path / "img" / name)
    csv = tmp_path / "list.csv"
    csv.write_text("path,label\nimg/x.png,10\nimg/y.png,9\n\nimg/z.png,10\n")
    splits = load_dataset(str(csv))
    assert splits.test is None and splits.val is None
    assert splits.class_names == ["9", "10"]  # integers sort by value
    assert splits.train.paths == [tmp_path / "img" / n for n in ("x.png", "y.png", "z.png")]
    assert splits.train.labels == [1, 0, 1]


# --- held-out validation ------------------------------------------------------------------------


def counted(labels: list[int]) -> TensorImages:
    """A split whose 'image' i is the number i, with `labels`."""
    return TensorImages(torch.arange(len(labels)), torch.tensor(labels))


def test_hold_out_takes_the_fraction_of_every_class() -> None:
    labels = [0] * 30 + [1] * 10 + [2] * 20
    split = counted([labels[i] for i in torch.randperm(60, generator=torch.Generator().manual_seed(1))])
    train, val = hold_out(split, 0.2, seed=7)
    assert class_counts(val, 3) == [6, 2, 4]
    assert class_counts(train, 3) == [24, 8, 16]
    # a partition of the examples, each keeping its label
    kept, held = train.images.tolist(), val.images.tolist()
    assert sorted(kept + held) == list(range(60))
    assert torch.equal(split.labels[train.images], train.labels)
    assert torch.equal(split.labels[val.images], val.labels)


def test_hold_out_is_seeded() -> None:
    split = counted([i % 4 for i in range(80)])
    _, val = hold_out(split, 0.25, seed=3)
    _, again = hold_out(split, 0.25, seed=3)
    _, other = hold_out(split, 0.25, seed=4)
    assert torch.equal(val.images, again.images)
    assert not torch.equal(val.images, other.images)
    assert class_counts(other, 4) == class_counts(val, 4) == [5, 5, 5, 5]


def test_hold_out_of_image_files_keeps_paths_and_class_names(tmp_path: Path) -> None:
    files = ImageFiles([tmp_path / f"{i}.png" for i in range(10)], [0] * 6 + [1] * 4, ["a", "b"])
    train, val = hold_out(files, 0.5, seed=0)
    assert sorted(train.paths + val.paths) == sorted(files.paths)
    assert val.class_names == ["a", "b"] and val.class_counts() == {"a": 3, "b": 2}


def test_hold_out_of_nothing_keeps_the_split() -> None:
    split = counted([0, 1, 1])
    train, val = hold_out(split, 0.0, seed=0)
    assert train is split and val is None


def test_hold_out_refuses_a_fraction_that_leaves_no_validation_images() -> None:
    with pytest.raises(DcnnError, match="leaves no training or no validation"):
        hold_out(counted([0, 1, 2]), 0.5, seed=0)  # one image per class: all stay in train
    with pytest.raises(DcnnError, match="val_fraction"):
        hold_out(counted([0, 0, 1, 1]), 1.0, seed=0)


# --- the test split -----------------------------------------------------------------------------


def test_load_test_split_of_a_named_dataset_reads_no_training_files(
    tmp_path: Path, private_cache: Path, mnist_dir: Path
) -> None:
    data = tmp_path / "data"
    (data / "mnist").mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(mnist_dir / name, data / "mnist" / name)
    split, class_names, skipped, which = load_test_split("mnist", str(data), download=False)
    assert class_names == [str(d) for d in range(10)] and skipped == [] and which == "test"
    assert split.images.shape == (10_000, 28, 28)
    assert class_counts(split, 10) == MNIST_TEST_LABEL_COUNTS
    # the whole dataset needs the training files, which are not there
    with pytest.raises(DcnnError, match="train files not found"):
        load_dataset("mnist", str(data), download=False)


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ({"train": {"a": 1, "b": 1}, "val": {"a": 1, "b": 2}, "test": {"a": 2, "b": 1}}, "test"),
        ({"train": {"a": 1, "b": 1}, "val": {"a": 1, "b": 2}}, "val"),
        ({"": {"a": 2, "b": 3}}, ""),
    ],
)
def test_load_test_split_of_a_folder_picks_test_else_val_else_all(
    tmp_path: Path, layout: dict[str, dict[str, int]], expected: str
) -> None:
    make_tree(tmp_path, layout)
    split, class_names, skipped, which = load_test_split(str(tmp_path))
    assert class_names == ["a", "b"] and skipped == [] and which == (expected or "all")
    assert sorted(split.paths) == sorted((tmp_path / expected).glob("*/*.png"))
    assert Counter(split.labels) == Counter({0: layout[expected]["a"], 1: layout[expected]["b"]})


def test_load_test_split_of_a_flat_folder_with_held_out_gives_the_runs_validation_images(tmp_path: Path) -> None:
    make_tree(tmp_path, {"": {"a": 6, "b": 4}})
    whole = load_dataset(str(tmp_path)).train
    split, _, _, which = load_test_split(str(tmp_path), held_out=(0.5, 3))
    assert which == "val" and sorted(split.paths) == sorted(hold_out(whole, 0.5, 3)[1].paths)
    assert Counter(split.labels) == Counter({0: 3, 1: 2})
    other_seed, _, _, _ = load_test_split(str(tmp_path), held_out=(0.5, 4))
    assert sorted(other_seed.paths) != sorted(split.paths)


# --- small helpers ------------------------------------------------------------------------------


def test_limit_keeps_a_seeded_stratified_subset_in_stored_order() -> None:
    split = counted([0] * 6 + [1] * 12 + [2] * 18)  # class by class, as an image folder is stored
    kept = limit(split, 12, seed=4)
    assert kept.labels.tolist() == [0] * 2 + [1] * 4 + [2] * 6
    assert kept.images.tolist() == sorted(kept.images.tolist())  # a subset of the rows, in their order
    assert split.labels[kept.images.long()].tolist() == kept.labels.tolist()  # each image keeps its label
    assert limit(split, 12, seed=4).images.tolist() == kept.images.tolist()
    assert limit(split, 12, seed=5).images.tolist() != kept.images.tolist()
    assert limit(split, 0, seed=4) is split
    files = ImageFiles(["a.png", "b.png", "c.png", "d.png"], [0, 0, 1, 1], ["x", "y"])
    assert limit(files, 2, seed=0).labels == [0, 1]


def test_class_counts_counts_every_class_including_empty_ones() -> None:
    assert class_counts(counted([3, 0, 3, 3]), 5) == [1, 0, 0, 3, 0]
    files = ImageFiles(["a.png", "b.png", "c.png"], [2, 0, 2], ["x", "y", "z"])
    assert class_counts(files, 3) == [1, 0, 2]
