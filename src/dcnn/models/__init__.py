"""The model zoo. Every module in this package (except the private ones, `pretrained` and `modelfile`,
which read and write weight files) is a family that registers its variants by name; importing the
package imports them all."""

from __future__ import annotations

import importlib
import pkgutil

from dcnn.models._base import ImageClassifier
from dcnn.models._registry import (
    ModelCfg,
    create_model,
    get_model_cfg,
    list_models,
    register_model,
)
from dcnn.models.pretrained import load_pretrained

_NOT_FAMILIES = {"modelfile", "pretrained"}

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_") and _module.name not in _NOT_FAMILIES:
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "ImageClassifier",
    "ModelCfg",
    "create_model",
    "get_model_cfg",
    "list_models",
    "load_pretrained",
    "register_model",
]
