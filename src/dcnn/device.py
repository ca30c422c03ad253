"""The device a command runs on: `auto` (CUDA when present, else the CPU) or one the user names;
whether it computes bfloat16 natively; how the CPU's allocator keeps freed tensor memory."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import torch

from dcnn.errors import DcnnError


def resolve_device(name: str) -> torch.device:
    """`name` as a torch device ("auto", "cpu", "cuda", "cuda:N"); DcnnError for an unknown name or
    for CUDA on a machine without it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DcnnError(f"unknown device {name!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DcnnError(f"device {name!r} requested but CUDA is not available; use --device cpu.")
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 natively: CUDA GPUs that support it, CPUs with AVX-512 BF16
    or AMX. Elsewhere (AVX2-only CPUs) bf16 is emulated and several times slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
KEEP_FREED_BYTES = 1 << 30


def reuse_freed_memory() -> bool:
    """Let glibc serve large CPU tensors from its heap and keep up to 1 GiB of freed memory there,
    instead of mapping fresh pages for each and returning them when freed. A training step frees and
    allocates the same large activations every step; by default each comes back as new pages that
    the kernel faults in and zeroes (on a 2-core Zen 4, 190,000-800,000 page faults and 19-36% of
    the time in the kernel for an airbench94 step of 1,024-2,000 images; 1.2-1.5x faster without
    them: BENCHMARKS.md). Process-wide; False where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES))
