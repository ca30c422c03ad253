"""`dcnn export RUN`: the trained model as an ONNX file or a torch.export program, with its
preprocessing and class names."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dcnn.cli import app, out
from dcnn.export.exporter import DEFAULT_OPSET, FORMATS, MAX_OPSET, MIN_OPSET


@app.command("export")
def export_command(
    source: Annotated[Path, typer.Argument(help="a run directory or a model .safetensors file")],
    fmt: Annotated[str, typer.Option("--format", help=" or ".join(FORMATS))] = "onnx",
    opset: Annotated[int, typer.Option(help=f"ONNX operator set, {MIN_OPSET} to {MAX_OPSET}")] = DEFAULT_OPSET,
    dynamic_batch: Annotated[bool, typer.Option("--dynamic-batch", help="any batch size (default: one image a run)")
                             ] = False,
    fold_normalization: Annotated[bool, typer.Option(
        "--fold-normalization", help="the graph reads pixels in [0, 1] and normalizes (or whitens) them itself")
    ] = False,
    out_path: Annotated[Path | None, typer.Option(
        "--out", help="file to write (default: beside the model file, model.onnx or model.pt2)")] = None,
) -> None:
    """Export a trained model for inference outside dcnn, with its preprocessing and class names
    (ONNX metadata, or a JSON file beside a .pt2)."""
    from dcnn.export import export_model

    path = export_model(source, fmt, out_path, opset=opset, dynamic_batch=dynamic_batch,
                        fold_normalization=fold_normalization)
    out.print(f"exported to {path}", highlight=False)
