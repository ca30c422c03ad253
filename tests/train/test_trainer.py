"""The training loop: reproducibility, batch modes, auxiliary losses, divergence, checkpoints."""

from __future__ import annotations

import csv
import itertools
import json
import math

import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from safetensors.torch import load_file

from dcnn import create_model
from dcnn.data import preprocess
from dcnn.errors import DcnnError
from dcnn.train import checkpoint as ckpt
from dcnn.train import make_config, resume, train
from dcnn.train import trainer as trainer_module
from dcnn.train.trainer import Trainer, TrainingDiverged, auxiliary_weights, classification_loss
from tests.train.helpers import tiny_config


def weights(run_dir):
    return load_file(str(run_dir / "model.safetensors"))


def test_a_run_learns_and_writes_its_files(tmp_path):
    run_dir, result = train(tiny_config(tmp_path, epochs=3, optimizer="adam", lr=0.003))
    assert result.num_samples == 300
    # 600 training images, 3 epochs: far above chance (0.1); seeds 0-5 gave 71-83%
    assert result.accuracy(1) > 0.6
    rows = list(csv.DictReader((run_dir / "metrics.csv").read_text().splitlines()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert {"val_acc", "lr", "epoch_time_s", "images_per_s"} <= set(rows[0])
    for name in ("config.yaml", "curves.png", "data.json", "model.safetensors", "best.safetensors", "eval/metrics.json",
                 "eval/confusion_matrix.csv", "eval/confusion_matrix.png"):
        assert (run_dir / name).is_file(), name
    assert len(ckpt.list_checkpoints(run_dir)) == 2  # keep_checkpoints


def test_same_seed_same_run_and_other_seed_other_run(tmp_path):
    shifts = [{"random_crop": {"padding": 2}}]
    a, _ = train(tiny_config(tmp_path / "a", epochs=1, augment=shifts))
    b, _ = train(tiny_config(tmp_path / "b", epochs=1, augment=shifts))
    c, _ = train(tiny_config(tmp_path / "c", epochs=1, augment=shifts, seed=4))
    wa, wb, wc = weights(a), weights(b), weights(c)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_a_run_that_repays_compiling_converts_its_batches_compiled_and_trains_the_same(tmp_path, monkeypatch):
    calls = []
    conversion = preprocess._fused_conversion
    monkeypatch.setattr(preprocess, "_fused_conversion", lambda *args: calls.append(args[0].shape) or conversion(*args))
    plain, _ = train(tiny_config(tmp_path / "plain", epochs=1))
    assert not calls  # 600 training images of 28×28: far from repaying a compilation
    monkeypatch.setattr(trainer_module, "FUSED_REPAID", 600 * 28 * 28)  # what this run converts
    fused, _ = train(tiny_config(tmp_path / "fused", epochs=1))
    assert calls == [(50, 1, 28 * 28)] * 12  # every training batch
    a, b = weights(plain), weights(fused)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_full_batch_gradient_descent_takes_one_step_per_epoch(tmp_path):
    run_dir, _ = train(tiny_config(tmp_path, batch_size="full", epochs=2, metrics_format="jsonl"))
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]


def test_single_example_batches(tmp_path):
    run_dir, _ = train(tiny_config(tmp_path, batch_size=1, epochs=1, train_limit=30))
    rows = list(csv.DictReader((run_dir / "metrics.csv").read_text().splitlines()))
    assert int(rows[0]["step"]) == 30


def test_auxiliary_losses_are_weighted_into_the_total():
    cfg = make_config({"label_smoothing": 0.0})
    main, aux1, aux2 = torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 3)
    targets = torch.tensor([0, 1, 2, 1])
    loss, logits = classification_loss((main, aux1, aux2), targets, cfg, (0.3, 0.3))
    expected = F.cross_entropy(main, targets) + 0.3 * (F.cross_entropy(aux1, targets) + F.cross_entropy(aux2, targets))
    torch.testing.assert_close(loss, expected)
    assert logits is main


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_good_checkpoint(tmp_path):
    cfg = tiny_config(tmp_path, epochs=3)
    run_dir = tmp_path / "run"
    run_dir.mkdir()

    def poison(trainer):  # the first step of epoch 3, after epoch 2 was checkpointed, goes bad
        if trainer.global_step == 25:
            with torch.no_grad():
                trainer.model.features.c1.weight.fill_(float("nan"))
        return False

    trainer = Trainer(cfg, run_dir, after_step=poison)
    with pytest.raises(TrainingDiverged, match=r"the loss became nan at epoch 3.*last good checkpoint"):
        trainer.fit()
    _, good, _, warnings = ckpt.load_latest_checkpoint(run_dir)
    assert not warnings and all(torch.isfinite(t).all() for t in good.values() if t.is_floating_point())


def test_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path):
    run_dir, _ = train(tiny_config(tmp_path, epochs=2))
    older, newest = ckpt.list_checkpoints(run_dir)
    data = (newest / ckpt.STATE_FILE).read_bytes()
    (newest / ckpt.STATE_FILE).write_bytes(data[: len(data) // 2])  # truncated
    path, _, state, warnings = ckpt.load_latest_checkpoint(run_dir)
    assert path == older and state["epoch"] == 1
    assert "truncated or corrupt" in warnings[0]
    (older / ckpt.MODEL_FILE).write_bytes(b"garbage")
    with pytest.raises(Exception, match="no usable checkpoint"):
        ckpt.load_latest_checkpoint(run_dir)


def test_resume_from_an_epoch_checkpoint_matches_an_uninterrupted_run(tmp_path):
    full, _ = train(tiny_config(tmp_path / "full", epochs=3, checkpoint_every=5))
    part, _ = train(tiny_config(tmp_path / "part", epochs=3, checkpoint_every=5))
    # Roll the second run back to a mid-epoch checkpoint and continue it.
    for path in ckpt.list_checkpoints(part)[1:]:
        for f in path.iterdir():
            f.unlink()
        path.rmdir()
    (part / "model.safetensors").unlink()
    resume(part)
    wa, wb = weights(full), weights(part)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    rows = list(csv.DictReader((part / "metrics.csv").read_text().splitlines()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]


def test_existing_run_dir_is_not_overwritten(tmp_path):
    train(tiny_config(tmp_path, epochs=1))
    with pytest.raises(Exception, match="already holds a run"):
        train(tiny_config(tmp_path, epochs=1))


def one_step_update(tmp_path, **overrides) -> dict[str, torch.Tensor]:
    cfg = tiny_config(tmp_path, momentum=0.0, lr=1.0, epochs=1, **overrides)
    (tmp_path / "run").mkdir(parents=True)
    trainer = Trainer(cfg, tmp_path / "run")
    before = {k: v.clone() for k, v in trainer.model.named_parameters()}
    images, labels = next(trainer.data.train.epoch(0))
    trainer.train_step(images, labels)
    return {k: v.detach() - before[k] for k, v in trainer.model.named_parameters()}


def test_gradient_clipping_by_norm_and_by_value(tmp_path):
    by_norm = one_step_update(tmp_path / "norm", clip_grad_norm=1e-3)
    total = torch.sqrt(sum(d.pow(2).sum() for d in by_norm.values()))
    assert total.item() == pytest.approx(1e-3, rel=1e-3)  # plain SGD, lr 1: the update is the clipped gradient
    by_value = one_step_update(tmp_path / "value", clip_grad_value=1e-4)
    assert max(d.abs().max().item() for d in by_value.values()) == pytest.approx(1e-4, rel=1e-3)


def test_early_stopping_ends_the_run_when_validation_stalls(tmp_path):
    run_dir, _ = train(tiny_config(tmp_path, epochs=6, lr=1e-12, early_stopping=2))
    rows = list(csv.DictReader((run_dir / "metrics.csv").read_text().splitlines()))
    assert len(rows) == 3  # epoch 1 sets the best; epochs 2 and 3 do not beat it


def test_bf16_and_channels_last_train(tmp_path):
    seen = []
    cfg = tiny_config(tmp_path, epochs=1, bf16=True, channels_last=True)
    (tmp_path / "run").mkdir()
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.model.features.c1.register_forward_hook(
        lambda module, inputs, output: seen.append((output.dtype, output.is_contiguous(
            memory_format=torch.channels_last), module.weight.is_contiguous(memory_format=torch.channels_last))))
    trainer.fit()
    assert seen and set(seen) == {(torch.bfloat16, True, True)}


def test_auxiliary_weights_must_match_the_model():
    googlenet = create_model("googlenet", num_classes=10)
    assert auxiliary_weights(googlenet, make_config({"model": "googlenet"})) == (0.3, 0.3)
    assert auxiliary_weights(googlenet, make_config({"model": "googlenet", "aux_weights": (0.5, 0.1)})) == (0.5, 0.1)
    with pytest.raises(DcnnError, match="has 2 auxiliary classifiers, so give 2 weights"):
        auxiliary_weights(googlenet, make_config({"model": "googlenet", "aux_weights": (0.3,)}))
    with pytest.raises(DcnnError, match="has no auxiliary classifiers"):
        auxiliary_weights(create_model("lenet5_modern"), make_config({"aux_weights": (0.3,)}))
    with pytest.raises(ValueError):  # a loss given fewer weights than auxiliary outputs no longer drops one
        classification_loss((torch.randn(2, 3),) * 3, torch.tensor([0, 1]), make_config({}), (0.3,))


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [({"model_options": {"batch_nrom": True}}, "has no option 'batch_nrom'"),
     ({"dataset": "mnist", "data_dir": "EMPTY", "download": False}, "not found")],
)
def test_a_run_that_cannot_start_leaves_no_directory(tmp_path, overrides, fragment):
    (tmp_path / "empty").mkdir()
    overrides = {k: str(tmp_path / "empty") if v == "EMPTY" else v for k, v in overrides.items()}
    with pytest.raises(DcnnError, match=fragment):
        train(tiny_config(tmp_path, **overrides))
    assert not (tmp_path / "run").exists()


def test_resume_with_more_epochs_extends_the_run(tmp_path):
    three, _ = train(tiny_config(tmp_path / "three", epochs=3))
    two, _ = train(tiny_config(tmp_path / "two", epochs=2))
    resume(two, {"epochs": 3, "progress": False})
    wa, wb = weights(three), weights(two)  # a constant schedule: 2 epochs + 1 is the 3-epoch run
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert make_config(yaml.safe_load((two / "config.yaml").read_text())).epochs == 3
    rows = list(csv.DictReader((two / "metrics.csv").read_text().splitlines()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]


def test_resume_with_more_epochs_recomputes_the_schedule(tmp_path):
    run, _ = train(tiny_config(tmp_path, epochs=2, schedule="cosine"))
    resume(run, {"epochs": 4})
    rows = list(csv.DictReader((run / "metrics.csv").read_text().splitlines()))
    # 12 steps per epoch; the lr logged after epoch 3 (step 36) is the 4-epoch cosine schedule's there
    expected = 0.05 * 0.5 * (1 + math.cos(math.pi * 36 / 48))
    assert float(rows[2]["lr"]) == pytest.approx(expected, rel=1e-6)


def test_resume_refuses_changes_that_break_exactness(tmp_path):
    run, _ = train(tiny_config(tmp_path, epochs=2))
    with pytest.raises(DcnnError, match="lr cannot change") as info:
        resume(run, {"lr": 0.1, "epochs": 3})
    assert "epochs" in str(info.value)  # says what may change
    with pytest.raises(DcnnError, match="already trained 2 epoch"):
        resume(run, {"epochs": 1})


@pytest.mark.parametrize("native", [True, False])
def test_bf16_auto_uses_bf16_only_where_the_cpu_computes_it_natively(tmp_path, monkeypatch, native):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    (tmp_path / "run").mkdir()
    trainer = Trainer(tiny_config(tmp_path, bf16="auto", device="cpu"), tmp_path / "run")
    assert trainer.bf16 is native
    seen = []
    trainer.model.features.c1.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    images, labels = next(trainer.data.train.epoch(0))
    trainer.train_step(images, labels)
    assert seen == [torch.bfloat16 if native else torch.float32]


def test_augmentation_gets_each_training_image_with_its_position_and_the_epoch(tmp_path, monkeypatch):
    # what alternating flips read: the image at `index` of the training split, in epoch `epoch`
    from dcnn.data.augment import BatchAugment

    seen = []
    original = BatchAugment.__call__

    def recording(self, images, labels, seed, index=None, epoch=0):
        seen.append((images.clone(), labels.clone(), index, epoch))
        return original(self, images, labels, seed, index=index, epoch=epoch)

    monkeypatch.setattr(BatchAugment, "__call__", recording)
    states = {}

    def keep(trainer):
        states["trainer"] = trainer
        return False

    train(tiny_config(tmp_path, epochs=2, augment=[{"hflip": {"alternate": True}}]), after_step=keep)
    split = states["trainer"].data.train
    assert [epoch for *_, epoch in seen] == [0] * 12 + [1] * 12  # 600 images, batches of 50
    for images, labels, index, _ in seen:
        assert torch.equal(images, split.images[index]) and torch.equal(labels, split.labels[index])
    assert sorted(torch.cat([index for _, _, index, epoch in seen if epoch == 1]).tolist()) == list(range(600))


def test_freeze_after_stops_the_named_parameters_at_that_step_despite_momentum_and_decay(tmp_path):
    steps = []

    def record(trainer):
        steps.append({name: p.detach().clone() for name, p in trainer.model.named_parameters()})
        return False

    # 600 images in batches of 50: 12 steps an epoch, so features.c1 is frozen from step 18 (1.5 epochs)
    train(tiny_config(tmp_path, epochs=3, momentum=0.9, weight_decay=1e-3, freeze_after={"features.c1": 1.5}),
          after_step=record)
    moved = [not torch.equal(a["features.c1.weight"], b["features.c1.weight"]) for a, b in itertools.pairwise(steps)]
    assert moved == [True] * 17 + [False] * 18  # steps 2-18 move it (momentum would carry it on), 19-36 do not
    assert all(not torch.equal(a["f6.weight"], b["f6.weight"]) for a, b in itertools.pairwise(steps))


def test_freeze_after_names_the_parameters_when_a_prefix_matches_none(tmp_path):
    with pytest.raises(DcnnError, match=r"freeze_after: 'conv1' begins no trainable parameter's name of "
                                        r"lenet5_modern \(they begin with f6, features, output\)"):
        train(tiny_config(tmp_path, freeze_after={"conv1": 1.0}))


def small_photo_folder(root, classes=2, per_class=12, size=32):
    generator = torch.Generator().manual_seed(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = (torch.rand(size, size, 3, generator=generator) * 200 + 40 * c).clamp(0, 255).to(torch.uint8)
            Image.fromarray(pixels.numpy()).save(root / f"class{c}" / f"{i}.png")
    return root


def test_data_dependent_init_reads_un_augmented_training_images_once(tmp_path, monkeypatch):
    # airbench94's whitening is fitted on data_init_images training images before the first step,
    # not on the first (augmented) batch; a run started from trained weights keeps theirs
    from dcnn.models.airbench import AirbenchNet, PatchWhitening

    fitted, states = [], {}
    original = PatchWhitening.fit

    def recording(self, x):
        fitted.append(x.clone())
        return original(self, x)

    def keep(trainer):
        states["trainer"] = trainer
        return False

    monkeypatch.setattr(PatchWhitening, "fit", recording)
    monkeypatch.setattr(AirbenchNet, "data_init_images", 10)
    folder = small_photo_folder(tmp_path / "photos")
    run_dir, _ = train(make_config({"model": "airbench94", "dataset": str(folder), "epochs": 1, "batch_size": 8,
                                    "augment": [{"random_crop": {"padding": 2}}], "progress": False,
                                    "run_dir": str(tmp_path / "run")}), after_step=keep)
    trainer = states["trainer"]
    assert len(fitted) == 1 and fitted[0].shape == (10, 3, 32, 32)
    every_image = trainer.data.preprocess.normalize(trainer.data.train.images).flatten(1)
    for image in fitted[0].flatten(1):  # each one a training image as it is, not augmented
        assert torch.isclose(every_image, image).all(1).any()
    weights = trainer.model.whitening.conv.weight.detach().clone()
    expected = AirbenchNet()
    original(expected.whitening, fitted[0])
    assert torch.equal(weights, expected.whitening.conv.weight)  # kept through training (frozen)
    train(make_config({"model": "airbench94", "dataset": str(folder), "epochs": 1, "batch_size": 8,
                       "init_from": str(run_dir), "progress": False, "run_dir": str(tmp_path / "again")}))
    assert len(fitted) == 1


def test_a_cpu_run_keeps_freed_memory_for_its_next_steps(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(trainer_module, "reuse_freed_memory", lambda: calls.append(1) or True)
    train(tiny_config(tmp_path, device="cpu"))
    assert calls == [1]
