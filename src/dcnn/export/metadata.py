"""What an exported model carries besides its graph: the model name, the preprocessing a consumer
applies to an image before feeding the graph, and the class names.

ONNX files keep these in ``metadata_props`` (string keys, JSON values); a torch.export ``.pt2`` file
keeps them in a JSON file beside it (``model.pt2`` → ``model.json``). The preprocessing is
:meth:`dcnn.data.preprocess.Preprocess.to_dict`. When the normalization is folded into the graph
(the graph reads pixels in [0, 1]), the recorded preprocessing has mean 0 and std 1 (resizing and
channels only) and ``normalization_in_graph`` records what the graph applies.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dcnn.data.preprocess import Preprocess
from dcnn.errors import DcnnError
from dcnn.fileio import atomic_output

KEYS = ("dcnn_model", "preprocessing", "class_names", "normalization_in_graph")


@dataclass(frozen=True)
class ExportInfo:
    """The metadata of an exported classifier.

    Attributes:
        model: the registered model name.
        preprocess: what turns an image into the graph's input (``preprocess(pil_image)``).
        class_names: one name per output.
        normalization_in_graph: the training preprocessing (``Preprocess.to_dict``) whose
            normalization or whitening the graph applies itself, or None when the graph reads
            normalized input.
    """

    model: str
    preprocess: Preprocess
    class_names: list[str]
    normalization_in_graph: dict[str, Any] | None = None

    def to_metadata(self) -> dict[str, Any]:
        """JSON-ready values under :data:`KEYS`."""
        return {"dcnn_model": self.model, "preprocessing": self.preprocess.to_dict(),
                "class_names": list(self.class_names), "normalization_in_graph": self.normalization_in_graph}

    @classmethod
    def from_metadata(cls, values: Mapping[str, Any], where: str) -> ExportInfo:
        """The info :meth:`to_metadata` gave; `where` names the file in errors."""
        missing = [key for key in KEYS if key not in values]
        if missing:
            raise DcnnError(f"{where} lacks the dcnn metadata {', '.join(missing)}: it was not written by "
                            "`dcnn export`; export the model with `dcnn export RUN`.")
        try:
            preprocess = Preprocess.from_dict(values["preprocessing"])
        except (KeyError, TypeError, ValueError) as err:
            raise DcnnError(f"{where}: unreadable preprocessing metadata ({err}); export the model again.") from None
        return cls(values["dcnn_model"], preprocess, list(values["class_names"]), values["normalization_in_graph"])

    def to_strings(self) -> dict[str, str]:
        """The metadata as ONNX ``metadata_props``: each value JSON-encoded."""
        return {key: json.dumps(value) for key, value in self.to_metadata().items()}

    @classmethod
    def from_strings(cls, props: Mapping[str, str], where: str) -> ExportInfo:
        try:
            values = {key: json.loads(props[key]) for key in KEYS if key in props}
        except json.JSONDecodeError as err:
            raise DcnnError(f"{where}: metadata is not JSON ({err}); export the model again.") from None
        return cls.from_metadata(values, where)


def sidecar_path(path: str | Path) -> Path:
    """The JSON file holding the metadata of a torch.export file: ``model.pt2`` → ``model.json``."""
    return Path(path).with_suffix(".json")


def write_sidecar(path: str | Path, info: ExportInfo) -> Path:
    """Write the metadata beside a torch.export file, atomically."""
    target = sidecar_path(path)
    with atomic_output(target) as handle:
        handle.write((json.dumps(info.to_metadata(), indent=2) + "\n").encode())
    return target


def read_export_info(path: str | Path) -> ExportInfo:
    """The metadata of an exported model: an ``.onnx`` file's metadata_props, or the JSON beside a
    ``.pt2`` file."""
    path = Path(path)
    if not path.is_file():
        raise DcnnError(f"exported model {str(path)!r} not found; export one with `dcnn export RUN`.")
    if path.suffix == ".onnx":
        import onnx
        from google.protobuf.message import DecodeError

        try:
            proto = onnx.load(str(path), load_external_data=False)
        except (DecodeError, OSError) as err:
            raise DcnnError(f"{path} is not a readable ONNX file ({type(err).__name__}); export it again.") from None
        return ExportInfo.from_strings({p.key: p.value for p in proto.metadata_props}, str(path))
    sidecar = sidecar_path(path)
    try:
        values = json.loads(sidecar.read_text())
    except FileNotFoundError:
        raise DcnnError(f"{path} has no metadata file {sidecar.name} beside it; export it again with "
                        "`dcnn export RUN --format torch-export`.") from None
    except json.JSONDecodeError as err:
        raise DcnnError(f"{sidecar} is not JSON ({err}); export the model again.") from None
    return ExportInfo.from_metadata(values, str(sidecar))
