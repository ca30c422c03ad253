"""Hard examples and data cleaning: the training and test images a trained model finds hardest.

The examples with the highest loss are the likely mislabeled, ambiguous or unusual ones (the first
place to look when cleaning a dataset, as fastai's "top losses" and cleanlab's audits do). `dcnn
inspect RUN` lists them for the training split (as the run held it out) and the test split, and
draws a contact sheet of each with the true label, the prediction and its probability.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from dcnn.data.loader import Batches, FileBatches, TensorBatches
from dcnn.data.pipeline import model_inputs
from dcnn.device import resolve_device
from dcnn.errors import DcnnError
from dcnn.evaluate.metrics import evaluate
from dcnn.evaluate.run import preprocess_of
from dcnn.fileio import atomic_output
from dcnn.models import get_model_cfg
from dcnn.models.modelfile import load_model_file
from dcnn.train.config import make_config
from dcnn.train.trainer import prepare_data
from dcnn.visualize.contact_sheet import save_contact_sheet


@dataclass(frozen=True)
class HardRow:
    split: str
    index: int
    source: str  # the file, or the index in a named dataset's split
    true: str
    predicted: str
    probability: float
    loss: float


def in_sequence(batches: Batches, batch_size: int) -> Batches:
    """The same examples, in their stored order (the loss ranking indexes this order)."""
    if isinstance(batches, TensorBatches):
        return TensorBatches(batches.images, batches.labels, batch_size, paths=batches.paths)
    return FileBatches(batches.dataset, batch_size, None, batches.workers, batches.device)


def _images_at(batches: Batches, indices: list[int]) -> torch.Tensor:
    if isinstance(batches, TensorBatches):
        return batches.images[torch.tensor(indices, device=batches.images.device)].cpu()
    return torch.stack([batches.dataset[i][0] for i in indices])


def _source(batches: Batches, index: int) -> str:
    paths = batches.dataset.paths if isinstance(batches, FileBatches) else batches.paths
    return str(paths[index]) if paths else f"#{index}"


def inspect_run(run_dir: str | Path, top: int = 16, out_dir: str | Path | None = None,
                device: str = "auto") -> tuple[list[HardRow], Path]:
    """The `top` highest-loss examples of the training and test splits of a finished run; writes
    hardest.csv and one contact sheet per split (hardest_train.png, hardest_test.png) to `out_dir`
    (default RUN/inspect)."""
    run_dir = Path(run_dir)
    if top < 1:
        raise DcnnError(f"--top {top}: give how many examples to list, at least 1.")
    config_path, model_path = run_dir / "config.yaml", run_dir / "model.safetensors"
    if not config_path.is_file() or not model_path.is_file():
        raise DcnnError(f"{run_dir} is not a finished run (it needs config.yaml and model.safetensors).")
    cfg = make_config({**yaml.safe_load(config_path.read_text()), "progress": False})
    dev = resolve_device(device)
    model, meta = load_model_file(model_path, dev)
    prep = preprocess_of(meta)  # as saved with the weights
    data = prepare_data(cfg, get_model_cfg(cfg.model), dev)
    out = Path(out_dir) if out_dir else run_dir / "inspect"
    names = data.class_names
    rows: list[HardRow] = []
    for split, batches in (("train", data.train), ("test", data.test if data.test is not None else data.val)):
        if batches is None:
            continue
        sequential = in_sequence(batches, cfg.eval_batch_size)
        result = evaluate(model, model_inputs(sequential, prep), dev, topk=(1,), num_hardest=top)
        hardest = result.hardest
        split_rows = [HardRow(split, h.index, _source(sequential, h.index), names[h.target], names[h.prediction],
                              h.predicted_probability, h.loss) for h in hardest]
        rows.extend(split_rows)
        save_contact_sheet(
            _images_at(sequential, [h.index for h in hardest]), [h.target for h in hardest],
            [h.prediction for h in hardest], [r.probability for r in split_rows], names,
            out / f"hardest_{split}.png", losses=[h.loss for h in hardest],
            title=f"{run_dir.name}: the {len(hardest)} highest-loss {split} images",
        )
    _write_rows(out / "hardest.csv", rows)
    return rows, out


def _write_rows(path: Path, rows: list[HardRow]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["split", "index", "source", "true", "predicted", "probability", "loss"])
    writer.writerows((r.split, r.index, r.source, r.true, r.predicted, f"{r.probability:.4f}", f"{r.loss:.4f}")
                     for r in rows)
    with atomic_output(path) as handle:
        handle.write(buffer.getvalue().encode())
