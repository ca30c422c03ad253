"""The web service: a FastAPI app that classifies uploaded photos with a trained model file.

- ``GET /``: a page where a person drops or picks a photo and sees the top-5 classes with
  probability bars and a Grad-CAM heat map over the photo (:mod:`dcnn.serve.page`).
- ``POST /predict`` (multipart field ``file``; query ``top``, ``gradcam``): the top classes with
  probabilities, the model's name, the size of the batch the image went through the model in,
  and with ``gradcam=true`` the Grad-CAM heat map of the top class (Selvaraju et al. 2017) over the
  image as the model saw it, as a PNG data URI.
- ``GET /health``: the model, its classes and device, and how many images went through it in how
  many batches.
- ``GET /docs``: the OpenAPI schema (``/openapi.json``) in Swagger UI, its script and style served by
  the app itself (fastapi-offline) rather than a CDN, so it works offline. (No ``/redoc``: ReDoc's
  page fetches its logo from the web.)

Images are prepared by the model file's saved :class:`~dcnn.data.preprocess.Preprocess`, exactly
as `dcnn predict` prepares them, so both give the same probabilities. Concurrent requests are
batched through the model (:mod:`dcnn.serve.batching`). Every error is a 4xx (or 500) with a
one-line JSON body ``{"error": "..."}``, FastAPI's own validation errors included, and the server
keeps serving.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from dcnn import __version__
from dcnn.device import resolve_device
from dcnn.errors import DcnnError
from dcnn.evaluate.run import class_names_of, model_file_of, predict_tensor, preprocess_of
from dcnn.models.modelfile import load_model_file
from dcnn.serve.batching import DEFAULT_MAX_BATCH, DEFAULT_WINDOW_MS, Batcher
from dcnn.serve.page import CONTENT_SECURITY_POLICY, PAGE
from dcnn.serve.uploads import (
    ACCEPTED_FORMATS,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_UPLOAD_BYTES,
    BodyLimit,
    UploadError,
    open_upload,
)
from dcnn.visualize.attribution import grad_cam, overlay_heatmap

DOCS_FILES = "/docs/files"  # Swagger UI's JavaScript, CSS and icon


class ClassProbability(BaseModel):
    name: str = Field(description="the class name")
    probability: float = Field(description="softmax probability, in [0, 1]")


class Prediction(BaseModel):
    model: str = Field(description="the model's registered name")
    top: list[ClassProbability] = Field(description="the most likely classes, most likely first")
    batch_size: int = Field(description="how many images went through the model together with this one")
    gradcam: str | None = Field(None, description="with gradcam=true: a PNG data URI, the Grad-CAM heat map of the "
                                                  "top class over the image as the model saw it")


class Health(BaseModel):
    status: str = Field(description="'ok' while the server answers")
    model: str
    device: str
    input_size: list[int] = Field(description="channels, height, width the model reads")
    classes: list[str]
    images: int = Field(description="images classified so far")
    batches: int = Field(description="model calls so far")
    mean_batch_size: float = Field(description="images per model call (above 1: concurrent requests were batched)")
    largest_batch: int
    max_upload_bytes: int = Field(description="largest request body accepted")
    max_pixels: int = Field(description="largest image accepted, in pixels")
    batch_window_ms: float = Field(description="how long a request waits for others to share a model call")
    max_batch: int = Field(description="most images in one model call")


class ErrorMessage(BaseModel):
    error: str = Field(description="what is wrong and what to do, on one line")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorMessage, "description": "empty, truncated or corrupt image"},
    413: {"model": ErrorMessage, "description": "upload over the byte limit, or image over the pixel limit"},
    415: {"model": ErrorMessage, "description": f"not a {', '.join(ACCEPTED_FORMATS)} image (sniffed from the "
                                                "content)"},
    422: {"model": ErrorMessage, "description": "no multipart field 'file', or a bad query parameter"},
}


@dataclass(frozen=True)
class _Request:
    inputs: torch.Tensor  # (C, H, W), normalized
    top: int
    gradcam: bool


@dataclass(frozen=True)
class _Answer:
    probabilities: list[float]
    classes: list[int]
    heat: torch.Tensor | None  # (H, W) in [0, 1]


class Classifier:
    """A model file ready to serve: the model on its device, its preprocessing and class names."""

    def __init__(self, source: str | Path, device: str = "auto"):
        self.device = resolve_device(device)
        self.model, meta = load_model_file(model_file_of(source), self.device)
        self.name: str = meta["model"]
        self.preprocess = preprocess_of(meta)
        self.class_names = class_names_of(self.model, meta)

    def __call__(self, requests: Sequence[_Request]) -> list[_Answer]:
        """One forward pass for the whole batch; Grad-CAM for the requests that ask for it."""
        x = torch.stack([r.inputs for r in requests]).to(self.device)
        probabilities, classes = predict_tensor(self.model, x, max(r.top for r in requests))
        wanted = [i for i, r in enumerate(requests) if r.gradcam]
        heat: dict[int, torch.Tensor] = {}
        if wanted:
            maps = grad_cam(self.model, x[wanted], target=classes[wanted, 0]).cpu()
            heat = dict(zip(wanted, maps, strict=True))
        return [_Answer(p[: r.top], c[: r.top], heat.get(i))
                for i, (r, p, c) in enumerate(zip(requests, probabilities.tolist(), classes.tolist(), strict=True))]


def _png_data_uri(pixels: torch.Tensor, heat: torch.Tensor) -> str:
    buffer = io.BytesIO()
    overlay_heatmap(pixels, heat).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _error(status: int, message: object, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status, headers=headers)


def _validation_message(error: RequestValidationError) -> str:
    parts = []
    for problem in error.errors():
        where = " ".join(str(part) for part in problem.get("loc", ()))
        if tuple(problem.get("loc", ()))[-1:] == ("file",):
            parts.append(f"{where}: {problem.get('msg')}; send the image as the multipart/form-data file field "
                         "'file' (curl -F file=@photo.jpg)")
        else:
            parts.append(f"{where}: {problem.get('msg')}")
    return "; ".join(parts) + "."


def create_app(
    source: str | Path,
    *,
    device: str = "auto",
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    batch_window_ms: float = DEFAULT_WINDOW_MS,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> FastAPI:
    """The service for a run directory or model file `source`.

    `max_upload_bytes` limits the request body (read in chunks; reading stops past the limit:
    413), `max_pixels` the image (checked from its header before decoding: 413);
    `batch_window_ms` is how long the first request of a batch waits for others, `max_batch` the
    most images in one model call. `device`: auto (CUDA when present), cpu, cuda, cuda:N.
    """
    problems = [f"{name} must be at least {low}, not {value}" for name, value, low in (
        ("max_upload_bytes", max_upload_bytes, 1), ("max_pixels", max_pixels, 1), ("max_batch", max_batch, 1),
        ("batch_window_ms", batch_window_ms, 0))
        if value < low]
    if problems:
        raise DcnnError("; ".join(problems) + ".")
    classifier = Classifier(source, device)
    batcher: Batcher[_Request, _Answer] = Batcher(classifier, batch_window_ms / 1000, max_batch)
    prep = classifier.preprocess
    # Decoding is CPU-bound: more at once than there are cores gains nothing and multiplies the
    # memory decoded images hold (up to 3 bytes a pixel each).
    decoding = asyncio.Semaphore(os.cpu_count() or 1)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await batcher.close()

    names = classifier.class_names
    app = FastAPIOffline(title=f"dcnn: {classifier.name}", version=__version__, lifespan=lifespan,
                         static_url=DOCS_FILES, redoc_url=None,
                         description=f"Classifies photos with {classifier.name} into {len(names)} classes "
                                     f"({', '.join(names[:10])}{', ...' if len(names) > 10 else ''}).")

    app.state.classifier = classifier
    app.add_middleware(BodyLimit, max_bytes=max_upload_bytes)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_message(exc))

    @app.exception_handler(UploadError)
    async def upload_error(_: Request, exc: UploadError) -> JSONResponse:
        return _error(exc.status, exc)

    @app.exception_handler(DcnnError)
    async def user_error(_: Request, exc: DcnnError) -> JSONResponse:
        return _error(400, exc)

    @app.exception_handler(Exception)
    async def server_error(_: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"internal error ({type(exc).__name__}); the server's log has the details.")

    def prepare(data: bytes) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels in [0, 1] as the model sees them, and the normalized model input."""
        pixels = prep.pixels(open_upload(data, max_pixels))
        return pixels, prep.normalize(pixels[None])[0]

    @app.get("/", response_class=HTMLResponse, summary="the page: drop a photo, see the top-5 and a heat map")
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY,
                                           "X-Content-Type-Options": "nosniff"})

    @app.post("/predict", response_model=Prediction, responses=ERROR_RESPONSES,
              summary="classify an uploaded image")
    async def predict(
        file: Annotated[UploadFile, File(description="the image (PNG, JPEG, WebP, GIF or BMP; sniffed from "
                                                     "its content)")],
        top: Annotated[int, Query(ge=1, description="how many classes (more than the model has: all)")] = 5,
        gradcam: Annotated[bool, Query(description="add the Grad-CAM heat map of the top class")] = False,
    ) -> Prediction:
        data = await file.read()
        async with decoding:
            pixels, inputs = await run_in_threadpool(prepare, data)
        answer, batch_size = await batcher.submit(_Request(inputs, top, gradcam))
        overlay = None if answer.heat is None else await run_in_threadpool(_png_data_uri, pixels, answer.heat)
        return Prediction(model=classifier.name, batch_size=batch_size, gradcam=overlay,
                          top=[ClassProbability(name=classifier.class_names[c], probability=p)
                               for c, p in zip(answer.classes, answer.probabilities, strict=True)])

    @app.get("/health", response_model=Health, summary="the model, and how requests were batched")
    async def health() -> Health:
        stats = batcher.stats
        return Health(status="ok", model=classifier.name, device=str(classifier.device),
                      input_size=list(prep.input_size), classes=classifier.class_names, images=stats.items,
                      batches=stats.batches, mean_batch_size=stats.mean, largest_batch=stats.largest,
                      max_upload_bytes=max_upload_bytes, max_pixels=max_pixels, batch_window_ms=batch_window_ms,
                      max_batch=max_batch)

    return app
