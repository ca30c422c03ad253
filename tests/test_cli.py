"""The `dcnn` command as a user runs it: output, exit codes, one-line errors."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from unittest import mock

import pytest
from PIL import Image

from dcnn import cli
from dcnn.models import list_models


def dcnn(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dcnn.cli", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd)


def dcnn_in_process(*args: str) -> subprocess.CompletedProcess:
    """The command's `main()` in this process (no interpreter start-up: 3-5 s a call), with its
    output and exit status captured as a subprocess would report them."""
    out, err, code = io.StringIO(), io.StringIO(), 0
    with redirect_stdout(out), redirect_stderr(err), mock.patch.object(sys, "argv", ["dcnn", *args]):
        try:
            cli.main()
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return subprocess.CompletedProcess(["dcnn", *args], code, out.getvalue(), err.getvalue())


def assert_user_error(done: subprocess.CompletedProcess, *fragments: str) -> None:
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    text = " ".join(done.stderr.split())
    for fragment in fragments:
        assert fragment in text, text


def test_help_lists_the_commands():
    done = dcnn("--help")
    assert done.returncode == 0
    for command in ("models", "summary", "train", "eval", "predict", "demo"):
        assert command in done.stdout


def test_models_lists_filters_and_tabulates():
    done = dcnn("models", "lenet*")
    assert done.stdout.split() == ["lenet5", "lenet5_modern"]
    assert len(dcnn("models").stdout.split()) == len(list_models())
    table = dcnn("models", "--table", "lenet5")
    assert "1998" in table.stdout and "60,000" in table.stdout


def test_summary_shows_layers_and_total():
    done = dcnn("summary", "lenet5")
    assert done.returncode == 0
    assert "[1, 16, 10, 10]" in done.stdout and "1,516" in done.stdout
    assert "total parameters: 60,000" in done.stdout


def test_user_errors_are_one_line_without_traceback(tmp_path):
    assert_user_error(dcnn("summary", "lenet6"), "unknown model 'lenet6'", "lenet5")  # a real process too
    run = dcnn_in_process
    assert_user_error(run("train", "--model", "lenet5", "--lr", "-1"), "lr: Input should be greater than 0")
    assert_user_error(run("train", "--set", "optimiser=adam"), "optimiser: unknown option")
    assert_user_error(run("train", "--recipe", str(tmp_path / "none.yaml")), "not found")
    assert_user_error(run("eval", str(tmp_path / "missing.safetensors")), "not found")
    assert_user_error(run("summary", "lenet5", "--input-size", "1,32"), "three positive integers")
    assert_user_error(run("summary", "vgg16", "--input-size", "3,16,16"), "below vgg16's minimum of 32x32")
    assert_user_error(run("summary", "lenet5", "--input-size", "1,20,20"), "below lenet5's minimum of 32x32")
    assert_user_error(run("predict", str(tmp_path), "x.png", "--top", "-1"), "--top -1", "at least 1")
    assert_user_error(run("predict", str(tmp_path), "x.png", "--top", "0"), "--top 0", "at least 1")
    assert_user_error(run("train", "--model", "lenet5", "--dataset", "mnist_sample", "--set",
                          "model_options={batchnorm: true}"),
                      "model 'lenet5' has no option 'batchnorm'", "Its options are:", "rbf_scale")


@pytest.mark.slow
def test_train_eval_predict_round_trip(tmp_path, images_dir):
    run_dir = tmp_path / "run"
    done = dcnn("train", "--model", "lenet5", "--dataset", "mnist_sample", "--epochs", "1", "--no-progress",
                "--run-dir", str(run_dir), "--set", "train_limit=1000", "--set", "val_size=100", "--lr", "0.05",
                "--batch-size", "16", "--set", "model_options={rbf_scale: 0.1}", "--track-gradients")
    assert done.returncode == 0, done.stderr
    steps = (run_dir / "gradients.csv").read_text().splitlines()[1:]
    assert len(steps) == 63 and (run_dir / "gradients.png").is_file()  # one row per step: 1000 images / 16
    accuracy = float(re.search(r"test accuracy: ([\d.]+)%", done.stdout).group(1))
    assert accuracy > 30  # 56 steps of LeNet-5 reach 47%; chance (a broken pipeline) is 10%

    extended = dcnn("train", "--resume", str(run_dir), "--epochs", "2", "--no-progress")
    assert extended.returncode == 0, extended.stderr
    assert len((run_dir / "metrics.csv").read_text().splitlines()) == 3  # header + 2 epochs
    assert_user_error(dcnn("train", "--resume", str(run_dir), "--lr", "0.1"), "lr cannot change")

    evaluated = dcnn("eval", str(run_dir), "--out-dir", str(tmp_path / "report"))
    assert evaluated.returncode == 0, evaluated.stderr
    assert "per class: 0 " in evaluated.stdout
    assert (tmp_path / "report" / "confusion_matrix.png").is_file()

    digit = tmp_path / "digit.png"
    Image.new("L", (40, 40), 255).save(digit)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    predicted = dcnn("predict", str(run_dir), str(digit), str(images_dir / "chelsea.png"), str(broken), "--invert")
    assert predicted.returncode == 1
    lines = predicted.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(digit)) and lines[0].count("%") == 5
    assert "broken.png" in predicted.stderr and "Traceback" not in predicted.stderr
    assert "1 of 3 images could not be read" in predicted.stderr
