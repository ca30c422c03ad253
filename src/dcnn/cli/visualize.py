"""`dcnn visualize`: what a trained network sees, drawn as a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dcnn.cli import app, out


def _methods_help() -> str:
    from dcnn.visualize.figures import METHODS

    return "; ".join(f"{name}: {spec.description}" for name, spec in METHODS.items())


@app.command("visualize")
def visualize_command(
    source: Annotated[Path, typer.Argument(help="a run directory or a model .safetensors file")],
    image: Annotated[Path | None, typer.Argument(help="PNG/JPEG file (not for filters and top9)")] = None,
    method: Annotated[str, typer.Option(help=_methods_help())] = "gradcam",
    out_path: Annotated[Path | None, typer.Option("--out", help="PNG to write (default: IMAGE-METHOD.png)")] = None,
    layer: Annotated[str | None, typer.Option(help="module name, as `dcnn summary MODEL` lists them")] = None,
    channel: Annotated[int | None, typer.Option(help="feature map of the layer (deconvnet, features, top9)")] = None,
    target: Annotated[str | None, typer.Option(help="class name or index to explain (default: the predicted)")
                      ] = None,
    max_images: Annotated[int | None, typer.Option(help="training images top9 reads (default 10,000)")] = None,
    invert: Annotated[bool, typer.Option(help="dark digits on light paper: invert first")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda")] = "auto",
) -> None:
    """Draw a deconvnet projection, guided backprop, saliency, Grad-CAM or occlusion map of an image,
    the first layer's filters, a layer's feature maps, or each channel's top-9 training patches."""
    from dcnn.visualize.figures import visualize_file

    default = f"{(image or source).stem}-{method}.png"
    path = visualize_file(source, image, method, out_path or Path(default), layer=layer, channel=channel,
                          target=target, max_images=max_images, invert=invert, device=device)
    out.print(f"{method} written to {path}", highlight=False)
