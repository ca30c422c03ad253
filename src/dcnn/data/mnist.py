"""MNIST, Fashion-MNIST and KMNIST: find, verify, download and load the canonical IDX files.

Where the files live: ``<root>/mnist/`` (``<root>/fashion-mnist/``, ``<root>/kmnist/``) under the first of

1. the `data_dir` argument (the CLI's ``--data-dir``),
2. ``$DCNN_DATA_DIR``,
3. the user cache directory (``$DCNN_CACHE_DIR``, else platformdirs' ``user_cache_dir("dcnn")``),

each file under its canonical name, gzipped (``.gz``) or not. Missing files are downloaded from the
dataset's mirrors (overridable with the `mirrors` argument or ``$DCNN_MNIST_MIRRORS``), verified,
and written atomically; with downloading off or every mirror failing, the error names the files
to put there and where to get them.

Every file is checked against its published MD5 once: the decoded array is then cached as ``.npy``
in the user cache directory, keyed by the file's path, size and modification time, so later loads
skip the gzip decompression and the checksum (full MNIST train loads in well under a second).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import platformdirs
import torch

from dcnn.data.download import DownloadError, download_file, md5_hex
from dcnn.data.idx import GZIP_MAGIC, gunzip_if_compressed, idx_magic, parse_idx, read_file_bytes
from dcnn.errors import DcnnError, did_you_mean
from dcnn.fileio import atomic_output

DATA_DIR_ENV = "DCNN_DATA_DIR"
CACHE_DIR_ENV = "DCNN_CACHE_DIR"

IMAGES_MAGIC = idx_magic(0x08, 3)  # 0x00000803: unsigned bytes, (count, rows, columns)
LABELS_MAGIC = idx_magic(0x08, 1)  # 0x00000801: unsigned bytes, (count,)

MNIST_CLASSES = tuple(str(digit) for digit in range(10))
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
# The ten hiragana of Kuzushiji-MNIST, romanized, in label order (github.com/rois-codh/kmnist, kmnist_classmap.csv).
KMNIST_CLASSES = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")


@dataclass(frozen=True)
class IdxFile:
    """One canonical file of an IDX dataset and its published checksum.

    `content_md5` is the MD5 of the uncompressed IDX bytes (checked whatever the gzip wrapper);
    `gzip_md5` the MD5 of the published ``.gz`` file, for datasets that publish only that.
    """

    name: str
    magic: int
    content_md5: str | None = None
    gzip_md5: str | None = None

    @property
    def gz_name(self) -> str:
        return f"{self.name}.gz"


@dataclass(frozen=True)
class IdxDataset:
    """An MNIST-format dataset: its files per split, its mirrors (base URLs of the .gz files)."""

    title: str
    folder: str
    splits: dict[str, tuple[IdxFile, IdxFile]]  # split → (images, labels)
    mirrors: tuple[str, ...]
    mirrors_env: str
    classes: tuple[str, ...]

    @property
    def files(self) -> tuple[IdxFile, ...]:
        return tuple(spec for pair in self.splits.values() for spec in pair)


# Uncompressed MD5s of the original distribution (LeCun, Cortes and Burges); mirrors as torchvision
# lists them (yann.lecun.com now often refuses downloads, hence the S3 copy first).
MNIST = IdxDataset(
    title="MNIST",
    folder="mnist",
    splits={
        "train": (
            IdxFile("train-images-idx3-ubyte", IMAGES_MAGIC, content_md5="6bbc9ace898e44ae57da46a324031adb"),
            IdxFile("train-labels-idx1-ubyte", LABELS_MAGIC, content_md5="a25bea736e30d166cdddb491f175f624"),
        ),
        "test": (
            IdxFile("t10k-images-idx3-ubyte", IMAGES_MAGIC, content_md5="2646ac647ad5339dbf082846283269ea"),
            IdxFile("t10k-labels-idx1-ubyte", LABELS_MAGIC, content_md5="27ae3e4e09519cfbb04c329615203637"),
        ),
    },
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    mirrors_env="DCNN_MNIST_MIRRORS",
    classes=MNIST_CLASSES,
)

# Xiao, Rasul and Vollgraf (2017), github.com/zalandoresearch/fashion-mnist: the README publishes the
# MD5s of the .gz files only.
FASHION_MNIST = IdxDataset(
    title="Fashion-MNIST",
    folder="fashion-mnist",
    splits={
        "train": (
            IdxFile("train-images-idx3-ubyte", IMAGES_MAGIC, gzip_md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            IdxFile("train-labels-idx1-ubyte", LABELS_MAGIC, gzip_md5="25c81989df183df01b3e8a0aad5dffbe"),
        ),
        "test": (
            IdxFile("t10k-images-idx3-ubyte", IMAGES_MAGIC, gzip_md5="bef4ecab320f06d8554ea6380940ec79"),
            IdxFile("t10k-labels-idx1-ubyte", LABELS_MAGIC, gzip_md5="bb300cfdad3c16e7a12a480ee83cd310"),
        ),
    },
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    mirrors_env="DCNN_FASHION_MNIST_MIRRORS",
    classes=FASHION_MNIST_CLASSES,
)

# Clanuwat et al. (2018), "Deep Learning for Classical Japanese Literature", github.com/rois-codh/kmnist:
# the MD5s of the published .gz files (as torchvision's KMNIST lists them); the IDX content is
# distributed only gzipped.
KMNIST = IdxDataset(
    title="KMNIST",
    folder="kmnist",
    splits={
        "train": (
            IdxFile("train-images-idx3-ubyte", IMAGES_MAGIC, gzip_md5="bdb82020997e1d708af4cf47b453dcf7"),
            IdxFile("train-labels-idx1-ubyte", LABELS_MAGIC, gzip_md5="e144d726b3acfaa3e44228e80efcd344"),
        ),
        "test": (
            IdxFile("t10k-images-idx3-ubyte", IMAGES_MAGIC, gzip_md5="5c965bf0a639b31b8f53240b1b52f4d7"),
            IdxFile("t10k-labels-idx1-ubyte", LABELS_MAGIC, gzip_md5="7320c461ea6c1c855c0b718fb2a4b134"),
        ),
    },
    mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
    mirrors_env="DCNN_KMNIST_MIRRORS",
    classes=KMNIST_CLASSES,
)

SAMPLE_FILE = "mnist_sample.npz"


# --- where the files are --------------------------------------------------------------------------


def cache_root() -> Path:
    """The user cache directory: ``$DCNN_CACHE_DIR``, else platformdirs' ``user_cache_dir("dcnn")``."""
    return Path(os.environ.get(CACHE_DIR_ENV) or platformdirs.user_cache_dir("dcnn")).expanduser()


def data_root(data_dir: str | Path | None = None) -> Path:
    """The data root: `data_dir` if given, else ``$DCNN_DATA_DIR``, else :func:`cache_root`."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    from_env = os.environ.get(DATA_DIR_ENV)
    return Path(from_env).expanduser() if from_env else cache_root()


def _locate(folder: Path, spec: IdxFile) -> Path | None:
    """The file holding `spec` in `folder` (gzipped first, then uncompressed), or None."""
    candidates = (folder / spec.gz_name, folder / spec.name)
    return next((path for path in candidates if path.is_file()), None)


def _mirrors(dataset: IdxDataset, mirrors: Sequence[str] | None) -> tuple[str, ...]:
    if mirrors is not None:
        return tuple(mirrors)
    from_env = os.environ.get(dataset.mirrors_env, "").replace(",", " ").split()
    return tuple(from_env) or dataset.mirrors


def _split_files(dataset: IdxDataset, split: str) -> tuple[IdxFile, IdxFile]:
    if split not in dataset.splits:
        choices = ", ".join(repr(s) for s in dataset.splits)
        hint = did_you_mean(split, dataset.splits)
        raise DcnnError(f"unknown {dataset.title} split {split!r}; choose {choices}.{hint}")
    return dataset.splits[split]


# --- verification, cached -------------------------------------------------------------------------


def _checked_content(data: bytes, spec: IdxFile, dataset: IdxDataset) -> bytes:
    """The uncompressed IDX bytes of `data` if it matches `spec`'s MD5, else DcnnError(the problem).

    Problems are stated without a final period: callers append the file's name or the mirror's URL.
    """
    if spec.content_md5 is not None:
        content = gunzip_if_compressed(data)
        actual = md5_hex(content)
        if actual != spec.content_md5:
            raise DcnnError(
                f"checksum mismatch: the MD5 of the uncompressed content is {actual}, "
                f"expected {spec.content_md5} (the canonical {dataset.title} {spec.name})"
            )
        return content
    if not data.startswith(GZIP_MAGIC):
        raise DcnnError(
            f"an uncompressed {dataset.title} file cannot be verified: only the MD5s of the published "
            ".gz files are known"
        )
    actual = md5_hex(data)
    if actual != spec.gzip_md5:
        raise DcnnError(
            f"checksum mismatch: the MD5 is {actual}, expected {spec.gzip_md5} "
            f"(the published {dataset.title} {spec.gz_name})"
        )
    return gunzip_if_compressed(data)


def verify_idx_bytes(
    data: bytes, spec: IdxFile, dataset: IdxDataset, source: str | Path | None = None
) -> bytes:
    """Check a file's bytes against `spec`'s published MD5; return the uncompressed IDX bytes.

    The MD5 of the uncompressed content is checked where it is known (gzip wrappers differ between
    copies of the same data), else the MD5 of the published .gz file. A mismatch raises DcnnError:
    with `source` (a local file) naming it and the fix; without (a download), the problem only.
    """
    try:
        return _checked_content(data, spec, dataset)
    except DcnnError as err:
        if source is None:
            raise
        raise DcnnError(
            f"{source}: {err}. Delete it to download it again, or put the canonical {spec.gz_name} "
            f"there (from {dataset.mirrors[0]})."
        ) from None


def _cache_entry(path: Path, spec: IdxFile) -> tuple[Path, Path]:
    """(array .npy, marker .json) caching the verified, decoded `path`."""
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    stem = cache_root() / "verified" / f"{spec.name}-{key}"
    return stem.with_suffix(".npy"), stem.with_suffix(".json")


def _marker(path: Path, spec: IdxFile) -> dict[str, object]:
    stat = path.stat()
    checksum = spec.content_md5 or spec.gzip_md5
    return {
        "source": str(path.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "md5": checksum,
    }


def _cached_array_path(path: Path, spec: IdxFile) -> Path | None:
    """The cached array of `path` if it was verified and the file has not changed since, else None."""
    array_path, marker_path = _cache_entry(path, spec)
    try:
        recorded = json.loads(marker_path.read_text())
    except (OSError, ValueError):
        return None
    return array_path if recorded == _marker(path, spec) and array_path.is_file() else None


def _write_cache(path: Path, spec: IdxFile, array: np.ndarray) -> None:
    """Cache the verified array; best effort: an unwritable cache only costs speed next time."""
    array_path, marker_path = _cache_entry(path, spec)
    try:
        with atomic_output(array_path) as handle:
            np.save(handle, array, allow_pickle=False)
        with atomic_output(marker_path) as handle:
            handle.write(json.dumps(_marker(path, spec)).encode())
    except (OSError, DcnnError):
        return


def _load_verified(path: Path, spec: IdxFile, dataset: IdxDataset) -> np.ndarray:
    """The array in `path`, checked against its MD5 (once; later calls read the cached array)."""
    cached = _cached_array_path(path, spec)
    if cached is not None:
        try:
            return np.load(cached, allow_pickle=False)
        except (OSError, ValueError):
            pass  # a damaged cache entry: verify the source again and rewrite it
    content = verify_idx_bytes(read_file_bytes(path), spec, dataset, source=path)
    array = parse_idx(content, source=path, magic=spec.magic)
    _write_cache(path, spec, array)
    return array


# --- finding, downloading, loading ----------------------------------------------------------------


def _where_to_get(dataset: IdxDataset, folder: Path, missing: Sequence[IdxFile]) -> str:
    names = ", ".join(spec.gz_name for spec in missing)
    form = "gzipped or uncompressed" if all(spec.content_md5 for spec in missing) else "as published"
    return (
        f"Put {names} ({form}) in {folder}{os.sep} (from {' or '.join(dataset.mirrors)}), or point "
        f"--data-dir or ${DATA_DIR_ENV} at a folder whose {dataset.folder}{os.sep} subfolder holds them."
    )


def _download_missing(
    dataset: IdxDataset, folder: Path, missing: Sequence[IdxFile], mirrors: Sequence[str] | None
) -> None:
    bases = _mirrors(dataset, mirrors)
    for spec in missing:
        urls = [base.rstrip("/") + "/" + spec.gz_name for base in bases]
        try:
            download_file(
                urls,
                folder / spec.gz_name,
                verify=lambda data, spec=spec: verify_idx_bytes(data, spec, dataset),
            )
        except DownloadError as err:
            raise DcnnError(
                f"{dataset.title} is not in {folder} and downloading failed: {err}. "
                + _where_to_get(dataset, folder, [s for s in dataset.files if _locate(folder, s) is None])
            ) from None


def _find(dataset: IdxDataset, data_dir: str | Path | None) -> Path | None:
    folder = data_root(data_dir) / dataset.folder
    located = [(_locate(folder, spec), spec) for spec in dataset.files]
    if any(path is None for path, _ in located):
        return None
    for path, spec in located:
        if _cached_array_path(path, spec) is None:
            _load_verified(path, spec, dataset)
    return folder


def _load(
    dataset: IdxDataset,
    split: str,
    data_dir: str | Path | None,
    download: bool,
    mirrors: Sequence[str] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    files = _split_files(dataset, split)
    folder = data_root(data_dir) / dataset.folder
    missing = [spec for spec in dataset.files if _locate(folder, spec) is None]
    if any(spec in missing for spec in files):
        if not download:
            raise DcnnError(
                f"{dataset.title} {split} files not found in {folder} and downloading is off. "
                + _where_to_get(dataset, folder, missing)
            )
        _download_missing(dataset, folder, [spec for spec in files if spec in missing], mirrors)
    images, labels = (_load_verified(_locate(folder, spec), spec, dataset) for spec in files)
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def find_mnist(data_dir: str | Path | None = None) -> Path | None:
    """The folder holding all four verified MNIST files, or None when any is missing.

    A file that is present but fails its checksum raises DcnnError (rather than being ignored).
    """
    return _find(MNIST, data_dir)


def find_fashion_mnist(data_dir: str | Path | None = None) -> Path | None:
    """The folder holding all four verified Fashion-MNIST files, or None; see :func:`find_mnist`."""
    return _find(FASHION_MNIST, data_dir)


def find_kmnist(data_dir: str | Path | None = None) -> Path | None:
    """The folder holding all four verified KMNIST files, or None; see :func:`find_mnist`."""
    return _find(KMNIST, data_dir)


def load_mnist(
    split: str,
    data_dir: str | Path | None = None,
    download: bool = True,
    *,
    mirrors: Sequence[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST `split` ("train": 60,000, "test": 10,000) as images uint8 (N, 28, 28), labels int64 (N,).

    Files are looked for in ``<root>/mnist/`` (root: `data_dir`, ``$DCNN_DATA_DIR`` or the user
    cache directory) and, when missing and `download` is set, fetched from `mirrors` (base URLs;
    default ``$DCNN_MNIST_MIRRORS`` or the canonical mirrors). Raises DcnnError naming the files to
    put where if they are missing and cannot be downloaded, or if a file fails its checksum.
    """
    return _load(MNIST, split, data_dir, download, mirrors)


def load_fashion_mnist(
    split: str,
    data_dir: str | Path | None = None,
    download: bool = True,
    *,
    mirrors: Sequence[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST `split`, from ``<root>/fashion-mnist/``; as :func:`load_mnist` otherwise.

    Only the published .gz files can be verified (their MD5s are the published ones).
    """
    return _load(FASHION_MNIST, split, data_dir, download, mirrors)


def load_kmnist(
    split: str,
    data_dir: str | Path | None = None,
    download: bool = True,
    *,
    mirrors: Sequence[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """KMNIST (Kuzushiji-MNIST) `split`, from ``<root>/kmnist/``; as :func:`load_mnist` otherwise.

    Class names (label order) are :data:`KMNIST_CLASSES`. Only the published .gz files can be
    verified (their MD5s are the published ones); mirrors default to ``$DCNN_KMNIST_MIRRORS``.
    """
    return _load(KMNIST, split, data_dir, download, mirrors)


# --- the embedded sample --------------------------------------------------------------------------


def load_mnist_sample(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The MNIST sample shipped with dcnn: images uint8 (N, 28, 28), labels int64 (N,).

    A class-balanced subset of real MNIST (10,000 train and 2,000 test images, drawn with a fixed
    seed by ``scripts/make_mnist_sample.py``; ``<split>_indices`` in the file records which), for
    demos and tests that must run without the full dataset.
    """
    _split_files(MNIST, split)
    resource = importlib.resources.files(__package__).joinpath("sample", SAMPLE_FILE)
    try:
        with resource.open("rb") as handle, np.load(handle, allow_pickle=False) as sample:
            images, labels = sample[f"{split}_images"], sample[f"{split}_labels"]
    except (OSError, KeyError, ValueError) as err:
        raise DcnnError(
            f"the embedded MNIST sample is missing or damaged ({err}); reinstall dcnn."
        ) from None
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
