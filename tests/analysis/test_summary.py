"""Per-layer summaries against hand computations: output sizes N = (W − F + 2P)/S + 1 (Dumoulin &
Visin 2016), MACs k·k·c_in·c_out·H_out·W_out, receptive fields (Araujo et al. 2019), VGG-16's
figures, GoogLeNet's auxiliary rows, and the CLI's formats and errors."""

from __future__ import annotations

import csv
import io
import json

import torch
import torch.nn as nn

from dcnn.analysis.summary import estimate_training_memory, measure_training_step, summarize, to_csv
from dcnn.models import create_model
from tests.test_cli import assert_user_error, dcnn_in_process


def out_size(w: int, f: int, p: int, s: int) -> int:
    """N = (W − F + 2P)/S + 1, rounded down as torch does."""
    return (w - f + 2 * p) // s + 1


def conv_macs(k: int, c_in: int, c_out: int, h: int, w: int) -> int:
    return k * k * c_in * c_out * h * w


def small_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 5, stride=1, padding=2), nn.ReLU(), nn.MaxPool2d(2, 2),   # 32 → 32 → 16
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),  # 16 → 8
        nn.Conv2d(16, 4, 3, stride=1, padding=0),                                 # 8 → 6
        nn.Flatten(), nn.Linear(4 * 6 * 6, 10),
    )


def test_small_net_shapes_macs_and_memory_by_hand():
    summary = summarize(small_net(), (3, 32, 32), batch_size=2)
    rows = {row.name: row for row in summary.rows}
    h1 = out_size(32, 5, 2, 1)
    h2 = out_size(h1, 2, 0, 2)
    h3 = out_size(h2, 3, 1, 2)
    h4 = out_size(h3, 3, 0, 1)
    assert (h1, h2, h3, h4) == (32, 16, 8, 6)
    assert rows["0"].output_shape == (2, 8, h1, h1)
    assert rows["2"].output_shape == (2, 8, h2, h2)
    assert rows["3"].output_shape == (2, 16, h3, h3)
    assert rows["6"].output_shape == (2, 4, h4, h4)
    # MACs from torch's flop counter agree with the hand formula (batch of 2; linear: in·out).
    assert rows["0"].macs == 2 * conv_macs(5, 3, 8, h1, h1)
    assert rows["3"].macs == 2 * conv_macs(3, 8, 16, h3, h3)
    assert rows["6"].macs == 2 * conv_macs(3, 16, 4, h4, h4)
    assert rows["8"].macs == 2 * 144 * 10
    assert rows["1"].macs == rows["2"].macs == rows["4"].macs == 0
    assert rows["0"].params == 3 * 8 * 25 + 8 and rows["4"].params == 32
    assert rows["0"].activation_bytes == 2 * 8 * 32 * 32 * 4
    # Kept for backward: input, conv, pool, BN, linear outputs; not ReLU or flatten.
    assert [r.name for r in summary.rows if r.kept] == ["input", "0", "2", "3", "4", "6", "8"]
    kept = 3 * 32 * 32 + 8 * 32 * 32 + 8 * 16 * 16 + 16 * 8 * 8 * 2 + 4 * 6 * 6 + 10
    assert summary.totals().kept_values == 2 * kept
    totals = summary.totals()
    assert totals.params == summary.model_params == sum(p.numel() for p in small_net().parameters())
    assert totals.macs == sum(r.macs for r in summary.rows)

    estimate = estimate_training_memory(summary, "sgd")
    params = summary.model_params
    assert estimate.activations == 2 * kept * 4
    assert (estimate.parameters, estimate.gradients, estimate.optimizer_state) == (4 * params, 4 * params, 4 * params)
    assert estimate_training_memory(summary, "adam").optimizer_state == 8 * params


def test_receptive_fields_of_known_stacks():
    three = nn.Sequential(*(nn.Conv2d(1, 1, 3, padding=1) for _ in range(3)))
    fields = [row.field for row in summarize(three, (1, 16, 16)).rows]
    assert [f.size for f in fields] == [(1, 1), (3, 3), (5, 5), (7, 7)]
    assert all(f.jump == (1, 1) and f.start == (0, 0) for f in fields)
    # Conv-pool stack, by the recurrences r += (k−1)·j, j *= s, start += ((k−1)/2 − p)·j:
    # conv 3/1 p0: r 3, j 1, start 1; pool 2/2: r 4, j 2, start 1.5; conv 3/1 p1: r 8, j 2, start 1.5;
    # conv 5/2 p2 dilation 1: r 16, j 4, start 1.5; 1x7 conv p(0,3): r (16, 40), start (1.5, 1.5).
    stack = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.Conv2d(2, 2, 3, padding=1),
                          nn.Conv2d(2, 2, 5, stride=2, padding=2), nn.Conv2d(2, 2, (1, 7), padding=(0, 3)))
    fields = [(row.field.size, row.field.jump, row.field.start) for row in summarize(stack, (1, 34, 34)).rows[1:]]
    assert fields == [((3, 3), (1, 1), (1, 1)), ((4, 4), (2, 2), (1.5, 1.5)), ((8, 8), (2, 2), (1.5, 1.5)),
                      ((16, 16), (4, 4), (1.5, 1.5)), ((16, 40), (4, 4), (1.5, 1.5))]
    dilated = nn.Sequential(nn.Conv2d(1, 1, 3, dilation=2, padding=2))
    assert summarize(dilated, (1, 9, 9)).rows[1].field.size == (5, 5)


class TwoPaths(nn.Module):
    """A residual-style sum of a 3x3 path and a 1x1 path: the sum has the larger field."""

    def __init__(self) -> None:
        super().__init__()
        self.wide = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 3, padding=1))
        self.narrow = nn.Conv2d(1, 1, 1)
        self.after = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after(self.wide(x) + self.narrow(x))


def test_branches_take_the_largest_field_over_paths():
    rows = {row.name: row.field.size for row in summarize(TwoPaths(), (1, 8, 8)).rows}
    assert rows["wide.1"] == (5, 5) and rows["narrow"] == (1, 1) and rows["after"] == (7, 7)


def vgg16_activation_values() -> int:
    """Input + every conv, pool and FC output of VGG-16 at 224 (ReLU in place), per image."""
    total, size = 3 * 224 * 224, 224
    for convs, channels in ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512)):
        total += convs * channels * size * size
        size //= 2
        total += channels * size * size  # the pool
    return total + 4096 + 4096 + 1000


def test_vgg16_parameters_macs_and_activations():
    with torch.device("meta"):
        model = create_model("vgg16")
    summary = summarize(model, (3, 224, 224))
    totals = summary.totals()
    assert totals.params == summary.model_params == 138_357_544
    assert totals.macs == 15_470_264_320  # ~15.47 GMACs: 15.35 G of convolutions + 0.12 G of FC layers
    assert vgg16_activation_values() == 15_237_608
    assert totals.kept_values == vgg16_activation_values()  # ~61 MB in fp32, not the quoted 24M / 93 MB
    assert summary.rows[[r.name for r in summary.rows].index("features.stage5.pool")].field.size == (212, 212)


def test_googlenet_shows_auxiliary_heads_as_rows_that_add_up():
    with torch.device("meta"):
        model = create_model("googlenet")
    summary = summarize(model, (3, 224, 224))
    aux = [row for row in summary.rows if row.aux]
    assert aux and all(row.name.startswith("aux_heads.") for row in aux)
    assert summary.totals(aux=True).params == summary.model_params == 13_378_280
    assert summary.totals(aux=False).params == 6_998_552
    assert sum(row.params for row in aux) == 3_188_840 + 3_190_888


def test_measured_peak_of_a_training_step():
    model = small_net()
    measured = measure_training_step(model, (3, 32, 32), batch_size=4, device="cpu")
    params = 4 * sum(p.numel() for p in model.parameters())
    assert measured.device == "cpu" and "torch.profiler" in measured.method
    assert measured.peak_bytes > 3 * params  # parameters, gradients and momentum are all alive at the step


def test_cli_formats_parse_and_add_up():
    report = json.loads(dcnn_in_process("summary", "googlenet", "--format", "json").stdout)
    assert report["totals"]["params"] == 13_378_280 and report["totals_without_aux"]["params"] == 6_998_552
    assert sum(r["params"] for r in report["rows"]) == report["totals"]["params"]
    assert sum(r["params"] for r in report["rows"] if not r["aux"]) == 6_998_552
    assert "optimizer state" in report["training_memory"]["accounting"]

    with torch.device("meta"):
        lenet = create_model("lenet5")
    table = list(csv.DictReader(io.StringIO(to_csv(summarize(lenet, (1, 32, 32))))))
    layers = [row for row in table if not row["layer"].startswith("total")]
    assert sum(int(row["params"]) for row in layers) == int(table[-1]["params"]) == 60_000

    markdown = dcnn_in_process("summary", "googlenet", "--format", "md", "--optimizer", "adam").stdout.splitlines()
    assert markdown[0].startswith("| layer | type | output shape |") and set(markdown[1]) <= set("|-")
    rows = {line.split(" | ")[0].lstrip("| "): line for line in markdown if line.startswith("| ")}
    assert rows["aux_heads.inception_4a.fc"].rstrip(" |").endswith("aux")
    assert "| 13,378,280 |" in rows["total"] and "| 6,998,552 |" in rows["total without aux"]
    assert any("totals include the auxiliary classifiers" in line for line in markdown)
    assert any("optimizer state" in line and "(2x)" in line for line in markdown)


def test_cli_measure_and_errors():
    done = dcnn_in_process("summary", "lenet5", "--batch", "2", "--measure")
    assert done.returncode == 0
    assert "measured peak of one training step on" in done.stdout and "estimate" in done.stdout
    assert_user_error(dcnn_in_process("summary", "googlenet", "--input-size", "3,8,8"),
                      "below googlenet's minimum of")
    assert_user_error(dcnn_in_process("summary", "lenet5", "--format", "xml"),
                      "--format 'xml'", "table, json, csv or md")
