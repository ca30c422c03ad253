"""Checkpoints that resume exactly, and the weights a run starts from.

A checkpoint is a directory ``checkpoints/step-00001234/`` holding

- ``model.safetensors``: the weights, with the model's name, options and preprocessing as metadata
  (a model file, :mod:`dcnn.models.modelfile`);
- ``state.pt``: optimizer, scheduler, RNG states, data-order position, epoch, step and config
  (plain tensors and Python values, read back with ``torch.load(weights_only=True)``);
- ``manifest.json``: the SHA-256 of both, written last.

It is written into a temporary directory, every file fsynced, then renamed into place, so a crash
never leaves a half checkpoint under a final name. On resume, a checkpoint whose files are missing,
truncated or do not match their manifest is reported and the previous one is used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file

from dcnn.errors import DcnnError
from dcnn.fileio import atomic_output, fsync_directory, fsync_file
from dcnn.models.modelfile import PREPROCESS_PREFIX, read_model_metadata, save_model_file

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
MANIFEST_FILE = "manifest.json"
CHECKPOINTS = "checkpoints"


def initial_weights(source: str | Path) -> dict[str, torch.Tensor] | Path:
    """Weights to fine-tune from: a run directory's final model, a dcnn model file (its weights,
    without the fitted preprocessing), or a reference checkpoint's path (read by load_pretrained)."""
    path = Path(source)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise DcnnError(f"init_from: {source} is neither a finished run nor a weights file.")
    if path.suffix != ".safetensors":
        return path
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise DcnnError(f"init_from: {path} is not a readable .safetensors file: {err}") from None
    return {k: v for k, v in tensors.items() if not k.startswith(PREPROCESS_PREFIX)}


def init_class_rows(model: nn.Module, source: str | Path, weights: dict[str, torch.Tensor] | Path,
                    class_names: list[str], mapping: dict[str, str]) -> None:
    """Start the classifier rows of some classes from rows of the `source` run's classifier
    (`mapping`: a class of this dataset → a class of the source), e.g. a cats-vs-dogs head from a
    CIFAR-10 run's cat and dog rows: the new head then begins as the source's classifier restricted
    to those classes. Every classifier tensor with one row per class (weights and biases of the
    last layer; a conv head's too) is copied row by row; the other classes keep their fresh rows."""
    path = Path(source)
    meta = read_model_metadata(path / MODEL_FILE if path.is_dir() else path) \
        if path.suffix == ".safetensors" or path.is_dir() else {}
    source_names = meta.get("class_names")
    if not source_names or not isinstance(weights, dict):
        raise DcnnError(f"init_classes: {source} has no class names (only a dcnn run or model file has them).")
    problems = []
    if unknown := [k for k in mapping if k not in class_names]:
        problems.append(f"{', '.join(unknown)} not among this dataset's classes ({', '.join(class_names)})")
    if missing := [v for v in mapping.values() if v not in source_names]:
        problems.append(f"{', '.join(missing)} not among {source}'s classes ({', '.join(source_names)})")
    if problems:
        raise DcnnError("init_classes: " + "; ".join(problems) + ".")
    prefixes = tuple(model.default_cfg.classifier)
    state = model.state_dict()  # shares storage with the parameters
    rows = [(class_names.index(new), source_names.index(old)) for new, old in mapping.items()]
    copied = 0
    with torch.no_grad():
        for key, value in weights.items():
            target = state.get(key)
            if (key.startswith(prefixes) and target is not None and value.shape[0] == len(source_names)
                    and target.shape[0] == len(class_names) and value.shape[1:] == target.shape[1:]):
                for new, old in rows:
                    target[new] = value[old]
                copied += 1
    if not copied:
        raise DcnnError(f"init_classes: {source}'s classifier has no rows of {len(source_names)} classes "
                        "to copy (another model?).")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(
    run_dir: Path, model: nn.Module, state: dict[str, Any], metadata: dict[str, str], keep: int,
    extra: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write checkpoint ``step-<global_step>`` atomically and keep only the newest `keep`."""
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{state['global_step']:08d}"
    tmp = root / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_model_file(model, tmp / MODEL_FILE, metadata, extra)
        with atomic_output(tmp / STATE_FILE) as handle:
            torch.save(state, handle)
        manifest = {name: _sha256(tmp / name) for name in (MODEL_FILE, STATE_FILE)}
        with atomic_output(tmp / MANIFEST_FILE) as handle:
            handle.write(json.dumps(manifest).encode())
        fsync_file(tmp)
        if final.exists():  # the same step saved again (e.g. after a resume): swap in the new one
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_directory(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint directories of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    return sorted(p for p in root.glob("step-*") if p.is_dir()) if root.is_dir() else []


def verify_checkpoint(path: Path) -> None:
    """Raise DcnnError if a checkpoint's files are missing or differ from its manifest."""
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise DcnnError(f"checkpoint {path} is incomplete: no {MANIFEST_FILE}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError:
        raise DcnnError(f"checkpoint {path} has a corrupt {MANIFEST_FILE}") from None
    for name in (MODEL_FILE, STATE_FILE):
        file = path / name
        if not file.is_file():
            raise DcnnError(f"checkpoint {path} is missing {name}")
        if _sha256(file) != manifest.get(name):
            raise DcnnError(f"checkpoint {path}: {name} is truncated or corrupt (checksum mismatch)")


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Weights and trainer state of one verified checkpoint."""
    verify_checkpoint(path)
    try:
        weights = {k: v for k, v in load_file(str(path / MODEL_FILE)).items() if not k.startswith(PREPROCESS_PREFIX)}
        state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    except (SafetensorError, RuntimeError, OSError, EOFError) as err:
        raise DcnnError(f"checkpoint {path} cannot be read: {err}") from None
    return weights, state


def load_latest_checkpoint(run_dir: Path) -> tuple[Path, dict[str, torch.Tensor], dict[str, Any], list[str]]:
    """The newest good checkpoint of a run, with a warning for each newer one that was unusable."""
    warnings: list[str] = []
    for path in reversed(list_checkpoints(run_dir)):
        try:
            weights, state = load_checkpoint(path)
        except DcnnError as err:
            warnings.append(f"{err}; trying the previous checkpoint")
            continue
        return path, weights, state, warnings
    detail = f" ({'; '.join(warnings)})" if warnings else ""
    raise DcnnError(f"no usable checkpoint in {Path(run_dir) / CHECKPOINTS}{detail}; start a new run instead.")
