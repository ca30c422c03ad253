"""Training on several processes, on one machine or many, with PyTorch's DistributedDataParallel.

``torchrun --nproc-per-node N -m dcnn train ...`` starts N processes; each reads torchrun's
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and joins one process group:
gloo on CPU, NCCL on CUDA, where the local rank picks the GPU. ``dcnn train --nproc N`` does the same
through torch's elastic launcher with a standalone rendezvous (:func:`launch`).

N processes at batch B/N train as one process at batch B (Goyal et al. 2017, Sec. 3, "Subtleties
and pitfalls of distributed SGD"), to float rounding:

- Data: every process draws the same order of each epoch, from (seed, epoch), and reads its
  contiguous share of each global batch (:meth:`dcnn.data.loader.EpochOrder.steps`); a resumed run
  skips the same global steps on every process.
- Augmentation: its random draws span the whole batch (per-image parameters, mixup and cutmix
  partners), so the shares are gathered, the global batch is augmented on every process with the
  seed of the global step, and each keeps its share (:meth:`Distributed.augment`). The augmentation
  work is therefore not divided among the processes.
- Loss: each process's mean loss is weighted by its share of the global batch's normaliser (the
  number of examples, or their summed class weights with ``class_balance: loss``, as
  ``F.cross_entropy`` divides), so DDP's average of the gradients is the gradient of the global
  batch's mean loss, also for uneven last batches (:meth:`Distributed.share_loss`). Label smoothing,
  soft targets, auxiliary losses and the L1 penalty are inside that mean. Gradients are clipped
  after DDP's all-reduce, on the same gradients in every process.
- Batch norm computes its statistics over each process's share unless ``sync_bn`` synchronizes them
  over the global batch (torch's SyncBatchNorm on CUDA, :class:`GlooSyncBatchNorm` on CPU).
- Dropout and other draws from the global generator are seeded by (seed, global step, rank) before
  every step: the processes draw independent masks and a resumed run draws the same ones, but not
  the masks of a single process.
- bf16 autocast rounds partial sums of the smaller per-process batches differently.

Rank 0 alone evaluates (the validation and test splits, unsharded: the reports are exactly those
of a single process), writes the run directory (checkpoints, metrics, curves, model files, report)
and decides early stopping; the others wait for it. The run directory's name is chosen by rank 0
and broadcast. Resuming reads the checkpoint in every process, so a run on several machines keeps
its run directory on a filesystem they share.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as dist
import torch.nn as nn

from dcnn.errors import DcnnError

T = TypeVar("T")


@dataclass
class Distributed:
    """This process's place in a distributed run (rank 0 of 1 when it is the only process).
    `device` is where collective operations run: the CPU for gloo, this process's GPU for NCCL."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    replicas: list[nn.Module] = field(default_factory=list, repr=False)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ----- set-up --------------------------------------------------------------------------------
    def place(self, device: torch.device) -> torch.device:
        """The training device of this process: `device`, or on CUDA the GPU of its local rank."""
        if not self.enabled or device.type != "cuda":
            return device
        if device.index is not None:
            raise DcnnError(f"device {device}: each process of a distributed run uses the GPU of its local rank; "
                            "give --device cuda (or auto).")
        return torch.device("cuda", self.local_rank)

    def check(self, sync_bn: bool) -> None:
        """Refuse options that need several processes when there is one."""
        if sync_bn and not self.enabled:
            raise DcnnError("sync_bn: synchronizes batch norm across the processes of a distributed run, and this "
                            "run has one process; launch it with `dcnn train --nproc N` or torchrun, or remove "
                            "sync_bn.")

    def wrap(self, model: nn.Module) -> nn.Module:
        """`model` in DistributedDataParallel (the model itself for one process): what the training
        step calls, so that backward all-reduces the gradients."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        replica = DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.replicas.append(replica)
        return replica

    def release(self) -> None:
        """Let go of the DDP replicas' reducers while the process group is still registered. A reducer
        holding the group's last reference destroys it with the GIL held, and gloo's threads, which
        take the GIL to release finished work, then never stop: the process hangs at its end."""
        for replica in self.replicas:
            del replica.reducer
        self.replicas.clear()

    # ----- the training step ---------------------------------------------------------------------
    def seed_step(self, seed: int, step: int) -> None:
        """Seed the global generators from (seed, global step, rank) in a distributed run (dropout
        masks independent across processes, the same after a resume); one process keeps its own,
        checkpointed, generator state."""
        if self.enabled:
            torch.manual_seed((seed * 1_000_003 + step) * 4099 + self.rank)

    def batch_sizes(self, size: int) -> list[int]:
        """The number of examples each process holds at this step, in rank order."""
        if not self.enabled:
            return [size]
        sizes = [torch.zeros(1, dtype=torch.long, device=self.device) for _ in range(self.world_size)]
        dist.all_gather(sizes, torch.tensor([size], device=self.device))
        return [int(s) for s in sizes]

    def gather(self, tensor: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        """The processes' `tensor`s (first dimensions `sizes`) concatenated in rank order, on every process."""
        if not self.enabled:
            return tensor
        padded = tensor.new_zeros((max(sizes), *tensor.shape[1:]), device=self.device)
        padded[: len(tensor)] = tensor
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)]).to(tensor.device)

    def augment(self, augment: Callable[..., tuple[torch.Tensor, torch.Tensor]], images: torch.Tensor,
                labels: torch.Tensor, sizes: list[int], seed: int, index: torch.Tensor | None = None,
                epoch: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """`augment(images, labels, seed=seed, index=index, epoch=epoch)` applied to the global batch,
        and this process's share of the result: the augmented images and targets one process would
        draw for these examples."""
        if not self.enabled:
            return augment(images, labels, seed=seed, index=index, epoch=epoch)
        if index is not None:
            index = self.gather(index.to(labels.device), sizes).cpu()
        everything, targets = augment(self.gather(images, sizes), self.gather(labels, sizes), seed=seed,
                                      index=index, epoch=epoch)
        start = sum(sizes[: self.rank])
        share = slice(start, start + sizes[self.rank])
        return everything[share], targets[share]

    def share_loss(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor,
                   class_weights: torch.Tensor | None) -> tuple[torch.Tensor, float, int]:
        """(the loss this process backpropagates, the global batch's mean loss, its correct count).

        `loss` is the mean over this process's examples; F.cross_entropy divides its sum by the
        number of examples, or by their summed class weights for class-index targets with
        weights. Scaled by world_size · (this normaliser) / (the global one), DDP's mean of the
        gradients is the gradient of the global batch's mean loss. A process with no example of
        this step backpropagates zero (its loss, NaN, times 0) to take part in the all-reduce.
        """
        correct = int((logits.argmax(1) == labels).sum())
        if not self.enabled:
            return loss, loss.item(), correct
        weighted = class_weights is not None and targets.dtype == torch.long
        norm = float(class_weights[targets].sum()) if weighted else float(len(labels))
        local = torch.tensor([loss.item() * norm if norm else 0.0, norm, correct], dtype=torch.float64,
                             device=self.device)
        dist.all_reduce(local)
        total_loss, total_norm, total_correct = local.tolist()
        return loss * (self.world_size * norm / total_norm), total_loss / total_norm, round(total_correct)

    # ----- rank 0 and the others -----------------------------------------------------------------
    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def on_main(self, work: Callable[[], T]) -> T | None:
        """`work()` on rank 0; the other processes wait for it to finish and get None."""
        result = work() if self.is_main else None
        self.barrier()
        return result

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's `flag`, on every process."""
        if not self.enabled:
            return flag
        value = torch.tensor([int(flag)], device=self.device)
        dist.broadcast(value, 0)
        return bool(value.item())

    def broadcast_text(self, text: str) -> str:
        """Rank 0's `text`, on every process."""
        if not self.enabled:
            return text
        data = text.encode()
        length = torch.tensor([len(data)], device=self.device)
        dist.broadcast(length, 0)
        buffer = torch.zeros(int(length.item()), dtype=torch.uint8, device=self.device)
        if self.is_main:
            buffer.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        dist.broadcast(buffer, 0)
        return bytes(buffer.cpu().tolist()).decode()


@contextmanager
def session(device: torch.device) -> Iterator[Distributed]:
    """Join the process group torchrun describes in the environment (leaving it at the end); without
    one (no WORLD_SIZE, or 1), a single process. NCCL when `device` is CUDA, else gloo."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        yield Distributed(device=device)
        return
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    collectives = torch.device("cpu")
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise DcnnError(f"local rank {local_rank} has no GPU (this machine has {torch.cuda.device_count()}); "
                            "launch at most one process per GPU.")
        torch.cuda.set_device(local_rank)
        collectives = torch.device("cuda", local_rank)
    joined = not dist.is_initialized()  # else the caller's group, which the caller leaves
    if joined:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                device_id=collectives if device.type == "cuda" else None)
    context = Distributed(dist.get_rank(), dist.get_world_size(), local_rank, collectives)
    try:
        yield context
    finally:
        context.release()
        if joined:
            dist.destroy_process_group()


# ----- synchronized batch norm -------------------------------------------------------------------
class _AllReduceSum(torch.autograd.Function):
    """The sum of a tensor over the processes, differentiable: every process's loss depends on the
    sum, so the gradient reaching each process's input is the sum of the processes' gradients."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


class GlooSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm synchronized over the processes, on CPU tensors (torch's nn.SyncBatchNorm, and DDP
    with it, run on GPUs only). In training, the mean and the biased variance normalizing the batch
    (Ioffe & Szegedy 2015, Alg. 1) are those of the global batch: sums over every process by
    all-reduces that carry gradients (their backward all-reduces the gradients of the statistics), so
    each process's gradient accounts for the others' examples as in torch's CUDA version. The running
    variance is the unbiased global one. The state is a batch norm's: model files load into the plain
    model."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized()):
            return super().forward(input)
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        x = input.float()
        count = torch.tensor([input.numel() / max(1, input.shape[1])], dtype=torch.float64)
        sums = _AllReduceSum.apply(torch.cat([x.sum(dims, dtype=torch.float64), count]))
        n = sums[-1]
        mean = (sums[:-1] / n).float()
        centered = x - mean.view(shape)
        var = (_AllReduceSum.apply(centered.square().sum(dims, dtype=torch.float64)) / n).float()
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean, factor)
                self.running_var.lerp_(var * (n / (n - 1)).float(), factor)
        out = centered * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(input.dtype)


def sync_batch_norm(model: nn.Module, device: torch.device, name: str) -> nn.Module:
    """`model` with every batch-norm layer synchronized over the processes (sync_bn)."""
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise DcnnError(f"sync_bn: model {name!r} (as configured) has no batch-norm layer to synchronize; "
                        "remove sync_bn.")
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.__class__ = GlooSyncBatchNorm  # the same parameters and buffers, a synchronized forward
    return model


# ----- launching ---------------------------------------------------------------------------------
def launch(nproc: int, args: list[str]) -> None:
    """Run ``python -m dcnn ARGS`` in `nproc` processes on this machine, as ``torchrun --standalone
    --nproc-per-node NPROC -m dcnn ARGS`` does (torch's elastic launcher, a rendezvous on a free local
    port). Each process gets cores / nproc OpenMP threads unless OMP_NUM_THREADS is set."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // nproc)))
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # failures are reported below
    try:
        run(parse_args(["--standalone", f"--nproc-per-node={nproc}", "--module", "dcnn", *args]))
    except ChildFailedError as failure:
        rank, first = failure.get_first_failure()
        raise DcnnError(f"training stopped: process {rank} of {nproc} failed (exit code {first.exitcode}); "
                        "its message is above.") from None
    except SignalException:  # Ctrl-C or a termination signal: the launcher has stopped the processes
        raise KeyboardInterrupt from None


def worker_count(text: str, device: str) -> int:
    """The number of processes `dcnn train --nproc TEXT` asks for, or a DcnnError saying why not."""
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise DcnnError(f"--nproc {text!r}: give the number of training processes to start, at least 1, e.g. "
                        "--nproc 2.")
    if "WORLD_SIZE" in os.environ:
        raise DcnnError("--nproc: this process is already one of a distributed run (started by torchrun); run "
                        "`dcnn train` without --nproc under torchrun.")
    gpus = torch.cuda.device_count() if device in ("auto", "cuda") and torch.cuda.is_available() else 0
    if gpus and count > gpus:
        raise DcnnError(f"--nproc {count}: this machine has {gpus} GPU(s) and each process takes one; give at "
                        f"most --nproc {gpus} (or --device cpu).")
    return count

