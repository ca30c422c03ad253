"""Evaluate and use trained model files: the library side of `dcnn eval` and `dcnn predict`.

Both read the preprocessing a model file records (:class:`dcnn.data.preprocess.Preprocess`) and
prepare images exactly as training did.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from dcnn.data.datasets import Split, load_test_split
from dcnn.data.folder import IMAGE_EXTENSIONS, Skipped, _scan_class_folder
from dcnn.data.images import load_images
from dcnn.data.pipeline import at_size, make_batches, model_inputs
from dcnn.data.preprocess import Preprocess
from dcnn.device import resolve_device
from dcnn.errors import DcnnError
from dcnn.evaluate.metrics import ClassificationResult, evaluate
from dcnn.evaluate.report import write_report
from dcnn.evaluate.views import ViewModel, eval_source_size, get_view
from dcnn.models.modelfile import load_model_file


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


def preprocess_of(meta: dict[str, Any], invert: bool = False) -> Preprocess:
    """The preprocessing a model file was trained with."""
    if "preprocessing" not in meta:
        raise DcnnError("the model file records no preprocessing; it was not written by `dcnn train`.")
    return Preprocess.from_dict(meta["preprocessing"], meta.get("preprocess_tensors"), invert=invert)


def class_names_of(model: torch.nn.Module, meta: dict[str, Any]) -> list[str]:
    """The class names a model file records, else the class indices as names."""
    return meta.get("class_names") or [str(i) for i in range(model.num_classes)]


def run_test_split(meta: dict[str, Any], data_dir: str | None = None, download: bool = True
                   ) -> tuple[Split, list[str], list[Skipped], str]:
    """What a trained model is evaluated on by default, from its model file's metadata: its dataset's
    test split, or the validation images the run held out of a folder without one (and the split's
    name, "test" or "val"). A run that held out nothing from such a folder has no unseen images."""
    split, names, skipped, which = load_test_split(meta["dataset"], data_dir, download, meta.get("held_out"))
    if which == "all":
        raise DcnnError(f"{meta['dataset']} has no test split and the run held out no validation images, so it "
                        "trained on every image there; evaluate on other images with --dataset PATH.")
    return split, names, skipped, which


def evaluate_model_file(
    source: str | Path, data_dir: str | None = None, out_dir: str | Path | None = None, device: str = "auto",
    dataset: str | None = None, view: str = "center", batch_size: int = 500,
) -> tuple[ClassificationResult, Path, list[str], str]:
    """Evaluate a trained model on the test split of the dataset it was trained on (the run's held-out
    validation images where that has none; :func:`run_test_split`), or on `dataset`, a folder with
    the same class names, under an evaluation `view` (center, flip, ten_crop, flip_shift); writes the report
    (metrics.json, confusion_matrix.csv/.png) to `out_dir` (default: next to the model, in eval/).
    Returns the result, the report folder, the class names and the split's name (test, val, all)."""
    spec = get_view(view)
    path = model_file_of(source)
    dev = resolve_device(device)
    model, meta = load_model_file(path, dev)
    names = class_names_of(model, meta)
    split, split_classes, _, which = (load_test_split(dataset, data_dir) if dataset
                                      else run_test_split(meta, data_dir))
    if split_classes != names:
        raise DcnnError(f"{dataset or meta['dataset']} has the classes {split_classes}, but the model was trained "
                        f"on {names}; evaluate on a folder with the same class folders.")
    prep = preprocess_of(meta)
    size = tuple(prep.input_size[1:])
    source_prep = at_size(prep, eval_source_size(spec.name, size))
    batches = make_batches(split, source_prep, batch_size, dev)
    result = evaluate(ViewModel(model, spec.name, size), model_inputs(batches, source_prep), dev)
    report_dir = Path(out_dir) if out_dir else path.parent / "eval"
    write_report(result, report_dir, class_names=names, extra={"view": spec.name, "dataset": dataset or meta["dataset"],
                                                                "split": which, "skipped_files": len(batches.skipped)})
    return result, report_dir, names, which


# A classifier as prediction sees it: a batch of model input (N, C, H, W) in, logits (N, classes) out
# (a model, or an exported graph in an inference session).
Classify = Callable[[torch.Tensor], torch.Tensor]
Predictions = list[tuple[Path, list[tuple[str, float]]]]


def predict_tensor(model: Classify, x: torch.Tensor, top: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-`top` (probabilities, class indices) for a batch."""
    with torch.no_grad():
        logits = model(x)
    probs = torch.softmax(logits.float(), dim=1)
    return probs.topk(min(top, probs.shape[1]), dim=1)


def image_paths(sources: Sequence[str | Path]) -> list[Path]:
    """The images to classify: files as given, and each folder's image files (by extension, in any
    subfolder, hidden files and folders left out), sorted."""
    paths: list[Path] = []
    for source in map(Path, sources):
        if not source.is_dir():
            paths.append(source)
            continue
        found = _scan_class_folder(source, [])
        if not found:
            raise DcnnError(f"{source} holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
                            "give image files or a folder of them.")
        paths.extend(found)
    return paths


def predict_images(
    classify: Classify, preprocess: Preprocess, class_names: Sequence[str], images: Sequence[Path], top: int = 5,
    batch_size: int = 32, device: torch.device | str = "cpu", progress: bool | None = False,
) -> tuple[Predictions, list[tuple[Path, str]]]:
    """Top-`top` (class name, probability) for each readable image, read and classified `batch_size` at
    a time, and (path, message) for the others. `progress`: a progress bar on stderr (None: when stderr
    is a terminal)."""
    if batch_size < 1:
        raise DcnnError(f"--batch-size {batch_size}: give how many images to classify at once, at least 1.")
    console = Console(stderr=True)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=console, transient=True, disable=not (console.is_terminal if progress is None else progress))
    predictions: Predictions = []
    failures: list[tuple[Path, str]] = []
    with bar:
        task = bar.add_task("classifying", total=len(images))
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            batch, good, bad = load_images(chunk, preprocess)
            failures.extend(bad)
            if good:
                probs, classes = predict_tensor(classify, batch.to(device), top)
                predictions.extend((path, [(class_names[c], p) for c, p in zip(c_row, p_row, strict=True)])
                                   for path, p_row, c_row in zip(good, probs.tolist(), classes.tolist(), strict=True))
            bar.advance(task, len(chunk))
    return predictions, failures


def predict_files(
    source: str | Path, images: Sequence[Path], top: int = 5, invert: bool = False, device: str = "auto",
    batch_size: int = 32, progress: bool | None = False,
) -> tuple[Predictions, list[tuple[Path, str]]]:
    """Top-`top` (class name, probability) for each readable image, and (path, message) for the others,
    with a run's model (or a dcnn model file) in eval mode."""
    dev = resolve_device(device)
    model, meta = load_model_file(model_file_of(source), dev)
    return predict_images(model, preprocess_of(meta, invert), class_names_of(model, meta), images, top, batch_size,
                          dev, progress)
