"""Loaders: how batches are made, and in which order.

Two paths, one interface (``epoch(e, start_step)`` yields uint8 image batches (N, C, H, W), stored
channels-last as Pillow decodes them (:func:`pixels_last`), and int64 labels on the training
device; ``indexed_epoch`` adds each example's position in the split, which augmentations that
follow an example across epochs use, e.g. alternating flips):

- :class:`TensorBatches`: a split decoded once into one uint8 tensor (on the device), batched by
  indexing. For MNIST- and CIFAR-sized sets this is the fastest pipeline on a CPU: a batch is one
  index operation and augmentation runs on whole batches (airbench's CifarLoader does the same).
- :class:`FileBatches`: a split too large for memory, decoded lazily with Pillow in DataLoader
  worker processes; files that fail to decode are dropped from their batch and listed.

The order is :class:`EpochOrder`, a resumable sampler: epoch e's order is a function of (seed, e)
alone, so a run resumed at (epoch, step) takes exactly the batches an uninterrupted run takes. In a
distributed run every process draws the same order and reads its own share of each global batch
(:meth:`EpochOrder.shard`), so that the shares of all processes at step s make up the batch one
process reads at step s, and a resumed run skips the same global steps on every process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from dcnn.data.folder import LazyImageDataset, Skipped, collate_skipping, strict_error


class EpochOrder:
    """The order of the training examples in each epoch: a permutation drawn from a generator
    seeded with (seed, epoch); with `balanced`, N draws with replacement, each example weighted by
    1 / (its class's count), so every class is drawn equally often on average."""

    def __init__(self, labels: torch.Tensor, seed: int, balanced: bool = False) -> None:
        self.n = len(labels)
        self.seed = seed
        self.weights = None
        if balanced:
            counts = torch.bincount(labels.cpu())
            self.weights = 1.0 / counts[labels.cpu()].double()
        self.rank, self.world_size = 0, 1

    def __call__(self, epoch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        if self.weights is not None:
            return torch.multinomial(self.weights, self.n, replacement=True, generator=gen)
        return torch.randperm(self.n, generator=gen)

    def shard(self, rank: int, world_size: int) -> None:
        """Read only process `rank`'s share of every global batch, of `world_size` processes."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not one of {world_size} processes")
        self.rank, self.world_size = rank, world_size

    def steps(self, epoch: int, batch_size: int, start_step: int = 0) -> Iterator[torch.Tensor]:
        """The example indices read at each step of `epoch`, from `start_step` on.

        Step s's global batch is entries [s·B, (s+1)·B) of the epoch's order; it is cut into
        `world_size` contiguous parts as even as possible (the first ones one larger when B does
        not divide), and this process reads part `rank`. A last global batch smaller than the
        number of processes leaves some parts empty.
        """
        order = self(epoch)
        for start in range(start_step * batch_size, self.n, batch_size):
            yield order[start : start + batch_size].tensor_split(self.world_size)[self.rank]


class _Batches:
    """What both loaders share: `labels` of the examples, `batch_size`, and a pass in sequence."""

    labels: torch.Tensor
    batch_size: int

    def __len__(self) -> int:
        """Batches per epoch."""
        return -(-len(self.labels) // self.batch_size)

    @property
    def num_examples(self) -> int:
        return len(self.labels)

    def indexed_epoch(self, epoch: int = 0, start_step: int = 0) -> Iterator[tuple[torch.Tensor, ...]]:
        """(images, labels, index) batches: `index` (int64, on the CPU) is each example's position in the split."""
        raise NotImplementedError

    def epoch(self, epoch: int = 0, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels, _ in self.indexed_epoch(epoch, start_step):
            yield images, labels

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch()


def pixels_last(images: torch.Tensor) -> torch.Tensor:
    """Images (N, C, H, W) stored channels-last, each pixel's channel values side by side (a copy
    unless they already are): how Pillow decodes them, and the layout in which a crop of an image
    is a run of whole rows, which torch's uint8 resize reads without a transposing copy (a
    random-resized crop of 224-pixel photos twice as fast; BENCHMARKS.md)."""
    return images.contiguous(memory_format=torch.channels_last)


class TensorBatches(_Batches):
    """Batches of an in-memory split by indexing (in `order`, or in sequence for evaluation), the
    images kept and batched channels-last (:func:`pixels_last`)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 order: EpochOrder | None = None, paths: list[Path] | None = None,
                 skipped: list[Skipped] | None = None) -> None:
        self.images, self.labels = pixels_last(images), labels
        self.batch_size = batch_size
        self.order = order
        self.paths = paths  # the file of each image, for image sets decoded from files
        self.skipped: list[Skipped] = list(skipped or [])

    def indexed_epoch(self, epoch: int = 0, start_step: int = 0) -> Iterator[tuple[torch.Tensor, ...]]:
        if self.order is None:
            for step in range(start_step, len(self)):
                window = slice(step * self.batch_size, (step + 1) * self.batch_size)
                yield self.images[window], self.labels[window], torch.arange(len(self.labels))[window]
            return
        for index in self.order.steps(epoch, self.batch_size, start_step):
            batch = index.to(self.images.device)
            # index_select copies whole images; indexing with [batch] computes every element's
            # offset (10x slower for a batch of 64 photos of 256×256). It is done on the (N, H, W, C)
            # view, so that the batch stays channels-last.
            yield _gather(self.images, batch), self.labels.index_select(0, batch), index


def _gather(images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return images.permute(0, 2, 3, 1).index_select(0, index).permute(0, 3, 1, 2)


class FileBatches(_Batches):
    """Batches of image files decoded in `workers` DataLoader processes (Pillow), moved to `device`.

    A file that fails to decode is dropped from its batch and added to :attr:`skipped` (once per
    file); a batch can therefore hold fewer than `batch_size` images, the same ones on every run.
    """

    def __init__(self, dataset: LazyImageDataset, batch_size: int, order: EpochOrder | None = None,
                 workers: int = 2, device: torch.device | str = "cpu", strict: bool = False) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.order = order
        self.workers = workers
        self.device = torch.device(device)
        self.labels = torch.tensor(dataset.labels, dtype=torch.long)
        self.skipped: list[Skipped] = list(dataset.skipped)
        self.strict = strict
        if strict and self.skipped:
            raise strict_error(self.skipped[0])

    def indexed_epoch(self, epoch: int = 0, start_step: int = 0) -> Iterator[tuple[torch.Tensor, ...]]:
        steps = (self.order.steps(epoch, self.batch_size, start_step) if self.order is not None
                 else torch.arange(len(self.dataset)).split(self.batch_size)[start_step:])
        indices = [step.tolist() for step in steps]
        nonempty = [step for step in indices if step]
        loader = iter(DataLoader(self.dataset, batch_sampler=nonempty, num_workers=self.workers,
                                 collate_fn=collate_skipping, pin_memory=self.device.type == "cuda")
                      if nonempty else ())
        seen = {s.path for s in self.skipped}
        for step in indices:
            if not step:  # this process's share of a last global batch smaller than the number of processes
                empty = torch.empty((0, self.dataset.channels, *self.dataset.size), dtype=torch.uint8)
                yield empty.to(self.device), self.labels[:0].to(self.device), self.labels[:0]
                continue
            batch = next(loader)
            failed = {skip.path for skip in batch.skipped}
            index = torch.tensor([i for i in step if self.dataset.paths[i] not in failed], dtype=torch.long)
            for skip in batch.skipped:
                if self.strict:
                    raise strict_error(skip)
                if skip.path not in seen:
                    seen.add(skip.path)
                    self.skipped.append(skip)
            # a batch whose files all failed is still yielded (empty), so that step counts stay exact
            yield (batch.images.to(self.device, non_blocking=True), batch.labels.to(self.device, non_blocking=True),
                   index)


Batches = TensorBatches | FileBatches
