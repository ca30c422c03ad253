"""The deconvnet of Zeiler & Fergus (2014, "Visualizing and Understanding Convolutional Networks",
Sec. 2.1): one feature map's activity projected back to pixel space.

The forward pass runs the image up to the chosen layer and records every max pooling's switches
(the position of each pooling region's maximum). All activations of the layer but the chosen ones
are set to zero: by default the single strongest activation of the chosen channel (the channel
with the strongest activation, unless one is given), as in the paper's Fig. 2 and 4; with
``keep="map"`` the channel's whole map. That signal then goes back through the layers below:

- max pooling: unpooled with the recorded switches (each value placed at the position its region's
  maximum came from; where overlapping regions share a maximum, the values add up, which makes the
  unpooling the transpose of the pooling's selection);
- ReLU (``nn.ReLU`` modules): the signal is rectified, ReLU(signal), whatever the forward pass's
  sign was ("to obtain valid feature reconstructions at each layer (which also should be
  positive)");
- convolution: transposed convolution with the layer's own filters (``conv_transpose2d`` with its
  weight, stride, padding, dilation and groups), "flipping each filter vertically and horizontally";
  biases are not used;
- batch normalization (eval mode): the transpose of its per-channel affine map, a multiplication by
  gamma / sqrt(running_var + eps); its shift, like a bias, is left out.

Every other operation goes back through its ordinary backward pass, the transpose of a linear map
for the linear ones the zoo uses (average pooling spreads each value evenly over its window,
padding and cropping swap, residual sums send the signal down both branches, concatenations split
it) and the local derivative for nonlinear ones (local response normalization, other activation
functions). The layer rules above are applied by forward hooks on the modules, so the projection
follows any model's graph: branches and shortcuts need no special code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from dcnn.errors import DcnnError
from dcnn.visualize.attribution import attribution_mode, forward_hooks, map_layer

Rule = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Projection:
    """A deconvnet projection: `pixels` (N, C, H, W) in input space, the `layer` it starts from, and
    per image the `channel`, the `position` (row, column) of its strongest activation and that
    `activation`'s value."""

    pixels: torch.Tensor
    layer: str
    channel: torch.Tensor
    position: torch.Tensor
    activation: torch.Tensor


class _Reverse(torch.autograd.Function):
    """The identity on a layer's output whose backward maps the signal to the layer's input by a
    deconvnet rule instead of the layer's derivative."""

    @staticmethod
    def forward(ctx, layer_input: torch.Tensor, layer_output: torch.Tensor, rule: Rule) -> torch.Tensor:
        ctx.rule = rule
        return layer_output.clone()

    @staticmethod
    def backward(ctx, signal: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return ctx.rule(signal), None, None


def unpool(signal: torch.Tensor, switches: torch.Tensor, input_size: torch.Size) -> torch.Tensor:
    """Place each value of `signal` (N, C, h, w) at its switch, an index into the (H, W) plane of
    the pooling's input of `input_size`; values sent to the same place add up."""
    n, c = signal.shape[:2]
    plane = signal.new_zeros(n, c, input_size[-2] * input_size[-1])
    return plane.scatter_add_(2, switches.flatten(2), signal.flatten(2)).view(input_size)


def _conv_rule(conv: nn.Conv2d, x: torch.Tensor, y: torch.Tensor) -> Rule:
    if isinstance(conv.padding, str):  # "valid" or "same" (stride 1): symmetric for odd kernels
        padding = tuple(0 if conv.padding == "valid" else d * (k - 1) // 2
                        for k, d in zip(conv.kernel_size, conv.dilation, strict=True))
    else:
        padding = conv.padding
    # The rows and columns a strided convolution never reached come back as zeros.
    reach = [(o - 1) * s - 2 * p + d * (k - 1) + 1 for o, s, p, d, k in
             zip(y.shape[-2:], conv.stride, padding, conv.dilation, conv.kernel_size, strict=True)]
    extra = tuple(size - r for size, r in zip(x.shape[-2:], reach, strict=True))

    def rule(signal: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(signal, conv.weight, None, conv.stride, padding, extra, conv.groups, conv.dilation)
    return rule


def _max_pool_rule(pool: nn.MaxPool2d, x: torch.Tensor) -> Rule:
    _, switches = F.max_pool2d(x, pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode,
                               return_indices=True)
    return lambda signal: unpool(signal, switches, x.shape)


def _batch_norm_rule(bn: nn.BatchNorm2d) -> Rule:
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    return lambda signal: signal * scale.view(1, -1, 1, 1)


def _rule_for(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Rule | None:
    """The deconvnet rule of a module whose forward is its class's standard one, else None."""
    kind = type(module)
    if isinstance(module, nn.ReLU):
        return lambda signal: signal.clamp_min(0.0)
    if isinstance(module, nn.Conv2d) and kind.forward is nn.Conv2d.forward and module.padding_mode == "zeros":
        return _conv_rule(module, x, y)
    if isinstance(module, nn.MaxPool2d) and kind.forward is nn.MaxPool2d.forward and not module.return_indices:
        return _max_pool_rule(module, x)
    if (isinstance(module, nn.BatchNorm2d) and kind.forward is nn.BatchNorm2d.forward
            and module.running_var is not None and not module.training):
        return _batch_norm_rule(module)
    return None


def _strongest(maps: torch.Tensor, channel: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image of (N, C, h, w): the channel (given, or the one with the largest activation), the
    (row, column) of that channel's largest activation, and its value."""
    n, _, _, w = maps.shape
    if channel is None:
        chosen = maps.flatten(2).amax(dim=2).argmax(dim=1)
    else:
        chosen = torch.full((n,), channel, dtype=torch.long, device=maps.device)
    per_channel = maps[torch.arange(n, device=maps.device), chosen].flatten(1)
    value, flat = per_channel.max(dim=1)
    return chosen, torch.stack((flat // w, flat % w), dim=1), value


def deconvnet(
    model: nn.Module,
    inputs: torch.Tensor,
    layer: nn.Module | str | None = None,
    channel: int | None = None,
    keep: Literal["max", "map"] = "max",
) -> Projection:
    """Project one channel of `layer`'s output for each image of `inputs` (N, C, H, W) back to pixels.

    `layer`: a module of the model or its name in ``model.named_modules()``, inside
    ``forward_features``; None takes the last map larger than 1x1 (as Grad-CAM does). `channel`:
    the feature map to project; None takes, per image, the channel with the strongest activation.
    `keep`: "max" projects that channel's single strongest activation, "map" its whole map.
    """
    if keep not in ("max", "map"):
        raise DcnnError(f"keep must be 'max' (the strongest activation) or 'map' (the whole map), not {keep!r}.")
    with attribution_mode(model):
        target = map_layer(model, inputs, layer)
        channels = target.shape[1]
        if channel is not None and not 0 <= channel < channels:
            raise DcnnError(f"channel {channel} is out of range: layer {target.name!r} has {channels} channels "
                            f"(0 to {channels - 1}).")
        x = inputs.detach().clone().requires_grad_(True)
        relus = 0  # ReLUs run so far
        captured: list[tuple[torch.Tensor, int]] = []  # the layer's output, and how many ReLUs ran before it

        def reverse(module: nn.Module, args: tuple, output: object) -> torch.Tensor | None:
            nonlocal relus
            if not (isinstance(output, torch.Tensor) and args and isinstance(args[0], torch.Tensor)):
                return None  # not a layer of one tensor
            rule = _rule_for(module, args[0], output)
            if rule is None:
                return None
            relus += isinstance(module, nn.ReLU)
            return _Reverse.apply(args[0], output.detach(), rule)

        def capture(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            captured.append((output, relus))

        hooks = [(m, reverse) for m in model.modules()] + [(target.module, capture)]  # capture sees reverse's output
        with forward_hooks(hooks), torch.enable_grad():
            model.forward_features(x)
        maps, relus_below = captured[-1]
        if not relus_below:
            raise DcnnError(f"the model has no nn.ReLU below layer {target.name!r}: the deconvnet rectifies at "
                            "ReLUs (Zeiler & Fergus 2014, Sec. 2.1); use saliency or gradcam for this model.")
        chosen, position, value = _strongest(maps.detach(), channel)
        rows = torch.arange(maps.shape[0], device=maps.device)
        signal = torch.zeros_like(maps)
        if keep == "max":
            signal[rows, chosen, position[:, 0], position[:, 1]] = value
        else:
            signal[rows, chosen] = maps.detach()[rows, chosen]
        (pixels,) = torch.autograd.grad(maps, x, signal)
    return Projection(pixels.detach(), target.name, chosen, position, value)
