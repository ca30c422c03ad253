"""The training configuration: one validated object, read from a YAML recipe and/or CLI options.

Every field has a default, so a recipe names only what it changes. Unknown keys and invalid values
are rejected with the field's name and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dcnn.errors import DcnnError


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # What to train on what.
    model: str = "lenet5_modern"
    model_options: dict[str, Any] = Field(default_factory=dict)
    dataset: Literal["mnist", "mnist_sample"] = "mnist"
    data_dir: str | None = None
    download: bool = True
    val_size: int = Field(5000, ge=0, description="training images held out for validation (0: none)")
    train_limit: int = Field(0, ge=0, description="use only the first N training images (0: all)")
    test_limit: int = Field(0, ge=0, description="evaluate on the first N test images (0: all)")

    # Mini-batch (1 ≤ batch_size < N), full-batch (batch_size: full), epochs.
    epochs: int = Field(10, ge=1)
    batch_size: int | Literal["full"] = 128
    eval_batch_size: int = Field(1000, ge=1)
    random_shift: int = Field(0, ge=0, description="random translation by up to this many pixels")

    # Optimizer (Goodfellow et al. 2016, ch. 8).
    optimizer: Literal["sgd", "rmsprop", "adam", "adamw", "adadelta"] = "sgd"
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    alpha: float = Field(0.99, gt=0, lt=1, description="RMSProp smoothing constant")
    rho: float = Field(0.9, gt=0, lt=1, description="Adadelta decay rate")
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty (decoupled for AdamW)")
    l1: float = Field(0.0, ge=0, description="L1 penalty on weights, added to the loss")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    aux_weights: tuple[float, ...] | None = None
    clip_grad_norm: float | None = Field(None, gt=0)
    clip_grad_value: float | None = Field(None, gt=0)

    # Learning-rate schedule, stepped every optimizer step.
    schedule: Literal["constant", "step", "multistep", "cosine", "onecycle"] = "constant"
    step_size: float = Field(1.0, gt=0, description="epochs between decays (step)")
    milestones: list[float] = Field(default_factory=list, description="epochs of decay (multistep)")
    gamma: float = Field(0.1, gt=0, le=1)
    warmup_epochs: float = Field(0.0, ge=0)
    min_lr: float = Field(0.0, ge=0)
    pct_start: float = Field(0.25, gt=0, lt=1, description="one-cycle: fraction of steps rising")

    # Precision, layout, device, reproducibility.
    bf16: bool = False
    channels_last: bool = False
    device: str = "auto"
    seed: int = 0

    # Bookkeeping.
    run_dir: str | None = None
    metrics_format: Literal["csv", "jsonl"] = "csv"
    checkpoint_every: int = Field(0, ge=0, description="also checkpoint every N steps (0: per epoch)")
    keep_checkpoints: int = Field(2, ge=1)
    early_stopping: int = Field(0, ge=0, description="stop after N epochs without val improvement")
    progress: bool = True

    @field_validator("batch_size")
    @classmethod
    def _positive_batch(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("batch_size must be at least 1, or 'full' for full-batch gradient descent")
        return value


def _format_validation(err: ValidationError) -> str:
    parts = []
    for problem in err.errors():
        where = ".".join(str(p) for p in problem["loc"]) or "config"
        message = "unknown option" if problem["type"] == "extra_forbidden" else problem["msg"]
        parts.append(f"{where}: {message}")
    return "invalid training configuration: " + "; ".join(parts)


def make_config(values: dict[str, Any]) -> TrainConfig:
    """Validate `values` into a TrainConfig; problems raise one DcnnError naming each field."""
    try:
        return TrainConfig(**values)
    except ValidationError as err:
        raise DcnnError(_format_validation(err)) from None


def load_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML recipe and apply `overrides` (options given on the command line win)."""
    from dcnn.train.recipes import bundled_recipes, resolve_recipe

    path = resolve_recipe(path)
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise DcnnError(
            f"recipe {str(path)!r} not found; give a YAML file or a bundled recipe: "
            f"{', '.join(bundled_recipes())}."
        ) from None
    except yaml.YAMLError as err:
        raise DcnnError(f"recipe {path} is not valid YAML: {err}") from None
    if not isinstance(values, dict):
        raise DcnnError(f"recipe {path} must be a mapping of option: value.")
    return make_config({**values, **(overrides or {})})


def save_config(config: TrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
