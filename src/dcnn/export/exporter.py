"""Exporting a trained classifier: an ONNX file or a torch.export program, with its preprocessing and
class names, written all or nothing.

ONNX goes through torch's torch.export-based exporter (``torch.onnx.export(..., dynamo=True)``,
the default since torch 2.9; the TorchScript one is deprecated, and cannot export the adaptive
pooling of AlexNet's, ZFNet's and VGG's heads at small inputs). It takes several times longer than
the TorchScript one: 2 to 33 s of CPU a model (BENCHMARKS.md).
Both translate ``avg_pool2d`` without its ``divisor_override``, which is why LeNet-5 writes its 2x2
sum subsampling as 4 x the average.

The graph computes the model in eval mode: models with auxiliary classifiers (GoogLeNet,
Inception v3) export their main output only. Its input is the normalized image (N, C, H, W); with
``fold_normalization`` it is pixels in [0, 1] and the graph normalizes (mean/std, or the ZCA
whitening fitted on the training split, which the metadata cannot carry: a model trained with
whitening must be exported that way). Without ``dynamic_batch`` the graph reads one image at a
time (batch 1).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from dcnn.data.preprocess import Preprocess
from dcnn.errors import DcnnError
from dcnn.evaluate.run import class_names_of, model_file_of, preprocess_of
from dcnn.export.metadata import ExportInfo, write_sidecar
from dcnn.fileio import atomic_output
from dcnn.models.modelfile import load_model_file

FORMATS = {"onnx": ".onnx", "torch-export": ".pt2"}
# torch's exporter writes operator set 18 natively (its torchlib) and converts up to 23 (torch.onnx's
# maximum, which onnxruntime 1.32 runs); below 18 its version conversion fails on common operators.
MIN_OPSET, MAX_OPSET = 18, 23
DEFAULT_OPSET = 20  # torch.onnx's default
INPUT_NAME, OUTPUT_NAME = "input", "logits"


class _FoldedNormalization(nn.Module):
    """A model reading pixels in [0, 1]: the preprocessing's normalization (or whitening), then the model."""

    def __init__(self, model: nn.Module, preprocess: Preprocess) -> None:
        super().__init__()
        self.model = model
        self.preprocess = preprocess

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.preprocess.normalize(x))


def export_model(
    source: str | Path, fmt: str = "onnx", out: str | Path | None = None, *, opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = False, fold_normalization: bool = False,
) -> Path:
    """Export a run's model (or a dcnn model file) to `out` (default: beside the model file, as
    ``model.onnx`` or ``model.pt2``); returns the path written."""
    check_options(fmt, opset)
    path = model_file_of(source)
    model, meta = load_model_file(path, "cpu")
    target = Path(out) if out is not None else path.with_suffix(FORMATS[fmt])
    return export_classifier(model, preprocess_of(meta), class_names_of(model, meta), target, fmt, opset=opset,
                             dynamic_batch=dynamic_batch, fold_normalization=fold_normalization)


def check_options(fmt: str, opset: int) -> None:
    if fmt not in FORMATS:
        raise DcnnError(f"--format {fmt!r}: choose {' or '.join(FORMATS)}.")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise DcnnError(f"--opset {opset} is out of range: torch's exporter writes ONNX operator sets "
                        f"{MIN_OPSET} to {MAX_OPSET}.")


def export_classifier(
    model: nn.Module, preprocess: Preprocess, class_names: Sequence[str], out: str | Path, fmt: str = "onnx", *,
    opset: int = DEFAULT_OPSET, dynamic_batch: bool = False, fold_normalization: bool = False,
) -> Path:
    """Export a classifier (a dcnn model, in eval mode for the export) with the preprocessing its
    input needs and its class names; returns `out`. Nothing is left at `out` if the export fails."""
    check_options(fmt, opset)
    if len(class_names) != model.num_classes:
        raise DcnnError(f"{len(class_names)} class names for a model with {model.num_classes} outputs.")
    if preprocess.whitening is not None and not fold_normalization:
        raise DcnnError("this model reads ZCA-whitened images, a preprocessing the export metadata cannot carry; "
                        "export with --fold-normalization to put the whitening into the graph.")
    model = model.eval()
    graph: nn.Module = _FoldedNormalization(model, preprocess).eval() if fold_normalization else model
    channels = preprocess.input_size[0]
    info = ExportInfo(getattr(model, "model_name", type(model).__name__),
                      preprocess.with_stats((0.0,) * channels, (1.0,) * channels).with_whitening(None)
                      if fold_normalization else preprocess,
                      list(class_names), preprocess.to_dict() if fold_normalization else None)
    # torch.export specializes a batch of 1 to a constant: trace a batch of 2 for a dynamic batch.
    example = torch.zeros(2 if dynamic_batch else 1, *preprocess.input_size)
    dynamic_shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    out = Path(out)
    with torch.no_grad(), _quiet_exporter():
        if fmt == "onnx":
            _write_onnx(graph, example, dynamic_shapes, opset, info, out)
        else:
            archive = io.BytesIO()  # torch.export.save takes a path or a buffer
            torch.export.save(torch.export.export(graph, (example,), dynamic_shapes=dynamic_shapes), archive)
            with atomic_output(out) as handle:
                handle.write(archive.getbuffer())
                write_sidecar(out, info)  # inside: a failure here removes the half-written program too
    return out


def _write_onnx(graph: nn.Module, example: torch.Tensor, dynamic_shapes: Any, opset: int, info: ExportInfo,
                out: Path) -> None:
    try:
        program = torch.onnx.export(
            graph, (example,), dynamo=True, opset_version=opset, dynamic_shapes=dynamic_shapes,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], verbose=False,
        )
    except torch.onnx.errors.OnnxExporterError as err:
        cause = (str(err.__cause__ or err).strip() or type(err).__name__).splitlines()[0]
        raise DcnnError(f"torch's ONNX exporter cannot export {info.model}: {cause}") from None
    proto = program.model_proto
    for key, value in info.to_strings().items():
        proto.metadata_props.add(key=key, value=value)
    with atomic_output(out) as handle:
        handle.write(proto.SerializeToString())


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporters' notes that do not concern the user: torchvision's operators missing,
    a deprecation inside torch.export's own pytree code."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            yield
    finally:
        registration.setLevel(level)
