"""Per-layer summary of a model: output shape and parameters of every leaf module, in call order.

Shapes are traced on the meta device, so even the largest model is summarized without allocating
its weights or running real arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass(frozen=True)
class LayerRow:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    trainable: int


def _output_shape(output: object) -> tuple[int, ...]:
    if isinstance(output, torch.Tensor):
        return tuple(output.shape)
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return tuple(output[0].shape)
    return ()


def summarize(model: nn.Module, input_size: tuple[int, ...], batch_size: int = 1) -> list[LayerRow]:
    """One row per leaf module that runs in ``model(x)`` for an input of `input_size` (C, H, W).

    The model is moved to the meta device for the trace; pass a copy if you still need its weights.
    A module called several times gets a row per call.
    """
    model = model.to("meta").eval()
    names = {module: name for name, module in model.named_modules()}
    rows: list[LayerRow] = []

    def record(module: nn.Module, _inputs: object, output: object) -> None:
        own = list(module.parameters(recurse=False))
        rows.append(LayerRow(
            name=names.get(module, "?"), kind=type(module).__name__, output_shape=_output_shape(output),
            params=sum(p.numel() for p in own), trainable=sum(p.numel() for p in own if p.requires_grad),
        ))

    hooks = [m.register_forward_hook(record) for m in model.modules()
             if not list(m.children()) or list(m.parameters(recurse=False))]
    try:
        with torch.no_grad():
            model(torch.zeros(batch_size, *input_size, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return rows
