"""`dcnn report`: one self-contained HTML page about a run, checked against the run's own files,
parsed with html.parser and opened in headless Chromium."""

from __future__ import annotations

import base64
import csv
import io
import json
import shutil
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from dcnn.data.folder import stratified_sample
from dcnn.data.mnist import load_mnist_sample
from dcnn.evaluate.run import class_names_of
from dcnn.models.modelfile import load_model_file
from dcnn.train import make_config, train
from dcnn.visualize.attribution import grad_cam, overlay_heatmap
from dcnn.visualize.figures import visualize_figure
from dcnn.visualize.html_report import SAMPLE_SEED, open_run, sample_test_images
from tests.test_cli import assert_user_error, dcnn_in_process
from tests.train.helpers import TINY

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
IMAGES = 3
SECTIONS = ["evaluation", "curves", "hardest", "filters", "gradcam", "model", "data", "config"]
MARKUP = '<script>alert("x")</script>&amp;'  # a class name and a path that must come out as text


class Page(HTMLParser):
    """What a report page holds, by section: text, table rows (row class, cell texts), images and
    bar widths; and every tag name (no scripts, no external resources)."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.section = ""
        self.text: dict[str, list[str]] = {}
        self.tables: dict[str, list[list[tuple[str, list[str]]]]] = {}
        self.images: dict[str, list[dict[str, str]]] = {}
        self.bars: dict[str, list[float]] = {}
        self.tags: set[str] = set()
        self.captions: dict[str, list[str]] = {}
        self.cell: list[str] | None = None
        self.caption = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        values = {k: v or "" for k, v in attrs}
        self.tags.add(tag)
        if tag == "section":
            self.section = values["id"]
        elif tag == "table":
            self.tables.setdefault(self.section, []).append([])
        elif tag == "tr":
            self.tables[self.section][-1].append((values.get("class", ""), []))
        elif tag in ("td", "th"):
            self.cell = []
        elif tag == "img":
            self.images.setdefault(self.section, []).append(values)
        elif tag == "figcaption":
            self.captions.setdefault(self.section, []).append("")
            self.caption = True
        elif tag == "span" and values.get("style", "").startswith("width:"):
            self.bars.setdefault(self.section, []).append(float(values["style"].split()[1].rstrip("%")))

    def handle_endtag(self, tag: str) -> None:
        self.caption = self.caption and tag != "figcaption"
        if tag in ("td", "th") and self.cell is not None:
            self.tables[self.section][-1][-1][1].append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data: str) -> None:
        self.text.setdefault(self.section, []).append(data)
        if self.cell is not None:
            self.cell.append(data)
        if self.caption:
            self.captions[self.section][-1] += data

    def section_text(self, section: str) -> str:
        return " ".join(" ".join(self.text.get(section, [])).split())


def png_bytes(image: dict[str, str]) -> bytes:
    prefix = "data:image/png;base64,"
    assert image["src"].startswith(prefix)
    return base64.b64decode(image["src"][len(prefix):])


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    config = make_config({**TINY, "train_limit": 300, "test_limit": 100, "val_size": 100,
                          "run_dir": str(folder / "run"), "device": "cpu"})
    path, _ = train(config)
    return path


@pytest.fixture(scope="module")
def page(run) -> Page:
    done = dcnn_in_process("report", str(run), "--images", str(IMAGES), "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert f"report written to {run / 'report.html'}" in done.stdout  # the default --out
    return Page((run / "report.html").read_text())


def test_the_page_holds_every_section_and_nothing_from_outside(page):
    assert [s for s in page.text if s] == SECTIONS
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    for images in page.images.values():
        for image in images:
            assert png_bytes(image).startswith(b"\x89PNG")


def test_configuration_and_data_match_the_run_files(run, page):
    config = yaml.safe_load((run / "config.yaml").read_text())
    rows = [row for table in page.tables["config"] for row in table if row[1][0] != "option"]
    shown = {cells[0]: cells[1] for _, cells in rows}
    assert shown == {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}
    bold = {cells[0] for css, cells in rows if css == "given"}
    assert bold == make_config(config).given() and {"train_limit", "seed", "run_dir"} <= bold

    data = json.loads((run / "data.json").read_text())
    counts = page.tables["data"][1]
    assert counts[0][1] == ["class", "train", "val", "test"]
    for name, (_, cells) in zip(data["class_names"], counts[1:-1], strict=True):
        index = data["class_names"].index(name)
        assert cells == [name, *(str(data["class_counts"][s][index]) for s in ("train", "val", "test"))]
    assert counts[-1] == ("total", ["total", "300", "100", "100"])
    preprocessing = [cells for _, cells in page.tables["data"][2]][1:]
    assert preprocessing == [[k, v if isinstance(v, str) else json.dumps(v)] for k, v in data["preprocessing"].items()]
    assert preprocessing[0] == ["input_size", "[1, 28, 28]"]
    assert "No file was skipped." in page.section_text("data")


def test_curves_and_evaluation_match_the_run_files(run, page):
    (curves,) = page.images["curves"]
    assert png_bytes(curves) == (run / "curves.png").read_bytes()  # embedded byte for byte
    epochs = [cells for _, cells in page.tables["curves"][0]][1:]
    metrics_rows = list(csv.DictReader((run / "metrics.csv").read_text().splitlines()))
    assert [(e[0], e[2]) for e in epochs] == [(r["epoch"], f"{float(r['train_loss']):.4f}") for r in metrics_rows]

    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    text = page.section_text("evaluation")
    assert f"test accuracy {100 * metrics['top1_accuracy']:.2f}%" in text
    assert f"top-5 {100 * metrics['top5_accuracy']:.2f}% on 100 images" in text
    per_class = [cells for _, cells in page.tables["evaluation"][1]][1:]
    assert per_class == [[c["name"], str(c["support"]), str(c["correct"]), f"{100 * c['accuracy']:.2f}%", ""]
                         for c in metrics["per_class"]]
    assert page.bars["evaluation"] == pytest.approx([100 * c["accuracy"] for c in metrics["per_class"]], abs=0.05)
    (matrix,) = page.images["evaluation"]
    assert png_bytes(matrix) == (run / "eval" / "confusion_matrix.png").read_bytes()


def test_hardest_examples_are_inspect_runs_rows_and_sheets(run, page):
    hardest = list(csv.DictReader((run / "inspect" / "hardest.csv").read_text().splitlines()))
    assert [r["split"] for r in hardest] == ["train"] * IMAGES + ["test"] * IMAGES  # --images per split
    shown = [cells for _, cells in page.tables["hardest"][0]][1:]
    assert [(c[0], c[1], c[3], c[4]) for c in shown] == [(r["split"], r["index"], r["true"], r["predicted"])
                                                         for r in hardest]
    # the page rounds the loss to 3 decimals, hardest.csv to 4 (rounding that twice can differ by 0.001)
    assert [float(c[6]) for c in shown] == pytest.approx([float(r["loss"]) for r in hardest], abs=5.5e-4)
    train_sheet, test_sheet = page.images["hardest"]
    assert png_bytes(train_sheet) == (run / "inspect" / "hardest_train.png").read_bytes()
    assert png_bytes(test_sheet) == (run / "inspect" / "hardest_test.png").read_bytes()


def test_model_summary_totals_the_models_parameters(run, page):
    model, _ = load_model_file(run / "model.safetensors")
    total = sum(p.numel() for p in model.parameters())  # 61,706 for LeNet-5 modern
    layers = [cells for _, cells in page.tables["model"][0]]
    assert layers[0][:4] == ["layer", "type", "output shape", "params"]
    assert layers[1][:3] == ["input", "input", "[1, 1, 28, 28]"]
    assert layers[-1][0] == "total" and layers[-1][3] == f"{total:,}"
    assert sum(int(cells[3].replace(",", "")) for cells in layers[1:-1]) == total
    by_name = {cells[0]: cells for cells in layers}
    convs = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert len(convs) == 3 and all(by_name[name][3] == f"{sum(p.numel() for p in conv.parameters()):,}"
                                   for name, conv in convs.items())
    assert f"total parameters: {total:,}" in page.section_text("model")


def test_first_layer_filters_are_the_visualize_figure(run, page):
    (filters,) = page.images["filters"]
    buffer = io.BytesIO()
    visualize_figure(run, None, "filters", device="cpu").savefig(buffer, format="png")
    assert png_bytes(filters) == buffer.getvalue()  # drawn as `dcnn visualize` draws it
    assert "Zeiler & Fergus 2014" in page.section_text("filters")


def test_gradcam_explains_a_stratified_sample_of_test_images(run, page):
    model, _ = load_model_file(run / "model.safetensors")
    images, labels = load_mnist_sample("test")
    shown_at = stratified_sample(labels.tolist(), IMAGES, SAMPLE_SEED)
    pixels, labels = images[shown_at, None], labels[shown_at]  # 28x28 digits: the input size, nothing to resize
    x = (pixels.float() / 255 - 0.1307) / 0.3081
    with torch.no_grad():
        confidence, predicted = torch.softmax(model(x), dim=1).max(dim=1)
    heat = grad_cam(model, x)
    empty = ["" if h.max() > 0 else "; Grad-CAM zero everywhere: no positive evidence at this layer" for h in heat]
    assert page.captions["gradcam"] == [f"true: {t} / predicted: {c} {p:.2f}{e}" for t, c, p, e in
                                        zip(labels.tolist(), predicted.tolist(), confidence.tolist(), empty,
                                            strict=True)]
    shown = page.images["gradcam"]
    assert len(shown) == 2 * IMAGES and all(image["width"] == "112" for image in shown)  # 28 px x 4
    for i in range(IMAGES):
        original, overlay = (Image.open(io.BytesIO(png_bytes(image))) for image in shown[2 * i: 2 * i + 2])
        assert np.array_equal(np.asarray(original), pixels[i, 0].numpy())  # the image, pixel for pixel
        expected = overlay_heatmap(pixels[i].float() / 255, heat[i])
        assert overlay.mode == "RGB" and overlay.tobytes() == expected.tobytes()


def test_the_test_images_shown_cover_the_classes_of_a_folder_stored_class_by_class(run, tmp_path):
    opened = open_run(run, "cpu")
    names = class_names_of(opened.model, opened.meta)
    for split in ("train", "test"):
        for label, name in enumerate(names):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(4):  # gray level 20 x label + i: each image says its class
                Image.new("L", (28, 28), 20 * label + i).save(tmp_path / split / name / f"{i}.png")
    on_folder = replace(opened, config={**opened.config, "dataset": str(tmp_path)})
    pixels, labels = sample_test_images(on_folder, len(names))
    assert labels.tolist() == list(range(len(names)))  # one of every class, in stored order (the first 10: class 0)
    assert (pixels[:, 0, 0, 0] // 20).tolist() == labels.tolist()
    pixels, labels = sample_test_images(on_folder, 3)
    assert len(set(labels.tolist())) == 3


def test_an_unfinished_run_gets_notes_and_file_values_stay_text(run, tmp_path):
    """A run still training: no model.safetensors (the newest checkpoint stands in), no eval/, no
    curves yet; a data.json without a validation split, with markup in a class name and a skipped path."""
    copy = tmp_path / "unfinished"
    shutil.copytree(run, copy, ignore=lambda folder, _: ["model.safetensors", "eval", "curves.png", "inspect",
                                                          "report.html"] if Path(folder) == run else [])
    data = json.loads((copy / "data.json").read_text())
    data["class_names"][0] = MARKUP
    del data["class_counts"]["val"]
    data["skipped_files"] = 1
    (copy / "data.json").write_text(json.dumps(data))
    (copy / "skipped.csv").write_text(f"path,reason\n/photos/{MARKUP}.jpg,not an image\n")
    config = yaml.safe_load((copy / "config.yaml").read_text())
    (copy / "config.yaml").write_text(yaml.safe_dump({**config, "dataset": str(tmp_path / MARKUP)}))
    out = tmp_path / "pages" / "unfinished.html"
    done = dcnn_in_process("report", str(copy), "--out", str(out), "--images", "1", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert not (copy / "report.html").exists() and not (copy / "inspect").exists()
    text = out.read_text()
    assert "<script>" not in text and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;amp;" in text
    report = Page(text)
    assert "script" not in report.tags
    counts = [cells for _, cells in report.tables["data"][1]]
    assert counts[0] == ["class", "train", "test"] and counts[1][0] == MARKUP
    assert report.tables["data"][3][1][1] == [f"/photos/{MARKUP}.jpg", "not an image"]
    assert "no validation split" in report.section_text("data")
    assert "curves.png is missing." in report.section_text("curves")
    assert "eval/metrics.json is missing: the run has not finished" in report.section_text("evaluation")
    assert "need the finished model" in report.section_text("hardest")
    assert f"no test images to explain: dataset '{tmp_path / MARKUP}'" in report.section_text("gradcam")
    assert any(cells == ["dataset", str(tmp_path / MARKUP)] for table in report.tables["config"] for _, cells in table)
    newest = sorted((copy / "checkpoints").iterdir())[-1].name
    assert f"(from checkpoints/{newest}/model.safetensors)" in report.section_text("model")
    assert f"not finished: the model is checkpoints/{newest}/model.safetensors" in report.section_text("")

    (copy / "data.json").write_text("{")  # damaged files: their sections say so
    (copy / "eval").mkdir()
    (copy / "eval" / "metrics.json").write_bytes(b"\xff")
    assert dcnn_in_process("report", str(copy), "--out", str(out), "--images", "1", "--device", "cpu").returncode == 0
    damaged = Page(out.read_text())
    assert "data.json cannot be read (Expecting property name" in damaged.section_text("data")
    assert "eval/metrics.json cannot be read ('utf-8' codec" in damaged.section_text("evaluation")


def test_bad_runs_and_options_get_one_line(run, tmp_path):
    (tmp_path / "config.yaml").write_text("model: lenet5\n")
    assert_user_error(dcnn_in_process("report", str(tmp_path)), "has no model", "train it first")
    assert_user_error(dcnn_in_process("report", str(tmp_path / "nothing")), "is not a run directory")
    assert_user_error(dcnn_in_process("report", str(run), "--images", "0"), "--images 0", "1 to 64")
    assert_user_error(dcnn_in_process("report", str(run), "--device", "tpu:x"), "unknown device")
    assert not (tmp_path / "report.html").exists()


def test_the_page_renders_offline_in_chromium(run, page):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` to install Debian's chromium (make test does).")
    from playwright.sync_api import sync_playwright

    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1280, "height": 900})
            tab.on("request", lambda request: requests.append(request.url))
            tab.goto((run / "report.html").as_uri(), wait_until="load")
            visible = tab.inner_text("body")
            images = tab.evaluate("Array.from(document.images, i => [i.alt, i.complete, i.naturalWidth])")
        finally:
            browser.close()
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    for heading in ("Evaluation", "Training curves", "Hardest examples", "First-layer filters", "Grad-CAM", "Model",
                    "Data", "Configuration"):
        assert heading in visible
    assert f"test accuracy {100 * metrics['top1_accuracy']:.2f}%" in visible
    assert len(images) == sum(len(v) for v in page.images.values()) == 5 + 2 * IMAGES
    assert all(complete and width > 0 for _, complete, width in images), images
    assert (run / "report.html").as_uri() in requests  # the listener saw the page itself
    assert [url for url in requests if not url.startswith(("file:", "data:"))] == []
