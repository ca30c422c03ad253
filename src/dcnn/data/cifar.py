"""CIFAR-10 and CIFAR-100: find, verify, download, safely extract and load the python archives.

The datasets (Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009) are
published at https://www.cs.toronto.edu/~kriz/cifar.html as ``cifar-10-python.tar.gz`` and
``cifar-100-python.tar.gz``: Python 2 pickles of dicts whose ``data`` is a (N, 3072) uint8 array,
each row an image as 1024 red, then 1024 green, then 1024 blue values, each channel row-major 32×32.

Where the files live: ``<root>/cifar10/`` (``<root>/cifar100/``), root as for MNIST
(:func:`dcnn.data.mnist.data_root`: the `data_dir` argument, ``$DCNN_DATA_DIR``, the user cache),
holding the extracted folder (``cifar-10-batches-py/``, ``cifar-100-python/``), the archive, or both.
A missing archive is downloaded from the mirrors (the `mirrors` argument, ``$DCNN_CIFAR_MIRRORS``,
else the authors' site), checked against its published MD5 and written atomically; a verified
archive is extracted into a temporary folder renamed into place, so a half-extracted folder is
never used. Every batch file is checked against its MD5 before it is read.

The batches are pickles: they are read by :class:`CifarUnpickler`, which builds only numpy arrays
and refuses any other global, so a tampered file cannot run code.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
import torch

from dcnn.data.download import DownloadError, download_file, md5_hex
from dcnn.data.mnist import DATA_DIR_ENV, data_root
from dcnn.errors import DcnnError, did_you_mean
from dcnn.fileio import fsync_directory

MIRRORS_ENV = "DCNN_CIFAR_MIRRORS"
MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)

IMAGE_SHAPE = (3, 32, 32)  # channels (R, G, B), rows, columns: the layout of each row of ``data``
_ROW_BYTES = 3 * 32 * 32
_MD5_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class CifarDataset:
    """One CIFAR archive: its files per split, its metadata file and the keys the pickles use."""

    title: str
    folder: str  # under the data root
    archive: str
    extracted: str  # the archive's top folder
    splits: dict[str, tuple[str, ...]]  # split → batch files, in order
    meta: str
    labels_key: bytes
    names_key: bytes
    num_classes: int

    @property
    def files(self) -> tuple[str, ...]:
        return (*(name for names in self.splits.values() for name in names), self.meta)


CIFAR10 = CifarDataset(
    title="CIFAR-10",
    folder="cifar10",
    archive="cifar-10-python.tar.gz",
    extracted="cifar-10-batches-py",
    splits={"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
    meta="batches.meta",
    labels_key=b"labels",
    names_key=b"label_names",
    num_classes=10,
)
CIFAR100 = CifarDataset(
    title="CIFAR-100",
    folder="cifar100",
    archive="cifar-100-python.tar.gz",
    extracted="cifar-100-python",
    splits={"train": ("train",), "test": ("test",)},
    meta="meta",
    labels_key=b"fine_labels",
    names_key=b"fine_label_names",
    num_classes=100,
)
DATASETS: dict[str, CifarDataset] = {"cifar10": CIFAR10, "cifar100": CIFAR100}

#: MD5 of each published archive (cifar.html) and of each file in it (as torchvision's CIFAR10 and
#: CIFAR100 classes list them), by path relative to the dataset's folder.
MD5: dict[str, str] = {
    "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
    "cifar-10-batches-py/data_batch_1": "c99cafc152244af753f735de768cd75f",
    "cifar-10-batches-py/data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "cifar-10-batches-py/data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "cifar-10-batches-py/data_batch_4": "634d18415352ddfa80567beed471001a",
    "cifar-10-batches-py/data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "cifar-10-batches-py/test_batch": "40351d587109b95175f43aff81a1287e",
    "cifar-10-batches-py/batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    "cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85",
    "cifar-100-python/train": "16019d7e3df5f24257cddd939b257f8d",
    "cifar-100-python/test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "cifar-100-python/meta": "7973b15100ade9c7d40fb424638fde48",
}


# --- reading the pickles safely -------------------------------------------------------------------

# The globals a canonical batch refers to: numpy's array reconstruction, under the module name the
# files were written with (numpy.core, NumPy 1) and its NumPy 2 name. Taken from an array's own
# __reduce__ so that no deprecated numpy.core import is needed.
_RECONSTRUCT = np.zeros(0).__reduce__()[0]
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class CifarUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays and plain containers only; any other global is refused.

    Use with ``encoding="bytes"``: the files were written by Python 2, whose ``str`` becomes bytes.
    """

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise DcnnError(
                f"the file holds something other than CIFAR data (it refers to {module}.{name}, "
                "which a CIFAR batch never does); it was not loaded"
            )
        return allowed


def _unpickle(data: bytes, path: Path, dataset: CifarDataset) -> dict[bytes, Any]:
    """The dict pickled in `data` (read from `path`), built by :class:`CifarUnpickler`."""
    fix = f"Delete it and put the canonical {dataset.archive} in {path.parent.parent}{os.sep}."
    try:
        content = CifarUnpickler(io.BytesIO(data), encoding="bytes").load()
    except DcnnError as err:
        raise DcnnError(f"{path}: {err}. {fix}") from None
    except Exception as err:  # a malformed pickle raises any of a dozen types (EOFError, ValueError, ...)
        raise DcnnError(f"{path}: not a readable CIFAR pickle ({type(err).__name__}: {err}). {fix}") from None
    if not isinstance(content, dict):
        raise DcnnError(f"{path}: holds a {type(content).__name__}, not a CIFAR dict. {fix}")
    return content


def _batch_arrays(content: dict[bytes, Any], path: Path, dataset: CifarDataset) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 3, 32, 32), labels int64 (N,)) of one unpickled batch, shape-checked."""

    def bad(problem: str) -> DcnnError:
        return DcnnError(f"{path}: {problem}, not a {dataset.title} batch. Delete it to get the canonical file.")

    data = content.get(b"data")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _ROW_BYTES:
        described = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise bad(f"'data' is {described}, expected uint8 (N, {_ROW_BYTES})")
    try:
        labels = np.asarray(content.get(dataset.labels_key))
    except (TypeError, ValueError):
        labels = np.asarray(None)
    key = dataset.labels_key.decode()
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(data):
        raise bad(f"'{key}' is not a list of {len(data)} integers (one per image)")
    if len(labels) and (labels.min() < 0 or labels.max() >= dataset.num_classes):
        raise bad(f"'{key}' ranges over {labels.min()}..{labels.max()}, expected 0..{dataset.num_classes - 1}")
    return data.reshape(-1, *IMAGE_SHAPE), labels.astype(np.int64)


def _class_names(content: dict[bytes, Any], path: Path, dataset: CifarDataset) -> list[str]:
    names = content.get(dataset.names_key)
    if (
        not isinstance(names, list)
        or len(names) != dataset.num_classes
        or not all(isinstance(name, bytes) for name in names)
    ):
        raise DcnnError(
            f"{path}: '{dataset.names_key.decode()}' is not a list of {dataset.num_classes} names, "
            f"not the {dataset.title} metadata. Delete it to get the canonical file."
        )
    return [name.decode("utf-8", errors="replace") for name in names]


# --- checksums ------------------------------------------------------------------------------------


def _file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)  # integrity against published checksums, not security
    with path.open("rb") as handle:
        while chunk := handle.read(_MD5_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _check_md5(actual: str, key: str, dataset: CifarDataset) -> None:
    """Raise DcnnError (the problem, no final period) when `actual` is not the MD5 of `key`."""
    expected = MD5[key]
    if actual != expected:
        raise DcnnError(
            f"checksum mismatch: the MD5 is {actual}, expected {expected} (the published {dataset.title} {key})"
        )


def _read_verified(path: Path, key: str, dataset: CifarDataset) -> bytes:
    data = path.read_bytes()
    try:
        _check_md5(md5_hex(data), key, dataset)
    except DcnnError as err:
        raise DcnnError(f"{path}: {err}. Delete it to download it again, or put the canonical file there.") from None
    return data


# --- safe extraction ------------------------------------------------------------------------------


def _member_path(member: tarfile.TarInfo, archive: Path, dataset: CifarDataset) -> PurePosixPath:
    """The member's path, checked safe: relative, no '..', under the archive's top folder, and a
    regular file or a folder (never a link or a device)."""
    path = PurePosixPath(member.name)
    if (
        path.is_absolute()
        or ".." in path.parts
        or not path.parts
        or path.parts[0] != dataset.extracted
        or not (member.isfile() or member.isdir())
    ):
        raise DcnnError(
            f"{archive}: unsafe or unexpected archive member {member.name!r} (only files and folders "
            f"under {dataset.extracted}/ are allowed); nothing was extracted. Delete it to download it again."
        )
    return path


def _extract(archive: Path, dataset: CifarDataset) -> Path:
    """Extract the verified `archive`'s data files beside it, all or nothing; the extracted folder.

    Files go into a temporary folder that is renamed into place once complete.
    """
    final = archive.parent / dataset.extracted
    try:
        temp = Path(tempfile.mkdtemp(dir=archive.parent, prefix=f".{dataset.extracted}.", suffix=".part"))
    except OSError as err:
        raise DcnnError(f"cannot extract {archive}: {err.strerror or err}. Make {archive.parent} writable.") from None
    try:
        wanted = {f"{dataset.extracted}/{name}" for name in dataset.files}
        with tarfile.open(archive, "r:gz") as tar:
            members = [(member, _member_path(member, archive, dataset)) for member in tar.getmembers()]
            for member, path in members:  # every member checked before anything is written
                if str(path) not in wanted or not member.isfile():
                    continue
                source = tar.extractfile(member)
                if source is None:
                    continue
                with source, (temp / path.name).open("wb") as target:
                    shutil.copyfileobj(source, target)
                    target.flush()
                    os.fsync(target.fileno())
        missing = sorted(name for name in dataset.files if not (temp / name).is_file())
        if missing:
            raise DcnnError(
                f"{archive}: the archive lacks {', '.join(missing)}; it is not the {dataset.title} archive. "
                "Delete it to download it again."
            )
        os.rename(temp, final)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        shutil.rmtree(temp, ignore_errors=True)
        if final.is_dir():
            raise DcnnError(
                f"cannot extract {archive}: {final} exists but is incomplete. Delete that folder and retry."
            ) from None
        raise DcnnError(f"{archive}: cannot extract it ({err}). Delete it to download it again.") from None
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    fsync_directory(archive.parent)
    return final


# --- finding, downloading, loading ----------------------------------------------------------------


def _dataset(name: str) -> CifarDataset:
    if name not in DATASETS:
        choices = ", ".join(repr(n) for n in DATASETS)
        raise DcnnError(f"unknown CIFAR dataset {name!r}; choose {choices}.{did_you_mean(name, DATASETS)}")
    return DATASETS[name]


def _mirrors(mirrors: Sequence[str] | None) -> tuple[str, ...]:
    if mirrors is not None:
        return tuple(mirrors)
    from_env = os.environ.get(MIRRORS_ENV, "").replace(",", " ").split()
    return tuple(from_env) or MIRRORS


def _where_to_get(dataset: CifarDataset, folder: Path) -> str:
    return (
        f"Put {dataset.archive} (or its extracted {dataset.extracted}{os.sep} folder) in {folder}{os.sep} "
        f"(from {MIRRORS[0]}{dataset.archive}), or point --data-dir or ${DATA_DIR_ENV} at a folder whose "
        f"{dataset.folder}{os.sep} subfolder holds it."
    )


def _is_extracted(folder: Path, dataset: CifarDataset) -> bool:
    return all((folder / dataset.extracted / name).is_file() for name in dataset.files)


def _extracted_from_archive(archive: Path, dataset: CifarDataset) -> Path:
    """Verify `archive` against its published MD5, then extract it."""
    try:
        _check_md5(_file_md5(archive), dataset.archive, dataset)
    except DcnnError as err:
        raise DcnnError(f"{archive}: {err}. Delete it to download it again, or put the canonical file there.") from None
    return _extract(archive, dataset)


def _download(dataset: CifarDataset, folder: Path, mirrors: Sequence[str] | None) -> Path:
    urls = [base.rstrip("/") + "/" + dataset.archive for base in _mirrors(mirrors)]
    try:
        return download_file(
            urls, folder / dataset.archive, verify=lambda data: _check_md5(md5_hex(data), dataset.archive, dataset)
        )
    except DownloadError as err:
        raise DcnnError(
            f"{dataset.title} is not in {folder} and downloading failed: {err}. {_where_to_get(dataset, folder)}"
        ) from None


def _located(dataset: CifarDataset, data_dir: str | Path | None) -> Path | None:
    """The extracted folder (extracting a present archive first), or None when neither is there."""
    folder = data_root(data_dir) / dataset.folder
    if _is_extracted(folder, dataset):
        return folder / dataset.extracted
    archive = folder / dataset.archive
    return _extracted_from_archive(archive, dataset) if archive.is_file() else None


def find_cifar(name: Literal["cifar10", "cifar100"], data_dir: str | Path | None = None) -> Path | None:
    """The folder holding the verified, extracted `name` files, or None when they are not there.

    Looks in ``<root>/cifar10/`` (``cifar100/``) for the extracted folder, else for the archive,
    which is then verified and extracted. A file present but failing its checksum raises DcnnError.
    """
    dataset = _dataset(name)
    extracted = _located(dataset, data_dir)
    if extracted is not None:
        for file in dataset.files:
            _read_verified(extracted / file, f"{dataset.extracted}/{file}", dataset)
    return extracted


def load_cifar(
    name: Literal["cifar10", "cifar100"],
    split: Literal["train", "test"],
    data_dir: str | Path | None = None,
    download: bool = True,
    mirrors: Sequence[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """CIFAR `name` `split`: images uint8 (N, 3, 32, 32) RGB, labels int64 (N,), the class names.

    CIFAR-10: 50,000 train and 10,000 test images, names from ``batches.meta``'s ``label_names``;
    CIFAR-100: the same sizes, the 100 fine labels and ``meta``'s ``fine_label_names``. Files are
    found, verified and, if missing and `download` is set, fetched from `mirrors` (base URLs) as the
    module describes. Raises DcnnError naming the file to put where when the data is missing and
    cannot be downloaded, or when a file fails its checksum or is not CIFAR data.
    """
    dataset = _dataset(name)
    if split not in dataset.splits:
        choices = ", ".join(repr(s) for s in dataset.splits)
        hint = did_you_mean(split, dataset.splits)
        raise DcnnError(f"unknown {dataset.title} split {split!r}; choose {choices}.{hint}")
    extracted = _located(dataset, data_dir)
    if extracted is None:
        folder = data_root(data_dir) / dataset.folder
        if not download:
            raise DcnnError(
                f"{dataset.title} not found in {folder} and downloading is off. {_where_to_get(dataset, folder)}"
            )
        extracted = _extracted_from_archive(_download(dataset, folder, mirrors), dataset)

    def read(file: str) -> dict[bytes, Any]:
        path = extracted / file
        return _unpickle(_read_verified(path, f"{dataset.extracted}/{file}", dataset), path, dataset)

    names = _class_names(read(dataset.meta), extracted / dataset.meta, dataset)
    batches = [_batch_arrays(read(file), extracted / file, dataset) for file in dataset.splits[split]]
    images = np.concatenate([images for images, _ in batches]) if len(batches) > 1 else batches[0][0]
    labels = np.concatenate([labels for _, labels in batches])
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels), names
