"""Per-layer summary of a model: output shape, parameters, MACs, activation memory and receptive
field of every layer, in call order, with totals and an estimate of the memory a training step needs.

The model is traced on the meta device, so even the largest one is summarized without allocating
its weights or running real arithmetic. What each figure means:

- **MACs** come from torch's own counter, ``torch.utils.flop_counter.FlopCounterMode``: its FLOPs
  of convolutions and matrix products, halved (it counts a multiply-add as two FLOPs and ignores
  biases, pooling, normalization and activations). A layer's figure excludes its sub-layers'.
- **Activation memory** of a row: its output tensor, elements × bytes per value, for the whole batch.
- **Receptive field** (Araujo et al. 2019, "Computing Receptive Fields of Convolutional Neural
  Networks", eqs. 1-3), per spatial dimension, for each layer of kernel k, stride s, padding p and
  dilation d (effective kernel d·(k−1)+1): ``r_out = r_in + (k−1)·j_in``, ``j_out = j_in·s``,
  ``start_out = start_in + ((k−1)/2 − p)·j_in``. ``start`` is the centre of the first output unit's
  field in input pixel indices (the input's first pixel is at 0); the input has r = 1, j = 1,
  start = 0. They are propagated through every tensor operation as it runs, so branching models
  are covered: where several tensors meet (a concatenation, a residual sum) the result takes, in
  each dimension, the field of the input with the largest one, i.e. the largest field over all paths
  that reach it, with that path's start (the jump is the same on every path, since the maps have the
  same size). Adaptive pooling counts as a pool of kernel = stride = input / output size; where
  that does not divide, its windows are uneven and the figures use the largest window and the mean
  stride. Outputs computed from flattened tensors have no receptive field of their own (each of
  their values sees the whole input); they show none.
- **Auxiliary classifiers** (a model's ``aux_heads``, run only in training) are traced too, as their
  own rows, marked ``aux``; :meth:`Summary.totals` gives totals with and without them.
- **Training memory** (:func:`estimate_training_memory`): see :data:`ACCOUNTING`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from dcnn.errors import DcnnError
from dcnn.train.optim import OPTIMIZERS

ACCOUNTING = (
    "training memory = activations kept for backward + parameters + gradients + optimizer state. "
    "Activations kept: the input and the output of every layer that convolves, multiplies by a matrix, "
    "normalizes or pools (one stored tensor each, auxiliary classifiers included), × batch × bytes per value; "
    "activations are counted as in place (no tensor of their own); dropout masks, pooling indices, "
    "concatenations and residual sums made outside layers, and framework workspace are not counted. "
    "Parameters: every parameter × bytes; gradients: every trainable parameter × bytes; optimizer state: "
    "the optimizer's per-parameter state tensors (SGD with momentum 1×, Adam 2×) × trainable parameters × bytes."
)

Pair = tuple[float, float]

aten = torch.ops.aten
_CONV = {aten.convolution, aten._convolution}
_MAX_POOL = {aten.max_pool2d, aten.max_pool2d_with_indices}
_AVG_POOL = {aten.avg_pool2d}
_ADAPTIVE_POOL = {aten._adaptive_avg_pool2d, aten.adaptive_avg_pool2d, aten.adaptive_max_pool2d}
_PADS = {aten.constant_pad_nd, aten.reflection_pad2d, aten.replication_pad2d}
# Which aten ops make a layer's output one that training keeps (see ACCOUNTING).
_KEPT_OPS = _CONV | _MAX_POOL | _AVG_POOL | _ADAPTIVE_POOL | {
    aten.mm, aten.addmm, aten.bmm, aten.baddbmm, aten.linear,
    aten.mean, aten.amax, aten.amin,  # global pooling written as a reduction
    aten.native_batch_norm, aten._native_batch_norm_legit, aten._native_batch_norm_legit_no_training,
    aten.native_layer_norm, aten.native_group_norm,
}


@dataclass(frozen=True)
class ReceptiveField:
    """Size r, jump j and start of a tensor's receptive field, each as (height, width)."""

    size: Pair
    jump: Pair
    start: Pair

    def layer(self, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair = (1, 1)) -> ReceptiveField:
        """The field after a layer of this kernel, stride, padding and dilation (Araujo et al. 2019)."""
        k = [d * (kk - 1) + 1 for kk, d in zip(kernel, dilation, strict=True)]
        return ReceptiveField(
            size=_pair(r + (kk - 1) * j for r, kk, j in zip(self.size, k, self.jump, strict=True)),
            jump=_pair(j * s for j, s in zip(self.jump, stride, strict=True)),
            start=_pair(u + ((kk - 1) / 2 - p) * j for u, kk, p, j in zip(self.start, k, padding, self.jump,
                                                                          strict=True)),
        )


INPUT_FIELD = ReceptiveField((1, 1), (1, 1), (0, 0))


@dataclass(frozen=True)
class LayerRow:
    """One call of a layer. `params` counts its own parameters on its first call (0 on later calls,
    so that rows add up); `activation_bytes` is its output for the whole batch; `kept`: training
    keeps its output for backward (see ACCOUNTING); `aux`: part of an auxiliary classifier."""

    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    trainable: int
    macs: int
    activation_bytes: int
    kept: bool
    aux: bool = False
    field: ReceptiveField | None = None

    @property
    def output_values(self) -> int:
        return math.prod(self.output_shape)


@dataclass(frozen=True)
class Totals:
    """Sums over rows. `kept_values`: values training keeps for backward (input included)."""

    params: int
    trainable: int
    macs: int
    activation_bytes: int
    kept_values: int


@dataclass(frozen=True)
class Summary:
    input_size: tuple[int, int, int]
    batch_size: int
    bytes_per_value: int
    rows: list[LayerRow]
    model_params: int
    """All parameters of the model; more than the rows' sum when some layers did not run."""
    model_trainable: int

    @property
    def has_aux(self) -> bool:
        return any(row.aux for row in self.rows)

    def totals(self, aux: bool = True) -> Totals:
        """Sums over the rows, with or without the auxiliary classifiers' rows."""
        rows = [row for row in self.rows if aux or not row.aux]
        return Totals(
            params=sum(r.params for r in rows), trainable=sum(r.trainable for r in rows),
            macs=sum(r.macs for r in rows), activation_bytes=sum(r.activation_bytes for r in rows),
            kept_values=sum(r.output_values for r in rows if r.kept),
        )


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a training step needs by ACCOUNTING, for `optimizer` (its `state_per_param` tensors)."""

    optimizer: str
    state_per_param: int
    activations: int
    parameters: int
    gradients: int
    optimizer_state: int

    @property
    def total(self) -> int:
        return self.activations + self.parameters + self.gradients + self.optimizer_state


@dataclass(frozen=True)
class MeasuredMemory:
    """Peak memory of one real training step and how it was measured."""

    peak_bytes: int
    device: str
    method: str


def _pair(values: object) -> Pair:
    if isinstance(values, (int, float)):
        return (values, values)
    items = list(values)  # type: ignore[call-overload]
    return (items[0], items[-1]) if items else (0, 0)


def _adaptive(size_in: int, size_out: int) -> tuple[float, float]:
    """Kernel and stride of adaptive pooling from `size_in` to `size_out` (exact when it divides;
    else the largest of its uneven windows and the mean stride)."""
    if size_in % size_out == 0:
        return size_in // size_out, size_in // size_out
    kernel = max(math.ceil((i + 1) * size_in / size_out) - math.floor(i * size_in / size_out)
                 for i in range(size_out))
    return kernel, size_in / size_out


def _spatial(t: torch.Tensor) -> tuple[int, int] | None:
    return (t.shape[2], t.shape[3]) if t.dim() == 4 else None


def _field_of(func: object, args: tuple, out: torch.Tensor, source: torch.Tensor, rf: ReceptiveField,
              ) -> ReceptiveField | None:
    """The receptive field of `out`, made by aten `func` from `args`, whose widest-field input is
    `source` with field `rf`."""
    space_in, space_out = _spatial(source), _spatial(out)
    if space_in is None or space_out is None:
        return None
    if func in _CONV:
        if args[6]:  # transposed
            return None
        return rf.layer(_pair(args[1].shape[2:]), _pair(args[3]), _pair(args[4]), _pair(args[5]))
    if func in _MAX_POOL or func in _AVG_POOL:
        kernel = _pair(args[1])
        stride = _pair(args[2]) if len(args) > 2 and args[2] else kernel
        padding = _pair(args[3]) if len(args) > 3 else (0, 0)
        dilation = _pair(args[4]) if func in _MAX_POOL and len(args) > 4 else (1, 1)
        return rf.layer(kernel, stride, padding, dilation)
    if func in _PADS:
        pad = list(args[1])  # (left, right, top, bottom)
        return ReceptiveField(rf.size, rf.jump, (rf.start[0] - pad[2] * rf.jump[0], rf.start[1] - pad[0] * rf.jump[1]))
    if func is aten.slice and len(args) > 2 and args[1] in (2, 3, -1, -2):
        axis = args[1] % 4 - 2
        first, step = args[2] or 0, args[4] if len(args) > 4 else 1
        start, jump = list(rf.start), list(rf.jump)
        start[axis] += first * jump[axis]
        jump[axis] *= step
        return ReceptiveField(rf.size, _pair(jump), _pair(start))
    if func in _ADAPTIVE_POOL or (space_out == (1, 1) and space_in != (1, 1)):  # adaptive or global pooling
        (kh, sh), (kw, sw) = _adaptive(space_in[0], space_out[0]), _adaptive(space_in[1], space_out[1])
        return rf.layer((kh, kw), (sh, sw), (0, 0))
    return rf if space_out == space_in else None


class _Tracer(TorchDispatchMode):
    """Follows every aten op of a forward pass: propagates receptive fields from tensor to tensor,
    and notes which ops ran in the innermost layer call open (``frames``)."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[int, tuple[torch.Tensor, ReceptiveField | None]] = {}
        self.frames: list[dict] = []

    def field(self, t: object) -> ReceptiveField | None:
        entry = self.fields.get(id(t))
        return entry[1] if entry is not None and entry[0] is t else None

    def set_field(self, t: torch.Tensor, rf: ReceptiveField | None) -> None:
        self.fields[id(t)] = (t, rf)  # keeps `t` alive so that its id is not reused (meta: no storage)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        packet = func.overloadpacket
        if self.frames and packet in _KEPT_OPS:
            self.frames[-1]["kept"] = True
        sources = [(rf, t) for t in tree_leaves(args) if isinstance(t, torch.Tensor) and (rf := self.field(t))]
        if sources:
            (high, source), (wide, _) = (max(sources, key=lambda s, axis=axis: s[0].size[axis]) for axis in (0, 1))
            rf = ReceptiveField((high.size[0], wide.size[1]), (high.jump[0], wide.jump[1]),
                                (high.start[0], wide.start[1]))
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor):
                    self.set_field(t, _field_of(packet, args, t, source, rf))
        return out


def _first_tensor(output: object) -> torch.Tensor | None:
    return next((t for t in tree_leaves(output) if isinstance(t, torch.Tensor)), None)


def _aux_owners(model: nn.Module) -> dict[str, nn.Module]:
    """The modules with auxiliary classifiers (a non-empty ``aux_heads``), by their heads' name prefix."""
    return {f"{name}.aux_heads." if name else "aux_heads.": module for name, module in model.named_modules()
            if isinstance(getattr(module, "aux_heads", None), nn.ModuleDict) and len(module.aux_heads)}


def summarize(model: nn.Module, input_size: Sequence[int], batch_size: int = 1,
              dtype: torch.dtype = torch.float32) -> Summary:
    """One row per call of a layer (a leaf module, or one with parameters of its own) in ``model(x)``
    for a batch of `batch_size` inputs of `input_size` (C, H, W), after an ``input`` row.

    The model is moved to the meta device and put in eval mode for the trace, except that models with
    auxiliary classifiers (``aux_heads``) run them as in training; pass a copy if you still need its
    weights. MACs done outside any layer (a functional convolution in a container's forward) get a
    row of their own, ``(outside layers)``, so that the rows add up to torch's count.
    """
    model = model.to(device="meta", dtype=dtype).eval()
    owners = _aux_owners(model)
    for owner in owners.values():
        owner.training = True  # only the owner's own flag: its forward then runs the auxiliary heads
    names = {module: name for name, module in model.named_modules()}
    size = tuple(input_size)
    bytes_per_value = torch.empty((), dtype=dtype).element_size()
    x = torch.zeros(batch_size, *size, device="meta", dtype=dtype)
    rows = [LayerRow("input", "input", tuple(x.shape), 0, 0, 0, x.numel() * bytes_per_value, kept=True,
                     field=INPUT_FIELD)]
    counter = FlopCounterMode(display=False)
    tracer = _Tracer()
    tracer.set_field(x, INPUT_FIELD)
    counted: set[nn.Module] = set()

    def enter(module: nn.Module, _inputs: object) -> None:
        tracer.frames.append({"start": counter.get_total_flops(), "children": 0, "kept": False})

    def leave(module: nn.Module, _inputs: object, output: object) -> None:
        frame = tracer.frames.pop()
        flops = counter.get_total_flops() - frame["start"]
        if tracer.frames:
            tracer.frames[-1]["children"] += flops
        own = [] if module in counted else list(module.parameters(recurse=False))
        counted.add(module)
        tensor = _first_tensor(output)
        name = names.get(module, "?")
        rows.append(LayerRow(
            name=name, kind=type(module).__name__, output_shape=tuple(tensor.shape) if tensor is not None else (),
            params=sum(p.numel() for p in own), trainable=sum(p.numel() for p in own if p.requires_grad),
            macs=(flops - frame["children"]) // 2,
            activation_bytes=tensor.numel() * tensor.element_size() if tensor is not None else 0,
            kept=frame["kept"] and tensor is not None, aux=name.startswith(tuple(owners)),
            field=tracer.field(tensor),
        ))

    hooked = [m for m in model.modules() if not list(m.children()) or list(m.parameters(recurse=False))]
    hooks = [h for m in hooked for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave))]
    try:
        with torch.no_grad(), counter, tracer:
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    outside = counter.get_total_flops() // 2 - sum(row.macs for row in rows)
    if outside:
        rows.append(LayerRow("(outside layers)", "ops", (), 0, 0, outside, 0, kept=False))
    return Summary(size, batch_size, bytes_per_value, rows,  # type: ignore[arg-type]
                   model_params=sum(p.numel() for p in model.parameters()),
                   model_trainable=sum(p.numel() for p in model.parameters() if p.requires_grad))


def _build_optimizer(name: str, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    if name not in OPTIMIZERS:
        raise DcnnError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}.")
    spec = OPTIMIZERS[name]
    options = {spec.options[key]: value for key, value in spec.defaults.items() if key in spec.options}
    return spec.cls(params, lr=0.01, **options)


def optimizer_state_per_param(name: str) -> int:
    """How many tensors the size of a parameter optimizer `name` keeps (with dcnn's defaults), found
    by letting it take one step on a small parameter: SGD with momentum 1, Adam 2."""
    weight = torch.zeros(3, requires_grad=True)
    optimizer = _build_optimizer(name, [weight])
    weight.grad = torch.ones(3)
    optimizer.step()
    return sum(1 for state in optimizer.state[weight].values()
               if isinstance(state, torch.Tensor) and state.shape == weight.shape)


def estimate_training_memory(summary: Summary, optimizer: str = "sgd") -> MemoryEstimate:
    """Bytes one training step needs, by ACCOUNTING (auxiliary classifiers included: training runs them)."""
    per_value = summary.bytes_per_value
    state = optimizer_state_per_param(optimizer)
    return MemoryEstimate(
        optimizer=optimizer, state_per_param=state,
        activations=summary.totals().kept_values * per_value,
        parameters=summary.model_params * per_value,
        gradients=summary.model_trainable * per_value,
        optimizer_state=state * summary.model_trainable * per_value,
    )


def _training_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor) -> None:
    outputs = model(x)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    target = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    sum(F.cross_entropy(out.flatten(1), target) for out in outputs).backward()  # type: ignore[union-attr]
    optimizer.step()


def _cpu_peak(step: Callable[[], None]) -> int:
    """Peak of the bytes the CPU allocator holds during `step` above what it held before, from
    torch.profiler's allocation events (each allocation and free, in order)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def measure_training_step(model: nn.Module, input_size: Sequence[int], batch_size: int = 1,
                          optimizer: str = "sgd", device: str | torch.device | None = None) -> MeasuredMemory:
    """Run one real training step (forward, cross-entropy on every output, backward, optimizer step)
    on random inputs and measure its peak memory: on CUDA ``torch.cuda.max_memory_allocated``; on
    the CPU the parameters' and buffers' bytes plus the peak of the step's allocations recorded by
    ``torch.profiler`` (``profile_memory=True``). Either counts tensors the allocator holds, not
    the process's other memory. The model must hold real weights (not meta); it is left in training mode.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.to(device).train()
    opt = _build_optimizer(optimizer, [p for p in model.parameters() if p.requires_grad])
    x = torch.randn(batch_size, *input_size, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        _training_step(model, opt, x)
        torch.cuda.synchronize(device)
        return MeasuredMemory(torch.cuda.max_memory_allocated(device), str(device),
                              "torch.cuda.max_memory_allocated over the step (input, parameters included)")
    resident = x.numel() * x.element_size() + sum(t.numel() * t.element_size()
                                                  for t in [*model.parameters(), *model.buffers()])
    peak = _cpu_peak(lambda: _training_step(model, opt, x))
    return MeasuredMemory(resident + peak, str(device),
                          "input, parameters and buffers + peak of the step's CPU allocations (torch.profiler)")


# Reports: one record per row, totals, the estimate and its accounting, in json, csv or markdown.

COLUMNS = ("layer", "type", "output shape", "params", "MACs", "activation bytes", "RF", "jump", "start", "aux")
MB = 1e6


def _number(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def _shown(pair: Pair | None) -> str:
    if pair is None:
        return "-"
    return _number(pair[0]) if pair[0] == pair[1] else f"{_number(pair[0])}x{_number(pair[1])}"


def _field_cells(rf: ReceptiveField | None) -> list[str]:
    return [_shown(None if rf is None else getattr(rf, part)) for part in ("size", "jump", "start")]


def table_rows(summary: Summary) -> list[list[str]]:
    """The rows as strings under COLUMNS, then a total row (and one without auxiliary classifiers)."""
    lines = [[row.name, row.kind, str(list(row.output_shape)), f"{row.params:,}", f"{row.macs:,}",
              f"{row.activation_bytes:,}", *_field_cells(row.field), "aux" if row.aux else ""] for row in summary.rows]
    for label, aux in (("total", True), ("total without aux", False))[: 2 if summary.has_aux else 1]:
        totals = summary.totals(aux)
        lines.append([label, "", "", f"{totals.params:,}", f"{totals.macs:,}", f"{totals.activation_bytes:,}",
                      "", "", "", ""])
    return lines


def notes(summary: Summary, estimate: MemoryEstimate, measured: MeasuredMemory | None = None) -> list[str]:
    """What the totals include, the activation count per image, the training-memory estimate (with its
    accounting) and, when given, the measured peak."""
    totals, batch, per_value = summary.totals(), summary.batch_size, summary.bytes_per_value
    lines = []
    if summary.has_aux:
        main = summary.totals(aux=False)
        lines.append(f"totals include the auxiliary classifiers (rows marked aux, run in training only); "
                     f"without them: {main.params:,} parameters, {main.macs:,} MACs")
    lines.append(f"total parameters: {summary.model_params:,} (trainable {summary.model_trainable:,})")
    if summary.model_params != totals.params:
        lines.append(f"{summary.model_params - totals.params:,} parameters are in layers that did not run")
    lines.append(f"MACs: {totals.macs:,} ({totals.macs / 1e9:.2f} G) for a batch of {batch} "
                 f"(torch.utils.flop_counter FLOPs / 2)")
    per_image = totals.kept_values // batch
    lines.append(f"activations kept for backward: {per_image:,} values per image "
                 f"({per_image * per_value / MB:.2f} MB at {per_value} bytes per value): the input and one stored "
                 f"tensor per conv, linear, normalization and pooling output, activations in place")
    lines.append(f"training memory estimate (batch {batch}, {estimate.optimizer}): "
                 f"{estimate.total / MB:,.2f} MB = activations {estimate.activations / MB:,.2f} "
                 f"+ parameters {estimate.parameters / MB:,.2f} + gradients {estimate.gradients / MB:,.2f} "
                 f"+ optimizer state {estimate.optimizer_state / MB:,.2f} ({estimate.state_per_param}x) MB "
                 f"(MB = 10^6 bytes)")
    lines.append(f"accounting: {ACCOUNTING}")
    if measured is not None:
        lines.append(f"measured peak of one training step on {measured.device}: {measured.peak_bytes / MB:,.2f} MB "
                     f"(estimate {estimate.total / MB:,.2f} MB); measured as {measured.method}")
    return lines


def _field_record(rf: ReceptiveField | None) -> dict:
    return {f"rf_{part}": None if rf is None else list(getattr(rf, part)) for part in ("size", "jump", "start")}


def to_json(summary: Summary, estimate: MemoryEstimate, measured: MeasuredMemory | None = None) -> str:
    import json

    def totals(aux: bool) -> dict:
        t = summary.totals(aux)
        return {"params": t.params, "trainable": t.trainable, "macs": t.macs,
                "activation_bytes": t.activation_bytes, "kept_values": t.kept_values}

    report = {
        "input_size": list(summary.input_size), "batch_size": summary.batch_size,
        "bytes_per_value": summary.bytes_per_value,
        "rows": [{"layer": r.name, "type": r.kind, "output_shape": list(r.output_shape), "params": r.params,
                  "trainable": r.trainable, "macs": r.macs, "activation_bytes": r.activation_bytes,
                  "kept": r.kept, "aux": r.aux, **_field_record(r.field)} for r in summary.rows],
        "totals": totals(True), "totals_without_aux": totals(False),
        "model_params": summary.model_params, "model_trainable": summary.model_trainable,
        "training_memory": {"optimizer": estimate.optimizer, "state_per_param": estimate.state_per_param,
                            "activations": estimate.activations, "parameters": estimate.parameters,
                            "gradients": estimate.gradients, "optimizer_state": estimate.optimizer_state,
                            "total": estimate.total, "accounting": ACCOUNTING},
        "measured": None if measured is None else {"peak_bytes": measured.peak_bytes, "device": measured.device,
                                                   "method": measured.method},
    }
    return json.dumps(report, indent=2)


def to_csv(summary: Summary) -> str:
    """The table's rows and total rows as CSV (numbers without separators)."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["layer", "type", "output_shape", "params", "macs", "activation_bytes", "kept", "aux",
                     "rf", "jump", "start"])
    for r in summary.rows:
        writer.writerow([r.name, r.kind, "x".join(map(str, r.output_shape)), r.params, r.macs, r.activation_bytes,
                         int(r.kept), int(r.aux), *_field_cells(r.field)])
    for label, aux in (("total", True), ("total without aux", False))[: 2 if summary.has_aux else 1]:
        t = summary.totals(aux)
        writer.writerow([label, "", "", t.params, t.macs, t.activation_bytes, "", "", "", "", ""])
    return buffer.getvalue()


def to_markdown(summary: Summary, estimate: MemoryEstimate, measured: MeasuredMemory | None = None) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(summary)]
    return "\n".join([*lines, "", *(f"- {note}" for note in notes(summary, estimate, measured))]) + "\n"
