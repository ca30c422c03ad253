"""The model registry: every architecture is a function registered by name with its configuration.

`create_model(name, num_classes=..., in_chans=..., **options)` builds one, `list_models(pattern)`
finds names. Each family file registers its variants with `@register_model(ModelCfg(...))`; the entry
function receives `num_classes`, `in_chans` and the user's options and returns an
:class:`~dcnn.models._base.ImageClassifier`.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from dcnn.errors import DcnnError, did_you_mean

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class ModelCfg:
    """What a user (and the tooling) needs to know about a registered model.

    Attributes:
        paper: short citation, e.g. "He et al. 2016, Deep Residual Learning for Image Recognition".
        year: publication year of the paper.
        num_params: parameter count of the default model (default `num_classes` and `in_chans`):
            the reference library's count when `reference` is set, otherwise the paper's figure.
        num_params_source: where `num_params` comes from ("reference", "paper Table 1", ...); when
            the paper gives no figure, say so ("computed; the paper gives none").
        input_size: default (channels, height, width).
        min_input_size: smallest input that gives a valid output.
        num_classes: default number of classes.
        mean, std: per-channel normalization the model expects.
        reference: key in shared/reference/state_dicts.json whose checkpoints this model loads.
        key_map: converts a reference state_dict into ours (names and, where needed, layout).
        first_conv: our state_dict prefix of the first conv (adapted when `in_chans` differs).
        classifier: our state_dict prefixes of classifier layers (dropped when `num_classes` differs).
        interpolation: resize interpolation for inference preprocessing.
        crop_pct: center-crop fraction for inference preprocessing.
    """

    paper: str
    year: int
    num_params: int | None = None
    num_params_source: str = "reference"
    input_size: tuple[int, int, int] = (3, 224, 224)
    min_input_size: tuple[int, int, int] = (3, 32, 32)
    num_classes: int = 1000
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    reference: str | None = None
    key_map: Callable[[dict[str, Any]], dict[str, Any]] | None = field(default=None, compare=False)
    first_conv: str = ""
    classifier: tuple[str, ...] = ()
    interpolation: str = "bilinear"
    crop_pct: float = 0.875


@dataclass(frozen=True)
class ModelEntry:
    name: str
    fn: Callable[..., nn.Module]
    cfg: ModelCfg
    family: str


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(cfg: ModelCfg) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register the decorated entry function under its own name with configuration `cfg`."""

    def decorate(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        family = fn.__module__.rsplit(".", 1)[-1]
        _REGISTRY[name] = ModelEntry(name=name, fn=fn, cfg=cfg, family=family)
        return fn

    return decorate


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style `pattern` (e.g. "resnet*"), sorted naturally."""
    names = [n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern)]
    return sorted(names, key=_natural_key)


def _natural_key(name: str) -> list[Any]:
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def get_entry(name: str) -> ModelEntry:
    """The registry entry for `name`; an unknown name raises a DcnnError suggesting close names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise DcnnError(
            f"unknown model {name!r}.{did_you_mean(name, _REGISTRY)} Run `dcnn models` to list them all."
        ) from None


def get_model_cfg(name: str) -> ModelCfg:
    return get_entry(name).cfg


def create_model(
    name: str,
    num_classes: int | None = None,
    in_chans: int | None = None,
    pretrained_path: str | None = None,
    **options: Any,
) -> nn.Module:
    """Build a registered model by name.

    Args:
        name: a name from `list_models()`.
        num_classes: number of output classes (default: the model's own, usually 1000).
        in_chans: number of input channels, e.g. 1 for grayscale (default: the model's own).
        pretrained_path: a local checkpoint of the reference library (.pth or .safetensors) to load
            with :func:`dcnn.models.load_pretrained`.
        **options: family options, e.g. ``head="conv"``, ``drop_rate=0.2``, ``aux_logits=False``.
    """
    entry = get_entry(name)
    cfg = entry.cfg
    kwargs = dict(
        num_classes=cfg.num_classes if num_classes is None else num_classes,
        in_chans=cfg.input_size[0] if in_chans is None else in_chans,
    )
    if kwargs["num_classes"] < 0:  # 0 is timm's convention for a model without classifier (features only)
        raise DcnnError(f"num_classes must be a positive number of classes (or 0 for no classifier), "
                        f"not {kwargs['num_classes']}.")
    if kwargs["in_chans"] < 1:
        raise DcnnError(f"in_chans must be at least 1 (1 for grayscale, 3 for RGB), not {kwargs['in_chans']}.")
    accepted = inspect.signature(entry.fn).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    for key in options:
        if not takes_any and key not in accepted:
            valid = sorted(k for k in accepted if k not in kwargs)
            raise DcnnError(
                f"model {name!r} has no option {key!r}.{did_you_mean(key, valid)} "
                f"Its options are: {', '.join(valid) or 'none'}."
            )
    try:
        model = entry.fn(**kwargs, **options)
    except TypeError as err:
        if "unexpected keyword argument" not in str(err):
            raise
        raise DcnnError(f"model {name!r}: {err}. Check the option's spelling.") from None
    except ValueError as err:
        raise DcnnError(f"cannot build {name!r} with {options or 'default options'}: {err}") from None
    model.model_name = name
    model.default_cfg = cfg
    if pretrained_path is not None:
        from dcnn.models.pretrained import load_pretrained

        load_pretrained(model, pretrained_path)
    return model
