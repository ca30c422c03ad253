"""`dcnn predict` on many images: the exported graph in onnxruntime predicts what the model does, and
the fast torch path what the plain model does, in bf16 too; progress bars only on a terminal."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from dcnn.device import native_bf16
from dcnn.errors import DcnnError
from dcnn.evaluate.run import image_paths, predict_images
from dcnn.export.fast import PRECISIONS, idle_cores
from dcnn.export.predict import load_predictor
from tests.test_cli import assert_user_error, dcnn_in_process


def test_onnx_runtime_and_fast_path_predict_what_the_model_predicts(run_dir, exported, image_folder, tmp_path):
    images = image_paths([image_folder])
    ranked = {}
    for runtime, fast in (("torch", False), ("torch", True), ("onnx", False)):
        predictor = load_predictor(run_dir, runtime, "cpu", fast=fast)
        predictions, failures = predict_images(predictor.classify, predictor.preprocess, predictor.class_names,
                                               images, top=10, batch_size=4)
        assert not failures and [path for path, _ in predictions] == images
        ranked[runtime, fast] = [dict(top) for _, top in predictions]
    reference = ranked["torch", False]
    for other in (ranked["torch", True], ranked["onnx", False]):
        for expected, got in zip(reference, other, strict=True):
            assert expected.keys() == got.keys()
            assert max(abs(expected[name] - got[name]) for name in expected) < 1e-6

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG, but truncated")
    shown = {}
    for options in ((), ("--runtime", "onnx"), ("--no-fast",)):
        done = dcnn_in_process("predict", str(run_dir), str(image_folder), str(broken), "--top", "3", *options)
        assert done.returncode == 1 and done.stderr.count("error: ") == 1, done.stderr
        assert "broken.png is not an image file" in done.stderr
        assert "1 of 8 images could not be read" in done.stderr
        shown[options] = done.stdout.splitlines()
    assert len(shown[()]) == 7 and shown[()] == shown["--runtime", "onnx"] == shown["--no-fast",]


def test_progress_bar_only_on_a_terminal(run_dir, image_folder, monkeypatch, tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(image_folder / "a.png", one / "a.png")
    piped = dcnn_in_process("predict", str(run_dir), str(one))
    assert piped.returncode == 0 and piped.stderr == ""
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich then takes stderr for a terminal
    shown = dcnn_in_process("predict", str(run_dir), str(one))
    assert "classifying" in shown.stderr and "1/1" in shown.stderr
    assert dcnn_in_process("predict", str(run_dir), str(one), "--no-progress").stderr == ""


def test_threads_are_the_idle_cores_unless_given(run_dir, image_folder, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    for load, idle in ((0.2, 4), (1.6, 2), (2.5, 2), (3.6, 1), (9.0, 1)):  # rounded, at least 1
        monkeypatch.setattr(os, "getloadavg", lambda load=load: (load, 0.0, 0.0))
        assert idle_cores() == idle

    def no_load_average() -> tuple[float, float, float]:
        raise OSError("not here")

    monkeypatch.setattr(os, "getloadavg", no_load_average)
    assert idle_cores() == 4
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(os, "getloadavg", lambda: (3.0, 0.0, 0.0))
        load_predictor(run_dir)
        assert torch.get_num_threads() == 1
        done = dcnn_in_process("predict", str(run_dir), str(image_folder / "a.png"), "--threads", "3")
        assert done.returncode == 0 and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    assert_user_error(dcnn_in_process("predict", str(run_dir), "a.png", "--threads", "0"), "--threads 0")


def test_bf16_precision_predicts_the_fp32_classes_and_is_refused_where_it_does_not_apply(
        run_dir, image_folder, monkeypatch):
    images = image_paths([image_folder])
    if native_bf16(torch.device("cpu")):
        top1 = {}
        for precision in PRECISIONS:
            predictor = load_predictor(run_dir, device="cpu", precision=precision)
            assert predictor.classify.precision == precision
            predictions, _ = predict_images(predictor.classify, predictor.preprocess, predictor.class_names,
                                            images, top=1, batch_size=4)
            top1[precision] = [top[0][0] for _, top in predictions]
        assert top1["bf16"] == top1["fp32"]
        done = dcnn_in_process("predict", str(run_dir), str(image_folder), "--precision", "bf16", "--top", "1")
        assert done.returncode == 0 and len(done.stdout.splitlines()) == len(images), done.stderr
        recomputed = predictor.classify.recomputed  # the bf16 predictor above, on the same images
        assert f"bf16: {recomputed} of {len(images)} images were close calls, computed again in fp32" in done.stderr
    for options, message in ((("--precision", "fp16"), "--precision 'fp16': choose fp32 or bf16"),
                             (("--precision", "bf16", "--runtime", "onnx"), "leave out --runtime onnx"),
                             (("--precision", "bf16", "--no-fast"), "leave out --no-fast")):
        assert_user_error(dcnn_in_process("predict", str(run_dir), str(image_folder), *options), message)
    monkeypatch.setattr("dcnn.export.predict.native_bf16", lambda device: False)
    with pytest.raises(DcnnError, match="does not compute bf16 natively"):
        load_predictor(run_dir, device="cpu", precision="bf16")
