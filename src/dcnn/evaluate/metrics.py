"""Classification metrics accumulated over batches: top-k accuracy, confusion matrix, hardest examples.

:class:`ClassificationMetrics` keeps running sums as tensors on the device of the logits it is fed,
so evaluating on a GPU costs one host synchronization per batch (the label range check) and none
for the sums. :func:`evaluate` runs a model over a data loader and returns a
:class:`ClassificationResult`.

Top-k accuracy is the fraction of samples whose true class is among the k highest logits, the
measure of the ImageNet challenge (Russakovsky et al. 2015, Sec. 4.1; Krizhevsky et al. 2012 report
top-1 and top-5 error). A k larger than the number of classes is clipped to it (every sample is
then correct). Accuracies are fractions in [0, 1]; errors are 1 - accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from dcnn.errors import DcnnError


@dataclass(frozen=True)
class HardExample:
    """One of the worst-classified samples.

    `index` counts samples in the order they were fed to :meth:`ClassificationMetrics.update` (the
    dataset index when the loader does not shuffle). `loss` is the sample's loss (cross-entropy
    unless per-sample losses were given), `true_class_probability` the softmax probability of its
    true class, `predicted_probability` that of the predicted class.
    """

    index: int
    target: int
    prediction: int
    loss: float
    true_class_probability: float
    predicted_probability: float


@dataclass(frozen=True, eq=False)
class ClassificationResult:
    """The outcome of an evaluation.

    Attributes:
        num_samples: how many samples were evaluated.
        topk_accuracy: requested k -> fraction of samples whose true class is among the top
            min(k, num_classes) predictions.
        confusion_matrix: (num_classes, num_classes) int64 counts on the CPU; row = true class,
            column = predicted (top-1) class.
        mean_loss: mean per-sample loss (cross-entropy of the logits unless losses were given).
        hardest: the worst samples, highest loss first.
    """

    num_samples: int
    topk_accuracy: dict[int, float]
    confusion_matrix: torch.Tensor
    mean_loss: float
    hardest: list[HardExample]

    @property
    def num_classes(self) -> int:
        return self.confusion_matrix.shape[0]

    def accuracy(self, k: int = 1) -> float:
        """Top-k accuracy (a fraction); k must be one of those the metrics were asked for."""
        if k not in self.topk_accuracy:
            raise DcnnError(
                f"top-{k} accuracy was not computed (available: {sorted(self.topk_accuracy)}); "
                f"pass topk=(..., {k}) to ClassificationMetrics or evaluate()."
            )
        return self.topk_accuracy[k]

    def error(self, k: int = 1) -> float:
        """Top-k error: 1 - top-k accuracy."""
        return 1.0 - self.accuracy(k)

    @property
    def class_support(self) -> torch.Tensor:
        """Number of samples of each true class (the confusion matrix's row sums)."""
        return self.confusion_matrix.sum(dim=1)

    @property
    def per_class_accuracy(self) -> torch.Tensor:
        """Per-class top-1 accuracy (recall) as float64; NaN for a class with no samples."""
        correct = self.confusion_matrix.diagonal().double()
        support = self.class_support.double()
        return torch.where(support > 0, correct / support.clamp(min=1), torch.full_like(correct, math.nan))

    @property
    def mean_class_accuracy(self) -> float:
        """Mean of the per-class accuracies over the classes that have samples (balanced accuracy)."""
        return float(self.per_class_accuracy.nanmean())

    def to_dict(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """A JSON-ready summary: top-k accuracy/error, mean loss, per-class figures, hardest samples.

        A class without samples has accuracy None (JSON null).
        """
        names = resolve_class_names(class_names, self.num_classes)
        summary: dict[str, Any] = {"num_samples": self.num_samples, "num_classes": self.num_classes}
        for k, accuracy in sorted(self.topk_accuracy.items()):
            summary[f"top{k}_accuracy"] = accuracy
            summary[f"top{k}_error"] = 1.0 - accuracy
        summary["mean_class_accuracy"] = _finite_or_none(self.mean_class_accuracy)
        summary["mean_loss"] = _finite_or_none(self.mean_loss)
        summary["per_class"] = [
            {
                "index": i,
                "name": names[i],
                "support": int(support),
                "correct": int(correct),
                "accuracy": _finite_or_none(float(accuracy)),
            }
            for i, (support, correct, accuracy) in enumerate(
                zip(
                    self.class_support.tolist(),
                    self.confusion_matrix.diagonal().tolist(),
                    self.per_class_accuracy.tolist(),
                    strict=True,
                )
            )
        ]
        summary["hardest"] = [
            {
                "index": example.index,
                "target": example.target,
                "target_name": names[example.target],
                "prediction": example.prediction,
                "prediction_name": names[example.prediction],
                "loss": _finite_or_none(example.loss),
                "true_class_probability": example.true_class_probability,
            }
            for example in self.hardest
        ]
        return summary


def resolve_class_names(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    """`class_names` as a list, checked to have one name per class; None gives "0", "1", ...."""
    if class_names is None:
        return [str(i) for i in range(num_classes)]
    names = [str(name) for name in class_names]
    if len(names) != num_classes:
        raise DcnnError(
            f"got {len(names)} class names for {num_classes} classes; give exactly one name per class."
        )
    return names


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN/inf: report such values as null."""
    return value if math.isfinite(value) else None


class ClassificationMetrics:
    """Accumulates classification results over batches.

    >>> metrics = ClassificationMetrics(num_classes=10, topk=(1, 5))
    >>> for images, labels in loader:                         # doctest: +SKIP
    ...     metrics.update(model(images), labels)
    >>> result = metrics.compute()                            # doctest: +SKIP

    Args:
        num_classes: width of the logits.
        topk: the k of the top-k accuracies to report (each clipped to `num_classes`).
        num_hardest: how many of the worst samples (highest loss, i.e. lowest true-class
            probability for cross-entropy) to keep.
    """

    def __init__(self, num_classes: int, topk: Iterable[int] = (1, 5), num_hardest: int = 16) -> None:
        self.topk = tuple(sorted(set(topk)))
        if num_classes < 1:
            raise DcnnError(f"num_classes must be at least 1, got {num_classes}.")
        if not self.topk or self.topk[0] < 1:
            raise DcnnError(f"topk must list positive integers, got {tuple(topk)}.")
        if num_hardest < 0:
            raise DcnnError(f"num_hardest must be zero or more, got {num_hardest}.")
        self.num_classes = num_classes
        self.num_hardest = num_hardest
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self._num_samples = 0
        self._device: torch.device | None = None
        self._confusion: torch.Tensor | None = None  # flat (C*C,) int64 counts
        self._topk_correct: torch.Tensor | None = None  # (len(topk),) int64
        self._loss_sum: torch.Tensor | None = None  # float64 scalar
        self._hardest: dict[str, torch.Tensor] = {}  # the worst samples so far, on the device

    @torch.no_grad()
    def update(self, logits: torch.Tensor, targets: torch.Tensor, losses: torch.Tensor | None = None) -> None:
        """Add a batch.

        Args:
            logits: (N, num_classes) unnormalized scores.
            targets: (N,) integer class labels in [0, num_classes).
            losses: optional (N,) per-sample losses (e.g. the training criterion with
                ``reduction="none"``) to average and rank instead of the cross-entropy of `logits`.
        """
        logits, targets, losses = self._checked(logits, targets, losses)
        batch_size = logits.shape[0]
        if batch_size == 0:
            return
        if self._device is None:
            self._allocate(logits.device)
        device = self._device
        logits = logits.to(device=device, dtype=torch.float32)
        targets = targets.to(device=device, dtype=torch.int64)

        max_k = min(self.topk[-1], self.num_classes)
        ranked = logits.topk(max_k, dim=1).indices  # (N, max_k), best first
        hits = ranked == targets[:, None]
        # Correct at k if the target is among the first k ranked classes.
        cumulative_hits = hits.cumsum(dim=1).clamp(max=1)
        columns = torch.tensor([min(k, self.num_classes) - 1 for k in self.topk], device=device)
        self._topk_correct += cumulative_hits[:, columns].sum(dim=0)

        predictions = ranked[:, 0]  # the top-1 used for the confusion matrix agrees with top-1 accuracy
        self._confusion += torch.bincount(
            targets * self.num_classes + predictions, minlength=self.num_classes**2
        )

        log_probs = F.log_softmax(logits, dim=1)
        true_log_prob = log_probs.gather(1, targets[:, None]).squeeze(1)
        sample_loss = -true_log_prob if losses is None else losses.to(device=device, dtype=torch.float32)
        self._loss_sum += sample_loss.double().sum()

        indices = torch.arange(self._num_samples, self._num_samples + batch_size, device=device)
        self._keep_hardest(
            {
                "index": indices,
                "target": targets,
                "prediction": predictions,
                "loss": sample_loss,
                "true_class_probability": true_log_prob.exp(),
                "predicted_probability": log_probs.gather(1, predictions[:, None]).squeeze(1).exp(),
            }
        )
        self._num_samples += batch_size

    def _checked(
        self, logits: torch.Tensor, targets: torch.Tensor, losses: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise DcnnError(
                f"expected logits of shape (batch, {self.num_classes}), got {tuple(logits.shape)}; "
                "pass the model's raw outputs and the matching num_classes."
            )
        targets = targets.reshape(-1) if targets.ndim == 2 and targets.shape[1] == 1 else targets
        if targets.ndim != 1 or targets.shape[0] != logits.shape[0]:
            raise DcnnError(
                f"expected {logits.shape[0]} integer class labels, got targets of shape "
                f"{tuple(targets.shape)}; pass one class index per sample (not one-hot vectors)."
            )
        if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
            raise DcnnError(f"class labels must be integers, got dtype {targets.dtype}.")
        if targets.numel() and bool(((targets < 0) | (targets >= self.num_classes)).any()):
            bad = targets[(targets < 0) | (targets >= self.num_classes)][0].item()
            raise DcnnError(
                f"class label {bad} is outside [0, {self.num_classes}); check num_classes and the labels."
            )
        if losses is not None and losses.shape != targets.shape:
            raise DcnnError(
                f"expected one loss per sample, shape ({targets.shape[0]},), got {tuple(losses.shape)}; "
                'compute the loss with reduction="none".'
            )
        return logits, targets, losses

    def _allocate(self, device: torch.device) -> None:
        self._device = device
        self._confusion = torch.zeros(self.num_classes**2, dtype=torch.int64, device=device)
        self._topk_correct = torch.zeros(len(self.topk), dtype=torch.int64, device=device)
        self._loss_sum = torch.zeros((), dtype=torch.float64, device=device)

    def _keep_hardest(self, batch: dict[str, torch.Tensor]) -> None:
        """Merge a batch's samples into the kept worst ones (fields as in :class:`HardExample`)."""
        if self.num_hardest == 0:
            return
        if self._hardest:
            batch = {field: torch.cat([self._hardest[field], batch[field]]) for field in batch}
        # NaN losses count as the worst: a diverged sample is what one wants to see first.
        ranking_key = torch.nan_to_num(batch["loss"], nan=math.inf)
        order = ranking_key.topk(min(self.num_hardest, ranking_key.numel())).indices
        self._hardest = {field: values[order] for field, values in batch.items()}

    def compute(self) -> ClassificationResult:
        """The metrics of everything added since construction or the last :meth:`reset`."""
        if self._num_samples == 0:
            raise DcnnError(
                "no samples to evaluate: nothing was passed to update() (is the data loader empty?)."
            )
        n = self._num_samples
        topk_correct = self._topk_correct.tolist()
        kept = {field: values.tolist() for field, values in self._hardest.items()}
        hardest = [
            HardExample(**dict(zip(kept, row, strict=True))) for row in zip(*kept.values(), strict=True)
        ]
        return ClassificationResult(
            num_samples=n,
            topk_accuracy={k: correct / n for k, correct in zip(self.topk, topk_correct, strict=True)},
            confusion_matrix=self._confusion.reshape(self.num_classes, self.num_classes).cpu(),
            mean_loss=self._loss_sum.item() / n,
            hardest=hardest,
        )


def evaluate(
    model: nn.Module,
    loader: Iterable[Sequence[torch.Tensor]],
    device: torch.device | str | None = None,
    *,
    topk: Iterable[int] = (1, 5),
    num_hardest: int = 16,
    bf16: bool = False,
) -> ClassificationResult:
    """Evaluate `model` on the (inputs, targets) batches of `loader`.

    The model runs in eval mode under ``torch.no_grad()`` (its previous train/eval mode is restored
    afterwards), on `device` (default: where its parameters are; the model is moved there). With
    `bf16`, the forward pass runs under bfloat16 autocast; the metrics are computed in float32. A
    model that returns a tuple (auxiliary classifiers) is scored on its first element.
    """
    device = torch.device(device) if device is not None else _parameter_device(model)
    model.to(device)
    was_training = model.training
    model.eval()
    metrics: ClassificationMetrics | None = None
    try:
        with torch.no_grad():
            for batch in loader:
                if not isinstance(batch, Sequence) or len(batch) < 2:
                    raise DcnnError(
                        "each batch must be an (inputs, targets) pair; the data loader gave "
                        f"{type(batch).__name__}."
                    )
                inputs, targets = batch[0].to(device, non_blocking=True), batch[1]
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
                    outputs = model(inputs)
                logits = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
                if logits.ndim != 2:
                    raise DcnnError(
                        f"the model returned outputs of shape {tuple(logits.shape)}; "
                        "expected (batch, num_classes) logits from a classifier."
                    )
                if metrics is None:
                    metrics = ClassificationMetrics(logits.shape[1], topk=topk, num_hardest=num_hardest)
                metrics.update(logits.float(), targets.to(device, non_blocking=True))
    finally:
        model.train(was_training)
    if metrics is None:
        raise DcnnError("the data loader gave no batches; check the dataset path and split.")
    return metrics.compute()


def _parameter_device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")
