"""Which pixels a prediction rests on: Grad-CAM, saliency, guided backprop, occlusion sensitivity,
and heat maps drawn over the image.

Every function takes any dcnn model (an :class:`~dcnn.models._base.ImageClassifier`) and a batch
of model inputs (N, C, H, W), as :class:`~dcnn.data.preprocess.Preprocess` prepares them, and works
through the uniform model interface: layers are named as in ``model.named_modules()``, and the
default Grad-CAM layer is found by running ``forward_features`` with forward hooks.

- Grad-CAM (Selvaraju et al. 2017, Sec. 3, eq. 1-2): the weight of map k is the spatial mean of
  the class score's gradient, alpha_k = mean_ij dy/dA^k_ij, and the map is ReLU(sum_k alpha_k A^k),
  upsampled to the input and scaled to [0, 1] per image (captum's LayerGradCam).
- Saliency (Simonyan et al. 2014, Sec. 3.1): the magnitude of the class score's gradient with
  respect to the input pixels, |dy/dx| (captum's Saliency).
- Guided backprop (Springenberg et al. 2015, Sec. 3.4): the input gradient with the backward pass
  of every ReLU module keeping only positive gradients at positive inputs (captum's GuidedBackprop).
- Occlusion sensitivity (Zeiler & Fergus 2014, Sec. 4.2): a grey square (the baseline 0 of
  normalized input: the training mean) slides over the image and the drop in the class's
  probability is recorded at each position (captum's Occlusion).

Class scores are the model's logits (the unnormalized scores of Simonyan et al.), except for
occlusion, which follows Zeiler & Fergus in measuring the softmax probability.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from dcnn.errors import DcnnError, did_you_mean


@dataclass(frozen=True)
class LayerOutput:
    """A module that ran in a forward pass and the shape of its (first) output tensor."""

    name: str
    module: nn.Module
    shape: tuple[int, ...]
    computed_by: str  # the innermost module that returned this tensor (itself, or a child)


@contextmanager
def attribution_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode with every in-place ReLU made out-of-place (attribution hooks read a
    ReLU's input and output, which an in-place ReLU overwrites); restored afterwards."""
    was_training = model.training
    in_place = [m for m in model.modules() if isinstance(m, nn.ReLU) and m.inplace]
    model.eval()
    for module in in_place:
        module.inplace = False
    try:
        yield model
    finally:
        for module in in_place:
            module.inplace = True
        model.train(was_training)


@contextmanager
def forward_hooks(hooks: Iterable[tuple[nn.Module, Callable[..., object]]]) -> Iterator[None]:
    """Forward hooks registered on their modules (in this order) for the duration of the block."""
    handles = [module.register_forward_hook(hook) for module, hook in hooks]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _first_tensor(output: object) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def feature_layers(model: nn.Module, inputs: torch.Tensor) -> list[LayerOutput]:
    """The modules that ``forward_features`` runs, in the order they finish, with their output shapes.

    A module that returns the very tensor one of its children returned (a Sequential and its last
    layer) comes right after that child; a module that runs twice is listed twice.
    """
    records: list[tuple[str, nn.Module, torch.Tensor]] = []

    def hook(name: str):
        def record(module: nn.Module, args: tuple, output: object) -> None:
            tensor = _first_tensor(output)
            if tensor is not None:
                records.append((name, module, tensor))
        return record

    with forward_hooks((m, hook(n)) for n, m in model.named_modules() if n), torch.no_grad():
        model.forward_features(inputs)
    # The innermost module that computed a tensor is the first to finish with it.
    first = {}
    for name, _, tensor in records:
        first.setdefault(id(tensor), name)
    return [LayerOutput(name, module, tuple(t.shape), first[id(t)]) for name, module, t in records]


def resolve_layer(model: nn.Module, layer: nn.Module | str) -> tuple[str, nn.Module]:
    """A layer given by name (as in ``model.named_modules()``) or as a module of the model."""
    modules = dict(model.named_modules())
    if isinstance(layer, str):
        if layer not in modules or not layer:
            raise DcnnError(f"the model has no layer {layer!r}.{did_you_mean(layer, modules)} "
                            "List the layer names with `dcnn summary MODEL`.")
        return layer, modules[layer]
    for name, module in modules.items():
        if module is layer and name:
            return name, module
    raise DcnnError(f"{type(layer).__name__} is not a layer of this model; give one of model.named_modules().")


def map_layer(model: nn.Module, inputs: torch.Tensor, layer: nn.Module | str | None = None) -> LayerOutput:
    """A layer inside ``forward_features`` that outputs a feature map (N, C, H, W), by module or name.

    None takes the last module whose output is a 4-D map larger than 1x1: the last convolutional
    map that still has a spatial layout (the Grad-CAM layer of Selvaraju et al. 2017, Sec. 3).
    """
    records = feature_layers(model, inputs[:1])
    if layer is None:
        maps = [r for r in records if len(r.shape) == 4 and r.shape[2] * r.shape[3] > 1]
        if not maps:
            raise DcnnError("the model's forward_features produces no feature map larger than 1x1 at this input "
                            "size; give a larger input.")
        last = maps[-1]
        return next(r for r in records if r.name == last.computed_by)
    name, module = resolve_layer(model, layer)
    found = next((r for r in reversed(records) if r.module is module), None)
    if found is None or len(found.shape) != 4:
        shape = "nothing inside forward_features" if found is None else f"shape {found.shape}"
        raise DcnnError(f"layer {name!r} outputs {shape}, not a feature map (N, C, H, W); choose a "
                        "convolutional layer of forward_features (`dcnn summary MODEL` lists them).")
    return found


def _targets(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor | int | None) -> torch.Tensor:
    """Class indices (N,): the given ones, or the predicted classes when `target` is None."""
    if target is None:
        with torch.no_grad():
            return model(inputs).argmax(dim=1)
    classes = torch.as_tensor(target, device=inputs.device).long().reshape(-1).expand(inputs.shape[0])
    num_classes = getattr(model, "num_classes", None)
    if num_classes and (int(classes.min()) < 0 or int(classes.max()) >= num_classes):
        raise DcnnError(f"target class {int(classes.max()) if int(classes.min()) >= 0 else int(classes.min())} "
                        f"is out of range: the model has {num_classes} classes (0 to {num_classes - 1}).")
    return classes


def _scale_per_image(maps: torch.Tensor) -> torch.Tensor:
    """(N, H, W) maps of non-negative values divided by each map's maximum (all-zero maps stay 0)."""
    peak = maps.flatten(1).amax(dim=1).clamp_min(torch.finfo(maps.dtype).tiny).view(-1, 1, 1)
    return maps / peak


def grad_cam(
    model: nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor | int | None = None,
    layer: nn.Module | str | None = None,
) -> torch.Tensor:
    """Grad-CAM heat maps (N, H, W) in [0, 1] at the input's resolution.

    `target` is a class index (or one per image); None explains the predicted class. `layer` is a
    module of the model or its name; None takes the last map larger than 1x1 (:func:`map_layer`).
    The class-discriminative map ReLU(sum_k alpha_k A^k) (Selvaraju et al. 2017, eq. 2) is upsampled
    bilinearly to the input size and divided by its maximum per image (a map that is zero everywhere
    stays zero).
    """
    from captum.attr import LayerAttribution, LayerGradCam

    with attribution_mode(model):
        module = map_layer(model, inputs, layer).module
        classes = _targets(model, inputs, target)
        cam = LayerGradCam(model, module).attribute(inputs, target=classes, relu_attributions=True)
        cam = LayerAttribution.interpolate(cam.detach(), tuple(inputs.shape[-2:]), interpolate_mode="bilinear")
    return _scale_per_image(cam.sum(dim=1).clamp_min(0.0))


def require_relu(model: nn.Module, method: str) -> None:
    """Refuse `method` (guided backprop) for a model without ``nn.ReLU`` modules, where it would be
    the plain gradient."""
    if not any(isinstance(m, nn.ReLU) for m in model.modules()):
        raise DcnnError(f"{method} changes the backward pass of nn.ReLU layers, and this model has none (its "
                        "activations are of other kinds); use saliency or gradcam.")


def saliency(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor | int | None = None) -> torch.Tensor:
    """|d score / d input| (N, C, H, W) of the target class (None: the predicted class);
    Simonyan et al. 2014, Sec. 3.1, take the maximum over colour channels for the map."""
    from captum.attr import Saliency

    with attribution_mode(model):
        classes = _targets(model, inputs, target)
        x = inputs.detach().clone().requires_grad_(True)
        return Saliency(model).attribute(x, target=classes, abs=True).detach()


def guided_backprop(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor | int | None = None,
                    ) -> torch.Tensor:
    """The guided-backprop gradient (N, C, H, W) of the target class (None: the predicted class)."""
    from captum.attr import GuidedBackprop

    require_relu(model, "guided backprop")
    with attribution_mode(model):
        classes = _targets(model, inputs, target)
        x = inputs.detach().clone().requires_grad_(True)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
            return GuidedBackprop(model).attribute(x, target=classes).detach()


def occlusion(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor | int | None = None,
              window: int | None = None, stride: int | None = None) -> torch.Tensor:
    """Occlusion sensitivity (N, H, W): at each pixel, the mean drop of the target class's probability
    over the positions of a `window`-pixel grey square that covers it (None: the predicted class).

    `window` defaults to an eighth of the shorter side (at least 2 pixels: 4 on MNIST's 28, 28 on
    224), `stride` to half the window. Positive values: covering the pixel lowers the probability.
    """
    from captum.attr import Occlusion

    channels, height, width = inputs.shape[1:]
    window = window or max(2, math.ceil(min(height, width) / 8))
    stride = stride or max(1, window // 2)
    if not 1 <= window <= min(height, width) or stride < 1:
        raise DcnnError(f"the occluding window ({window}) must fit the {height}x{width} input and the stride "
                        f"({stride}) be at least 1.")
    with attribution_mode(model):
        classes = _targets(model, inputs, target)

        def probabilities(x: torch.Tensor) -> torch.Tensor:
            return model(x).softmax(dim=1)

        with torch.no_grad():
            drop = Occlusion(probabilities).attribute(
                inputs, sliding_window_shapes=(channels, window, window), strides=(channels, stride, stride),
                baselines=0.0, target=classes, perturbations_per_eval=16)
    return drop[:, 0]


def _jet(values: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] of values in [0, 1] under matplotlib's jet colormap (blue, cyan, yellow, red)."""
    from matplotlib import colormaps

    return colormaps["jet"](values)[..., :3]


def overlay_heatmap(image: torch.Tensor, heat: torch.Tensor, alpha: float = 0.5) -> Image.Image:
    """A heat map blended over an image: (1 - alpha)·image + alpha·jet(heat), as an RGB PIL image.

    `image` is (C, H, W) float pixels in [0, 1] with 1 (grey) or 3 (RGB) channels, un-normalized;
    `heat` is (H, W) in [0, 1] (values outside are clipped); `alpha` in [0, 1] is the heat map's
    weight.
    """
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise DcnnError(f"overlay_heatmap needs an image (1 or 3, H, W), got shape {tuple(image.shape)}.")
    if heat.shape != image.shape[1:]:
        raise DcnnError(f"the heat map {tuple(heat.shape)} must have the image's size {tuple(image.shape[1:])}; "
                        "upsample it first (grad_cam returns maps at the input's resolution).")
    if not 0.0 <= alpha <= 1.0:
        raise DcnnError(f"alpha must be in [0, 1], got {alpha}.")
    pixels = image.detach().float().cpu().clamp(0.0, 1.0).expand(3, -1, -1).permute(1, 2, 0).numpy()
    colored = _jet(heat.detach().float().cpu().clamp(0.0, 1.0).numpy())
    blended = (1.0 - alpha) * pixels + alpha * colored
    return Image.fromarray(np.round(blended * 255.0).astype(np.uint8), mode="RGB")

