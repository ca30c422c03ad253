"""Seconds per image of an airbench94 training step (bf16 autocast, channels-last, SGD) with glibc's
default handling of large allocations and with :func:`dcnn.device.reuse_freed_memory`, which a CPU
training run applies; each setting in a fresh process, with its page faults and kernel time.

    .venv/bin/python benchmarks/train_step_allocator.py [--batches 1024 2000] [--images 6000]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

import torch

from dcnn.device import reuse_freed_memory
from dcnn.models import create_model


def measure(batch: int, images: int) -> tuple[float, float, float]:
    """ms per image, share of the time in the kernel, page faults per step."""
    torch.manual_seed(0)
    model = create_model("airbench94", num_classes=10).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(), step()  # warm-up: the first steps allocate what later ones reuse
    steps = max(2, images // batch)
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        step()
    seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    return (1000 * seconds / steps / batch, (after.ru_stime - before.ru_stime) / seconds,
            (after.ru_minflt - before.ru_minflt) / steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1024, 2000])
    parser.add_argument("--images", type=int, default=6000, help="images timed per setting")
    parser.add_argument("--one", nargs=2, metavar=("BATCH", "SETTING"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a child process: one setting
        if args.one[1] == "reuse":
            reuse_freed_memory()
        print(*measure(int(args.one[0]), args.images))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| batch | allocator | ms/image | kernel time | page faults/step | vs default |")
    print("|---:|---|---:|---:|---:|---:|")
    for batch in args.batches:
        default = None
        for setting in ("default", "reuse"):
            out = subprocess.run([sys.executable, __file__, "--images", str(args.images), "--one", str(batch), setting],
                                 capture_output=True, text=True, check=True).stdout.split()
            ms, kernel, faults = float(out[0]), float(out[1]), float(out[2])
            default = default or ms
            print(f"| {batch} | {setting} | {ms:.3f} | {kernel:.0%} | {faults:,.0f} | {default / ms:.2f}x |")


if __name__ == "__main__":
    main()
