"""The classifier `dcnn predict` runs: a trained model (prepared by :func:`dcnn.export.fast.fast_inference`
unless told otherwise) or its exported ONNX graph in onnxruntime, with the preprocessing each carries."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from dcnn.data.preprocess import Preprocess
from dcnn.device import native_bf16, resolve_device
from dcnn.errors import DcnnError
from dcnn.evaluate.run import Classify, class_names_of, model_file_of, preprocess_of
from dcnn.export.fast import PRECISIONS, fast_inference, idle_cores
from dcnn.export.runtime import OnnxClassifier
from dcnn.models.modelfile import load_model_file

RUNTIMES = ("torch", "onnx")


@dataclass
class Predictor:
    """What classifying images needs: the classifier, how images become its input, the class names and
    the device its input goes to."""

    classify: Classify
    preprocess: Preprocess
    class_names: list[str]
    device: torch.device


def load_predictor(source: str | Path, runtime: str = "torch", device: str = "auto", invert: bool = False,
                   fast: bool = True, compile: bool = False, threads: int | None = None,
                   precision: str = "fp32") -> Predictor:
    """The classifier of a run (or model file) for `runtime` "torch", or of its exported ONNX model (or
    an .onnx file) for "onnx". `fast`, `compile` and `precision` choose the torch path (see
    :mod:`dcnn.export.fast`; bf16 only on the fast path, on a device that computes it natively).
    CPU inference runs on `threads` threads (None: :func:`~dcnn.export.fast.idle_cores`); for torch this
    sets the process's thread count (``torch.set_num_threads``)."""
    if runtime not in RUNTIMES:
        raise DcnnError(f"--runtime {runtime!r}: choose {' or '.join(RUNTIMES)}.")
    if threads is not None and threads < 1:
        raise DcnnError(f"--threads {threads}: give at least 1, or leave it out to use the idle cores.")
    if precision not in PRECISIONS:
        raise DcnnError(f"--precision {precision!r}: choose {' or '.join(PRECISIONS)}.")
    if precision == "bf16" and (runtime == "onnx" or not fast):
        raise DcnnError("--precision bf16 is a setting of the fast torch path; leave out "
                        f"{'--runtime onnx' if runtime == 'onnx' else '--no-fast'}, or --precision.")
    threads = threads or idle_cores()
    if runtime == "onnx":
        if device not in ("auto", "cpu"):
            raise DcnnError(f"--runtime onnx runs on the CPU; leave out --device {device}.")
        session = OnnxClassifier(source, threads)
        return Predictor(session, replace(session.info.preprocess, invert=invert), session.info.class_names,
                         torch.device("cpu"))
    dev = resolve_device(device)
    if precision == "bf16" and not native_bf16(dev):
        raise DcnnError(f"--precision bf16: this {dev.type.upper()} does not compute bf16 natively (on a CPU: "
                        "AVX-512 BF16 or AMX), and emulated it is slower than fp32; use fp32.")
    if dev.type == "cpu":
        torch.set_num_threads(threads)
    model, meta = load_model_file(model_file_of(source), dev)
    classify = fast_inference(model, compile, precision) if fast or compile else model
    return Predictor(classify, preprocess_of(meta, invert), class_names_of(model, meta), dev)
