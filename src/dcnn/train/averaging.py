"""Averages of the weights along training: an exponential moving average kept beside the network, or
Lookahead, which copies its slow average back into it.

- ``ema``: an exponential moving average of the weights (Polyak & Juditsky 1992; the "model EMA" of
  timm and Keras' ``use_ema``), kept beside the trained weights. Validation, ``best.safetensors``,
  ``model.safetensors`` and the final report use the average; training continues on the network's
  own weights.
- ``lookahead``: the slow weights of Lookahead (Zhang et al. 2019, "Lookahead Optimizer: k steps
  forward, 1 step back", Algorithm 1): every k = ``ema_every`` steps the slow weights move a fraction
  α = 1 − decay toward the fast ones and the network restarts from them; at the end of each epoch
  the network takes the slow weights too, so validation and the saved models are the average. This is
  the "lookahead" of airbench (Jordan 2024), with its decay warm-up below.

Both average every floating-point tensor of the state dict (batch-norm running statistics included,
as timm's ModelEmaV2 does) and start at ``ema_start_epochs`` with a copy of the weights. The decay of
an update at step s of S can ramp up as ``decay · (s / S) ** ema_warmup_power`` (airbench: power 3),
so that early averages forget the random start quickly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
import torch.nn as nn

Mode = Literal["ema", "lookahead"]


class WeightAverage:
    """The running average of one model's weights; call :meth:`update` after every optimizer step."""

    def __init__(self, model: nn.Module, mode: Mode, decay: float, every: int = 1, start_step: int = 0,
                 total_steps: int = 1, warmup_power: float = 0.0) -> None:
        self.model, self.mode = model, mode
        self.decay, self.every, self.start_step = decay, every, start_step
        self.total_steps, self.warmup_power = max(1, total_steps), warmup_power
        self.average: dict[str, torch.Tensor] | None = None  # none until start_step

    def _weights(self) -> dict[str, torch.Tensor]:
        """The model's floating-point state, sharing storage with it."""
        return {k: v for k, v in self.model.state_dict(keep_vars=True).items() if v.is_floating_point()}

    def decay_at(self, step: int) -> float:
        """The decay of the update after optimizer step `step` (counted from 1)."""
        return self.decay * (step / self.total_steps) ** self.warmup_power

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Fold the weights after optimizer step `step` (from 1) into the average, on the steps it is due."""
        if step < self.start_step or step % self.every:
            return
        weights = self._weights()
        if self.average is None:
            self.average = {k: v.detach().clone() for k, v in weights.items()}
            return
        keep = self.decay_at(step)
        for name, value in weights.items():
            self.average[name].lerp_(value.detach(), 1 - keep)
            if self.mode == "lookahead":
                value.copy_(self.average[name])

    @torch.no_grad()
    def end_epoch(self) -> None:
        """Lookahead: the network takes the slow weights (what validation and checkpoints then see)."""
        if self.mode == "lookahead" and self.average is not None:
            for name, value in self._weights().items():
                value.copy_(self.average[name])

    @contextmanager
    def applied(self) -> Iterator[nn.Module]:
        """The model holding the averaged weights for the duration (the ema mode; lookahead's network
        already holds them at the end of an epoch), its own restored afterwards."""
        if self.mode == "lookahead" or self.average is None:
            yield self.model
            return
        weights = self._weights()
        own = {k: v.detach().clone() for k, v in weights.items()}
        with torch.no_grad():
            for name, value in weights.items():
                value.copy_(self.average[name])
        try:
            yield self.model
        finally:
            with torch.no_grad():
                for name, value in weights.items():
                    value.copy_(own[name])

    def state_dict(self) -> dict[str, Any]:
        return {"average": None if self.average is None else {k: v.cpu() for k, v in self.average.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state["average"]
        weights = self._weights()
        self.average = None if saved is None else {k: saved[k].to(weights[k]) for k in weights}
