"""Loaders: the resumable epoch order, in-memory batches and lazily decoded file batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dcnn.data.folder import ImageFiles, LazyImageDataset, decode_images, load_or_decode
from dcnn.data.loader import EpochOrder, FileBatches, TensorBatches


def labels_of(n: int, classes: int = 3) -> torch.Tensor:
    return torch.arange(n) % classes


# --- the epoch order ----------------------------------------------------------------------------


def test_an_epoch_order_is_a_permutation() -> None:
    order = EpochOrder(labels_of(100), seed=0)
    for epoch in range(3):
        assert torch.equal(order(epoch).sort().values, torch.arange(100))


def test_an_epoch_order_depends_on_seed_and_epoch_only() -> None:
    one, two = EpochOrder(labels_of(50), seed=5), EpochOrder(labels_of(50), seed=5)
    later = one(3)  # asked out of sequence, and twice
    assert torch.equal(two(0), one(0)) and torch.equal(two(3), later) and torch.equal(one(3), later)
    assert not torch.equal(one(0), one(1))
    assert not torch.equal(one(0), EpochOrder(labels_of(50), seed=6)(0))


def test_a_balanced_order_draws_every_class_about_equally_often() -> None:
    labels = torch.tensor([0] * 900 + [1] * 100)
    balanced = EpochOrder(labels, seed=1, balanced=True)
    draws = torch.cat([labels[balanced(epoch)] for epoch in range(20)])
    assert len(draws) == 20_000
    # each draw is class 1 with probability 1/2: standard deviation of the share sqrt(1/4 / 20000) = 0.0035
    assert abs(draws.float().mean().item() - 0.5) < 0.02
    assert torch.equal(balanced(4), EpochOrder(labels, seed=1, balanced=True)(4))
    plain = EpochOrder(labels, seed=1)
    assert labels[plain(0)].float().mean().item() == pytest.approx(0.1)  # a permutation keeps the 9:1


# --- in-memory batches --------------------------------------------------------------------------


def numbered(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose every pixel is their index (mod 256), and labels index % 3."""
    images = (torch.arange(n) % 256).to(torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return images, labels_of(n)


def test_tensor_batches_follow_the_epoch_order() -> None:
    images, labels = numbered(23)
    order = EpochOrder(labels, seed=2)
    batches = TensorBatches(images, labels, batch_size=5, order=order)
    assert len(batches) == 5 and batches.num_examples == 23
    got = list(batches.epoch(1))
    assert [len(y) for _, y in got] == [5, 5, 5, 5, 3]
    assert torch.equal(torch.cat([x for x, _ in got]), images[order(1)])
    assert torch.equal(torch.cat([y for _, y in got]), labels[order(1)])


def test_indexed_batches_give_each_example_its_position_in_the_split() -> None:
    images, labels = numbered(23)
    order = EpochOrder(labels, seed=2)
    for batches in (TensorBatches(images, labels, batch_size=5, order=order), TensorBatches(images, labels, 5)):
        for x, y, index in batches.indexed_epoch(1, 1):
            assert index.device.type == "cpu" and torch.equal(x, images[index]) and torch.equal(y, labels[index])


def test_tensor_batches_without_an_order_are_sequential() -> None:
    images, labels = numbered(7)
    got = list(TensorBatches(images, labels, batch_size=3))
    assert [y.tolist() for _, y in got] == [[0, 1, 2], [0, 1, 2], [0]]
    assert torch.equal(torch.cat([x for x, _ in got]), images)


@pytest.mark.parametrize("start_step", [0, 1, 3, 4, 5])
def test_tensor_batches_resume_exactly_where_a_full_pass_was(start_step: int) -> None:
    images, labels = numbered(22)
    batches = TensorBatches(images, labels, batch_size=5, order=EpochOrder(labels, seed=9))
    full = list(batches.epoch(2))
    resumed = list(batches.epoch(2, start_step))
    assert len(resumed) == len(full) - start_step
    for (x, y), (x_full, y_full) in zip(resumed, full[start_step:], strict=True):
        assert torch.equal(x, x_full) and torch.equal(y, y_full)


# --- file batches -------------------------------------------------------------------------------


def write_images(folder: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (6 + i % 3, 7, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def is_channels_last(x: torch.Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def test_images_are_kept_and_batched_channels_last_with_their_pixels(tmp_path: Path) -> None:
    rgb = np.zeros((4, 5, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10, 20, 30  # each channel its own value
    rgb[1, 2] = (200, 100, 50)
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rgb + i).save(paths[-1])
    files = ImageFiles(paths, [0, 1, 0], ["a", "b"])
    expected = torch.from_numpy(np.stack([rgb + i for i in range(3)])).permute(0, 3, 1, 2)
    for decoded in (decode_images(files, (4, 5), 3),
                    load_or_decode(files, (4, 5), 3, cache_dir=tmp_path / "cache"),
                    load_or_decode(files, (4, 5), 3, cache_dir=tmp_path / "cache")):  # the cached copy
        assert is_channels_last(decoded.images) and torch.equal(decoded.images, expected)
    order = EpochOrder(torch.tensor([0, 1, 0]), seed=1)
    for images in (expected, expected.contiguous()):  # an NCHW tensor is stored channels-last
        batches = TensorBatches(images, torch.tensor([0, 1, 0]), batch_size=2, order=order)
        assert is_channels_last(batches.images)
        for (x, _), index in zip(batches.epoch(0), order(0).split(2), strict=True):
            assert is_channels_last(x) and torch.equal(x, expected[index])
    lazy = FileBatches(LazyImageDataset(files, (4, 5), 3), batch_size=3, order=order, workers=0)
    (x, _), = lazy.epoch(0)
    assert is_channels_last(x) and torch.equal(x, expected[order(0)])


def truncate(path: Path) -> Path:
    """A file whose header reads but whose pixels do not decode."""
    path.write_bytes(path.read_bytes()[:60])
    return path


@pytest.mark.parametrize("workers", [0, 2])
def test_file_batches_yield_the_images_tensor_batches_yield(tmp_path: Path, workers: int) -> None:
    paths = write_images(tmp_path, 11)
    files = ImageFiles(paths, [i % 2 for i in range(11)], ["a", "b"])
    decoded = decode_images(files, (4, 4), 3)
    order = EpochOrder(decoded.labels, seed=4)
    lazy = FileBatches(LazyImageDataset(files, (4, 4), 3), batch_size=3, order=order, workers=workers)
    memory = TensorBatches(decoded.images, decoded.labels, batch_size=3, order=order)
    assert len(lazy) == len(memory) == 4 and lazy.num_examples == 11
    for start_step in (0, 2):
        got, expected = list(lazy.epoch(1, start_step)), list(memory.epoch(1, start_step))
        assert len(got) == len(expected) == 4 - start_step
        for (x, y), (x_mem, y_mem) in zip(got, expected, strict=True):
            assert x.dtype == torch.uint8 and torch.equal(x, x_mem) and torch.equal(y, y_mem)
    assert lazy.skipped == []


def test_a_file_that_fails_to_decode_is_skipped_once_and_steps_stay_exact(tmp_path: Path) -> None:
    paths = write_images(tmp_path, 5)
    truncate(paths[2])
    truncate(paths[3])
    files = ImageFiles(paths, [0, 1, 0, 1, 0], ["a", "b"])
    dataset = LazyImageDataset(files, (4, 4), 3)
    assert dataset.skipped == []  # the headers read: the failure comes with the pixels
    batches = FileBatches(dataset, batch_size=2, workers=0)
    for _ in range(2):
        got = list(batches.epoch(0))
        assert len(got) == len(batches) == 3
        (x0, y0), (x1, y1), (x2, y2) = got
        assert x0.shape == (2, 3, 4, 4) and y0.tolist() == [0, 1]
        assert x1.shape == (0, 3, 4, 4) and x1.dtype == torch.uint8 and y1.tolist() == []
        assert x2.shape == (1, 3, 4, 4) and y2.tolist() == [0]
    assert [s.path for s in batches.skipped] == [paths[2], paths[3]]
    assert all("truncated or corrupt" in s.reason for s in batches.skipped)
    # the positions name the images that decoded
    assert [index.tolist() for _, _, index in batches.indexed_epoch(0)] == [[0, 1], [], [4]]


def test_a_file_refused_by_its_header_is_listed_from_the_start(tmp_path: Path) -> None:
    paths = write_images(tmp_path, 3)
    paths[1].write_bytes(b"")
    batches = FileBatches(LazyImageDataset(ImageFiles(paths, [0, 0, 0], ["a"]), (4, 4), 3), batch_size=2,
                          workers=0)
    assert [s.path for s in batches.skipped] == [paths[1]]
    assert batches.num_examples == 2 and len(batches) == 1
    assert [len(y) for _, y in batches] == [2]
    assert [s.path for s in batches.skipped] == [paths[1]]  # not listed twice
