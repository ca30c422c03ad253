"""Small, fast training configurations for the trainer tests."""

from __future__ import annotations

from typing import Any

from dcnn.train import TrainConfig, make_config

TINY = dict(model="lenet5_modern", dataset="mnist_sample", train_limit=600, test_limit=300, val_size=200,
            epochs=2, batch_size=50, eval_batch_size=500, lr=0.05, progress=False, seed=3)


def tiny_config(tmp_path, **overrides: Any) -> TrainConfig:
    return make_config({**TINY, "run_dir": str(tmp_path / "run"), **overrides})
