"""Evaluate and use trained model files: the library side of `dcnn eval` and `dcnn predict`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dcnn.data.images import Preprocess, load_images
from dcnn.data.prepare import Preprocessing, batches, load_split
from dcnn.errors import DcnnError
from dcnn.evaluate.metrics import ClassificationResult, evaluate
from dcnn.evaluate.report import write_report
from dcnn.train.checkpoint import load_model_file
from dcnn.train.trainer import resolve_device


def model_file_of(source: str | Path) -> Path:
    """A run directory's final model, or the model file itself."""
    source = Path(source)
    if source.is_dir():
        candidate = source / "model.safetensors"
        if not candidate.is_file():
            raise DcnnError(f"{source} has no model.safetensors: the run has not finished; "
                            f"resume it with `dcnn train --resume {source}` or pass a checkpoint file.")
        return candidate
    return source


def preprocessing_of(meta: dict[str, Any]) -> Preprocessing:
    p = meta["preprocessing"]
    return Preprocessing(tuple(p["input_size"]), tuple(p["mean"]), tuple(p["std"]), p["fit"],
                         tuple(p["source_size"]))


def class_names_of(model: torch.nn.Module, meta: dict[str, Any]) -> list[str]:
    """The class names a model file records, else the class indices as names."""
    return meta.get("class_names") or [str(i) for i in range(model.num_classes)]


def evaluate_model_file(
    source: str | Path, data_dir: str | None = None, out_dir: str | Path | None = None, device: str = "auto"
) -> tuple[ClassificationResult, Path, list[str]]:
    """Evaluate a trained model on the test split of the dataset it was trained on; writes the report
    (metrics.json, confusion_matrix.csv/.png) to `out_dir` (default: next to the model, in eval/)."""
    path = model_file_of(source)
    dev = resolve_device(device)
    model, meta = load_model_file(path, dev)
    images, labels = load_split(meta["dataset"], "test", data_dir)
    x = preprocessing_of(meta).apply(images.to(dev))
    result = evaluate(model, batches(x, labels.to(dev), 1000), dev)
    report_dir = Path(out_dir) if out_dir else path.parent / "eval"
    names = class_names_of(model, meta)
    write_report(result, report_dir, class_names=names)
    return result, report_dir, names


def predict_tensor(model: torch.nn.Module, x: torch.Tensor, top: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-`top` (probabilities, class indices) for a batch."""
    with torch.no_grad():
        logits = model(x)
    probs = torch.softmax(logits.float(), dim=1)
    return probs.topk(min(top, probs.shape[1]), dim=1)


def preprocess_for_prediction(meta: dict[str, Any], invert: bool = False) -> Preprocess:
    """The image preprocessing matching how a model file's training data was prepared."""
    prep = preprocessing_of(meta)
    return Preprocess(
        input_size=prep.input_size, mean=prep.mean, std=prep.std, resize_mode="pad",
        content_size=prep.source_size if prep.fit == "pad" else None, invert=invert,
    )


def predict_files(
    source: str | Path, images: list[Path], top: int = 5, invert: bool = False, device: str = "auto"
) -> tuple[list[tuple[Path, list[tuple[str, float]]]], list[tuple[Path, str]]]:
    """Top-`top` (class name, probability) for each readable image, and (path, message) for the others."""
    dev = resolve_device(device)
    model, meta = load_model_file(model_file_of(source), dev)
    batch, good, failures = load_images(images, preprocess_for_prediction(meta, invert))
    names = class_names_of(model, meta)
    predictions = []
    if len(good):
        probs, classes = predict_tensor(model, batch.to(dev), top)
        for path, p_row, c_row in zip(good, probs.tolist(), classes.tolist(), strict=True):
            predictions.append((path, [(names[c], p) for c, p in zip(c_row, p_row, strict=True)]))
    return predictions, failures
