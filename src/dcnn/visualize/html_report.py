"""One self-contained HTML page about a training run: what `dcnn report RUN` writes.

The page gathers what a run directory holds (config.yaml, data.json and skipped.csv, metrics.csv and
curves.png, eval/), the hardest training and test examples (:func:`dcnn.visualize.inspect.inspect_run`,
which also writes RUN/inspect/), the per-layer model summary (:mod:`dcnn.analysis.summary`) and
pictures of what the network looks at (first-layer filters and Grad-CAM on test images, from
:mod:`dcnn.visualize.figures` and :mod:`dcnn.visualize.attribution`). It opens offline and alone:
every image is embedded as a ``data:`` URI, the style sheet is inline, there are no scripts, fonts
or links outside the page.
Every value read from a file (class names, paths, configuration values) is HTML-escaped.

A part the run lacks (no validation split, no eval/ because the run has not finished, a dataset that
is not on this machine) gets a note on the page; only a run without any model file is refused.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from matplotlib.figure import Figure
from PIL import Image

from dcnn.analysis import summary as layer_summary
from dcnn.data.datasets import limit
from dcnn.data.pipeline import make_batches
from dcnn.device import resolve_device
from dcnn.errors import DcnnError
from dcnn.evaluate.run import class_names_of, preprocess_of, run_test_split
from dcnn.fileio import atomic_output
from dcnn.models import create_model
from dcnn.models.modelfile import load_model_file
from dcnn.train.checkpoint import MODEL_FILE, list_checkpoints
from dcnn.train.config import make_config
from dcnn.train.optim import OPTIMIZERS
from dcnn.train.trainer import read_metrics
from dcnn.visualize.attribution import grad_cam, overlay_heatmap
from dcnn.visualize.figures import visualize_figure
from dcnn.visualize.inspect import inspect_run

REPORT_FILE = "report.html"
MAX_IMAGES = 64  # --images: hardest examples per split, and test images with their Grad-CAM
THUMBNAIL = 96  # pixels: smaller test images are magnified to at least this width on the page
SAMPLE_SEED = 0  # draws the test images shown: the same ones in the report of every run on a dataset
MAX_SKIPPED_ROWS = 100  # skipped files listed by name; the rest are counted
CONFIG_COLUMNS = 3  # the configuration's options side by side in this many tables
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2330; background: #f4f5f7;
       margin: 0; }
header { background: #1d2330; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 0; color: #c9cfdb; }
nav { padding: 8px 32px; background: #e6e9ef; font-size: 14px; }
nav a { margin-right: 14px; color: #1d4ed8; text-decoration: none; }
main { padding: 8px 32px 32px; max-width: 1280px; }
section { background: #fff; border-radius: 6px; padding: 6px 20px 16px; margin: 16px 0;
          box-shadow: 0 1px 2px rgba(0, 0, 0, .08); }
h2 { font-size: 18px; border-bottom: 1px solid #e2e5ea; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 16px 0 6px; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0; }
th, td { border-bottom: 1px solid #e8eaee; padding: 3px 10px 3px 4px; text-align: left; vertical-align: top; }
th { background: #f0f2f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.given td:first-child { font-weight: 600; }
tr.total td { font-weight: 600; border-top: 2px solid #c9cfdb; }
.scroll { max-height: 420px; overflow: auto; border: 1px solid #e8eaee; display: inline-block; max-width: 100%; }
.bar { width: 220px; height: 12px; background: #e8eaee; border-radius: 2px; }
.bar span { display: block; height: 100%; background: #2563eb; border-radius: 2px; }
img { max-width: 100%; height: auto; border: 1px solid #e8eaee; }
img.pixels { image-rendering: pixelated; }
figure.cam { width: min-content; }  /* captions wrap at the width of the two pictures */
.pair { display: flex; gap: 2px; }
.pair img { max-width: none; }
.wrong { color: #c81e1e; }
.note { background: #fff7e0; border-left: 4px solid #f0b429; padding: 6px 10px; margin: 8px 0; }
.headline { font-size: 17px; }
.figures { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
figure { margin: 0; }
figcaption { font-size: 12px; color: #5a6272; }
"""


# ----- HTML pieces (everything from a file goes through escape) ---------------------------------
def escape(value: object) -> str:
    return html.escape(str(value), quote=True)


def note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def png_image(data: bytes, alt: str, width: int | None = None) -> str:
    """An <img> holding the PNG `data` as a data: URI; with `width`, shown that wide, its pixels
    magnified without smoothing."""
    encoded = base64.b64encode(data).decode("ascii")
    size = f' class="pixels" width="{width}"' if width else ""
    return f'<img{size} alt="{escape(alt)}" src="data:image/png;base64,{encoded}">'


def pil_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def figure_png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def png_file(path: Path, alt: str, missing: str) -> str:
    """The PNG at `path` embedded, or a note saying `missing` when there is no readable PNG there."""
    try:
        data = path.read_bytes()
    except OSError:
        return note(missing)
    if not data.startswith(PNG_SIGNATURE):
        return note(f"{path.name} is not a PNG image; it is left out.")
    return png_image(data, alt)


def table(header: Sequence[str], rows: Iterable[Sequence[object]], numeric: Sequence[bool] = (),
          row_classes: Sequence[str] = ()) -> str:
    """A table; cells are escaped unless they are `Markup`; `numeric[i]` right-aligns column i."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for index, row in enumerate(rows):
        cells = "".join(
            f'<td{" class=num" if i < len(numeric) and numeric[i] else ""}>'
            f"{cell.html if isinstance(cell, Markup) else escape(cell)}</td>" for i, cell in enumerate(row))
        css = row_classes[index] if index < len(row_classes) and row_classes[index] else ""
        body.append(f'<tr class="{css}">{cells}</tr>' if css else f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


@dataclass(frozen=True)
class Markup:
    """HTML built by this module (already escaped), put into a table cell as it is."""

    html: str


def bar(fraction: float | None) -> Markup:
    if fraction is None:
        return Markup("")
    return Markup(f'<div class="bar"><span style="width: {100 * max(0.0, min(1.0, fraction)):.1f}%"></span></div>')


def shown_value(value: object) -> str:
    """A configuration value as YAML would read it back: strings as they are, the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


# ----- the run --------------------------------------------------------------------------------
@dataclass
class Run:
    """A run directory read for the report: its files and the model it trained."""

    path: Path
    model_path: Path
    model: torch.nn.Module
    meta: dict[str, Any]
    config: dict[str, Any]
    unreadable: dict[str, str] = field(default_factory=dict)  # file name: why it cannot be read

    @property
    def finished(self) -> bool:
        return self.model_path == self.path / MODEL_FILE

    def json_file(self, name: str) -> dict[str, Any] | None:
        """The JSON file `name` of the run; None when it is missing or cannot be read (then
        :meth:`missing` says why)."""
        path = self.path / name
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            self.unreadable[name] = str(err)
            return None

    def missing(self, name: str, why: str) -> str:
        """A note for a file the run lacks (`why`: what that means) or has but cannot read."""
        if name in self.unreadable:
            return note(f"{name} cannot be read ({self.unreadable[name]}); its section is left out.")
        return note(f"{name} is missing: {why}")


def open_run(run_dir: str | Path, device: str = "auto") -> Run:
    """The run at `run_dir` with its final model, or the newest checkpoint's model of a run that has
    not finished; DcnnError when it has neither."""
    path = Path(run_dir)
    if not path.is_dir():
        raise DcnnError(f"{path} is not a run directory; give the folder `dcnn train` wrote (runs/NAME).")
    model_path = path / MODEL_FILE
    if not model_path.is_file():
        saved = [c / MODEL_FILE for c in list_checkpoints(path) if (c / MODEL_FILE).is_file()]
        if not saved:
            raise DcnnError(f"{path} has no model: neither {MODEL_FILE} nor a checkpoint; train it first "
                            f"(`dcnn train`), or give the run directory it wrote.")
        model_path = saved[-1]
    model, meta = load_model_file(model_path, resolve_device(device))
    config: dict[str, Any] = {}
    config_path = path / "config.yaml"
    if config_path.is_file():
        try:
            config = yaml.safe_load(config_path.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise DcnnError(f"{config_path} cannot be read ({err}); restore it from the run's checkpoint.") from None
    return Run(path, model_path, model, meta, config)


# ----- sections -------------------------------------------------------------------------------
Section = tuple[str, str, str]  # (anchor, title, body html)


def config_section(run: Run) -> Section:
    if not run.config:
        return "config", "Configuration", note("config.yaml is missing: the run's options are unknown.")
    try:
        given = make_config({**run.config, "progress": False}).given()
    except DcnnError:
        given = set()
    rows = [(key, shown_value(value)) for key, value in run.config.items()]
    per_column = -(-len(rows) // CONFIG_COLUMNS)
    columns = [rows[i: i + per_column] for i in range(0, len(rows), per_column)]
    tables = "".join(table(("option", "value"), chunk, row_classes=["given" if k in given else "" for k, _ in chunk])
                     for chunk in columns)
    body = f'<p>config.yaml; options that differ from the defaults are in bold.</p><div class="figures">{tables}</div>'
    return "config", "Configuration", body


def data_section(run: Run) -> Section:
    data = run.json_file("data.json")
    if data is None:
        return "data", "Data", run.missing("data.json", "the run wrote no data summary (dcnn train writes it "
                                           "before the first epoch).")
    counts: dict[str, list[int]] = data.get("class_counts", {})
    splits = list(counts)
    names = data.get("class_names") or class_names_of(run.model, run.meta)
    rows: list[list[object]] = [[name, *(counts[s][i] for s in splits)] for i, name in enumerate(names)]
    rows.append(["total", *(sum(counts[s]) for s in splits)])
    counts_table = table(("class", *splits), rows, (False, *([True] * len(splits))),
                         row_classes=[""] * len(names) + ["total"])
    summary = table(("dataset", "loading", "classes", "skipped files"),
                    [(data.get("dataset", "?"), data.get("loading", "?"), len(names), data.get("skipped_files", 0))])
    parts = [summary, '<div class="figures">',
             f'<div><h3>Images per class</h3><div class="scroll">{counts_table}</div></div>']
    if data.get("preprocessing"):
        shown = [(k, shown_value(v)) for k, v in data["preprocessing"].items()]
        parts.append(f'<div><h3>Preprocessing</h3>{table(("field", "value"), shown)}</div>')
    parts.append("</div>")
    if "val" not in counts:
        parts.append(note("no validation split (val_size 0): the curves show training figures only and the run "
                          "has no best.safetensors."))
    parts.append(skipped_files(run.path / "skipped.csv", int(data.get("skipped_files", 0))))
    return "data", "Data", "".join(parts)


def skipped_files(path: Path, count: int) -> str:
    if not count:
        return "<p>No file was skipped.</p>"
    try:
        rows = list(csv.reader(path.read_text().splitlines()))[1:]
    except OSError:
        return note(f"{count} file(s) were skipped, but skipped.csv is missing.")
    more = f" (the first {MAX_SKIPPED_ROWS} listed)" if len(rows) > MAX_SKIPPED_ROWS else ""
    return (f"<h3>Skipped files: {len(rows)}{more}</h3>"
            + table(("file", "reason"), rows[:MAX_SKIPPED_ROWS]))


METRIC_COLUMNS = (("epoch", "epoch", "{:.0f}"), ("step", "step", "{:.0f}"), ("train_loss", "train loss", "{:.4f}"),
                  ("train_acc", "train acc", "{:.2%}"), ("val_loss", "val loss", "{:.4f}"),
                  ("val_acc", "val acc", "{:.2%}"), ("lr", "lr", "{:.3g}"), ("epoch_time_s", "time (s)", "{:.1f}"))


def metric_cell(value: object, form: str) -> str:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "-"
    return "-" if number != number else form.format(number)


def curves_section(run: Run) -> Section:
    rows = read_metrics(run.path, run.config.get("metrics_format", "csv"))
    parts = [png_file(run.path / "curves.png", "training curves",
                      "curves.png is missing" + ("." if rows else ": the run has not finished an epoch yet."))]
    if rows:
        parts.append("<h3>By epoch</h3>")
        parts.append('<div class="scroll">' + table(
            [title for _, title, _ in METRIC_COLUMNS],
            [[metric_cell(r.get(key), form) for key, _, form in METRIC_COLUMNS] for r in rows],
            [True] * len(METRIC_COLUMNS)) + "</div>")
    return "curves", "Training curves", "".join(parts)


def accuracy_line(metrics: dict[str, Any]) -> str:
    """"test accuracy 98.20%, top-5 99.90% on 10000 images" (validation for a run evaluated on it)."""
    split = {"val": "validation"}.get(metrics.get("split", "test"), metrics.get("split", "test"))
    top5 = metrics.get("top5_accuracy")
    return (f"{split} accuracy {percent(metrics.get('top1_accuracy'))}"
            + (f", top-5 {percent(top5)}" if top5 is not None else "")
            + f" on {metrics.get('num_samples', '?')} images")


def evaluation_section(run: Run, metrics: dict[str, Any] | None) -> Section:
    if metrics is None:
        return "evaluation", "Evaluation", run.missing(
            "eval/metrics.json", f"the run has not finished (evaluation comes after the last epoch); "
            f"`dcnn eval {run.path}` writes it for a finished run.")
    headline = f'<p class="headline">{escape(accuracy_line(metrics))}</p>'
    figures = table(("view", "dataset", "top-1 error", "mean class accuracy", "mean loss", "skipped files"), [(
        metrics.get("view", "center"), metrics.get("dataset", "?"), percent(metrics.get("top1_error")),
        percent(metrics.get("mean_class_accuracy")), metric_cell(metrics.get("mean_loss"), "{:.4f}"),
        metrics.get("skipped_files", 0))])
    per_class = [(c["name"], c["support"], c["correct"], percent(c["accuracy"]), bar(c["accuracy"]))
                 for c in metrics.get("per_class", [])]
    matrix = png_file(run.path / "eval" / "confusion_matrix.png", "confusion matrix",
                      "eval/confusion_matrix.png is missing.")
    body = (headline + figures + '<div class="figures"><div><h3>Per-class accuracy</h3>'
            + table(("class", "images", "correct", "accuracy", ""), per_class, (False, True, True, True, False))
            + f"</div><div><h3>Confusion matrix</h3>{matrix}</div></div>")
    return "evaluation", "Evaluation", body


def hardest_section(run: Run, images: int, device: str) -> Section:
    title = "Hardest examples"
    if not run.finished:
        return "hardest", title, note("the hardest examples need the finished model (model.safetensors); "
                                      "this run has not finished.")
    try:
        rows, folder = inspect_run(run.path, images, run.path / "inspect", device)
    except DcnnError as err:
        return "hardest", title, note(f"the hardest examples could not be found: {err}")
    parts = [f"<p>The {images} highest-loss images of each split (also in {escape(folder)}): likely mislabeled, "
             "ambiguous or unusual. Red: misclassified.</p>"]
    for split in dict.fromkeys(r.split for r in rows):
        parts.append(f"<h3>{escape(split)}</h3>")
        parts.append(png_file(folder / f"hardest_{split}.png", f"hardest {split} images",
                              f"hardest_{split}.png is missing."))
    parts.append('<div class="scroll">' + table(
        ("split", "#", "image", "true", "predicted", "p", "loss"),
        [(r.split, r.index, r.source, r.true, r.predicted, f"{r.probability:.2f}", f"{r.loss:.3f}") for r in rows],
        (False, True, False, False, False, True, True)) + "</div>")
    return "hardest", title, "".join(parts)


def model_section(run: Run) -> Section:
    meta = run.meta
    input_size = tuple(preprocess_of(meta).input_size)
    with torch.device("meta"):
        net = create_model(meta["model"], num_classes=meta["num_classes"], in_chans=meta["in_chans"],
                           **meta.get("model_options", {}))
    summary = layer_summary.summarize(net, input_size, 1)
    optimizer = run.config.get("optimizer", "sgd")
    estimate = layer_summary.estimate_training_memory(summary, optimizer if optimizer in OPTIMIZERS else "sgd")
    columns = layer_summary.COLUMNS if summary.has_aux else layer_summary.COLUMNS[:-1]
    lines = layer_summary.table_rows(summary)
    numeric = [c in ("params", "MACs", "activation bytes") for c in columns]
    grid = table(columns, [cells[: len(columns)] for cells in lines], numeric,
                 row_classes=["total" if cells[0].startswith("total") else "" for cells in lines])
    notes = "".join(f"<li>{escape(line)}</li>" for line in layer_summary.notes(summary, estimate))
    body = (f"<p>{escape(meta['model'])} on {escape('x'.join(map(str, input_size)))} inputs, batch 1 "
            f"(from {escape(run.model_path.relative_to(run.path))}).</p>"
            f'<div class="scroll">{grid}</div><ul>{notes}</ul>')
    return "model", "Model", body


def sample_test_images(run: Run, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` images of the split `dcnn eval` reads (the dataset's test split) with every class in
    proportion (:func:`~dcnn.data.datasets.limit`; folders are stored class by class, so the first
    `count` could all be one class), in stored order, as uint8 pixels at the model's input size, and
    their labels; DcnnError when it is not on this machine."""
    dataset = run.config.get("dataset") or run.meta["dataset"]
    split, names, _, _ = run_test_split({**run.meta, "dataset": dataset}, run.config.get("data_dir"), download=False)
    if names != class_names_of(run.model, run.meta):
        raise DcnnError(f"{dataset} now has the classes {names}, not those the model was trained on.")
    batches = make_batches(limit(split, count, SAMPLE_SEED), preprocess_of(run.meta), count, torch.device("cpu"))
    return next(iter(batches))


def filters_section(run: Run, device: str) -> Section:
    title = "First-layer filters"
    try:
        figure = visualize_figure(run.model_path, None, "filters", device=device)
    except DcnnError as err:
        return "filters", title, note(f"no filters to draw: {err}")
    body = ("<p>The weights of the first convolution, each filter drawn as an image (Zeiler &amp; Fergus 2014, "
            "Sec. 4-5, Fig. 5-6). Smooth, structured filters are typical of a well-trained network; noisy ones "
            "suggest too little training or regularization, blank ones are dead.</p>"
            + png_image(figure_png(figure), "first-layer filters"))
    return "filters", title, body


def gradcam_section(run: Run, images: int) -> Section:
    title = "Grad-CAM"
    try:
        pixels, labels = sample_test_images(run, images)
    except DcnnError as err:
        return "gradcam", title, note(f"no test images to explain: {err}")
    device = next(run.model.parameters()).device
    x = preprocess_of(run.meta).normalize(pixels.float().div(255.0)).to(device)
    with torch.no_grad():
        probabilities = torch.softmax(run.model(x).float(), dim=1).cpu()
    confidence, predicted = probabilities.max(dim=1)
    heat = grad_cam(run.model, x).cpu()  # explains each image's predicted class
    names = class_names_of(run.model, run.meta)
    side = pixels.shape[-1]
    width = side * -(-THUMBNAIL // side) if side < THUMBNAIL else None  # a whole multiple of the image
    figures = []
    for image, label, cls, p, cam in zip(pixels, labels.tolist(), predicted.tolist(), confidence.tolist(), heat,
                                         strict=True):
        original = Image.fromarray(image.permute(1, 2, 0).squeeze(-1).numpy())
        overlay = overlay_heatmap(image.float().div(255.0), cam)
        css = "" if cls == label else ' class="wrong"'
        empty = "" if float(cam.max()) > 0 else "; Grad-CAM zero everywhere: no positive evidence at this layer"
        figures.append(
            '<figure class="cam"><div class="pair">'
            f'{png_image(pil_png(original), f"test image, {names[label]}", width)}'
            f'{png_image(pil_png(overlay), f"Grad-CAM of {names[cls]}", width)}</div>'
            f"<figcaption{css}>true: {escape(names[label])} / predicted: {escape(names[cls])} {p:.2f}{empty}"
            "</figcaption>"
            "</figure>")
    body = (f"<p>{len(figures)} test images drawn with every class in proportion and, over each, the Grad-CAM "
            "map of the class the model predicts (Selvaraju et al. 2017: the last feature maps weighted by the mean "
            "gradient of that class's score; red: the regions that raise it most). Red captions: misclassified.</p>"
            f'<div class="figures">{"".join(figures)}</div>')
    return "gradcam", title, body


def build_report(run_dir: str | Path, images: int = 8, device: str = "auto") -> str:
    """The report page of a run, as HTML text (see the module docstring)."""
    if not 1 <= images <= MAX_IMAGES:
        raise DcnnError(f"--images {images}: give 1 to {MAX_IMAGES} images per split.")
    run = open_run(run_dir, device)
    metrics = run.json_file("eval/metrics.json")
    # Results first, then what explains them, then the details they came from.
    sections = [evaluation_section(run, metrics), curves_section(run), hardest_section(run, images, device),
                filters_section(run, device), gradcam_section(run, images), model_section(run), data_section(run),
                config_section(run)]
    return page(run, sections, accuracy_line(metrics) if metrics else "not evaluated yet")


def page(run: Run, sections: list[Section], headline: str) -> str:
    model, dataset = run.meta.get("model", "?"), run.config.get("dataset") or run.meta.get("dataset", "?")
    name = run.path.resolve().name
    status = "" if run.finished else f" (not finished: the model is {run.model_path.relative_to(run.path)})"
    nav = "".join(f'<a href="#{anchor}">{escape(title)}</a>' for anchor, title, _ in sections)
    body = "".join(f'<section id="{anchor}"><h2>{escape(title)}</h2>{content}</section>'
                   for anchor, title, content in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>dcnn report: {escape(name)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>{escape(name)}</h1>"
        f"<p>{escape(model)} trained on {escape(dataset)}{escape(status)}: {escape(headline)}</p></header>"
        f"<nav>{nav}</nav><main>{body}</main></body></html>\n"
    )


def write_html_report(run_dir: str | Path, out: str | Path | None = None, images: int = 8,
                      device: str = "auto") -> Path:
    """Write the report of `run_dir` to `out` (default RUN/report.html), all or nothing."""
    text = build_report(run_dir, images, device)
    path = Path(out) if out else Path(run_dir) / REPORT_FILE
    with atomic_output(path) as handle:
        handle.write(text.encode("utf-8"))
    return path
