"""Gradient flow: every weighted layer's gradient norm, step by step (the `track_gradients` option).

A layer's norm is the L2 norm of the loss gradient with respect to its weight, taken right after the
backward pass and before any clipping: what the loss asks of that layer, not the step it is allowed.
Vanishing gradients show as norms that fall by orders of magnitude from the last layer to the first
(Bengio, Simard & Frasconi 1994; Glorot & Bengio 2010, §4.2, Fig. 7), exploding ones as norms that
grow step after step (Pascanu, Mikolov & Bengio 2013, §2).

The weighted layers are the modules that own a ``weight`` of two or more dimensions (convolutions and
linear layers; the per-channel scales of normalization layers are left out), in the order their modules
are registered, which in the zoo's feed-forward nets is the order of depth, first layer first.

A run that tracks gradients writes ``gradients.csv`` (one row per step: step, epoch, then one column
per layer) and ``gradients.png`` (a heatmap of layers by steps, and the norm by depth) whenever it
writes a checkpoint, so that a resumed run continues the file where its checkpoint left it.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import torch
import torch.nn as nn
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from dcnn.fileio import atomic_output

CSV_NAME = "gradients.csv"
PNG_NAME = "gradients.png"


def weighted_layers(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(module name, weight) of every trainable layer with a weight of two or more dimensions, by depth."""
    layers = []
    for name, module in model.named_modules():
        weight = module._parameters.get("weight")
        if weight is not None and weight.dim() >= 2 and weight.requires_grad:
            layers.append((name, weight))
    return layers


@dataclass
class GradientHistory:
    """Recorded gradient norms: `norms[i, j]` is layer `layers[j]`'s at training step `steps[i]`
    (NaN where the layer got no gradient)."""

    layers: list[str]
    steps: list[int]
    epochs: list[int]
    norms: torch.Tensor

    def total(self) -> torch.Tensor:
        """The norm of all the layers' weight gradients together, per step."""
        return self.norms.square().nansum(dim=1).sqrt()

    def profile(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Each layer's median norm over the recorded steps `start:stop` (the norm by depth)."""
        return self.norms[start:stop].nanmedian(dim=0).values


class GradientRecorder:
    """Records the weighted layers' gradient norms of `model` after each backward pass; saves them
    into `run_dir` (continuing a ``gradients.csv`` already there, as a resumed run does)."""

    def __init__(self, model: nn.Module, run_dir: Path | None = None, title: str = "") -> None:
        named = weighted_layers(model)
        self.layers = [name for name, _ in named]
        self.weights = [weight for _, weight in named]
        self.run_dir = run_dir
        self.title = title
        self.steps: list[int] = []
        self.epochs: list[int] = []
        self.rows: list[torch.Tensor] = []
        previous = run_dir / CSV_NAME if run_dir is not None else None
        if previous is not None and previous.is_file():
            history = read_gradients(previous)
            if history.layers == self.layers:
                self.steps, self.epochs, self.rows = history.steps, history.epochs, list(history.norms)

    def record(self, step: int, epoch: int) -> None:
        """Store the current gradients' norms as those of training step `step` of epoch `epoch`;
        rows from `step` on (written before a crash, after the checkpoint resumed) are dropped."""
        while self.steps and self.steps[-1] >= step:
            del self.steps[-1], self.epochs[-1], self.rows[-1]
        nan = torch.tensor(math.nan)
        norms = [nan if w.grad is None else torch.linalg.vector_norm(w.grad.detach().float()).cpu()
                 for w in self.weights]
        self.rows.append(torch.stack(norms) if norms else torch.empty(0))
        self.steps.append(step)
        self.epochs.append(epoch)

    def history(self) -> GradientHistory:
        norms = torch.stack(self.rows) if self.rows else torch.empty(0, len(self.layers))
        return GradientHistory(list(self.layers), list(self.steps), list(self.epochs), norms)

    def save(self) -> None:
        """Write ``gradients.csv`` and ``gradients.png`` into the run directory, all or nothing."""
        if self.run_dir is None or not self.rows:
            return
        history = self.history()
        write_gradients(history, self.run_dir / CSV_NAME)
        save_gradient_figure(history, self.run_dir / PNG_NAME, self.title)


def write_gradients(history: GradientHistory, path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["step", "epoch", *history.layers])
    for step, epoch, row in zip(history.steps, history.epochs, history.norms.tolist(), strict=True):
        writer.writerow([step, epoch, *(f"{v:.6g}" for v in row)])
    with atomic_output(path) as handle:
        handle.write(buffer.getvalue().encode())


def read_gradients(path: str | Path) -> GradientHistory:
    """A ``gradients.csv`` written by a run (or by :func:`write_gradients`)."""
    rows = list(csv.reader(Path(path).read_text().splitlines()))
    layers = rows[0][2:]
    body = rows[1:]
    norms = torch.tensor([[float(v) for v in r[2:]] for r in body]) if body else torch.empty(0, len(layers))
    return GradientHistory(layers, [int(r[0]) for r in body], [int(r[1]) for r in body], norms)


def _positive(values: torch.Tensor) -> torch.Tensor:
    """Values a log scale can show; zeros and non-finite values become NaN (left blank)."""
    return torch.where(torch.isfinite(values) & (values > 0), values, torch.nan)


def _layer_ticks(axes: Axes, layers: list[str]) -> None:
    """Name the layers on the y axis where they fit (up to 24), else every few."""
    every = max(1, math.ceil(len(layers) / 24))
    positions = list(range(0, len(layers), every))
    axes.set_yticks(positions, [layers[i] or "(model)" for i in positions], fontsize=7)


def norm_limits(histories: list[GradientHistory]) -> tuple[float, float] | None:
    """The smallest and largest positive finite norm of the histories (a shared colour scale)."""
    values = torch.cat([_positive(h.norms).flatten() for h in histories]) if histories else torch.empty(0)
    finite = values[torch.isfinite(values)]
    return (float(finite.min()), float(finite.max())) if finite.numel() else None


def draw_heatmap(axes: Axes, history: GradientHistory, colorbar: bool = True,
                 limits: tuple[float, float] | None = None) -> None:
    """Layers (first at the top) by training step, coloured by the log of the gradient norm (on the
    scale `limits`, default the history's own range)."""
    limits = limits or norm_limits([history])
    if limits is None:
        axes.text(0.5, 0.5, "no finite gradient recorded", ha="center", transform=axes.transAxes)
        return
    steps, depth = history.steps, len(history.layers)
    image = axes.imshow(_positive(history.norms.T).numpy(), aspect="auto", interpolation="nearest", cmap="viridis",
                        norm=LogNorm(*limits), extent=(steps[0] - 0.5, steps[-1] + 0.5, depth - 0.5, -0.5))
    axes.set_xlabel("training step")
    _layer_ticks(axes, history.layers)
    if colorbar:
        axes.figure.colorbar(image, ax=axes, label="weight-gradient L2 norm")


def draw_profiles(axes: Axes, profiles: list[tuple[str, torch.Tensor]]) -> None:
    """Gradient norm by depth (log scale), one line per (label, per-layer norms); layer 1 is the first."""
    for label, values in profiles:
        axes.plot(range(1, len(values) + 1), _positive(values).numpy(), "-o", markersize=3, label=label)
    axes.set_yscale("log")
    axes.set_xlabel("weighted layer, by depth (1: the first)")
    axes.set_ylabel("median weight-gradient norm")
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=8)


def quarter_profiles(history: GradientHistory) -> list[tuple[str, torch.Tensor]]:
    """The norm by depth over each quarter of the recorded steps (fewer parts for short runs)."""
    count = len(history.steps)
    parts = min(4, count)
    bounds = [round(i * count / parts) for i in range(parts + 1)]
    return [(f"steps {history.steps[a]}-{history.steps[b - 1]}", history.profile(a, b))
            for a, b in pairwise(bounds) if b > a]


def gradient_figure(history: GradientHistory, title: str = "") -> Figure:
    figure = Figure(figsize=(13, max(3.6, 0.16 * min(len(history.layers), 60) + 1.5)), layout="constrained")
    heatmap, profile = figure.subplots(1, 2, width_ratios=(3, 2))
    draw_heatmap(heatmap, history)
    heatmap.set_title("gradient norm by layer and step")
    draw_profiles(profile, quarter_profiles(history))
    profile.set_title("gradient norm by depth")
    if title:
        figure.suptitle(title)
    return figure


def save_figure(figure: Figure, path: Path) -> Path:
    """Draw a figure into a PNG, written all or nothing."""
    with atomic_output(path) as handle:
        figure.savefig(handle, format="png", dpi=100)
    return Path(path)


def save_gradient_figure(history: GradientHistory, path: Path, title: str = "") -> Path:
    return save_figure(gradient_figure(history, title), path)
