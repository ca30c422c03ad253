"""Seconds of training until the CIFAR-10 (JPEG copy) test set first reaches a target top-1 (91%).

Runs, in one process on the same machine and the same decoded images (dcnn's folder loader and its
disk cache):

- dcnn: our fastest recipe (recipes/cifar10_fast.yaml) through dcnn's trainer;
- baseline: the airbench94 recipe (Jordan 2024, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU",
  arXiv:2404.00498), written here from its published description: a 2×2 whitening conv initialized
  from the patch covariance of 5,000 training images, three conv-pool-BN-GELU blocks of 64/256/256
  filters, BN eps 1e-12 / momentum 0.6 (airbench's convention) / frozen scale, Dirac init, output
  scale 1/9; Nesterov SGD on the summed loss with lr 11.5, wd 0.0153 (both per 1024 examples,
  decoupled from momentum 0.85), 64× lr for BN shifts, a triangular schedule (0.2 → 1 at 23% → 0.07),
  label smoothing 0.2, batch 1024, 9.9 epochs, the whitening bias frozen after 3 epochs, lookahead
  (EMA every 5 steps from epoch 3, decay 0.95^5 · (step/total)^3), alternating flips, translations
  by 2 pixels (reflect padding), and multi-view test-time augmentation (flip × {no shift, ±1 pixel}).
  It runs under bf16 autocast as the issue asks (``--dtype fp32`` for float32), channels-last as airbench does.

Both run their whole recipe; the test set is evaluated every `--eval-every` fraction of an epoch
(the baseline with its TTA, dcnn as its run evaluates, with the recipe's averaged weights and
``eval_view``; both under ``--eval-dtype``, bf16 autocast by default) and the time spent evaluating
is not counted. A row gives the seconds and epochs at which the target was first
reached and the accuracy at the end of the recipe. When the baseline ends below the target, both are
also timed to the baseline's final accuracy minus half a point. Each recipe's training throughput is
given as achieved FLOP/s (FlopCounterMode on one training step, times the images trained, over the
training seconds) against the bf16 and fp32 matmul peaks measured at the start of the run.

    .venv/bin/python benchmarks/cifar10_time_to_accuracy.py --data-dir ../shared/data/cifar10-jpeg
    # smoke test (a few minutes on 1 thread):
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cifar10_time_to_accuracy.py \\
        --data-dir ../shared/data/cifar10-jpeg --subset 2048 --test-subset 500 --max-epochs-scale 0.1 --dtype fp32

Duration of the default full run on a 2-core Zen 4 EPYC with AVX-512 BF16 (idle, 2 torch threads,
2026-12-02): 12-17 minutes of training for each recipe (a training step of the airbench94 network
costs 1.3-2.3 ms per image in bf16 and channels-last, depending on the machine, 3.3-3.7 ms in float32
NCHW), plus the evaluations, which are not counted but are waited for (each six-view evaluation of
the test set, 60,000 views, took 40-110 s in float32 and about 60 s in bf16 on the slower machine):
45-80 minutes in all. On an AVX2-only CPU, which emulates
bf16 (about 400 ms per image for the baseline, some 55 h for its recipe), run with ``--dtype fp32``;
dcnn's recipe asks for ``bf16: auto``, which is float32 there.

Fairness notes: both use the images decoded by dcnn (the baseline's are decoded, from dcnn's cache,
before its stopwatch starts; dcnn's setup, scanning the folders and reading that cache, is counted).
Both accuracies are measured in the same dtype (``--eval-dtype``), whatever each trains in.
With --subset / --test-subset both train and test on a folder of symbolic links to the first N/10
images of each class (smoke runs only: accuracies there say nothing about the full run).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from data_pipeline import cpu_model  # the machine line of the other benchmarks
from mnist_time_to_accuracy import Stopwatch
from torch.utils.flop_counter import FlopCounterMode

from dcnn.data.datasets import load_dataset
from dcnn.data.folder import load_or_decode
from dcnn.data.pipeline import model_inputs
from dcnn.device import reuse_freed_memory
from dcnn.evaluate import evaluate
from dcnn.evaluate.views import ViewModel
from dcnn.train import load_recipe, train
from dcnn.train.trainer import Trainer

# ----- the airbench94 recipe (Jordan 2024), from its published description ------------------------
AIRBENCH = dict(
    epochs=9.9, batch_size=1024, lr=11.5, momentum=0.85, weight_decay=0.0153, bias_scaler=64.0,
    label_smoothing=0.2, whiten_bias_epochs=3.0, ema_start_epochs=3.0, ema_decay=0.95, ema_power=3.0,
    ema_every=5, translate=2, widths=(64, 256, 256), whiten_kernel=2, whiten_eps=5e-4, whiten_images=5000,
    bn_momentum=0.6, scale=1 / 9,
)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


class BaselineBN(nn.BatchNorm2d):
    """airbench's batch norm: eps 1e-12, running average keeping 0.6 of the old value, scale frozen at 1."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, eps=1e-12, momentum=1 - AIRBENCH["bn_momentum"])
        self.weight.requires_grad_(False)


def baseline_conv(cin: int, cout: int) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
    nn.init.dirac_(conv.weight.data[:cin])  # identity start for the first cin filters
    return conv


def baseline_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(baseline_conv(cin, cout), nn.MaxPool2d(2), BaselineBN(cout), nn.GELU(),
                         baseline_conv(cout, cout), BaselineBN(cout), nn.GELU())


class Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def baseline_net() -> nn.Sequential:
    k, (w1, w2, w3) = AIRBENCH["whiten_kernel"], AIRBENCH["widths"]
    whiten = nn.Conv2d(3, 2 * 3 * k * k, k, bias=True)
    whiten.weight.requires_grad_(False)
    nn.init.zeros_(whiten.bias)
    return nn.Sequential(whiten, nn.GELU(), baseline_block(whiten.out_channels, w1), baseline_block(w1, w2),
                         baseline_block(w2, w3), nn.MaxPool2d(3), nn.Flatten(), nn.Linear(w3, 10, bias=False),
                         Scale(AIRBENCH["scale"]))


@torch.no_grad()
def whiten_init(conv: nn.Conv2d, images: torch.Tensor) -> None:
    """Filters = eigenvectors of the k×k patch covariance / sqrt(eigenvalue + eps), and their negatives."""
    k = conv.kernel_size[0]
    patches = images.unfold(2, k, 1).unfold(3, k, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 3 * k * k).double()
    values, vectors = torch.linalg.eigh(patches.T @ patches / len(patches))
    filters = (vectors.T / (values + AIRBENCH["whiten_eps"]).sqrt()[:, None]).flip(0).reshape(-1, 3, k, k)
    conv.weight.copy_(torch.cat([filters, -filters]).float())


def normalize(images: torch.Tensor) -> torch.Tensor:
    mean, std = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


def random_translate(padded: torch.Tensor, size: int, pad: int, generator: torch.Generator) -> torch.Tensor:
    """A random size×size window of each pre-padded image (shifts in [-pad, pad] on both axes)."""
    shifts = torch.randint(0, 2 * pad + 1, (len(padded), 2), generator=generator)
    out = torch.empty(len(padded), padded.shape[1], size, size)
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            chosen = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
            out[chosen] = padded[chosen, :, dy:dy + size, dx:dx + size]
    return out


def tta_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """airbench's level-2 TTA: half the plain and mirrored views, half the same at ±1 pixel shifts."""
    def mirrored(v: torch.Tensor) -> torch.Tensor:
        return 0.5 * (model(v).float() + model(v.flip(-1)).float())

    padded = F.pad(x, (1,) * 4, mode="reflect")
    shifted = 0.5 * (mirrored(padded[:, :, :-2, :-2]) + mirrored(padded[:, :, 2:, 2:]))
    return 0.5 * mirrored(x) + 0.5 * shifted


def accuracy_of(predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                bf16: bool) -> float:
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        correct = sum(int((predict(x[i:i + 1000].contiguous(memory_format=torch.channels_last)).argmax(1)
                           == y[i:i + 1000]).sum()) for i in range(0, len(y), 1000))
    return correct / len(y)


def baseline(data: dict, eval_every: float, epochs_scale: float, dtype: torch.dtype, curve: list,
             eval_bf16: bool) -> dict:
    """Train the airbench94 recipe; append (seconds, epochs, test accuracy) to `curve` at each check."""
    hyp, generator = AIRBENCH, torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    watch = Stopwatch()
    train_x, train_y = normalize(data["train_x"]), data["train_y"]
    test_x, test_y = normalize(data["test_x"]), data["test_y"]
    n, size, pad = len(train_y), train_x.shape[-1], hyp["translate"]
    batch = min(hyp["batch_size"], n)
    steps_per_epoch = n // batch  # the last partial batch is dropped
    epochs = hyp["epochs"] * epochs_scale
    total = math.ceil(steps_per_epoch * epochs)
    model = baseline_net()
    whiten_init(model[0], train_x[torch.randperm(n, generator=generator)[:hyp["whiten_images"]]])
    model.to(memory_format=torch.channels_last)  # airbench's layout, and the faster one on this CPU too
    # The step of Nesterov SGD is 1 + 1/(1 - momentum) times the gradient's; airbench divides it out.
    kilostep = 1024 * (1 + 1 / (1 - hyp["momentum"]))
    lr, wd = hyp["lr"] / kilostep, hyp["weight_decay"] * batch / kilostep
    bn_shifts = [p for m in model.modules() if isinstance(m, BaselineBN) for p in (m.bias,)]
    others = [p for p in model.parameters() if p.requires_grad and all(p is not q for q in bn_shifts)]
    lr_bias = lr * hyp["bias_scaler"]
    optimizer = torch.optim.SGD([dict(params=bn_shifts, lr=lr_bias, weight_decay=wd / lr_bias),
                                 dict(params=others, lr=lr, weight_decay=wd / lr)],
                                momentum=hyp["momentum"], nesterov=True)
    peak = int(0.23 * total)

    def triangle(step: int) -> float:  # 0.2 → 1 at 23% of the steps → 0.07 at the end
        if step < peak:
            return 0.2 + 0.8 * step / peak
        return 1.0 + (0.07 - 1.0) * (step - peak) / max(1, total - peak)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, triangle)
    ema: dict[str, torch.Tensor] | None = None

    def lookahead(decay: float) -> None:
        for name, value in model.state_dict().items():
            if value.is_floating_point():
                ema[name].lerp_(value, 1 - decay)
                value.copy_(ema[name])

    # Alternating flips: a random half mirrored once, then every odd epoch mirrors the whole set.
    flip = torch.rand(n, generator=generator) < 0.5
    padded = F.pad(torch.where(flip.view(-1, 1, 1, 1), train_x.flip(-1), train_x), (pad,) * 4, mode="reflect")
    check_every = max(1, round(eval_every * steps_per_epoch))
    step, accuracy = 0, 0.0

    def evaluate() -> float:
        model.eval()
        result = accuracy_of(lambda v: tta_logits(model, v), test_x, test_y, eval_bf16)
        model.train()
        return result

    for epoch in range(math.ceil(epochs)):
        model[0].bias.requires_grad_(epoch < hyp["whiten_bias_epochs"] * epochs_scale)
        images = random_translate(padded, size, pad, generator)
        if epoch % 2 == 1:
            images = images.flip(-1)
        order = torch.randperm(n, generator=generator)
        for i in range(steps_per_epoch):
            index = order[i * batch:(i + 1) * batch]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                logits = model(images[index].contiguous(memory_format=torch.channels_last))
            loss = F.cross_entropy(logits.float(), train_y[index], label_smoothing=hyp["label_smoothing"],
                                   reduction="sum")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if step == 1:
                after_first_step = watch.elapsed()
            if epoch >= hyp["ema_start_epochs"] * epochs_scale and step % hyp["ema_every"] == 0:
                if ema is None:
                    ema = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
                else:
                    lookahead(hyp["ema_decay"] ** hyp["ema_every"] * (step / total) ** hyp["ema_power"])
            last = step >= total or i == steps_per_epoch - 1
            if last and ema is not None:
                lookahead(1.0)  # the network takes the averaged weights at the end of each epoch
            if (i + 1) % check_every == 0 or last:
                accuracy = watch.excluding(evaluate)
                curve.append((watch.elapsed(), epoch + (i + 1) / steps_per_epoch, accuracy))
            if step >= total:
                break
    return {"seconds": watch.elapsed(), "epochs": step / steps_per_epoch, "accuracy": accuracy,
            "images": step * batch, "after_first_step": after_first_step, "first_step_images": batch,
            "flops_per_image": train_step_flops(baseline_net(), batch=8, dtype=dtype,
                                                                        sum_loss=True)}


# ----- dcnn -------------------------------------------------------------------------------------
def test_accuracy(trainer: Trainer, bf16: bool) -> float:
    """Test top-1 of the model as the run evaluates it (averaged weights, the recipe's eval_view)."""
    with trainer.averaged() as model:
        scored = ViewModel(model, trainer.cfg.eval_view, tuple(trainer.data.preprocess.input_size[1:]))
        batches = model_inputs(trainer.data.test, trainer.data.preprocess, trainer.cfg.channels_last)
        return evaluate(scored, batches, trainer.device, topk=(1,), num_hardest=0, bf16=bf16).accuracy(1)


def dcnn_recipe(recipe: str, data_dir: str, eval_every: float, epochs_scale: float, curve: list,
                eval_bf16: bool) -> dict:
    watch = Stopwatch()
    state: dict = {}

    def check(trainer: Trainer) -> bool:
        state["trainer"] = trainer
        state.setdefault("after_first_step", watch.elapsed())
        spe = trainer.steps_per_epoch
        if trainer.step_in_epoch % max(1, round(eval_every * spe)) and trainer.step_in_epoch != spe:
            return False
        accuracy = watch.excluding(lambda: test_accuracy(trainer, eval_bf16))
        curve.append((watch.elapsed(), trainer.epoch + trainer.step_in_epoch / spe, accuracy))
        return False

    with tempfile.TemporaryDirectory() as tmp:
        base = load_recipe(recipe, {"dataset": data_dir})
        overrides = {"dataset": data_dir, "progress": False, "run_dir": str(Path(tmp) / "run"),
                     "epochs": max(1, round(base.epochs * epochs_scale))}
        scale = overrides["epochs"] / base.epochs  # averaging and freezing start at the same fraction of the run
        if base.weight_average != "none":
            overrides["ema_start_epochs"] = base.ema_start_epochs * scale
        overrides["freeze_after"] = {prefix: epochs * scale for prefix, epochs in base.freeze_after.items()}
        cfg = load_recipe(recipe, overrides)
        train(cfg, after_step=check)
        seconds = curve[-1][0] if curve else watch.elapsed()
    trainer = state["trainer"]
    batch = cfg.batch_size if isinstance(cfg.batch_size, int) else trainer.data.train.num_examples
    model = trainer.model
    return {"seconds": seconds, "epochs": trainer.global_step / trainer.steps_per_epoch,
            "accuracy": curve[-1][2], "images": trainer.data.train.num_examples * cfg.epochs,
            "after_first_step": state["after_first_step"], "first_step_images": batch,
            "dtype": "bf16" if cfg.bf16 else "fp32", "flops_per_image": train_step_flops(model, batch=min(8, batch),
                                                dtype=torch.bfloat16 if cfg.bf16 else torch.float32)}


# ----- FLOPs and the machine's matmul peak --------------------------------------------------------
def train_step_flops(model: nn.Module, batch: int, dtype: torch.dtype, sum_loss: bool = False) -> float:
    """FLOPs of one forward + backward pass per image (matmuls and convolutions, as torch counts them)."""
    model.train()
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    saved = {k: v.clone() for k, v in model.state_dict().items()}  # BN statistics are restored afterwards
    with FlopCounterMode(display=False) as counter:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            out = model(x)
        F.cross_entropy(out.float(), y, reduction="sum" if sum_loss else "mean").backward()
    model.zero_grad(set_to_none=True)
    model.load_state_dict(saved)
    return counter.get_total_flops() / batch


def matmul_peak(dtype: torch.dtype, budget_s: float = 3.0) -> float:
    """FLOP/s of square torch.matmul, at the largest size (up to 2048) whose product fits the budget."""
    best, n = 0.0, 256
    while n <= 2048:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        began = time.perf_counter()
        a @ b
        first = time.perf_counter() - began
        reps = max(1, min(5, int(budget_s / 3 / max(first, 1e-6))))
        began = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - began))
        if first * 8 > budget_s / 3:  # the next size would take 8 times as long
            break
        n *= 2
    return best


class Curve(list):
    """(seconds, epochs, test accuracy) checks, each printed as it is added."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def append(self, check: tuple[float, float, float]) -> None:
        super().append(check)
        seconds, epochs, accuracy = check
        print(f"  {self.name}: {seconds:7.1f} s, epoch {epochs:5.2f}: {100 * accuracy:.2f}%", flush=True)


def first_reaching(curve: list, target: float) -> tuple[float, float] | None:
    return next(((s, e) for s, e, a in curve if a >= target), None)


def load_images(data_dir: str) -> dict:
    """Decode (or read from dcnn's cache) the JPEG folders as the trainer does: uint8 (N, 3, 32, 32)."""
    splits = load_dataset(data_dir)
    train_set, test_set = load_or_decode(splits.train, (32, 32), 3), load_or_decode(splits.test, (32, 32), 3)
    return {"train_x": train_set.images, "train_y": train_set.labels,
            "test_x": test_set.images, "test_y": test_set.labels}


def subset_folder(data_dir: str, counts: dict[str, int], root: Path) -> str:
    """A copy of the folder (symbolic links) with the first counts[split] / 10 images of each class."""
    for split, count in counts.items():
        classes = sorted(p for p in (Path(data_dir) / split).iterdir() if p.is_dir())
        for folder in classes:
            (root / split / folder.name).mkdir(parents=True)
            for path in sorted(folder.iterdir())[:max(1, count // len(classes))]:
                (root / split / folder.name / path.name).symlink_to(path.resolve())
    return str(root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="the cifar10-jpeg folder (train/ and test/)")
    parser.add_argument("--target", type=float, default=0.91)
    parser.add_argument("--eval-every", type=float, default=0.5, help="fraction of an epoch between checks")
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16", help="the baseline's autocast dtype")
    parser.add_argument("--eval-dtype", choices=("bf16", "fp32"), default="bf16",
                        help="autocast dtype of both evaluations (bf16 is about 3x faster where it is native)")
    parser.add_argument("--recipe", default="cifar10_fast")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--max-epochs-scale", type=float, default=1.0, help="scale both recipes' epochs (smoke runs)")
    parser.add_argument("--subset", type=int, default=0, help="train on N images, N/10 per class (0: all)")
    parser.add_argument("--test-subset", type=int, default=0, help="test on N images, N/10 per class (0: all)")
    args = parser.parse_args()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32

    # Both recipes with the allocator setting a dcnn training run on the CPU makes (the trainer would
    # make it only when dcnn's recipe starts, after the baseline ran without it).
    reuse_freed_memory()
    # Pay torch's lazy imports (optimizer construction imports torch._dynamo) before any timing.
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    data_dir = args.data_dir
    if args.subset or args.test_subset:
        full = {"train": 50_000, "test": 10_000}
        counts = {"train": args.subset or full["train"], "test": args.test_subset or full["test"]}
        subset_root = tempfile.TemporaryDirectory(prefix="cifar10-subset-")  # removed when the process exits
        data_dir = subset_folder(args.data_dir, counts, Path(subset_root.name))
    data = load_images(data_dir)
    peaks = {"bf16": matmul_peak(torch.bfloat16), "fp32": matmul_peak(torch.float32)}
    curves = {"dcnn": Curve("dcnn"), "baseline": Curve("baseline")}
    eval_bf16 = args.eval_dtype == "bf16"
    ours = dcnn_recipe(args.recipe, data_dir, args.eval_every, args.max_epochs_scale, curves["dcnn"], eval_bf16)
    rows = [(f"dcnn {args.recipe} ({ours['dtype']})", ours, curves["dcnn"])]
    if not args.skip_baseline:
        rows.append((f"airbench94 (baseline, {args.dtype})",
                     baseline(data, args.eval_every, args.max_epochs_scale, dtype, curves["baseline"], eval_bf16),
                     curves["baseline"]))
    targets = [args.target]
    if not args.skip_baseline and rows[1][1]["accuracy"] < args.target:
        targets.append(rows[1][1]["accuracy"] - 0.005)  # the baseline's final accuracy minus half a point

    load = os.getloadavg()[0]
    print(f"machine: {cpu_model()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, load {load:.2f}; train {len(data['train_y'])} / test {len(data['test_y'])} "
          f"images; matmul peak bf16 {peaks['bf16'] / 1e9:.1f} GFLOP/s, fp32 {peaks['fp32'] / 1e9:.1f} GFLOP/s")
    heads = " | ".join(f"s to {100 * t:.2f}% | epochs" for t in targets)
    print(f"| recipe | {heads} | final test acc | train s | s/epoch | GFLOP/img | GFLOP/s | of bf16 peak "
          "| of fp32 peak |")
    print("|---|" + "---:|---:|" * len(targets) + "---:|" * 7)
    reached = {}
    for name, r, curve in rows:
        cells = []
        for t in targets:
            hit = first_reaching(curve, t)
            reached[(name, t)] = hit
            cells.append("not reached | -" if hit is None else f"{hit[0]:.1f} | {hit[1]:.2f}")
        # Throughput and seconds per epoch after the first step (setup, data and warm-up excluded).
        steady_s = r["seconds"] - r["after_first_step"]
        steady_images = r["images"] - r["first_step_images"]
        if steady_images <= 0:  # a one-step run: count its setup too
            steady_s, steady_images = r["seconds"], r["images"]
        rate = r["flops_per_image"] * steady_images / steady_s
        per_epoch = steady_s * len(data["train_y"]) / steady_images
        print(f"| {name} | {' | '.join(cells)} | {100 * r['accuracy']:.2f}% | {r['seconds']:.1f} | "
              f"{per_epoch:.1f} | {r['flops_per_image'] / 1e9:.3f} | {rate / 1e9:.1f} | "
              f"{100 * rate / peaks['bf16']:.0f}% | {100 * rate / peaks['fp32']:.0f}% |")
    if not args.skip_baseline:
        for t in targets:
            ours, base = reached[(rows[0][0], t)], reached[(rows[1][0], t)]
            ratio = f"{base[0] / ours[0]:.2f}" if ours and base else "n/a (not reached by both)"
            print(f"ratio to {100 * t:.2f}% (baseline seconds / dcnn seconds): {ratio}")


if __name__ == "__main__":
    main()
