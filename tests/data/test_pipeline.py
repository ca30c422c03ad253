"""From a dataset split to model input: planning, loading in memory or lazily, sampling, sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import dcnn.data.pipeline as pipeline
from dcnn.data import mnist
from dcnn.data.datasets import DatasetSplits, TensorImages
from dcnn.data.folder import ImageFiles, decode_image_file
from dcnn.data.loader import FileBatches, TensorBatches
from dcnn.data.pipeline import (
    at_size,
    choose_loading,
    input_channels,
    make_batches,
    model_inputs,
    plan_preprocess,
    sample_images,
)
from dcnn.data.preprocess import Preprocess
from dcnn.data.whitening import fit_whitening
from dcnn.errors import DcnnError
from dcnn.models._registry import get_model_cfg

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoded-image caches go to a temporary folder, never the user's."""
    monkeypatch.setenv(mnist.CACHE_DIR_ENV, str(tmp_path / "cache"))


def random_uint8(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def digits(n: int = 12) -> TensorImages:
    return TensorImages(random_uint8(n, 28, 28), torch.arange(n) % 10)


def photo_files(folder: Path, count: int, broken: tuple[int, ...] = ()) -> ImageFiles:
    """`count` small RGB photos of various sizes; the `broken` ones are not images at all."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    paths = []
    for i in range(count):
        path = folder / f"{i:02d}.png"
        if i in broken:
            path.write_text("not an image")
        else:
            Image.fromarray(rng.integers(0, 256, (9 + i % 4, 12 - i % 3, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return ImageFiles(paths, [i % 2 for i in range(count)], ["a", "b"])


def photo_prep() -> Preprocess:
    return Preprocess.for_training(get_model_cfg("resnet20"), 3, None, image_size=8)


# --- planning -----------------------------------------------------------------------------------


def test_plan_preprocess_reads_the_datasets_size_and_channels(tmp_path: Path) -> None:
    mnist_splits = DatasetSplits("digits", [str(d) for d in range(10)], digits(), None)
    lenet = get_model_cfg("lenet5")
    assert input_channels(mnist_splits, lenet) == 1
    prep = plan_preprocess(mnist_splits, lenet)
    assert prep == Preprocess.for_training(lenet, 1, (28, 28))
    assert prep.input_size == (1, 32, 32) and prep.content_size == (28, 28)

    cifar = TensorImages(random_uint8(4, 3, 32, 32), torch.zeros(4, dtype=torch.long))
    cifar_splits = DatasetSplits("cifar", ["x"], cifar, None)
    assert input_channels(cifar_splits, get_model_cfg("resnet20")) == 3
    assert plan_preprocess(cifar_splits, get_model_cfg("resnet20"), image_size=40).input_size == (3, 40, 40)

    files = DatasetSplits("photos", ["a", "b"], photo_files(tmp_path, 2), None)
    assert input_channels(files, lenet) == 1 and input_channels(files, get_model_cfg("resnet18")) == 3
    photos = plan_preprocess(files, get_model_cfg("resnet18"), fit="stretch")
    assert photos.input_size == (3, 224, 224) and photos.resize_mode == "stretch"


# --- choosing how to load -----------------------------------------------------------------------


def test_choose_loading_keeps_what_fits_the_budget_in_memory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    files = ImageFiles([tmp_path / f"{i}.png" for i in range(10)], [0] * 10, ["a"])
    prep = photo_prep()  # 3 × 8 × 8 = 192 bytes an image, 1,920 for the ten
    monkeypatch.setattr(pipeline, "MEMORY_BUDGET_BYTES", 1920)
    assert choose_loading(files, prep, "auto") == "memory"
    assert choose_loading(files, prep, "lazy") == "lazy"
    monkeypatch.setattr(pipeline, "MEMORY_BUDGET_BYTES", 1919)
    assert choose_loading(files, prep, "auto") == "lazy"
    assert choose_loading(files, prep, "memory") == "memory"
    # decoded tensors are in memory already
    monkeypatch.setattr(pipeline, "MEMORY_BUDGET_BYTES", 0)
    assert choose_loading(digits(), prep, "lazy") == "memory"
    assert choose_loading(digits(), prep, "auto") == "memory"


# --- making batches -----------------------------------------------------------------------------


def test_make_batches_of_a_tensor_dataset_fits_it_once(tmp_path: Path) -> None:
    split = digits(12)
    prep = Preprocess.for_training(get_model_cfg("lenet5"), 1, (28, 28))
    batches = make_batches(split, prep, 5, CPU, loading="lazy")
    assert isinstance(batches, TensorBatches) and batches.order is None and batches.paths is None
    assert torch.equal(batches.images, F.pad(split.images[:, None], (2, 2, 2, 2)))
    assert [y.tolist() for _, y in batches] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [0, 1]]
    ordered = make_batches(split, prep, 5, CPU, order_seed=3)
    assert torch.equal(ordered.order(1).sort().values, torch.arange(12))
    assert torch.equal(ordered.order(1), make_batches(split, prep, 5, CPU, order_seed=3).order(1))


def test_make_batches_of_files_in_memory_records_paths_and_skipped_files(tmp_path: Path) -> None:
    files = photo_files(tmp_path / "photos", 6, broken=(2,))
    prep = photo_prep()
    batches = make_batches(files, prep, 4, CPU, loading="memory")
    assert isinstance(batches, TensorBatches)
    good = [p for i, p in enumerate(files.paths) if i != 2]
    assert batches.paths == good
    assert [s.path for s in batches.skipped] == [files.paths[2]]
    assert batches.labels.tolist() == [0, 1, 1, 0, 1]
    assert torch.equal(batches.images, torch.stack([decode_image_file(p, (8, 8), 3) for p in good]))


def test_lazy_batches_yield_what_batches_in_memory_yield(tmp_path: Path) -> None:
    files = photo_files(tmp_path / "photos", 7, broken=(4,))
    prep = photo_prep()
    lazy = make_batches(files, prep, 3, CPU, order_seed=5, loading="lazy", workers=0)
    memory = make_batches(files, prep, 3, CPU, order_seed=5, loading="memory")
    assert isinstance(lazy, FileBatches) and isinstance(memory, TensorBatches)
    assert [s.path for s in lazy.skipped] == [s.path for s in memory.skipped] == [files.paths[4]]
    got, expected = list(lazy.epoch(2)), list(memory.epoch(2))
    assert len(got) == len(expected) == 2
    for (x, y), (x_mem, y_mem) in zip(got, expected, strict=True):
        assert torch.equal(x, x_mem) and torch.equal(y, y_mem)


def test_model_inputs_normalizes_uint8_batches() -> None:
    prep = Preprocess((3, 4, 4), (0.2, 0.4, 0.6), (0.1, 0.2, 0.3))
    x = random_uint8(2, 3, 4, 4)
    labels = torch.tensor([1, 0])
    (out, out_labels), = list(model_inputs([(x, labels)], prep))
    mean = torch.tensor(prep.mean).view(1, 3, 1, 1)
    std = torch.tensor(prep.std).view(1, 3, 1, 1)
    torch.testing.assert_close(out, (x.float() / 255 - mean) / std)
    assert torch.equal(out_labels, labels)
    (last, _), = list(model_inputs([(x, labels)], prep, channels_last=True))
    assert last.is_contiguous(memory_format=torch.channels_last) and torch.equal(last, out)
    # Loaders hand out channels-last batches; a model not set up for channels_last still gets NCHW.
    (plain, _), = list(model_inputs([(x.contiguous(memory_format=torch.channels_last), labels)], prep))
    assert plain.is_contiguous() and torch.equal(plain, out)


# --- sampling -----------------------------------------------------------------------------------


def test_sample_images_of_tensor_batches_is_limited_and_seeded() -> None:
    images = torch.arange(50, dtype=torch.uint8).view(50, 1, 1, 1)
    batches = TensorBatches(images, torch.zeros(50, dtype=torch.long), batch_size=8)
    sample = sample_images(batches, limit=20, seed=1)
    values = sample.flatten().tolist()
    assert len(values) == 20 and len(set(values)) == 20 and set(values) <= set(range(50))
    assert torch.equal(sample_images(batches, limit=20, seed=1), sample)
    assert not torch.equal(sample_images(batches, limit=20, seed=2), sample)
    assert torch.equal(sample_images(batches, limit=50), images)


def test_sample_images_of_file_batches_is_limited_and_seeded(tmp_path: Path) -> None:
    files = photo_files(tmp_path / "photos", 8)
    prep = photo_prep()
    lazy = make_batches(files, prep, 4, CPU, loading="lazy", workers=0)
    decoded = make_batches(files, prep, 4, CPU, loading="memory").images
    sample = sample_images(lazy, limit=3, seed=7)
    assert sample.shape == (3, 3, 8, 8)
    index = [next(i for i, image in enumerate(decoded) if torch.equal(image, s)) for s in sample]
    assert len(set(index)) == 3
    assert torch.equal(sample_images(lazy, limit=3, seed=7), sample)
    assert torch.equal(sample_images(lazy, limit=100), decoded.index_select(
        0, torch.randperm(8, generator=torch.Generator().manual_seed(0))))


# --- other sizes --------------------------------------------------------------------------------


def test_at_size_keeps_the_content_box_margins_in_pad_mode() -> None:
    prep = Preprocess.for_training(get_model_cfg("lenet5"), 1, (28, 28))
    larger = at_size(prep, (36, 36))
    assert larger.input_size == (1, 36, 36) and larger.content_size == (32, 32)  # 2-pixel margins kept
    assert (larger.mean, larger.std, larger.resize_mode) == (prep.mean, prep.std, "pad")
    assert at_size(prep, (32, 32)) is prep
    wide = at_size(prep, (32, 40))
    assert wide.content_size == (28, 36)


def test_at_size_changes_only_the_size_in_crop_mode() -> None:
    prep = Preprocess.for_training(get_model_cfg("resnet20"), 3, (32, 32))
    larger = at_size(prep, (36, 36))
    assert larger.input_size == (3, 36, 36) and larger.content_size is None
    assert larger.to_dict() | {"input_size": [3, 32, 32]} == prep.to_dict()


def test_at_size_refuses_a_whitening() -> None:
    whitening = fit_whitening(random_uint8(32, 1, 4, 4), "zca")
    prep = Preprocess((1, 4, 4), (0.5,), (0.5,), "stretch", 1.0, whitening=whitening)
    assert at_size(prep, (4, 4)) is prep
    with pytest.raises(DcnnError, match="whitening"):
        at_size(prep, (6, 6))
