"""Datasets by name or path: what the files hold, split into train, validation and test.

Named datasets are a name → loader table (:func:`register_dataset`): the IDX digit sets (MNIST,
Fashion-MNIST, KMNIST, the MNIST sample inside the package) and CIFAR-10/100, each decoded into
uint8 tensors. A path is an image set of the user's: a folder of class folders, with ``train/``
and ``val/`` or ``test/`` subfolders or without (then the validation split is held out), or a
CSV of ``path,label`` rows. Class names come from the folders (or the CSV) and travel with the run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dcnn.data.folder import (
    ImageFiles,
    Skipped,
    read_csv_list,
    scan_image_folder,
    stratified_indices,
    stratified_sample,
)
from dcnn.errors import DcnnError, did_you_mean


@dataclass
class TensorImages:
    """Decoded images in memory: uint8 (N, C, H, W) or (N, H, W), int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: list[int]) -> TensorImages:
        index = torch.as_tensor(indices, dtype=torch.long)
        return TensorImages(self.images[index], self.labels[index])

    @property
    def label_list(self) -> list[int]:
        return self.labels.tolist()


Split = TensorImages | ImageFiles


def labels_of(split: Split) -> list[int]:
    return split.label_list if isinstance(split, TensorImages) else list(split.labels)


@dataclass
class DatasetSplits:
    """A dataset's splits. `val` is set when the dataset brings its own (a ``val/`` folder); `test`
    is None when it has no test split (a flat folder of class folders)."""

    name: str
    class_names: list[str]
    train: Split
    test: Split | None
    val: Split | None = None
    skipped: list[Skipped] = field(default_factory=list)


@dataclass(frozen=True)
class DatasetEntry:
    """A named dataset: `load(split, data_dir, download)` gives one split ("train" or "test") and
    the class names."""

    name: str
    load: Callable[[str, str | None, bool], tuple[TensorImages, list[str]]]
    description: str
    downloads: bool  # whether data_dir and download apply


DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(name: str, description: str, downloads: bool = True) -> Callable:
    """Register a split loader ``(split, data_dir, download) -> (TensorImages, class names)``."""

    def decorate(fn: Callable) -> Callable:
        DATASETS[name] = DatasetEntry(name, fn, description, downloads)
        return fn

    return decorate


def _register_builtin() -> None:
    from dcnn.data import cifar, mnist

    idx_sets = (
        ("mnist", mnist.load_mnist, mnist.MNIST_CLASSES, "MNIST handwritten digits (LeCun et al. 1998), 28x28"),
        ("fashion_mnist", mnist.load_fashion_mnist, mnist.FASHION_MNIST_CLASSES,
         "Fashion-MNIST clothing (Xiao et al. 2017), 28x28"),
        ("kmnist", mnist.load_kmnist, mnist.KMNIST_CLASSES, "Kuzushiji-MNIST (Clanuwat et al. 2018), 28x28"),
    )
    for name, loader, classes, description in idx_sets:
        def load_idx(split: str, data_dir: str | None, download: bool, loader: Callable = loader,
                     classes: tuple[str, ...] = classes) -> tuple[TensorImages, list[str]]:
            return TensorImages(*loader(split, data_dir=data_dir, download=download)), list(classes)

        register_dataset(name, description + ", 60k/10k")(load_idx)

    @register_dataset("mnist_sample", "10k/2k real MNIST images shipped inside the package", downloads=False)
    def _sample(split: str, data_dir: str | None, download: bool) -> tuple[TensorImages, list[str]]:
        return TensorImages(*mnist.load_mnist_sample(split)), list(mnist.MNIST_CLASSES)

    for name, description in (("cifar10", "CIFAR-10 (Krizhevsky 2009), 50k/10k 32x32 colour, 10 classes"),
                              ("cifar100", "CIFAR-100 (Krizhevsky 2009), 50k/10k 32x32 colour, 100 classes")):
        def load_cifar(split: str, data_dir: str | None, download: bool,
                       name: str = name) -> tuple[TensorImages, list[str]]:
            images, labels, classes = cifar.load_cifar(name, split, data_dir=data_dir, download=download)
            return TensorImages(images, labels), list(classes)

        register_dataset(name, description)(load_cifar)


_register_builtin()


def load_dataset(name_or_path: str, data_dir: str | None = None, download: bool = True) -> DatasetSplits:
    """A registered dataset by name, or an image folder / CSV list by path."""
    if name_or_path in DATASETS:
        load = DATASETS[name_or_path].load
        (train, class_names), (test, _) = (load(split, data_dir, download) for split in ("train", "test"))
        return DatasetSplits(name_or_path, class_names, train, test)
    path = Path(name_or_path).expanduser()
    if not path.exists():
        looks_like_name = "/" not in name_or_path and "." not in name_or_path
        hint = did_you_mean(name_or_path, DATASETS) if looks_like_name else ""
        raise DcnnError(
            f"dataset {name_or_path!r} is neither a known name ({', '.join(DATASETS)}) nor an existing "
            f"folder or CSV file.{hint}"
        )
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise DcnnError(f"{path} is a file but not a .csv list of path,label rows; give a folder or a CSV.")
        files = read_csv_list(path)
        return DatasetSplits(str(path), files.class_names, files, None)
    splits, skipped = scan_image_folder(path)
    if "all" in splits:
        return DatasetSplits(str(path), splits["all"].class_names, splits["all"], None, skipped=skipped)
    return DatasetSplits(str(path), splits["train"].class_names, splits["train"], splits.get("test"),
                         splits.get("val"), skipped)


def load_test_split(name_or_path: str, data_dir: str | None = None, download: bool = True,
                    held_out: Sequence[float] | None = None) -> tuple[Split, list[str], list[Skipped], str]:
    """The split to evaluate a trained model on (reading no training files of a named dataset) and
    its name: a named dataset's test split ("test"); a folder's test/ ("test") or val/ ("val")
    folder; for a flat folder, the images a run trained on it held out for validation, `held_out`
    being that run's (fraction, seed) ("val"), or else all of it ("all": a folder of other images)."""
    if name_or_path in DATASETS:
        test, class_names = DATASETS[name_or_path].load("test", data_dir, download)
        return test, class_names, [], "test"
    splits = load_dataset(name_or_path)
    if splits.test is not None or splits.val is not None:
        return (splits.test, splits.class_names, splits.skipped, "test") if splits.test is not None \
            else (splits.val, splits.class_names, splits.skipped, "val")
    if held_out:
        fraction, seed = held_out
        return hold_out(splits.train, fraction, int(seed))[1], splits.class_names, splits.skipped, "val"
    return splits.train, splits.class_names, splits.skipped, "all"


def hold_out(split: Split, fraction: float, seed: int) -> tuple[Split, Split | None]:
    """(train, val): `fraction` of every class held out for validation, chosen by `seed`."""
    if fraction <= 0:
        return split, None
    train_idx, val_idx = stratified_indices(labels_of(split), fraction, seed)
    if not train_idx or not val_idx:
        raise DcnnError(f"holding out {fraction:.1%} of {len(split)} images leaves no training or no validation "
                        "images; change val_size / val_split.")
    return split.subset(train_idx), split.subset(val_idx)


def limit(split: Split, count: int, seed: int) -> Split:
    """`count` examples (0: all) with every class in proportion, drawn with `seed`
    (:func:`~dcnn.data.folder.stratified_sample`), in their stored order: the `train_limit` and
    `test_limit` of a run (image folders are stored class by class, so the first N could be one class)."""
    return split.subset(stratified_sample(labels_of(split), count, seed)) if count else split
