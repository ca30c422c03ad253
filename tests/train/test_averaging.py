"""Weight averaging: the EMA and Lookahead updates against a hand computation, and in training runs."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from safetensors.torch import load_file

from dcnn.errors import DcnnError
from dcnn.train import make_config, train
from dcnn.train.averaging import WeightAverage
from dcnn.train.trainer import Trainer
from tests.train.helpers import tiny_config


def scalar_model() -> nn.Module:
    """A model with one weight w (a 1x1 linear layer without bias) and one float buffer b."""
    model = nn.Linear(1, 1, bias=False)
    model.register_buffer("b", torch.zeros(1))
    return model


def set_to(model: nn.Module, value: float) -> None:
    with torch.no_grad():
        model.weight.fill_(value)
        model.b.fill_(-value)


def fed(values: list[float], total_steps: int = 2) -> tuple[nn.Module, WeightAverage]:
    """A scalar model and its ema (decay 0.5) after steps 1, 2, ... that left the weight at `values`."""
    model = scalar_model()
    average = WeightAverage(model, "ema", decay=0.5, total_steps=total_steps)
    for step, value in enumerate(values, 1):
        set_to(model, value)
        average.update(step)
    return model, average


def test_ema_follows_the_recurrence_from_the_start_step_every_k_steps() -> None:
    model = scalar_model()
    average = WeightAverage(model, "ema", decay=0.5, every=2, start_step=1, total_steps=10)
    expected = None
    for step in range(1, 11):
        set_to(model, float(step))  # the "trained" weight after step s is s
        average.update(step)
        if step > 1 and step % 2 == 0:  # steps 2, 4, 6, 8, 10: the first copies, then a' = 0.5 a + 0.5 w
            expected = float(step) if expected is None else 0.5 * expected + 0.5 * step
        assert model.weight.item() == step  # ema leaves the network alone
    assert expected == 0.5 * (0.5 * (0.5 * (0.5 * 2 + 0.5 * 4) + 0.5 * 6) + 0.5 * 8) + 0.5 * 10
    assert average.average["weight"].item() == expected
    assert average.average["b"].item() == -expected  # float buffers are averaged too


def test_warmup_power_scales_the_decay_by_the_fraction_of_training_done() -> None:
    average = WeightAverage(scalar_model(), "ema", decay=0.9, total_steps=100, warmup_power=3.0)
    assert average.decay_at(50) == pytest.approx(0.9 * 0.5 ** 3)
    assert average.decay_at(100) == pytest.approx(0.9)
    model = scalar_model()
    average = WeightAverage(model, "ema", decay=0.9, total_steps=4, warmup_power=2.0)
    set_to(model, 1.0)
    average.update(1)
    set_to(model, 3.0)
    average.update(2)  # decay 0.9 · (2/4)² = 0.225
    assert average.average["weight"].item() == pytest.approx(0.225 * 1 + 0.775 * 3)


def test_lookahead_resets_the_network_to_the_slow_weights_and_at_the_end_of_an_epoch() -> None:
    model = scalar_model()
    average = WeightAverage(model, "lookahead", decay=0.75, every=2, total_steps=6)
    set_to(model, 4.0)
    average.update(1)  # not due (every 2)
    assert average.average is None
    average.update(2)  # the slow weights start as a copy
    assert average.average["weight"].item() == 4.0 and model.weight.item() == 4.0
    set_to(model, 8.0)
    average.update(3)
    assert model.weight.item() == 8.0  # fast weights run on between updates
    average.update(4)  # slow: 4 + 0.25 · (8 - 4) = 5, and the fast weights restart there
    assert average.average["weight"].item() == 5.0 and model.weight.item() == 5.0 and model.b.item() == -5.0
    set_to(model, 9.0)
    average.end_epoch()
    assert model.weight.item() == 5.0


def test_applied_swaps_the_average_in_and_restores_the_trained_weights() -> None:
    model, average = fed([2.0, 6.0])
    with average.applied() as inside:
        assert inside.weight.item() == 4.0 and inside.b.item() == -4.0
    assert model.weight.item() == 6.0 and model.b.item() == -6.0
    average.end_epoch()  # ema: the network keeps its own weights
    assert model.weight.item() == 6.0


def test_state_round_trips() -> None:
    _, average = fed([3.0])
    restored = WeightAverage(scalar_model(), "ema", decay=0.5, total_steps=2)
    restored.load_state_dict({"average": None})
    assert restored.average is None
    restored.load_state_dict(average.state_dict())
    assert restored.average["weight"].item() == 3.0


def test_an_ema_run_saves_and_reports_the_average_not_the_trained_weights(tmp_path) -> None:
    states = {}

    def keep(trainer: Trainer) -> bool:
        states["trainer"] = trainer
        return False

    run_dir, result = train(tiny_config(tmp_path, epochs=2, weight_average="ema", ema_decay=0.8), after_step=keep)
    trainer = states["trainer"]
    saved = load_file(str(run_dir / "model.safetensors"))
    trained = trainer.model.state_dict()
    assert not torch.equal(saved["features.c1.weight"], trained["features.c1.weight"])
    for name, value in trainer.average.average.items():
        assert torch.equal(saved[name], value), name
    with trainer.averaged() as model:
        again = trainer.evaluate_on(trainer.data.test)
        assert torch.equal(model.state_dict()["features.c1.weight"], saved["features.c1.weight"])
    assert again.mean_loss == pytest.approx(result.mean_loss, abs=1e-6)


def test_a_lookahead_run_ends_each_epoch_on_the_slow_weights(tmp_path) -> None:
    states = {}

    def keep(trainer: Trainer) -> bool:
        states["trainer"] = trainer
        return False

    # 12 steps an epoch, updates every 5: the last update of epoch 1 is at step 10, two fast steps before its end
    run_dir, _ = train(tiny_config(tmp_path, epochs=1, weight_average="lookahead", ema_decay=0.5, ema_every=5),
                       after_step=keep)
    trainer = states["trainer"]
    saved = load_file(str(run_dir / "model.safetensors"))
    for name, value in trainer.average.average.items():
        assert torch.equal(saved[name], value) and torch.equal(trainer.model.state_dict()[name], value), name


def test_the_eval_view_is_used_and_named_in_the_report(tmp_path) -> None:
    run_dir, result = train(tiny_config(tmp_path, epochs=1, eval_view="flip_shift"))
    report = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert report["view"] == "flip_shift"
    assert result.num_samples == 300


@pytest.mark.parametrize("values, fragment", [
    ({"ema_decay": 0.9}, "ema_decay: apply to weight_average: ema or lookahead"),
    ({"weight_average": "ema", "ema_start_epochs": 2}, "ema_start_epochs: 2.0 leaves no steps to average"),
    ({"eval_view": "ten_crop"}, "eval_view: 'ten_crop' crops images prepared larger"),
    ({"eval_view": "mirror"}, "eval_view: unknown view 'mirror'"),
])
def test_inapplicable_averaging_and_view_options_are_refused(values, fragment) -> None:
    with pytest.raises(DcnnError, match=fragment):
        make_config({"epochs": 2, **values})
