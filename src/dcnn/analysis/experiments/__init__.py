"""Experiments from the literature on how CNNs learn, one command each: ``dcnn experiment NAME``.

An experiment is a function registered by name (:func:`register_experiment`, as models are with
``@register_model``) that takes the user's :class:`~dcnn.analysis.experiments.runner.Settings`,
trains its variants through the project's trainer (:func:`~dcnn.analysis.experiments.runner.train_variant`)
and returns an :class:`~dcnn.analysis.experiments.runner.Outcome`: a table, plots and the numbers behind
them, which :func:`run_experiment` writes into the output folder (default ``runs/experiments/NAME``).
The first paragraph of an experiment's docstring is its description in ``dcnn experiment --list``.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from dcnn.analysis.experiments.runner import Outcome, Settings, write_outcome
from dcnn.errors import DcnnError, did_you_mean


@dataclass(frozen=True)
class Experiment:
    name: str
    run: Callable[[Settings], Outcome]
    takes_run: bool  # whether it studies a trained run given by the user (lesion)

    @property
    def description(self) -> str:
        return " ".join((inspect.getdoc(self.run) or "").split("\n\n")[0].split())


EXPERIMENTS: dict[str, Experiment] = {}


def register_experiment(name: str, takes_run: bool = False) -> Callable[[Callable[[Settings], Outcome]],
                                                                       Callable[[Settings], Outcome]]:
    def decorate(fn: Callable[[Settings], Outcome]) -> Callable[[Settings], Outcome]:
        if name in EXPERIMENTS:
            raise ValueError(f"experiment {name!r} is registered twice")
        EXPERIMENTS[name] = Experiment(name, fn, takes_run)
        return fn

    return decorate


def get_experiment(name: str) -> Experiment:
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise DcnnError(f"unknown experiment {name!r}.{did_you_mean(name, EXPERIMENTS)} "
                        f"Run `dcnn experiment --list` to see them all.") from None


def run_experiment(name: str, settings: Settings) -> tuple[Outcome, list[Path]]:
    """Run experiment `name` and write its outputs; returns the outcome and the files written."""
    experiment = get_experiment(name)
    if experiment.takes_run and settings.run is None:
        raise DcnnError(f"experiment {name!r} studies a trained run: give its directory, "
                        f"`dcnn experiment {name} RUN`.")
    if not experiment.takes_run and (settings.run is not None or settings.plain is not None):
        raise DcnnError(f"experiment {name!r} trains its own networks; it takes no RUN or --plain.")
    out = settings.out or Path("runs") / "experiments" / name
    outcome = experiment.run(replace(settings, out=out))
    return outcome, write_outcome(outcome, out)


for _module in pkgutil.iter_modules(__path__):
    if _module.name != "runner":
        importlib.import_module(f"{__name__}.{_module.name}")
