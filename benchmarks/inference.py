"""Images per second of CPU inference: eager PyTorch, dcnn's fast path, and onnxruntime on the exported model.

For LeNet-5 (``lenet5``, 1x32x32), ResNet-18 (``resnet18``, 3x224x224) and MobileNet v2
(``mobilenet_v2``, 3x224x224) at their native input sizes, batches of 1 and 32, in one process:

- eager: the eval-mode model under ``torch.no_grad`` (NCHW, fp32), what a user writes first;
- fast: :func:`dcnn.export.fast.fast_inference` (fp32: batch norm folded, small convolutions by
  im2col + GEMM, channels-last for wide models, cache-sized chunks, inference mode), what
  ``dcnn predict`` runs by default;
- fast+compile: the same compiled by inductor for each shape (torch.export, freezing, C++ wrapper;
  ``dcnn predict --compile``);
  the compile time of each shape is printed and not counted;
- fast+bf16 and fast+compile+bf16 (``--bf16``, only where the CPU computes bf16 natively): the same
  two in bf16 (``dcnn predict --precision bf16``: bf16 autocast, close calls computed again in fp32),
  timed without the fp32 second look (random weights make nearly every image a close call); a
  second table adds the cost of computing again the share of close calls the agreement check's
  trained model had;
- onnxruntime: the model exported by :func:`dcnn.export.export_classifier` (dynamic batch), in an
  onnxruntime CPU session with as many intra-op threads as torch uses.

The paths take turns (``--rounds`` rounds of ``--seconds`` each on every path) so that a machine
shared with other work slows them alike; each figure is the median round. With one thread (the
default on a busy machine) the figure is images per second of the process's CPU time, which other
processes taking the core do not change (every path computes on the calling thread); the wall-clock
rate is printed beside it. Weights are random, with batch-norm statistics from random inputs (the
speed of inference does not depend on them).

The agreement check runs each path on ``--agreement-images`` CIFAR-10 test images
($DCNN_DATA_DIR/cifar10-jpeg, spread over the classes) through a ResNet-20 at 32x32, the model of
``--agreement-run`` (a trained run directory or model file) or else random weights with batch-norm
statistics from 512 training images, and prints the share of images whose top-1 class is eager
fp32's (and, for bf16, the share of close calls computed again in fp32).

    DCNN_DATA_DIR=../shared/data python benchmarks/inference.py [--threads N] [--no-compile] [--bf16] \
        [--agreement-run RUN]

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
from dcnn.device import native_bf16
from dcnn.evaluate.run import model_file_of, preprocess_of
from dcnn.export import export_classifier
from dcnn.export.fast import CLOSE_CALL, fast_inference, idle_cores
from dcnn.export.runtime import OnnxClassifier
from dcnn.models import create_model, get_model_cfg
from dcnn.models.modelfile import load_model_file

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


def paths_of(model: nn.Module, preprocess: Preprocess, folder: Path, args: argparse.Namespace,
             second_look: bool = True) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The inference paths of `model`, each a batch → logits function; the bf16 paths without their
    fp32 second look at close calls unless `second_look`."""

    def eager(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(x)

    fast = fast_inference(model)
    paths = {"eager": eager, "fast": fast}
    if args.compile:
        paths["fast+compile"] = fast_inference(model, compile=True)
    if args.bf16:
        close_call = CLOSE_CALL if second_look else None
        paths["fast+bf16"] = fast_inference(model, precision="bf16", close_call=close_call)
        if args.compile:
            paths["fast+compile+bf16"] = fast_inference(model, compile=True, precision="bf16", close_call=close_call)
    onnx_path = export_classifier(model, preprocess, [str(i) for i in range(10)], folder / "model.onnx",
                                  dynamic_batch=True)
    paths["onnxruntime"] = OnnxClassifier(onnx_path, threads=args.threads)
    return paths


def throughput(paths: dict[str, Callable[[torch.Tensor], torch.Tensor]], x: torch.Tensor, rounds: int,
               seconds: float) -> dict[str, tuple[float, float]]:
    """Median (images per CPU second, images per wall-clock second) of each path over `rounds` turns of
    `seconds` each."""
    rates: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, run in paths.items():
            count, cpu, start = 0, time.process_time(), time.perf_counter()
            while (elapsed := time.perf_counter() - start) < seconds or count == 0:
                run(x)
                count += 1
            rates[name].append((count * len(x) / (time.process_time() - cpu), count * len(x) / elapsed))
    return {name: (statistics.median(r[0] for r in values), statistics.median(r[1] for r in values))
            for name, values in rates.items()}


def load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


Rates = dict[tuple[str, int], dict[str, float]]


def speed_table(args: argparse.Namespace, folder: Path) -> tuple[list[str], Rates]:
    """The table's rows, and the rate of each path by (model, batch). The bf16 paths are timed without
    their second look: on random weights nearly every image is a close call, which says nothing of a
    trained model (see :func:`with_second_look`)."""
    unit = "images/CPU s" if args.threads == 1 else "images/s"
    rows = [f"| model | batch | path | {unit} | wall images/s | vs eager | vs onnxruntime |",
            "|---|---:|---|---:|---:|---:|---:|"]
    table: Rates = {}
    for name in args.models:
        cfg = get_model_cfg(name)
        prep = Preprocess.for_model(name)
        model = calibrated(name, torch.randn(64, *cfg.input_size, generator=torch.Generator().manual_seed(0)))
        paths = paths_of(model, prep, folder, args, second_look=False)
        for batch in BATCHES:
            x = torch.randn(batch, *cfg.input_size, generator=torch.Generator().manual_seed(batch))
            for label, run in paths.items():  # warm-up; the compiled path compiles for this shape here
                start = time.perf_counter()
                run(x)
                if "compile" in label:
                    seconds = time.perf_counter() - start
                    print(f"{name} batch {batch}: {label}: compiling took {seconds:.0f} s", flush=True)
            rates = throughput(paths, x, args.rounds, args.seconds)
            pick = 0 if args.threads == 1 else 1
            eager, onnx = rates["eager"][pick], rates["onnxruntime"][pick]
            table[name, batch] = {label: rate[pick] for label, rate in rates.items()}
            for label, rate in rates.items():
                rows.append(f"| {name} | {batch} | {label} | {rate[pick]:,.1f} | {rate[1]:,.1f} | "
                            f"{rate[pick] / eager:.2f} | {rate[pick] / onnx:.2f} |")
            print("\n".join(rows[-len(rates):]) + f"\n(load average {load()})", flush=True)
    return rows, table


def with_second_look(table: Rates, shares: dict[str, float]) -> list[str]:
    """The bf16 paths' rates with the trained model's share of close calls computed again in fp32 (by
    the uncompiled fast path, one image at a time: its batch-1 rate), against onnxruntime."""
    rows = ["| model | batch | path | bf16 alone | computed again in fp32 | with the second look | vs onnxruntime |",
            "|---|---:|---|---:|---:|---:|---:|"]
    for (name, batch), rates in table.items():
        fp32_one = table[name, 1]["fast"]
        for label, share in shares.items():
            rate = 1 / (1 / rates[label] + share / fp32_one)
            rows.append(f"| {name} | {batch} | {label} | {rates[label]:,.1f} | {share:.2%} | {rate:,.1f} | "
                        f"{rate / rates['onnxruntime']:.2f} |")
    return rows


def agreement(args: argparse.Namespace, folder: Path) -> tuple[list[str], dict[str, float]]:
    """Top-1 agreement of each path with eager fp32 on CIFAR-10 test images, through a trained model
    (``--agreement-run``) or a ResNet-20 with random weights; and the share of images each bf16 path
    computed again in fp32."""
    root = Path(os.environ.get("DCNN_DATA_DIR", "../shared/data")) / "cifar10-jpeg"
    if not (root / "test").is_dir():
        return [f"(agreement not measured: {root}/test not found)"], {}
    trained = load_model_file(model_file_of(args.agreement_run), "cpu") if args.agreement_run else None
    prep = preprocess_of(trained[1]) if trained else Preprocess.for_model("resnet20")

    def first_images(split: str, count: int) -> torch.Tensor:
        files = sorted((root / split).rglob("*.jpg"))
        step = max(1, len(files) // count)  # spread over the class folders
        batch, _, failures = load_images(files[::step][:count], prep)
        assert not failures, failures[:3]
        return batch

    model = trained[0].eval() if trained else calibrated("resnet20", first_images("train", 512))
    images = first_images("test", args.agreement_images)
    paths = paths_of(model, prep, folder, args)
    top1 = {name: torch.cat([run(chunk).argmax(1) for chunk in images.split(100)]) for name, run in paths.items()}
    which = f"the model of {args.agreement_run}" if trained else "ResNet-20 with random weights"
    lines = [f"top-1 agreement with eager fp32, {which}, on {len(images)} CIFAR-10 test images:"]
    shares = {name: paths[name].recomputed / len(images) for name in paths if "bf16" in name}
    for name in [n for n in paths if n != "eager"]:
        lines.append(f"  {name}: {(top1[name] == top1['eager']).float().mean().item():.2%}"
                     + (f" ({shares[name]:.2%} computed again in fp32)" if name in shares else ""))
    return lines, shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and onnxruntime threads (default: the idle cores, as dcnn predict)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="time per path per round")
    parser.add_argument("--agreement-images", type=int, default=2000)
    parser.add_argument("--agreement-run", default=None,
                        help="a trained CIFAR-10 run (or model file) for the agreement check (default: random weights)")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="leave out fast+compile")
    parser.add_argument("--bf16", action="store_true", help="add fast+bf16 (CPUs with native bf16 only)")
    args = parser.parse_args()
    args.threads = args.threads or idle_cores()
    torch.set_num_threads(args.threads)
    native = native_bf16(torch.device("cpu"))
    if args.bf16 and not native:
        parser.error("--bf16: this CPU has no native bf16 (AVX-512 BF16 or AMX); emulated it is slower than fp32")
    print(f"{date.today()}  CPU: {cpu_model()} ({os.cpu_count()} logical CPUs, torch's kernels: "
          f"{torch.backends.cpu.get_cpu_capability()}, native bf16: {native}), {args.threads} threads, "
          f"torch {torch.__version__}, onnxruntime {ort.__version__}, load average {load()}\n", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        rows, table = speed_table(args, Path(folder))
        lines, shares = agreement(args, Path(folder))
    print("\n" + "\n".join(rows) + "\n\n" + "\n".join(lines))
    if shares:
        print("\nbf16 with the agreement model's share of close calls computed again in fp32:\n"
              + "\n".join(with_second_look(table, shares)))
    print(f"load average at the end: {load()}")


if __name__ == "__main__":
    main()
