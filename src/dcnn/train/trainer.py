"""The training loop: mini-batch or full-batch gradient descent with everything a run needs.

`train(config)` runs from scratch, `resume(run_dir)` continues a run from its newest good
checkpoint. A run directory holds ``config.yaml``, ``data.json`` (classes, counts, preprocessing),
``metrics.csv`` (or ``.jsonl``) with one row per epoch and ``curves.png`` drawing them, ``checkpoints/``, the final
``model.safetensors`` and ``best.safetensors`` (best validation accuracy), ``skipped.csv`` when
files could not be read, and ``eval/`` with the test-set report.

The data path reads straight through: dataset → loader (uint8 batches in the resumable order) →
augmentation on [0, 1] pixels → normalization → model → loss → checkpoint → report. The trainer
consumes batches as `evaluate(model, loader)` does.

Exact resumption: the data order of epoch e is drawn from a generator seeded with (seed, e),
augmentation from one seeded with (seed, global step), and the global RNG state (dropout) is
checkpointed; so a resumed run takes the same steps as an uninterrupted one.

Under torchrun (or ``dcnn train --nproc N``) the same loop runs in every process with
DistributedDataParallel; what each process reads, how the loss is shared and what rank 0 alone does
is described in :mod:`dcnn.train.distributed`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from dcnn.data.augment import build_augment
from dcnn.data.datasets import hold_out, limit, load_dataset
from dcnn.data.folder import Skipped
from dcnn.data.loader import Batches, FileBatches
from dcnn.data.pipeline import in_layout, make_batches, model_inputs, plan_preprocess, sample_images
from dcnn.data.preprocess import FUSED_REPAID, Preprocess
from dcnn.data.whitening import channel_stats, fit_whitening
from dcnn.device import native_bf16, resolve_device, reuse_freed_memory
from dcnn.errors import DcnnError
from dcnn.evaluate.metrics import ClassificationResult, evaluate
from dcnn.evaluate.report import write_report
from dcnn.evaluate.views import ViewModel
from dcnn.fileio import atomic_output
from dcnn.models import create_model, get_model_cfg, load_pretrained
from dcnn.models.modelfile import model_metadata, save_model_file
from dcnn.train import checkpoint as ckpt
from dcnn.train.averaging import WeightAverage
from dcnn.train.config import RESUME_OPTIONS, TrainConfig, make_config, save_config
from dcnn.train.curves import save_training_curves
from dcnn.train.distributed import Distributed, session, sync_batch_norm
from dcnn.train.gradients import GradientRecorder
from dcnn.train.optim import build_optimizer, build_scheduler, l1_penalty

console = Console(stderr=True)
METRIC_FIELDS = ["epoch", "step", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time_s",
                 "images_per_s"]


# Held out for validation when the recipe gives neither val_size nor val_split.
DEFAULT_VAL_SPLIT = 0.1


class TrainingDiverged(DcnnError):
    """The loss became NaN or infinite."""


@dataclass
class Data:
    """A dataset prepared for one model: uint8 batches on the training device, and how they become
    model input. `test` is None for a dataset without a test split (the report is then on `val`)."""

    train: Batches
    val: Batches | None
    test: Batches | None
    class_names: list[str]
    preprocess: Preprocess
    counts: dict[str, list[int]]
    scan_skipped: list[Skipped]
    held_out: tuple[float, int] | None = None  # a flat folder's validation share and seed (what eval reads)

    @property
    def skipped(self) -> list[Skipped]:
        """Files left out (unreadable, not images, ...), each once, with the reason."""
        seen, out = set(), []
        for skips in (self.scan_skipped, *(b.skipped for b in (self.train, self.val, self.test) if b is not None)):
            for skip in skips:
                if skip.path not in seen:
                    seen.add(skip.path)
                    out.append(skip)
        return out


def prepare_data(cfg: TrainConfig, model_cfg: Any, device: torch.device) -> Data:
    """Load the dataset, split off validation, decode, fit the preprocessing on the training split."""
    splits = load_dataset(cfg.dataset, cfg.data_dir, cfg.download)
    train, val, held = splits.train, splits.val, None
    if val is not None:
        if cfg.given() & {"val_size", "val_split"}:
            raise DcnnError(f"val_size / val_split: {cfg.dataset} has its own validation folder (val/); "
                            "remove them or merge the folders.")
    else:
        fraction = cfg.val_split
        if fraction is None:
            fraction = DEFAULT_VAL_SPLIT if cfg.val_size is None else cfg.val_size / max(1, len(train))
        if fraction >= 1:
            raise DcnnError(f"val_size {cfg.val_size} leaves no training data (the split has {len(train)} images).")
        train, val = hold_out(train, fraction, cfg.seed)
        held = (fraction, cfg.seed) if val is not None and splits.test is None else None
    train, test = limit(train, cfg.train_limit, cfg.seed), splits.test
    if test is not None:
        test = limit(test, cfg.test_limit, cfg.seed)
    prep = plan_preprocess(splits, model_cfg, cfg.fit, cfg.image_size)
    common = dict(loading=cfg.loading, workers=cfg.workers, strict=cfg.strict, max_pixels=cfg.max_pixels,
                  progress=cfg.progress)
    batch = len(train) if cfg.batch_size == "full" else min(cfg.batch_size, len(train))
    train_batches = make_batches(train, prep, batch, device, order_seed=cfg.seed,
                                 balanced=cfg.class_balance == "sampler", **common)
    if train_batches.num_examples == 0:
        skipped = splits.skipped + train_batches.skipped
        first_reason = f" (the first: {skipped[0].reason})" if skipped else ""
        raise DcnnError(f"no training image of {cfg.dataset} could be read: {len(skipped)} file(s) skipped"
                        f"{first_reason}.")
    val_batches = make_batches(val, prep, cfg.eval_batch_size, device, **common) if val is not None else None
    test_batches = make_batches(test, prep, cfg.eval_batch_size, device, **common) if test is not None else None
    if cfg.normalize == "dataset" or cfg.whitening == "zca":
        sample = sample_images(train_batches, seed=cfg.seed)
        if cfg.whitening == "zca":
            prep = prep.with_whitening(fit_whitening(sample, "zca", cfg.whitening_epsilon))
        else:
            prep = prep.with_stats(*channel_stats(sample))
    k = len(splits.class_names)  # images per class that were read (skipped files not counted)
    counts = {name: torch.bincount(batches.labels.cpu(), minlength=k).tolist()
              for name, batches in (("train", train_batches), ("val", val_batches), ("test", test_batches))
              if batches is not None}
    return Data(train_batches, val_batches, test_batches, splits.class_names, prep, counts, splits.skipped, held)


def classification_loss(
    outputs: torch.Tensor | tuple[torch.Tensor, ...], targets: torch.Tensor, cfg: TrainConfig,
    aux_weights: tuple[float, ...], class_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross entropy of the main logits plus weighted auxiliary losses; returns (loss, main logits).
    `targets` are class indices, or probabilities (N, K) after mixup/cutmix."""
    logits, *aux = outputs if isinstance(outputs, tuple) else (outputs,)

    def ce(x: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(x.float(), targets, weight=class_weights, label_smoothing=cfg.label_smoothing)

    loss = ce(logits)
    for weight, aux_logits in zip(aux_weights, aux, strict=True):
        loss = loss + weight * ce(aux_logits)
    return loss, logits


def freeze_backbone(model: nn.Module) -> list[nn.Module]:
    """Stop every parameter but the classifier's from learning; returns the backbone's normalization
    layers, which the trainer keeps in eval mode (running statistics fixed, as Keras does for a
    layer with trainable=False)."""
    head = {id(p) for p in model.get_classifier().parameters()}
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in head)
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters())]


def frozen_after(model: nn.Module, cfg: TrainConfig, steps_per_epoch: int) -> list[tuple[int, list[nn.Parameter]]]:
    """freeze_after as (first frozen step, parameters) pairs: from that optimizer step on (the step
    decides it, so a resumed run freezes them again) the parameters have no gradient, and no optimizer
    moves them, momentum and weight decay included."""
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    plan = []
    for prefix, epochs in cfg.freeze_after.items():
        params = [p for name, p in trainable if name.startswith(prefix)]
        if not params:
            heads = sorted({name.split(".")[0] for name, _ in trainable})
            raise DcnnError(f"freeze_after: {prefix!r} begins no trainable parameter's name of {cfg.model} "
                            f"(they begin with {', '.join(heads)})")
        plan.append((round(epochs * steps_per_epoch), params))
    return plan


def balanced_class_weights(counts: list[int], device: torch.device) -> torch.Tensor:
    """Loss weights N / (K · n_c) (King & Zeng 2001; scikit-learn's "balanced"): every class
    contributes as much to the loss as it would in a balanced set; a class absent from training gets 0."""
    n = torch.tensor(counts, dtype=torch.float32)
    present = n > 0
    weights = torch.zeros_like(n)
    weights[present] = n.sum() / (present.sum() * n[present])
    return weights.to(device)


class Trainer:
    """Owns one run: model, optimizer, schedule, data, run directory and the loop."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, after_step: Callable[[Trainer], bool] | None = None,
                 dist: Distributed | None = None):
        """`after_step(trainer)` runs after every optimizer step; returning True ends training there
        (benchmarks use it to evaluate on the fly and stop at a target accuracy; in a distributed run
        it must decide the same in every process). `dist`: this process's place in a distributed run
        (default: the only process)."""
        self.cfg = cfg
        self.run_dir = run_dir
        self.dist = dist or Distributed()
        self.dist.check(cfg.sync_bn)
        console.quiet = not self.dist.is_main  # rank 0 speaks for the run
        self.device = self.dist.place(resolve_device(cfg.device))
        if self.device.type == "cpu":
            reuse_freed_memory()
        self.bf16 = native_bf16(self.device) if cfg.bf16 == "auto" else cfg.bf16
        self.after_step = after_step
        torch.manual_seed(cfg.seed)
        model_cfg = get_model_cfg(cfg.model)
        self.data = prepare_data(cfg, model_cfg, self.device)
        self.data.train.order.shard(self.dist.rank, self.dist.world_size)
        self.model = create_model(cfg.model, num_classes=len(self.data.class_names),
                                  in_chans=self.data.preprocess.input_size[0], **cfg.model_options)
        if cfg.init_from:
            weights = ckpt.initial_weights(cfg.init_from)
            load_pretrained(self.model, weights)
            if cfg.init_classes:
                ckpt.init_class_rows(self.model, cfg.init_from, weights, self.data.class_names, cfg.init_classes)
        elif self.model.data_init_images:  # e.g. airbench's whitening filters, fitted before training
            sample = sample_images(self.data.train, limit=self.model.data_init_images, seed=cfg.seed)
            self.model.init_from_data(self.data.preprocess.normalize(sample))
        if cfg.sync_bn:
            self.model = sync_batch_norm(self.model, self.device, cfg.model)
        self.frozen_norms = freeze_backbone(self.model) if cfg.freeze == "backbone" else []
        self.model.to(self.device)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.parallel_model = self.dist.wrap(self.model)  # what the training step calls
        self.steps_per_epoch = len(self.data.train)
        # The compiled conversion of batches to model input where this run repays its compilation.
        values = cfg.epochs * self.data.train.num_examples * math.prod(self.data.preprocess.input_size)
        self.fused = values >= FUSED_REPAID
        self.augment = build_augment(cfg.augment, len(self.data.class_names))
        if self.augment is not None:
            self.augment.fit(sample_images(self.data.train, seed=cfg.seed))
        self.class_weights = (balanced_class_weights(self.data.counts["train"], self.device)
                              if cfg.class_balance == "loss" else None)
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.steps_per_epoch)
        self.average = None if cfg.weight_average == "none" else WeightAverage(
            self.model, cfg.weight_average, cfg.ema_decay, cfg.ema_every,
            start_step=round(cfg.ema_start_epochs * self.steps_per_epoch),
            total_steps=cfg.epochs * self.steps_per_epoch, warmup_power=cfg.ema_warmup_power)
        self.aux_weights = auxiliary_weights(self.model, cfg)
        self.freezing = frozen_after(self.model, cfg, self.steps_per_epoch)
        self.gradients = (GradientRecorder(self.model, run_dir, title=f"{cfg.model} on {Path(cfg.dataset).name}")
                          if cfg.track_gradients else None)
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.running = {"loss_sum": 0.0, "correct": 0, "seen": 0, "time": 0.0}
        self.best_val_acc = -1.0
        self.epochs_without_improvement = 0
        self.metadata = model_metadata(self.model, {
            "model_options": cfg.model_options,
            "class_names": self.data.class_names,
            "preprocessing": self.data.preprocess.to_dict(),
            "dataset": cfg.dataset,
            **({"held_out": list(self.data.held_out)} if self.data.held_out else {}),
        })
        self.file_tensors = self.data.preprocess.tensors()
        self._report_data()

    # ----- state -----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
            "running": dict(self.running), "best_val_acc": self.best_val_acc,
            "epochs_without_improvement": self.epochs_without_improvement,
            "weight_average": self.average.state_dict() if self.average is not None else None,
            "config": self.cfg.model_dump(mode="json"),
        }

    def load_state(self, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        self.model.load_state_dict(weights)
        if state["config"]["epochs"] == self.cfg.epochs:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        else:
            self._reschedule(state)
        torch.set_rng_state(state["rng"])
        if state["cuda_rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.global_step = state["global_step"]
        self.running = dict(state["running"])
        self.best_val_acc = state["best_val_acc"]
        self.epochs_without_improvement = state["epochs_without_improvement"]
        if self.average is not None:
            self.average.load_state_dict(state["weight_average"])

    def _reschedule(self, state: dict[str, Any]) -> None:
        """Resume a run whose length changed: the schedule is recomputed for the new number of epochs
        (replayed up to the checkpoint's step), the optimizer's buffers come from the checkpoint."""
        with warnings.catch_warnings():  # stepping a scheduler without optimizer steps is intended here
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(state["global_step"]):
                self.scheduler.step()
        scheduled = [{k: v for k, v in group.items() if k != "params"} for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        for group, values in zip(self.optimizer.param_groups, scheduled, strict=True):
            group.update(values)

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint (rank 0; None in the other processes)."""
        if not self.dist.is_main:
            return None
        if self.gradients is not None:  # the gradient record continues from the checkpoint on resume
            self.gradients.save()
        return ckpt.save_checkpoint(self.run_dir, self.model, self.state(), self.metadata,
                                    self.cfg.keep_checkpoints, self.file_tensors)

    # ----- the loop --------------------------------------------------------------------------
    def _report_data(self) -> None:
        data, cfg = self.data, self.cfg
        if not cfg.progress:
            return
        counts = data.counts["train"]
        shown = ", ".join(f"{n} {c}" for n, c in zip(data.class_names, counts, strict=True)) \
            if len(counts) <= 20 else f"{len(counts)} classes, {min(counts)}-{max(counts)} images each"
        console.print(f"{cfg.dataset}: {sum(counts)} training images ({shown})"
                      + "".join(f", {sum(c)} {name}" for name, c in data.counts.items() if name != "train")
                      + f"; input {'x'.join(map(str, data.preprocess.input_size))}")
        if max(counts) > 2 * max(1, min(counts)) and cfg.class_balance == "none":
            console.print("[yellow]note:[/] the classes are imbalanced; class_balance: loss or sampler evens them out")
        if data.preprocess.whitening is not None:
            console.print(data.preprocess.whitening.report())
        if data.skipped:
            console.print(f"[yellow]skipped {len(data.skipped)} file(s)[/] (listed with reasons in skipped.csv)")

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 pixels, or augmented floats in [0, 1] → normalized model input (channels_last when asked)."""
        return in_layout(self.data.preprocess.normalize(images, fused=self.fused), self.cfg.channels_last)

    def train_step(self, images: torch.Tensor, y: torch.Tensor, sizes: list[int] | None = None,
                   index: torch.Tensor | None = None) -> None:
        """One optimizer step on a uint8 batch: augmentation (seeded by the global step, so resumed runs
        draw the same), normalization, forward, loss, backward, update.
        `sizes`: the examples of each process at this step (distributed runs; default: this batch);
        `index`: their positions in the training split (for augmentations that follow an image)."""
        cfg = self.cfg
        sizes = sizes or [len(y)]
        for norm in self.frozen_norms:  # a frozen backbone keeps its batch statistics too
            norm.eval()
        self._freeze_due()
        self.dist.seed_step(cfg.seed, self.global_step)
        x, targets = images, y
        if self.augment is not None:  # crops and flips move uint8 pixels; the rest works on [0, 1] floats
            x, targets = self.dist.augment(self.augment, x, y, sizes, seed=cfg.seed * 7919 + self.global_step,
                                           index=index, epoch=self.epoch)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            outputs = self.parallel_model(self.inputs(x))
        loss, logits = classification_loss(outputs, targets, cfg, self.aux_weights, self.class_weights)
        if cfg.l1:
            loss = loss + cfg.l1 * l1_penalty(self.model)
        loss, batch_loss, correct = self.dist.share_loss(loss, logits, y, targets, self.class_weights)
        if not math.isfinite(batch_loss):
            last = ckpt.list_checkpoints(self.run_dir)
            kept = f"the last good checkpoint is {last[-1]}" if last else "no checkpoint was written yet"
            raise TrainingDiverged(
                f"the loss became {batch_loss} at epoch {self.epoch + 1}, step {self.global_step + 1}; "
                f"training stopped and {kept}. Lower the learning rate or set clip_grad_norm."
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.gradients is not None:  # before clipping: what the loss asks of each layer
            self.gradients.record(self.global_step + 1, self.epoch + 1)
        if cfg.clip_grad_value:
            nn.utils.clip_grad_value_(self.model.parameters(), cfg.clip_grad_value)
        if cfg.clip_grad_norm:
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.global_step += 1
        self.step_in_epoch += 1
        if self.average is not None:
            self.average.update(self.global_step)
        self.running["loss_sum"] += batch_loss * sum(sizes)
        self.running["correct"] += correct
        self.running["seen"] += sum(sizes)

    def _freeze_due(self) -> None:
        """Stop training the freeze_after parameters whose step has come: backward then computes
        nothing for them, and a distributed run's replica is rebuilt without them."""
        due = [params for step, params in self.freezing if self.global_step >= step and params[0].requires_grad]
        for params in due:
            for p in params:
                p.requires_grad_(False)
        if due:
            self.parallel_model = self.dist.wrap(self.model)

    @contextmanager
    def averaged(self) -> Iterator[nn.Module]:
        """The model as it is evaluated and saved: holding the averaged weights (weight_average: ema)
        for the duration, else as it is."""
        with self.average.applied() if self.average is not None else nullcontext(self.model) as model:
            yield model

    def evaluate_on(self, batches: Batches, **options: Any) -> ClassificationResult:
        """The model (averaged weights, if any) scored on `batches` under the run's eval_view."""
        with self.averaged() as model:
            if self.cfg.eval_view != "center":
                model = ViewModel(model, self.cfg.eval_view, tuple(self.data.preprocess.input_size[1:]))
            return evaluate(model, model_inputs(batches, self.data.preprocess, self.cfg.channels_last),
                            self.device, bf16=self.bf16, **options)

    def validate(self) -> ClassificationResult | None:
        if self.data.val is None:
            return None
        return self.evaluate_on(self.data.val, topk=(1,), num_hardest=0)

    def fit(self) -> None:
        cfg = self.cfg
        with self._progress() as progress:
            task = progress.add_task("train", total=self.steps_per_epoch, loss=0.0, acc=0.0, ips=0.0)
            while self.epoch < cfg.epochs:
                progress.reset(task, total=self.steps_per_epoch, completed=self.step_in_epoch,
                               description=f"epoch {self.epoch + 1}/{cfg.epochs}")
                started = time.perf_counter() - self.running["time"]
                for images, labels, index in self.data.train.indexed_epoch(self.epoch, self.step_in_epoch):
                    sizes = self.dist.batch_sizes(len(labels))
                    if sum(sizes) == 0:  # every file of this batch failed to decode (listed as skipped)
                        self.step_in_epoch += 1
                        continue
                    self.train_step(images, labels, sizes, index)
                    self.running["time"] = time.perf_counter() - started
                    seen = max(1, self.running["seen"])
                    progress.update(task, advance=1, loss=self.running["loss_sum"] / seen,
                                    acc=self.running["correct"] / seen,
                                    ips=seen / max(self.running["time"], 1e-9))
                    if cfg.checkpoint_every and self.global_step % cfg.checkpoint_every == 0 \
                            and self.step_in_epoch < self.steps_per_epoch:
                        self.save_checkpoint()
                    if self.after_step is not None and self.after_step(self):
                        return
                if self._end_epoch():
                    break

    def _end_epoch(self) -> bool:
        """Validate, log, checkpoint (rank 0, the others waiting for its decision); returns True when
        early stopping ends the run."""
        if self.average is not None:
            self.average.end_epoch()
        stop = self.dist.broadcast_flag(self._record_epoch() if self.dist.is_main else False)
        self.epoch += 1
        self.step_in_epoch = 0
        self.running = {"loss_sum": 0.0, "correct": 0, "seen": 0, "time": 0.0}
        if stop:
            self.epoch = self.cfg.epochs  # a resumed run must not continue past the stop
            console.print(f"early stopping: no validation improvement for {self.cfg.early_stopping} epochs")
        self.save_checkpoint()
        return stop

    def _record_epoch(self) -> bool:
        """Validate, write the epoch's metrics and curves, keep the best model; returns True when
        early stopping ends the run."""
        val = self.validate()
        seen = max(1, self.running["seen"])
        row = {
            "epoch": self.epoch + 1, "step": self.global_step,
            "train_loss": self.running["loss_sum"] / seen, "train_acc": self.running["correct"] / seen,
            "val_loss": val.mean_loss if val else math.nan, "val_acc": val.accuracy(1) if val else math.nan,
            # the classifier's lr (the last group; the backbone's is lr x backbone_lr_scale)
            "lr": self.optimizer.param_groups[-1]["lr"], "epoch_time_s": self.running["time"],
            "images_per_s": seen / max(self.running["time"], 1e-9),
        }
        append_metrics(self.run_dir, self.cfg.metrics_format, row)
        save_training_curves(read_metrics(self.run_dir, self.cfg.metrics_format), self.run_dir / "curves.png",
                             title=f"{self.cfg.model} on {Path(self.cfg.dataset).name}")
        if self.cfg.progress:
            console.print(
                f"epoch {row['epoch']}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}"
                + (f", val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}" if val else "")
                + f", {row['images_per_s']:.0f} img/s"
            )
        stop = False
        if val is not None:
            if val.accuracy(1) > self.best_val_acc:
                self.best_val_acc = val.accuracy(1)
                self.epochs_without_improvement = 0
                with self.averaged() as model:
                    save_model_file(model, self.run_dir / "best.safetensors", self.metadata, self.file_tensors)
            else:
                self.epochs_without_improvement += 1
                stop = bool(self.cfg.early_stopping) and self.epochs_without_improvement >= self.cfg.early_stopping
        return stop

    def _progress(self) -> Progress:
        return Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f} acc {task.fields[acc]:.4f} {task.fields[ips]:.0f} img/s"),
            TimeRemainingColumn(), console=console, disable=not self.cfg.progress, transient=True,
        )

    def finish(self) -> ClassificationResult | None:
        """Save the final model and evaluate it on the test set (report in run_dir/eval): rank 0 does,
        the other processes wait for it and get None."""
        return self.dist.on_main(self._final_report)

    def _final_report(self) -> ClassificationResult:
        with self.averaged() as model:
            save_model_file(model, self.run_dir / "model.safetensors", self.metadata, self.file_tensors)
        skipped = self.data.skipped
        if skipped:
            write_skipped(self.run_dir / "skipped.csv", skipped)
            console.print(f"[yellow]{len(skipped)} file(s) skipped[/] (reasons in {self.run_dir / 'skipped.csv'})")
        split = "test" if self.data.test is not None else "val"
        batches = self.data.test if self.data.test is not None else self.data.val
        if batches is None:
            raise DcnnError(f"{self.cfg.dataset} has no test split and the run held out no validation images, so "
                            "there is nothing to report on; set val_split (e.g. 0.1).")
        if split == "val":
            console.print("no test split: the final report is on the validation split")
        result = self.evaluate_on(batches)
        write_report(result, self.run_dir / "eval", class_names=self.data.class_names,
                     extra={"split": split, "view": self.cfg.eval_view, "dataset": self.cfg.dataset,
                            "skipped_files": len(skipped)})
        return result


def auxiliary_weights(model: nn.Module, cfg: TrainConfig) -> tuple[float, ...]:
    """The loss weight of each auxiliary classifier: the config's, else the model's own (the paper's)."""
    own = tuple(getattr(model, "aux_loss_weights", ()))
    if cfg.aux_weights is None:
        return own
    if not own:
        raise DcnnError(f"aux_weights: model {cfg.model!r} has no auxiliary classifiers (as built with "
                        f"{cfg.model_options or 'its default options'}); remove aux_weights.")
    if len(cfg.aux_weights) != len(own):
        raise DcnnError(f"aux_weights: {cfg.model!r} has {len(own)} auxiliary classifiers, so give {len(own)} "
                        f"weights (its own are {list(own)}), not {len(cfg.aux_weights)}.")
    return tuple(cfg.aux_weights)


def write_data_summary(path: Path, data: Data, dataset: str) -> None:
    """What the run trained on: class names, images per class in each split, skipped files, and
    the preprocessing."""
    summary = {"dataset": dataset, "class_names": data.class_names, "class_counts": data.counts,
               "skipped_files": len(data.skipped), "loading": "lazy" if isinstance(data.train, FileBatches) else
               "memory", "preprocessing": data.preprocess.to_dict()}
    with atomic_output(path) as handle:
        handle.write((json.dumps(summary, indent=2) + "\n").encode())


def write_skipped(path: Path, skipped: list[Skipped]) -> None:
    """The files a run left out, one per row with the reason."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "reason"])
    writer.writerows((str(s.path), s.reason) for s in skipped)
    with atomic_output(path) as handle:
        handle.write(buffer.getvalue().encode())


def append_metrics(run_dir: Path, fmt: str, row: dict[str, Any]) -> None:
    path = run_dir / f"metrics.{fmt}"
    if fmt == "jsonl":
        with open(path, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        return
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=METRIC_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def read_metrics(run_dir: Path, fmt: str) -> list[dict[str, Any]]:
    """The rows of a run's metrics file (csv or jsonl)."""
    path = run_dir / f"metrics.{fmt}"
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines] if fmt == "jsonl" else list(csv.DictReader(lines))


def truncate_metrics(run_dir: Path, fmt: str, epochs_done: int) -> None:
    """Drop metric rows past the checkpoint being resumed (written after it, before a crash)."""
    path = run_dir / f"metrics.{fmt}"
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    header, rows = (lines[:1], lines[1:]) if fmt == "csv" else ([], lines)
    kept = [line for line in rows if _row_epoch(line, fmt) <= epochs_done]
    with atomic_output(path) as handle:
        handle.write("".join(header + kept).encode())


def _row_epoch(line: str, fmt: str) -> int:
    return int(json.loads(line)["epoch"]) if fmt == "jsonl" else int(line.split(",", 1)[0])


def new_run_dir(cfg: TrainConfig) -> Path:
    """Where a new run goes (created only once its data and model are ready, so that a run that
    fails to start leaves no directory behind)."""
    if cfg.run_dir:
        path = Path(cfg.run_dir)
        if (path / "config.yaml").exists():
            raise DcnnError(f"run directory {path} already holds a run; resume it with "
                            f"`dcnn train --resume {path}` or choose another --run-dir.")
        return path
    return Path("runs") / f"{cfg.model}-{datetime.now():%Y%m%d-%H%M%S}"


def train(
    cfg: TrainConfig, after_step: Callable[[Trainer], bool] | None = None
) -> tuple[Path, ClassificationResult | None]:
    """Train from scratch; returns the run directory and the test-set result (None in the processes
    of a distributed run other than rank 0, which names the run directory and writes it)."""
    with session(resolve_device(cfg.device)) as dist:
        run_dir = Path(dist.broadcast_text(str(new_run_dir(cfg))))
        trainer = Trainer(cfg, run_dir, after_step, dist)
        if dist.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, run_dir / "config.yaml")
            write_data_summary(run_dir / "data.json", trainer.data, cfg.dataset)
        trainer.fit()
        return run_dir, trainer.finish()


def resume(run_dir: str | Path, changes: dict[str, Any] | None = None) -> tuple[Path, ClassificationResult | None]:
    """Continue a run from its newest good checkpoint (older ones are used if newer are corrupt).

    `changes` may set the options in RESUME_OPTIONS (e.g. more `epochs` to extend a run, another
    `device`); any other option that differs from the run's would break exact resumption and is
    refused."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise DcnnError(f"{run_dir} is not a run directory (no config.yaml); give the directory `dcnn train` made.")
    path, weights, state, warnings = ckpt.load_latest_checkpoint(run_dir)
    for warning in warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    saved = make_config(state["config"])
    cfg = make_config({**state["config"], **(changes or {})})
    changed = {k for k in changes or {} if getattr(cfg, k) != getattr(saved, k)}
    refused = sorted(changed - set(RESUME_OPTIONS))
    if refused:
        raise DcnnError(
            f"a resumed run continues exactly as configured, so {', '.join(refused)} cannot change "
            f"(the run has {', '.join(f'{k}={getattr(saved, k)!r}' for k in refused)}); with --resume you "
            f"may change {', '.join(RESUME_OPTIONS)}. Start a new run to train differently."
        )
    done = state["epoch"] + (1 if state["step_in_epoch"] else 0)
    if cfg.epochs < done:
        raise DcnnError(f"epochs: the run has already trained {done} epoch(s) ({run_dir}); give --epochs {done} "
                        "or more.")
    with session(resolve_device(cfg.device)) as dist:
        trainer = Trainer(cfg, run_dir, dist=dist)
        trainer.load_state(weights, state)
        if dist.is_main:
            if changed:
                save_config(cfg, config_path)
            truncate_metrics(run_dir, cfg.metrics_format, trainer.epoch)
        console.print(f"resuming from {path} (epoch {trainer.epoch + 1}, step {trainer.global_step})")
        trainer.fit()
        return run_dir, trainer.finish()
