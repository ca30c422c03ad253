"""Evaluation: top-k accuracy, per-class accuracy, confusion matrices, hardest examples, reports."""

from __future__ import annotations

from dcnn.evaluate.metrics import (
    ClassificationMetrics,
    ClassificationResult,
    HardExample,
    evaluate,
)
from dcnn.evaluate.report import (
    plot_confusion_matrix,
    read_confusion_csv,
    write_confusion_csv,
    write_metrics_json,
    write_report,
)

__all__ = [
    "ClassificationMetrics",
    "ClassificationResult",
    "HardExample",
    "evaluate",
    "plot_confusion_matrix",
    "read_confusion_csv",
    "write_confusion_csv",
    "write_metrics_json",
    "write_report",
]
