"""Datasets as ready-to-train tensors: decoded once, normalized once, batched by indexing.

MNIST fits in memory many times over, so the fastest pipeline on a CPU is no pipeline: the whole
split lives in one float tensor (on the training device), and a batch is one index operation. A
per-sample DataLoader spends more time in Python than the network spends computing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dcnn.errors import DcnnError

MNIST_CLASSES = [str(d) for d in range(10)]
# Up to this many pixels of difference, a smaller image is padded (as LeNet-5's 28→32) rather than resized.
MAX_PAD = 8


@dataclass(frozen=True)
class Preprocessing:
    """How raw images become model input: scale to [0, 1], fit to `input_size`, normalize."""

    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    fit: str  # "none", "pad" or "resize"
    source_size: tuple[int, int]

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W) or (N, C, H, W) → normalized float (N, C, H', W')."""
        x = images.unsqueeze(1) if images.dim() == 3 else images
        x = x.float().div_(255.0)
        _, height, width = self.input_size
        if self.fit == "pad":
            top, left = (height - x.shape[2]) // 2, (width - x.shape[3]) // 2
            x = F.pad(x, (left, width - x.shape[3] - left, top, height - x.shape[2] - top))
        elif self.fit == "resize":
            x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def to_dict(self) -> dict:
        return {"input_size": list(self.input_size), "mean": list(self.mean), "std": list(self.std),
                "fit": self.fit, "source_size": list(self.source_size)}


def plan_preprocessing(model_cfg, channels: int, height: int, width: int) -> Preprocessing:
    """Fit images of (height, width) to a model: native size when large enough, else pad or resize
    up to the model's `input_size` (e.g. 28×28 digits padded to LeNet-5's 32×32)."""
    _, min_h, min_w = model_cfg.min_input_size
    _, want_h, want_w = model_cfg.input_size
    if height >= min_h and width >= min_w:
        size, fit = (height, width), "none"
    elif want_h - height <= MAX_PAD and want_w - width <= MAX_PAD:
        size, fit = (want_h, want_w), "pad"
    else:
        size, fit = (want_h, want_w), "resize"
    mean, std = model_cfg.mean, model_cfg.std
    if len(mean) != channels:  # e.g. an RGB model trained on grayscale digits: the mean of its stats
        mean, std = (sum(mean) / len(mean),) * channels, (sum(std) / len(std),) * channels
    return Preprocessing((channels, *size), tuple(mean), tuple(std), fit, (height, width))


@dataclass
class RawDataset:
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    class_names: list[str]

    @property
    def channels(self) -> int:
        return 1 if self.train_images.dim() == 3 else self.train_images.shape[1]


def load_split(
    name: str, split: str, data_dir: str | None = None, download: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoded uint8 images and int64 labels of one split ("train" or "test") of a dataset."""
    from dcnn.data import mnist

    if name == "mnist":
        return mnist.load_mnist(split, data_dir=data_dir, download=download)
    if name == "mnist_sample":
        return mnist.load_mnist_sample(split)
    raise DcnnError(f"unknown dataset {name!r}; choose 'mnist' or 'mnist_sample'.")


def load_raw_dataset(name: str, data_dir: str | None = None, download: bool = True) -> RawDataset:
    """Decoded uint8 images and int64 labels of a dataset's train and test splits."""
    train, test = (load_split(name, split, data_dir, download) for split in ("train", "test"))
    return RawDataset(*train, *test, class_names=MNIST_CLASSES)


def split_validation(
    images: torch.Tensor, labels: torch.Tensor, val_size: int, seed: int
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor] | None]:
    """Hold out `val_size` training examples, chosen by `seed`, for validation."""
    if val_size == 0:
        return (images, labels), None
    if val_size >= len(labels):
        raise DcnnError(f"val_size {val_size} leaves no training data (the split has {len(labels)} images).")
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    val, train = order[:val_size], order[val_size:]
    return (images[train], labels[train]), (images[val], labels[val])


def batches(
    images: torch.Tensor, labels: torch.Tensor, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive batches of an in-memory split (for evaluation)."""
    for start in range(0, len(labels), batch_size):
        yield images[start : start + batch_size], labels[start : start + batch_size]


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image of a normalized batch by up to `max_shift` pixels in x and y; uncovered
    pixels repeat the nearest edge, which for digit images is the background."""
    n, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4, mode="replicate")
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).to(images.device)
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).to(images.device)
    index = torch.arange(n, device=images.device).view(n, 1, 1)
    return padded.permute(0, 2, 3, 1)[index, rows.view(n, h, 1), cols.view(n, 1, w)].permute(0, 3, 1, 2)
