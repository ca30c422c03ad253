"""Loaders: how batches are made, and in which order.

Two paths, one interface (``epoch(e, start_step)`` yields uint8 image batches (N, C, H, W) and int64
labels on the training device):

- :class:`TensorBatches`: a split decoded once into one uint8 tensor (on the device), batched by
  indexing. For MNIST- and CIFAR-sized sets this is the fastest pipeline on a CPU: a batch is one
  index operation and augmentation runs on whole batches (airbench's CifarLoader does the same).
- :class:`FileBatches`: a split too large for memory, decoded lazily with Pillow in DataLoader
  worker processes; files that fail to decode are dropped from their batch and listed.

The order is :class:`EpochOrder`, a resumable sampler: epoch e's order is a function of (seed, e)
alone, so a run resumed at (epoch, step) takes exactly the batches an uninterrupted run takes.
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

    def __call__(self, epoch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        if self.weights is not None:
            return torch.multinomial(self.weights, self.n, replacement=True, generator=gen)
        return torch.randperm(self.n, generator=gen)


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

    def epoch(self, epoch: int = 0, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch()


class TensorBatches(_Batches):
    """Batches of an in-memory split by indexing (in `order`, or in sequence for evaluation)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 order: EpochOrder | None = None, paths: list[Path] | None = None,
                 skipped: list[Skipped] | None = None) -> None:
        self.images, self.labels = images, labels
        self.batch_size = batch_size
        self.order = order
        self.paths = paths  # the file of each image, for image sets decoded from files
        self.skipped: list[Skipped] = list(skipped or [])

    def epoch(self, epoch: int = 0, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        index = self.order(epoch).to(self.images.device) if self.order is not None else None
        for step in range(start_step, len(self)):
            window = slice(step * self.batch_size, (step + 1) * self.batch_size)
            if index is None:
                yield self.images[window], self.labels[window]
            else:
                batch = index[window]
                yield self.images[batch], self.labels[batch]


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

    def epoch(self, epoch: int = 0, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        index = self.order(epoch) if self.order is not None else torch.arange(len(self.dataset))
        remaining = index[start_step * self.batch_size:].tolist()
        if not remaining:
            return
        loader = DataLoader(self.dataset, batch_size=self.batch_size, sampler=remaining, num_workers=self.workers,
                            collate_fn=collate_skipping, pin_memory=self.device.type == "cuda")
        seen = {s.path for s in self.skipped}
        for batch in loader:
            for skip in batch.skipped:
                if self.strict:
                    raise strict_error(skip)
                if skip.path not in seen:
                    seen.add(skip.path)
                    self.skipped.append(skip)
            # a batch whose files all failed is still yielded (empty), so that step counts stay exact
            yield batch.images.to(self.device, non_blocking=True), batch.labels.to(self.device, non_blocking=True)


Batches = TensorBatches | FileBatches
