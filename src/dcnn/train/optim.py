"""Optimizers, weight penalties and learning-rate schedules from a TrainConfig.

Each optimizer and schedule is one entry of a name → builder table that also says which config
fields it reads; TrainConfig derives its allowed names and its "does not apply" checks from these
tables, and `dcnn train --help` lists the names, so adding one is one place.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
from torch.optim import lr_scheduler

if TYPE_CHECKING:
    from dcnn.train.config import TrainConfig


@dataclass(frozen=True)
class OptimizerSpec:
    """A torch optimizer, the config fields it reads (field → its keyword), and per-optimizer
    defaults for fields left unset (a None in TrainConfig)."""

    cls: type[torch.optim.Optimizer]
    options: dict[str, str]
    defaults: dict[str, Any] = field(default_factory=dict)
    source: str = ""


# Goodfellow et al. 2016, ch. 8.3-8.5.
OPTIMIZERS: dict[str, OptimizerSpec] = {
    # Momentum 0.9 as in Krizhevsky et al. 2012, Sec. 5; Nesterov as in Sutskever et al. 2013.
    "sgd": OptimizerSpec(torch.optim.SGD, {"momentum": "momentum", "nesterov": "nesterov"}, {"momentum": 0.9},
                         "SGD with (Nesterov) momentum"),
    # Tieleman & Hinton 2012 (lecture 6e) define RMSProp without momentum: torch's default 0.
    "rmsprop": OptimizerSpec(torch.optim.RMSprop, {"alpha": "alpha", "eps": "eps", "momentum": "momentum"},
                             {"momentum": 0.0, "eps": 1e-8}, "RMSProp (Tieleman & Hinton 2012)"),
    "adam": OptimizerSpec(torch.optim.Adam, {"betas": "betas", "eps": "eps"}, {"eps": 1e-8},
                          "Adam (Kingma & Ba 2015)"),
    "adamw": OptimizerSpec(torch.optim.AdamW, {"betas": "betas", "eps": "eps"}, {"eps": 1e-8},
                           "AdamW, decoupled weight decay (Loshchilov & Hutter 2019)"),
    # Zeiler 2012, Sec. 4: epsilon 1e-6.
    "adadelta": OptimizerSpec(torch.optim.Adadelta, {"rho": "rho", "eps": "eps"}, {"eps": 1e-6},
                              "Adadelta (Zeiler 2012)"),
}


@dataclass(frozen=True)
class ScheduleSpec:
    """A learning-rate schedule: its builder (optimizer, config, steps per epoch, warmup steps) →
    scheduler over the steps after warmup, and the config fields it reads."""

    build: Callable[[torch.optim.Optimizer, TrainConfig, int, int], lr_scheduler.LRScheduler]
    options: tuple[str, ...]
    source: str = ""


def _constant(optimizer: torch.optim.Optimizer, cfg: TrainConfig, spe: int, warmup: int) -> lr_scheduler.LRScheduler:
    return lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def _step(optimizer: torch.optim.Optimizer, cfg: TrainConfig, spe: int, warmup: int) -> lr_scheduler.LRScheduler:
    return lr_scheduler.StepLR(optimizer, max(1, round(cfg.step_size * spe)), cfg.gamma)


def _multistep(optimizer: torch.optim.Optimizer, cfg: TrainConfig, spe: int, warmup: int) -> lr_scheduler.LRScheduler:
    return lr_scheduler.MultiStepLR(optimizer, sorted(round(m * spe) - warmup for m in cfg.milestones), cfg.gamma)


def _cosine(optimizer: torch.optim.Optimizer, cfg: TrainConfig, spe: int, warmup: int) -> lr_scheduler.LRScheduler:
    # Loshchilov & Hutter 2017, without restarts: from lr down to min_lr at the last step.
    return lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, cfg.epochs * spe - warmup), eta_min=cfg.min_lr)


# torch's OneCycleLR starts at max_lr / 25 and ends at that / 1e4 unless min_lr says otherwise.
ONECYCLE_DIV_FACTOR = 25.0
ONECYCLE_FINAL_DIV_FACTOR = 1e4


def _onecycle(optimizer: torch.optim.Optimizer, cfg: TrainConfig, spe: int, warmup: int) -> lr_scheduler.LRScheduler:
    """Smith & Topin 2017: rise from lr/25 to lr (over warmup_epochs when given, else the fraction
    pct_start of training), then anneal to min_lr (default lr/25/1e4), momentum cycling inversely."""
    total = cfg.epochs * spe
    pct_start = warmup / total if warmup else cfg.pct_start
    initial = cfg.lr / ONECYCLE_DIV_FACTOR
    final_div = initial / cfg.min_lr if cfg.min_lr else ONECYCLE_FINAL_DIV_FACTOR
    max_lr = [group["lr"] for group in optimizer.param_groups]  # per group: a scaled backbone keeps its scale
    return lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total, pct_start=pct_start,
                                   div_factor=ONECYCLE_DIV_FACTOR, final_div_factor=final_div)


SCHEDULES: dict[str, ScheduleSpec] = {
    "constant": ScheduleSpec(_constant, ("warmup_epochs",), "constant learning rate"),
    "step": ScheduleSpec(_step, ("step_size", "gamma", "warmup_epochs"), "multiply by gamma every step_size epochs"),
    "multistep": ScheduleSpec(_multistep, ("milestones", "gamma", "warmup_epochs"),
                              "multiply by gamma at each milestone epoch"),
    "cosine": ScheduleSpec(_cosine, ("min_lr", "warmup_epochs"), "cosine annealing to min_lr"),
    "onecycle": ScheduleSpec(_onecycle, ("warmup_epochs", "pct_start", "min_lr"), "one-cycle policy"),
}


def penalized_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Weights that L1/L2 penalties apply to: conv and linear kernels, not biases or norm scales."""
    return [p for p in model.parameters() if p.requires_grad and p.dim() > 1]


def optimizer_options(cfg: TrainConfig) -> dict[str, Any]:
    """The keyword arguments the chosen optimizer is built with (unset fields: its own defaults)."""
    spec = OPTIMIZERS[cfg.optimizer]
    options: dict[str, Any] = {"lr": cfg.lr}
    for name, keyword in spec.options.items():
        value = getattr(cfg, name)
        options[keyword] = spec.defaults[name] if value is None else value
    return options


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Parameter groups: weights (decayed) and the rest (not); with a backbone_lr_scale, the
    backbone's two groups learn at lr × scale and the classifier's at lr (discriminative
    learning rates, Howard & Ruder 2018, Sec. 3.2). Frozen parameters are left out."""
    decayed_ids = {id(p) for p in penalized_parameters(model)}
    head_ids = {id(p) for p in model.get_classifier().parameters()} if cfg.backbone_lr_scale != 1 else set()
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = []
    for scale, is_head in ((cfg.backbone_lr_scale, False), (1.0, True)):
        part = [p for p in trainable if (id(p) in head_ids) == is_head]
        if is_head and not part:
            continue  # no separate head
        groups.append({"params": [p for p in part if id(p) in decayed_ids], "weight_decay": cfg.weight_decay,
                       "lr": cfg.lr * scale})
        groups.append({"params": [p for p in part if id(p) not in decayed_ids], "weight_decay": 0.0,
                       "lr": cfg.lr * scale})
    return OPTIMIZERS[cfg.optimizer].cls(groups, **optimizer_options(cfg))


def l1_penalty(model: nn.Module) -> torch.Tensor:
    return sum(p.abs().sum() for p in penalized_parameters(model))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> lr_scheduler.LRScheduler:
    """A scheduler stepped after every optimizer step; epochs in the config become steps here."""
    total = cfg.epochs * steps_per_epoch
    warmup = min(round(cfg.warmup_epochs * steps_per_epoch), total - 1)
    main = SCHEDULES[cfg.schedule].build(optimizer, cfg, steps_per_epoch, warmup)
    if warmup == 0 or cfg.schedule == "onecycle":  # one-cycle's rise is its own warmup
        return main
    # Linear warmup (Goyal et al. 2017): lr·(t+1)/warmup for the first `warmup` steps.
    ramp = lr_scheduler.LinearLR(optimizer, start_factor=1.0 / warmup, end_factor=1.0, total_iters=warmup - 1)
    return lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])


def steps_per_epoch(num_train: int, batch_size: int) -> int:
    return math.ceil(num_train / batch_size)
