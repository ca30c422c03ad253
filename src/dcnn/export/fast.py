"""Fast CPU inference with a trained model: the same function as the eval-mode model, computed faster.

:func:`fast_inference` prepares a copy of the model for inference only:

1. Batch normalization folded into the convolution before it, wherever a ``Sequential`` runs a
   ``Conv2d`` straight into a ``BatchNorm2d`` (``ConvBnAct``): in eval mode BN is the affine map
   γ (x − μ)/√(σ² + ε) + β, which the convolution's weights and bias absorb (one pass over the
   activations fewer per layer).
2. Channels-last (NHWC) weights and inputs for models with convolutions: oneDNN's direct
   convolutions read NHWC as it is, where NCHW input is reordered to a blocked layout and back at
   every layer.
3. ``torch.inference_mode``: no autograd bookkeeping.
4. With ``compile=True``, ``torch.compile`` (inductor, weights frozen as constants: BN and
   parameter-only computations folded, elementwise operations fused into the convolutions' loops).
   The first batch of each shape compiles (tens of seconds; inductor caches the code on disk).

Threads: :func:`idle_cores` is how many threads `dcnn predict` gives torch (and onnxruntime). On a
machine busy with other work, OpenMP threads wait for each other at every layer while one of them is
descheduled: LeNet-5 at batch 1 ran at 10 images/s on 2 threads with the other core busy, and at
1,400 on one thread (BENCHMARKS.md).

Everything stays fp32, so predictions are the model's (bf16 would help only where the CPU computes
it natively, :func:`dcnn.train.trainer.native_bf16`; emulated on AVX2 it is several times slower).
BENCHMARKS.md measures each step against eager fp32 and onnxruntime.
"""

from __future__ import annotations

import copy
import itertools
import os

import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """The model (modified in place, eval mode) with each BatchNorm2d that directly follows a Conv2d in
    a Sequential folded into that convolution and replaced by Identity."""
    model.eval()
    for sequence in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = list(sequence._modules)
        for first, second in itertools.pairwise(names):
            conv, bn = sequence._modules[first], sequence._modules[second]
            if isinstance(conv, nn.Conv2d) and type(bn) is nn.BatchNorm2d and bn.track_running_stats:
                sequence._modules[first] = fuse_conv_bn_eval(conv, bn)
                sequence._modules[second] = nn.Identity()
    return model


class FastInference(nn.Module):
    """A model prepared by :func:`fast_inference`; call it on a batch (N, C, H, W) like the model."""

    def __init__(self, model: nn.Module, compile: bool = False) -> None:
        super().__init__()
        model = fold_batch_norm(copy.deepcopy(model))
        self.channels_last = any(isinstance(m, nn.Conv2d) for m in model.modules())
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.run: nn.Module = model
        if compile:
            import torch._inductor.config as inductor

            inductor.freezing = True  # weights become constants the compiler folds
            self.run = torch.compile(model, dynamic=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return self.run(x)


def fast_inference(model: nn.Module, compile: bool = False) -> FastInference:
    """A copy of `model` prepared for fast inference (see the module docstring); the model itself is
    left as it is."""
    return FastInference(model, compile)


def idle_cores() -> int:
    """The cores other processes leave idle: the logical CPUs less the one-minute load average, rounded,
    at least 1 (all of them where the load average is unknown)."""
    cpus = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return cpus
    return max(1, min(cpus, round(cpus - load)))
