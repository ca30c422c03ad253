"""Optimizers, weight penalties and learning-rate schedules from a TrainConfig."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.optim import lr_scheduler

from dcnn.train.config import TrainConfig


def penalized_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Weights that L1/L2 penalties apply to: conv and linear kernels, not biases or norm scales."""
    return [p for p in model.parameters() if p.requires_grad and p.dim() > 1]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decayed = penalized_parameters(model)
    decayed_ids = {id(p) for p in decayed}
    others = [p for p in model.parameters() if p.requires_grad and id(p) not in decayed_ids]
    groups = [{"params": decayed, "weight_decay": cfg.weight_decay}, {"params": others, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps, momentum=cfg.momentum)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    return torch.optim.Adadelta(groups, lr=cfg.lr, rho=cfg.rho, eps=cfg.eps)


def l1_penalty(model: nn.Module) -> torch.Tensor:
    return sum(p.abs().sum() for p in penalized_parameters(model))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> lr_scheduler.LRScheduler:
    """A scheduler stepped after every optimizer step; epochs in the config become steps here."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "onecycle":  # Smith & Topin 2017: warm up to lr, anneal far below it
        return lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total, pct_start=cfg.pct_start)
    warmup = min(round(cfg.warmup_epochs * steps_per_epoch), total - 1)
    after = total - warmup
    if cfg.schedule == "step":
        main = lr_scheduler.StepLR(optimizer, max(1, round(cfg.step_size * steps_per_epoch)), cfg.gamma)
    elif cfg.schedule == "multistep":
        milestones = sorted(round(m * steps_per_epoch) - warmup for m in cfg.milestones)
        main = lr_scheduler.MultiStepLR(optimizer, milestones, cfg.gamma)
    elif cfg.schedule == "cosine":  # Loshchilov & Hutter 2017, without restarts
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, after), eta_min=cfg.min_lr)
    else:
        main = lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if warmup == 0:
        return main
    # Linear warmup (Goyal et al. 2017): lr·(t+1)/warmup for the first `warmup` steps.
    ramp = lr_scheduler.LinearLR(optimizer, start_factor=1.0 / warmup, end_factor=1.0, total_iters=warmup - 1)
    return lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])


def steps_per_epoch(num_train: int, batch_size: int) -> int:
    return math.ceil(num_train / batch_size)
