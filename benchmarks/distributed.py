"""Training images per second on 1 and on 2 processes of this machine, at the same global batch.

Runs the real command each time, one after the other on the same decoded images:

- 1 process with every core as a torch thread (``OMP_NUM_THREADS=cores dcnn train ...``): the baseline;
- 2 processes with half the cores each (``OMP_NUM_THREADS=cores/2 dcnn train --nproc 2 ...``):
  DistributedDataParallel on gloo, each process at half the batch;
- 1 process with half the cores, for scale.

The workload is a small CIFAR-10 network (ResNet-20, 0.27M parameters) on a subset of the
cifar10-jpeg training images (symbolic links to the first N/10 of each class; decoded by the first
run into dcnn's disk cache and read from it by the others, before training, so not timed), global
batch 128, random crop and flip, SGD, two epochs; no validation split and a 100-image test set, so
that the run is training. The figure is the last epoch's images per second from the run's
metrics.csv (training steps only; epoch 1 pays the start-up). In the 2-process run the augmentation
runs on the whole global batch in every process (see dcnn.train.distributed), so it is not
divided. Prints a Markdown table with ratios to the baseline, the CPU and the load average before
and after (the machine may be shared).

    DCNN_DATA_DIR=../shared/data python benchmarks/distributed.py [--images 2048] [--epochs 2]
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

from cifar10_time_to_accuracy import subset_folder
from data_pipeline import cpu_model  # the machine line of the other benchmarks

RECIPE = {"model": "resnet20", "val_size": 0, "test_limit": 100, "batch_size": 128, "lr": 0.05,
          "augment": '[{random_crop: {padding: 4}}, hflip]', "seed": 0}


def train(data: str, run_dir: Path, threads: int, processes: int, epochs: int, cache: Path) -> float:
    """Epoch `epochs`' training images/s of one `dcnn train` run."""
    command = [sys.executable, "-m", "dcnn", "train", "--no-progress", f"--run-dir={run_dir}", f"--dataset={data}",
               f"--epochs={epochs}", *(f"--set={k}={v}" for k, v in RECIPE.items())]
    if processes > 1:
        command.append(f"--nproc={processes}")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "DCNN_CACHE_DIR": str(cache)}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    rows = list(csv.DictReader((run_dir / "metrics.csv").read_text().splitlines()))
    return float(rows[-1]["images_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--images", type=int, default=2048, help="CIFAR-10 training images (N/10 per class)")
    parser.add_argument("--epochs", type=int, default=2, help="the last epoch is measured")
    parser.add_argument("--data-dir", type=Path,
                        default=Path(os.environ.get("DCNN_DATA_DIR", "../shared/data")) / "cifar10-jpeg")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    half = max(1, cores // 2)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        data = subset_folder(str(args.data_dir), {"train": args.images, "test": 100}, root / "data")
        cases = [(f"1 process x {cores} threads (baseline)", 1, cores),
                 (f"2 processes x {half} thread{'s' if half > 1 else ''} (--nproc 2)", 2, half),
                 (f"1 process x {half} thread{'s' if half > 1 else ''}", 1, half)]
        rates = [train(data, root / f"run{i}", threads, processes, args.epochs, root / "cache")
                 for i, (_, processes, threads) in enumerate(cases)]
    print(f"ResNet-20, {args.images} CIFAR-10 images, global batch {RECIPE['batch_size']}, epoch {args.epochs} "
          f"of {args.epochs}\n")
    print("| run | images/s | ratio |")
    print("|---|---:|---:|")
    for (label, _, _), rate in zip(cases, rates, strict=True):
        print(f"| {label} | {rate:.0f} | {rate / rates[0]:.2f} |")
    print(f"\n{cpu_model()}, {cores} cores; load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} "
          f"after; {date.today()}")


if __name__ == "__main__":
    main()
