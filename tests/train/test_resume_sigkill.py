"""A training process killed with SIGKILL mid-epoch resumes to bitwise the same weights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from dcnn.train import checkpoint as ckpt
from tests.train.helpers import TINY

AUGMENT = "[hflip, {random_crop: {padding: 2}}, {cutout: {size: 6}}, mixup]"
# Both loading paths, with random augmentation on: the MNIST tensors decoded into memory, and an
# image folder decoded lazily by DataLoader workers; each with one kind of weight averaging, whose
# average must survive the kill too.
PATHS = {
    "tensors": {**TINY, "epochs": 4, "checkpoint_every": 7, "train_limit": 500, "val_size": 100,
                "augment": AUGMENT, "weight_average": "lookahead", "ema_decay": 0.5, "ema_every": 3,
                "ema_start_epochs": 0.5},
    "lazy files": {"model": "lenet5_modern", "dataset": "FOLDER", "loading": "lazy", "workers": 2,
                   "val_split": 0.2, "epochs": 4, "batch_size": 50, "eval_batch_size": 500, "lr": 0.05,
                   "seed": 3, "checkpoint_every": 7, "augment": AUGMENT, "weight_average": "ema",
                   "ema_decay": 0.9, "ema_warmup_power": 1},
}


def make_digit_folder(root) -> str:
    """625 MNIST sample digits as PNG files in class folders (500 train after the split: 10 steps/epoch)."""
    from PIL import Image

    from dcnn.data.mnist import load_mnist_sample

    images, labels = load_mnist_sample("train")
    for i in range(625):
        folder = root / str(int(labels[i]))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i].numpy()).save(folder / f"{i}.png")
    return str(root)


def train_command(run_dir, args) -> list[str]:
    sets = [f"--set={k}={v}" for k, v in args.items() if k != "progress"]
    return [sys.executable, "-m", "dcnn.cli", "train", "--no-progress", f"--run-dir={run_dir}", *sets]


def run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted(PATHS))
def test_sigkill_mid_epoch_then_resume_is_bitwise_identical(tmp_path, path, monkeypatch):
    monkeypatch.setenv("DCNN_CACHE_DIR", str(tmp_path / "cache"))
    args = dict(PATHS[path])
    if args["dataset"] == "FOLDER":
        args["dataset"] = make_digit_folder(tmp_path / "digits")
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    run(train_command(reference, args))

    process = subprocess.Popen(train_command(killed, args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 240
    # Steps per epoch: 500 / 50 = 10; step 14 is mid-epoch 2. Kill as soon as it is on disk.
    while not any(p.name == "step-00000014" for p in ckpt.list_checkpoints(killed)):
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "model.safetensors").exists(), "killed too late: the run had finished"

    run([sys.executable, "-m", "dcnn.cli", "train", "--resume", str(killed)])
    expected, resumed = load_file(str(reference / "model.safetensors")), load_file(str(killed / "model.safetensors"))
    assert expected.keys() == resumed.keys()
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), key
    assert (killed / "metrics.csv").read_text().count("\n") == 1 + 4
