"""The training configuration: one validated object, read from a YAML recipe and/or CLI options.

Every field has a default, so a recipe names only what it changes. Unknown keys and invalid values
are rejected with the field's name and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, ValidationError, field_validator, model_validator

from dcnn.data.augment import parse_augment_spec
from dcnn.data.datasets import DATASETS
from dcnn.data.folder import DEFAULT_MAX_PIXELS
from dcnn.errors import DcnnError
from dcnn.evaluate.views import EVAL_VIEWS
from dcnn.fileio import atomic_output
from dcnn.train.optim import OPTIMIZERS, SCHEDULES

# Fields read by only some optimizers or schedules (the tables in optim.py say which).
OPTIMIZER_FIELDS = sorted({name for spec in OPTIMIZERS.values() for name in spec.fields})
SCHEDULE_FIELDS = sorted({name for spec in SCHEDULES.values() for name in spec.options})
# What `dcnn train --resume` may change: none of these alters the steps a resumed run takes.
RESUME_OPTIONS = ("epochs", "device", "progress", "eval_batch_size", "workers", "checkpoint_every", "keep_checkpoints",
                  "early_stopping")


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # What to train on what.
    model: str = "lenet5_modern"
    model_options: dict[str, Any] = Field(default_factory=dict)
    dataset: str = Field("mnist", description="a dataset name (dcnn datasets) or an image folder / CSV path")
    data_dir: str | None = None
    download: bool = True
    val_size: int | None = Field(None, ge=0, description="training images held out for validation (0: none)")
    val_split: float | None = Field(None, ge=0, lt=1, description="fraction of each class held out for validation")
    train_limit: int = Field(0, ge=0, description="train on N images, every class in proportion, drawn with "
                             "the seed (0: all)")
    test_limit: int = Field(0, ge=0, description="evaluate on N test images, every class in proportion, drawn "
                            "with the seed (0: all)")

    # Image files: size, decoding, bad files.
    image_size: int | None = Field(None, ge=1, description="square input side (default: the model's, or the data's)")
    fit: Literal["crop", "stretch"] = Field("crop", description="photos: resize the shorter side and centre-crop, "
                                            "or stretch to the input size")
    loading: Literal["auto", "memory", "lazy"] = Field("auto", description="decode once into memory, or lazily "
                                                       "in workers (auto: by size)")
    workers: int = Field(2, ge=0, description="DataLoader worker processes of lazy loading")
    strict: bool = Field(False, description="stop at the first unreadable image instead of skipping it")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, description="images with more pixels are refused as "
                            "decompression bombs")

    # Preprocessing fitted on the training split, and augmentation.
    normalize: Literal["model", "dataset"] = Field("model", description="mean/std: the model's, or fitted on "
                                                   "the training split")
    whitening: Literal["none", "zca"] = Field("none", description="ZCA whitening fitted on the training split")
    whitening_epsilon: float = Field(0.01, gt=0, description="added to the eigenvalues (pixels in [0, 1])")
    augment: list[str | dict[str, Any]] = Field(default_factory=list, description="batch augmentations "
                                                "(dcnn augmentations)")
    class_balance: Literal["none", "loss", "sampler"] = Field("none", description="class-weighted loss, or "
                                                              "class-balanced sampling")

    # Fine-tuning (Yosinski et al. 2014; Howard & Ruder 2018): start from trained weights, train a
    # new head on a frozen backbone, or the whole network with a smaller backbone learning rate.
    init_from: str | None = Field(None, description="a dcnn run, model file or torchvision/timm checkpoint "
                                  "to start from (another class count gets a new classifier)")
    init_classes: dict[str, str] = Field(default_factory=dict, description="classes whose classifier rows start "
                                         "from init_from's rows of other classes: {class: init_from's class}")
    freeze: Literal["none", "backbone"] = Field("none", description="backbone: train only the classifier")
    backbone_lr_scale: float = Field(1.0, gt=0, description="the backbone's lr is lr times this")
    freeze_after: dict[str, NonNegativeFloat] = Field(default_factory=dict, description="{prefix: epochs}: "
                                                      "parameters whose names start with prefix stop training "
                                                      "after that many epochs")

    # Mini-batch (1 ≤ batch_size < N), full-batch (batch_size: full), epochs.
    epochs: int = Field(10, ge=1)
    batch_size: int | Literal["full"] = 128
    eval_batch_size: int = Field(1000, ge=1)

    # Optimizer (Goodfellow et al. 2016, ch. 8).
    optimizer: Literal[tuple(OPTIMIZERS)] = "sgd"  # type: ignore[valid-type]
    lr: float = Field(0.01, gt=0)
    momentum: float | None = Field(None, ge=0, lt=1, description="unset: 0.9 for SGD, 0 for RMSProp")
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    alpha: float = Field(0.99, gt=0, lt=1, description="RMSProp smoothing constant")
    rho: float = Field(0.9, gt=0, lt=1, description="Adadelta decay rate")
    muon_lr: float | None = Field(None, gt=0, description="Muon's learning rate for the hidden layers' weights "
                                  "(unset: 0.02); lr is the SGD part's")
    muon_momentum: float | None = Field(None, ge=0, lt=1, description="Muon's momentum (unset: 0.95)")
    muon_normalize: bool = Field(False, description="Muon: keep each hidden weight tensor at norm sqrt(out), "
                                 "as airbench94_muon does")
    eps: float | None = Field(None, gt=0, description="unset: 1e-8 (RMSProp, Adam, AdamW), 1e-6 (Adadelta)")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty (decoupled for AdamW)")
    l1: float = Field(0.0, ge=0, description="L1 penalty on weights, added to the loss")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    aux_weights: tuple[float, ...] | None = None
    clip_grad_norm: float | None = Field(None, gt=0)
    clip_grad_value: float | None = Field(None, gt=0)

    # Learning-rate schedule, stepped every optimizer step.
    schedule: Literal[tuple(SCHEDULES)] = "constant"  # type: ignore[valid-type]
    step_size: float = Field(1.0, gt=0, description="epochs between decays (step)")
    milestones: list[float] = Field(default_factory=list, description="epochs of decay (multistep)")
    gamma: float = Field(0.1, gt=0, le=1)
    warmup_epochs: float = Field(0.0, ge=0)
    min_lr: float = Field(0.0, ge=0, description="the last step's lr (cosine, linear, onecycle; 0: onecycle's lr/25e4)")
    pct_start: float = Field(0.25, gt=0, lt=1, description="one-cycle: fraction of steps rising")

    # Weight averaging (dcnn.train.averaging) and the test-time view of validation and the final report.
    weight_average: Literal["none", "ema", "lookahead"] = Field("none", description="ema: evaluate and save an "
                                                                "exponential moving average of the weights; "
                                                                "lookahead: copy it back into the network")
    ema_decay: float = Field(0.999, gt=0, lt=1, description="the average keeps this much of itself per update")
    ema_every: int = Field(1, ge=1, description="optimizer steps between updates of the average (Lookahead's k)")
    ema_start_epochs: float = Field(0.0, ge=0, description="epochs of training before the average starts")
    ema_warmup_power: float = Field(0.0, ge=0, description="the decay at step s of S is ema_decay·(s/S)^power")
    eval_view: str = Field("center", description="test-time view of validation and the final report (dcnn eval "
                           "--view): center, flip or flip_shift")

    # Precision, layout, device, reproducibility.
    bf16: bool | Literal["auto"] = Field(False, description="bfloat16 autocast; auto: where the device computes "
                                         "bf16 natively (CUDA, CPUs with AVX-512 BF16 or AMX)")
    channels_last: bool = False
    sync_bn: bool = Field(False, description="distributed runs: batch-norm statistics over the global batch "
                          "(SyncBatchNorm) instead of each process's share")
    device: str = "auto"
    seed: int = 0

    # Bookkeeping.
    run_dir: str | None = None
    metrics_format: Literal["csv", "jsonl"] = "csv"
    checkpoint_every: int = Field(0, ge=0, description="also checkpoint every N steps (0: per epoch)")
    keep_checkpoints: int = Field(2, ge=1)
    early_stopping: int = Field(0, ge=0, description="stop after N epochs without val improvement")
    progress: bool = True
    track_gradients: bool = Field(False, description="record each weighted layer's gradient norm every step "
                                  "(gradients.csv, gradients.png)")

    @field_validator("batch_size")
    @classmethod
    def _positive_batch(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("batch_size must be at least 1, or 'full' for full-batch gradient descent")
        return value

    @field_validator("eval_view")
    @classmethod
    def _known_view(cls, value: str) -> str:
        if value not in EVAL_VIEWS:
            raise ValueError(f"unknown view {value!r}; choose one of: {', '.join(EVAL_VIEWS)}")
        if EVAL_VIEWS[value].enlarge:
            raise ValueError(f"{value!r} crops images prepared larger than the input; training evaluates at the "
                             f"input size, so use center, flip or flip_shift here and `dcnn eval RUN --view "
                             f"{value}` afterwards")
        return value

    @field_validator("augment")
    @classmethod
    def _known_augmentations(cls, value: list[str | dict[str, Any]]) -> list[str | dict[str, Any]]:
        parse_augment_spec(value)  # unknown names and options raise with the valid ones listed
        return value

    def given(self) -> set[str]:
        """Fields set (by a recipe, the command line or code) to something other than their default."""
        return {name for name in self.model_fields_set
                if getattr(self, name) != type(self).model_fields[name].get_default(call_default_factory=True)}

    @model_validator(mode="after")
    def _options_apply(self) -> TrainConfig:
        """Refuse options that the chosen optimizer, schedule, model or data would silently ignore."""
        given, problems = self.given(), []
        spec = OPTIMIZERS[self.optimizer]
        for name in sorted(given & set(OPTIMIZER_FIELDS) - set(spec.fields)):
            users = [opt for opt, s in OPTIMIZERS.items() if name in s.fields]
            problems.append(f"{name}: does not apply to optimizer {self.optimizer!r} (it reads "
                            f"{', '.join(spec.fields) or 'only lr'}; {name} is for {', '.join(users)})")
        schedule = SCHEDULES[self.schedule]
        for name in sorted(given & set(SCHEDULE_FIELDS) - set(schedule.options)):
            users = [sched for sched, s in SCHEDULES.items() if name in s.options]
            problems.append(f"{name}: does not apply to schedule {self.schedule!r} (it reads "
                            f"{', '.join(schedule.options)}; {name} is for {', '.join(users)})")
        if self.schedule == "onecycle" and {"warmup_epochs", "pct_start"} <= given:
            problems.append("pct_start: one-cycle rises over warmup_epochs or over the fraction pct_start; give one")
        if self.init_classes and not self.init_from:
            problems.append("init_classes: copies classifier rows from init_from's classes; give init_from too")
        if self.schedule == "multistep" and not self.milestones:
            problems.append("milestones: schedule 'multistep' needs the epochs at which to decay, e.g. [30, 60]")
        if self.warmup_epochs >= self.epochs:
            problems.append(f"warmup_epochs: {self.warmup_epochs} leaves no training after the warmup "
                            f"(epochs is {self.epochs})")
        if self.schedule == "onecycle" and (cycled := sorted(given & {"momentum", "muon_momentum"})):
            problems.append(f"{', '.join(cycled)}: one-cycle sets the momentum itself, from 0.95 down to 0.85 at the "
                            "peak learning rate and back (Smith & Topin 2017); leave it out or choose another "
                            "schedule")
        if "min_lr" in given and self.min_lr >= self.lr:
            problems.append(f"min_lr: {self.min_lr} is not below lr ({self.lr}); the schedule decays from lr to min_lr")
        if self.nesterov and self.optimizer in ("sgd", "muon") and self.momentum == 0:
            problems.append("nesterov: Nesterov momentum needs momentum > 0")
        if self.early_stopping and (self.val_size == 0 or self.val_split == 0):
            problems.append("early_stopping: needs a validation set (val_size > 0) to watch")
        named = DATASETS.get(self.dataset)
        if named is not None and not named.downloads and given & {"data_dir", "download"}:
            problems.append(f"data_dir, download: {self.dataset!r} ships inside the package; they apply to "
                            "datasets that are downloaded")
        if named is None and given & {"data_dir", "download"}:
            problems.append("data_dir, download: apply to named datasets; an image folder is read where it is")
        file_options = given & {"fit", "loading", "workers", "strict", "max_pixels"}
        if named is not None and file_options:
            problems.append(f"{', '.join(sorted(file_options))}: apply to image "
                            f"folders and CSV lists; {self.dataset!r} is decoded into memory as a whole")
        if "workers" in given and self.loading == "memory":
            problems.append("workers: apply to lazy loading (loading: lazy or auto), not to loading: memory")
        if {"val_size", "val_split"} <= given:
            problems.append("val_split: give the validation set as val_size (a count) or val_split (a fraction)")
        if "backbone_lr_scale" in given and self.freeze == "backbone":
            problems.append("backbone_lr_scale: the backbone is frozen (freeze: backbone); it learns at no rate")
        averaging = sorted(given & {"ema_decay", "ema_every", "ema_start_epochs", "ema_warmup_power"})
        if averaging and self.weight_average == "none":
            problems.append(f"{', '.join(averaging)}: apply to weight_average: ema or lookahead")
        if self.weight_average != "none" and self.ema_start_epochs >= self.epochs:
            problems.append(f"ema_start_epochs: {self.ema_start_epochs} leaves no steps to average (epochs is "
                            f"{self.epochs})")
        if "whitening_epsilon" in given and self.whitening == "none":
            problems.append("whitening_epsilon: applies to whitening: zca")
        if "normalize" in given and self.whitening != "none":
            problems.append("normalize: ZCA whitening replaces mean/std normalization; give one of them")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _format_validation(err: ValidationError) -> str:
    parts = []
    for problem in err.errors():
        where = ".".join(str(p) for p in problem["loc"]) or "config"
        if problem["type"] == "value_error" and not problem["loc"]:  # _options_apply names its fields
            parts.append(problem["msg"].removeprefix("Value error, "))
            continue
        message = "unknown option" if problem["type"] == "extra_forbidden" else \
            problem["msg"].removeprefix("Value error, ")
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
    overrides = dict(overrides or {})
    if isinstance(values.get("model_options"), dict) and isinstance(overrides.get("model_options"), dict):
        # --set model_options={...} adds to (or changes) the recipe's model options, keeping the others
        overrides["model_options"] = {**values["model_options"], **overrides["model_options"]}
    return make_config({**values, **overrides})


def save_config(config: TrainConfig, path: Path) -> None:
    with atomic_output(path) as handle:
        handle.write(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False).encode())
