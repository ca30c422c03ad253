"""Shared fixtures of the export tests: one small trained-model file in a run folder, exported once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn
from PIL import Image

from dcnn.data.preprocess import Preprocess
from dcnn.models import create_model, get_model_cfg, modelfile

CLASSES = [f"digit {i}" for i in range(10)]
OPTIONS = {"maps": [4, 8, 16], "batch_norm": True}


def calibrate(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """`model` in eval mode with batch-norm statistics taken from `x`, so that activations keep a trained
    network's scale (a fresh model's identity statistics let them grow or vanish with depth, making a
    tolerance meaningless, and leave nothing to fold)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = 1.0
    with torch.no_grad():
        model.train()(x)
    return model.eval()


def save_run(folder: Path, seed: int = 0) -> Path:
    """A run folder holding a LeNet-5 (modern, narrow, batch norm) model file with MNIST preprocessing and
    class names; the weights are random (exporting and predicting do not need a trained model), the
    batch-norm statistics from random images."""
    torch.manual_seed(seed)
    model = calibrate(create_model("lenet5_modern", **OPTIONS), torch.rand(16, 1, 28, 28))
    prep = Preprocess.for_training(get_model_cfg("lenet5_modern"), 1, (28, 28))
    meta = modelfile.model_metadata(model, {"model_options": OPTIONS, "class_names": CLASSES,
                                       "preprocessing": prep.to_dict(), "dataset": "mnist"})
    folder.mkdir(parents=True, exist_ok=True)
    modelfile.save_model_file(model, folder / "model.safetensors", meta)
    return folder


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    return save_run(tmp_path_factory.mktemp("run") / "run")


@pytest.fixture(scope="session")
def exported(run_dir) -> Path:
    """The run's model exported to RUN/model.onnx with a dynamic batch, through the command line."""
    from tests.test_cli import dcnn_in_process

    done = dcnn_in_process("export", str(run_dir), "--dynamic-batch")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"exported to {run_dir / 'model.onnx'}"
    return run_dir / "model.onnx"


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """Seven small images in a folder and a subfolder (grey, RGB, RGBA, JPEG), a hidden file, a text file."""
    root = tmp_path_factory.mktemp("images")
    (root / "more" / "deeper").mkdir(parents=True)
    generator = torch.Generator().manual_seed(1)

    def noise(h: int, w: int, channels: int) -> Image.Image:
        array = torch.randint(0, 256, (h, w, channels), generator=generator, dtype=torch.uint8).numpy()
        return Image.fromarray(array.squeeze(-1) if channels == 1 else array)

    noise(30, 40, 1).save(root / "b.png")
    noise(28, 28, 3).save(root / "a.png")
    noise(50, 20, 4).save(root / "c.PNG")
    noise(32, 32, 3).save(root / "more" / "d.jpg")
    noise(20, 20, 1).save(root / "more" / "deeper" / "e.bmp")
    noise(64, 48, 3).save(root / "more" / "f.jpeg")
    noise(28, 28, 1).save(root / "more" / "g.webp")
    noise(10, 10, 1).save(root / ".hidden.png")
    (root / "notes.txt").write_text("not an image")
    return root
