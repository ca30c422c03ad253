"""`dcnn report RUN`: one self-contained HTML page about a training run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dcnn.cli import app, out


@app.command("report")
def report_command(
    run: Annotated[Path, typer.Argument(help="a run directory (finished, or still training)")],
    out_path: Annotated[Path | None, typer.Option("--out", help="HTML file to write (default: RUN/report.html)")
                        ] = None,
    images: Annotated[int, typer.Option(help="hardest examples per split, and test images with their Grad-CAM")
                      ] = 8,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda")] = "auto",
) -> None:
    """One HTML page about a run that opens offline: configuration, data, training curves, test
    accuracy per class and confusion matrix, the hardest examples, first-layer filters, Grad-CAM on
    test images, the model's layers."""
    from dcnn.visualize.html_report import write_html_report

    path = write_html_report(run, out_path, images, device)
    out.print(f"report written to {path}", highlight=False)
