"""CIFAR-10/100: download, verification, safe extraction and safe unpickling, on synthetic archives.

The archives are built here in the canonical format (a gzipped tar of Python 2 protocol-2 pickles of
dicts with b"data" rows of 1024 R, 1024 G, 1024 B values) and served from 127.0.0.1; the module's
MD5 table is patched with their checksums.
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
import struct
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from dcnn.data import cifar, mnist
from dcnn.data.cifar import CIFAR10, CIFAR100, DATASETS, CifarDataset, CifarUnpickler, find_cifar, load_cifar
from dcnn.data.download import md5_hex
from dcnn.errors import DcnnError
from tests.data.http_server import Mirror, closed_port_url

PUBLISHED_MD5 = dict(cifar.MD5)  # before the fixtures patch it
SIZES = {"cifar10": {"train": 4, "test": 6}, "cifar100": {"train": 8, "test": 5}}  # images per batch file


class Py2Pickler(pickle._Pickler):
    """Pickles bytes and str as Python 2 ``str`` (SHORT_BINSTRING/BINSTRING), as cPickle wrote CIFAR."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    def save_py2_text(self, obj: str) -> None:
        self.save_py2_str(obj.encode("latin-1"))

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_text


def py2_pickle(obj: object) -> bytes:
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    # NumPy 1 (which wrote the canonical files) named the module numpy.core.multiarray.
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


@dataclass
class Packed:
    """A synthetic archive and what it holds."""

    dataset: CifarDataset
    files: dict[str, bytes]  # name in the extracted folder → bytes
    archive: bytes
    images: dict[str, np.ndarray]  # split → (N, 3, 32, 32)
    labels: dict[str, np.ndarray]
    names: list[str]

    def md5s(self) -> dict[str, str]:
        table = {f"{self.dataset.extracted}/{name}": md5_hex(data) for name, data in self.files.items()}
        return {**table, self.dataset.archive: md5_hex(self.archive)}


def tar_gz(members: dict[str, bytes], folder: str | None = None) -> bytes:
    """A .tar.gz of `members` (path → bytes), with a folder entry for `folder` first."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        if folder is not None:
            entry = tarfile.TarInfo(folder)
            entry.type, entry.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(entry)
        for path, data in members.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def pack(name: str, seed: int = 0) -> Packed:
    dataset = DATASETS[name]
    rng = np.random.default_rng(seed)
    names = [f"class{i}" for i in range(dataset.num_classes)]
    files: dict[str, bytes] = {}
    images: dict[str, np.ndarray] = {}
    labels: dict[str, np.ndarray] = {}
    for split, batches in dataset.splits.items():
        split_images, split_labels = [], []
        for batch in batches:
            count = SIZES[name][split]
            batch_images = rng.integers(0, 256, size=(count, 3, 32, 32), dtype=np.uint8)
            batch_labels = rng.integers(0, dataset.num_classes, size=count)
            # Each row: the 1024 red values (row-major), then the green, then the blue (cifar.html).
            rows = np.stack([np.concatenate([image[0].ravel(), image[1].ravel(), image[2].ravel()])
                             for image in batch_images])
            content = {b"batch_label": f"{batch} of synthetic", b"data": rows,
                       dataset.labels_key: [int(label) for label in batch_labels],
                       b"filenames": [f"image_{i}.png" for i in range(count)]}
            if name == "cifar100":
                content[b"coarse_labels"] = [int(label) // 5 for label in batch_labels]
            files[batch] = py2_pickle(content)
            split_images.append(batch_images)
            split_labels.append(batch_labels)
        images[split], labels[split] = np.concatenate(split_images), np.concatenate(split_labels)
    meta = {dataset.names_key: names, b"num_cases_per_batch": SIZES[name]["train"], b"num_vis": 3072}
    files[dataset.meta] = py2_pickle(meta)
    members = {f"{dataset.extracted}/{file}": data for file, data in files.items()}
    members[f"{dataset.extracted}/readme.html"] = b"<html></html>"
    return Packed(dataset, files, tar_gz(members, dataset.extracted), images, labels, names)


@pytest.fixture(scope="module")
def packed() -> dict[str, Packed]:
    return {name: pack(name) for name in DATASETS}


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, packed: dict[str, Packed]) -> None:
    monkeypatch.setenv(mnist.CACHE_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(mnist.DATA_DIR_ENV, raising=False)
    monkeypatch.delenv(cifar.MIRRORS_ENV, raising=False)
    for proxy in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    table = {key: md5 for archive in packed.values() for key, md5 in archive.md5s().items()}
    monkeypatch.setattr(cifar, "MD5", table)


@pytest.fixture
def serve() -> Iterator:
    started: list[Mirror] = []

    def start(files: dict[str, bytes], behaviour: str = "good") -> Mirror:
        started.append(Mirror(files, behaviour))
        return started[-1]

    yield start
    for server in started:
        server.close()


def entries(folder: Path) -> list[str]:
    """Every entry in `folder`, hidden temporary files and folders included."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_published_checksums() -> None:
    """The MD5s published for the archives (cifar.html), one for every file the loader reads."""
    assert PUBLISHED_MD5["cifar-10-python.tar.gz"] == "c58f30108f718f92721af3b95e74349a"
    assert PUBLISHED_MD5["cifar-100-python.tar.gz"] == "eb9058c3a382ffc7106e4002c42a8d85"
    for dataset in (CIFAR10, CIFAR100):
        assert {f"{dataset.extracted}/{name}" for name in dataset.files} < set(PUBLISHED_MD5)
    assert cifar.MIRRORS == ("https://www.cs.toronto.edu/~kriz/",)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_download_verify_extract_load(name: str, tmp_path: Path, serve, packed: dict[str, Packed]) -> None:
    archive = packed[name]
    dataset = archive.dataset
    mirror = serve({dataset.archive: archive.archive})
    for split in ("train", "test"):
        images, labels, names = load_cifar(name, split, tmp_path, mirrors=[mirror.url])
        assert images.dtype == torch.uint8 and images.shape == (len(archive.labels[split]), 3, 32, 32)
        assert labels.dtype == torch.int64
        assert np.array_equal(images.numpy(), archive.images[split])
        assert np.array_equal(labels.numpy(), archive.labels[split])
        assert names == archive.names
    assert mirror.requests == [dataset.archive]  # downloaded once, then read from the extracted folder
    folder = tmp_path / dataset.folder
    assert entries(folder) == sorted([dataset.archive, dataset.extracted])  # no temporary leftovers
    assert (folder / dataset.archive).read_bytes() == archive.archive
    assert entries(folder / dataset.extracted) == sorted(dataset.files)  # data files only, no readme
    assert find_cifar(name, tmp_path) == folder / dataset.extracted
    assert find_cifar(name, tmp_path / "elsewhere") is None


def test_rows_are_red_green_blue_planes(tmp_path: Path, packed: dict[str, Packed]) -> None:
    """Pixel (c, y, x) of an image is byte c*1024 + y*32 + x of its row (cifar.html's layout)."""
    archive = packed["cifar10"]
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / CIFAR10.archive).write_bytes(archive.archive)
    images = load_cifar("cifar10", "test", tmp_path, download=False)[0]
    batch = pickle.loads(archive.files["test_batch"], encoding="bytes")  # our own synthetic file
    row = batch[b"data"][2]
    for c, y, x in [(0, 0, 0), (1, 5, 7), (2, 31, 30)]:
        assert images[2, c, y, x] == row[c * 1024 + y * 32 + x]


def test_extracted_folder_alone_is_used(tmp_path: Path, packed: dict[str, Packed]) -> None:
    archive = packed["cifar100"]
    folder = tmp_path / "cifar100" / CIFAR100.extracted
    folder.mkdir(parents=True)
    for file, data in archive.files.items():
        (folder / file).write_bytes(data)
    labels = load_cifar("cifar100", "test", tmp_path, mirrors=[closed_port_url()])[1]
    assert np.array_equal(labels.numpy(), archive.labels["test"])
    assert find_cifar("cifar100", tmp_path) == folder


def test_data_dir_from_environment(tmp_path: Path, packed: dict[str, Packed], monkeypatch) -> None:
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / CIFAR10.archive).write_bytes(packed["cifar10"].archive)
    monkeypatch.setenv(mnist.DATA_DIR_ENV, str(tmp_path))
    assert find_cifar("cifar10") == tmp_path / "cifar10" / CIFAR10.extracted


def test_corrupt_download_is_refused_and_leaves_nothing(tmp_path: Path, serve, packed: dict[str, Packed]) -> None:
    corrupted = bytearray(packed["cifar10"].archive)
    corrupted[len(corrupted) // 2] ^= 0xFF
    mirror = serve({CIFAR10.archive: bytes(corrupted)})
    with pytest.raises(DcnnError) as err:
        load_cifar("cifar10", "test", tmp_path, mirrors=[mirror.url])
    message = str(err.value)
    assert "checksum mismatch" in message and md5_hex(bytes(corrupted)) in message
    assert cifar.MD5[CIFAR10.archive] in message and mirror.url in message
    assert entries(tmp_path / "cifar10") == []


def test_dropped_connection_leaves_nothing_and_a_retry_succeeds(
    tmp_path: Path, serve, packed: dict[str, Packed]
) -> None:
    files = {CIFAR10.archive: packed["cifar10"].archive}
    drop = serve(files, "drop")
    with pytest.raises(DcnnError, match="connection closed after"):
        load_cifar("cifar10", "train", tmp_path, mirrors=[drop.url])
    assert entries(tmp_path / "cifar10") == []
    good = serve(files)
    labels = load_cifar("cifar10", "train", tmp_path, mirrors=[good.url])[1]
    assert np.array_equal(labels.numpy(), packed["cifar10"].labels["train"])


class RunsACommand:
    """Unpickling this calls os.system (the classic pickle exploit)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused_without_running_it(
    tmp_path: Path, serve, packed: dict[str, Packed], monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "exploited"
    evil = pickle.dumps({b"data": RunsACommand(marker), b"labels": []})
    files = {**packed["cifar10"].files, "test_batch": evil}
    archive = tar_gz({f"{CIFAR10.extracted}/{name}": data for name, data in files.items()})
    monkeypatch.setitem(cifar.MD5, CIFAR10.archive, md5_hex(archive))
    monkeypatch.setitem(cifar.MD5, f"{CIFAR10.extracted}/test_batch", md5_hex(evil))
    mirror = serve({CIFAR10.archive: archive})
    with pytest.raises(DcnnError) as err:
        load_cifar("cifar10", "test", tmp_path, mirrors=[mirror.url])
    message = str(err.value)
    assert "something other than CIFAR data" in message and ".system" in message and "test_batch" in message
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        b"cbuiltins\neval\n(S'1+1'\ntR.",
        b"cos\nsystem\n(S'true'\ntR.",
        b"cnumpy\nload\n(S'x'\ntR.",
        b"c__builtin__\nglobals\n)R.",
    ],
)
def test_unpickler_allows_only_numpy_arrays(payload: bytes) -> None:
    with pytest.raises(DcnnError, match="something other than CIFAR data"):
        CifarUnpickler(io.BytesIO(payload), encoding="bytes").load()
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)
    loaded = CifarUnpickler(io.BytesIO(py2_pickle({b"a": array})), encoding="bytes").load()
    assert np.array_equal(loaded[b"a"], array) and loaded[b"a"].dtype == np.uint8


@pytest.mark.parametrize(
    "member",
    ["cifar-10-batches-py/../../escaped", "/tmp/escaped", "cifar-10-batches-py/link", "elsewhere/file"],
)
def test_unsafe_tar_members_are_refused(
    member: str, tmp_path: Path, packed: dict[str, Packed], monkeypatch: pytest.MonkeyPatch
) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in packed["cifar10"].files.items():
            info = tarfile.TarInfo(f"{CIFAR10.extracted}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo(member)
        if member.endswith("link"):
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        else:
            info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    folder = tmp_path / "data" / "cifar10"
    folder.mkdir(parents=True)
    (folder / CIFAR10.archive).write_bytes(buffer.getvalue())
    monkeypatch.setitem(cifar.MD5, CIFAR10.archive, md5_hex(buffer.getvalue()))
    with pytest.raises(DcnnError, match=rf"unsafe or unexpected archive member '{member}'"):
        load_cifar("cifar10", "test", tmp_path / "data", download=False)
    assert entries(folder) == [CIFAR10.archive]  # nothing extracted, no temporary folder
    assert not (tmp_path / "escaped").exists()


def test_interrupted_extraction_leaves_nothing(
    tmp_path: Path, packed: dict[str, Packed], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "cifar10"
    folder.mkdir()
    (folder / CIFAR10.archive).write_bytes(packed["cifar10"].archive)
    copies = []

    def copy_then_fail(source, target) -> None:
        copies.append(source)
        if len(copies) == 3:
            raise OSError(28, "No space left on device")
        shutil.copyfileobj(source, target)

    with monkeypatch.context() as patch:
        patch.setattr(cifar.shutil, "copyfileobj", copy_then_fail)
        with pytest.raises(DcnnError, match="No space left on device"):
            load_cifar("cifar10", "test", tmp_path, download=False)
    assert entries(folder) == [CIFAR10.archive]
    assert load_cifar("cifar10", "test", tmp_path, download=False)[0].shape == (6, 3, 32, 32)


def test_local_file_checksum_mismatch_names_the_file(tmp_path: Path, packed: dict[str, Packed]) -> None:
    folder = tmp_path / "cifar10"
    folder.mkdir()
    archive = folder / CIFAR10.archive
    good = packed["cifar10"].archive
    archive.write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))
    with pytest.raises(DcnnError, match=rf"^{archive}: checksum mismatch.*Delete it to download it again"):
        find_cifar("cifar10", tmp_path)
    archive.write_bytes(packed["cifar10"].archive)
    batch = find_cifar("cifar10", tmp_path) / "data_batch_3"
    batch.write_bytes(batch.read_bytes() + b"\x00")
    with pytest.raises(DcnnError, match=rf"^{batch}: checksum mismatch"):
        load_cifar("cifar10", "train", tmp_path, download=False)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({b"labels": [0, 1, 2, 10]}, r"'labels' ranges over 0..10, expected 0..9"),
        ({b"labels": [0, 1]}, "'labels' is not a list of 4 integers"),
        ({b"data": np.zeros((4, 3072), np.float32)}, r"'data' is float32 \(4, 3072\), expected uint8"),
        ({b"data": np.zeros((4, 1024), np.uint8)}, r"'data' is uint8 \(4, 1024\)"),
    ],
)
def test_malformed_batches_are_refused(
    change: dict, problem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 3], **change}
    folder = tmp_path / "cifar10" / CIFAR10.extracted
    folder.mkdir(parents=True)
    files = {name: py2_pickle(content) for name in CIFAR10.splits["train"]}
    files[CIFAR10.meta] = py2_pickle({b"label_names": [b"x"] * 10})
    for name, data in files.items():
        (folder / name).write_bytes(data)
        monkeypatch.setitem(cifar.MD5, f"{CIFAR10.extracted}/{name}", md5_hex(data))
    (folder / "test_batch").write_bytes(b"")
    monkeypatch.setitem(cifar.MD5, f"{CIFAR10.extracted}/test_batch", md5_hex(b""))
    with pytest.raises(DcnnError, match=rf"data_batch_1: {problem}.*not a CIFAR-10 batch"):
        load_cifar("cifar10", "train", tmp_path, download=False)
    with pytest.raises(DcnnError, match="test_batch: not a readable CIFAR pickle"):
        load_cifar("cifar10", "test", tmp_path, download=False)


def test_offline_names_the_file_and_the_folder(tmp_path: Path) -> None:
    with pytest.raises(DcnnError) as err:
        load_cifar("cifar100", "train", tmp_path, download=False)
    message = str(err.value)
    assert "downloading is off" in message
    assert f"Put cifar-100-python.tar.gz (or its extracted cifar-100-python{os.sep} folder) in " \
           f"{tmp_path / 'cifar100'}{os.sep}" in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz" in message and "DCNN_DATA_DIR" in message
    offline = closed_port_url()
    with pytest.raises(DcnnError) as err:
        load_cifar("cifar10", "test", tmp_path, mirrors=[offline])
    message = str(err.value)
    assert "downloading failed" in message and offline in message
    assert "Put cifar-10-python.tar.gz" in message and f"in {tmp_path / 'cifar10'}{os.sep}" in message
    assert entries(tmp_path / "cifar10") == [] and not (tmp_path / "cifar100").exists()


def test_mirrors_from_environment(tmp_path: Path, serve, packed: dict[str, Packed], monkeypatch) -> None:
    mirror = serve({CIFAR10.archive: packed["cifar10"].archive})
    monkeypatch.setenv(cifar.MIRRORS_ENV, f"{closed_port_url()} {mirror.url}")
    assert load_cifar("cifar10", "test", tmp_path)[0].shape == (6, 3, 32, 32)
    assert mirror.requests == [CIFAR10.archive]


def test_unknown_name_and_split() -> None:
    with pytest.raises(DcnnError, match=r"unknown CIFAR dataset 'cifar1'.*Did you mean 'cifar10'"):
        load_cifar("cifar1", "train", download=False)  # type: ignore[arg-type]
    with pytest.raises(DcnnError, match=r"unknown CIFAR-100 split 'tset'.*Did you mean 'test'"):
        load_cifar("cifar100", "tset", download=False)  # type: ignore[arg-type]
