"""Images per second of training-data pipelines: dcnn's batched augmentation against a per-sample one.

Runs, in one process on the same machine, shuffled epochs of each path over the same decoded images
held in memory as uint8 (decoding is done once, beforehand, and not timed), up to the normalized
float batch the model reads:

- batched (dcnn): a random permutation, batches by indexing the uint8 tensor
  (:class:`dcnn.data.loader.TensorBatches`), :class:`dcnn.data.augment.BatchAugment` on the uint8
  batch (crops and flips stay uint8; a flip after a crop is done by the crop), then one conversion
  to the normalized float batch (:func:`dcnn.data.preprocess.to_float`, fused as in a training run
  long enough to repay compiling it: one compiled loop, compiled before the runs and timed apart),
  with 1 torch thread and with
  `--threads` (default: torch's own number); and, for comparison, the same loader converting each
  batch to float before augmenting it and normalizing it after, on 1 thread (the order of dcnn's
  trainer before uint8 augmentation);
- per-sample (baseline): a map-style Dataset whose ``__getitem__`` augments one image with
  Pillow/numpy, converts it to a tensor and normalizes it (torchvision's ToTensor and Normalize),
  batched by ``torch.utils.data.DataLoader`` with ``num_workers`` 0 (1 torch thread, in the main
  process) and 2 (one thread each; worker start-up counts, as in every epoch of a default DataLoader).

Three workloads:

- CIFAR-10 (32×32 JPEGs of cifar10-jpeg/train): the CIFAR recipe's augmentation, pad 4 (reflect),
  random crop of the image's size, horizontal flip, cutout 8×8;
- photos at 224 (cats-vs-dogs JPEGs, resized to 224 on the shorter side and centre-cropped to
  224×224): the same CIFAR recipe's augmentation;
- photos at 256 (the same, at 256×256): random-resized crop to 224 (scale 0.08-1, ratio 3/4-4/3;
  Pillow's or torch's antialiased bilinear resize of the crop, as torchvision's RandomResizedCrop),
  horizontal flip, the augmentation of recipes/cats_vs_dogs.yaml.

The paths take turns, epoch by epoch, so that a change of the machine's load falls on all of them;
each figure is the best of `--repeats` epochs. Prints a Markdown table (path, threads, image size,
images/s and images per CPU-second of the process and its workers, what load from other processes
changes least, each with its ratio to the per-sample baseline with 0 workers), the time of each stage of the batched
path, the machine's memory bandwidth and the cost of a new float batch, how fast the models consume
images in training, the load average and the machine. Every path runs with the allocator setting of
a dcnn training run (:func:`dcnn.device.reuse_freed_memory`: freed memory is reused, not faulted in
again); `--allocator default` shows glibc's default, where page faults of each new float batch
bounded the 224-pixel path (THP_MEM_ALLOC_ENABLE=1, torch's option for transparent huge pages,
removes most of them too).

    DCNN_DATA_DIR=../shared/data python benchmarks/data_pipeline.py [--images 10000] [--batch-size 256]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import resource
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from dcnn.data.augment import BatchAugment, build_augment
from dcnn.data.loader import EpochOrder, TensorBatches, pixels_last
from dcnn.data.preprocess import to_float
from dcnn.device import reuse_freed_memory
from dcnn.models import create_model

CIFAR_RECIPE = [
    {"random_crop": {"padding": 4, "padding_mode": "reflect"}},
    "hflip",
    {"cutout": {"size": 8}},
]
PHOTO_RECIPE = [{"random_resized_crop": {"size": 224}}, "hflip"]
# Both workloads normalize with ImageNet's channel statistics (the values do not change the timing).
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_MEAN, _STD = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)


# ----- decoding (not timed) ------------------------------------------------------------------
def decode_cifar(root: Path, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` CIFAR-10 training images, the same number from each class: uint8 (N, 3, 32, 32),
    stored channels-last as dcnn's decoder stores them (:func:`dcnn.data.loader.pixels_last`)."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    per_class = math.ceil(count / len(classes))
    pictures, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted((root / name).glob("*.jpg"))[:per_class]:
            with Image.open(file) as image:
                pictures.append(np.asarray(image.convert("RGB")))
            labels.append(label)
    images = torch.from_numpy(np.stack(pictures[:count])).permute(0, 3, 1, 2)  # channels-last, as dcnn stores
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
    return torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2), torch.tensor(labels)  # channels-last


# ----- batched path (dcnn) -------------------------------------------------------------------
def batched_epoch(images: torch.Tensor, labels: torch.Tensor, augment: BatchAugment, batch_size: int,
                  stages: list[dict[str, float]] | None = None, float_first: bool = False) -> int:
    """One shuffled epoch of dcnn's in-memory loader (TensorBatches) through `augment` on uint8
    batches, to the normalized float batch; returns the number of images produced. With `stages`,
    appends to it the seconds spent indexing, augmenting and converting in this epoch. `float_first`: convert each
    batch to float [0, 1] before augmenting it and normalize after (x - mean) / std, the order of
    dcnn's trainer before uint8 augmentation."""
    batches = TensorBatches(images, labels, batch_size, EpochOrder(labels, seed=0))
    produced = 0
    spent = {"index": 0.0, "augment": 0.0, "to_float": 0.0}
    clock = time.perf_counter()
    for step, (batch, batch_labels) in enumerate(batches.epoch(0)):
        indexed = time.perf_counter()
        if float_first:
            out, _ = augment(batch.float().div_(255.0), batch_labels, seed=step)
            augmented = time.perf_counter()
            out = (out - _MEAN) / _STD
        else:
            pixels, _ = augment(batch, batch_labels, seed=step)
            augmented = time.perf_counter()
            out = to_float(pixels, MEAN, STD, fused=True)
        produced += out.shape[0]
        now = time.perf_counter()
        for stage, seconds in (("index", indexed - clock), ("augment", augmented - indexed),
                               ("to_float", now - augmented)):
            spent[stage] += seconds
        clock = now
    if stages is not None:
        stages.append(spent)
    return produced


def model_images_per_second(model_name: str, size: int, batch_size: int, steps: int) -> float:
    """How fast `model_name` consumes size×size images in training (forward, backward, SGD step),
    the rate the data path must beat for training never to wait on data."""
    model = create_model(model_name, num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(batch_size, 3, size, size), torch.randint(0, 10, (batch_size,))

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
    """HWC uint8 to the normalized CHW float tensor, as torchvision's ToTensor then Normalize
    (in place, without Normalize's copy)."""
    pixels = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float().div_(255.0)
    return pixels.sub_(_MEAN).div_(_STD)


def cifar_sample(array: np.ndarray) -> torch.Tensor:
    """Pad 4 (reflect), random crop of the image's size, flip with p 0.5, cutout 8×8 (centre
    anywhere), to tensor."""
    height, width = array.shape[:2]
    padded = Image.fromarray(np.pad(array, ((4, 4), (4, 4), (0, 0)), mode="reflect"))
    left, top = random.randint(0, 8), random.randint(0, 8)
    image = padded.crop((left, top, left + width, top + height))
    if random.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    out = np.array(image)
    cy, cx = random.randrange(height), random.randrange(width)
    out[max(cy - 4, 0) : cy + 4, max(cx - 4, 0) : cx + 4] = 0
    return to_tensor(out)


def photo_sample(array: np.ndarray, size: int = 224) -> torch.Tensor:
    """Random-resized crop (torchvision's sampling: 10 tries, else the whole image; the crop, then
    its bilinear resize, as torchvision's on PIL images), flip, to tensor."""
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
    image = image.crop(box).resize((size, size), Image.BILINEAR)
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
def with_threads(threads: int, epoch: Callable[[], int]) -> Callable[[], int]:
    """`epoch` run with `threads` torch threads (the previous number restored after it)."""

    def run() -> int:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return epoch()
        finally:
            torch.set_num_threads(before)

    return run


def cpu_seconds() -> float:
    """CPU time of this process (all its threads) and of its finished children (DataLoader workers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def run_workload(
    label: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    recipe: list,
    sample: Callable,
    batch_size: int,
    repeats: int,
    threads: int,
) -> tuple[list[tuple[str, str, str, float, float]], dict[str, float]]:
    """(path, threads, size, best images/s, best images per CPU-second) rows, the paths taking
    turns epoch by epoch, and the batched path's milliseconds per batch in each stage, on 1 thread
    (in its fastest epoch)."""
    augment = build_augment(recipe, num_classes=int(labels.max()) + 1)
    assert augment is not None
    batched_epoch(images[:batch_size], labels[:batch_size], augment, batch_size)  # warm lazy setup
    dataset = PerSampleDataset(images, labels, sample)
    epochs: list[dict[str, float]] = []
    paths: list[tuple[str, str, Callable[[], int]]] = [
        ("per-sample Dataset + DataLoader, 0 workers", "1 (main process)",
         with_threads(1, lambda: loader_epoch(DataLoader(dataset, batch_size=batch_size, shuffle=True)))),
        ("per-sample Dataset + DataLoader, 2 workers", "2 processes x 1",
         lambda: loader_epoch(DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=2))),
        ("batched, float first: convert, BatchAugment, normalize", "1 (torch)",
         with_threads(1, lambda: batched_epoch(images, labels, augment, batch_size, float_first=True))),
        ("batched uint8 tensor + dcnn BatchAugment + to_float", "1 (torch)",
         with_threads(1, lambda: batched_epoch(images, labels, augment, batch_size, epochs))),
    ]
    if threads != 1:
        paths.append(("batched uint8 tensor + dcnn BatchAugment + to_float", f"{threads} (torch)",
                      with_threads(threads, lambda: batched_epoch(images, labels, augment, batch_size))))
    best = [(0.0, 0.0)] * len(paths)
    for _ in range(repeats):
        for k, (_, _, epoch) in enumerate(paths):
            wall, cpu = time.perf_counter(), cpu_seconds()
            produced = epoch()
            wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
            best[k] = (max(best[k][0], produced / wall), max(best[k][1], produced / cpu))
    rows = [(path, used, label, *speeds) for (path, used, _), speeds in zip(paths, best, strict=True)]
    fastest = min(epochs, key=lambda stages: sum(stages.values()))
    batches = math.ceil(len(labels) / batch_size)
    return rows, {stage: seconds * 1e3 / batches for stage, seconds in fastest.items()}


def memory_figures(batch_shape: tuple[int, ...], repeats: int = 5) -> tuple[float, float, float]:
    """(GB/s of a copy between two existing 256 MB buffers, ms to allocate and fill a new float32
    batch of `batch_shape` with torch.empty, the same with numpy's allocator as to_float does):
    what memory traffic and page faults cost on this machine, now."""
    source, target = torch.ones(64 << 20), torch.empty(64 << 20)
    copy = min(_seconds(lambda: target.copy_(source)) for _ in range(repeats))
    fresh = min(_seconds(lambda: torch.empty(batch_shape).fill_(0.0)) for _ in range(repeats))
    huge = min(_seconds(lambda: torch.from_numpy(np.empty(batch_shape, np.float32)).fill_(0.0)) for _ in range(repeats))
    return 2 * source.nbytes / copy / 1e9, fresh * 1e3, huge * 1e3


def compile_conversion(batches: Iterable[torch.Tensor], thread_counts: Iterable[int]) -> None:
    """Compile to_float's fused conversion for `batches` with each number of threads (torch.compile
    keeps code for each, and recompiles when the number changes), so no timed epoch compiles."""
    for threads in thread_counts:
        for batch in batches:
            with_threads(threads, lambda batch=batch: to_float(pixels_last(batch), MEAN, STD, fused=True))()


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


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
    parser.add_argument("--photos", type=int, default=512, help="photos per epoch (each photo workload)")
    parser.add_argument("--batch-size", type=int, default=256, help="batch size of the CIFAR workload")
    parser.add_argument("--photo-batch-size", type=int, default=64, help="batch size of the photo workloads")
    parser.add_argument("--repeats", type=int, default=4, help="epochs per path, taking turns; the best is reported")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--model", default="resnet20", help="the CIFAR recipe's model, whose training rate to beat")
    parser.add_argument("--photo-model", default="resnet18", help="a 224-pixel model, whose training rate to beat")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DCNN_DATA_DIR", "../shared/data")))
    parser.add_argument("--allocator", choices=("reuse", "default"), default="reuse",
                        help="reuse: keep freed memory for the next batches, as a dcnn training run on the CPU "
                             "does (dcnn.device.reuse_freed_memory), for every path; default: glibc's own")
    args = parser.parse_args()
    if args.allocator == "reuse":
        reuse_freed_memory()

    threads = args.threads or torch.get_num_threads()
    random.seed(0)
    torch.manual_seed(0)
    load_before = os.getloadavg()
    began = time.perf_counter()
    cifar, cifar_labels = decode_cifar(args.data_dir / "cifar10-jpeg" / "train", args.images)
    photos_root = args.data_dir / "cats-vs-dogs" / "train"
    photos_224, labels_224 = decode_photos(photos_root, args.photos, side=224)
    photos, photo_labels = decode_photos(photos_root, args.photos)
    print(f"decoded {len(cifar)} CIFAR-10 images and {len(photos)} photos at 224 and 256 "
          f"in {time.perf_counter() - began:.1f} s")

    bandwidth, fresh_ms, huge_ms = memory_figures((args.photo_batch_size, 3, 224, 224))
    compiling = _seconds(lambda: compile_conversion((photos_224[: args.photo_batch_size], cifar[: args.batch_size]),
                                                   sorted({1, threads})))
    # (label, images, labels, recipe, per-sample transform, batch size, model and the size it trains at)
    workloads = [
        ("32×32, CIFAR aug.", cifar, cifar_labels, CIFAR_RECIPE, cifar_sample, args.batch_size, args.model, 32),
        ("224×224, CIFAR aug.", photos_224, labels_224, CIFAR_RECIPE, cifar_sample, args.photo_batch_size,
         args.photo_model, 224),
        ("256×256 → 224, random-resized crop", photos, photo_labels, PHOTO_RECIPE, photo_sample,
         args.photo_batch_size, args.photo_model, 224),
    ]
    rows, stages = [], {}
    for label, images, labels, recipe, sample, batch_size, _, _ in workloads:
        workload_rows, stages[label] = run_workload(label, images, labels, recipe, sample, batch_size,
                                                    args.repeats, threads)
        rows += workload_rows
    consumed = {32: model_images_per_second(args.model, 32, args.batch_size, steps=6),
                224: model_images_per_second(args.photo_model, 224, 16, steps=2)}
    load_after = os.getloadavg()

    print("\n| path | threads | workload | images/s | ratio | images per CPU-second | ratio |")
    print("|---|---|---|---:|---:|---:|---:|")
    baseline = {label: (speed, per_cpu) for path, _, label, speed, per_cpu in rows if path.endswith(" 0 workers")}
    for path, used, label, speed, per_cpu in rows:
        print(f"| {path} | {used} | {label} | {speed:,.0f} | {speed / baseline[label][0]:.2f}x "
              f"| {per_cpu:,.0f} | {per_cpu / baseline[label][1]:.2f}x |")
    print()
    for label, spent in stages.items():
        shown = ", ".join(f"{stage} {ms:.1f}" for stage, ms in spent.items())
        print(f"batched {label} on 1 thread, ms per batch: {shown} (total {sum(spent.values()):.1f})")
    thp = os.environ.get("THP_MEM_ALLOC_ENABLE", "unset")
    print(f"\nmemory: copy between existing buffers {bandwidth:.1f} GB/s; a new float batch of "
          f"{args.photo_batch_size}x3x224x224 ({args.photo_batch_size * 3 * 224 * 224 * 4 / 1e6:.1f} MB) "
          f"allocated and filled in {fresh_ms:.1f} ms by torch.empty (THP_MEM_ALLOC_ENABLE={thp}), "
          f"{huge_ms:.1f} ms by numpy (huge pages, as to_float)")
    print(f"to_float's fused conversion compiled for {' and '.join(map(str, sorted({1, threads})))} thread(s) "
          f"in {compiling:.1f} s, not counted above")
    for label, *_, model, size in workloads:
        batched = max(speed for path, _, w, speed, _ in rows if w == label and path.startswith("batched uint8"))
        print(f"{model} trains on {consumed[size]:,.1f} images/s at {size}×{size}: the batched path of "
              f"{label} supplies {batched / consumed[size]:,.0f}x that")
    print(
        f"\nmachine: {cpu_model()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"batch {args.batch_size} (32×32) / {args.photo_batch_size} (photos), best of {args.repeats} epochs; "
        f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after"
    )


if __name__ == "__main__":
    main()
