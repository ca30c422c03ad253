"""Images per second of CPU inference: eager PyTorch, dcnn's fast path, and onnxruntime on the exported model.

For LeNet-5 (``lenet5``, 1x32x32), ResNet-18 (``resnet18``, 3x224x224) and MobileNet v2
(``mobilenet_v2``, 3x224x224) at their native input sizes, batches of 1 and 32, in one process:

- eager: the eval-mode model under ``torch.no_grad`` (NCHW, fp32), what a user writes first;
- fast: :func:`dcnn.export.fast_inference` (batch norm folded into the convolutions, channels-last,
  inference mode; fp32), what ``dcnn predict`` runs by default;
- fast+compile: the same with ``torch.compile`` (``dcnn predict --compile``); the compile time of
  each shape is printed and not counted;
- onnxruntime: the model exported by :func:`dcnn.export.export_classifier` (dynamic batch), in an
  onnxruntime CPU session with as many intra-op threads as torch uses.

The paths take turns (``--rounds`` rounds of ``--seconds`` each on every path) so that a machine
shared with other work slows them alike; each figure is the median round. Weights are random, with
batch-norm statistics from random inputs (the speed of fp32 inference does not depend on them).

Every path is fp32: bf16 would be the only reduced precision worth trying on a CPU, and only where
the CPU computes it natively (:func:`dcnn.train.trainer.native_bf16`). The agreement check runs
each path on the first ``--agreement-images`` CIFAR-10 test images ($DCNN_DATA_DIR/cifar10-jpeg)
through a ResNet-20 at 32x32 (random weights, batch-norm statistics from 512 training images) and
prints the share of images whose top-1 class is eager fp32's.

    DCNN_DATA_DIR=../shared/data python benchmarks/inference.py [--threads N] [--no-compile]

Threads: as many as ``dcnn predict`` takes (:func:`dcnn.export.fast.idle_cores`) unless ``--threads``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import onnxruntime as ort
import torch
import torch.nn as nn
from data_pipeline import cpu_model  # the machine line of the other benchmarks

from dcnn.data.images import load_images
from dcnn.data.preprocess import Preprocess
from dcnn.export import export_classifier
from dcnn.export.fast import fast_inference, idle_cores
from dcnn.export.runtime import OnnxClassifier
from dcnn.models import create_model, get_model_cfg
from dcnn.train.trainer import native_bf16

MODELS = ("lenet5", "resnet18", "mobilenet_v2")
BATCHES = (1, 32)


def calibrated(name: str, images: torch.Tensor) -> nn.Module:
    """A fresh model with batch-norm statistics from `images`, in eval mode."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # a cumulative average over the calibration batches
    with torch.no_grad():
        for chunk in images.split(64):
            model.train()(chunk)
    return model.eval()


def paths_of(model: nn.Module, preprocess: Preprocess, folder: Path, threads: int,
             compile_model: bool) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The inference paths of `model`, each a batch → logits function."""

    def eager(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(x)

    paths = {"eager": eager, "fast": fast_inference(model)}
    if compile_model:
        paths["fast+compile"] = fast_inference(model, compile=True)
    onnx_path = export_classifier(model, preprocess, [str(i) for i in range(10)], folder / "model.onnx",
                                  dynamic_batch=True)
    paths["onnxruntime"] = OnnxClassifier(onnx_path, threads=threads)
    return paths


def throughput(paths: dict[str, Callable[[torch.Tensor], torch.Tensor]], x: torch.Tensor, rounds: int,
               seconds: float) -> dict[str, float]:
    """Median images/s of each path over `rounds` turns of `seconds` each."""
    rates: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, run in paths.items():
            count, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < seconds or count == 0:
                run(x)
                count += 1
            rates[name].append(count * len(x) / elapsed)
    return {name: statistics.median(values) for name, values in rates.items()}


def speed_table(args: argparse.Namespace, folder: Path) -> list[str]:
    rows = ["| model | batch | path | images/s | vs eager | vs onnxruntime |", "|---|---:|---|---:|---:|---:|"]
    for name in MODELS:
        cfg = get_model_cfg(name)
        prep = Preprocess.for_model(name)
        model = calibrated(name, torch.randn(64, *cfg.input_size, generator=torch.Generator().manual_seed(0)))
        paths = paths_of(model, prep, folder, args.threads, args.compile)
        for batch in BATCHES:
            x = torch.randn(batch, *cfg.input_size, generator=torch.Generator().manual_seed(batch))
            for label, run in paths.items():  # warm-up; the compiled path compiles for this shape here
                start = time.perf_counter()
                run(x)
                if label == "fast+compile":
                    print(f"{name} batch {batch}: torch.compile took {time.perf_counter() - start:.0f} s", flush=True)
            rates = throughput(paths, x, args.rounds, args.seconds)
            for label, rate in rates.items():
                rows.append(f"| {name} | {batch} | {label} | {rate:,.1f} | {rate / rates['eager']:.2f} | "
                            f"{rate / rates['onnxruntime']:.2f} |")
            print("\n".join(rows[-len(rates):]), flush=True)
    return rows


def agreement(args: argparse.Namespace, folder: Path) -> list[str]:
    """Top-1 agreement of each path with eager fp32 on CIFAR-10 test images, through ResNet-20."""
    root = Path(os.environ.get("DCNN_DATA_DIR", "../shared/data")) / "cifar10-jpeg"
    if not (root / "test").is_dir():
        return [f"(agreement not measured: {root}/test not found)"]
    prep = Preprocess.for_model("resnet20")

    def first_images(split: str, count: int) -> torch.Tensor:
        files = sorted((root / split).rglob("*.jpg"))
        step = max(1, len(files) // count)  # spread over the class folders
        batch, _, failures = load_images(files[::step][:count], prep)
        assert not failures, failures[:3]
        return batch

    model = calibrated("resnet20", first_images("train", 512))
    images = first_images("test", args.agreement_images)
    paths = paths_of(model, prep, folder, args.threads, args.compile)
    top1 = {name: torch.cat([run(chunk).argmax(1) for chunk in images.split(100)]) for name, run in paths.items()}
    lines = [f"top-1 agreement with eager fp32, ResNet-20 on {len(images)} CIFAR-10 test images:"]
    for name in [n for n in paths if n != "eager"]:
        lines.append(f"  {name}: {(top1[name] == top1['eager']).float().mean().item():.2%}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and onnxruntime threads (default: the idle cores, as dcnn predict)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="time per path per round")
    parser.add_argument("--agreement-images", type=int, default=2000)
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="leave out fast+compile")
    args = parser.parse_args()
    args.threads = args.threads or idle_cores()
    torch.set_num_threads(args.threads)
    print(f"{date.today()}  CPU: {cpu_model()} ({os.cpu_count()} logical CPUs), {args.threads} threads, "
          f"torch {torch.__version__}, onnxruntime {ort.__version__}, load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(f"bf16 native: {native_bf16(torch.device('cpu'))} (every path below is fp32)\n", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        rows = speed_table(args, Path(folder))
        lines = agreement(args, Path(folder))
    print("\n" + "\n".join(rows) + "\n\n" + "\n".join(lines))
    print(f"load average at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
