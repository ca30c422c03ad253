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
from torch.optim import lr_scheduler, sgd

from dcnn.device import native_bf16

if TYPE_CHECKING:
    from dcnn.train.config import TrainConfig


# Jordan et al. 2024 ("Muon: an optimizer for hidden layers in neural networks"): a quintic
# Newton-Schulz iteration whose coefficients maximize the slope at zero, so that five steps bring every
# singular value of the normalized update to roughly [0.7, 1.2].
NEWTON_SCHULZ_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NEWTON_SCHULZ_STEPS = 5


def orthogonalize(update: torch.Tensor, steps: int = NEWTON_SCHULZ_STEPS) -> torch.Tensor:
    """About U·Vᵀ for a matrix U·S·Vᵀ, by the Newton-Schulz iteration above; in bf16 where the
    device computes it natively, as Muon does, else in float32."""
    a, b, c = NEWTON_SCHULZ_COEFFICIENTS
    x = update.to(torch.bfloat16 if native_bf16(update.device) else torch.float32)
    wide = x.size(0) <= x.size(1)
    x = x if wide else x.T  # iterate on the smaller Gram matrix
    x = x / (x.norm() + 1e-7)  # spectral norm ≤ Frobenius norm = 1
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x if wide else x.T).to(update.dtype)


class Muon(torch.optim.Optimizer):
    """Muon (Jordan et al. 2024) for the param groups marked ``hidden``: the hidden layers' weights,
    a conv's filters taken as one (out, in·kh·kw) matrix. Each step orthogonalizes the (Nesterov)
    momentum of the gradient and moves lr·sqrt(max(1, out / in)) along it; weight decay is
    decoupled (p ← p·(1 − lr·decay)), as in torch.optim.Muon. With ``normalize``, each such tensor is
    first rescaled to norm sqrt(out): airbench94_muon's fixed filter norm, in place of decay. The
    other groups (biases, norm layers, the classifier: what Muon is not meant for) take torch's SGD
    step with (Nesterov) momentum and coupled weight decay."""

    def __init__(self, params: Any, lr: float, momentum: float = 0.9, nesterov: bool = False,
                 weight_decay: float = 0.0, normalize: bool = False) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "nesterov": nesterov,
                                  "weight_decay": weight_decay, "normalize": normalize, "hidden": False})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if group["hidden"]:
                for p in params:
                    self._muon_step(p, group)
                continue
            buffers = [self.state[p].get("momentum_buffer") for p in params]
            sgd.sgd(params, [p.grad for p in params], buffers, weight_decay=group["weight_decay"],
                    momentum=group["momentum"], lr=group["lr"], dampening=0.0, nesterov=group["nesterov"],
                    maximize=False)
            if group["momentum"]:
                for p, buffer in zip(params, buffers, strict=True):
                    self.state[p]["momentum_buffer"] = buffer
        return loss

    def _muon_step(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        grad, lr, momentum = p.grad, group["lr"], group["momentum"]
        if momentum:
            state = self.state[p]
            if "momentum_buffer" in state:
                state["momentum_buffer"].mul_(momentum).add_(grad)
            else:
                state["momentum_buffer"] = grad.clone()
            buffer = state["momentum_buffer"]
            grad = grad.add(buffer, alpha=momentum) if group["nesterov"] else buffer
        if group["normalize"]:
            p.mul_(math.sqrt(len(p)) / p.norm().clamp_min(1e-12))
        p.mul_(1 - lr * group["weight_decay"])
        matrix = grad.reshape(len(grad), -1)
        p.add_(orthogonalize(matrix).view_as(p), alpha=-lr * math.sqrt(max(1.0, len(p) / matrix.size(1))))


@dataclass(frozen=True)
class OptimizerSpec:
    """A torch optimizer, the config fields it reads (field → its keyword), and per-optimizer
    defaults for fields left unset (a None in TrainConfig). `hidden` is for an optimizer that gives
    the hidden layers' weights a group of their own (Muon): config field → that group's setting."""

    cls: type[torch.optim.Optimizer]
    options: dict[str, str]
    defaults: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    hidden: dict[str, str] = field(default_factory=dict)

    @property
    def fields(self) -> list[str]:
        """Every config field the optimizer reads."""
        return [*self.options, *self.hidden]


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
    # Jordan et al. 2024: lr 0.02 and momentum 0.95 for the hidden layers' weights.
    "muon": OptimizerSpec(Muon, {"momentum": "momentum", "nesterov": "nesterov", "muon_normalize": "normalize"},
                          {"momentum": 0.9, "muon_lr": 0.02, "muon_momentum": 0.95},
                          "Muon for the hidden layers' weights (Jordan et al. 2024), SGD for the rest",
                          hidden={"muon_lr": "lr", "muon_momentum": "momentum"}),
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


def _linear(optimizer: torch.optim.Optimizer, cfg: TrainConfig, spe: int, warmup: int) -> lr_scheduler.LRScheduler:
    # airbench94_muon's schedule (Jordan 2024): straight down from lr to min_lr (default 0) at the end.
    return lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=cfg.min_lr / cfg.lr,
                                 total_iters=max(1, cfg.epochs * spe - warmup))


# torch's OneCycleLR starts at max_lr / 25 and ends at that / 1e4 unless min_lr says otherwise.
ONECYCLE_DIV_FACTOR = 25.0
ONECYCLE_FINAL_DIV_FACTOR = 1e4


def _onecycle(optimizer: torch.optim.Optimizer, cfg: TrainConfig, spe: int, warmup: int) -> lr_scheduler.LRScheduler:
    """Smith & Topin 2017: rise from lr/25 to lr (over warmup_epochs when given, else the fraction
    pct_start of training), then anneal to min_lr (default lr/25/1e4), momentum (Adam's beta1)
    cycling inversely, from 0.95 to 0.85 and back (so the config's momentum is refused with it)."""
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
    "linear": ScheduleSpec(_linear, ("min_lr", "warmup_epochs"), "linear decay to min_lr"),
    "onecycle": ScheduleSpec(_onecycle, ("warmup_epochs", "pct_start", "min_lr"), "one-cycle policy"),
}


def penalized_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Weights that L1/L2 penalties apply to: conv and linear kernels, not biases or norm scales."""
    return [p for p in model.parameters() if p.requires_grad and p.dim() > 1]


def _settings(cfg: TrainConfig, fields: dict[str, str]) -> dict[str, Any]:
    spec = OPTIMIZERS[cfg.optimizer]
    return {keyword: spec.defaults[name] if getattr(cfg, name) is None else getattr(cfg, name)
            for name, keyword in fields.items()}


def optimizer_options(cfg: TrainConfig) -> dict[str, Any]:
    """The keyword arguments the chosen optimizer is built with (unset fields: its own defaults)."""
    return {"lr": cfg.lr, **_settings(cfg, OPTIMIZERS[cfg.optimizer].options)}


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Parameter groups: weights (decayed) and the rest (not); with a backbone_lr_scale, the
    backbone's two groups learn at lr × scale and the classifier's at lr (discriminative
    learning rates, Howard & Ruder 2018, Sec. 3.2). For Muon, the backbone's weights are a group
    of their own, marked ``hidden``, with muon_lr (× the scale) and muon_momentum. Frozen parameters
    are left out."""
    spec = OPTIMIZERS[cfg.optimizer]
    decayed_ids = {id(p) for p in penalized_parameters(model)}
    apart = cfg.backbone_lr_scale != 1 or spec.hidden  # does the classifier stand apart?
    classifier_ids = {id(p) for p in model.get_classifier().parameters()} if apart else set()
    head_ids = classifier_ids if cfg.backbone_lr_scale != 1 else set()
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = []
    for scale, is_head in ((cfg.backbone_lr_scale, False), (1.0, True)):
        part = [p for p in trainable if (id(p) in head_ids) == is_head]
        if is_head and not part:
            continue  # no separate head
        weights = [p for p in part if id(p) in decayed_ids]
        if spec.hidden and not is_head:  # (the classifier is never hidden)
            hidden = _settings(cfg, spec.hidden)
            groups.append({"params": [p for p in weights if id(p) not in classifier_ids], "hidden": True,
                           "weight_decay": cfg.weight_decay, **hidden, "lr": hidden["lr"] * scale})
            weights = [p for p in weights if id(p) in classifier_ids]
        groups.append({"params": weights, "weight_decay": cfg.weight_decay, "lr": cfg.lr * scale})
        groups.append({"params": [p for p in part if id(p) not in decayed_ids], "weight_decay": 0.0,
                       "lr": cfg.lr * scale})
    return spec.cls(groups, **optimizer_options(cfg))


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
