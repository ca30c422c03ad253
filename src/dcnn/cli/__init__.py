"""The `dcnn` command: a thin layer that parses options, calls the library and prints results.

User errors (DcnnError) print one line and exit with status 2; no traceback. The commands for
training, evaluating and inspecting live here; each other module of this package adds its own
commands to `app` when imported (all of them are, at the end of this file).
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from dcnn.errors import DcnnError
from dcnn.train.optim import OPTIMIZERS, SCHEDULES

app = typer.Typer(
    help="Deep convolutional networks for image classification: build, train, evaluate, predict.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


@app.command("models")
def models_command(
    pattern: Annotated[str, typer.Argument(help="shell-style filter, e.g. 'resnet*'")] = "*",
    table: Annotated[bool, typer.Option("--table", help="year, paper, parameters and input size")] = False,
) -> None:
    """List the registered models."""
    from dcnn.models import list_models
    from dcnn.models._registry import get_entry

    names = list_models(pattern)
    if not names:
        raise DcnnError(f"no model matches {pattern!r}; run `dcnn models` to list them all.")
    if not table:
        out.print("\n".join(names), highlight=False)
        return
    grid = Table("model", "family", "year", "paper", "params", "input", "params source", "title")
    for name in names:
        entry = get_entry(name)
        cfg = entry.cfg
        citation, _, title = cfg.paper.partition(f"{cfg.year}, ")
        grid.add_row(name, entry.family, str(cfg.year), f"{citation}{cfg.year}" if title else cfg.paper,
                     f"{cfg.num_params:,}", "x".join(map(str, cfg.input_size)),
                     cfg.reference or cfg.num_params_source, title)
    # Piped output has no terminal width: keep one model per line rather than wrapping at 80 columns.
    (out if out.is_terminal else Console(width=300)).print(grid)


@app.command("summary")
def summary_command(
    model: Annotated[str, typer.Argument(help="model name")],
    input_size: Annotated[str | None, typer.Option(help="C,H,W (default: the model's)")] = None,
    num_classes: Annotated[int | None, typer.Option(help="classes (default: the model's)")] = None,
    batch: Annotated[int, typer.Option(min=1, help="batch size for shapes, MACs and memory")] = 1,
    output_format: Annotated[str, typer.Option("--format", help="table, json, csv or md")] = "table",
    optimizer: Annotated[str, typer.Option(help=f"for the memory estimate: {', '.join(OPTIMIZERS)}")] = "sgd",
    measure: Annotated[bool, typer.Option("--measure", help="run one training step, print its peak memory")] = False,
) -> None:
    """Per layer: output shape, parameters, MACs, activation memory, receptive field; totals and
    the memory a training step needs (estimated, and measured with --measure)."""
    import torch

    from dcnn.analysis import summary as report
    from dcnn.models import create_model, get_model_cfg

    if output_format not in ("table", "json", "csv", "md"):
        raise DcnnError(f"--format {output_format!r}: choose table, json, csv or md.")
    if optimizer not in OPTIMIZERS:
        raise DcnnError(f"--optimizer {optimizer!r}: choose one of {', '.join(OPTIMIZERS)}.")
    cfg = get_model_cfg(model)
    size = parse_size(input_size) if input_size else cfg.input_size
    _, min_h, min_w = cfg.min_input_size
    if size[1] < min_h or size[2] < min_w:
        raise DcnnError(f"--input-size {'x'.join(map(str, size))} is below {model}'s minimum of "
                        f"{min_h}x{min_w} pixels; give at least {size[0]},{min_h},{min_w}.")
    with torch.device("meta"):
        net = create_model(model, num_classes=num_classes, in_chans=size[0])
    summary = report.summarize(net, size, batch)
    estimate = report.estimate_training_memory(summary, optimizer)
    measured = None
    if measure:
        measured = report.measure_training_step(create_model(model, num_classes=num_classes, in_chans=size[0]),
                                                size, batch, optimizer)
    if output_format == "json":
        print(report.to_json(summary, estimate, measured))
    elif output_format == "csv":
        print(report.to_csv(summary), end="")
    elif output_format == "md":
        print(report.to_markdown(summary, estimate, measured), end="")
    else:
        columns = report.COLUMNS if summary.has_aux else report.COLUMNS[:-1]
        grid = Table(*columns, title=f"{model} on {'x'.join(map(str, size))}, batch {batch}")
        for cells in report.table_rows(summary):
            grid.add_row(*cells[: len(columns)])
        (out if out.is_terminal else Console(width=300)).print(grid)  # piped: one layer per line
        for line in report.notes(summary, estimate, measured):
            out.print(line, highlight=False, markup=False)


def _views() -> dict:
    from dcnn.evaluate.views import EVAL_VIEWS

    return EVAL_VIEWS


@app.command("datasets")
def datasets_command() -> None:
    """List the named datasets (any class-per-folder image set or CSV works by path too)."""
    from dcnn.data.datasets import DATASETS

    for name, entry in DATASETS.items():
        out.print(f"{name:14} {entry.description}", highlight=False)


@app.command("augmentations")
def augmentations_command() -> None:
    """List the batch augmentations a recipe's `augment:` list can name, with their options."""
    from dcnn.data.augment import describe_augmentations

    for name, options, help_text in describe_augmentations():
        shown = ", ".join(f"{k}={v!r}" for k, v in options.items())
        out.print(f"{name:20} {help_text} ({shown or 'no options'})", highlight=False)


def parse_size(text: str) -> tuple[int, int, int]:
    try:
        size = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        size = ()
    if len(size) != 3 or min(size) < 1:
        raise DcnnError(f"--input-size {text!r} must be three positive integers C,H,W, e.g. 3,224,224.")
    return size  # type: ignore[return-value]


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`key=value` pairs, values read as YAML (numbers, booleans, lists)."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DcnnError(f"--set {pair!r} must look like key=value, e.g. --set label_smoothing=0.1.")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


@app.command("train")
def train_command(
    ctx: typer.Context,
    recipe: Annotated[Path | None, typer.Option(help="YAML recipe (see recipes/)")] = None,
    resume: Annotated[Path | None, typer.Option(help="continue the run in this directory")] = None,
    model: Annotated[str | None, typer.Option(help="model name (dcnn models)")] = None,
    dataset: Annotated[str | None, typer.Option(
        help="a dataset name (dcnn datasets) or the path of a class-per-folder image set or CSV of path,label")
    ] = None,
    data_dir: Annotated[str | None, typer.Option(help="folder of the named datasets (else $DCNN_DATA_DIR)")] = None,
    val_split: Annotated[float | None, typer.Option(help="fraction of each class held out for validation")] = None,
    image_size: Annotated[int | None, typer.Option(help="square input side (default: the model's)")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="stop at the first unreadable image")] = False,
    track_gradients: Annotated[bool, typer.Option(
        "--track-gradients", help="record every layer's gradient norm each step (gradients.csv, gradients.png)")
    ] = False,
    epochs: Annotated[int | None, typer.Option(help="passes over the training set")] = None,
    batch_size: Annotated[str | None, typer.Option(help="examples per step, or 'full'")] = None,
    optimizer: Annotated[str | None, typer.Option(help=", ".join(OPTIMIZERS))] = None,
    lr: Annotated[float | None, typer.Option(help="learning rate")] = None,
    schedule: Annotated[str | None, typer.Option(help=", ".join(SCHEDULES))] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    run_dir: Annotated[str | None, typer.Option(help="where to write the run")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="any config field: key=value")] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    nproc: Annotated[str | None, typer.Option(
        help="train in N processes on this machine (DistributedDataParallel; the same as torchrun "
             "--standalone --nproc-per-node N -m dcnn train ...)")] = None,
) -> None:
    """Train a model (options and/or a YAML recipe), or --resume a run (e.g. with more --epochs)."""
    from dcnn.train import load_recipe, make_config, train
    from dcnn.train import resume as resume_run
    from dcnn.train.distributed import launch, worker_count
    from dcnn.train.trainer import new_run_dir

    options = {"model": model, "dataset": dataset, "data_dir": data_dir, "val_split": val_split,
               "image_size": image_size, "strict": strict or None,
               "track_gradients": track_gradients or None, "epochs": epochs,
               "batch_size": _batch_size(batch_size), "optimizer": optimizer, "lr": lr,
               "schedule": schedule, "device": device, "seed": seed, "run_dir": run_dir}
    overrides = {k: v for k, v in options.items() if v is not None}
    overrides.update(parse_overrides(set_ or []))
    if not progress:
        overrides["progress"] = False
    if resume is not None and recipe is not None:
        raise DcnnError("--recipe starts a new run; --resume continues one with its own configuration.")
    config = None if resume is not None else load_recipe(recipe, overrides) if recipe else make_config(overrides)
    if nproc is not None:
        count = worker_count(nproc, overrides.get("device", config.device if config else "auto"))
        if count > 1:
            if config is not None:
                new_run_dir(config)  # refuses a run directory that holds a run, before starting processes
            launch(count, given_arguments(ctx, leave_out="nproc"))  # rank 0 prints the result
            return
    run, result = resume_run(resume, overrides) if config is None else train(config)
    if result is None:  # not rank 0 of a distributed run: rank 0 reports
        return
    print_result(result, json.loads((run / "eval" / "metrics.json").read_text()).get("split", "test"))
    out.print(f"run saved in {run}")


def given_arguments(ctx: typer.Context, leave_out: str) -> list[str]:
    """The command's name and the options given on its command line (not their defaults), without
    `leave_out`: what the processes of a launched run are started with."""
    args = [ctx.info_name or ""]
    for param in ctx.command.params:
        name = param.name or ""
        source = ctx.get_parameter_source(name)  # an enum of the click typer uses (typer ships its own)
        if name == leave_out or source is None or source.name != "COMMANDLINE":
            continue
        value, flag = ctx.params[name], param.opts[0]
        if getattr(param, "is_flag", False):
            args.append(flag if value else param.secondary_opts[0])
        else:
            args += [item for v in (value if param.multiple else [value]) for item in (flag, str(v))]
    return args


def _batch_size(text: str | None) -> int | str | None:
    if text is None or text == "full":
        return text
    try:
        return int(text)
    except ValueError:
        raise DcnnError(f"--batch-size {text!r} must be a positive integer or 'full'.") from None


def print_result(result: Any, split: str = "test") -> None:
    top5 = result.topk_accuracy.get(5)
    label = {"val": "validation", "all": "whole-folder"}.get(split, split)
    out.print(f"{label} accuracy: {100 * result.accuracy(1):.2f}% (top-1 error {100 * result.error(1):.2f}%)"
              + (f", top-5 accuracy {100 * top5:.2f}%" if top5 is not None else ""))


@app.command("eval")
def eval_command(
    source: Annotated[Path, typer.Argument(help="a run directory or a model .safetensors file")],
    data_dir: Annotated[str | None, typer.Option(help="folder holding the named datasets")] = None,
    out_dir: Annotated[Path | None, typer.Option(help="report folder (default: RUN_DIR/eval)")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda")] = "auto",
    dataset: Annotated[str | None, typer.Option(
        help="evaluate on this image folder instead (same class names as the run)")] = None,
    view: Annotated[str, typer.Option(help=", ".join(f"{n}: {v.description}" for n, v in _views().items()))
                    ] = "center",
) -> None:
    """Evaluate a trained model on its test set: top-1/top-5, per-class accuracy, confusion matrix."""
    from dcnn.evaluate.run import evaluate_model_file

    result, report_dir, class_names, split = evaluate_model_file(source, data_dir, out_dir, device, dataset, view)
    out.print(f"view: {view}")
    print_result(result, split)
    per_class = result.per_class_accuracy
    out.print("per class: " + ", ".join(f"{n} {100 * float(a):.1f}%" for n, a in zip(class_names, per_class,
                                                                                     strict=True)))
    out.print(f"report written to {report_dir}")


@app.command("predict")
def predict_command(
    checkpoint: Annotated[Path, typer.Argument(
        help="a run directory or a model .safetensors file (with --runtime onnx: an .onnx file, or a run "
             "exported with `dcnn export`)")],
    images: Annotated[list[Path], typer.Argument(help="PNG/JPEG files, or folders of them (read recursively)")],
    top: Annotated[int, typer.Option(help="how many classes to show")] = 5,
    invert: Annotated[bool, typer.Option(help="dark digits on light paper: invert first")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda")] = "auto",
    batch_size: Annotated[int, typer.Option(help="images read and classified at once")] = 32,
    runtime: Annotated[str, typer.Option(help="torch (the model) or onnx (its exported graph in onnxruntime)")
                       ] = "torch",
    fast: Annotated[bool, typer.Option(help="torch: batch norm folded into convolutions, small convolutions "
                                            "by im2col + GEMM, channels-last where layers are wide, batches in "
                                            "cache-sized chunks, inference mode (the same predictions, faster)")
                    ] = True,
    compile_: Annotated[bool, typer.Option("--compile", help="torch: also compile the model with inductor (each "
                                                             "new batch size compiles for seconds to tens of "
                                                             "seconds)")] = False,
    precision: Annotated[str, typer.Option(help="fast torch path: fp32, or bf16 where the device computes it "
                                                "natively (close calls are computed again in fp32)")] = "fp32",
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: the cores other work leaves idle)")
                       ] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar (only on a terminal)")] = True,
) -> None:
    """Classify images with a trained model; prints the top classes with probabilities."""
    if top < 1:
        raise DcnnError(f"--top {top}: give how many of the most likely classes to show, at least 1.")
    from dcnn.evaluate.run import image_paths, predict_images
    from dcnn.export.predict import load_predictor

    paths = image_paths(images)
    predictor = load_predictor(checkpoint, runtime, device, invert, fast, compile_, threads, precision)
    predictions, failures = predict_images(predictor.classify, predictor.preprocess, predictor.class_names, paths,
                                           top, batch_size, predictor.device, None if progress else False)
    for path, ranked in predictions:
        out.print(f"{path}: " + ", ".join(f"{name} {100 * p:.1f}%" for name, p in ranked), highlight=False)
    if precision == "bf16":
        err.print(f"bf16: {predictor.classify.recomputed} of {len(predictions)} images were close calls, "
                  "computed again in fp32", highlight=False)
    for path, message in failures:
        err.print(f"error: {path}: {message}", highlight=False)
    if failures:
        err.print(f"{len(failures)} of {len(paths)} images could not be read.")
        raise typer.Exit(1)


@app.command("inspect")
def inspect_command(
    run: Annotated[Path, typer.Argument(help="a finished run directory")],
    top: Annotated[int, typer.Option(help="how many of the hardest examples per split")] = 16,
    out_dir: Annotated[Path | None, typer.Option(help="output folder (default: RUN/inspect)")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda")] = "auto",
) -> None:
    """The training and test images with the highest loss (likely mislabeled or hard), as a table
    and a contact sheet per split."""
    from dcnn.visualize.inspect import inspect_run

    rows, folder = inspect_run(run, top, out_dir, device)
    grid = Table("split", "#", "image", "true", "predicted", "p", "loss")
    for row in rows:
        grid.add_row(row.split, str(row.index), row.source, row.true, row.predicted, f"{row.probability:.2f}",
                     f"{row.loss:.3f}")
    (out if out.is_terminal else Console(width=200)).print(grid)
    out.print(f"contact sheets and hardest.csv written to {folder}")


@app.command("augment")
def augment_command(
    recipe: Annotated[Path | None, typer.Option(help="YAML recipe whose data and augment list to show")] = None,
    out_path: Annotated[Path, typer.Option("--out", help="PNG to write")] = Path("augment.png"),
    count: Annotated[int, typer.Option(help="training images to show (rows)")] = 8,
    copies: Annotated[int, typer.Option(help="augmented copies of each (columns after the original)")] = 4,
    set_: Annotated[list[str] | None, typer.Option("--set", help="any config field: key=value")] = None,
) -> None:
    """Draw a grid of augmented training samples: what the model will see."""
    import torch

    from dcnn.data.augment import build_augment
    from dcnn.data.pipeline import sample_images
    from dcnn.models import get_model_cfg
    from dcnn.train import load_recipe, make_config
    from dcnn.train.trainer import prepare_data
    from dcnn.visualize.augment_grid import save_augmentation_grid

    if not 1 <= count <= 32 or copies < 1:
        raise DcnnError("--count must be 1 to 32 and --copies at least 1.")
    overrides = {**parse_overrides(set_ or []), "progress": False}
    cfg = load_recipe(recipe, overrides) if recipe else make_config(overrides)
    data = prepare_data(cfg, get_model_cfg(cfg.model), torch.device("cpu"))
    augment = build_augment(cfg.augment, len(data.class_names))
    if augment is not None:
        augment.fit(sample_images(data.train, seed=cfg.seed))
    images, labels = next(data.train.epoch(0))
    path = save_augmentation_grid(images[:count].cpu(), labels[:count].cpu(), data.class_names, augment,
                                  out_path, seed=cfg.seed, copies=copies)
    out.print(f"{'no augmentation in this recipe; ' if augment is None else ''}grid written to {path}")


@app.command("demo")
def demo_command(
    data_dir: Annotated[str | None, typer.Option(help="folder holding mnist/ (else $DCNN_DATA_DIR)")] = None,
    run_dir: Annotated[str | None, typer.Option(help="where to write the run")] = None,
) -> None:
    """Train LeNet-5 on MNIST (full MNIST if found, else the embedded sample) and print its accuracy."""
    from dcnn.train import load_recipe
    from dcnn.train import train as train_run
    from dcnn.train.recipes import demo_recipe

    recipe, overrides = demo_recipe(data_dir)
    out.print(f"training {recipe.stem} on {overrides['dataset']}")
    if run_dir:
        overrides["run_dir"] = run_dir
    run, result = train_run(load_recipe(recipe, overrides))
    print_result(result)
    out.print(f"run saved in {run}; try `dcnn eval {run}` or `dcnn predict {run} IMAGE`")


for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):  # __main__ runs the command; it adds none
        importlib.import_module(f"{__name__}.{_module.name}")


def main() -> None:
    try:
        app()
    except DcnnError as error:
        err.print(f"error: {error}", highlight=False, markup=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
