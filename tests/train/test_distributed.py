"""Training on several processes (DistributedDataParallel on gloo): 2 processes at batch B/2 end
where 1 process at batch B does, a multi-process run killed with SIGKILL resumes bitwise, rank 0
alone writes the run, and launches that cannot work are refused in one line.

Process start-up is the cost (an interpreter importing torch: several seconds), so the runs are
shared: one real launch (`dcnn train --nproc 2`, torch's elastic launcher starting `python -m dcnn`
twice) is the reference; the killed and the resumed runs are processes forked from this one, given
torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) as torchrun would.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from dcnn.data.folder import ImageFiles, LazyImageDataset
from dcnn.data.loader import EpochOrder, FileBatches
from dcnn.errors import DcnnError
from dcnn.models import create_model
from dcnn.train import checkpoint as ckpt
from dcnn.train import make_config, resume, train
from dcnn.train.distributed import sync_batch_norm
from dcnn.train.trainer import Trainer
from tests.test_cli import assert_user_error, dcnn_in_process

# Everything whose arithmetic a distributed step must keep equal to one process's: batch norm
# (synchronized), augmentation with per-image draws and mixup partners, class-weighted loss, label
# smoothing, gradient clipping, a layer frozen mid-run (freeze_after: the replica is rebuilt without
# it; the SIGKILL resume starts past that step), and an uneven last batch (323 = 8 x 40 + 3: shares of 2 and 1). The
# model is smooth (SiLU, average pooling: no max, no ReLU) and the steps small, so the float rounding
# of the all-reduced sums grows smoothly with training: with max pooling or ReLU, a rounding difference
# that flips a max or a sign changes a gradient discretely (lenet5_modern at lr 0.05: 5e-4 to 7e-2 by seed).
CONFIG: dict[str, Any] = dict(
    model="stacknet", model_options={"depths": [1, 1], "widths": [16, 32], "block_layers": 1, "act": "silu",
                                     "pool": "avg"},
    dataset="mnist_sample", train_limit=323, val_size=50, test_limit=100, epochs=2, batch_size=40,
    eval_batch_size=500, lr=0.2, seed=5, progress=False,
    augment=["hflip", {"random_crop": {"padding": 2}}, "mixup"], class_balance="loss", label_smoothing=0.1,
    clip_grad_norm=1.0, checkpoint_every=4, freeze_after={"stem": 0.5},  # the stem frozen from step 5 on
)
KILL_AFTER_STEP = 12  # a checkpoint in the middle of epoch 2
# Largest |w1 - w2| over the weights and buffers after 18 steps, measured for seeds 1 to 10: 1.0e-6 to
# 3.0e-6 (seed 5: 2.7e-6), in batch norm's running statistics (float64 sums in sync_bn, float32 in
# torch's batch norm). Where the distributed arithmetic is wrong, measured for seeds 1 and 5: batch norm
# per process instead of synchronized, 3.6e-2 to 3.9e-1 (seeds 1 to 10); each process's mean loss not
# weighted by its share, 3.7e-2 to 5.8e-2; every process reading the same share, 1.5e-1 to 9.5e-1;
# each process augmenting its share alone, 1.8e-1 to 6.7e-1; no gradient all-reduce, 1.0 to 1.3.
TOLERANCE = 1e-5


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


def metrics(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run / "metrics.csv").read_text().splitlines()))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_rank(rank: int, world: int, port: int, work: Any, args: tuple) -> None:
    """A forked process joining the run as torchrun's process `rank` would."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)  # as the launched processes (OMP_NUM_THREADS=1): bitwise the same kernels
    work(*args)


def start_ranks(work: Any, *args: Any, world: int = 2) -> list[multiprocessing.Process]:
    """`work(*args)` in `world` processes forked from this one, all in one new process group."""
    context = multiprocessing.get_context("fork")
    port, processes = free_port(), []
    for rank in range(world):
        process = context.Process(target=_as_rank, args=(rank, world, port, work, args))
        process.start()
        os.setpgid(process.pid, processes[0].pid if processes else process.pid)
        processes.append(process)
    return processes


def join(processes: list[multiprocessing.Process], timeout: float = 240) -> list[int | None]:
    for process in processes:
        process.join(timeout)
    return [process.exitcode for process in processes]


def train_then_hang_after(step: int, values: dict[str, Any]) -> None:
    """Train, and stop for good right after writing the checkpoint of `step` (rank 0 sleeps; the
    other processes wait for it at their next collective): killed there, the run dies mid-epoch."""
    save = Trainer.save_checkpoint

    def save_then_hang(trainer: Trainer) -> Path | None:
        path = save(trainer)
        if trainer.global_step == step:
            time.sleep(600)
        return path

    Trainer.save_checkpoint = save_then_hang  # type: ignore[method-assign]  (in the forked process only)
    train(make_config(values))


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> Path:
    """One process at batch B (batch norm over the whole batch, as sync_bn does over the processes)."""
    run_dir, _ = train(make_config({**CONFIG, "run_dir": str(tmp_path_factory.mktemp("one") / "run")}))
    return run_dir


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> Path:
    """`dcnn train --nproc 2` with sync_bn: two `python -m dcnn train` processes at batch B/2."""
    run_dir = tmp_path_factory.mktemp("two") / "run"
    values = {**CONFIG, "sync_bn": True}
    options = [f"--set={key}={json.dumps(value)}" for key, value in values.items() if key != "progress"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        done = dcnn_in_process("train", "--nproc", "2", "--no-progress", "--run-dir", str(run_dir), *options)
    assert done.returncode == 0, done.stderr
    return run_dir


@pytest.mark.slow
def test_two_processes_at_half_batch_end_where_one_process_does(one_process, launched):
    single, double = weights(one_process), weights(launched)
    assert single.keys() == double.keys()
    diff = {k: float((single[k].double() - double[k].double()).abs().max()) for k in single}
    assert max(diff.values()) < TOLERANCE, sorted(diff.items(), key=lambda kv: -kv[1])[:3]
    one_rows, two_rows = metrics(one_process), metrics(launched)
    assert float(one_rows[-1]["train_loss"]) < float(one_rows[0]["train_loss"]) - 0.03  # it learned (0.066)
    # the same global steps; every process's examples counted once in the loss and accuracy (all-reduced),
    # the same validation (rank 0's); accuracies within one example of each other (weights differ by rounding)
    assert [r["step"] for r in one_rows] == [r["step"] for r in two_rows] == ["9", "18"]
    for a, b in zip(one_rows, two_rows, strict=True):
        assert float(a["train_loss"]) == pytest.approx(float(b["train_loss"]), rel=1e-5)
        assert float(a["train_acc"]) == pytest.approx(float(b["train_acc"]), abs=1 / CONFIG["train_limit"])
        assert float(a["val_acc"]) == pytest.approx(float(b["val_acc"]), abs=1 / CONFIG["val_size"])


@pytest.mark.slow
def test_rank_zero_alone_writes_the_run(one_process, launched):
    files = {str(p.relative_to(launched)) for p in launched.rglob("*") if p.is_file()}
    assert files == {str(p.relative_to(one_process)) for p in one_process.rglob("*") if p.is_file()}
    lines = (launched / "metrics.csv").read_text().splitlines()
    assert len(lines) == 1 + CONFIG["epochs"] and lines[0].startswith("epoch,")  # one header, a row per epoch


@pytest.mark.slow
def test_sigkill_of_the_process_group_mid_epoch_then_resume_is_bitwise(launched, tmp_path):
    run_dir = tmp_path / "killed"
    values = {**CONFIG, "sync_bn": True, "run_dir": str(run_dir)}
    processes = start_ranks(train_then_hang_after, KILL_AFTER_STEP, values)
    deadline = time.monotonic() + 240
    while f"step-{KILL_AFTER_STEP:08d}" not in {p.name for p in ckpt.list_checkpoints(run_dir)}:
        assert all(p.is_alive() for p in processes), "a process ended before the kill"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.killpg(processes[0].pid, signal.SIGKILL)
    assert join(processes) == [-signal.SIGKILL] * 2
    assert not (run_dir / "model.safetensors").exists() and len(metrics(run_dir)) == 1

    assert join(start_ranks(resume, run_dir)) == [0, 0]
    expected, resumed = weights(launched), weights(run_dir)
    assert expected.keys() == resumed.keys()
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), key
    assert (run_dir / "metrics.csv").read_text().count("\n") == 1 + CONFIG["epochs"]


def test_each_process_reads_its_share_of_every_global_batch(tmp_path):
    labels = torch.arange(23) % 4
    single = EpochOrder(labels, seed=5)
    shares = [EpochOrder(labels, seed=5) for _ in range(3)]
    for rank, order in enumerate(shares):
        order.shard(rank, 3)
    for epoch in (0, 1):
        whole = list(single.steps(epoch, batch_size=5))
        parts = [list(order.steps(epoch, batch_size=5)) for order in shares]
        assert [len(p) for p in parts] == [len(whole)] * 3 == [5] * 3  # 23 = 4 x 5 + 3: 5 steps everywhere
        for step, batch in enumerate(whole):
            assert torch.equal(torch.cat([p[step] for p in parts]), batch)  # in rank order: the batch
        assert [len(p[-1]) for p in parts] == [1, 1, 1] and [len(p[0]) for p in parts] == [2, 2, 1]
        resumed = list(shares[1].steps(epoch, batch_size=5, start_step=3))
        assert all(torch.equal(a, b) for a, b in zip(resumed, parts[1][3:], strict=True))
    with pytest.raises(ValueError, match="rank 3 is not one of 3"):
        single.shard(3, 3)

    # Image files decoded lazily: a share left empty by a small last batch is an empty batch of the right shape.
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.new("L", (8, 8), 40 * i).save(paths[-1])
    files = ImageFiles(paths, [0, 1, 0], ["a", "b"])
    order = EpochOrder(torch.tensor([0, 1, 0]), seed=0)
    order.shard(1, 2)
    steps = list(FileBatches(LazyImageDataset(files, (8, 8), 1), 2, order, workers=0).epoch(0))
    assert [tuple(images.shape) for images, _ in steps] == [(1, 1, 8, 8), (0, 1, 8, 8)]
    assert [len(labels) for _, labels in steps] == [1, 0]


def test_nproc_refuses_bad_values_in_one_line(monkeypatch):
    for value in ("0", "-2", "two"):
        assert_user_error(dcnn_in_process("train", "--nproc", value), f"--nproc {value!r}", "at least 1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert_user_error(dcnn_in_process("train", "--nproc", "2"), "already one of a distributed run")


def test_sync_bn_needs_several_processes_and_batch_norm(tmp_path):
    with pytest.raises(DcnnError, match=r"sync_bn: .* this run has one process; launch it with `dcnn train --nproc"):
        train(make_config({**CONFIG, "sync_bn": True, "run_dir": str(tmp_path / "run")}))
    assert not (tmp_path / "run").exists()
    with pytest.raises(DcnnError, match=r"sync_bn: model 'lenet5' \(as configured\) has no batch-norm layer"):
        sync_batch_norm(create_model("lenet5"), torch.device("cpu"), "lenet5")
