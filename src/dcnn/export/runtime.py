"""Running an exported ONNX classifier with onnxruntime, prepared by the preprocessing it carries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dcnn.errors import DcnnError
from dcnn.export.metadata import ExportInfo

ONNX_FILE = "model.onnx"


def onnx_file_of(source: str | Path) -> Path:
    """An ``.onnx`` file, or the exported model of a run directory (``RUN/model.onnx``)."""
    source = Path(source)
    if source.is_dir():
        candidate = source / ONNX_FILE
        if not candidate.is_file():
            raise DcnnError(f"{source} has no exported model {ONNX_FILE}; export it first with "
                            f"`dcnn export {source}`, or use --runtime torch.")
        return candidate
    if source.suffix != ".onnx":
        raise DcnnError(f"--runtime onnx reads an .onnx file or a run with an exported {ONNX_FILE}, not {source}; "
                        f"export it with `dcnn export {source}`.")
    if not source.is_file():
        raise DcnnError(f"exported model {str(source)!r} not found; export one with `dcnn export RUN`.")
    return source


class OnnxClassifier:
    """An exported classifier in an onnxruntime session: called on a batch (N, C, H, W) of graph input
    (``info.preprocess`` of each image) it returns the logits (N, classes). A graph exported without
    a dynamic batch reads one image a run; a batch then takes one run per image.

    Attributes:
        info: the model name, preprocessing and class names from the file's metadata.
    """

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        import onnxruntime as ort
        from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, InvalidGraph, InvalidProtobuf

        path = onnx_file_of(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: onnxruntime's default, one per physical core
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except (Fail, InvalidArgument, InvalidGraph, InvalidProtobuf) as err:
            raise DcnnError(f"{path} is not an ONNX model onnxruntime can load: {str(err).splitlines()[0]}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        self.info = ExportInfo.from_strings(meta, str(path))
        graph_input = self.session.get_inputs()[0]
        self.input_name = graph_input.name
        self.batch = graph_input.shape[0] if isinstance(graph_input.shape[0], int) else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().cpu().float().numpy()
        step = self.batch or len(array)
        logits = [self.session.run(None, {self.input_name: array[i:i + step]})[0] for i in range(0, len(array), step)]
        return torch.from_numpy(np.concatenate(logits))
