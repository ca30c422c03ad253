"""MNIST loading: the canonical files, checksums, the verification cache, locating data, the sample."""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import os
import struct
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from dcnn.data import mnist
from dcnn.data.mnist import (
    FASHION_MNIST,
    KMNIST,
    KMNIST_CLASSES,
    MNIST,
    IdxDataset,
    IdxFile,
    data_root,
    find_fashion_mnist,
    find_kmnist,
    find_mnist,
    load_fashion_mnist,
    load_kmnist,
    load_mnist,
    load_mnist_sample,
    verify_idx_bytes,
)
from dcnn.errors import DcnnError
from tests.data.http_server import Mirror, closed_port_url

# Label counts of the canonical files (LeCun et al.'s distribution; e.g. 5,923 zeros in train).
TRAIN_LABEL_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
TEST_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private verification cache for this module (the user's cache is never touched)."""
    with pytest.MonkeyPatch.context() as patch:
        cache = tmp_path_factory.mktemp("cache")
        patch.setenv(mnist.CACHE_DIR_ENV, str(cache))
        yield cache


@pytest.fixture(autouse=True)
def no_data_dir_from_environment(module_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(mnist.DATA_DIR_ENV, raising=False)


@pytest.fixture(scope="module")
def mnist_arrays(mnist_dir: Path, module_cache: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {split: load_mnist(split, mnist_dir.parent, download=False) for split in ("train", "test")}


def raw_copy(mnist_dir: Path, root: Path, all_files: bool = False) -> Path:
    """`root`/mnist holding uncompressed copies of the test files (and links to the train files)."""
    target = root / "mnist"
    target.mkdir(parents=True)
    for name in TEST_FILES:
        (target / name).write_bytes(gzip.decompress((mnist_dir / f"{name}.gz").read_bytes()))
    for spec in MNIST.splits["train"] if all_files else ():
        (target / spec.gz_name).symlink_to(mnist_dir / spec.gz_name)
    return target


@pytest.mark.parametrize(
    ("split", "count", "label_counts"),
    [("train", 60_000, TRAIN_LABEL_COUNTS), ("test", 10_000, TEST_LABEL_COUNTS)],
)
def test_canonical_files(mnist_arrays: dict, split: str, count: int, label_counts: list[int]) -> None:
    images, labels = mnist_arrays[split]
    assert images.shape == (count, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (count,) and labels.dtype == torch.int64
    assert torch.bincount(labels, minlength=10).tolist() == label_counts
    assert images.min() == 0 and images.max() == 255


def test_find_mnist(mnist_dir: Path, tmp_path: Path) -> None:
    assert find_mnist(mnist_dir.parent) == mnist_dir
    assert find_mnist(tmp_path) is None
    raw_copy(mnist_dir, tmp_path)  # two of the four files
    assert find_mnist(tmp_path) is None


def test_uncompressed_files_load_the_same(mnist_dir: Path, tmp_path: Path, mnist_arrays: dict) -> None:
    raw_copy(mnist_dir, tmp_path)
    images, labels = load_mnist("test", tmp_path, download=False)
    assert torch.equal(images, mnist_arrays["test"][0]) and torch.equal(labels, mnist_arrays["test"][1])


def test_checksum_mismatch_names_file_md5s_and_fix(mnist_dir: Path, tmp_path: Path) -> None:
    folder = raw_copy(mnist_dir, tmp_path, all_files=True)
    assert find_mnist(tmp_path) == folder
    labels = folder / "t10k-labels-idx1-ubyte"
    data = bytearray(labels.read_bytes())
    data[8] = (data[8] + 1) % 10  # the first label, still a valid IDX file
    labels.write_bytes(bytes(data))
    with pytest.raises(DcnnError) as err:
        load_mnist("test", tmp_path, download=False)
    message = str(err.value)
    assert str(labels) in message and "checksum mismatch" in message
    assert "27ae3e4e09519cfbb04c329615203637" in message  # expected: the canonical MD5
    assert hashlib.md5(bytes(data)).hexdigest() in message  # found
    assert "Delete it to download it again" in message
    with pytest.raises(DcnnError, match="checksum mismatch"):
        find_mnist(tmp_path)  # present but wrong is an error, not "absent"


def test_truncated_gzip_names_the_file(mnist_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mnist"
    folder.mkdir()
    for spec in MNIST.splits["test"]:
        (folder / spec.gz_name).write_bytes((mnist_dir / spec.gz_name).read_bytes()[:1000])
    with pytest.raises(DcnnError, match=r"t10k-images-idx3-ubyte.gz: corrupt gzip data .* Delete it"):
        load_mnist("test", tmp_path, download=False)


def test_verified_once_then_cached_until_the_file_changes(
    mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = raw_copy(mnist_dir, tmp_path)
    first = load_mnist("test", tmp_path, download=False)

    def no_verification(*args: object) -> bytes:
        raise AssertionError("verified again")

    with monkeypatch.context() as patch:
        patch.setattr(mnist, "verify_idx_bytes", no_verification)
        second = load_mnist("test", tmp_path, download=False)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))

    labels = folder / "t10k-labels-idx1-ubyte"
    data = bytearray(labels.read_bytes())
    data[-1] ^= 1
    labels.write_bytes(bytes(data))  # same size; the modification time moves on
    stat = labels.stat()
    os.utime(labels, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    with pytest.raises(DcnnError, match="checksum mismatch"):
        load_mnist("test", tmp_path, download=False)


def test_missing_files_without_download_say_which_files_go_where(tmp_path: Path) -> None:
    with pytest.raises(DcnnError) as err:
        load_mnist("train", tmp_path, download=False)
    message = str(err.value)
    assert f"{tmp_path / 'mnist'}{os.sep}" in message
    for spec in MNIST.files:
        assert spec.gz_name in message
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/" in message and "DCNN_DATA_DIR" in message
    assert not (tmp_path / "mnist").exists()  # nothing created


def test_data_root_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(mnist.CACHE_DIR_ENV, str(tmp_path / "cache"))
    assert data_root() == tmp_path / "cache"
    monkeypatch.setenv(mnist.DATA_DIR_ENV, str(tmp_path / "env"))
    assert data_root() == tmp_path / "env"
    assert data_root(tmp_path / "arg") == tmp_path / "arg"


def test_data_dir_from_environment(mnist_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(mnist.DATA_DIR_ENV, str(mnist_dir.parent))
    assert find_mnist() == mnist_dir


def test_unknown_split() -> None:
    with pytest.raises(DcnnError, match=r"unknown MNIST split 'tset'.*Did you mean 'test'"):
        load_mnist("tset", download=False)
    with pytest.raises(DcnnError, match="unknown MNIST split"):
        load_mnist_sample("validation")


def test_sample_is_a_balanced_subset_of_real_mnist(mnist_arrays: dict) -> None:
    resource = importlib.resources.files("dcnn.data").joinpath("sample", mnist.SAMPLE_FILE)
    with resource.open("rb") as handle, np.load(handle) as sample:
        indices = {split: torch.from_numpy(sample[f"{split}_indices"]).long() for split in mnist_arrays}
    for split, per_class in (("train", 1000), ("test", 200)):
        images, labels = load_mnist_sample(split)
        assert images.dtype == torch.uint8 and labels.dtype == torch.int64
        assert torch.bincount(labels, minlength=10).tolist() == [per_class] * 10
        assert len(indices[split].unique()) == len(labels)
        full_images, full_labels = mnist_arrays[split]
        assert torch.equal(images, full_images[indices[split]])  # byte-equal at the recorded indices
        assert torch.equal(labels, full_labels[indices[split]])


def test_fashion_mnist_checks_published_gzip_md5(tmp_path: Path) -> None:
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    (folder / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x01\x03")
    (folder / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00\x00\x00\x01" * 3 + b"\x07")
    assert find_fashion_mnist(tmp_path) is None
    with pytest.raises(DcnnError, match="an uncompressed Fashion-MNIST file cannot be verified"):
        load_fashion_mnist("test", tmp_path, download=False)
    with pytest.raises(DcnnError, match="Fashion-MNIST test files not found"):
        load_fashion_mnist("test", tmp_path / "elsewhere", download=False)

    idx = b"\x00\x00\x08\x01\x00\x00\x00\x02\x04\x09"
    published = gzip.compress(idx, mtime=0)
    spec = IdxFile("labels", 0x801, gzip_md5=hashlib.md5(published).hexdigest())
    assert verify_idx_bytes(published, spec, FASHION_MNIST) == idx
    rewrapped = gzip.compress(idx, mtime=1)
    mismatch = rf"^labels.gz: checksum mismatch: .*expected {spec.gzip_md5} \(the published .* labels.gz\)"
    with pytest.raises(DcnnError, match=mismatch):
        verify_idx_bytes(rewrapped, spec, FASHION_MNIST, source="labels.gz")


def test_gzip_copies_verify_by_content(mnist_dir: Path, tmp_path: Path) -> None:
    """A different gzip wrapper of the same bytes passes: MNIST's MD5s are of the content."""
    target = tmp_path / "mnist"
    target.mkdir()
    for name in TEST_FILES:
        content = gzip.decompress((mnist_dir / f"{name}.gz").read_bytes())
        (target / f"{name}.gz").write_bytes(gzip.compress(content, compresslevel=1, mtime=123))
    assert load_mnist("test", tmp_path, download=False)[0].shape == (10_000, 28, 28)


# --- KMNIST, on hand-made IDX files ---------------------------------------------------------------


def kmnist_files(seed: int = 0) -> tuple[dict[str, bytes], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Published-style .gz IDX files (name → bytes) of a tiny KMNIST, and the arrays they hold."""
    rng = np.random.default_rng(seed)
    files, arrays = {}, {}
    for split, count in (("train", 5), ("test", 3)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=count, dtype=np.uint8)
        image_spec, label_spec = KMNIST.splits[split]
        header = struct.pack(">IIII", image_spec.magic, count, 28, 28)
        files[image_spec.gz_name] = gzip.compress(header + images.tobytes(), mtime=0)
        files[label_spec.gz_name] = gzip.compress(struct.pack(">II", label_spec.magic, count) + labels.tobytes())
        arrays[split] = (images, labels)
    return files, arrays


def with_md5s_of(files: dict[str, bytes]) -> IdxDataset:
    """KMNIST with the published MD5s replaced by those of `files`."""
    splits = {
        split: tuple(replace(spec, gzip_md5=hashlib.md5(files[spec.gz_name]).hexdigest()) for spec in pair)
        for split, pair in KMNIST.splits.items()
    }
    return replace(KMNIST, splits=splits)


def test_kmnist_publishes_gzip_md5s_and_classes() -> None:
    assert KMNIST.folder == "kmnist" and KMNIST.mirrors == ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",)
    assert {spec.gz_name: spec.gzip_md5 for spec in KMNIST.files} == {
        "train-images-idx3-ubyte.gz": "bdb82020997e1d708af4cf47b453dcf7",
        "train-labels-idx1-ubyte.gz": "e144d726b3acfaa3e44228e80efcd344",
        "t10k-images-idx3-ubyte.gz": "5c965bf0a639b31b8f53240b1b52f4d7",
        "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134",
    }
    assert all(spec.content_md5 is None for spec in KMNIST.files)
    assert KMNIST_CLASSES == ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")


def test_kmnist_download_and_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files, arrays = kmnist_files()
    monkeypatch.setattr(mnist, "KMNIST", with_md5s_of(files))
    mirror = Mirror(files, "good")
    try:
        for split in ("test", "train"):
            images, labels = load_kmnist(split, tmp_path, mirrors=[mirror.url])
            assert images.dtype == torch.uint8 and labels.dtype == torch.int64
            assert np.array_equal(images.numpy(), arrays[split][0])
            assert np.array_equal(labels.numpy(), arrays[split][1])
    finally:
        mirror.close()
    assert sorted(mirror.requests) == sorted(files)
    assert sorted(p.name for p in (tmp_path / "kmnist").iterdir()) == sorted(files)
    assert find_kmnist(tmp_path) == tmp_path / "kmnist"


def test_kmnist_refuses_files_that_are_not_the_published_ones(tmp_path: Path) -> None:
    files, _ = kmnist_files()
    folder = tmp_path / "kmnist"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    with pytest.raises(DcnnError) as err:
        load_kmnist("test", tmp_path, download=False)
    message = str(err.value)
    assert str(folder / "t10k-images-idx3-ubyte.gz") in message and "checksum mismatch" in message
    assert "5c965bf0a639b31b8f53240b1b52f4d7" in message and "Delete it to download it again" in message
    with pytest.raises(DcnnError, match="checksum mismatch"):
        find_kmnist(tmp_path)


def test_kmnist_offline_says_which_files_to_put_where(tmp_path: Path) -> None:
    offline = closed_port_url()
    with pytest.raises(DcnnError) as err:
        load_kmnist("train", tmp_path, mirrors=[offline])
    message = str(err.value)
    assert "KMNIST is not in" in message and offline in message
    assert f"in {tmp_path / 'kmnist'}{os.sep}" in message and "http://codh.rois.ac.jp/kmnist/dataset/kmnist/" in message
    for spec in KMNIST.files:
        assert spec.gz_name in message
    assert find_kmnist(tmp_path) is None
