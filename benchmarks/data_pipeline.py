"""Images per second of training-data pipelines: dcnn's batched augmentation against a per-sample one.

Runs, in one process on the same machine, one shuffled epoch of each path over the same decoded
images held in memory as uint8 (decoding is done once, beforehand, and not timed):

- batched (dcnn): a random permutation, batches by indexing the uint8 tensor, conversion to float
  [0, 1], then :class:`dcnn.data.augment.BatchAugment` on the whole batch;
- per-sample (baseline): a map-style Dataset whose ``__getitem__`` augments one image with
  Pillow/numpy and converts it to a tensor, batched by ``torch.utils.data.DataLoader`` with
  ``num_workers`` 0 and 2 (worker start-up counts, as in every epoch of a default DataLoader).

Two workloads:

- CIFAR-10 (32×32 JPEGs of cifar10-jpeg/train): the CIFAR recipe's augmentation, pad 4 (reflect),
  random 32×32 crop, horizontal flip, cutout 8×8;
- photos (cats-vs-dogs JPEGs, resized to 256 on the shorter side and centre-cropped to 256×256):
  random-resized crop to 224 (scale 0.08-1, ratio 3/4-4/3), horizontal flip.

Prints a Markdown table (path, image size, images/s, ratio to the per-sample baseline with 0 workers)
and the machine. Each figure is the best of `--repeats` epochs.

    DCNN_DATA_DIR=../shared/data python benchmarks/data_pipeline.py [--images 10000] [--batch-size 256]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from dcnn.data.augment import BatchAugment, build_augment
from dcnn.data.loader import EpochOrder, TensorBatches
from dcnn.models import create_model

CIFAR_RECIPE = [
    {"random_crop": {"size": 32, "padding": 4, "padding_mode": "reflect"}},
    "hflip",
    {"cutout": {"size": 8}},
]
PHOTO_RECIPE = [{"random_resized_crop": {"size": 224}}, "hflip"]


# ----- decoding (not timed) ------------------------------------------------------------------
def decode_cifar(root: Path, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` CIFAR-10 training images, the same number from each class: uint8 (N, 3, 32, 32)."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    per_class = math.ceil(count / len(classes))
    pictures, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted((root / name).glob("*.jpg"))[:per_class]:
            with Image.open(file) as image:
                pictures.append(np.asarray(image.convert("RGB")))
            labels.append(label)
    images = torch.from_numpy(np.stack(pictures[:count])).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor(labels[:count])


def decode_photos(root: Path, count: int, side: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` photos, cats and dogs alternating, `side` on the shorter side, centre-cropped square."""
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    files = [sorted(folder.glob("*.jpg")) for folder in folders]
    pictures, labels = [], []
    for i in range(count):
        label = i % len(folders)
        with Image.open(files[label][i // len(folders)]) as image:
            image.draft("RGB", (side, side))  # JPEG DCT scaling: decode at no less than side×side
            image = image.convert("RGB")
            scale = side / min(image.size)
            width, height = max(side, round(image.width * scale)), max(side, round(image.height * scale))
            image = image.resize((width, height), Image.BILINEAR)
            left, top = (width - side) // 2, (height - side) // 2
            pictures.append(np.asarray(image.crop((left, top, left + side, top + side))))
        labels.append(label)
    return torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).contiguous(), torch.tensor(labels)


# ----- batched path (dcnn) -------------------------------------------------------------------
def batched_epoch(images: torch.Tensor, labels: torch.Tensor, augment: BatchAugment, batch_size: int) -> int:
    """One shuffled epoch of dcnn's in-memory loader (TensorBatches) through `augment`, as the
    trainer runs it; returns the number of images produced."""
    batches = TensorBatches(images, labels, batch_size, EpochOrder(labels, seed=0))
    produced = 0
    for step, (batch, batch_labels) in enumerate(batches.epoch(0)):
        out, _ = augment(batch.float().div_(255.0), batch_labels, seed=step)
        produced += out.shape[0]
    return produced


def model_images_per_second(model_name: str, batch_size: int, steps: int = 6) -> float:
    """How fast the CIFAR recipe's model consumes 32×32 images in training (forward, backward,
    SGD step), the rate the data path must beat for training never to wait on data."""
    model = create_model(model_name, num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(batch_size, 3, 32, 32), torch.randint(0, 10, (batch_size,))

    def step() -> None:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - start)


# ----- per-sample path (baseline) ------------------------------------------------------------
def to_tensor(array: np.ndarray) -> torch.Tensor:
    """HWC uint8 to CHW float in [0, 1], as torchvision's ToTensor."""
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float().div_(255.0)


def cifar_sample(array: np.ndarray) -> torch.Tensor:
    """Pad 4 (reflect), random 32×32 crop, flip with p 0.5, cutout 8×8 (centre anywhere), to tensor."""
    padded = Image.fromarray(np.pad(array, ((4, 4), (4, 4), (0, 0)), mode="reflect"))
    left, top = random.randint(0, 8), random.randint(0, 8)
    image = padded.crop((left, top, left + 32, top + 32))
    if random.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    out = np.array(image)
    cy, cx = random.randrange(32), random.randrange(32)
    out[max(cy - 4, 0) : cy + 4, max(cx - 4, 0) : cx + 4] = 0
    return to_tensor(out)


def photo_sample(array: np.ndarray, size: int = 224) -> torch.Tensor:
    """Random-resized crop (torchvision's sampling: 10 tries, else the whole image), flip, to tensor."""
    image = Image.fromarray(array)
    width, height = image.size
    box = (0, 0, width, height)
    for _ in range(10):
        area = width * height * random.uniform(0.08, 1.0)
        ratio = math.exp(random.uniform(math.log(3 / 4), math.log(4 / 3)))
        w, h = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
        if 0 < w <= width and 0 < h <= height:
            left, top = random.randint(0, width - w), random.randint(0, height - h)
            box = (left, top, left + w, top + h)
            break
    image = image.resize((size, size), Image.BILINEAR, box=box)
    if random.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return to_tensor(np.asarray(image))


class PerSampleDataset(Dataset):
    """Images kept as HWC uint8 arrays, augmented one at a time in ``__getitem__``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable[[np.ndarray], torch.Tensor]):
        self.arrays = images.permute(0, 2, 3, 1).numpy()
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.arrays[index]), self.labels[index]


def loader_epoch(loader: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> int:
    return sum(batch.shape[0] for batch, _ in loader)


# ----- timing --------------------------------------------------------------------------------
def images_per_second(epoch: Callable[[], int], repeats: int) -> float:
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        produced = epoch()
        best = max(best, produced / (time.perf_counter() - start))
    return best


def run_workload(
    label: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    recipe: list,
    sample: Callable,
    batch_size: int,
    repeats: int,
) -> list[tuple[str, str, float]]:
    augment = build_augment(recipe, num_classes=int(labels.max()) + 1)
    assert augment is not None
    batched_epoch(images[:batch_size], labels[:batch_size], augment, batch_size)  # warm kornia's lazy setup
    rows = []
    dataset = PerSampleDataset(images, labels, sample)
    for workers in (0, 2):
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers)
        rows.append(
            (
                f"per-sample Dataset + DataLoader, {workers} workers",
                label,
                images_per_second(lambda loader=loader: loader_epoch(loader), repeats),
            )
        )
    rows.append(
        (
            f"batched uint8 tensor + dcnn BatchAugment ({torch.get_num_threads()} threads)",
            label,
            images_per_second(lambda: batched_epoch(images, labels, augment, batch_size), repeats),
        )
    )
    return rows


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--images", type=int, default=10_000, help="CIFAR-10 images per epoch")
    parser.add_argument("--photos", type=int, default=512, help="224-pixel photos per epoch")
    parser.add_argument("--batch-size", type=int, default=256, help="batch size of the CIFAR workload")
    parser.add_argument("--photo-batch-size", type=int, default=64, help="batch size of the photo workload")
    parser.add_argument("--repeats", type=int, default=2, help="epochs per path; the best is reported")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--model", default="resnet20", help="the CIFAR recipe's model, whose training rate to beat")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DCNN_DATA_DIR", "../shared/data")))
    args = parser.parse_args()

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    random.seed(0)
    torch.manual_seed(0)
    began = time.perf_counter()
    cifar, cifar_labels = decode_cifar(args.data_dir / "cifar10-jpeg" / "train", args.images)
    photos, photo_labels = decode_photos(args.data_dir / "cats-vs-dogs" / "train", args.photos)
    print(f"decoded {len(cifar)} CIFAR-10 images and {len(photos)} photos in {time.perf_counter() - began:.1f} s")

    rows = run_workload("32×32", cifar, cifar_labels, CIFAR_RECIPE, cifar_sample, args.batch_size, args.repeats)
    rows += run_workload(
        "224×224", photos, photo_labels, PHOTO_RECIPE, photo_sample, args.photo_batch_size, args.repeats
    )

    print("\n| path | image size | images/s | ratio |")
    print("|---|---|---:|---:|")
    baseline = {size: speed for path, size, speed in rows if path.endswith(" 0 workers")}
    for path, size, speed in rows:
        print(f"| {path} | {size} | {speed:,.0f} | {speed / baseline[size]:.2f}x |")
    consumed = model_images_per_second(args.model, args.batch_size)
    batched = next(speed for path, size, speed in rows if size == "32×32" and path.startswith("batched"))
    print(f"\n{args.model} trains on {consumed:,.0f} images/s (32×32, batch {args.batch_size}): the batched path "
          f"supplies {batched / consumed:.1f}x that")
    print(
        f"\nmachine: {cpu_model()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"batch {args.batch_size} (32×32) / {args.photo_batch_size} (224×224), best of {args.repeats} epochs"
    )


if __name__ == "__main__":
    main()
