"""Fast CPU inference with a trained model: the same function as the eval-mode model, computed faster.

:func:`fast_inference` prepares a copy of the model for inference only:

1. Batch normalization folded into the convolution before it, wherever a ``Sequential`` runs a
   ``Conv2d`` straight into a ``BatchNorm2d`` (``ConvBnAct``): in eval mode BN is the affine map
   γ (x − μ)/√(σ² + ε) + β, which the convolution's weights and bias absorb (one pass over the
   activations fewer per layer).
2. LeNet-5's partially connected C3 as an ordinary convolution (``PartiallyConnectedConv.to_conv2d``):
   the model scatters its connection table into a dense kernel at every call, this copy once.
3. Small convolutions through ATen's im2col + GEMM kernel instead of oneDNN (:class:`GemmConv2d`):
   a oneDNN convolution called from PyTorch costs about 50 µs of fixed work (descriptors and
   buffers set up at every call), several times what a convolution of LeNet-5's size computes.
4. Channels-last (NHWC) weights and inputs where every convolution has at least
   :data:`CHANNELS_LAST_MIN` output channels: oneDNN's convolutions read NHWC as it is, and the
   compiled code vectorizes along the channels. Narrower maps (LeNet-5's 6) stay NCHW, where the
   compiled code vectorizes along the width instead of falling back to scalar code.
5. Batches run in chunks whose largest layer fits half the CPU's last-level cache
   (:func:`chunk_size`): MobileNet v2's expanded layers of 32 images at 224x224 do not fit and ran at
   half the speed of chunks of 2 (BENCHMARKS.md).
6. ``torch.inference_mode``: no autograd bookkeeping.
7. With ``compile=True``, the model is compiled by inductor for each input shape it meets: captured
   by ``torch.export`` at that shape and compiled by ``torch._inductor.compile`` with ``freezing``
   (weights become constants, convolution and linear weights are prepacked into oneDNN's layouts and
   elementwise operations fused into them) and ``cpp_wrapper`` (the generated code is called from
   C++, without a Python line per operator). A call looks up the compiled code by the input's shape
   and dtype, with none of ``torch.compile``'s guards (checks of the module's state and of every
   weight, whose values freezing has already made constants, at every call): 75 µs less a call on
   LeNet-5 at batch 1 (163 → 88 µs) and about 0.5-1 ms on MobileNet v2 (BENCHMARKS.md). The copy of
   the model that is compiled is private to the fast path, so nothing changes it between calls. A new
   shape compiles (seconds to tens of seconds; inductor caches the code on disk).

Threads: :func:`idle_cores` is how many threads `dcnn predict` gives torch (and onnxruntime). On a
machine busy with other work, OpenMP threads wait for each other at every layer while one of them is
descheduled: LeNet-5 at batch 1 ran at 10 images/s on 2 threads with the other core busy, and at
1,400 on one thread (BENCHMARKS.md).

Precision: fp32 by default, so predictions are the model's. ``precision="bf16"`` runs the model
under bf16 autocast (native on CPUs with AVX-512 BF16 or AMX, :func:`dcnn.device.native_bf16`; with
``compile``, on one thread 1.8x onnxruntime's speed on ResNet-18, 1.3x on MobileNet v2 at batch 32
and 1.04-1.11x at batch 1, BENCHMARKS.md) and keeps its answer only where it is not a close call:
where the top two logits differ by less than :data:`CLOSE_CALL` times the largest |logit|, the image
is computed again in fp32. bf16 alone changed the top-1 class of 0.28% of CIFAR-10's test images with a trained
ResNet-20, every one of them such a close call; with the fp32 second look none changes.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from dcnn.data.pipeline import in_layout
from dcnn.errors import DcnnError
from dcnn.models.lenet import PartiallyConnectedConv

# Below this many multiply-adds a call, ATen's im2col + GEMM convolution beats oneDNN's on one thread
# (LeNet-5's C1 and C3 at batch 1: 27 and 37 µs against 75 and 63; 3x3 convolutions of 0.8-1.8M
# multiply-adds at 16-64 channels: even or worse). BENCHMARKS.md, "CPU inference".
SMALL_CONV_MACS = 500_000
CHANNELS_LAST_MIN = 16  # floats in a 512-bit vector register
PRECISIONS = ("fp32", "bf16")
# bf16 moved the logits of a trained ResNet-20 by up to 2.6% of the largest |logit| (its 8-bit
# mantissa, over 20 layers); the images whose top-1 class changed had top-two margins of at most 1.7%
# of it. 5% leaves a factor of 3, and sent 3.1% of CIFAR-10's test images to fp32 (BENCHMARKS.md).
CLOSE_CALL = 0.05


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


class GemmConv2d(nn.Conv2d):
    """A convolution computed by ATen's im2col + GEMM kernel on the CPU when a call has fewer than
    :data:`SMALL_CONV_MACS` multiply-adds, by the usual (oneDNN) kernel otherwise."""

    @classmethod
    def of(cls, conv: nn.Conv2d) -> GemmConv2d:
        """`conv` (zero padding given as numbers, no groups, no dilation) as a GemmConv2d, the same weights."""
        gemm = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                   bias=conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype)
        gemm.load_state_dict(conv.state_dict())
        return gemm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        out_h, out_w = (x.shape[-2] + 2 * ph - kh) // sh + 1, (x.shape[-1] + 2 * pw - kw) // sw + 1
        macs = x.shape[0] * self.out_channels * self.in_channels * kh * kw * out_h * out_w
        if (x.device.type == "cpu" and x.dim() == 4 and macs < SMALL_CONV_MACS
                and not torch.is_autocast_enabled("cpu")):  # autocast casts for the usual kernel only
            return torch._C._nn.thnn_conv2d(x, self.weight, self.kernel_size, self.bias, self.stride, self.padding)
        return super().forward(x)


def _replace_modules(model: nn.Module, rules: dict[type, Callable[[Any], nn.Module]]) -> None:
    """Replace each submodule whose type (exactly: not a subclass) has a rule by what the rule makes of it."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) in rules:
                setattr(parent, name, rules[type(child)](child))


def _gemm_conv(conv: nn.Conv2d) -> nn.Conv2d:
    plain = (conv.groups == 1 and conv.dilation == (1, 1) and conv.padding_mode == "zeros"
             and not isinstance(conv.padding, str))
    return GemmConv2d.of(conv) if plain else conv


def peak_layer_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """The most bytes any leaf module of `model` reads and writes (input plus output tensors) on `x`."""
    peak = 0

    def measure(module: nn.Module, inputs: tuple, output: object) -> None:
        nonlocal peak
        tensors = [t for t in (*inputs, *(output if isinstance(output, tuple) else (output,)))
                   if isinstance(t, torch.Tensor)]
        peak = max(peak, sum(t.numel() * t.element_size() for t in tensors))

    leaves = [m for m in model.modules() if not any(m.children())]
    handles = [m.register_forward_hook(measure) for m in leaves]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return peak


def last_level_cache_bytes(caches: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> int | None:
    """The size of the CPU's largest (last-level) cache, from Linux's sysfs; None where it is not known."""
    sizes = []
    for entry in caches.glob("index*/size"):
        text = entry.read_text().strip()
        if text[:-1].isdigit() and text[-1] in "KMG":
            sizes.append(int(text[:-1]) << {"K": 10, "M": 20, "G": 30}[text[-1]])
    return max(sizes, default=None)


def chunk_size(peak_bytes: int, cache_bytes: int | None) -> int | None:
    """Images per chunk so that a layer's input and output of the whole chunk fit half the last-level
    cache (the other half for weights and other processes): at least 1; None (no chunks) where the
    cache size is unknown."""
    if cache_bytes is None or peak_bytes <= 0:
        return None
    return max(1, cache_bytes // 2 // peak_bytes)


def _compile(model: nn.Module, x: torch.Tensor, precision: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """`model` compiled by inductor for inputs of `x`'s shape, dtype and strides, in `precision`
    (module docstring, item 7). Quiet about the im2col convolution having no C++ shim (the C++
    wrapper calls it through a proxy). Raises DcnnError where it cannot be compiled."""
    ir_log = logging.getLogger("torch._inductor.ir")
    level = ir_log.level
    ir_log.setLevel(logging.ERROR)
    try:
        # Under autocast for bf16: torch.export records no casts, but the model's own choices must
        # see autocast on (GemmConv2d leaves small convolutions to oneDNN under it), and inductor
        # compiles the casts in while it traces the exported graph.
        with torch.inference_mode(False), torch.no_grad(), _in_precision(precision, x.device):
            example = x.clone()  # an ordinary tensor (x may be an inference tensor), the same strides
            graph = torch.export.export(model, (example,)).module()
            return torch._inductor.compile(graph, [example], options={"freezing": True, "cpp_wrapper": True})
    except Exception as error:  # a model torch.export cannot capture, a machine without a C++ compiler
        lines = str(error).strip().splitlines()
        raise DcnnError(f"compiling the model for inputs {tuple(x.shape)} failed ({type(error).__name__}: "
                        f"{lines[0] if lines else 'no message'}); run it without compiling "
                        "(leave out --compile).") from error
    finally:
        ir_log.setLevel(level)


def close_calls(logits: torch.Tensor, margin: float = CLOSE_CALL) -> torch.Tensor:
    """Which rows of `logits` (N, classes) are close calls: top two logits less than `margin` times
    the row's largest |logit| apart."""
    top = logits.topk(2, dim=1).values
    return top[:, 0] - top[:, 1] < margin * logits.abs().amax(dim=1)


def _in_precision(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device` for precision "bf16", else nothing."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class FastInference(nn.Module):
    """A model prepared by :func:`fast_inference`; call it on a batch (N, C, H, W) like the model."""

    def __init__(self, model: nn.Module, compile: bool = False, precision: str = "fp32",
                 close_call: float | None = CLOSE_CALL) -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: choose one of {PRECISIONS}")
        model = fold_batch_norm(copy.deepcopy(model))
        _replace_modules(model, {PartiallyConnectedConv: lambda c3: _gemm_conv(c3.to_conv2d()), nn.Conv2d: _gemm_conv})
        widths = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
        self.channels_last = bool(widths) and min(widths) >= CHANNELS_LAST_MIN
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.compiled, self.precision, self.close_call = compile, precision, close_call
        self.chunks: dict[tuple[tuple[int, ...], str], int | None] = {}  # images per chunk, by image shape, precision
        # the compiled model, by input shape and dtype (inputs are made contiguous in the model's layout)
        self.compiled_for: dict[tuple[tuple[int, ...], torch.dtype], Callable[[torch.Tensor], torch.Tensor]] = {}
        self.recomputed = 0  # bf16: images computed again in fp32 (close calls), so far

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            out = self._in_chunks(x, self.precision, self._run)
            if self.precision == "bf16" and self.close_call is not None and out.dim() == 2 and out.shape[1] > 1:
                close = close_calls(out, self.close_call)
                if close.any():  # the uncompiled fp32 model: no compiling for each number of close calls
                    out[close] = self._in_chunks(x[close], "fp32", lambda part: self.model(self._layout(part)))
                    self.recomputed += int(close.sum())
            return out

    def _in_chunks(self, x: torch.Tensor, precision: str, run: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """`run` over `x` in chunks sized for the layers' maps in `precision` (bf16's are half the size)."""
        if x.device.type == "cpu" and x.dim() == 4:
            key = (tuple(x.shape[1:]), precision)
            if key not in self.chunks:
                with _in_precision(precision, x.device):
                    peak = peak_layer_bytes(self.model, self._layout(x[:1]))
                self.chunks[key] = chunk_size(peak, last_level_cache_bytes())
            chunk = self.chunks[key]
            if chunk is not None and len(x) > chunk:
                return torch.cat([run(part) for part in x.split(chunk)])
        return run(x)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return in_layout(x, self.channels_last and x.dim() == 4)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        x = self._layout(x)
        if not self.compiled:
            with _in_precision(self.precision, x.device):
                return self.model(x).float()
        key = (tuple(x.shape), x.dtype)
        if key not in self.compiled_for:
            self.compiled_for[key] = _compile(self.model, x, self.precision)
        return self.compiled_for[key](x).float()


def fast_inference(model: nn.Module, compile: bool = False, precision: str = "fp32",
                   close_call: float | None = CLOSE_CALL) -> FastInference:
    """A copy of `model` prepared for fast inference in `precision` ("fp32" or "bf16"; see the module
    docstring); the model itself is left as it is. bf16 answers whose top two logits are nearer than
    `close_call` times the largest |logit| are computed again in fp32 (None: none are; what bf16
    alone costs)."""
    return FastInference(model, compile, precision, close_call)


def idle_cores() -> int:
    """The cores other processes leave idle: the logical CPUs less the one-minute load average, rounded,
    at least 1 (all of them where the load average is unknown)."""
    cpus = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return cpus
    return max(1, min(cpus, round(cpus - load)))
