"""The device a command runs on: `auto` (CUDA when present, else the CPU) or one the user names;
whether it computes bfloat16 natively."""

from __future__ import annotations

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
