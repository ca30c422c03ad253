"""Classic comparisons from the literature, each the same net with one part changed: pooling, dropout
and batch norm against overfitting, three 3x3 convolutions against one 7x7, optimizers, activation
functions, and local response normalization against batch norm."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from dcnn.analysis.experiments import register_experiment
from dcnn.analysis.experiments.runner import (
    CIFAR10,
    Outcome,
    Plan,
    Settings,
    Variant,
    VariantRun,
    base_config,
    figure_grid,
    net_variant,
    plot_evals,
    plot_losses,
    runs_outcome,
    train_variant,
)
from dcnn.analysis.gradients import flow_summary

# MNIST at 16x16 for a quick look; all of MNIST, half an epoch to an epoch, for the real comparison.
MNIST = {
    "small": Plan("mnist_sample", steps=12, train=1024, test=200, batch=16, evals=2, config={"image_size": 16}),
    "full": Plan("mnist", steps=600, train=60_000, test=10_000, batch=64, evals=6),
}
CIFAR = {
    "small": Plan(CIFAR10, steps=12, train=400, test=100, batch=32, evals=2, config={"image_size": 16}),
    "full": Plan(CIFAR10, steps=800, train=50_000, test=10_000, batch=64, evals=8, config={"channels_last": True}),
}
# A small conv net: a stem and three stages of one two-conv block, 2x2 pooling between them.
SMALL_NET = {"depths": [1, 1, 1], "norm": "bn", "act": "relu", "pool": "max"}
WIDTHS = {"small": [4, 8, 8], "full": [16, 32, 64]}


def sized(plans: dict[str, Plan], settings: Settings, **net: Any) -> Plan:
    """The settings' plan with model options `net`, a list of widths taken per size (small, full)."""
    plan = settings.plan(plans)
    options = {k: v[settings.size] if isinstance(v, dict) else v for k, v in net.items()}
    return replace(plan, net={**plan.net, **options})


def compare(settings: Settings, plan: Plan, variants: list[Variant], title: str, what: str,
            columns: dict[str, Any] | None = None, log_loss: bool = False) -> tuple[Outcome, list[VariantRun]]:
    """Train the variants; the table (the variant under `what`, the `columns` given per variant name,
    parameters, final training loss, test accuracy, seconds) and a figure of loss and accuracy."""
    base = base_config(plan, settings)
    runs = [train_variant(v, plan, base, settings.folder) for v in variants]
    table = [{what: run.variant.label, **(columns or {}).get(run.variant.name, {}), "parameters": run.params,
              "train loss": run.final_loss(), "test accuracy": run.final.get("test_acc"),
              "seconds": round(run.seconds, 1)} for run in runs]
    figure, (losses, accuracy) = figure_grid(2, title=title)
    plot_losses(losses, runs, log=log_loss)
    plot_evals(accuracy, runs)
    dataset = settings.dataset or plan.dataset
    note = (f"{plan.steps} steps of batch {plan.batch} on the first {plan.train} training images of {dataset}; "
            f"test accuracy on {plan.test} test images; seed {settings.seed}.")
    return runs_outcome(title, table, runs, {"comparison.png": figure}, [note]), runs


SGD = {"lr": 0.05}


@register_experiment("pooling")
def pooling(settings: Settings) -> Outcome:
    """Pooling: max, average, stochastic (Zeiler & Fergus 2013) and L2 pooling (Sermanet et al. 2012)
    between the stages of the same small net on MNIST.

    Every 2x2 window gives one value: its largest, its mean, one activation drawn with probability
    proportional to its value (in training; the probability-weighted mean at test time), or its L2
    norm. None has parameters, so the nets differ in nothing else."""
    plan = sized(MNIST, settings, **SMALL_NET, widths=WIDTHS)
    variants = [net_variant(kind, kind, plan, config=SGD, pool=kind) for kind in ("max", "avg", "stochastic", "l2")]
    return compare(settings, plan, variants, "Pooling between stages, the same net otherwise", "pooling")[0]


@register_experiment("dropout-batchnorm")
def dropout_batchnorm(settings: Settings) -> Outcome:
    """Dropout and batch norm against overfitting: a net trained for many epochs on a small MNIST
    subset, with neither, dropout (Srivastava et al. 2014), batch norm (Ioffe & Szegedy 2015) or
    both; the gap between training and validation accuracy as training goes on.

    Dropout 0.3 after each pooling and before the classifier (Srivastava et al. §6 drop convolutional
    layers' outputs too); validation images are held out of the same training split."""
    sizes = {"small": Plan("mnist_sample", steps=12, train=256, test=200, batch=16, evals=2, val=256,
                           eval_train=256, config={"image_size": 16}),
             "full": Plan("mnist", steps=600, train=1000, test=10_000, batch=64, evals=12, val=2000,
                          eval_train=1000)}
    plan = sized(sizes, settings, **SMALL_NET, widths=WIDTHS)
    variants = [net_variant(name, label, plan, config=SGD, norm=norm, drop_rate=drop)
                for name, label, norm, drop in (("neither", "neither", "none", 0.0),
                                                ("dropout", "dropout 0.3", "none", 0.3),
                                                ("batchnorm", "batch norm", "bn", 0.0),
                                                ("both", "both", "bn", 0.3))]
    outcome, runs = compare(settings, plan, variants, "Overfitting a small training set", "regularization")
    for row, run in zip(outcome.table, runs, strict=True):
        final = run.final
        row["train accuracy"] = final.get("train_eval_acc")
        row["validation accuracy"] = final.get("val_acc")
        row["gap"] = final["train_eval_acc"] - final["val_acc"] if final else None
    figure, (accuracy, gap) = figure_grid(2, title=f"Training (dashed) and validation (solid) accuracy on "
                                                   f"{plan.train} training images")
    for run in runs:
        steps = [row["step"] for row in run.evals]
        line = accuracy.plot(steps, [row["val_acc"] for row in run.evals], "-o", markersize=3,
                             label=run.variant.label)[0]
        accuracy.plot(steps, [row["train_eval_acc"] for row in run.evals], "--", color=line.get_color())
        gap.plot(steps, [row["train_eval_acc"] - row["val_acc"] for row in run.evals], "-o", markersize=3,
                 label=run.variant.label)
    for axes, ylabel in ((accuracy, "accuracy"), (gap, "training - validation accuracy")):
        axes.set_xlabel("training step")
        axes.set_ylabel(ylabel)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    outcome.plots["overfitting.png"] = figure
    outcome.notes.append(f"Training accuracy is measured in evaluation mode on the {plan.train} training images, "
                         f"validation accuracy on {plan.val} images held out of the training split.")
    return outcome


@register_experiment("conv3x3-vs-7x7")
def conv3x3_vs_7x7(settings: Settings) -> Outcome:
    """Three 3x3 convolutions against one 7x7 (Simonyan & Zisserman 2015, §2.3): the same receptive
    field with 3(3·3·C·C) = 27C² weights instead of 7·7·C·C = 49C², and three ReLUs instead of one.

    Each of the three stages holds one block: three 3x3 conv units or one 7x7, at a constant width C."""
    widths = {"small": [8, 8, 8], "full": [32, 32, 32]}
    plan = sized(MNIST, settings, **SMALL_NET, widths=widths)
    channels = plan.net["widths"][0]
    variants = [net_variant("three-3x3", "three 3x3", plan, config=SGD, block_layers=3, kernel_size=3),
                net_variant("one-7x7", "one 7x7", plan, config=SGD, block_layers=1, kernel_size=7)]
    columns = {"three-3x3": {"conv weights per block": 3 * 3 * 3 * channels * channels, "receptive field": "7x7"},
               "one-7x7": {"conv weights per block": 7 * 7 * channels * channels, "receptive field": "7x7"}}
    outcome = compare(settings, plan, variants, f"Three 3x3 convolutions against one 7x7 (C = {channels})",
                      "block", columns)[0]
    outcome.notes.append("Conv weights per block: 3·(3·3·C·C) against 7·7·C·C; parameters count everything "
                         "(the 3x3 stem, batch norms, the classifier).")
    return outcome


@register_experiment("optimizers")
def optimizers(settings: Settings) -> Outcome:
    """Optimizers: SGD, SGD with momentum, RMSProp and Adam (Goodfellow et al. 2016, §8.3-8.5; Kingma
    & Ba 2015) training the same net from the same initialization on MNIST.

    Each with a learning rate common for it: 0.05 for SGD with or without momentum 0.9, 0.001 for
    RMSProp and Adam. No batch norm, which would make the net forgiving of any of them."""
    plan = sized(MNIST, settings, **{**SMALL_NET, "norm": "none"}, widths=WIDTHS)
    settings_of = {"sgd": ("SGD", {"optimizer": "sgd", "lr": 0.05, "momentum": 0.0}),
                   "momentum": ("SGD, momentum 0.9", {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9}),
                   "rmsprop": ("RMSProp", {"optimizer": "rmsprop", "lr": 0.001}),
                   "adam": ("Adam", {"optimizer": "adam", "lr": 0.001})}
    variants = [net_variant(name, label, plan, config=config) for name, (label, config) in settings_of.items()]
    columns = {name: {"learning rate": config["lr"]} for name, (_, config) in settings_of.items()}
    return compare(settings, plan, variants, "Optimizers on the same net and data", "optimizer", columns,
                   log_loss=True)[0]


@register_experiment("activations")
def activations(settings: Settings) -> Outcome:
    """Activation functions: sigmoid, tanh and ReLU in the same 14-layer plain net on MNIST (Glorot &
    Bengio 2010; Glorot, Bordes & Bengio 2011; Krizhevsky et al. 2012, §3.1).

    Each starts from the initialization suited to it (gain 1, 5/3, √2), without batch norm; the
    table adds each net's first-to-last layer gradient ratio. The learning rate is 0.01 (momentum
    0.9), a fifth of the other MNIST comparisons': without normalization, the ReLU net at 0.05 grows
    its activations in the first steps until its units die (loss stuck at ln 10, measured at full
    size), which says something about the learning rate, not about the activation."""
    plan = sized(MNIST, settings, **{**SMALL_NET, "norm": "none", "depths": [2, 2, 2]}, widths=WIDTHS)
    variants = [net_variant(act, act, plan, config={"lr": 0.01, "track_gradients": True}, act=act)
                for act in ("sigmoid", "tanh", "relu")]
    outcome, runs = compare(settings, plan, variants, "Activation functions in a 14-layer plain net", "activation")
    for row, run in zip(outcome.table, runs, strict=True):
        row["first / last gradient"] = flow_summary(run.gradients).ratio if run.gradients else None
    return outcome


@register_experiment("lrn-vs-batchnorm")
def lrn_vs_batchnorm(settings: Settings) -> Outcome:
    """Local response normalization against batch norm in an AlexNet-style CIFAR-10 net: three 5x5
    conv layers with max pooling, normalized by nothing, by LRN after the ReLU (Krizhevsky et al.
    2012, §3.3: k = 2, n = 5, α = 1e-4, β = 0.75) or by batch norm before it (Ioffe & Szegedy 2015).

    Krizhevsky et al. report LRN taking a four-layer CNN from 13% to 11% test error on CIFAR-10;
    batch norm has since replaced it."""
    widths = {"small": [8, 8, 16], "full": [32, 32, 64]}
    net = {"depths": [0, 1, 1], "block_layers": 1, "kernel_size": 5, "stem_kernel": 5, "act": "relu", "pool": "max"}
    plan = sized(CIFAR, settings, **net, widths=widths)
    variants = [net_variant(norm, label, plan, config={"lr": 0.02}, norm=norm)
                for norm, label in (("none", "no normalization"), ("lrn", "LRN"), ("bn", "batch norm"))]
    return compare(settings, plan, variants, "LRN against batch norm, AlexNet-style net on CIFAR-10",
                   "normalization")[0]
