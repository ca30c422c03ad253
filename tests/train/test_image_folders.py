"""Training on image folders end to end: the CLI, bad files, imbalance, fitted preprocessing, fine-tuning."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from dcnn.data.whitening import channel_stats
from dcnn.errors import DcnnError
from dcnn.evaluate.run import preprocess_of
from dcnn.models import modelfile
from dcnn.train import make_config, train
from dcnn.train.trainer import Trainer, balanced_class_weights
from tests.test_cli import assert_user_error, dcnn

COLOURS = {"blue": (40, 60, 200), "green": (40, 190, 60), "red": (210, 40, 40)}


def make_folder(root: Path, per_class: dict[str, int] | None = None, seed: int = 0, size=(40, 30)) -> Path:
    """Photos of three colours (non-square, noisy): an easy but real image set."""
    generator = torch.Generator().manual_seed(seed)
    for name, count in (per_class or dict.fromkeys(COLOURS, 20)).items():
        rgb = COLOURS[name]
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            noise = torch.randint(-40, 41, (size[1], size[0], 3), generator=generator)
            pixels = (torch.tensor(rgb) + noise).clamp(0, 255).to(torch.uint8)
            Image.fromarray(pixels.numpy()).save(root / name / f"{i}.jpg")
    return root


def folder_config(tmp_path: Path, dataset: Path, **overrides) -> dict:
    return {"model": "resnet20", "dataset": str(dataset), "epochs": 2, "batch_size": 16, "optimizer": "adam",
            "lr": 0.01, "val_split": 0.2, "progress": False, "seed": 0, "run_dir": str(tmp_path / "run"),
            **overrides}


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DCNN_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.slow
def test_a_small_folder_trains_predicts_evaluates_and_inspects_through_the_cli(tmp_path):
    folder = make_folder(tmp_path / "photos")
    run = tmp_path / "run"
    done = dcnn("train", "--model", "lenet5_modern", "--dataset", str(folder), "--epochs", "3", "--batch-size", "16",
                "--optimizer", "adam", "--lr", "0.01", "--val-split", "0.25", "--image-size", "32", "--no-progress",
                "--run-dir", str(run), "--set", "augment=[hflip, {random_crop: {padding: 2}}]")
    assert done.returncode == 0, done.stderr
    assert "validation accuracy" in done.stdout  # a flat folder has no test split
    summary = json.loads((run / "data.json").read_text())
    assert summary["class_names"] == ["blue", "green", "red"]
    assert summary["class_counts"] == {"train": [15, 15, 15], "val": [5, 5, 5]}
    assert summary["preprocessing"]["input_size"] == [1, 32, 32]  # LeNet reads grayscale
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["split"] == "val" and metrics["top1_accuracy"] > 0.9

    other = make_folder(tmp_path / "other", {"blue": 6, "green": 6, "red": 6}, seed=1, size=(50, 40))
    predicted = dcnn("predict", str(run), *(str(other / c / "0.jpg") for c in ("blue", "green", "red")), "--top", "2")
    assert predicted.returncode == 0, predicted.stderr
    tops = [line.split(": ", 1)[1].split()[0] for line in predicted.stdout.strip().splitlines()]
    assert tops == ["blue", "green", "red"]
    for view in ("center", "ten_crop"):
        evaluated = dcnn("eval", str(run), "--dataset", str(other), "--view", view, "--out-dir", str(tmp_path / view))
        assert evaluated.returncode == 0, evaluated.stderr
        report = json.loads((tmp_path / view / "metrics.json").read_text())
        assert report["view"] == view and report["num_samples"] == 18 and report["top1_accuracy"] > 0.9
    wrong = make_folder(tmp_path / "wrong", {"blue": 2, "green": 2})
    assert_user_error(dcnn("eval", str(run), "--dataset", str(wrong)), "the model was trained on")

    inspected = dcnn("inspect", str(run), "--top", "4")
    assert inspected.returncode == 0, inspected.stderr
    rows = list(csv.DictReader((run / "inspect" / "hardest.csv").read_text().splitlines()))
    assert [r["split"] for r in rows] == ["train"] * 4 + ["test"] * 4
    losses = [float(r["loss"]) for r in rows[:4]]
    assert losses == sorted(losses, reverse=True) and all(str(folder) in r["source"] for r in rows)
    assert (run / "inspect" / "hardest_train.png").is_file() and (run / "inspect" / "hardest_test.png").is_file()

    grid = tmp_path / "grid.png"
    drawn = dcnn("augment", "--out", str(grid), "--count", "4", "--copies", "2", "--set", f"dataset={folder}",
                 "--set", "model=lenet5_modern", "--set", "augment=[hflip, cutout]")
    assert drawn.returncode == 0, drawn.stderr
    assert Image.open(grid).size[1] > Image.open(grid).size[0]  # 4 rows of 3 cells: taller than wide


def bad_folder(root: Path) -> dict[str, str]:
    """A folder with one of each kind of bad file; returns file name → expected reason."""
    make_folder(root, {"blue": 6, "green": 6, "red": 6})
    (root / "blue" / "empty.jpg").write_bytes(b"")
    good = (root / "green" / "0.jpg").read_bytes()
    (root / "green" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (root / "red" / "notes.jpg").write_text("this is not an image")
    Image.new("RGB", (400, 300)).save(root / "red" / "huge.png")
    (root / "red" / "readme.txt").write_text("not an image name")
    return {"empty.jpg": "empty (0 bytes)", "truncated.jpg": "truncated", "notes.jpg": "not an image",
            "huge.png": "over the limit", "readme.txt": "not an image file name"}


def test_bad_files_are_skipped_listed_and_counted(tmp_path):
    expected = bad_folder(tmp_path / "bad")
    run, _ = train(make_config(folder_config(tmp_path, tmp_path / "bad", epochs=1, max_pixels=100_000)))
    rows = list(csv.DictReader((run / "skipped.csv").read_text().splitlines()))
    reasons = {Path(r["path"]).name: r["reason"] for r in rows}
    assert set(reasons) == set(expected)
    for name, fragment in expected.items():
        assert fragment in reasons[name], (name, reasons[name])
    assert json.loads((run / "data.json").read_text())["skipped_files"] == 5
    assert json.loads((run / "eval" / "metrics.json").read_text())["skipped_files"] == 5


def test_strict_stops_at_the_first_bad_file_with_one_line(tmp_path):
    bad_folder(tmp_path / "bad")
    done = dcnn("train", "--model", "resnet20", "--dataset", str(tmp_path / "bad"), "--strict", "--no-progress",
                "--run-dir", str(tmp_path / "run"), "--set", "max_pixels=100000")
    assert_user_error(done, "strict mode stops at the first bad file")
    assert not (tmp_path / "run").exists()


def test_a_lazy_run_skips_files_that_fail_while_training(tmp_path):
    expected = bad_folder(tmp_path / "bad")
    run, _ = train(make_config(folder_config(tmp_path, tmp_path / "bad", epochs=1, loading="lazy",
                                             max_pixels=100_000)))
    reasons = {Path(r["path"]).name for r in csv.DictReader((run / "skipped.csv").read_text().splitlines())}
    assert reasons == set(expected)
    assert json.loads((run / "data.json").read_text())["loading"] == "lazy"


def test_imbalanced_classes_are_reported_and_can_be_weighted(tmp_path):
    folder = make_folder(tmp_path / "photos", {"blue": 30, "green": 10, "red": 5})
    cfg = make_config(folder_config(tmp_path, folder, class_balance="loss"))
    (tmp_path / "run").mkdir()
    trainer = Trainer(cfg, tmp_path / "run")
    counts = trainer.data.counts["train"]
    assert counts == [24, 8, 4]
    # N / (K n_c): each class carries a third of the loss, as in a balanced set
    torch.testing.assert_close(trainer.class_weights, torch.tensor([36 / 72, 36 / 24, 36 / 12]))
    assert (trainer.class_weights * torch.tensor(counts, dtype=torch.float32)).unique().numel() == 1
    assert balanced_class_weights([5, 0], torch.device("cpu")).tolist() == [1.0, 0.0]


def test_dataset_statistics_come_from_the_training_split_only(tmp_path):
    folder = make_folder(tmp_path / "photos", {"blue": 20, "green": 20, "red": 2})
    cfg = make_config(folder_config(tmp_path, folder, normalize="dataset", val_split=0.3))
    (tmp_path / "run").mkdir()
    trainer = Trainer(cfg, tmp_path / "run")
    train_images = trainer.data.train.images.cpu()
    assert trainer.data.preprocess.mean == pytest.approx(channel_stats(train_images)[0])
    everything = torch.cat([train_images, trainer.data.val.images.cpu()])
    assert trainer.data.preprocess.mean != pytest.approx(channel_stats(everything)[0], abs=1e-4)


def test_zca_whitening_travels_with_the_model_file(tmp_path):
    folder = make_folder(tmp_path / "photos", {"blue": 12, "green": 12, "red": 12}, size=(16, 16))
    run, _ = train(make_config(folder_config(tmp_path, folder, epochs=1, whitening="zca", model="lenet5_modern")))
    _, meta = modelfile.load_model_file(run / "model.safetensors")
    saved = preprocess_of(meta)
    assert saved.whitening is not None and saved.whitening.method == "zca"
    x = torch.rand(4, 1, 28, 28)
    trained = Trainer(make_config(folder_config(tmp_path, folder, epochs=1, whitening="zca", model="lenet5_modern",
                                                run_dir=str(tmp_path / "again"))), tmp_path / "again")
    torch.testing.assert_close(saved.normalize(x), trained.data.preprocess.normalize(x))


def test_fine_tuning_freezes_the_backbone_and_replaces_the_classifier(tmp_path):
    source = make_folder(tmp_path / "source")
    first, _ = train(make_config(folder_config(tmp_path, source, epochs=1)))
    target = make_folder(tmp_path / "two", {"blue": 10, "green": 10})
    start = load_file(str(first / "model.safetensors"))
    cfg = make_config(folder_config(tmp_path, target, init_from=str(first), freeze="backbone",
                                    run_dir=str(tmp_path / "tuned")))
    (tmp_path / "tuned").mkdir()
    trainer = Trainer(cfg, tmp_path / "tuned")
    head = {id(p) for p in trainer.model.get_classifier().parameters()}
    classifier = {name for name, p in trainer.model.named_parameters() if id(p) in head}
    assert trainer.model.num_classes == 2 and classifier
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    for key, value in before.items():
        if key not in classifier:
            assert torch.equal(value, start[key]), key  # the backbone starts from the first run
    trainer.fit()
    after = trainer.model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed == classifier  # running BN statistics included: the backbone is frozen whole
    trainable = sum(p.numel() for g in trainer.optimizer.param_groups for p in g["params"])
    assert trainable == sum(p.numel() for p in trainer.model.get_classifier().parameters())


def test_backbone_learning_rate_scale(tmp_path):
    folder = make_folder(tmp_path / "photos", {"blue": 5, "green": 5, "red": 5})
    cfg = make_config(folder_config(tmp_path, folder, backbone_lr_scale=0.1, schedule="onecycle"))
    (tmp_path / "run").mkdir()
    trainer = Trainer(cfg, tmp_path / "run")
    head = {id(p) for p in trainer.model.get_classifier().parameters()}
    peak = {}
    for group in trainer.optimizer.param_groups:
        kinds = {id(p) in head for p in group["params"]}
        assert len(kinds) <= 1
        if kinds:
            peak[kinds.pop()] = group["max_lr"]
    assert peak == {False: pytest.approx(0.001), True: pytest.approx(0.01)}


def test_folder_options_do_not_apply_to_named_datasets():
    with pytest.raises(DcnnError, match="apply to image folders and CSV lists"):
        make_config({"dataset": "mnist", "loading": "lazy"})
    with pytest.raises(DcnnError, match="an image folder is read where it is"):
        make_config({"dataset": "/some/folder", "download": False})


def test_a_digit_model_evaluates_on_a_folder_of_digit_images(tmp_path):
    """Trained on the MNIST tensors, evaluated on the same test digits saved as PNG files in class
    folders: prepared as predict prepares images (fitted into the 28x28 box, padded to 32), they are
    the same pixels, so the accuracy is the same."""
    from dcnn.data.folder import stratified_sample
    from dcnn.data.mnist import load_mnist_sample

    run, result = train(make_config({"model": "lenet5", "dataset": "mnist_sample", "epochs": 1, "batch_size": 32,
                                     "lr": 0.05, "model_options": {"rbf_scale": 0.1}, "train_limit": 3000,
                                     "test_limit": 300, "val_size": 0, "seed": 0, "progress": False,
                                     "run_dir": str(tmp_path / "run")}))
    images, labels = load_mnist_sample("test")
    for i in stratified_sample(labels.tolist(), 300, seed=0):  # the test images the run kept (test_limit, seed 0)
        folder = tmp_path / "digits" / str(int(labels[i]))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i].numpy()).save(folder / f"{i}.png")
    evaluated = dcnn("eval", str(run), "--dataset", str(tmp_path / "digits"), "--out-dir", str(tmp_path / "eval"))
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["num_samples"] == 300
    assert report["top1_accuracy"] == pytest.approx(result.accuracy(1)) and report["top1_accuracy"] > 0.6
