from __future__ import annotations

import math

import pytest
import torch

from dcnn.errors import DcnnError
from dcnn.models import create_model
from dcnn.train import make_config
from dcnn.train.optim import Muon, build_optimizer, build_scheduler, l1_penalty, orthogonalize


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


def test_one_cycle_rises_over_warmup_epochs_and_ends_at_min_lr():
    cfg = make_config({"lr": 0.4, "epochs": 2, "schedule": "onecycle", "warmup_epochs": 0.5, "min_lr": 0.002})
    values = lrs(cfg, 10)
    assert values.index(max(values)) == 4 and max(values) == pytest.approx(0.4)  # peak after 5 of 20 steps
    cfg = make_config({"lr": 0.4, "epochs": 2, "schedule": "onecycle", "warmup_epochs": 1.5, "min_lr": 0.002})
    later = lrs(cfg, 10)
    assert later.index(max(later)) == 14
    model = torch.nn.Linear(2, 1)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, 10)
    for _ in range(19):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.002)  # the last of the 20 steps runs at min_lr


# Non-default hyperparameters, so that an optimizer built without them would step differently.
OPTIMIZER_CASES = {
    "sgd": ({"momentum": 0.5, "nesterov": True}, lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.5, nesterov=True)),
    "rmsprop": ({"alpha": 0.9, "eps": 1e-6}, lambda p: torch.optim.RMSprop(p, lr=0.05, alpha=0.9, eps=1e-6)),
    "adam": ({"betas": (0.8, 0.99), "eps": 1e-6}, lambda p: torch.optim.Adam(p, lr=0.05, betas=(0.8, 0.99), eps=1e-6)),
    "adamw": ({"betas": (0.8, 0.99), "weight_decay": 0.1},
              lambda p: torch.optim.AdamW([{"params": p[:1], "weight_decay": 0.1},
                                           {"params": p[1:], "weight_decay": 0.0}], lr=0.05, betas=(0.8, 0.99))),
    "adadelta": ({"rho": 0.5}, lambda p: torch.optim.Adadelta(p, lr=0.05, rho=0.5)),
}


def assert_same_steps(ours: tuple, theirs: tuple, x: torch.Tensor, y: torch.Tensor) -> None:
    """Three steps of each (Linear model, optimizer) on the same regression leave equal weights."""
    for _ in range(3):
        for model, opt in (ours, theirs):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
        assert torch.equal(ours[0].weight, theirs[0].weight) and torch.equal(ours[0].bias, theirs[0].bias)


@pytest.mark.parametrize("name", sorted(OPTIMIZER_CASES))
def test_each_optimizer_steps_as_torch_with_the_same_hyperparameters(name):
    options, reference = OPTIMIZER_CASES[name]
    torch.manual_seed(0)
    ours_model = torch.nn.Linear(4, 1)
    theirs_model = torch.nn.Linear(4, 1)
    theirs_model.load_state_dict(ours_model.state_dict())
    ours = build_optimizer(ours_model, make_config({"optimizer": name, "lr": 0.05, **options}))
    theirs = reference([theirs_model.weight, theirs_model.bias])
    assert type(ours) is type(theirs)
    assert_same_steps((ours_model, ours), (theirs_model, theirs), torch.randn(64, 4), torch.randn(64, 1))


def test_rmsprop_has_no_momentum_unless_asked():
    model = torch.nn.Linear(2, 1)
    assert build_optimizer(model, make_config({"optimizer": "rmsprop"})).param_groups[0]["momentum"] == 0.0
    assert build_optimizer(model, make_config({"optimizer": "sgd"})).param_groups[0]["momentum"] == 0.9
    assert build_optimizer(model, make_config({"optimizer": "rmsprop", "momentum": 0.9})).param_groups[0][
        "momentum"] == 0.9


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"optimizer": "adam", "momentum": 0.9}, "momentum: does not apply to optimizer 'adam'"),
        ({"optimizer": "adam", "nesterov": True}, "nesterov: does not apply to optimizer 'adam'"),
        ({"optimizer": "sgd", "betas": (0.8, 0.9)}, "betas: does not apply to optimizer 'sgd'"),
        ({"optimizer": "sgd", "alpha": 0.5}, "alpha: does not apply"),
        ({"optimizer": "rmsprop", "rho": 0.5}, "rho: does not apply"),
        ({"optimizer": "sgd", "eps": 1e-3}, "eps: does not apply"),
        ({"optimizer": "sgd", "momentum": 0.0, "nesterov": True}, "Nesterov momentum needs momentum > 0"),
        ({"schedule": "cosine", "gamma": 0.5}, "gamma: does not apply to schedule 'cosine'"),
        ({"schedule": "constant", "min_lr": 0.1}, "min_lr: does not apply"),
        ({"schedule": "step", "milestones": [1]}, "milestones: does not apply"),
        ({"schedule": "cosine", "pct_start": 0.3}, "pct_start: does not apply"),
        ({"schedule": "multistep"}, "needs the epochs at which to decay"),
        ({"schedule": "onecycle", "pct_start": 0.3, "warmup_epochs": 1}, "give one"),
        ({"epochs": 2, "warmup_epochs": 2}, "leaves no training after the warmup"),
        ({"optimizer": "sgd", "muon_lr": 0.1}, "muon_lr: does not apply to optimizer 'sgd'"),
        ({"optimizer": "adam", "muon_normalize": True}, "muon_normalize: does not apply"),
        ({"optimizer": "muon", "momentum": 0.0, "nesterov": True}, "Nesterov momentum needs momentum > 0"),
        ({"schedule": "linear", "lr": 0.1, "min_lr": 0.1}, "min_lr: 0.1 is not below lr"),
        ({"schedule": "onecycle", "momentum": 0.85}, "momentum: one-cycle sets the momentum itself"),
        ({"schedule": "onecycle", "optimizer": "muon", "muon_momentum": 0.6}, "muon_momentum: one-cycle sets"),
    ],
)
def test_options_that_do_not_apply_are_refused(values, fragment):
    with pytest.raises(DcnnError, match="invalid training configuration") as info:
        make_config(values)
    assert fragment in str(info.value)


def test_weight_decay_spares_biases_and_l1_counts_weights():
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 0.0]]))
        model.bias.fill_(10.0)
    assert l1_penalty(model).item() == 3.5
    opt = build_optimizer(model, make_config({"weight_decay": 0.1}))
    decays = {p.dim(): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decays == {2: 0.1, 1: 0.0}


def test_linear_schedule_falls_straight_to_min_lr_after_the_warmup():
    cfg = make_config({"lr": 1.0, "epochs": 2, "schedule": "linear", "min_lr": 0.2})
    assert lrs(cfg, 2) == pytest.approx([1.0, 0.8, 0.6, 0.4])
    cfg = make_config({"lr": 1.0, "epochs": 3, "schedule": "linear", "warmup_epochs": 1})
    assert lrs(cfg, 2) == pytest.approx([0.5, 1.0, 1.0, 0.75, 0.5, 0.25])  # as cosine: 0 after the last step


@pytest.mark.parametrize("shape", [(16, 40), (40, 16), (8, 8)])
def test_orthogonalize_gives_about_u_v_transposed(shape):
    torch.manual_seed(0)
    matrix = torch.randn(shape) * 3
    u, _, vh = torch.linalg.svd(matrix, full_matrices=False)
    result = orthogonalize(matrix).float()
    assert result.shape == matrix.shape
    singular = torch.linalg.svdvals(result)
    assert singular.min() > 0.6 and singular.max() < 1.25  # Jordan et al.: about [0.7, 1.2]
    cosine = (result * (u @ vh)).sum() / (result.norm() * (u @ vh).norm())
    assert cosine > 0.97  # the same directions as the exact U·Vᵀ


def test_muon_gives_the_hidden_weights_their_own_group_and_the_rest_to_sgd():
    model = create_model("lenet5_modern", num_classes=10)
    cfg = make_config({"optimizer": "muon", "lr": 0.1, "muon_lr": 0.05, "muon_momentum": 0.8, "weight_decay": 0.01,
                       "backbone_lr_scale": 0.5})
    groups = build_optimizer(model, cfg).param_groups
    head = {id(p) for p in model.get_classifier().parameters()}
    hidden = [g for g in groups if g["hidden"]]
    assert len(hidden) == 1 and hidden[0]["lr"] == 0.025 and hidden[0]["momentum"] == 0.8
    assert {id(p) for p in hidden[0]["params"]} == {id(p) for p in model.parameters()
                                                    if p.dim() > 1 and id(p) not in head}
    rest = [p for g in groups if not g["hidden"] for p in g["params"]]
    assert {id(p) for p in rest} == {id(p) for p in model.parameters() if p.dim() == 1 or id(p) in head}
    assert all(g["momentum"] == 0.9 for g in groups if not g["hidden"])


def test_muon_steps_the_rest_exactly_as_torch_sgd():
    torch.manual_seed(0)
    ours_model, theirs_model = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    theirs_model.load_state_dict(ours_model.state_dict())
    ours_model.get_classifier = lambda: ours_model  # all of it the classifier: nothing hidden, Muon is SGD
    ours = build_optimizer(ours_model, make_config({"optimizer": "muon", "lr": 0.05, "momentum": 0.5,
                                                    "nesterov": True, "weight_decay": 0.1}))
    theirs = torch.optim.SGD([{"params": [theirs_model.weight], "weight_decay": 0.1},
                              {"params": [theirs_model.bias], "weight_decay": 0.0}], lr=0.05, momentum=0.5,
                             nesterov=True)
    assert_same_steps((ours_model, ours), (theirs_model, theirs), torch.randn(32, 4), torch.randn(32, 3))


@pytest.mark.parametrize("normalize", [False, True])
def test_muon_step_on_a_conv_filter_by_hand(normalize):
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(6, 3, 3, 3))
    lr, momentum, decay = 0.1, 0.6, 0.05
    optimizer = Muon([{"params": [weight], "hidden": True}], lr=lr, momentum=momentum, nesterov=True,
                     weight_decay=decay, normalize=normalize)
    expected, buffer = weight.detach().clone(), None
    for _ in range(3):
        grad = torch.randn_like(weight)
        weight.grad = grad.clone()
        optimizer.step()
        buffer = grad.clone() if buffer is None else momentum * buffer + grad
        nesterov = grad + momentum * buffer
        if normalize:
            expected = expected * math.sqrt(6) / expected.norm()
        expected = expected * (1 - lr * decay)  # 6 rows, 27 columns: sqrt(max(1, 6/27)) = 1
        expected = expected - lr * orthogonalize(nesterov.reshape(6, 27)).view(6, 3, 3, 3)
        assert torch.allclose(weight.detach(), expected, atol=1e-6)
    if normalize:  # the norm it was rescaled to, before the last update of norm about lr·sqrt(6)
        assert abs(weight.norm().item() - math.sqrt(6)) < 0.2


def test_muon_scales_a_tall_matrix_step_by_sqrt_of_its_aspect():
    weight = torch.nn.Parameter(torch.zeros(16, 4))
    weight.grad = torch.randn(16, 4)
    Muon([{"params": [weight], "hidden": True}], lr=0.1, momentum=0.0).step()
    assert torch.allclose(weight.detach(), -0.1 * 2 * orthogonalize(weight.grad))  # sqrt(16 / 4) = 2
