"""What the layers compute: first-layer filters, the feature maps of an image, and the training
patches that excite a channel most (Zeiler & Fergus 2014, Sec. 4, Fig. 2).

These functions return arrays; :mod:`dcnn.visualize.figures` draws them. Grids are built as one
mosaic (:func:`mosaic`): tiles of equal size separated by `pad` pixels of `fill`, row by row.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn as nn

from dcnn.data.preprocess import Preprocess
from dcnn.errors import DcnnError
from dcnn.visualize.attribution import (
    LayerOutput,
    attribution_mode,
    feature_layers,
    forward_hooks,
    map_layer,
    resolve_layer,
)

# The number of patches per channel, and the channels shown when none is chosen (Fig. 2 shows 9
# patches for each of a few channels per layer).
TOP_K = 9
DEFAULT_CHANNELS = 16


def mosaic(tiles: torch.Tensor, columns: int, pad: int = 1, fill: float = 1.0) -> torch.Tensor:
    """Tiles (N, C, h, w) laid out row by row in a grid of `columns`: a (C, H, W) image with
    H = rows·(h + pad) + pad and W = columns·(w + pad) + pad, rows = ceil(N / columns); tile i sits
    at row i // columns, column i % columns; the separators and empty cells are `fill`."""
    count, channels, height, width = tiles.shape
    rows = math.ceil(count / columns)
    grid = tiles.new_full((channels, rows * (height + pad) + pad, columns * (width + pad) + pad), fill)
    for index in range(count):
        top, left = pad + (index // columns) * (height + pad), pad + (index % columns) * (width + pad)
        grid[:, top:top + height, left:left + width] = tiles[index]
    return grid


def grid_columns(count: int) -> int:
    """Columns of a near-square grid of `count` tiles."""
    return max(1, math.ceil(math.sqrt(count)))


def first_conv(model: nn.Module, inputs: torch.Tensor) -> LayerOutput:
    """The first convolution the input meets: the model's configured ``first_conv`` when it names a
    module, else the first ``nn.Conv2d`` to run in ``forward_features``."""
    named = getattr(getattr(model, "default_cfg", None), "first_conv", None)
    if named and named in dict(model.named_modules()):
        return map_layer(model, inputs, named)
    found = next((r for r in feature_layers(model, inputs[:1]) if isinstance(r.module, nn.Conv2d)), None)
    if found is None:
        raise DcnnError("the model has no nn.Conv2d layer; there are no filters to draw.")
    return found


def filter_weights(model: nn.Module, inputs: torch.Tensor, layer: nn.Module | str | None = None
                   ) -> tuple[str, torch.Tensor]:
    """The name and weights (out, in, kh, kw) of a convolution whose filters read the image's 1 or 3
    channels (default: the first convolution), as drawn in Zeiler & Fergus 2014, Fig. 5-6."""
    name, module = (first_conv(model, inputs).name, None) if layer is None else resolve_layer(model, layer)
    module = module or dict(model.named_modules())[name]
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        raise DcnnError(f"layer {name!r} ({type(module).__name__}) is not a convolution; give a layer with "
                        "4-D filters, e.g. the first convolution (the default).")
    if weight.shape[1] not in (1, 3):
        raise DcnnError(f"layer {name!r} reads {weight.shape[1]} channels; its filters can be drawn as images only "
                        "when they read 1 (grey) or 3 (RGB) channels, as the first convolution does.")
    return name, weight.detach()


def feature_maps(model: nn.Module, inputs: torch.Tensor, layer: nn.Module | str | None = None
                 ) -> tuple[str, torch.Tensor]:
    """The name and the output (N, C, h, w) of a layer of ``forward_features`` for `inputs`
    (default: the first convolution)."""
    target = first_conv(model, inputs) if layer is None else map_layer(model, inputs, layer)
    return target.name, _layer_output(model, inputs, target.module)


class _Stop(Exception):
    """Raised by a forward hook once the wanted layer has run: the layers above need not."""


def _layer_output(model: nn.Module, inputs: torch.Tensor, module: nn.Module) -> torch.Tensor:
    captured: list[torch.Tensor] = []

    def capture(_module: nn.Module, _args: tuple, output: torch.Tensor) -> None:
        captured.append(output)
        raise _Stop

    with contextlib.suppress(_Stop), attribution_mode(model), forward_hooks([(module, capture)]), torch.no_grad():
        model.forward_features(inputs)
    return captured[0]


@dataclass(frozen=True)
class Field:
    """The receptive field of a layer's units in input pixels (height, width): unit (i, j) sees the
    `size` pixels centred on start + (i, j)·jump (Araujo et al. 2019, eqs. 1-3)."""

    size: tuple[int, int]
    jump: tuple[float, float]
    start: tuple[float, float]

    def window(self, row: int, column: int) -> tuple[int, int]:
        """The (top, left) input pixel of unit (row, column)'s field (may lie outside the image)."""
        return (math.floor(self.start[0] + row * self.jump[0] - (self.size[0] - 1) / 2 + 0.5),
                math.floor(self.start[1] + column * self.jump[1] - (self.size[1] - 1) / 2 + 0.5))


def receptive_field(model: nn.Module, inputs: torch.Tensor, layer: nn.Module | str) -> Field:
    """The receptive field of `layer`'s output, traced on a copy of the model on the meta device
    (:func:`dcnn.analysis.summary.summarize`)."""
    from dcnn.analysis.summary import summarize

    target = map_layer(model, inputs, layer)
    rows = summarize(copy.deepcopy(model), tuple(inputs.shape[1:])).rows
    row = next((r for r in reversed(rows) if r.name == target.computed_by and r.field is not None), None)
    if row is None:
        raise DcnnError(f"the receptive field of layer {target.name!r} is not known (its output is not made by "
                        "a layer with a spatial field); choose one of its sub-layers.")
    size = tuple(math.ceil(v) for v in row.field.size)
    return Field(size, row.field.jump, row.field.start)  # type: ignore[arg-type]


def cut_patch(image: torch.Tensor, field: Field, row: int, column: int, fill: float = 0.0) -> torch.Tensor:
    """The pixels (C, size) of `image` (C, H, W) under unit (row, column)'s field; parts outside
    the image (the network's padding) are `fill`."""
    top, left = field.window(row, column)
    height, width = field.size
    patch = image.new_full((image.shape[0], height, width), fill)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + height, image.shape[1]), min(left + width, image.shape[2])
    if y0 < y1 and x0 < x1:
        patch[:, y0 - top:y1 - top, x0 - left:x1 - left] = image[:, y0:y1, x0:x1]
    return patch


@dataclass(frozen=True)
class TopPatches:
    """Per chosen channel, the `k` training images whose strongest activation of it is highest:
    `values` (channels, k), highest first; `images` (channels, k), the index of each image in the
    order read; `positions` (channels, k, 2), the (row, column) of the activation; `patches`
    (channels, k, C, h, w), the image pixels in [0, 1] under its receptive field."""

    layer: str
    channels: list[int]
    values: torch.Tensor
    images: torch.Tensor
    positions: torch.Tensor
    patches: torch.Tensor
    field: Field
    images_read: int


def top_patches(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    preprocess: Preprocess,
    layer: nn.Module | str | None = None,
    channels: list[int] | None = None,
    k: int = TOP_K,
    max_images: int | None = None,
) -> TopPatches:
    """The `k` highest activations of each channel over the images of `batches` (uint8 (N, C, H, W)
    at the model's input size, as training stores them), one per image, with the patch under each
    activation's receptive field (Zeiler & Fergus 2014, Fig. 2).

    `layer` defaults to the last map larger than 1x1; `channels` to the first 16 (or all, if fewer);
    `max_images` stops after that many images (None: all).
    """
    probe = preprocess.normalize(torch.zeros(1, *preprocess.input_size, device=_device(model)))
    target = map_layer(model, probe, layer)
    count = target.shape[1]
    chosen = list(range(min(DEFAULT_CHANNELS, count))) if channels is None else list(channels)
    bad = [c for c in chosen if not 0 <= c < count]
    if bad:
        raise DcnnError(f"channel {bad[0]} is out of range: layer {target.name!r} has {count} channels "
                        f"(0 to {count - 1}).")
    field = receptive_field(model, probe, target.module)
    index = torch.tensor(chosen, device=probe.device)
    best_values = torch.empty(0, len(chosen))
    best_images = torch.empty(0, len(chosen), dtype=torch.long)
    best_positions = torch.empty(0, len(chosen), 2, dtype=torch.long)
    best_patches = torch.empty(0, len(chosen), preprocess.input_size[0], *field.size)
    seen = 0
    for batch in batches:
        if max_images is not None:
            batch = batch[:max_images - seen]
        if not len(batch):
            break
        pixels = batch.to(probe.device).float().div_(255.0)
        maps = _layer_output(model, preprocess.normalize(pixels), target.module)[:, index]
        width = maps.shape[-1]
        values, flat = maps.flatten(2).max(dim=2)  # (N, channels): each image's strongest activation
        keep = min(k, len(batch))
        top_values, top_rows = values.topk(keep, dim=0)  # (keep, channels)
        patches = torch.stack([torch.stack([
            cut_patch(pixels[int(top_rows[i, c])], field, int(flat[top_rows[i, c], c]) // width,
                      int(flat[top_rows[i, c], c]) % width) for c in range(len(chosen))]) for i in range(keep)])
        positions = torch.stack((flat // width, flat % width), dim=-1).gather(
            0, top_rows.unsqueeze(-1).expand(-1, -1, 2))
        best_values = torch.cat([best_values, top_values.cpu()])
        best_images = torch.cat([best_images, top_rows.cpu() + seen])
        best_positions = torch.cat([best_positions, positions.cpu()])
        best_patches = torch.cat([best_patches, patches.cpu()])
        order = best_values.topk(min(k, len(best_values)), dim=0).indices  # (k, channels)
        columns = torch.arange(len(chosen))
        best_values, best_images = best_values[order, columns], best_images[order, columns]
        best_positions, best_patches = best_positions[order, columns], best_patches[order, columns]
        seen += len(batch)
        if max_images is not None and seen >= max_images:
            break
    if seen == 0:
        raise DcnnError("no training image was read; the run's training split is empty.")
    return TopPatches(target.name, chosen, best_values.T, best_images.T, best_positions.transpose(0, 1),
                      best_patches.transpose(0, 1), field, seen)


def _device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))
