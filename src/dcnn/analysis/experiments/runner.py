"""What every experiment shares: its size, training a variant through the trainer, and its outputs.

A variant is a training configuration (a model with options, an optimizer, ...) that
:func:`train_variant` trains with :class:`dcnn.train.trainer.Trainer` itself, for a number of
optimizer steps at a constant learning rate, stopping through the trainer's ``after_step`` hook; the
hook also records the loss of every step and evaluates the model at evenly spaced steps. The trainer's
own run files go to a temporary folder; the variant's folder gets its ``config.yaml``, the final
``model.safetensors`` (usable by ``dcnn eval`` and by ``dcnn experiment lesion``), ``history.csv``
(the loss of each step and the evaluations) and, when tracked, ``gradients.csv``.

An experiment's outputs (:func:`write_outcome`): ``table.csv`` and ``table.md`` (the table it prints),
``figures.json`` (the numbers behind its plots) and its PNG plots.
"""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from rich.console import Console

from dcnn.data.loader import TensorBatches
from dcnn.data.mnist import data_root
from dcnn.data.preprocess import Preprocess
from dcnn.errors import DcnnError
from dcnn.fileio import atomic_output
from dcnn.models import modelfile
from dcnn.train.config import make_config, save_config
from dcnn.train.gradients import GradientHistory, save_figure, write_gradients
from dcnn.train.trainer import Trainer, TrainingDiverged, read_metrics

console = Console(stderr=True)


CIFAR10 = "cifar10-jpeg"  # a plan's dataset: the CIFAR-10 image folder under $DCNN_DATA_DIR


@dataclass(frozen=True)
class Plan:
    """How big an experiment runs: optimizer `steps` of `batch` images from `train` training images of
    `dataset` (`val` more held out for validation), evaluated `evals` times (and before the
    first step) on `test` test images and, with `eval_train`, on that many training images (a seeded
    sample) in evaluation mode. `net` holds model options and `config` TrainConfig values for this size (a
    narrower net, a smaller `image_size`)."""

    dataset: str
    steps: int
    train: int
    test: int
    batch: int = 64
    evals: int = 10
    val: int = 0
    eval_train: int = 0
    net: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    """What the user chose: the size, overrides of its plan, where to write, the seed, and for some
    experiments a dataset, a trained run (`run`) and a plain run (`plain`)."""

    size: str = "small"
    out: Path | None = None
    seed: int = 0
    steps: int | None = None
    subset: int | None = None
    dataset: str | None = None
    device: str = "auto"
    run: Path | None = None
    plain: Path | None = None

    @property
    def folder(self) -> Path:
        """Where the outputs go (run_experiment fills `out` in with the default)."""
        return self.out or Path.cwd()

    def plan(self, sizes: dict[str, Plan]) -> Plan:
        if self.size not in sizes:
            raise DcnnError(f"--size {self.size!r}: choose one of {', '.join(sizes)}.")
        plan = sizes[self.size]
        if self.steps is not None:
            plan = replace(plan, steps=self.steps)
        if self.subset is not None:
            plan = replace(plan, train=self.subset)
        if plan.steps < 1 or plan.train < 1:
            raise DcnnError("--steps and --subset must be at least 1.")
        if plan != sizes[self.size] and "milestones" in plan.config:
            plan = _rescaled_schedule(plan, sizes[self.size])
        return plan


def _rescaled_schedule(plan: Plan, planned: Plan) -> Plan:
    """`plan` (`planned` with other --steps or --subset) with its learning-rate decays (and warmup)
    at the same fractions of training as `planned`'s, and its `epochs` bounding its steps."""
    def epochs(p: Plan) -> float:
        return p.steps / math.ceil(p.train / p.batch)

    scale = epochs(plan) / epochs(planned)
    config = {**plan.config, "epochs": math.ceil(epochs(plan)),
              "milestones": [m * scale for m in planned.config["milestones"]]}
    if "warmup_epochs" in planned.config:
        config["warmup_epochs"] = planned.config["warmup_epochs"] * scale
    return replace(plan, config=config)


@dataclass
class Variant:
    """One configuration of an experiment: `name` (its folder), `label` (in tables and legends) and
    the TrainConfig values that make it what it is."""

    name: str
    label: str
    config: dict[str, Any]


@dataclass
class VariantRun:
    """What training a variant gave."""

    variant: Variant
    losses: list[float]
    evals: list[dict[str, float]]
    params: int
    seconds: float
    model: nn.Module
    preprocess: Preprocess
    gradients: GradientHistory | None = None
    diverged_at: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> dict[str, float]:
        """The last evaluation (an empty dict for a run that diverged before it)."""
        return self.evals[-1] if self.evals and self.diverged_at is None else {}

    def final_loss(self, fraction: float = 0.1) -> float:
        """The mean training loss over the last `fraction` of the steps (NaN if it diverged)."""
        if self.diverged_at is not None or not self.losses:
            return math.nan
        tail = self.losses[-max(1, round(len(self.losses) * fraction)):]
        return sum(tail) / len(tail)

    def figure_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"label": self.variant.label, "losses": self.losses, "evals": self.evals,
                                "params": self.params, "seconds": round(self.seconds, 2),
                                "diverged_at": self.diverged_at, **self.extra}
        if self.gradients is not None:
            data["gradients"] = {"layers": self.gradients.layers, "profile": self.gradients.profile().tolist(),
                                 "total": self.gradients.total().tolist()}
        return data


def cifar10_folder() -> str:
    """The CIFAR-10 image folder under the data root ($DCNN_DATA_DIR)."""
    path = data_root() / "cifar10-jpeg"
    if not (path / "train").is_dir():
        raise DcnnError(f"CIFAR-10 images not found in {path}; set DCNN_DATA_DIR to the folder holding "
                        "cifar10-jpeg/ (train/ and test/ class folders of JPEGs), or give --dataset.")
    return str(path)


def base_config(plan: Plan, settings: Settings) -> dict[str, Any]:
    """The TrainConfig values every variant of an experiment shares: the plan's data and size (`val`
    images held out, then `train` and `test` images kept, every class in proportion, drawn with the
    seed), the seed and device; the mean and std fitted on the training images; `epochs` only bounds
    the steps (the hook stops at plan.steps)."""
    dataset = settings.dataset or plan.dataset
    return {"dataset": cifar10_folder() if dataset == CIFAR10 else dataset, "train_limit": plan.train,
            "test_limit": plan.test, "val_size": plan.val, "batch_size": plan.batch, "eval_batch_size": 500,
            "epochs": plan.steps, "normalize": "dataset", "progress": False, "seed": settings.seed,
            "device": settings.device, **plan.config}


def net_variant(name: str, label: str, plan: Plan, model: str = "stacknet", config: dict[str, Any] | None = None,
                **options: Any) -> Variant:
    """A variant training `model` with the plan's net options updated by `options`, and `config`."""
    return Variant(name, label, {"model": model, "model_options": {**plan.net, **options}, **(config or {})})


def _evaluate(trainer: Trainer, step: int, plan: Plan) -> dict[str, float]:
    result = trainer.evaluate_on(trainer.data.test, topk=(1,), num_hardest=0)
    row = {"step": step, "test_loss": result.mean_loss, "test_acc": result.accuracy(1)}
    val = trainer.validate()
    if val is not None:
        row.update(val_loss=val.mean_loss, val_acc=val.accuracy(1))
    train = trainer.data.train
    if plan.eval_train and isinstance(train, TensorBatches):
        # the same seeded sample at every evaluation (image folders are stored class by class)
        pick = torch.randperm(len(train.labels), generator=torch.Generator().manual_seed(0))[: plan.eval_train]
        seen = TensorBatches(train.images[pick], train.labels[pick], 500)
        result = trainer.evaluate_on(seen, topk=(1,), num_hardest=0)
        row.update(train_eval_loss=result.mean_loss, train_eval_acc=result.accuracy(1))
    return row


def train_variant(variant: Variant, plan: Plan, base: dict[str, Any], out_dir: Path) -> VariantRun:
    """Train `variant` for `plan.steps` steps with the trainer; write its folder in `out_dir`."""
    values = {**base, **variant.config}
    eval_steps = {round(k * plan.steps / plan.evals) for k in range(1, plan.evals + 1)}
    losses: list[float] = []
    evals: list[dict[str, float]] = []
    last = {"loss_sum": 0.0, "seen": 0}
    eval_time = 0.0
    diverged = None

    def after_step(trainer: Trainer) -> bool:
        nonlocal eval_time
        running = trainer.running
        if running["seen"] < last["seen"]:  # a new epoch restarted the running sums
            last.update(loss_sum=0.0, seen=0)
        losses.append((running["loss_sum"] - last["loss_sum"]) / max(1, running["seen"] - last["seen"]))
        last.update(loss_sum=running["loss_sum"], seen=running["seen"])
        if trainer.global_step in eval_steps:
            started = time.perf_counter()
            evals.append(_evaluate(trainer, trainer.global_step, plan))
            eval_time += time.perf_counter() - started
        return trainer.global_step >= plan.steps

    with tempfile.TemporaryDirectory(prefix="dcnn-experiment-") as scratch:
        cfg = make_config({**values, "run_dir": scratch})
        trainer = Trainer(cfg, Path(scratch), after_step)
        if trainer.data.test is None:
            raise DcnnError(f"{cfg.dataset} has no test split; an experiment needs one: give a dataset name or a "
                            "folder with train/ and test/ class folders.")
        evals.append(_evaluate(trainer, 0, plan))
        started = time.perf_counter()
        try:
            trainer.fit()
        except TrainingDiverged:
            diverged = trainer.global_step + 1
        seconds = time.perf_counter() - started - eval_time
    folder = out_dir / variant.name
    epochs = max(1, -(-min(plan.steps, trainer.global_step) // trainer.steps_per_epoch))
    save_config(cfg.model_copy(update={"run_dir": str(folder), "epochs": epochs}), folder / "config.yaml")
    modelfile.save_model_file(trainer.model, folder / "model.safetensors", trainer.metadata, trainer.file_tensors)
    run = VariantRun(variant, losses, evals, sum(p.numel() for p in trainer.model.parameters()), seconds,
                     trainer.model, trainer.data.preprocess, trainer.gradients.history() if trainer.gradients else None,
                     diverged)
    write_history(run, folder / "history.csv")
    if run.gradients is not None:
        write_gradients(run.gradients, folder / "gradients.csv")
    final = run.final
    outcome = f"test accuracy {final['test_acc']:.1%}" if final else f"diverged at step {diverged}"
    console.print(f"{variant.label}: {len(losses)} steps in {seconds:.1f} s, {outcome}", highlight=False)
    return run


def write_history(run: VariantRun, path: Path) -> None:
    """One row per step: its training loss and, at evaluation steps, the evaluation."""
    keys = sorted({k for row in run.evals for k in row} - {"step"})
    by_step = {int(row["step"]): row for row in run.evals}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["step", "train_loss", *keys])
    for step in range(len(run.losses) + 1):
        row = by_step.get(step, {})
        loss = run.losses[step - 1] if step else ""
        writer.writerow([step, loss, *(row.get(k, "") for k in keys)])
    with atomic_output(path) as handle:
        handle.write(buffer.getvalue().encode())


def steps_trained(run_dir: Path) -> int | None:
    """The optimizer steps a run took: the last step of an experiment variant's history.csv, or of a
    `dcnn train` run's metrics; None when neither is there."""
    history = run_dir / "history.csv"
    if history.is_file():
        rows = history.read_text().splitlines()
        return int(rows[-1].split(",", 1)[0]) if len(rows) > 1 else None
    for fmt in ("csv", "jsonl"):
        rows = read_metrics(run_dir, fmt)
        if rows:
            return int(rows[-1]["step"])
    return None


# ----- outputs ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """An experiment's results: its `table` (rows of column → value, in column order), the numbers
    behind its figures (`figures`, written as JSON), the `plots` (file name → figure) and `notes`."""

    title: str
    table: list[dict[str, Any]]
    figures: dict[str, Any]
    plots: dict[str, Figure]
    notes: list[str] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        return list(self.table[0]) if self.table else []

    def cells(self) -> list[list[str]]:
        return [[format_cell(row.get(c)) for c in self.columns] for row in self.table]


def runs_outcome(title: str, table: list[dict[str, Any]], runs: list[VariantRun], plots: dict[str, Figure],
                 notes: list[str]) -> Outcome:
    """The outcome of an experiment that trained `runs`: their figure data is what figures.json holds."""
    return Outcome(title, table, {"runs": [run.figure_data() for run in runs]}, plots, notes)


def format_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 or abs(value) >= 1e5 else f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def to_markdown(outcome: Outcome) -> str:
    lines = [f"**{outcome.title}**", "", "| " + " | ".join(outcome.columns) + " |",
             "|" + "---|" * len(outcome.columns)]
    lines += ["| " + " | ".join(cells) + " |" for cells in outcome.cells()]
    return "\n".join([*lines, "", *(f"- {note}" for note in outcome.notes)]) + "\n"


def write_outcome(outcome: Outcome, out_dir: Path) -> list[Path]:
    """Write table.csv, table.md, figures.json and the plots into `out_dir`, each all or nothing."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=outcome.columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(outcome.table)
    written = {out_dir / "table.csv": buffer.getvalue(), out_dir / "table.md": to_markdown(outcome),
               out_dir / "figures.json": json.dumps(outcome.figures, indent=1, allow_nan=True) + "\n"}
    for path, text in written.items():
        with atomic_output(path) as handle:
            handle.write(text.encode())
    return [*written, *(save_figure(figure, out_dir / name) for name, figure in outcome.plots.items())]


# ----- plots --------------------------------------------------------------------------------------


def smooth(values: list[float], window: int) -> list[float]:
    """Running mean over the last `window` values (fewer at the start)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_losses(axes: Axes, runs: list[VariantRun], log: bool = False) -> None:
    """Each run's training loss by step, smoothed over 1/25 of the steps (marked step by step when
    there are few, as for a run that diverged early)."""
    for run in runs:
        window = max(1, len(run.losses) // 25)
        label = run.variant.label + (f" (diverged at step {run.diverged_at})" if run.diverged_at else "")
        axes.plot(range(1, len(run.losses) + 1), smooth(run.losses, window), "-o" if len(run.losses) <= 50 else "-",
                  markersize=3, label=label)
    if log:
        axes.set_yscale("log")
    axes.set_xlabel("training step")
    axes.set_ylabel("training loss (running mean)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)


def plot_evals(axes: Axes, runs: list[VariantRun], key: str = "test_acc", ylabel: str = "test accuracy",
               style: str = "-o") -> None:
    """An evaluated quantity by step, one line per run."""
    for run in runs:
        points = [(row["step"], row[key]) for row in run.evals if key in row]
        axes.plot([p[0] for p in points], [p[1] for p in points], style, markersize=3, label=run.variant.label)
    axes.set_xlabel("training step")
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)


def figure_grid(columns: int, rows: int = 1, title: str = "") -> tuple[Figure, list[Axes]]:
    figure = Figure(figsize=(4.6 * columns, 3.6 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel().tolist()
    if title:
        figure.suptitle(title)
    return figure, axes

