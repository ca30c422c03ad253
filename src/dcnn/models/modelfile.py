"""Model files: a model's weights in a .safetensors file, with what is needed to rebuild and use it.

The metadata holds the registered model name, class count, input channels and, JSON-encoded, the
model options, class names and preprocessing (:func:`model_metadata`); fitted preprocessing tensors
(a whitening matrix) are stored beside the weights under :data:`PREPROCESS_PREFIX`. Training writes
these files (final, best and checkpoint weights); evaluation, prediction, export, serving and the
pictures read them back with :func:`load_model_file`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save

from dcnn.errors import DcnnError
from dcnn.fileio import atomic_output
from dcnn.models._registry import create_model

# Fitted preprocessing tensors (a whitening matrix) stored beside the weights under this prefix.
PREPROCESS_PREFIX = "preprocess."


def model_metadata(model: nn.Module, extra: dict[str, Any] | None = None) -> dict[str, str]:
    """What a model file needs to rebuild its model: name, classes, channels, options, preprocessing."""
    meta = {
        "dcnn_model": getattr(model, "model_name", type(model).__name__),
        "num_classes": str(model.num_classes),
        "in_chans": str(model.in_chans),
    }
    for key, value in (extra or {}).items():
        meta[key] = json.dumps(value)
    return meta


def save_model_file(model: nn.Module, path: Path, metadata: dict[str, str],
                    extra: dict[str, torch.Tensor] | None = None) -> None:
    """Write weights, `extra` tensors (fitted preprocessing, keys starting with "preprocess.") and
    metadata to a .safetensors file, all or nothing."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tensors.update({k: v.detach().contiguous().cpu() for k, v in (extra or {}).items()})
    with atomic_output(path) as handle:
        handle.write(save(tensors, metadata=metadata))


def read_model_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a dcnn model file, JSON values decoded."""
    path = Path(path)
    if not path.is_file():
        raise DcnnError(f"model file {str(path)!r} not found; give a run directory or a .safetensors file.")
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise DcnnError(f"{path} is not a readable .safetensors file (truncated or corrupt?): {err}") from None
    if "dcnn_model" not in raw:
        raise DcnnError(
            f"{path} has no dcnn metadata (it was not written by `dcnn train`); "
            "load reference weights with dcnn.models.load_pretrained instead."
        )
    meta: dict[str, Any] = {"model": raw["dcnn_model"], "num_classes": int(raw["num_classes"]),
                            "in_chans": int(raw["in_chans"])}
    for key, value in raw.items():
        if key not in ("dcnn_model", "num_classes", "in_chans"):
            meta[key] = json.loads(value)
    return meta


def load_model_file(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a dcnn model file describes and load its weights (eval mode); fitted
    preprocessing tensors come back in ``meta["preprocess_tensors"]``."""
    meta = read_model_metadata(path)
    model = create_model(meta["model"], num_classes=meta["num_classes"], in_chans=meta["in_chans"],
                         **meta.get("model_options", {}))
    try:
        tensors = load_file(str(path))
        meta["preprocess_tensors"] = {k: tensors.pop(k) for k in list(tensors) if k.startswith(PREPROCESS_PREFIX)}
        model.load_state_dict(tensors)
    except (SafetensorError, RuntimeError) as err:
        raise DcnnError(f"{path}: weights do not load into {meta['model']}: {err}") from None
    return model.to(device).eval(), meta
