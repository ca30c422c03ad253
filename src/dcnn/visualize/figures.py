"""Figures of what a trained network sees, one per method, as labelled PNGs with colour bars: the
library side of `dcnn visualize` (:func:`visualize_file`).

An image is prepared with the model file's saved :class:`~dcnn.data.preprocess.Preprocess`, as
`dcnn predict` prepares it; maps are drawn over the fitted image before normalization (what the
model sees, in its own pixels). Figures are drawn with matplotlib's object-oriented Agg API (no
pyplot state, no GUI backend) and written all or nothing.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from dcnn.data.images import open_image
from dcnn.data.preprocess import Preprocess
from dcnn.device import resolve_device
from dcnn.errors import DcnnError, did_you_mean
from dcnn.evaluate.run import class_names_of, model_file_of, preprocess_of
from dcnn.fileio import atomic_output
from dcnn.models.modelfile import load_model_file
from dcnn.visualize import attribution, deconvnet, features
from dcnn.visualize.inspect import in_sequence

PANEL_INCHES = 3.2
DPI = 100
# Images read for the top-9 patches unless told otherwise (Zeiler & Fergus scan the whole
# training set; a first look needs far fewer).
DEFAULT_MAX_IMAGES = 10_000
MAX_FEATURE_MAPS = 64
TRAINING_BATCH = 500


@dataclass(frozen=True)
class Method:
    description: str
    needs_image: bool
    options: frozenset[str]  # which of layer, channel, target, max_images apply

    def accepts(self, option: str) -> bool:
        """Whether `option` applies; invert applies to every method that reads an image."""
        return option in self.options or (option == "invert" and self.needs_image)


METHODS: dict[str, Method] = {
    "gradcam": Method("Grad-CAM heat map of a class over the image (Selvaraju et al. 2017)", True,
                      frozenset({"layer", "target"})),
    "saliency": Method("magnitude of the class score's gradient per pixel (Simonyan et al. 2014)", True,
                       frozenset({"target"})),
    "guided_backprop": Method("the class score's gradient through ReLUs that pass only positive signals "
                              "(Springenberg et al. 2015)", True, frozenset({"target"})),
    "deconvnet": Method("one feature map's strongest activation projected back to pixels "
                        "(Zeiler & Fergus 2014, Sec. 2.1)", True, frozenset({"layer", "channel"})),
    "occlusion": Method("drop in the class's probability as a grey square covers each part "
                        "(Zeiler & Fergus 2014, Sec. 4.2)", True, frozenset({"target"})),
    "filters": Method("the first convolution's filters as images (Zeiler & Fergus 2014, Fig. 5)", False,
                      frozenset({"layer"})),
    "features": Method("a layer's feature maps for the image (default: the first convolution)", True,
                       frozenset({"layer", "channel"})),
    "top9": Method("the 9 training patches that excite each channel most (Zeiler & Fergus 2014, Fig. 2)",
                   False, frozenset({"layer", "channel", "max_images"})),
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise DcnnError(f"unknown method {name!r}.{did_you_mean(name, METHODS)} Choose one of: {', '.join(METHODS)}.")
    return METHODS[name]


def check_options(method: str, image: object, options: dict[str, Any]) -> Method:
    """The method, after refusing an image it does not read, a missing one, and options that do not apply."""
    spec = get_method(method)
    if spec.needs_image and image is None:
        raise DcnnError(f"--method {method} draws over an image; give the path of one after the model.")
    if not spec.needs_image and image is not None:
        raise DcnnError(f"--method {method} draws the model alone and reads no image; leave the image out.")
    for option, value in options.items():
        if value is not None and not spec.accepts(option):
            users = [m for m, s in METHODS.items() if s.accepts(option)]
            flag = "--" + option.replace("_", "-")
            raise DcnnError(f"{flag} does not apply to --method {method}; it applies to {', '.join(users)}.")
    return spec


@dataclass
class _Context:
    """A loaded model file and, for methods that read an image, the image: fitted `pixels` (C, H, W)
    in [0, 1] and the model `inputs` (1, C, H, W)."""

    model: torch.nn.Module
    meta: dict[str, Any]
    names: list[str]
    model_file: Path
    prep: Preprocess
    device: torch.device
    pixels: torch.Tensor | None = None
    inputs: torch.Tensor | None = None

    def probe(self) -> torch.Tensor:
        """A blank model input, for methods that need the layers' shapes but read no image."""
        return self.prep.normalize(torch.zeros(1, *self.prep.input_size, device=self.device))

    def class_index(self, target: str | int | None) -> int | None:
        if target is None or isinstance(target, int):
            if target is not None and not 0 <= target < len(self.names):
                raise DcnnError(f"--target {target} is out of range: the model has {len(self.names)} classes "
                                f"(0 to {len(self.names) - 1}).")
            return target
        if target in self.names:
            return self.names.index(target)
        if target.isdigit():
            return self.class_index(int(target))
        raise DcnnError(f"--target {target!r} is not a class of this model.{did_you_mean(target, self.names)} "
                        f"Give a class name or index: {', '.join(self.names[:20])}"
                        f"{' ...' if len(self.names) > 20 else ''}.")

    def prediction(self, index: int | None = None) -> tuple[int, float]:
        """The predicted class (or `index`) and its probability."""
        with torch.no_grad():
            probs = self.model(self.inputs).softmax(dim=1)[0]
        chosen = int(probs.argmax()) if index is None else index
        return chosen, float(probs[chosen])


def _figure(panels: int, rows: int = 1, width: float = PANEL_INCHES, height: float = PANEL_INCHES) -> tuple:
    figure = Figure(figsize=(width * panels, height * rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(rows, panels, squeeze=False)


def _show(axes: Any, pixels: torch.Tensor, title: str, **kwargs: Any) -> Any:
    """Draw (1 or 3, H, W) pixels (grey maps with `kwargs`' colormap and range) without ticks."""
    array = pixels.detach().float().cpu()
    shown = axes.imshow(array[0].numpy() if array.shape[0] == 1 else array.permute(1, 2, 0).numpy(),
                        interpolation="nearest", **({"cmap": "gray", "vmin": 0.0, "vmax": 1.0} | kwargs))
    axes.set_title(title, fontsize=8)
    axes.set_xticks([])
    axes.set_yticks([])
    return shown


def _colorbar(figure: Figure, axes: Any, cmap: str, low: float, high: float, label: str) -> None:
    figure.colorbar(ScalarMappable(Normalize(low, high), cmap), ax=axes, shrink=0.8, label=label)


def _save(figure: Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    with atomic_output(path) as handle:
        handle.write(buffer.getvalue())
    return Path(path)


def _input_panel(figure: Figure, axes: Any, ctx: _Context, cls: int | None = None) -> int:
    """The fitted image, titled with the prediction (and the class explained, if another); returns
    the class explained."""
    predicted, p = ctx.prediction()
    chosen = predicted if cls is None else cls
    title = f"input: predicted {ctx.names[predicted]} ({p:.2f})"
    if chosen != predicted:
        title += f"\nexplaining {ctx.names[chosen]} ({ctx.prediction(chosen)[1]:.2f})"
    _show(axes, ctx.pixels, title)
    return chosen


def _heat_panel(figure: Figure, axes: Any, ctx: _Context, heat: torch.Tensor, title: str, label: str) -> None:
    """A [0, 1] map as a jet heat map over the image, with its colour bar."""
    overlay = attribution.overlay_heatmap(ctx.pixels, heat)
    axes.imshow(np.asarray(overlay), interpolation="nearest")
    axes.set_title(title, fontsize=8)
    axes.set_xticks([])
    axes.set_yticks([])
    _colorbar(figure, axes, "jet", 0.0, 1.0, label)


def signed_image(values: torch.Tensor) -> torch.Tensor:
    """A signed map (C, H, W) as pixels in [0, 1]: 0.5 is zero and 0 or 1 the largest magnitude, as
    gradients and deconvnet projections are usually shown."""
    peak = float(values.abs().max())
    return values / (2.0 * peak) + 0.5 if peak > 0 else torch.full_like(values, 0.5)


def magnitude(values: torch.Tensor) -> torch.Tensor:
    """(C, H, W) → (H, W): the largest magnitude over channels, divided by its maximum (Simonyan et al.
    2014, Sec. 3.1)."""
    heat = values.abs().amax(dim=0)
    peak = float(heat.max())
    return heat / peak if peak > 0 else heat


def _gradcam(ctx: _Context, layer: str | None, target: int | None, **_: Any) -> Figure:
    found = attribution.map_layer(ctx.model, ctx.inputs, layer)
    figure, grid = _figure(2)
    cls = _input_panel(figure, grid[0][0], ctx, target)
    heat = attribution.grad_cam(ctx.model, ctx.inputs, cls, found.module)[0]
    note = "" if float(heat.max()) > 0 else "\nzero everywhere: no positive evidence here"
    _heat_panel(figure, grid[0][1], ctx, heat, f"Grad-CAM of {ctx.names[cls]}\nlayer {found.name} "
                f"({found.shape[2]}x{found.shape[3]}){note}", "relative importance")
    return figure


def _signed_panels(figure: Figure, grid: Any, ctx: _Context, values: torch.Tensor, title: str, name: str) -> None:
    """Panels 2 and 3 of a signed map in pixel space (C, H, W): the map as an image, and its
    magnitude as a heat map over the image."""
    _show(grid[0][1], signed_image(values), title)
    _heat_panel(figure, grid[0][2], ctx, magnitude(values), f"|{name}|, max over channels", "magnitude / maximum")


def _saliency(ctx: _Context, target: int | None, **_: Any) -> Figure:
    figure, grid = _figure(2)
    cls = _input_panel(figure, grid[0][0], ctx, target)
    heat = magnitude(attribution.saliency(ctx.model, ctx.inputs, cls)[0])
    _show(grid[0][1], heat[None], f"saliency of {ctx.names[cls]}: |d score / d pixel|", cmap="hot")
    _colorbar(figure, grid[0][1], "hot", 0.0, 1.0, "max over channels / maximum")
    return figure


def _guided(ctx: _Context, target: int | None, **_: Any) -> Figure:
    figure, grid = _figure(3)
    cls = _input_panel(figure, grid[0][0], ctx, target)
    values = attribution.guided_backprop(ctx.model, ctx.inputs, cls)[0]
    _signed_panels(figure, grid, ctx, values, f"guided backprop of {ctx.names[cls]}\n(grey = 0)", "guided backprop")
    return figure


def _deconvnet(ctx: _Context, layer: str | None, channel: int | None, **_: Any) -> Figure:
    projection = deconvnet.deconvnet(ctx.model, ctx.inputs, layer, channel)
    field = features.receptive_field(ctx.model, ctx.inputs, projection.layer)
    figure, grid = _figure(3)
    _input_panel(figure, grid[0][0], ctx)
    (row, column), (height, width) = projection.position[0].tolist(), field.size
    top, left = field.window(row, column)
    grid[0][0].add_patch(Rectangle((left - 0.5, top - 0.5), width, height, fill=False, edgecolor="lime",
                                   linewidth=1.5))
    _signed_panels(figure, grid, ctx, projection.pixels[0],
                   f"deconvnet: {projection.layer}, channel {int(projection.channel[0])}\nactivation "
                   f"{float(projection.activation[0]):.3g} at ({row}, {column}); field {height}x{width} (green)",
                   "projection")
    return figure


def _occlusion(ctx: _Context, target: int | None, **_: Any) -> Figure:
    figure, grid = _figure(2)
    cls = _input_panel(figure, grid[0][0], ctx, target)
    drop = attribution.occlusion(ctx.model, ctx.inputs, cls)[0]
    bound = max(float(drop.abs().max()), 1e-6)
    _show(grid[0][1], drop[None], f"occlusion: drop in p({ctx.names[cls]})\nwhen a grey square covers the pixel",
          cmap="RdBu_r", vmin=-bound, vmax=bound)
    _colorbar(figure, grid[0][1], "RdBu_r", -bound, bound, "probability drop")
    return figure


def _row_ticks(axes: Any, count: int, columns: int, tile: int, pad: int, what: str) -> None:
    """Label each row of a mosaic with the index of its first tile."""
    rows = math.ceil(count / columns)
    axes.set_yticks([pad + r * (tile + pad) + tile / 2 for r in range(rows)],
                    [f"{what} {r * columns}" for r in range(rows)], fontsize=7)
    axes.set_xticks([])


def _filters(ctx: _Context, layer: str | None, **_: Any) -> Figure:
    name, weight = features.filter_weights(ctx.model, ctx.probe(), layer)
    weight = weight.float().cpu()
    columns = features.grid_columns(len(weight))
    bound = float(weight.abs().max()) or 1.0
    grey = weight.shape[1] == 1
    tiles = weight if grey else signed_image(weight)
    grid_image = features.mosaic(tiles, columns, fill=bound if grey else 1.0)
    side = min(12.0, max(4.0, 0.45 * columns * weight.shape[-1] / 5))
    figure, grid = _figure(1, width=side, height=side)
    axes = grid[0][0]
    title = (f"{name}: {len(weight)} filters of {weight.shape[1]}x{weight.shape[2]}x{weight.shape[3]}"
             + ("" if grey else " (RGB; grey = 0, full colour = largest |weight|)"))
    if grey:
        _show(axes, grid_image, title, cmap="gray", vmin=-bound, vmax=bound)
        _colorbar(figure, axes, "gray", -bound, bound, "weight")
    else:
        _show(axes, grid_image, title)
    _row_ticks(axes, len(weight), columns, weight.shape[-2], 1, "filter")
    return figure


def _features(ctx: _Context, layer: str | None, channel: int | None, **_: Any) -> Figure:
    name, maps = features.feature_maps(ctx.model, ctx.inputs, layer)
    maps = maps[0].float().cpu()
    if channel is not None and not 0 <= channel < len(maps):
        raise DcnnError(f"channel {channel} is out of range: layer {name!r} has {len(maps)} channels "
                        f"(0 to {len(maps) - 1}).")
    shown = maps[channel:channel + 1] if channel is not None else maps[:MAX_FEATURE_MAPS]
    low, high = min(float(shown.min()), 0.0), max(float(shown.max()), 1e-6)
    columns = features.grid_columns(len(shown))
    figure, grid = _figure(2, width=PANEL_INCHES * (1 if channel is not None else 1.6))
    _input_panel(figure, grid[0][0], ctx)
    axes = grid[0][1]
    what = f"channel {channel}" if channel is not None else (
        f"channels 0-{len(shown) - 1} of {len(maps)}" if len(shown) < len(maps) else f"all {len(maps)} channels")
    _show(axes, features.mosaic(shown[:, None], columns, fill=math.nan), f"{name}: {what}, "
          f"{maps.shape[1]}x{maps.shape[2]}", cmap="viridis", vmin=low, vmax=high)
    _colorbar(figure, axes, "viridis", low, high, "activation")
    if channel is None:
        _row_ticks(axes, len(shown), columns, maps.shape[1], 1, "ch")
    return figure


def _top9(ctx: _Context, layer: str | None, channel: int | None, max_images: int | None,
          **_: Any) -> Figure:
    top = features.top_patches(ctx.model, _training_images(ctx.model_file, ctx.device), ctx.prep, layer,
                               None if channel is None else [channel],
                               max_images=DEFAULT_MAX_IMAGES if max_images is None else max_images)
    count = len(top.channels)
    columns = features.grid_columns(count)
    rows = math.ceil(count / columns)
    figure, grid = _figure(columns, rows, width=2.2, height=2.4)
    fill = 1.0
    for index, axes in enumerate(grid.flat):
        if index >= count:
            axes.set_axis_off()
            continue
        block = features.mosaic(top.patches[index], 3, fill=fill)
        _show(axes, block, f"channel {top.channels[index]}: {float(top.values[index, 0]):.3g} ... "
              f"{float(top.values[index, -1]):.3g}")
    figure.suptitle(f"top {top.values.shape[1]} training patches per channel, {top.layer} "
                    f"(field {top.field.size[0]}x{top.field.size[1]}), of {top.images_read} images", fontsize=9)
    return figure


def _training_images(model_file: Path, device: torch.device) -> Any:
    """The run's training images, uint8 batches at the model's input size, in the order the run holds them."""
    from dcnn.models import get_model_cfg
    from dcnn.train.config import make_config
    from dcnn.train.trainer import prepare_data

    config = model_file.parent / "config.yaml"
    if not config.is_file():
        raise DcnnError(f"{model_file.parent} has no config.yaml; top9 reads the run's training images: give the "
                        "run directory the model was trained in.")
    cfg = make_config({**yaml.safe_load(config.read_text()), "progress": False})
    data = prepare_data(cfg, get_model_cfg(cfg.model), device)
    return (images for images, _ in in_sequence(data.train, TRAINING_BATCH))


_DRAW: dict[str, Callable[..., Figure]] = {
    "gradcam": _gradcam, "saliency": _saliency, "guided_backprop": _guided, "deconvnet": _deconvnet,
    "occlusion": _occlusion, "filters": _filters, "features": _features, "top9": _top9,
}


def visualize_figure(
    source: str | Path,
    image: str | Path | None,
    method: str,
    *,
    layer: str | None = None,
    channel: int | None = None,
    target: str | int | None = None,
    max_images: int | None = None,
    invert: bool = False,
    device: str = "auto",
) -> Figure:
    """`method`'s figure (one of :data:`METHODS`) for a model file or run directory `source` and an
    image file (None for "filters" and "top9").

    `layer` names a module (``model.named_modules()``), `channel` a feature map of it, `target` a
    class by name or index (default: the predicted class), `max_images` how many training images
    "top9" reads (default 10,000); `invert` flips dark-on-light images first, as `dcnn predict
    --invert`. Options that do not apply to the method are refused.
    """
    spec = check_options(method, image, {"layer": layer, "channel": channel, "target": target,
                                         "max_images": max_images, "invert": invert or None})
    if max_images is not None and max_images < 1:
        raise DcnnError(f"--max-images {max_images}: read at least 1 training image.")
    dev = resolve_device(device)
    model_file = model_file_of(source)
    model, meta = load_model_file(model_file, dev)
    ctx = _Context(model, meta, class_names_of(model, meta), model_file, preprocess_of(meta, invert), dev)
    if spec.needs_image:
        ctx.pixels = ctx.prep.pixels(open_image(image)).to(dev)
        ctx.inputs = ctx.prep.normalize(ctx.pixels[None])
    return _DRAW[method](ctx, layer=layer, channel=channel, target=ctx.class_index(target), max_images=max_images)


def visualize_file(source: str | Path, image: str | Path | None, method: str, out: str | Path,
                   **options: Any) -> Path:
    """Draw :func:`visualize_figure` (same arguments and options) into the PNG `out`, written all or
    nothing; returns its path."""
    return _save(visualize_figure(source, image, method, **options), Path(out))
