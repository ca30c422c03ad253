"""Gradient flow: vanishing gradients (sigmoid against ReLU and shortcuts) and exploding ones (with and
without clipping), measured with the trainer's gradient recorder (``track_gradients``)."""

from __future__ import annotations

from dcnn.analysis.experiments import register_experiment
from dcnn.analysis.experiments.runner import (
    Outcome,
    Plan,
    Settings,
    Variant,
    VariantRun,
    base_config,
    figure_grid,
    net_variant,
    plot_losses,
    runs_outcome,
    train_variant,
)
from dcnn.analysis.gradients import comparison_figure, draw_totals, flow_summary
from dcnn.train.gradients import GradientHistory, draw_profiles

# Twenty weighted layers, as the CIFAR plain-20 (He et al. 2016a, §4.2), without batch normalization,
# which would rescale the gradients (Ioffe & Szegedy 2015, §3.3) and hide what depth does to them.
DEEP_NET = {"depths": [3, 3, 3], "norm": "none"}
SIZES = {
    "small": Plan("mnist_sample", steps=12, train=1024, test=200, batch=16, evals=2,
                  net={**DEEP_NET, "widths": [4, 8, 16]}, config={"image_size": 12}),
    "full": Plan("mnist", steps=400, train=60_000, test=2000, batch=64, evals=4,
                 net={**DEEP_NET, "widths": [8, 16, 32]}, config={"image_size": 16}),
}


def _history(run: VariantRun) -> GradientHistory:
    if run.gradients is None:  # every variant here tracks its gradients
        raise ValueError(f"{run.variant.label} recorded no gradients")
    return run.gradients


def _train_all(settings: Settings, variants: list[Variant], plan: Plan) -> list[VariantRun]:
    base = {**base_config(plan, settings), "track_gradients": True}
    return [train_variant(v, plan, base, settings.folder) for v in variants]


@register_experiment("vanishing-gradients")
def vanishing_gradients(settings: Settings) -> Outcome:
    """Vanishing gradients: 20-layer plain nets with sigmoid and with ReLU, and the residual ReLU net,
    trained briefly on MNIST; the first layer's gradient norm against the last's.

    Glorot & Bengio 2010 (§4.2.2) observe the back-propagated gradients shrinking towards the input
    layers of sigmoid nets; with ReLU and He et al.'s initialization (2015, §2.2) they keep their size,
    and identity shortcuts (He et al. 2016a) give them a path that is not multiplied by every layer.
    No batch normalization, so that nothing rescales the gradients."""
    plan = settings.plan(SIZES)
    variants = [
        net_variant("plain-sigmoid", "plain, sigmoid", plan, act="sigmoid"),
        net_variant("plain-relu", "plain, ReLU", plan, act="relu"),
        net_variant("residual-relu", "residual, ReLU", plan, act="relu", shortcut="A"),
    ]
    for variant in variants:
        variant.config.update(lr=0.02)
    runs = _train_all(settings, variants, plan)
    table = []
    for run in runs:
        flow = flow_summary(_history(run))
        table.append({"net": run.variant.label, "weighted layers": len(_history(run).layers), "parameters": run.params,
                      "first-layer gradient": flow.first, "last-layer gradient": flow.last,
                      "first / last": flow.ratio, "train loss": run.final_loss(),
                      "test accuracy": run.final.get("test_acc")})
    figure = comparison_figure([(run.variant.label, _history(run)) for run in runs],
                               f"Gradient flow through {table[0]['weighted layers']} weighted layers "
                               f"({plan.steps} steps of SGD on {settings.dataset or plan.dataset})")
    return runs_outcome(
        "Vanishing gradients: median weight-gradient L2 norm over the run, first and last weighted layer",
        table, runs, {"gradients.png": figure},
        [f"{plan.steps} steps of batch {plan.batch}, SGD with momentum 0.9, lr 0.02, on the first "
               f"{plan.train} images of {settings.dataset or plan.dataset}; test accuracy on {plan.test} test images.",
               "The first layer is the stem conv, the last the linear classifier; norms are taken before any "
               "clipping."])


EXPLODING = {"depths": [3, 3, 3], "norm": "none", "act": "relu", "init_scale": 2.0}


@register_experiment("exploding-gradients")
def exploding_gradients(settings: Settings) -> Outcome:
    """Exploding gradients and clipping: a 20-layer plain ReLU net initialized twice too large, trained
    with and without gradient-norm clipping; loss and gradient-norm curves.

    With each layer's gain 2 instead of 1 (He et al. 2015, §2.2) the signal and the gradients grow
    by about 2 per layer, 2^19 ≈ 500,000 over the net; unclipped SGD steps then blow the weights up
    until the loss is no longer finite. Clipping the gradient's norm to a threshold (Pascanu, Mikolov
    & Bengio 2013, §3.2, Algorithm 1) bounds every step while keeping its direction."""
    plan = settings.plan(SIZES)
    config = {"lr": 0.02}
    variants = [
        net_variant("no-clipping", "no clipping", plan, config=config, **EXPLODING),
        net_variant("clip-norm-1", "gradient norm clipped to 1", plan, config={**config, "clip_grad_norm": 1.0},
                    **EXPLODING),
    ]
    runs = _train_all(settings, variants, plan)
    table = []
    for run in runs:
        total = _history(run).total()
        table.append({"training": run.variant.label,
                      "steps": f"diverged at step {run.diverged_at}" if run.diverged_at else f"{len(run.losses)}",
                      "largest gradient norm": float(total.max()), "median gradient norm": float(total.nanmedian()),
                      "train loss": run.final_loss(), "test accuracy": run.final.get("test_acc")})
    figure, (losses, totals, depth) = figure_grid(3, title=f"Exploding gradients: a plain ReLU net initialized "
                                                           f"x{EXPLODING['init_scale']}, SGD lr {config['lr']}")
    plot_losses(losses, runs, log=True)
    draw_totals(totals, [(run.variant.label, _history(run)) for run in runs])
    totals.set_ylabel("gradient norm before clipping")
    draw_profiles(depth, [(run.variant.label, _history(run).profile()) for run in runs])
    return runs_outcome(
        "Exploding gradients: the same net and data, with and without clipping the gradient norm",
        table, runs, {"exploding.png": figure},
        [f"{plan.steps} steps of batch {plan.batch}, SGD with momentum 0.9, on "
               f"{settings.dataset or plan.dataset}.",
               "Gradient norms are of all weights together, recorded before clipping; a run stops when its loss "
               "is no longer finite."])
