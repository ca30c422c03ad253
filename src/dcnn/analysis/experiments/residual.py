"""Residual networks: the degradation problem (He et al. 2016a, §4.1-4.2, Fig. 6) and residual nets
as ensembles of shallow paths (Veit, Wilber & Belongie 2016, §4: lesion studies)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from dcnn.analysis.experiments import register_experiment
from dcnn.analysis.experiments.runner import (
    CIFAR10,
    Outcome,
    Plan,
    Settings,
    Variant,
    base_config,
    figure_grid,
    net_variant,
    plot_losses,
    runs_outcome,
    steps_trained,
    train_variant,
)
from dcnn.data.loader import TensorBatches
from dcnn.data.pipeline import make_batches, model_inputs
from dcnn.data.preprocess import Preprocess
from dcnn.device import resolve_device
from dcnn.errors import DcnnError
from dcnn.evaluate.metrics import evaluate
from dcnn.evaluate.run import model_file_of, preprocess_of, run_test_split
from dcnn.models.modelfile import load_model_file

# He et al. 2016a, §4.2: 3x3 convs, batch norm, ReLU, down-sampling by stride 2, option-A shortcuts;
# SGD with momentum 0.9, weight decay 1e-4, lr 0.1 divided by 10 twice (at 32k and 48k of 64k
# iterations, i.e. at 50% and 75% of training; the small size keeps it constant). The full size
# trains 20 epochs of a 10,000-image subset instead of 182 epochs of 50,000: Fig. 6's finding is
# about training error, and with few steps a smaller training set lets the nets' depth, rather than
# the number of images seen, decide how well they fit it. It warms the lr up over the first 10% of
# training, as §4.2 does for its deepest net (0.01 for about 400 iterations): in 2.5% of the
# paper's steps, the 56-layer residual net's first steps at 0.1 cost it the run (without warmup it
# ended 0.3 points better than ResNet-20 with seed 0 and 10.7 points worse with seed 1; README).
CIFAR_NET = {"norm": "bn", "act": "relu", "pool": "stride"}
CIFAR_SGD = {"lr": 0.1, "weight_decay": 1e-4}
SIZES = {
    "small": Plan(CIFAR10, steps=12, train=400, test=100, batch=32, evals=2, eval_train=200,
                  net={**CIFAR_NET, "widths": [4, 8, 16]}, config={"image_size": 16}),
    "full": Plan(CIFAR10, steps=20 * 79, train=10_000, test=5000, batch=128, evals=10, eval_train=10_000,
                 net={**CIFAR_NET, "widths": [8, 16, 32]},
                 config={"image_size": 16, "channels_last": True, "epochs": 20, "schedule": "multistep",
                         "milestones": [10, 15], "warmup_epochs": 2}),
}
# Blocks per stage (n) of the two depths, 6n + 2 weighted layers: 8 and 14 (small), 20 and 56 (full,
# the paper's Fig. 6 pair).
DEPTHS = {"small": (1, 2), "full": (3, 9)}


def _layers(n: int) -> int:
    return 6 * n + 2


@register_experiment("degradation")
def degradation(settings: Settings) -> Outcome:
    """Degradation (He et al. 2016a, Fig. 6): plain and residual CIFAR-10 nets at two depths; the deeper
    plain net trains worse than the shallower, the deeper residual net better.

    The nets are the paper's (§4.2: 6n+2 layers of 3x3 convs with batch norm, option-A shortcuts in
    the residual ones, so both kinds have the same parameters), half as wide, on 16x16 images, trained
    for 20 epochs of 10,000 images (full size: 1580 steps of 128, lr warmed up over 2 epochs and
    divided by 10 at epochs 10 and 15) instead of 182 epochs of 50,000."""
    plan = settings.plan(SIZES)
    shallow, deep = DEPTHS.get(settings.size, DEPTHS["full"])
    variants = [net_variant(f"{kind}-{_layers(n)}", f"{'ResNet' if shortcut else 'plain'}-{_layers(n)}", plan,
                            config=CIFAR_SGD, depths=[n, n, n], shortcut=shortcut)
                for kind, shortcut in (("plain", None), ("resnet", "A")) for n in (shallow, deep)]
    base = base_config(plan, settings)
    runs = [train_variant(v, plan, base, settings.folder) for v in variants]
    table = [{"net": run.variant.label, "weighted layers": _layers(run.variant.config["model_options"]["depths"][0]),
              "parameters": run.params, "train loss": run.final_loss(),
              "train error": 1 - run.final["train_eval_acc"] if run.final else None,
              "test error": 1 - run.final["test_acc"] if run.final else None, "seconds": round(run.seconds, 1)}
             for run in runs]
    figure, panels = figure_grid(3, title=f"Plain and residual nets on CIFAR-10, {plan.steps} steps of batch "
                                          f"{plan.batch} (dashed: training error, solid: test error)")
    for axes, pair in zip(panels, (runs[:2], runs[2:]), strict=False):
        for run, colour in zip(pair, ("tab:blue", "tab:red"), strict=True):
            for key, style, label in (("train_eval_acc", "--", "train"), ("test_acc", "-", "test")):
                points = [(row["step"], 1 - row[key]) for row in run.evals]
                axes.plot(*zip(*points, strict=True), style, color=colour, label=f"{run.variant.label} {label}")
        axes.set_xlabel("training step")
        axes.set_ylabel("error")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    plot_losses(panels[2], runs)
    errors = {row["net"]: row["train error"] for row in table}
    decays = plan.config.get("milestones")
    schedule = f" divided by 10 at epochs {', '.join(map(str, decays))}" if decays else " (constant)"
    if plan.config.get("warmup_epochs"):
        schedule = f" after a linear warmup of {plan.config['warmup_epochs']:g} epochs,{schedule}"
    notes = [f"On {plan.train} CIFAR-10 training images (train error measured on {plan.eval_train} of them in "
             f"evaluation mode) and {plan.test} test images; SGD, momentum 0.9, lr 0.1{schedule}, weight decay "
             f"1e-4, batch {plan.batch}, widths {plan.net['widths']}."]
    for kind in ("plain", "ResNet"):  # Fig. 6 compares training error (its dashed curves)
        a, b = (f"{kind}-{_layers(shallow)}", f"{kind}-{_layers(deep)}")
        if errors[a] is not None and errors[b] is not None:
            verdict = "higher" if errors[b] > errors[a] else "lower"
            notes.append(f"{b} ends with a {verdict} training error than {a} "
                         f"({errors[b]:.1%} against {errors[a]:.1%}).")
    return runs_outcome("Degradation: deeper plain nets train worse, deeper residual nets better (He et al. 2016a)",
                        table, runs, {"degradation.png": figure}, notes)


# ----- lesion ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """A block of a net's `stages`: its place (stage, index in the stage's Sequential) and whether its
    output has its input's shape (only such blocks can be deleted or swapped)."""

    stage: int
    index: int
    number: int  # 1-based position among the stage's blocks
    same_shape: bool

    @property
    def name(self) -> str:
        return f"{self.stage + 1}.{self.number}"


def block_modules(model: nn.Module) -> list[tuple[int, int, nn.Module]]:
    """(stage, index in the stage, module) of each block of a ResNet-like model: the members of
    ``model.stages[i]`` that have a `shortcut` (residual blocks, and their plain counterparts whose
    shortcut is None)."""
    stages = getattr(model, "stages", None)
    if not isinstance(stages, nn.Sequential):
        raise DcnnError("the lesion study needs a ResNet-like model (stages of residual blocks); "
                        f"{type(model).__name__} has none.")
    return [(s, i, m) for s, stage in enumerate(stages) for i, m in enumerate(stage) if hasattr(m, "shortcut")]


def find_blocks(model: nn.Module, sample: torch.Tensor) -> list[Block]:
    """The blocks of a ResNet-like model, and whether each keeps its input's shape on `sample`."""
    members = block_modules(model)
    shapes: dict[nn.Module, bool] = {}
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.__setitem__(m, i[0].shape == o.shape))
             for _, _, m in members]
    with torch.no_grad():
        model.eval()(sample)
    for hook in hooks:
        hook.remove()
    numbers = [sum(1 for t, _, _ in members[:k] if t == s) + 1 for k, (s, _, _) in enumerate(members)]
    return [Block(s, i, n, shapes[m]) for (s, i, m), n in zip(members, numbers, strict=True)]


class Lesioned:
    """Deletes blocks (an identity in their place) or swaps two, and puts them back on exit."""

    def __init__(self, model: nn.Module, delete: Sequence[Block] = (), swap: tuple[Block, Block] | None = None):
        self.stages = model.stages
        self.delete, self.swap = list(delete), swap
        self.saved: list[tuple[int, int, nn.Module]] = []

    def __enter__(self) -> None:
        self.saved = [(b.stage, b.index, self.stages[b.stage][b.index]) for b in self.delete]
        for b in self.delete:
            self.stages[b.stage][b.index] = nn.Identity()
        if self.swap:
            self._swap()

    def _swap(self) -> None:
        a, b = self.swap
        stage = self.stages[a.stage]
        stage[a.index], stage[b.index] = stage[b.index], stage[a.index]

    def __exit__(self, *exc: object) -> None:
        if self.swap:
            self._swap()
        for s, i, module in self.saved:
            self.stages[s][i] = module


@dataclass
class LesionNet:
    label: str
    model: nn.Module
    preprocess: Preprocess


def _accuracy(net: LesionNet, batches: TensorBatches, device: torch.device) -> float:
    result = evaluate(net.model, model_inputs(batches, net.preprocess), device, topk=(1,), num_hardest=0)
    return result.accuracy(1)


def lesion_rows(net: LesionNet, blocks: list[Block], batches: TensorBatches, device: torch.device,
                max_k: int, draws: int, seed: int) -> dict[str, float]:
    """Accuracy with no lesion, each block deleted, k random blocks deleted (mean of `draws`, k = 1 to
    `max_k`) and each pair of neighbouring blocks swapped."""
    deletable = [b for b in blocks if b.same_shape]
    rows = {"none": _accuracy(net, batches, device)}
    for block in deletable:
        with Lesioned(net.model, delete=[block]):
            rows[f"delete {block.name}"] = _accuracy(net, batches, device)
    generator = torch.Generator().manual_seed(seed)
    for k in range(1, max_k + 1):
        picks = [torch.randperm(len(deletable), generator=generator)[:k].tolist() for _ in range(draws)]
        scores = []
        for pick in picks:
            with Lesioned(net.model, delete=[deletable[i] for i in pick]):
                scores.append(_accuracy(net, batches, device))
        rows[f"delete {k} random"] = sum(scores) / len(scores)
    for a, b in pairwise(deletable):
        if a.stage == b.stage and b.number == a.number + 1:
            with Lesioned(net.model, swap=(a, b)):
                rows[f"swap {a.name}-{b.name}"] = _accuracy(net, batches, device)
    return rows


def _load_net(label: str, source: Path, device: torch.device) -> tuple[LesionNet, dict[str, Any]]:
    model, meta = load_model_file(model_file_of(source), device)
    return LesionNet(label, model, preprocess_of(meta)), meta


def _train_plain_counterpart(run: Path, settings: Settings) -> LesionNet:
    """RUN's configuration without shortcuts, trained for as many steps as RUN was (same data,
    seed, optimizer and schedule)."""
    config_path = run / "config.yaml"
    steps = settings.steps or (steps_trained(run) if run.is_dir() else None)
    if not config_path.is_file() or not steps:
        raise DcnnError(f"{run} is not a run directory with its config.yaml and metrics (or history.csv): give a "
                        "trained plain net with --plain, or RUN's directory.")
    values = yaml.safe_load(config_path.read_text())
    values.update(model_options={**values.get("model_options", {}), "shortcut": None}, progress=False,
                  device=settings.device)
    plan = Plan(values["dataset"], steps=steps, train=1, test=1, evals=1)
    trained = train_variant(Variant("plain-counterpart", "plain counterpart", values), plan, {}, settings.folder)
    return LesionNet("plain", trained.model, trained.preprocess)


LESION_SIZES = {"small": (500, 4, 3), "full": (2000, 10, 5)}  # test images, largest k, draws per k


@register_experiment("lesion", takes_run=True)
def lesion(settings: Settings) -> Outcome:
    """Lesion study (Veit, Wilber & Belongie 2016, §4, Fig. 3 and 5): delete each residual block of a
    trained RUN in turn, delete k random blocks, swap neighbouring blocks; accuracy after each, and
    the same for a plain net (--plain RUN, else RUN's plain counterpart trained here).

    A residual net behaves like an ensemble of many paths of different lengths, most of them short:
    removing one block removes only the paths through it, and accuracy degrades smoothly; in a plain
    net every path goes through every layer. Blocks that change the shape of their input (the first
    of a down-sampling stage) cannot be deleted or swapped and are left alone, as Veit et al. note."""
    if settings.size not in LESION_SIZES:
        raise DcnnError(f"--size {settings.size!r}: choose one of {', '.join(LESION_SIZES)}.")
    count, max_k, draws = LESION_SIZES[settings.size]
    count = settings.subset or count
    device = resolve_device(settings.device)
    run = Path(settings.run or ".")
    residual, meta = _load_net("residual", run, device)
    if all(m.shortcut is None for _, _, m in block_modules(residual.model)):
        raise DcnnError(f"{run} holds a plain net (no block has a shortcut); give the residual run as RUN.")
    plain = _load_net("plain", settings.plain, device)[0] if settings.plain else _train_plain_counterpart(run, settings)
    split, _, _, _ = run_test_split(meta)
    pick = torch.randperm(len(split), generator=torch.Generator().manual_seed(settings.seed))[:count].tolist()
    batches = make_batches(split.subset(sorted(pick)), residual.preprocess, 500, device)
    sample = model_inputs(batches, residual.preprocess).__next__()[0][:1]
    results, structures = {}, {}
    for net in (residual, plain):
        blocks = find_blocks(net.model, sample)
        structures[net.label] = [(b.name, b.same_shape) for b in blocks]
        k = min(max_k, sum(b.same_shape for b in blocks))
        results[net.label] = lesion_rows(net, blocks, batches, device, k, draws, settings.seed)
    keys = list(dict.fromkeys([*results["residual"], *results["plain"]]))
    table = [{"lesion": key, "residual accuracy": results["residual"].get(key),
              "plain accuracy": results["plain"].get(key)} for key in keys]
    figure = _lesion_figure(results, draws)
    singles = {label: [v for k, v in rows.items() if k.startswith("delete ") and "random" not in k]
               for label, rows in results.items()}
    notes = [f"{len(batches.labels)} test images of {meta['dataset']}; random deletions: mean of {draws} draws.",
             *(f"{label}: deleting one block leaves {sum(v) / len(v):.1%} accuracy on average (from "
               f"{results[label]['none']:.1%})" for label, v in singles.items() if v)]
    return Outcome(title="Lesion study: accuracy after deleting or swapping blocks (Veit et al. 2016)", table=table,
                   figures={"results": results, "blocks": structures, "draws": draws},
                   plots={"lesion.png": figure}, notes=notes)


def _lesion_figure(results: dict[str, dict[str, float]], draws: int) -> Figure:
    figure, (single, random, swaps) = figure_grid(3, title="Lesion study (Veit et al. 2016)")
    for label, rows in results.items():
        for axes, kind in ((single, "delete"), (random, "random"), (swaps, "swap")):
            keys = [k for k in rows if k.startswith(kind if kind != "random" else "delete ")
                    and (kind == "random") == ("random" in k)]
            x = [int(k.split()[1]) for k in keys] if kind == "random" else list(range(1, len(keys) + 1))
            line = axes.plot(x, [rows[k] for k in keys], "-o", markersize=3, label=label)[0]
            axes.axhline(rows["none"], color=line.get_color(), linestyle=":", linewidth=1)
    for axes, xlabel in ((single, "deleted block (by depth)"), (random, f"blocks deleted at random (mean of {draws})"),
                         (swaps, "swapped pair of neighbours (by depth)")):
        axes.set_xlabel(xlabel)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel("test accuracy")
        axes.set_ylim(0, 1)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    single.set_title("dotted: no lesion", fontsize=9)
    return figure
