"""Shipping trained models: ONNX and torch.export files that carry their preprocessing and class
names (:mod:`dcnn.export.exporter`, :mod:`dcnn.export.metadata`)."""

from dcnn.export.exporter import FORMATS, export_classifier, export_model
from dcnn.export.metadata import ExportInfo, read_export_info

__all__ = ["FORMATS", "ExportInfo", "export_classifier", "export_model", "read_export_info"]
