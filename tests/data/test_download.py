"""Downloading against real HTTP servers on 127.0.0.1 serving the canonical files (never the internet).

Servers: a good one, one serving a corrupted file, one dropping the connection mid-file, one
stalling mid-file, one answering 404, and a closed port (offline).
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from dcnn.data import mnist
from dcnn.data.download import DownloadError, download_file
from dcnn.data.mnist import MNIST, load_mnist
from dcnn.errors import DcnnError
from dcnn.fileio import atomic_output
from tests.data.http_server import Mirror
from tests.data.http_server import closed_port_url as closed_port

MirrorFactory = Callable[[str], Mirror]


@pytest.fixture(scope="module")
def served_files(mnist_dir: Path) -> dict[str, bytes]:
    """The canonical test-split files as published (gzipped), by name."""
    return {spec.gz_name: (mnist_dir / spec.gz_name).read_bytes() for spec in MNIST.splits["test"]}


@pytest.fixture(scope="module")
def corrupted_files(served_files: dict[str, bytes]) -> dict[str, bytes]:
    """The served files with the last content byte flipped: valid gzip, wrong checksum."""
    corrupted = {}
    for name, body in served_files.items():
        content = bytearray(gzip.decompress(body))
        content[-1] ^= 0xFF
        corrupted[name] = gzip.compress(bytes(content), compresslevel=1, mtime=0)
    return corrupted


@pytest.fixture
def mirror(served_files: dict[str, bytes], corrupted_files: dict[str, bytes]) -> Iterator[MirrorFactory]:
    started: list[Mirror] = []

    def start(behaviour: str) -> Mirror:
        started.append(Mirror(corrupted_files if behaviour == "corrupt" else served_files, behaviour))
        return started[-1]

    yield start
    for server in started:
        server.close()


@pytest.fixture
def closed_port_url() -> str:
    return closed_port()


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(mnist.CACHE_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(mnist.DATA_DIR_ENV, raising=False)
    monkeypatch.delenv(MNIST.mirrors_env, raising=False)
    for proxy in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)


def files_in(folder: Path) -> list[str]:
    """Every entry in `folder`, hidden temporary files included."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_good_mirror(tmp_path: Path, mirror: MirrorFactory, served_files: dict, mnist_dir: Path) -> None:
    good = mirror("good")
    images, labels = load_mnist("test", tmp_path / "data", mirrors=[good.url])
    folder = tmp_path / "data" / "mnist"
    assert files_in(folder) == sorted(served_files)  # no temporary file left behind
    for name, body in served_files.items():
        assert (folder / name).read_bytes() == body
    expected = load_mnist("test", mnist_dir.parent, download=False)
    assert torch.equal(images, expected[0]) and torch.equal(labels, expected[1])
    load_mnist("test", tmp_path / "data", mirrors=[good.url])
    assert len(good.requests) == 2  # present files are not downloaded again


def test_mirrors_from_environment(tmp_path: Path, mirror: MirrorFactory, monkeypatch) -> None:
    good = mirror("good")
    monkeypatch.setenv(MNIST.mirrors_env, f"{good.url}")
    assert load_mnist("test", tmp_path)[0].shape == (10_000, 28, 28)
    assert sorted(good.requests) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def test_corrupt_file_is_rejected_and_nothing_is_left(tmp_path: Path, mirror: MirrorFactory) -> None:
    corrupt = mirror("corrupt")
    with pytest.raises(DcnnError) as err:
        load_mnist("test", tmp_path, mirrors=[corrupt.url])
    message = str(err.value)
    assert "checksum mismatch" in message and corrupt.url in message
    assert "2646ac647ad5339dbf082846283269ea" in message  # the expected MD5 of t10k-images
    assert files_in(tmp_path / "mnist") == []


@pytest.mark.parametrize("bad", ["corrupt", "drop", "missing"])
def test_falls_back_to_the_next_mirror(tmp_path: Path, mirror: MirrorFactory, bad: str) -> None:
    first, second = mirror(bad), mirror("good")
    load_mnist("test", tmp_path, mirrors=[first.url, second.url])
    assert len(first.requests) == 2 and len(second.requests) == 2
    assert files_in(tmp_path / "mnist") == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def test_dropped_connection(tmp_path: Path, mirror: MirrorFactory, served_files: dict) -> None:
    drop = mirror("drop")
    with pytest.raises(DcnnError) as err:
        load_mnist("test", tmp_path, mirrors=[drop.url])
    size = len(served_files["t10k-images-idx3-ubyte.gz"])
    assert f"connection closed after {size // 2} of {size} bytes" in str(err.value)
    assert files_in(tmp_path / "mnist") == []


def test_stalled_connection_times_out(tmp_path: Path, mirror: MirrorFactory) -> None:
    stall = mirror("stall")
    destination = tmp_path / "t10k-labels-idx1-ubyte.gz"
    with pytest.raises(DownloadError) as err:
        download_file([stall.url + destination.name], destination, timeout=0.5, progress=False)
    [(url, reason)] = err.value.failures
    assert url == stall.url + destination.name and "connection lost after" in reason and "timed out" in reason
    assert files_in(tmp_path) == []


def test_offline_says_which_files_to_put_where(tmp_path: Path, closed_port_url: str) -> None:
    with pytest.raises(DcnnError) as err:
        load_mnist("train", tmp_path, mirrors=[closed_port_url])
    message = str(err.value)
    assert "downloading failed" in message and closed_port_url in message
    assert f"in {tmp_path / 'mnist'}" in message
    for spec in MNIST.files:
        assert spec.gz_name in message
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/" in message
    assert files_in(tmp_path / "mnist") == []


def test_download_file_without_check(tmp_path: Path, mirror: MirrorFactory, served_files: dict) -> None:
    good = mirror("good")
    destination = tmp_path / "sub" / "labels.gz"
    assert download_file([good.url + "t10k-labels-idx1-ubyte.gz"], destination, progress=False) == destination
    assert destination.read_bytes() == served_files["t10k-labels-idx1-ubyte.gz"]


def test_atomic_output_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    destination = tmp_path / "file"
    destination.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_output(destination) as handle:
        handle.write(b"new, half")
        raise RuntimeError("interrupted")
    assert files_in(tmp_path) == ["file"] and destination.read_bytes() == b"old"
    with atomic_output(destination) as handle:
        handle.write(b"new")
    assert files_in(tmp_path) == ["file"] and destination.read_bytes() == b"new"


def test_unwritable_destination(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"")  # a file where the directory should be
    with pytest.raises(DcnnError, match="cannot write"):
        download_file(["http://127.0.0.1:9/x"], blocker / "x.gz", progress=False)
