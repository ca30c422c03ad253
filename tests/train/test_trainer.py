"""The training loop: reproducibility, batch modes, auxiliary losses, divergence, checkpoints."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from dcnn.train import checkpoint as ckpt
from dcnn.train import make_config, resume, train
from dcnn.train.trainer import Trainer, TrainingDiverged, classification_loss
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
    for name in ("config.yaml", "model.safetensors", "best.safetensors", "eval/metrics.json",
                 "eval/confusion_matrix.csv", "eval/confusion_matrix.png"):
        assert (run_dir / name).is_file(), name
    assert len(ckpt.list_checkpoints(run_dir)) == 2  # keep_checkpoints


def test_same_seed_same_run_and_other_seed_other_run(tmp_path):
    a, _ = train(tiny_config(tmp_path / "a", epochs=1, random_shift=2))
    b, _ = train(tiny_config(tmp_path / "b", epochs=1, random_shift=2))
    c, _ = train(tiny_config(tmp_path / "c", epochs=1, random_shift=2, seed=4))
    wa, wb, wc = weights(a), weights(b), weights(c)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


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
    trainer.train_step(torch.arange(50))
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
    run_dir, result = train(tiny_config(tmp_path, epochs=1, bf16=True, channels_last=True))
    assert result.num_samples == 300 and (run_dir / "model.safetensors").is_file()
