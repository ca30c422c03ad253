"""`dcnn experiment vanishing-gradients` and `exploding-gradients` at their small size, through the CLI:
the files they write, and the directions the literature predicts (robust at this size: the ratios
are many orders of magnitude apart, and the unclipped run's loss overflows within a few steps)."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from dcnn.analysis.experiments import EXPERIMENTS
from dcnn.cli import app
from tests.test_cli import assert_user_error, dcnn_in_process


def run_cli(*args: str) -> str:
    done = CliRunner().invoke(app, ["experiment", *args])
    assert done.exit_code == 0, done.output
    return done.output


@pytest.fixture(scope="module")
def vanishing(tmp_path_factory):
    out = tmp_path_factory.mktemp("vanishing")
    printed = run_cli("vanishing-gradients", "--out", str(out))
    return out, printed


def rows_of(out) -> dict[str, dict[str, str]]:
    rows = list(csv.DictReader((out / "table.csv").read_text().splitlines()))
    return {row[next(iter(row))]: row for row in rows}


def test_vanishing_gradients_sigmoid_vanishes_relu_and_shortcuts_do_not(vanishing):
    out, printed = vanishing
    rows = rows_of(out)
    assert list(rows) == ["plain, sigmoid", "plain, ReLU", "residual, ReLU"]
    ratio = {name: float(row["first / last"]) for name, row in rows.items()}
    assert ratio["plain, sigmoid"] < 1e-8  # 19 sigmoid slopes of at most 1/4 between them: ~1e-13
    assert ratio["plain, ReLU"] > 1e-2 and ratio["residual, ReLU"] > 1e-2
    for row in rows.values():  # the ratio is the table's own two columns divided
        assert float(row["first / last"]) == pytest.approx(
            float(row["first-layer gradient"]) / float(row["last-layer gradient"]), rel=1e-6)
    # Option-A shortcuts have no parameters: the residual net has exactly the plain nets' weights.
    assert {row["parameters"] for row in rows.values()} == {rows["plain, ReLU"]["parameters"]}
    assert "plain, sigmoid" in printed and "saved in" in printed


def test_vanishing_gradients_writes_table_figures_and_variant_runs(vanishing):
    out, _ = vanishing
    assert (out / "gradients.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "table.md").read_text().count("\n| ") == 4  # header and three nets
    figures = json.loads((out / "figures.json").read_text())
    runs = figures["runs"]
    assert [r["label"] for r in runs] == ["plain, sigmoid", "plain, ReLU", "residual, ReLU"]
    for run in runs:
        assert len(run["gradients"]["profile"]) == len(run["gradients"]["layers"]) == 20  # 6n+2, n = 3
        assert len(run["losses"]) == len(run["gradients"]["total"]) == 12
    history = (out / "plain-sigmoid" / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 13  # header, the evaluation before training, 12 steps
    assert (out / "residual-relu" / "model.safetensors").is_file()
    assert "shortcut: A" in (out / "residual-relu" / "config.yaml").read_text()


def test_exploding_gradients_without_clipping_diverges_with_clipping_trains(tmp_path):
    run_cli("exploding-gradients", "--out", str(tmp_path))
    runs = {r["label"]: r for r in json.loads((tmp_path / "figures.json").read_text())["runs"]}
    free, clipped = runs["no clipping"], runs["gradient norm clipped to 1"]
    assert free["diverged_at"] is not None and free["diverged_at"] <= 5
    assert clipped["diverged_at"] is None and len(clipped["losses"]) == 12
    assert clipped["losses"][-1] < clipped["losses"][0] / 10  # it recovers from the blown-up start
    assert max(clipped["gradients"]["total"]) > 100  # the gradients it clipped were large
    assert rows_of(tmp_path)["no clipping"]["steps"] == f"diverged at step {free['diverged_at']}"
    assert (tmp_path / "exploding.png").is_file()


def test_list_names_every_experiment_with_its_description():
    printed = run_cli("--list")
    for experiment in EXPERIMENTS.values():
        assert f"{experiment.name}: {experiment.description[:40]}" in " ".join(printed.split())
    assert run_cli() == printed  # no name lists them too


def test_experiment_user_errors_are_one_line(tmp_path):
    assert_user_error(dcnn_in_process("experiment", "vanishing-gradient"), "unknown experiment",
                      "vanishing-gradients")
    assert_user_error(dcnn_in_process("experiment", "vanishing-gradients", str(tmp_path)), "takes no RUN")
    assert_user_error(dcnn_in_process("experiment", "vanishing-gradients", "--size", "huge"),
                      "--size 'huge'", "small, full")
    assert_user_error(dcnn_in_process("experiment", "vanishing-gradients", "--steps", "0"), "at least 1")
