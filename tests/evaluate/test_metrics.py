"""Classification metrics: a hand-computed case, an independent numpy computation, batch accumulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from dcnn.errors import DcnnError
from dcnn.evaluate import ClassificationMetrics, evaluate

# Four samples, three classes. Ranked predictions, by hand:
#   sample 0: ranks 0,1,2, target 0 -> top-1 hit
#   sample 1: ranks 0,2,1, target 2 -> top-1 miss, top-2 hit
#   sample 2: ranks 2,0,1, target 1 -> top-1 miss, top-2 miss
#   sample 3: ranks 2,1,0, target 2 -> top-1 hit
HAND_LOGITS = torch.tensor([[3.0, 1.0, 0.0], [2.0, 0.0, 1.0], [1.0, 0.0, 2.0], [0.0, 1.0, 5.0]])
HAND_TARGETS = torch.tensor([0, 2, 1, 2])


def hand_cross_entropy(logits: list[float], target: int) -> float:
    return math.log(sum(math.exp(v) for v in logits)) - logits[target]


def test_hand_computed_three_class_example() -> None:
    metrics = ClassificationMetrics(num_classes=3, topk=(1, 2, 5), num_hardest=2)
    metrics.update(HAND_LOGITS, HAND_TARGETS)
    result = metrics.compute()

    assert result.num_samples == 4
    assert result.accuracy(1) == 0.5
    assert result.accuracy(2) == 0.75
    assert result.accuracy(5) == 1.0  # k clipped to the 3 classes
    assert result.error(1) == 0.5
    assert result.error(2) == 0.25
    assert result.confusion_matrix.tolist() == [[1, 0, 0], [0, 0, 1], [1, 0, 1]]
    assert result.per_class_accuracy.tolist() == [1.0, 0.0, 0.5]
    assert result.mean_class_accuracy == 0.5

    losses = [
        hand_cross_entropy(row, t) for row, t in zip(HAND_LOGITS.tolist(), HAND_TARGETS.tolist(), strict=True)
    ]
    assert result.mean_loss == pytest.approx(sum(losses) / 4, rel=1e-6)
    # The two worst: sample 2 (true class ranked last), then sample 1.
    assert [e.index for e in result.hardest] == [2, 1]
    worst = result.hardest[0]
    assert (worst.target, worst.prediction) == (1, 2)
    assert worst.loss == pytest.approx(losses[2], rel=1e-6)
    assert worst.true_class_probability == pytest.approx(1 / (math.e + 1 + math.e**2), rel=1e-6)


def test_hand_example_summary_dict() -> None:
    metrics = ClassificationMetrics(num_classes=3, topk=(1, 5))
    metrics.update(HAND_LOGITS, HAND_TARGETS)
    summary = metrics.compute().to_dict(["cat", "dog", "bird"])
    assert summary["top1_accuracy"] == 0.5
    assert summary["top1_error"] == 0.5
    assert summary["top5_accuracy"] == 1.0
    assert summary["top5_error"] == 0.0
    assert [c["name"] for c in summary["per_class"]] == ["cat", "dog", "bird"]
    assert [c["support"] for c in summary["per_class"]] == [1, 1, 2]
    assert [c["correct"] for c in summary["per_class"]] == [1, 0, 1]
    assert summary["hardest"][0]["target_name"] == "dog"
    assert summary["hardest"][0]["prediction_name"] == "bird"


def test_class_without_samples_has_undefined_accuracy() -> None:
    metrics = ClassificationMetrics(num_classes=4, topk=(1,))
    metrics.update(torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]), torch.tensor([0, 1]))
    result = metrics.compute()
    assert result.per_class_accuracy[:2].tolist() == [1.0, 0.0]
    assert result.per_class_accuracy[2:].isnan().all()
    assert result.mean_class_accuracy == 0.5
    assert result.to_dict()["per_class"][3]["accuracy"] is None


def numpy_reference(logits: np.ndarray, targets: np.ndarray, num_classes: int, ks: tuple[int, ...]):
    """Independent computation: numpy argsort ranks, bincount confusion, log-sum-exp cross-entropy."""
    ranked = np.argsort(-logits, axis=1, kind="stable")
    accuracy = {k: float((ranked[:, :k] == targets[:, None]).any(axis=1).mean()) for k in ks}
    confusion = np.bincount(
        targets * num_classes + ranked[:, 0], minlength=num_classes * num_classes
    ).reshape(num_classes, num_classes)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=1))
    losses = log_z - shifted[np.arange(len(targets)), targets]
    return accuracy, confusion, losses


@pytest.mark.parametrize("num_classes", [2, 7, 30])
def test_matches_independent_numpy_computation(num_classes: int) -> None:
    generator = torch.Generator().manual_seed(num_classes)
    # Float64 random logits have no ties, so the ranking is unambiguous.
    logits = torch.randn(500, num_classes, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, num_classes, (500,), generator=generator)
    ks = (1, 3, 5)
    metrics = ClassificationMetrics(num_classes, topk=ks, num_hardest=10)
    metrics.update(logits, targets)
    result = metrics.compute()

    accuracy, confusion, losses = numpy_reference(logits.numpy(), targets.numpy(), num_classes, ks)
    assert result.topk_accuracy == pytest.approx(accuracy)
    np.testing.assert_array_equal(result.confusion_matrix.numpy(), confusion)
    np.testing.assert_allclose(
        result.per_class_accuracy.numpy(), np.diag(confusion) / confusion.sum(axis=1), rtol=1e-12
    )
    assert result.mean_loss == pytest.approx(losses.mean(), rel=1e-5)
    worst_ten = np.argsort(-losses, kind="stable")[:10]
    assert [e.index for e in result.hardest] == worst_ten.tolist()
    assert [e.loss for e in result.hardest] == pytest.approx(losses[worst_ten].tolist(), rel=1e-5)


def test_accumulating_batches_equals_one_batch() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(103, 10, generator=generator)
    targets = torch.randint(0, 10, (103,), generator=generator)

    whole = ClassificationMetrics(10, num_hardest=5)
    whole.update(logits, targets)
    batched = ClassificationMetrics(10, num_hardest=5)
    for start in range(0, 103, 16):
        batched.update(logits[start : start + 16], targets[start : start + 16])
    batched.update(logits[:0], targets[:0])  # an empty batch adds nothing

    expected, got = whole.compute(), batched.compute()
    assert got.num_samples == expected.num_samples == 103
    assert got.topk_accuracy == expected.topk_accuracy
    assert torch.equal(got.confusion_matrix, expected.confusion_matrix)
    assert got.mean_loss == pytest.approx(expected.mean_loss, rel=1e-6)
    assert got.hardest == expected.hardest


def test_reset_forgets_everything() -> None:
    metrics = ClassificationMetrics(3)
    metrics.update(HAND_LOGITS, HAND_TARGETS)
    metrics.reset()
    metrics.update(HAND_LOGITS[:1], HAND_TARGETS[:1])
    result = metrics.compute()
    assert result.num_samples == 1
    assert result.confusion_matrix.sum() == 1
    assert [e.index for e in result.hardest] == [0]


def test_given_losses_are_averaged_and_ranked() -> None:
    metrics = ClassificationMetrics(3, num_hardest=1)
    metrics.update(HAND_LOGITS, HAND_TARGETS, losses=torch.tensor([0.5, 4.0, 1.0, 0.5]))
    result = metrics.compute()
    assert result.mean_loss == 1.5
    assert result.hardest[0].index == 1
    assert result.hardest[0].loss == 4.0


def test_nan_loss_ranks_as_hardest() -> None:
    logits = HAND_LOGITS.clone()
    logits[3, 0] = math.nan
    metrics = ClassificationMetrics(3, num_hardest=1)
    metrics.update(logits, HAND_TARGETS)
    assert metrics.compute().hardest[0].index == 3


def test_column_targets_are_accepted() -> None:
    metrics = ClassificationMetrics(3)
    metrics.update(HAND_LOGITS, HAND_TARGETS[:, None])
    assert metrics.compute().accuracy(1) == 0.5


@pytest.mark.parametrize(
    ("logits", "targets", "message"),
    [
        (torch.zeros(4, 2), HAND_TARGETS, r"shape \(batch, 3\)"),
        (torch.zeros(4), HAND_TARGETS, r"shape \(batch, 3\)"),
        (HAND_LOGITS, HAND_TARGETS[:3], "expected 4 integer class labels"),
        (HAND_LOGITS, torch.nn.functional.one_hot(HAND_TARGETS, 3), "not one-hot"),
        (HAND_LOGITS, HAND_TARGETS.float(), "must be integers"),
        (HAND_LOGITS, torch.tensor([0, 1, 3, 2]), r"class label 3 is outside \[0, 3\)"),
        (HAND_LOGITS, torch.tensor([0, -1, 2, 2]), r"class label -1 is outside"),
    ],
)
def test_bad_batches_raise_clear_errors(logits: torch.Tensor, targets: torch.Tensor, message: str) -> None:
    metrics = ClassificationMetrics(3)
    with pytest.raises(DcnnError, match=message):
        metrics.update(logits, targets)


def test_misshaped_losses_raise() -> None:
    with pytest.raises(DcnnError, match='reduction="none"'):
        ClassificationMetrics(3).update(HAND_LOGITS, HAND_TARGETS, losses=torch.tensor(1.0))


def test_empty_input_raises_clear_error() -> None:
    metrics = ClassificationMetrics(3)
    metrics.update(HAND_LOGITS[:0], HAND_TARGETS[:0])
    with pytest.raises(DcnnError, match="no samples to evaluate"):
        metrics.compute()


def test_uncomputed_k_and_bad_options_raise() -> None:
    metrics = ClassificationMetrics(3, topk=(1,))
    metrics.update(HAND_LOGITS, HAND_TARGETS)
    with pytest.raises(DcnnError, match="top-5 accuracy was not computed"):
        metrics.compute().accuracy(5)
    with pytest.raises(DcnnError, match="positive integers"):
        ClassificationMetrics(3, topk=(0, 1))
    with pytest.raises(DcnnError, match="num_classes"):
        ClassificationMetrics(0)
    with pytest.raises(DcnnError, match="one name per class"):
        metrics.compute().to_dict(["a", "b"])


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_metrics_on_each_device_match_an_independent_computation(device: str) -> None:
    """Runs on the CPU in every test run and on CUDA where there is one (the GPU check)."""
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(300, 12, generator=generator)
    targets = torch.randint(0, 12, (300,), generator=generator)
    metrics = ClassificationMetrics(12)
    metrics.update(logits.to(device), targets.to(device))
    got = metrics.compute()
    z, t = logits.double().numpy(), targets.numpy()
    ranked = np.argsort(-z, axis=1)
    for k in (1, 5):
        assert got.topk_accuracy[k] == pytest.approx(np.mean([t[i] in ranked[i, :k] for i in range(len(t))]))
    confusion = np.zeros((12, 12), dtype=np.int64)
    np.add.at(confusion, (t, ranked[:, 0]), 1)
    assert np.array_equal(got.confusion_matrix.cpu().numpy(), confusion)
    log_softmax = z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
    losses = -log_softmax[np.arange(len(t)), t]
    assert got.mean_loss == pytest.approx(losses.mean(), rel=1e-5)
    assert got.hardest[0].index == int(np.argmax(losses))


class FixedLogits(nn.Module):
    """Returns the logits stored for each input id (input = sample ids), optionally as a tuple with
    auxiliary outputs; a parameter lets the evaluator find the model's device."""

    def __init__(self, logits: torch.Tensor, as_tuple: bool = False) -> None:
        super().__init__()
        self.table = nn.Parameter(logits.clone(), requires_grad=False)
        self.as_tuple = as_tuple
        self.seen_training_flags: list[bool] = []
        self.seen_grad_enabled: list[bool] = []

    def forward(self, ids: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        self.seen_training_flags.append(self.training)
        self.seen_grad_enabled.append(torch.is_grad_enabled())
        logits = self.table[ids]
        return (logits, torch.zeros_like(logits)) if self.as_tuple else logits


@pytest.mark.parametrize("as_tuple", [False, True])
def test_evaluate_runs_the_model_in_eval_mode_without_grad(as_tuple: bool) -> None:
    model = FixedLogits(HAND_LOGITS, as_tuple=as_tuple)
    model.train()
    loader = [(torch.tensor([0, 1]), HAND_TARGETS[:2]), (torch.tensor([2, 3]), HAND_TARGETS[2:])]
    result = evaluate(model, loader, "cpu", topk=(1, 2))
    assert result.accuracy(1) == 0.5
    assert result.accuracy(2) == 0.75
    assert result.confusion_matrix.tolist() == [[1, 0, 0], [0, 0, 1], [1, 0, 1]]
    assert model.seen_training_flags == [False, False]
    assert model.seen_grad_enabled == [False, False]
    assert model.training  # the caller's mode is restored


def test_evaluate_with_bf16_autocast_on_a_real_network() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )
    images = torch.randn(8, 1, 9, 9)
    targets = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    full = evaluate(model, [(images, targets)], num_hardest=0)
    mixed = evaluate(model, [(images, targets)], bf16=True, num_hardest=0)
    with torch.no_grad():
        expected_loss = nn.functional.cross_entropy(model(images), targets).item()
    assert full.mean_loss == pytest.approx(expected_loss, rel=1e-5)
    assert mixed.mean_loss == pytest.approx(expected_loss, rel=5e-2)  # bfloat16 keeps ~3 digits
    assert full.hardest == [] and mixed.num_samples == 8


def test_evaluate_on_an_empty_loader_raises() -> None:
    with pytest.raises(DcnnError, match="no batches"):
        evaluate(FixedLogits(HAND_LOGITS), [])


def test_evaluate_rejects_non_pairs_and_non_logits() -> None:
    with pytest.raises(DcnnError, match=r"\(inputs, targets\) pair"):
        evaluate(FixedLogits(HAND_LOGITS), [torch.tensor([0, 1])])
    flat = nn.Flatten(0)
    with pytest.raises(DcnnError, match="expected \\(batch, num_classes\\) logits"):
        evaluate(flat, [(torch.zeros(2, 3), torch.tensor([0, 1]))])
