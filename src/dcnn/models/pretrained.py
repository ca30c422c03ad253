"""Load checkpoints of the reference libraries (torchvision, timm) into dcnn models.

Users bring pretrained weights as a local file. The file is read without unpickling arbitrary
objects (safetensors, or ``torch.load(weights_only=True)``), renamed by the family's key map, the
classifier is dropped when the class count differs, the first conv is adapted when the input
channel count differs, and the result is loaded strictly: anything missing, unexpected or mis-shaped
is reported by name.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError

from dcnn.errors import DcnnError

StateDict = dict[str, torch.Tensor]
AUX_PREFIX = "aux_heads."  # where every family keeps its auxiliary classifiers (GoogLeNet, Inception v3)


def read_state_dict(path: str | Path) -> StateDict:
    """Read a state_dict from a .safetensors or .pth/.pt/.bin/.ckpt file, safely.

    A checkpoint that wraps its weights (``{"state_dict": ...}`` or ``{"model": ...}``) is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise DcnnError(f"checkpoint {str(path)!r} not found; give the path of a .pth or .safetensors file.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data: Any = load_file(str(path))
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise DcnnError(
            f"{path}: refused to load: it holds Python objects other than tensors ({err}). "
            "Only weights files are accepted; re-save it as a plain state_dict or as .safetensors."
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile, SafetensorError) as err:
        raise DcnnError(f"{path}: not a readable checkpoint (truncated or corrupt?): {err}") from None
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(data, Mapping) and wrapper in data and isinstance(data[wrapper], Mapping):
            data = data[wrapper]
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise DcnnError(f"{path}: expected a mapping of parameter names to tensors (a state_dict).")
    return {k.removeprefix("module."): v for k, v in data.items()}


def rename_prefixes(state_dict: StateDict, prefixes: Mapping[str, str]) -> StateDict:
    """Rename keys by prefix: the first matching (old → new) prefix in `prefixes` is replaced."""
    renamed = {}
    for key, value in state_dict.items():
        for old, new in prefixes.items():
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        renamed[key] = value
    return renamed


def adapt_first_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Convert an RGB first-conv weight (O, 3, kh, kw) to `in_chans` input channels.

    One channel: the sum over RGB (a grayscale image replicated to RGB gives the same response).
    More channels: RGB repeated cyclically, rescaled by 3 / in_chans to keep the activation scale.
    """
    source = weight.shape[1]
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-in_chans // source)
    return weight.repeat(1, repeats, 1, 1)[:, :in_chans] * (source / in_chans)


def _describe(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_pretrained(model: nn.Module, path: str | Path | Mapping[str, torch.Tensor], strict: bool = True) -> nn.Module:
    """Load a reference-library checkpoint (a file, or a state_dict already in memory) into `model`.

    The family's key map renames the reference's keys to ours. When `model.num_classes` differs from
    the checkpoint's, the classifier layers are dropped (they keep their fresh initialization); when
    `model.in_chans` differs, the first conv is adapted with :func:`adapt_first_conv`. A model built
    without auxiliary classifiers (``aux_logits=False``) ignores the checkpoint's. Linear weights
    load into 1×1 (or k×k) convs of the same size, so ``head="conv"`` models load the same files.
    With `strict`, missing, unexpected or mis-shaped keys raise a DcnnError that lists them.
    """
    cfg = getattr(model, "default_cfg", None)
    source = dict(path) if isinstance(path, Mapping) else read_state_dict(path)
    where = "the state_dict" if isinstance(path, Mapping) else str(path)
    ours = model.state_dict()
    if cfg is not None and cfg.key_map is not None and not set(source) <= set(ours):
        source = cfg.key_map(source)

    if not any(key.startswith(AUX_PREFIX) for key in ours):  # built without auxiliary classifiers
        source = {key: value for key, value in source.items() if not key.startswith(AUX_PREFIX)}

    classifier = tuple(cfg.classifier) if cfg is not None else ()
    first_conv = f"{cfg.first_conv}.weight" if cfg is not None and cfg.first_conv else None
    adapted: StateDict = {}
    reinitialized: set[str] = set()
    for key, value in source.items():
        target = ours.get(key)
        if target is not None and target.shape != value.shape:
            if key == first_conv and value.dim() == 4 and target.shape[1] != value.shape[1]:
                value = adapt_first_conv(value, target.shape[1])
            elif value.numel() == target.numel() and value.dim() == 2 and target.dim() == 4:
                value = value.reshape(target.shape)  # linear → conv, flattened in (C, H, W) order
            elif classifier and key.startswith(classifier):
                reinitialized.add(key)  # another class count: keeps its fresh initialization
                continue
        adapted[key] = value

    missing = [k for k in ours if k not in adapted and k not in reinitialized]
    unexpected = [k for k in adapted if k not in ours]
    misshaped = [
        f"{k} (file {tuple(v.shape)}, model {tuple(ours[k].shape)})"
        for k, v in adapted.items()
        if k in ours and ours[k].shape != v.shape
    ]
    if strict and (missing or unexpected or misshaped):
        name = getattr(model, "model_name", type(model).__name__)
        problems = []
        if missing:
            problems.append(f"missing keys: {_describe(missing)}")
        if unexpected:
            problems.append(f"unexpected keys: {_describe(unexpected)}")
        if misshaped:
            problems.append(f"mis-shaped keys: {_describe(misshaped)}")
        reference = f" (expected a {cfg.reference} checkpoint)" if cfg is not None and cfg.reference else ""
        raise DcnnError(
            f"{where} does not fit {name}{reference}: " + "; ".join(problems)
            + ". Check that the file is for this architecture, or pass strict=False."
        )
    valid = {k: v for k, v in adapted.items() if k in ours and ours[k].shape == v.shape}
    model.load_state_dict(valid, strict=False)
    return model

