"""Gradient flow compared across networks: how the first layer's gradient norm stands against the
last's, and one figure of several nets' records. Builds on the recorder in :mod:`dcnn.train.gradients`
(what a run with ``track_gradients`` writes into ``gradients.csv``).

In a net whose gradients vanish, the backward pass multiplies the gradient by each layer's Jacobian,
and with the sigmoid's slope at most 1/4 the product shrinks geometrically with depth (Bengio, Simard
& Frasconi 1994; Glorot & Bengio 2010, §4.2.2); rectifiers with a variance-preserving initialization
keep it level (He et al. 2015, §2.2), and identity shortcuts add a path on which it is not multiplied
at all (He et al. 2016b, Eq. 5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from dcnn.train.gradients import GradientHistory, draw_heatmap, draw_profiles, norm_limits


@dataclass(frozen=True)
class FlowSummary:
    """Median weight-gradient norms over a run: the first weighted layer's, the last's and their ratio."""

    first: float
    last: float

    @property
    def ratio(self) -> float:
        return self.first / self.last if self.last > 0 else float("nan")


def flow_summary(history: GradientHistory) -> FlowSummary:
    profile = history.profile()
    return FlowSummary(float(profile[0]), float(profile[-1]))


def draw_totals(axes: Axes, entries: list[tuple[str, GradientHistory]]) -> None:
    """The norm of all weight gradients together, by step (log scale), one line per net."""
    for label, history in entries:
        total = history.total()
        axes.plot(history.steps, torch.where(total > 0, total, torch.nan).numpy(), "-o", markersize=2, label=label)
    axes.set_yscale("log")
    axes.set_xlabel("training step")
    axes.set_ylabel("gradient norm, all layers")
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=8)


def comparison_figure(entries: list[tuple[str, GradientHistory]], title: str = "") -> Figure:
    """Top: the norm by depth (median over the run) and the total norm by step of every net;
    bottom: each net's heatmap of layers by steps."""
    columns = max(2, len(entries))
    figure = Figure(figsize=(4.4 * columns, 7.6), layout="constrained")
    grid = figure.add_gridspec(2, columns)
    half = columns // 2
    draw_profiles(figure.add_subplot(grid[0, :half]), [(label, h.profile()) for label, h in entries])
    draw_totals(figure.add_subplot(grid[0, half:]), entries)
    limits = norm_limits([history for _, history in entries])  # one colour scale for every net
    for index, (label, history) in enumerate(entries):
        axes = figure.add_subplot(grid[1, index])
        draw_heatmap(axes, history, colorbar=index == len(entries) - 1, limits=limits)
        axes.set_title(label, fontsize=9)
        if index:
            axes.set_yticks([])
    if title:
        figure.suptitle(title)
    return figure
