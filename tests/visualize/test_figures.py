"""`dcnn visualize` on a tiny trained run: every method's PNG, the figures' arrays against the
library's own computations on the image as `dcnn predict` prepares it, and one-line user errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from dcnn.data.images import load_images, open_image
from dcnn.evaluate.run import predict_files, preprocess_of
from dcnn.models.modelfile import load_model_file
from dcnn.train import make_config, train
from dcnn.visualize.attribution import grad_cam, overlay_heatmap
from dcnn.visualize.features import feature_maps, mosaic
from dcnn.visualize.figures import METHODS, visualize_figure
from tests.test_cli import assert_user_error, dcnn_in_process


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """LeNet-5 (modern) after 4 steps on 200 images of the embedded MNIST sample."""
    run_dir = tmp_path_factory.mktemp("visualize") / "run"
    train(make_config(dict(model="lenet5_modern", dataset="mnist_sample", train_limit=200, test_limit=100,
                           val_size=100, epochs=1, batch_size=50, eval_batch_size=500, lr=0.05, progress=False,
                           seed=3, run_dir=str(run_dir))))
    return run_dir


@pytest.fixture(scope="module")
def digit(tmp_path_factory) -> Path:
    """A hand-drawn 7, white on black, larger than MNIST's 28x28 (the preprocessing fits it)."""
    image = Image.new("L", (40, 40), 0)
    ImageDraw.Draw(image).line([(8, 8), (32, 8), (16, 34)], fill=255, width=4)
    path = tmp_path_factory.mktemp("images") / "seven.png"
    image.save(path)
    return path


# Figure sizes in pixels (100 dpi): 3.2-inch panels; features: a wider map panel; filters: a 4-inch
# square for LeNet's six 5x5 filters; top9: a 2.2 x 2.4-inch block per channel.
SIZES = {"gradcam": (640, 320), "saliency": (640, 320), "guided_backprop": (960, 320), "deconvnet": (960, 320),
         "occlusion": (640, 320), "features": (1024, 320), "filters": (400, 400), "top9": (220, 240)}


def test_every_method_writes_its_png(run, digit, tmp_path):
    assert set(SIZES) == set(METHODS)
    for method in METHODS:
        image = [str(digit)] if METHODS[method].needs_image else []
        extra = ["--channel", "3", "--max-images", "60"] if method == "top9" else []
        out = tmp_path / f"{method}.png"
        done = dcnn_in_process("visualize", str(run), *image, "--method", method, "--out", str(out), "--device",
                               "cpu", *extra)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"{method} written to {out}"
        assert Image.open(out).size == SIZES[method], method


def test_the_default_is_gradcam_next_to_the_working_directory(run, digit, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert dcnn_in_process("visualize", str(run), str(digit)).returncode == 0
    assert Image.open(tmp_path / "seven-gradcam.png").size == SIZES["gradcam"]


def model_and_input(run: Path, digit: Path, invert: bool = False) -> tuple[torch.nn.Module, torch.Tensor]:
    """The model and the image as `dcnn predict` reads them."""
    model, meta = load_model_file(run / "model.safetensors")
    batch, _, failures = load_images([digit], preprocess_of(meta, invert))
    assert not failures
    return model, batch


def drawn(axes) -> np.ndarray:
    return np.asarray(axes.images[0].get_array())


def test_gradcam_draws_the_heat_map_of_the_prepared_image(run, digit):
    model, x = model_and_input(run, digit)
    figure = visualize_figure(run, digit, "gradcam", device="cpu")
    image_axes, heat_axes = figure.axes[:2]
    (name, probability), = predict_files(run, [digit], top=1, device="cpu")[0][0][1]
    assert image_axes.get_title() == f"input: predicted {name} ({probability:.2f})"
    _, meta = load_model_file(run / "model.safetensors")
    pixels = preprocess_of(meta).pixels(open_image(digit))
    np.testing.assert_array_equal(drawn(image_axes), pixels[0].numpy())
    np.testing.assert_array_equal(drawn(heat_axes), np.asarray(overlay_heatmap(pixels, grad_cam(model, x)[0])))
    assert heat_axes.get_title().startswith(f"Grad-CAM of {name}\nlayer features.s4 (5x5)")

    other = "3" if name != "3" else "4"
    figure = visualize_figure(run, digit, "gradcam", target=other, layer="features.act3", device="cpu")
    assert figure.axes[0].get_title().endswith(f"\nexplaining {other} "
                                               f"({torch.softmax(model(x), 1)[0, int(other)]:.2f})")
    assert figure.axes[1].get_title().startswith(f"Grad-CAM of {other}\nlayer features.act3 (10x10)")
    np.testing.assert_array_equal(drawn(figure.axes[1]), np.asarray(
        overlay_heatmap(pixels, grad_cam(model, x, int(other), "features.act3")[0])))


def test_inverted_images_are_drawn_as_the_model_sees_them(run, digit):
    plain = drawn(visualize_figure(run, digit, "saliency", device="cpu").axes[0])
    inverted = drawn(visualize_figure(run, digit, "saliency", invert=True, device="cpu").axes[0])
    np.testing.assert_allclose(inverted[2:-2, 2:-2], 1.0 - plain[2:-2, 2:-2], atol=1e-6)  # inside the padding


def test_features_grid_holds_the_layer_maps(run, digit):
    model, x = model_and_input(run, digit)
    figure = visualize_figure(run, digit, "features", device="cpu")
    name, maps = feature_maps(model, x)
    assert name == "features.c1" and figure.axes[1].get_title() == "features.c1: all 6 channels, 28x28"
    np.testing.assert_array_equal(drawn(figure.axes[1]), mosaic(maps[0][:, None], 3, fill=np.nan)[0].numpy())
    one = visualize_figure(run, digit, "features", layer="features.act3", channel=5, device="cpu")
    np.testing.assert_array_equal(drawn(one.axes[1]), np.pad(model.features[:6](x)[0, 5].detach().numpy(), 1,
                                                             constant_values=np.nan))


def test_deconvnet_names_the_layer_channel_and_field(run, digit):
    figure = visualize_figure(run, digit, "deconvnet", layer="features.s2", channel=2, device="cpu")
    title = figure.axes[1].get_title()
    assert title.startswith("deconvnet: features.s2, channel 2\nactivation ") and "field 6x6" in title
    rectangle, = figure.axes[0].patches
    assert (rectangle.get_width(), rectangle.get_height()) == (6, 6)


def test_user_errors_are_one_line(run, digit, tmp_path):
    def visualize(*args: str):
        return dcnn_in_process("visualize", *args, "--out", str(tmp_path / "never.png"))

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(run / "model.safetensors", alone / "model.safetensors")
    assert_user_error(visualize(str(run), str(digit), "--method", "gradcan"), "unknown method 'gradcan'",
                      "Did you mean 'gradcam'")
    assert_user_error(visualize(str(run), str(broken)), "broken.png is not an image file")
    assert_user_error(visualize(str(run), str(tmp_path / "none.png")), "none.png not found")
    assert_user_error(visualize(str(run), str(digit), "--layer", "features.c9"), "no layer 'features.c9'",
                      "Did you mean 'features.c5', 'features.c3', 'features.c1'?")
    assert_user_error(visualize(str(run), str(digit), "--method", "deconvnet", "--channel", "6", "--layer",
                                "features.c1"), "channel 6 is out of range", "has 6 channels (0 to 5)")
    assert_user_error(visualize(str(run), str(digit), "--channel", "1"),
                      "--channel does not apply to --method gradcam", "deconvnet, features, top9")
    assert_user_error(visualize(str(run), "--method", "saliency"), "--method saliency draws over an image")
    assert_user_error(visualize(str(run), str(digit), "--method", "filters"), "reads no image")
    assert_user_error(visualize(str(run), str(digit), "--target", "seven"), "--target 'seven' is not a class")
    assert_user_error(visualize(str(run), str(digit), "--target", "10"), "--target 10 is out of range")
    assert_user_error(visualize(str(run), "--method", "top9", "--max-images", "0"), "read at least 1")
    assert_user_error(visualize(str(alone), "--method", "top9"), "has no config.yaml")
    assert_user_error(visualize(str(run), str(digit), "--device", "tpu9"), "unknown device 'tpu9'")
    assert not (tmp_path / "never.png").exists()
