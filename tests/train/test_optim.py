from __future__ import annotations

import math

import pytest
import torch

from dcnn.train import make_config
from dcnn.train.optim import build_optimizer, build_scheduler, l1_penalty


def lrs(cfg, steps_per_epoch: int) -> list[float]:
    model = torch.nn.Linear(2, 1)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch)
    values = []
    for _ in range(cfg.epochs * steps_per_epoch):
        values.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return values


def test_step_schedule_decays_every_step_size_epochs():
    cfg = make_config({"lr": 1.0, "epochs": 4, "schedule": "step", "step_size": 2, "gamma": 0.5})
    assert lrs(cfg, 3) == [1.0] * 6 + [0.5] * 6


def test_multistep_schedule():
    cfg = make_config({"lr": 1.0, "epochs": 3, "schedule": "multistep", "milestones": [1, 2], "gamma": 0.1})
    values = lrs(cfg, 2)
    assert values[:2] == [1.0, 1.0] and values[2:4] == pytest.approx([0.1, 0.1])
    assert values[4:] == pytest.approx([0.01, 0.01])


def test_linear_warmup_then_cosine():
    cfg = make_config({"lr": 1.0, "epochs": 3, "schedule": "cosine", "warmup_epochs": 1})
    values = lrs(cfg, 4)
    assert values[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    after = values[4:]
    expected = [0.5 * (1 + math.cos(math.pi * t / 8)) for t in range(8)]
    assert after == pytest.approx(expected, abs=1e-6)


def test_one_cycle_peaks_at_lr():
    cfg = make_config({"lr": 0.4, "epochs": 2, "schedule": "onecycle", "pct_start": 0.25})
    values = lrs(cfg, 10)
    # torch's one-cycle peaks at step pct_start * total - 1
    assert max(values) == pytest.approx(0.4) and values.index(max(values)) == 4
    assert values[0] < 0.05 and values[-1] < 1e-3


@pytest.mark.parametrize("name", ["sgd", "rmsprop", "adam", "adamw", "adadelta"])
def test_every_optimizer_reduces_a_quadratic(name):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    cfg = make_config({"optimizer": name, "lr": 1.0 if name == "adadelta" else 0.05})
    opt = build_optimizer(model, cfg)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    first = torch.nn.functional.mse_loss(model(x), y).item()
    for _ in range(50):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
    assert loss.item() < first


def test_weight_decay_spares_biases_and_l1_counts_weights():
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 0.0]]))
        model.bias.fill_(10.0)
    assert l1_penalty(model).item() == 3.5
    opt = build_optimizer(model, make_config({"weight_decay": 0.1}))
    decays = {p.dim(): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decays == {2: 0.1, 1: 0.0}
