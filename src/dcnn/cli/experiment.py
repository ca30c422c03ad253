"""`dcnn experiment`: experiments from the literature on how CNNs learn (dcnn.analysis.experiments)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dcnn.cli import app, out


@app.command("experiment")
def experiment_command(
    name: Annotated[str | None, typer.Argument(help="the experiment; none (or --list): list them")] = None,
    run: Annotated[Path | None, typer.Argument(help="lesion: the trained run (a residual net) to study")] = None,
    list_: Annotated[bool, typer.Option("--list", help="list the experiments with what each shows")] = False,
    size: Annotated[str, typer.Option(help="small (a quick look, seconds) or full (the real experiment)")] = "small",
    steps: Annotated[int | None, typer.Option(help="training steps of each variant (default: the size's; lesion: "
                                                    "of the plain counterpart, default RUN's)")] = None,
    subset: Annotated[int | None, typer.Option(help="training images (lesion: test images evaluated; default: "
                                                     "the size's)")] = None,
    dataset: Annotated[str | None, typer.Option(help="another dataset name or image folder")] = None,
    plain: Annotated[Path | None, typer.Option(help="lesion: a trained plain run to compare with "
                                                     "(default: train RUN's plain counterpart)")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="output folder (default runs/experiments/NAME)")] = None,
    seed: Annotated[int, typer.Option(help="random seed of every variant")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda")] = "auto",
) -> None:
    """Run an experiment from the literature: train its variants, print its table, and save the table
    (CSV, Markdown), its plots (PNG) and the numbers behind them (JSON)."""
    from dcnn.analysis.experiments import EXPERIMENTS, run_experiment
    from dcnn.analysis.experiments.runner import Settings

    if list_ or name is None:
        for experiment in EXPERIMENTS.values():
            out.print(f"[bold]{experiment.name}[/]: {experiment.description}", highlight=False)
        return
    settings = Settings(size=size, out=out_dir, seed=seed, steps=steps, subset=subset, dataset=dataset,
                        device=device, run=run, plain=plain)
    outcome, written = run_experiment(name, settings)
    grid = Table(*outcome.columns, title=outcome.title)
    for cells in outcome.cells():
        grid.add_row(*cells)
    (out if out.is_terminal else Console(width=200)).print(grid)
    for note in outcome.notes:
        out.print(f"- {note}", highlight=False, markup=False)
    folder = written[0].parent
    out.print(f"saved in {folder}: {', '.join(p.name for p in written)}", highlight=False, markup=False)
