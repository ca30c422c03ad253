"""From a dataset split to batches the model can read, the same way for train, eval and predict.

dataset (datasets.py) → preprocessing planned for the model (preprocess.py) → loader
(loader.py: decoded into memory, or decoded lazily in workers) → batch augmentation
(augment.py) → normalization (:meth:`Preprocess.normalize`) → model.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Literal

import torch
from torch.utils.data import DataLoader, Subset

from dcnn.data.datasets import DatasetSplits, Split, TensorImages
from dcnn.data.folder import (
    DEFAULT_MAX_PIXELS,
    ImageFiles,
    LazyImageDataset,
    Skipped,
    collate_skipping,
    load_or_decode,
    strict_error,
)
from dcnn.data.images import open_image
from dcnn.data.loader import Batches, EpochOrder, FileBatches, TensorBatches
from dcnn.data.preprocess import Preprocess
from dcnn.errors import DcnnError
from dcnn.models._registry import ModelCfg

# Image sets whose decoded pixels exceed this stay on disk and are decoded lazily (loading: auto).
MEMORY_BUDGET_BYTES = 4 << 30
Loading = Literal["auto", "memory", "lazy"]


def input_channels(splits: DatasetSplits, model_cfg: ModelCfg) -> int:
    """Channels the model reads: a tensor dataset's own (1 for digits, 3 for CIFAR); photos are
    read as RGB, or as grayscale for a model whose default input is one channel (LeNet-5)."""
    train = splits.train
    if isinstance(train, TensorImages):
        return 1 if train.images.dim() == 3 else train.images.shape[1]
    return 1 if model_cfg.input_size[0] == 1 else 3


def plan_preprocess(splits: DatasetSplits, model_cfg: ModelCfg, fit: Literal["crop", "stretch"] = "crop",
                    image_size: int | None = None) -> Preprocess:
    train = splits.train
    source = tuple(train.images.shape[-2:]) if isinstance(train, TensorImages) else None
    return Preprocess.for_training(model_cfg, input_channels(splits, model_cfg), source, fit, image_size)


def choose_loading(split: Split, prep: Preprocess, loading: Loading) -> Literal["memory", "lazy"]:
    if isinstance(split, TensorImages) or loading == "memory" or prep.resize_mode == "pad" or prep.crop_pct != 1.0:
        return "memory"
    if loading == "lazy":
        return "lazy"
    channels, height, width = prep.input_size
    return "memory" if len(split) * channels * height * width <= MEMORY_BUDGET_BYTES else "lazy"


def make_batches(
    split: Split, prep: Preprocess, batch_size: int, device: torch.device, *, order_seed: int | None = None,
    balanced: bool = False, loading: Loading = "auto", workers: int = 2, strict: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS, progress: bool = False,
) -> Batches:
    """The split as uint8 batches at the preprocessing's input size, on `device`; with `order_seed`,
    in the seeded order of each epoch (training), else in sequence (evaluation)."""
    _, height, width = prep.input_size
    channels = prep.input_size[0]
    if isinstance(split, ImageFiles) and choose_loading(split, prep, loading) == "lazy":
        dataset = LazyImageDataset(split, (height, width), channels, prep.resize_mode, max_pixels)
        labels = torch.tensor(dataset.labels, dtype=torch.long)
        order = EpochOrder(labels, order_seed, balanced) if order_seed is not None else None
        return FileBatches(dataset, batch_size, order, workers, device, strict)
    skipped: list[Skipped] = []
    paths = None
    if isinstance(split, ImageFiles) and (prep.resize_mode == "pad" or prep.crop_pct != 1.0):
        images, labels, paths, skipped = _decode_with(prep, split, strict, max_pixels)
    elif isinstance(split, ImageFiles):
        decoded = load_or_decode(split, (height, width), channels, prep.resize_mode, strict=strict,
                                 max_pixels=max_pixels, progress=progress)
        images, labels, skipped, paths = decoded.images, decoded.labels, decoded.skipped, decoded.paths
    else:
        images, labels = prep.fit_batch(split.images), split.labels
    order = EpochOrder(labels, order_seed, balanced) if order_seed is not None else None
    return TensorBatches(images.to(device), labels.to(device), batch_size, order, paths, skipped)


def _decode_with(prep: Preprocess, files: ImageFiles, strict: bool, max_pixels: int
                 ) -> tuple[torch.Tensor, torch.Tensor, list, list[Skipped]]:
    """Files prepared by :meth:`Preprocess.pixels` itself, for the geometries the training decoder
    does not have (digits fitted into a box, an ImageNet evaluation crop): a model trained on MNIST
    evaluated on a folder of digit photos sees them as `dcnn predict` shows them to it."""
    kept, labels, paths, skipped = [], [], [], []
    for path, label in zip(files.paths, files.labels, strict=True):
        try:
            kept.append(prep.pixels(open_image(path, max_pixels=max_pixels)).mul_(255).round_().to(torch.uint8))
        except DcnnError as err:
            if strict:
                raise strict_error(Skipped(path, str(err))) from None
            skipped.append(Skipped(path, str(err)))
            continue
        labels.append(label)
        paths.append(path)
    images = torch.stack(kept) if kept else torch.empty((0, *prep.input_size), dtype=torch.uint8)
    return images, torch.tensor(labels, dtype=torch.long), paths, skipped


def sample_images(batches: Batches, limit: int = 10_000, seed: int = 0) -> torch.Tensor:
    """Up to `limit` uint8 training images (all of an in-memory split, a seeded sample of a lazy
    one), on the CPU: what training-set statistics are fitted on."""
    if isinstance(batches, TensorBatches):
        images = batches.images
        if len(images) > limit:
            images = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:limit]]
        return images.cpu()
    pick = torch.randperm(len(batches.dataset), generator=torch.Generator().manual_seed(seed))[:limit].tolist()
    loader = DataLoader(Subset(batches.dataset, pick), batch_size=256, num_workers=batches.workers,
                        collate_fn=collate_skipping)
    return torch.cat([batch.images for batch in loader])


def model_inputs(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], prep: Preprocess,
                 channels_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """uint8 batches → normalized float model input (what evaluation reads)."""
    for images, labels in batches:
        yield in_layout(prep.normalize(images), channels_last), labels


def in_layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Batch `x` stored channels-last when asked, else contiguous (NCHW): the layout the model was
    set up for, whichever the data path produced (a copy only where they differ)."""
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def at_size(prep: Preprocess, size: tuple[int, int]) -> Preprocess:
    """The same preprocessing producing images of `size` (evaluation views crop from larger ones)."""
    if tuple(prep.input_size[1:]) == tuple(size):
        return prep
    if prep.whitening is not None:
        raise DcnnError("evaluation views that crop larger images cannot follow a whitening fitted at the input "
                        "size; evaluate this run with the center view.")
    content = prep.content_size
    if content is not None:
        content = (min(content[0] + size[0] - prep.input_size[1], size[0]),
                   min(content[1] + size[1] - prep.input_size[2], size[1]))
    return replace(prep, input_size=(prep.input_size[0], *size), content_size=content, whitening=None)
