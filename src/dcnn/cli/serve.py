"""`dcnn serve RUN`: a web service (page, JSON API) that classifies uploaded photos."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dcnn.cli import app, out
from dcnn.errors import DcnnError
from dcnn.serve.batching import DEFAULT_MAX_BATCH, DEFAULT_WINDOW_MS
from dcnn.serve.uploads import DEFAULT_MAX_PIXELS, DEFAULT_MAX_UPLOAD_BYTES


@app.command("serve")
def serve_command(
    source: Annotated[Path, typer.Argument(help="a run directory or a model .safetensors file")],
    host: Annotated[str, typer.Option(help="address to listen on (0.0.0.0: every interface)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on (0: any free port)")] = 8000,
    max_upload_mb: Annotated[float, typer.Option(help="largest request body, in MiB")
                             ] = DEFAULT_MAX_UPLOAD_BYTES / 2**20,
    max_pixels: Annotated[int, typer.Option(help="largest image, in pixels (checked before decoding)")
                          ] = DEFAULT_MAX_PIXELS,
    batch_window_ms: Annotated[float, typer.Option(help="how long a request waits for others to batch with")
                               ] = DEFAULT_WINDOW_MS,
    max_batch: Annotated[int, typer.Option(help="most images in one model call")] = DEFAULT_MAX_BATCH,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda, cuda:N")] = "auto",
) -> None:
    """Serve a model over HTTP: a page at / to drop a photo on (top-5 and a Grad-CAM heat map),
    POST /predict (JSON), GET /health, and the OpenAPI schema at /openapi.json."""
    from dcnn.serve.app import create_app
    from dcnn.serve.server import listen, serve, url_of

    if max_upload_mb <= 0:
        raise DcnnError(f"--max-upload-mb {max_upload_mb}: give the largest upload in MiB, above 0.")
    with listen(host, port) as sock:  # first: a busy port is reported before the model loads
        web = create_app(source, device=device, max_upload_bytes=max(1, round(max_upload_mb * 2**20)),
                         max_pixels=max_pixels, batch_window_ms=batch_window_ms, max_batch=max_batch)
        url = url_of(sock)
        out.print(f"serving {web.state.classifier.name} on {url} (API: POST {url}predict, schema {url}openapi.json; "
                  "Ctrl-C stops)", highlight=False)
        serve(web, sock)
