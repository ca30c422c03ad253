"""The gradient recorder (`track_gradients`) against norms computed by hand, its CSV round trip, its
continuation on resume, and the first/last-layer summary. (A run writing gradients.csv/png is
tests/train/test_every_option.py's case; the steps a run records, test_experiments_gradients.py's.)"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from dcnn.analysis.gradients import flow_summary
from dcnn.train.gradients import GradientHistory, GradientRecorder, read_gradients, write_gradients


def small_net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2),
                         nn.Linear(2, 2))


def test_recorder_takes_each_weight_layer_norm_by_depth():
    torch.manual_seed(0)
    net = small_net()
    net[5].weight.requires_grad_(False)  # frozen layers are left out
    recorder = GradientRecorder(net)
    assert recorder.layers == ["0", "4"]  # convolution, linear; not BN's per-channel scale
    net(torch.randn(5, 1, 6, 6)).square().sum().backward()
    recorder.record(step=1, epoch=1)
    by_hand = [math.sqrt(sum(g * g for g in net[i].weight.grad.flatten().tolist())) for i in (0, 4)]
    assert recorder.history().norms[0].tolist() == pytest.approx(by_hand, rel=1e-5)
    net[4].weight.grad = None  # a layer without gradient this step is recorded as NaN
    recorder.record(step=2, epoch=1)
    assert math.isnan(recorder.history().norms[1, 1].item())


def test_rows_past_a_resumed_step_are_dropped_and_csv_round_trips(tmp_path):
    net = small_net()
    recorder = GradientRecorder(net, tmp_path)
    net(torch.randn(2, 1, 6, 6)).sum().backward()
    for step in (1, 2, 3, 2):  # step 2 again: the run resumed from step 1's checkpoint
        recorder.record(step, epoch=1)
    history = recorder.history()
    assert history.steps == [1, 2]
    path = tmp_path / "g.csv"
    write_gradients(history, path)
    back = read_gradients(path)
    assert (back.layers, back.steps, back.epochs) == (history.layers, history.steps, history.epochs)
    torch.testing.assert_close(back.norms, history.norms, rtol=1e-5, atol=0)
    assert GradientRecorder(net, tmp_path).steps == []  # no gradients.csv in the folder yet


def test_flow_summary_and_history_totals_by_hand():
    norms = torch.tensor([[1e-6, 1e-2, 1.0], [3e-6, 2e-2, 3.0], [2e-6, float("nan"), 2.0]])
    history = GradientHistory(["a", "b", "c"], [1, 2, 3], [1, 1, 1], norms)
    summary = flow_summary(history)
    assert (summary.first, summary.last) == pytest.approx((2e-6, 2.0))
    assert summary.ratio == pytest.approx(1e-6)
    assert history.total()[0].item() == pytest.approx(math.sqrt(1e-12 + 1e-4 + 1.0))
    assert history.total()[2].item() == pytest.approx(math.sqrt(4e-12 + 4.0))  # NaN counts as no gradient


def test_a_resumed_run_continues_the_record_from_its_checkpoint(tmp_path):
    """What a resumed run does: the recorder of the new process reads gradients.csv (saved with the last
    checkpoint, here after step 2), and the steps it records replace any written after that checkpoint."""
    net = small_net()
    net(torch.randn(2, 1, 6, 6)).sum().backward()
    first = GradientRecorder(net, tmp_path)
    for step in (1, 2):
        first.record(step, epoch=1)
    first.save()
    assert (tmp_path / "gradients.png").stat().st_size > 0
    first.record(3, epoch=2)  # recorded, then the process died before the next checkpoint
    resumed = GradientRecorder(net, tmp_path)
    assert resumed.steps == [1, 2] and resumed.epochs == [1, 1]
    resumed.record(3, epoch=2)
    resumed.record(4, epoch=2)
    history = resumed.history()
    assert history.steps == [1, 2, 3, 4] and history.epochs == [1, 1, 2, 2]
    torch.testing.assert_close(history.norms[:2], first.history().norms[:2], rtol=1e-5, atol=0)
