"""Every TrainConfig field has an effect, or is refused where it cannot have one.

For each field, a tiny run is made with the field at its base value and again with another value,
and the aspect of the run that the field governs must differ: what is built (architecture,
optimizer and its hyperparameters), what happens (learning rate at every step, the batches the
model sees, their dtype and memory format, the final weights, the metrics, the files written), or
an error naming the field. A field added to TrainConfig without a case here fails
`test_every_field_has_a_case`: an option nobody shows to work is an option that may be ignored.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from contextlib import redirect_stderr
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn
from PIL import Image

from dcnn.data import loader as loader_module
from dcnn.data import mnist
from dcnn.errors import DcnnError
from dcnn.train import TrainConfig, make_config, train
from dcnn.train import trainer as trainer_module

BASE = dict(model="lenet5_modern", dataset="mnist_sample", train_limit=120, test_limit=100, val_size=40,
            epochs=2, batch_size=40, eval_batch_size=100, lr=0.05, progress=False, seed=3)


@dataclass
class Observed:
    """What one run built and did, aspect by aspect."""

    error: str | None = None
    run_dir: str = ""
    architecture: tuple = ()
    weights: str = ""
    files: frozenset = frozenset()
    metrics: tuple = ()
    train_batches: tuple = ()
    eval_batches: tuple = ()
    layer_io: frozenset = frozenset()
    optimizer: tuple = ()
    lrs: tuple = ()
    result: tuple = ()
    stderr: str = ""
    data_summary: str = ""
    loaders: tuple = ()


def _digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key, value in sorted(state.items()):
        h.update(key.encode())
        h.update(value.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


def observe(root: Path, values: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Observed:
    """Train BASE + `values` in a fresh folder under `root` and record every aspect of the run."""
    root.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(root)  # a run without run_dir goes to ./runs
    obs = Observed()
    train_batches: list = []
    eval_batches: list = []
    layer_io: set = set()
    lrs: list = []
    original_create = trainer_module.create_model

    def create_with_hooks(*args: Any, **kwargs: Any) -> nn.Module:
        model = original_create(*args, **kwargs)

        def before(module: nn.Module, inputs: tuple) -> None:
            x = inputs[0]
            record = (tuple(x.shape), round(float(x.float().sum()), 2))
            (train_batches if module.training else eval_batches).append(record)

        def first_conv_output(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if module.training:
                layer_io.add((str(output.dtype), output.is_contiguous(memory_format=torch.channels_last)))

        model.register_forward_pre_hook(before)
        next(m for m in model.modules() if isinstance(m, nn.Conv2d)).register_forward_hook(first_conv_output)
        return model

    def after_step(trainer: trainer_module.Trainer) -> bool:
        if not obs.optimizer:
            groups = [{**{k: v for k, v in g.items() if k not in ("params", "lr", "initial_lr")},
                       "parameters": sum(p.numel() for p in g["params"])} for g in trainer.optimizer.param_groups]
            obs.optimizer = (type(trainer.optimizer).__name__, json.dumps(groups, sort_keys=True, default=str))
        lrs.append(round(trainer.optimizer.param_groups[0]["lr"], 12))
        return False

    monkeypatch.setattr(trainer_module, "create_model", create_with_hooks)
    workers: list[int] = []

    class RecordingLoader(loader_module.DataLoader):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            workers.append(kwargs.get("num_workers", 0))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(loader_module, "DataLoader", RecordingLoader)
    stderr = io.StringIO()
    try:
        with redirect_stderr(stderr):
            cfg = make_config({**BASE, "run_dir": str(root / "run"), **values})
            run_dir, result = train(cfg, after_step=after_step)
    except DcnnError as err:
        obs.error = str(err).replace(str(root), "<root>")
        return obs
    finally:
        obs.stderr = stderr.getvalue()
    obs.run_dir = str(run_dir.resolve().relative_to(root.resolve()))
    from safetensors.torch import load_file

    final = load_file(str(run_dir / "model.safetensors"))
    obs.architecture = tuple((k, tuple(v.shape)) for k, v in sorted(final.items()))
    obs.weights = _digest(final)
    obs.files = frozenset(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    metrics_file = next(run_dir.glob("metrics.*"))
    if metrics_file.suffix == ".csv":
        rows = list(csv.DictReader(metrics_file.read_text().splitlines()))
    else:
        rows = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    obs.metrics = tuple((r["epoch"], r["step"], r["train_loss"], r["val_loss"], r["val_acc"]) for r in rows)
    obs.train_batches, obs.eval_batches = tuple(train_batches), tuple(eval_batches)
    obs.layer_io, obs.lrs = frozenset(layer_io), tuple(lrs)
    obs.result = (result.num_samples, result.mean_loss)
    obs.data_summary = (run_dir / "data.json").read_text()
    obs.loaders = tuple(workers)
    return obs


@dataclass(frozen=True)
class Case:
    """Changing `field` from its value in BASE + `base` to `value` changes `aspect` of the run
    (for aspect "error": the run is refused with a message containing `fragment`)."""

    value: Any
    aspect: str
    base: dict = field(default_factory=dict)
    fragment: str = ""


_BASE_RUNS: dict[str, Observed] = {}


def _no_download(*args: Any, **kwargs: Any) -> None:
    raise DcnnError("download attempted")


# An image folder (three classes of 16 non-square photos) for the options of image files; BAD adds a
# zero-byte "image".
FOLDER = {"dataset": "FOLDER", "val_size": None, "batch_size": 16}
BAD = {**FOLDER, "dataset": "BAD"}


def make_folder(root: Path, bad: bool) -> Path:
    generator = torch.Generator().manual_seed(0)
    for c, name in enumerate(("circle", "square", "stripes")):
        (root / name).mkdir(parents=True)
        for i in range(16):
            pixels = (torch.rand(30, 44, 3, generator=generator) * 80 + 60 * c).to(torch.uint8)
            pixels[:, 8 * c : 8 * c + 6] = 255  # a class-dependent bright band, off centre
            Image.fromarray(pixels.numpy()).save(root / name / f"{i}.png")
    if bad:
        (root / "circle" / "broken.png").write_bytes(b"")
    return root


CASES: dict[str, Case] = {
    "model": Case("lenet5", "architecture"),
    "model_options": Case({"batch_norm": True}, "architecture"),
    "dataset": Case("mnist", "train_batches"),
    "data_dir": Case("EMPTY", "error", {"dataset": "mnist", "download": False}, "mnist"),
    "download": Case(True, "error", {"dataset": "mnist", "data_dir": "EMPTY", "download": False},
                     "download attempted"),
    "val_size": Case(0, "metrics"),
    "train_limit": Case(80, "train_batches"),
    "test_limit": Case(50, "result"),
    "epochs": Case(3, "metrics"),
    "batch_size": Case(30, "train_batches"),
    "eval_batch_size": Case(20, "eval_batches"),
    "augment": Case([{"random_crop": {"padding": 2}}], "train_batches"),
    "optimizer": Case("adam", "optimizer"),
    "lr": Case(0.01, "lrs"),
    "momentum": Case(0.5, "optimizer"),
    "nesterov": Case(True, "optimizer"),
    "betas": Case((0.8, 0.9), "optimizer", {"optimizer": "adam"}),
    "alpha": Case(0.9, "optimizer", {"optimizer": "rmsprop"}),
    "rho": Case(0.5, "optimizer", {"optimizer": "adadelta"}),
    "muon_lr": Case(0.2, "weights", {"optimizer": "muon"}),
    "muon_momentum": Case(0.5, "weights", {"optimizer": "muon"}),
    "muon_normalize": Case(True, "weights", {"optimizer": "muon"}),
    "eps": Case(1e-3, "optimizer", {"optimizer": "adam"}),
    "weight_decay": Case(1e-3, "optimizer"),
    "l1": Case(1e-3, "metrics"),
    "label_smoothing": Case(0.3, "metrics"),
    "aux_weights": Case((0.3,), "error", {}, "has no auxiliary classifiers"),
    "clip_grad_norm": Case(1e-3, "weights"),
    "clip_grad_value": Case(1e-4, "weights"),
    "schedule": Case("cosine", "lrs"),
    "step_size": Case(0.5, "lrs", {"schedule": "step"}),
    "milestones": Case([0.5], "lrs", {"schedule": "multistep", "milestones": [1]}),
    "gamma": Case(0.5, "lrs", {"schedule": "step"}),
    "warmup_epochs": Case(1.0, "lrs"),
    "min_lr": Case(0.01, "lrs", {"schedule": "cosine"}),
    "pct_start": Case(0.5, "lrs", {"schedule": "onecycle"}),
    "bf16": Case(True, "layer_io"),
    "channels_last": Case(True, "layer_io"),
    "sync_bn": Case(True, "error", {}, "sync_bn: synchronizes batch norm across the processes"),
    "device": Case("cuda:0" if not torch.cuda.is_available() else "cpu", "error" if not torch.cuda.is_available()
                   else "weights", {}, "CUDA is not available"),
    "seed": Case(4, "weights"),
    "run_dir": Case(None, "run_dir"),
    "metrics_format": Case("jsonl", "files"),
    "checkpoint_every": Case(1, "files"),
    "keep_checkpoints": Case(1, "files"),
    "early_stopping": Case(1, "metrics", {"epochs": 4, "lr": 1e-12}),
    "progress": Case(True, "stderr"),
    "val_split": Case(0.3, "eval_batches", {"val_size": None}),
    "image_size": Case(32, "train_batches"),
    "fit": Case("stretch", "train_batches", FOLDER),
    "loading": Case("lazy", "data_summary", FOLDER),
    "workers": Case(0, "loaders", {**FOLDER, "loading": "lazy"}),
    "strict": Case(True, "error", BAD, "is empty (0 bytes)"),
    "max_pixels": Case(1000, "error", FOLDER, "could be read"),
    "normalize": Case("dataset", "train_batches"),
    "whitening": Case("zca", "train_batches"),
    "whitening_epsilon": Case(0.5, "train_batches", {"whitening": "zca"}),
    "class_balance": Case("sampler", "train_batches"),
    "init_from": Case("RUN", "weights"),
    "init_classes": Case({"3": "7"}, "weights", {"init_from": "RUN"}),
    "freeze": Case("backbone", "optimizer"),
    "backbone_lr_scale": Case(0.1, "optimizer"),
    "freeze_after": Case({"features.c1": 1.0}, "weights"),
    "track_gradients": Case(True, "files"),
    # the final model file holds the average (ema) or the slow weights (lookahead)
    "weight_average": Case("ema", "weights"),
    "ema_decay": Case(0.5, "weights", {"weight_average": "ema"}),
    "ema_every": Case(2, "weights", {"weight_average": "ema"}),
    "ema_start_epochs": Case(1.0, "weights", {"weight_average": "ema"}),
    "ema_warmup_power": Case(3.0, "weights", {"weight_average": "ema"}),
    "eval_view": Case("flip", "eval_batches"),  # twice the images per evaluation batch
}


def test_every_field_has_a_case():
    assert set(CASES) == set(TrainConfig.model_fields), "add a Case for each new TrainConfig field"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_changing_the_field_changes_what_it_governs(name, tmp_path, monkeypatch):
    case = CASES[name]
    empty = tmp_path / "empty"
    empty.mkdir()

    tokens = {"EMPTY": lambda: str(empty), "FOLDER": lambda: str(make_folder(tmp_path / "folder", bad=False)),
              "BAD": lambda: str(make_folder(tmp_path / "bad", bad=True)),
              "RUN": lambda: str(train(make_config({**BASE, "run_dir": str(tmp_path / "init"), "epochs": 1}))[0])}

    made: dict[str, str] = {}

    def resolve(values: dict[str, Any]) -> dict[str, Any]:
        for value in values.values():
            if isinstance(value, str) and value in tokens and value not in made:
                made[value] = tokens[value]()
        return {k: made.get(v, v) if isinstance(v, str) else v for k, v in values.items()}

    monkeypatch.setattr(mnist, "_download_missing", _no_download)
    monkeypatch.setenv("DCNN_CACHE_DIR", str(tmp_path / "cache"))
    # A base without paths made for this test is the same run whichever field is tested: observe it
    # once per test process.
    key = None if any(isinstance(v, str) and v in tokens for v in case.base.values()) else repr(sorted(
        case.base.items()))
    if key is None:
        before = observe(tmp_path / "before", resolve(case.base), monkeypatch)
    else:
        if key not in _BASE_RUNS:
            _BASE_RUNS[key] = observe(tmp_path / "before", resolve(case.base), monkeypatch)
        before = _BASE_RUNS[key]
    after = observe(tmp_path / "after", resolve({**case.base, name: case.value}), monkeypatch)
    if case.aspect == "error":  # refused, or failing for the reason the field gives (e.g. download)
        assert after.error is not None and case.fragment in after.error, after.error
        assert before.error != after.error
        return
    assert before.error is None and after.error is None, (before.error, after.error)
    assert getattr(before, case.aspect) != getattr(after, case.aspect), f"{name} changed nothing in {case.aspect}"
