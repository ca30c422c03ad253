"""`dcnn experiment degradation` on a CIFAR-10 subset and `dcnn experiment lesion` on a trained run.

Degradation at the small size trains 12 steps: too few for the paper's direction to be reliable, so
only what is deterministic is asserted (the nets, their depths and equal parameter counts, computed
by hand; the stratified subset; the curves). The lesion study's direction (deleting a block costs a
residual net less than a plain one) is asserted on nets trained for 60 steps on MNIST: over seeds 0-3
the residual net lost 0.0-0.11 of its accuracy on average, the plain one 0.21-0.39."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from dcnn.analysis.experiments.residual import SIZES, Lesioned, find_blocks
from dcnn.analysis.experiments.runner import Settings
from dcnn.models import create_model, get_model_cfg
from dcnn.train import make_config
from dcnn.train.trainer import prepare_data
from tests.analysis.test_experiments_gradients import rows_of, run_cli
from tests.test_cli import assert_user_error, dcnn_in_process
from tests.train.test_image_folders import make_folder


def conv_bn(k: int, c_in: int, c_out: int) -> int:
    return k * k * c_in * c_out + 2 * c_out


def cifar_net_params(n: int, widths: tuple[int, int, int]) -> int:
    """He et al. 2016a §4.2 by hand: a 3x3 stem, 3 stages of n blocks of two 3x3 conv-BN units
    (option-A shortcuts and plain blocks add nothing), a linear classifier for 10 classes."""
    total, c_in = conv_bn(3, 3, widths[0]), widths[0]
    for width in widths:
        for _ in range(n):
            total += conv_bn(3, c_in, width) + conv_bn(3, width, width)
            c_in = width
    return total + widths[-1] * 10 + 10


@pytest.fixture(scope="module")
def degradation(tmp_path_factory):
    out = tmp_path_factory.mktemp("degradation")
    with pytest.MonkeyPatch.context() as patch:  # decoded images are cached here, not in the user's cache
        patch.setenv("DCNN_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        run_cli("degradation", "--out", str(out))
    return out


def test_degradation_trains_plain_and_residual_nets_at_two_depths(degradation):
    rows = rows_of(degradation)
    assert list(rows) == ["plain-8", "plain-14", "ResNet-8", "ResNet-14"]
    for name, row in rows.items():
        n = (int(row["weighted layers"]) - 2) // 6
        assert int(name.split("-")[1]) == int(row["weighted layers"]) == 6 * n + 2
        assert int(row["parameters"].replace(",", "")) == cifar_net_params(n, (4, 8, 16))
        assert 0 <= float(row["train error"]) <= 1 and 0 <= float(row["test error"]) <= 1
    runs = json.loads((degradation / "figures.json").read_text())["runs"]
    assert all(len(r["losses"]) == 12 and [e["step"] for e in r["evals"]] == [0, 6, 12] for r in runs)
    assert (degradation / "degradation.png").is_file()


def test_degradation_full_size_warms_up_and_decays_the_lr_at_the_same_fractions_of_any_length():
    planned = Settings(size="full").plan(SIZES)
    assert planned.steps == 1580 and planned.train == 10_000 and planned.batch == 128  # 79 steps an epoch
    assert planned.config["epochs"] == 20 and planned.config["milestones"] == [10, 15]
    assert planned.config["warmup_epochs"] == 2
    shorter = Settings(size="full", steps=395).plan(SIZES)  # a quarter: 5 epochs
    assert shorter.config["epochs"] == 5 and shorter.config["milestones"] == [2.5, 3.75]
    assert shorter.config["warmup_epochs"] == 0.5
    fewer_images = Settings(size="full", subset=5056).plan(SIZES)  # 40 steps an epoch: 39.5 epochs
    assert fewer_images.config["epochs"] == 40 and fewer_images.config["milestones"] == [19.75, 29.625]
    config = make_config({**fewer_images.config, "model": "resnet20", "dataset": "cifar10"})
    assert config.schedule == "multistep" and config.milestones == [19.75, 29.625]
    assert config.warmup_epochs == 3.95


def test_degradation_reads_a_stratified_subset_of_the_cifar_folder(degradation, tmp_path, monkeypatch):
    """Every variant reads the CIFAR-10 folder itself (stored class by class), cut by train_limit and
    test_limit into the same 40 training and 10 test images of each class."""
    monkeypatch.setenv("DCNN_CACHE_DIR", str(tmp_path))
    config = yaml.safe_load((degradation / "plain-8" / "config.yaml").read_text())
    assert Path(config["dataset"]).name == "cifar10-jpeg"
    assert (config["train_limit"], config["test_limit"], config["val_size"]) == (400, 100, 0)
    cfg = make_config({**config, "progress": False})
    data = prepare_data(cfg, get_model_cfg(cfg.model), torch.device("cpu"))
    assert data.class_names[0] == "airplane" and len(data.class_names) == 10
    assert data.counts == {"train": [40] * 10, "test": [10] * 10}


def test_an_experiment_on_a_folder_without_a_test_split_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DCNN_CACHE_DIR", str(tmp_path / "cache"))
    flat = make_folder(tmp_path / "flat", {"blue": 4, "green": 4}, size=(8, 8))
    done = dcnn_in_process("experiment", "degradation", "--dataset", str(flat), "--out", str(tmp_path / "out"))
    assert_user_error(done, "has no test split", "train/ and test/ class folders")


def test_lesions_delete_and_swap_blocks_and_put_them_back():
    torch.manual_seed(0)
    model = create_model("stacknet", in_chans=1, depths=[2, 2, 2], widths=[4, 8, 8], shortcut="A").eval()
    x = torch.randn(2, 1, 16, 16)
    blocks = find_blocks(model, x)
    assert [(b.name, b.same_shape) for b in blocks] == [("1.1", True), ("1.2", True), ("2.1", False),
                                                        ("2.2", True), ("3.1", False), ("3.2", True)]
    before = model(x)
    stage = model.stages[0]
    one, two = stage[0], stage[1]
    x_stem = model.stem(x)
    with Lesioned(model, delete=[blocks[0]]):
        assert isinstance(stage[0], torch.nn.Identity)
        torch.testing.assert_close(stage(x_stem), two(x_stem))
    with Lesioned(model, swap=(blocks[0], blocks[1])):
        assert (stage[0], stage[1]) == (two, one)
        torch.testing.assert_close(stage(x_stem), one(two(x_stem)))
    assert (stage[0], stage[1]) == (one, two)
    torch.testing.assert_close(model(x), before)  # everything put back


@pytest.fixture(scope="module")
def lesion(tmp_path_factory):
    root = tmp_path_factory.mktemp("lesion")
    done = dcnn_in_process(
        "train", "--model", "stacknet", "--dataset", "mnist_sample", "--epochs", "1", "--batch-size", "32",
        "--lr", "0.1", "--image-size", "16", "--run-dir", str(root / "resnet"), "--no-progress",
        "--set", "model_options={depths: [2, 2, 2], widths: [8, 16, 16], shortcut: A}",
        "--set", "train_limit=1920", "--set", "val_size=0", "--set", "test_limit=100")
    assert done.returncode == 0, done.stderr
    run_cli("lesion", str(root / "resnet"), "--out", str(root / "out"), "--subset", "300")
    return root


def test_lesion_hurts_the_residual_net_less_than_its_plain_counterpart(lesion):
    rows = list(csv.DictReader((lesion / "out" / "table.csv").read_text().splitlines()))
    acc = {r["lesion"]: (float(r["residual accuracy"]), float(r["plain accuracy"])) for r in rows}
    assert [k for k in acc if k.startswith("delete ") and "random" not in k] == [
        "delete 1.1", "delete 1.2", "delete 2.2", "delete 3.2"]  # the blocks that keep their input's shape
    assert list(acc)[-1] == "swap 1.1-1.2" and "delete 4 random" in acc
    drops = [(acc["none"][i] - sum(v[i] for k, v in acc.items() if k.startswith("delete ") and "random" not in k) / 4)
             for i in (0, 1)]
    assert drops[0] < drops[1] - 0.05, drops  # mean accuracy lost by deleting one block: residual, plain
    plain = lesion / "out" / "plain-counterpart"
    assert "shortcut: null" in (plain / "config.yaml").read_text()
    assert (plain / "history.csv").read_text().splitlines()[-1].startswith("60,")  # as many steps as RUN
    assert (lesion / "out" / "lesion.png").is_file()


def test_lesion_user_errors(tmp_path, lesion):
    assert_user_error(dcnn_in_process("experiment", "lesion"), "studies a trained run", "lesion RUN")
    plain = lesion / "out" / "plain-counterpart"
    assert_user_error(dcnn_in_process("experiment", "lesion", str(plain), "--out", str(tmp_path)),
                      "holds a plain net")
    model_file = lesion / "resnet" / "model.safetensors"
    assert_user_error(dcnn_in_process("experiment", "lesion", str(model_file), "--out", str(tmp_path)),
                      "give a trained plain net with --plain")
