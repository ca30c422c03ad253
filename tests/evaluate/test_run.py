"""Evaluating a saved model file on the test split of its dataset."""

from __future__ import annotations

import shutil

import torch

from dcnn.data.mnist import load_mnist
from dcnn.data.preprocess import Preprocess
from dcnn.evaluate.metrics import evaluate
from dcnn.evaluate.run import evaluate_model_file
from dcnn.models import create_model, get_model_cfg
from dcnn.train import checkpoint as ckpt


def test_evaluation_reads_only_the_test_split(tmp_path, mnist_dir):
    only_test = tmp_path / "data" / "mnist"
    only_test.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(mnist_dir / name, only_test / name)
    torch.manual_seed(0)
    model = create_model("lenet5_modern", maps=(4, 8, 16)).eval()
    prep = Preprocess.for_training(get_model_cfg("lenet5_modern"), 1, (28, 28))
    meta = ckpt.model_metadata(model, {"model_options": {"maps": [4, 8, 16]}, "class_names": list("0123456789"),
                                       "preprocessing": prep.to_dict(), "dataset": "mnist"})
    ckpt.save_model_file(model, tmp_path / "model.safetensors", meta)

    result, report_dir, _ = evaluate_model_file(tmp_path / "model.safetensors", data_dir=str(tmp_path / "data"))
    assert result.num_samples == 10_000 and (report_dir / "metrics.json").is_file()
    images, labels = load_mnist("test", str(mnist_dir.parent))  # the same numbers, computed directly
    direct = evaluate(model, [(prep.normalize(images[:, None].float() / 255), labels)], torch.device("cpu"))
    assert result.accuracy(1) == direct.accuracy(1)
