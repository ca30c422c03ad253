"""Exporting: metadata round trips, a dynamic batch, folded normalization, all-or-nothing writes,
one-line errors."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from dcnn.data.preprocess import Preprocess
from dcnn.data.whitening import fit_whitening
from dcnn.errors import DcnnError
from dcnn.evaluate.run import preprocess_of
from dcnn.export import export_classifier, read_export_info
from dcnn.export.exporter import MAX_OPSET, MIN_OPSET
from dcnn.export.runtime import OnnxClassifier
from dcnn.models import create_model
from dcnn.models.modelfile import load_model_file, read_model_metadata
from tests.export.conftest import CLASSES, OPTIONS
from tests.test_cli import assert_user_error, dcnn_in_process


def test_onnx_metadata_round_trips_the_preprocessing_and_class_names(run_dir, exported):
    saved = preprocess_of(read_model_metadata(run_dir / "model.safetensors"))
    info = read_export_info(exported)
    assert (info.model, info.class_names, info.normalization_in_graph) == ("lenet5_modern", CLASSES, None)
    assert info.preprocess == saved and info.preprocess.to_dict() == saved.to_dict()
    assert OnnxClassifier(exported).info == info  # what onnxruntime reads from the same file


def test_dynamic_batch_runs_batches_of_one_and_three_like_the_model(run_dir, exported):
    model, _ = load_model_file(run_dir / "model.safetensors")
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch" and [o.name for o in session.get_outputs()] == ["logits"]
    for batch in (1, 3):
        x = torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(batch))
        (logits,) = session.run(None, {"input": x.numpy()})
        with torch.no_grad():
            assert np.abs(logits - model(x).numpy()).max() < 1e-5


def test_folded_whitening_makes_the_graph_read_pixels(tmp_path):
    """A ZCA-whitened model exports only with the whitening in its graph: the graph then maps pixels in
    [0, 1] to what the model computes on the whitened pixels, and the metadata says so."""
    torch.manual_seed(0)
    model = create_model("lenet5_modern", num_classes=3, maps=(2, 2, 4)).eval()
    images = torch.randint(0, 256, (64, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    prep = Preprocess((1, 28, 28), (0.5,), (0.25,), "stretch").with_whitening(fit_whitening(images, "zca", 0.1))
    names = ["a", "b", "c"]
    with pytest.raises(DcnnError, match=r"whitened images.*--fold-normalization"):
        export_classifier(model, prep, names, tmp_path / "plain.onnx")
    assert not (tmp_path / "plain.onnx").exists()

    path = export_classifier(model, prep, names, tmp_path / "folded.onnx", fold_normalization=True)
    session = OnnxClassifier(path)
    pixels = images[:2].float() / 255
    with torch.no_grad():
        expected = model(prep.whitening.apply(pixels))
    assert (session(pixels) - expected).abs().max() < 1e-4
    info = session.info
    assert info.normalization_in_graph == prep.to_dict() and info.normalization_in_graph["whitening"] == "zca"
    assert (info.preprocess.mean, info.preprocess.std, info.preprocess.whitening) == ((0.0,), (1.0,), None)
    assert info.preprocess.normalize(pixels).equal(pixels)  # the consumer passes pixels through


def test_torch_export_writes_program_and_metadata_all_or_nothing(run_dir, tmp_path):
    target = tmp_path / "model.pt2"
    target.write_bytes(b"an earlier export")
    (tmp_path / "model.json").mkdir()  # the metadata cannot be written: the export fails as a whole
    done = dcnn_in_process("export", str(run_dir), "--format", "torch-export", "--out", str(target))
    assert_user_error(done, f"cannot write {tmp_path / 'model.json'}")
    assert target.read_bytes() == b"an earlier export" and sorted(p.name for p in tmp_path.iterdir()) == [
        "model.json", "model.pt2"]  # no temporary file left

    (tmp_path / "model.json").rmdir()
    done = dcnn_in_process("export", str(run_dir), "--format", "torch-export", "--out", str(target))
    assert done.returncode == 0, done.stderr
    program = torch.export.load(target).module()
    model, meta = load_model_file(run_dir / "model.safetensors")
    x = torch.rand(1, 1, 28, 28)
    with torch.no_grad():
        assert (program(x) - model(x)).abs().max() < 1e-6
    info = read_export_info(target)
    assert info.preprocess == preprocess_of(meta) and info.class_names == CLASSES
    assert json.loads((tmp_path / "model.json").read_text())["dcnn_model"] == "lenet5_modern"


def test_bad_export_requests_get_one_line(run_dir, tmp_path):
    run = dcnn_in_process
    assert_user_error(run("export", str(run_dir), "--format", "tflite"), "--format 'tflite'", "onnx or torch-export")
    for opset in (MIN_OPSET - 1, MAX_OPSET + 1):
        assert_user_error(run("export", str(run_dir), "--opset", str(opset)), f"--opset {opset} is out of range",
                          f"{MIN_OPSET} to {MAX_OPSET}")
    assert_user_error(run("export", str(tmp_path)), "has no model.safetensors", "dcnn train --resume")
    assert_user_error(run("predict", str(tmp_path), str(tmp_path / "x.png"), "--runtime", "onnx"),
                      "has no exported model model.onnx", f"dcnn export {tmp_path}")
    assert_user_error(run("predict", str(run_dir), str(tmp_path / "x.png"), "--runtime", "tvm"), "--runtime 'tvm'")
    (tmp_path / "empty").mkdir()
    assert_user_error(run("predict", str(run_dir), str(tmp_path / "empty")), "holds no image files")
    with pytest.raises(DcnnError, match="3 class names for a model with 10 outputs"):
        export_classifier(create_model("lenet5_modern", **OPTIONS), Preprocess.for_model("lenet5_modern"),
                          ["a", "b", "c"], tmp_path / "x.onnx")
    assert not list(tmp_path.glob("*.onnx"))
    (tmp_path / "fake.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(DcnnError, match="not a readable ONNX file"):
        read_export_info(tmp_path / "fake.onnx")
    assert_user_error(run("predict", str(tmp_path / "fake.onnx"), str(tmp_path / "x.png"), "--runtime", "onnx"),
                      "fake.onnx is not an ONNX model onnxruntime can load")
