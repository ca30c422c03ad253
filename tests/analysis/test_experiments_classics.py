"""The classic comparisons at their small size (12 steps): what is deterministic about each is asserted,
against hand computations; which variant learns best is not (12 steps decide nothing), except where
the gap is orders of magnitude (the sigmoid's vanishing gradient)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from dcnn.layers.lrn import LocalResponseNorm2d
from dcnn.layers.pooling import LPPool2d, StochasticPool2d
from dcnn.models.modelfile import load_model_file
from tests.analysis.test_experiments_gradients import rows_of, run_cli


def experiment(name: str, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp(name)
    run_cli(name, "--out", str(out))
    return out, rows_of(out), json.loads((out / "figures.json").read_text())["runs"]


def model_of(out, variant: str) -> torch.nn.Module:
    return load_model_file(out / variant / "model.safetensors")[0].eval()


def params(row: dict[str, str]) -> int:
    return int(row["parameters"].replace(",", ""))


def test_pooling_layers_compute_their_window_functions(tmp_path_factory):
    out, rows, _ = experiment("pooling", tmp_path_factory)
    assert list(rows) == ["max", "avg", "stochastic", "l2"]
    assert len({params(row) for row in rows.values()}) == 1  # pooling has no parameters
    window = torch.tensor([[1.0, 2.0, 0.0, 0.0], [3.0, 4.0, 0.0, 0.0], [0.0, 0.0, 5.0, 0.0],
                           [0.0, 0.0, 0.0, 0.0]]).view(1, 1, 4, 4)
    expected = {"max": [[4, 0], [0, 5]], "avg": [[2.5, 0], [0, 1.25]],
                "stochastic": [[30 / 10, 0], [0, 5]],  # Σ a² / Σ a, eq. 5 of Zeiler & Fergus 2013
                "l2": [[30**0.5, 0], [0, 5]]}
    kinds = {"max": torch.nn.MaxPool2d, "avg": torch.nn.AvgPool2d, "stochastic": StochasticPool2d, "l2": LPPool2d}
    for name, values in expected.items():
        model = model_of(out, name)
        pool = model.stages[1][0]  # between stages 1 and 2
        assert type(pool) is kinds[name]
        torch.testing.assert_close(pool(window)[0, 0], torch.tensor(values, dtype=torch.float32))
        with torch.no_grad():
            maps = [tuple(m.shape[-2:]) for m in (model.stages[:k + 1](model.stem(torch.zeros(1, 1, 16, 16)))
                                                  for k in range(3))]
        assert maps == [(16, 16), (8, 8), (4, 4)]


def test_dropout_and_batch_norm_variants_and_their_gaps(tmp_path_factory):
    out, rows, runs = experiment("dropout-batchnorm", tmp_path_factory)
    assert list(rows) == ["neither", "dropout 0.3", "batch norm", "both"]
    for row, run in zip(rows.values(), runs, strict=True):
        final = run["evals"][-1]
        assert float(row["gap"]) == pytest.approx(final["train_eval_acc"] - final["val_acc"], abs=1e-3)
        assert [e["step"] for e in run["evals"]] == [0, 6, 12] and "val_acc" in final
    # Batch norm replaces each conv's bias (C) by a scale and a shift (2C): C more per conv, by hand
    # for the stem (4), two convs at 4, two at 8, two at 8 maps.
    assert params(rows["batch norm"]) - params(rows["neither"]) == 4 + 2 * 4 + 2 * 8 + 2 * 8
    for variant, drop in (("neither", 0), ("dropout", 0.3), ("batchnorm", 0), ("both", 0.3)):
        model = model_of(out, variant)
        assert sorted({m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}) == ([drop] if drop else [])
        has_bn = any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
        assert has_bn == (variant in ("batchnorm", "both"))
    assert (out / "overfitting.png").is_file() and (out / "comparison.png").is_file()


def test_three_3x3_convs_have_27_c2_weights_against_49_c2(tmp_path_factory):
    _, rows, _ = experiment("conv3x3-vs-7x7", tmp_path_factory)
    c = 8
    assert int(rows["three 3x3"]["conv weights per block"].replace(",", "")) == 3 * (3 * 3 * c * c) == 1728
    assert int(rows["one 7x7"]["conv weights per block"].replace(",", "")) == 7 * 7 * c * c == 3136
    stem, head = 3 * 3 * 1 * c + 2 * c, c * 10 + 10  # a 3x3 conv-BN on the 1-channel input; the classifier
    assert params(rows["three 3x3"]) == stem + 3 * 3 * (3 * 3 * c * c + 2 * c) + head
    assert params(rows["one 7x7"]) == stem + 3 * (7 * 7 * c * c + 2 * c) + head


def test_optimizers_start_from_the_same_net_and_batch(tmp_path_factory):
    out, rows, runs = experiment("optimizers", tmp_path_factory)
    assert list(rows) == ["SGD", "SGD, momentum 0.9", "RMSProp", "Adam"]
    assert len({run["losses"][0] for run in runs}) == 1  # the first step's loss is taken before any update
    # Momentum's buffer starts at the first gradient, so SGD with and without it take the same first
    # step (the same second loss); from the second step on, every optimizer has moved differently.
    assert runs[0]["losses"][1] == runs[1]["losses"][1]
    assert len({tuple(run["losses"][:3]) for run in runs}) == 4
    configs = {v: yaml.safe_load((out / v / "config.yaml").read_text()) for v in ("sgd", "momentum", "rmsprop", "adam")}
    assert [(c["optimizer"], c["lr"], c["momentum"]) for c in configs.values()] == [
        ("sgd", 0.05, 0.0), ("sgd", 0.05, 0.9), ("rmsprop", 0.001, None), ("adam", 0.001, None)]


def test_activations_sigmoid_gradient_vanishes_in_the_14_layer_net(tmp_path_factory):
    out, rows, _ = experiment("activations", tmp_path_factory)
    ratio = {name: float(row["first / last gradient"]) for name, row in rows.items()}
    assert ratio["sigmoid"] < 1e-5 and ratio["tanh"] > 1e-2 and ratio["relu"] > 1e-2
    for act, kind in (("sigmoid", torch.nn.Sigmoid), ("tanh", torch.nn.Tanh), ("relu", torch.nn.ReLU)):
        acts = {type(m) for m in model_of(out, act).modules() if type(m) in (torch.nn.Sigmoid, torch.nn.Tanh,
                                                                            torch.nn.ReLU)}
        assert acts == {kind}
        assert len(json.loads((out / "figures.json").read_text())["runs"][0]["gradients"]["layers"]) == 14
        # the same lr for the three, low enough for the unnormalized ReLU net (at 0.05 its units died)
        assert yaml.safe_load((out / act / "config.yaml").read_text())["lr"] == 0.01


def test_lrn_adds_no_parameters_batch_norm_c_per_conv(tmp_path_factory):
    out, rows, _ = experiment("lrn-vs-batchnorm", tmp_path_factory)
    none, lrn, bn = (params(rows[k]) for k in ("no normalization", "LRN", "batch norm"))
    # Three 5x5 convs (8, 8 and 16 maps) on RGB and a classifier, by hand, with biases:
    assert none == (5 * 5 * 3 * 8 + 8) + (5 * 5 * 8 * 8 + 8) + (5 * 5 * 8 * 16 + 16) + (16 * 10 + 10)
    assert lrn == none and bn == none + 8 + 8 + 16
    norms = [m for m in model_of(out, "lrn").modules() if isinstance(m, LocalResponseNorm2d)]
    assert len(norms) == 3 and {(m.size, m.alpha, m.beta, m.k) for m in norms} == {(5, 1e-4, 0.75, 2.0)}
