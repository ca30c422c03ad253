"""Image loading for prediction: every PIL mode, resize geometry, bad files, the sample photos."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dcnn.data.images import load_image, load_images, open_image
from dcnn.data.preprocess import Preprocess
from dcnn.errors import DcnnError
from dcnn.models import create_model


def identity(channels: int, height: int = 4, width: int = 4, **options: object) -> Preprocess:
    """No normalization, and a 4×4 image fits a 4×4 input untouched: the decoded pixels themselves."""
    return Preprocess((channels, height, width), (0.0,) * channels, (1.0,) * channels, "pad", **options)


def saved(tmp_path: Path, image: Image.Image, name: str = "image.png") -> Path:
    path = tmp_path / name
    image.save(path)
    return path


def palette_image(transparent_index: int | None = None) -> Image.Image:
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 255] + [255, 0, 0] + [0, 0, 0] * 254)  # index 0 blue, index 1 red
    if transparent_index is not None:
        image.info["transparency"] = transparent_index
    return image


RED_LUMA = 0.299  # BT.601: a pure red pixel's luminance is 0.299 × 255 in 8-bit units
HALF_ALPHA = 128 / 255

# (image, expected grayscale value, expected RGB value) with transparency on the default white.
MODE_CASES = {
    "1": (Image.new("1", (4, 4), 1), 1.0, (1.0, 1.0, 1.0)),
    "L": (Image.new("L", (4, 4), 128), 128 / 255, (128 / 255,) * 3),
    "L with a transparent grey": (
        Image.new("L", (4, 4), 50),
        1.0,
        (1.0, 1.0, 1.0),
    ),
    "LA opaque": (Image.new("LA", (4, 4), (100, 255)), 100 / 255, (100 / 255,) * 3),
    "LA transparent": (Image.new("LA", (4, 4), (100, 0)), 1.0, (1.0, 1.0, 1.0)),
    "LA half": (
        Image.new("LA", (4, 4), (0, 128)),
        1 - HALF_ALPHA,
        (1 - HALF_ALPHA,) * 3,
    ),
    "P": (palette_image(), RED_LUMA, (1.0, 0.0, 0.0)),
    "P with a transparent entry": (palette_image(transparent_index=1), 1.0, (1.0, 1.0, 1.0)),
    "RGB red": (Image.new("RGB", (4, 4), (255, 0, 0)), RED_LUMA, (1.0, 0.0, 0.0)),
    "RGB white": (Image.new("RGB", (4, 4), (255, 255, 255)), 1.0, (1.0, 1.0, 1.0)),
    "RGBA opaque red": (Image.new("RGBA", (4, 4), (255, 0, 0, 255)), RED_LUMA, (1.0, 0.0, 0.0)),
    "RGBA transparent": (Image.new("RGBA", (4, 4), (0, 0, 255, 0)), 1.0, (1.0, 1.0, 1.0)),
    "RGBA half black": (Image.new("RGBA", (4, 4), (0, 0, 0, 128)), 1 - HALF_ALPHA, (1 - HALF_ALPHA,) * 3),
    "CMYK red": (Image.new("CMYK", (4, 4), (0, 255, 255, 0)), RED_LUMA, (1.0, 0.0, 0.0)),
    "I;16": (Image.fromarray(np.full((4, 4), 65535 // 4, dtype=np.uint16)), 16383 / 65535, (16383 / 65535,) * 3),
    "I": (Image.fromarray(np.full((4, 4), 40000, dtype=np.int32)), 40000 / 65535, (40000 / 65535,) * 3),
    "F": (Image.fromarray(np.full((4, 4), 51.0, dtype=np.float32)), 0.2, (0.2, 0.2, 0.2)),
    "YCbCr grey": (Image.new("YCbCr", (4, 4), (128, 128, 128)), 128 / 255, (128 / 255,) * 3),
}
MODE_CASES["L with a transparent grey"][0].info["transparency"] = 50


@pytest.mark.parametrize("case", list(MODE_CASES))
def test_every_mode_converts_to_grayscale_and_rgb(case: str) -> None:
    image, gray, rgb = MODE_CASES[case]
    as_gray = identity(1)(image)
    as_rgb = identity(3)(image)
    assert as_gray.shape == (1, 4, 4)
    assert as_rgb.shape == (3, 4, 4)
    assert as_gray.dtype == as_rgb.dtype == torch.float32
    # One 8-bit step of tolerance for Pillow's integer colour-space conversions (CMYK, YCbCr).
    torch.testing.assert_close(as_gray, torch.full((1, 4, 4), gray), atol=1 / 255, rtol=0)
    torch.testing.assert_close(as_rgb, torch.tensor(rgb).view(3, 1, 1).expand(3, 4, 4), atol=1 / 255, rtol=0)


def test_red_to_grayscale_is_the_bt601_luminance_exactly() -> None:
    gray = identity(1)(Image.new("RGB", (4, 4), (255, 0, 0)))
    assert gray * 255 == pytest.approx(torch.full((1, 4, 4), 0.299 * 255), abs=1e-4)
    mixed = identity(1)(Image.new("RGB", (4, 4), (10, 200, 50)))
    assert float(mixed[0, 0, 0]) * 255 == pytest.approx(0.299 * 10 + 0.587 * 200 + 0.114 * 50, abs=1e-4)


def test_alpha_is_composited_on_the_chosen_background() -> None:
    half_red = Image.new("RGBA", (4, 4), (255, 0, 0, 128))
    on_white = identity(3)(half_red)[:, 0, 0]
    on_black = identity(3, background=0.0)(half_red)[:, 0, 0]
    torch.testing.assert_close(on_white, torch.tensor([1.0, 1 - HALF_ALPHA, 1 - HALF_ALPHA]))
    torch.testing.assert_close(on_black, torch.tensor([HALF_ALPHA, 0.0, 0.0]))


def test_premultiplied_alpha_is_undone() -> None:
    # RGBa stores colour × alpha; on black, the composite is that stored value again.
    premultiplied = Image.new("RGBa", (4, 4), (64, 32, 0, 128))
    on_black = identity(3, background=0.0)(premultiplied)[:, 0, 0]
    torch.testing.assert_close(on_black, torch.tensor([64 / 255, 32 / 255, 0.0]), atol=1 / 255, rtol=0)


def test_16_bit_png_keeps_its_precision(tmp_path: Path) -> None:
    values = np.arange(16, dtype=np.uint16).reshape(4, 4) * 4001
    path = saved(tmp_path, Image.fromarray(values))
    decoded = load_image(path, identity(1))
    torch.testing.assert_close(decoded[0], torch.from_numpy(values / 65535).float())


def test_normalization_and_invert() -> None:
    preprocess = Preprocess((1, 4, 4), (0.5,), (0.25,), "pad", invert=True)
    out = preprocess(Image.new("L", (4, 4), 51))  # 0.2, inverted 0.8
    torch.testing.assert_close(out, torch.full((1, 4, 4), (0.8 - 0.5) / 0.25))


def column_ramp(width: int, height: int) -> Image.Image:
    """An 8-bit grayscale image whose pixel value is its column index."""
    return Image.fromarray(np.tile(np.arange(width, dtype=np.uint8), (height, 1)))


def test_center_crop_geometry_without_resampling() -> None:
    # crop_pct 1 and a 4-pixel-tall image at a 4×4 input: no resize, keep the centre 4 of 6 columns.
    preprocess = Preprocess((1, 4, 4), (0.0,), (1.0,), "crop", crop_pct=1.0)
    out = preprocess(column_ramp(6, 4)) * 255
    torch.testing.assert_close(out[0], torch.tensor([[1.0, 2, 3, 4]]).expand(4, 4))
    # crop_pct 0.5 at a 2×2 input: cover 4×4, keep its centre 2×2.
    square = Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4))
    center = Preprocess((1, 2, 2), (0.0,), (1.0,), "crop", crop_pct=0.5)(square) * 255
    torch.testing.assert_close(center[0], torch.tensor([[5.0, 6], [9, 10]]))


def test_crop_resizes_the_shorter_side_to_size_over_crop_pct() -> None:
    """Against an independent pipeline: Pillow resizes the shorter side to 256 = 224 / 0.875 (the
    longer to 640 × 256 / 427 = 383, truncated), then the centre 224 crop."""
    image = column_ramp(640, 427).convert("RGB")
    out = Preprocess((3, 224, 224), (0.0,) * 3, (1.0,) * 3, "crop", crop_pct=0.875)(image)
    resized = image.resize((383, 256), Image.Resampling.BILINEAR)
    left, top = round((383 - 224) / 2), round((256 - 224) / 2)
    expected = np.asarray(resized.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255
    np.testing.assert_allclose(out.permute(1, 2, 0).numpy(), expected, atol=1.5 / 255)


def test_pad_mode_resizes_to_28_then_pads_to_32() -> None:
    preprocess = Preprocess((1, 32, 32), (0.0,), (1.0,), "pad", content_size=(28, 28))
    out = preprocess(Image.new("L", (56, 56), 255))[0]
    expected = torch.zeros(32, 32)
    expected[2:30, 2:30] = 1.0
    torch.testing.assert_close(out, expected)


def test_pad_mode_keeps_the_aspect_ratio_and_centres() -> None:
    preprocess = Preprocess((1, 32, 32), (0.0,), (1.0,), "pad", content_size=(28, 28))
    out = preprocess(Image.new("L", (56, 28), 255))[0]  # fits 28 wide × 14 tall
    expected = torch.zeros(32, 32)
    expected[9:23, 2:30] = 1.0
    torch.testing.assert_close(out, expected)


def test_white_background_digit_photo_inverted_matches_mnist_convention() -> None:
    photo = Image.new("L", (40, 40), 255)
    photo.paste(0, (15, 5, 25, 35))  # a dark stroke on white paper
    digit = Preprocess((1, 32, 32), (0.0,), (1.0,), "pad", content_size=(28, 28), invert=True)(photo)[0]
    assert digit[0].max() == 0 and digit[:, 0].max() == 0  # black border (padding and paper)
    assert digit[16, 16] == pytest.approx(1.0)  # white stroke
    assert float(digit[4, 4]) == pytest.approx(0.0, abs=1e-6)  # the paper turned black


def test_for_model_reads_the_model_configuration() -> None:
    resnet = Preprocess.for_model("resnet18")
    assert resnet.input_size == (3, 224, 224)
    assert (resnet.resize_mode, resnet.crop_pct) == ("crop", 0.875)
    assert resnet.mean == (0.485, 0.456, 0.406)

    lenet = Preprocess.for_model("lenet5", invert=True)
    assert lenet.input_size == (1, 32, 32)
    assert (lenet.resize_mode, lenet.content_size, lenet.invert) == ("pad", (28, 28), True)
    assert Preprocess.for_model(create_model("lenet5")) == dataclasses.replace(lenet, invert=False)

    rgb_lenet = Preprocess.for_model(create_model("lenet5_modern", in_chans=3))
    assert rgb_lenet.input_size == (3, 28, 28)
    assert rgb_lenet.mean == (0.1307,) * 3  # the grayscale statistics repeated per channel


def test_for_model_rejects_unknown_models() -> None:
    with pytest.raises(DcnnError, match="unknown model"):
        Preprocess.for_model("resnet_does_not_exist")
    with pytest.raises(DcnnError, match="no model configuration"):
        Preprocess.for_model(torch.nn.Linear(2, 2))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"input_size": (4, 8, 8), "mean": (0.0,) * 4, "std": (1.0,) * 4}, "1 \\(grayscale\\) or 3"),
        ({"mean": (0.5,)}, "mean and std need 3 values"),
        ({"std": (1.0, 0.0, 1.0)}, "std must be positive"),
        ({"resize_mode": "squash"}, "resize_mode"),
        ({"crop_pct": 1.5}, "crop_pct"),
        ({"content_size": (40, 40)}, "content_size"),
        ({"interpolation": "lanczos"}, "interpolation"),
        ({"background": 2.0}, "background"),
    ],
)
def test_invalid_preprocess_raises(options: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"input_size": (3, 32, 32), "mean": (0.0,) * 3, "std": (1.0,) * 3}
    with pytest.raises(DcnnError, match=message):
        Preprocess(**{**arguments, **options})  # type: ignore[arg-type]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (8, 4), (200, 200, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    path = tmp_path / "phone.jpg"
    image.save(path, exif=exif)
    assert open_image(path).size == (4, 8)


@pytest.fixture
def bad_files(tmp_path: Path, images_dir: Path) -> dict[str, Path]:
    png, jpeg = (images_dir / "camera.png").read_bytes(), (images_dir / "rocket.jpg").read_bytes()
    files = {
        "truncated png": (png[: len(png) // 2], "cut.png"),
        "truncated jpeg": (jpeg[: len(jpeg) // 2], "cut.jpg"),
        "corrupt png": (png[:5000] + b"x" * 100 + png[5100:], "garbled.png"),
        "text": (b"not an image at all\n", "notes.png"),
        "empty": (b"", "empty.jpg"),
    }
    paths = {}
    for kind, (data, name) in files.items():
        paths[kind] = tmp_path / name
        paths[kind].write_bytes(data)
    paths["missing"] = tmp_path / "missing.png"
    paths["folder"] = tmp_path
    return paths


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("truncated png", "truncated or corrupt"),
        ("truncated jpeg", "truncated or corrupt"),
        ("corrupt png", "truncated or corrupt"),
        ("text", "not an image file"),
        ("empty", "not an image file"),
        ("missing", "not found"),
        ("folder", "is a folder"),
    ],
)
def test_bad_files_raise_dcnn_error_naming_the_file(bad_files: dict[str, Path], kind: str, message: str) -> None:
    path = bad_files[kind]
    with pytest.raises(DcnnError, match=message) as caught:
        load_image(path, identity(1))
    assert str(path) in str(caught.value)


def test_load_images_keeps_going_past_bad_files(bad_files: dict[str, Path], images_dir: Path) -> None:
    preprocess = Preprocess.for_model("lenet5")
    camera, horse = images_dir / "camera.png", images_dir / "horse.png"
    batch, good, errors = load_images([camera, bad_files["text"], horse, bad_files["missing"]], preprocess)
    assert batch.shape == (2, 1, 32, 32)
    assert good == [camera, horse]
    torch.testing.assert_close(batch[1], load_image(horse, preprocess))
    assert [path for path, _ in errors] == [bad_files["text"], bad_files["missing"]]
    assert "not an image file" in errors[0][1] and "not found" in errors[1][1]


def test_load_images_with_nothing_loadable_gives_an_empty_batch(bad_files: dict[str, Path]) -> None:
    batch, good, errors = load_images([bad_files["empty"]], Preprocess.for_model("resnet18"))
    assert batch.shape == (0, 3, 224, 224)
    assert good == [] and len(errors) == 1


def test_grayscale_photo(images_dir: Path) -> None:
    path = images_dir / "camera.png"
    raw = torch.from_numpy(np.asarray(Image.open(path), dtype=np.float32) / 255)
    as_gray = load_image(path, identity(1, 512, 512))
    torch.testing.assert_close(as_gray[0], raw)
    as_rgb = load_image(path, identity(3, 512, 512))
    torch.testing.assert_close(as_rgb, raw.expand(3, -1, -1))


def test_rgba_photo_matches_pillow_compositing_on_white(images_dir: Path) -> None:
    path = images_dir / "horse.png"
    with Image.open(path) as horse:
        white = Image.new("RGBA", horse.size, (255, 255, 255, 255))
        expected = np.asarray(Image.alpha_composite(white, horse).convert("RGB"), dtype=np.float32) / 255
    out = load_image(path, identity(3, 328, 400))
    np.testing.assert_allclose(out.permute(1, 2, 0).numpy(), expected, atol=1 / 255)


def test_jpeg_photo_through_an_imagenet_model_preprocessing(images_dir: Path) -> None:
    preprocess = Preprocess.for_model("resnet18")
    out = load_image(images_dir / "rocket.jpg", preprocess)
    assert out.shape == (3, 224, 224)
    # Undoing the normalization gives pixels back in [0, 1].
    pixels = out * torch.tensor(preprocess.std).view(3, 1, 1) + torch.tensor(preprocess.mean).view(3, 1, 1)
    assert float(pixels.min()) >= -1e-5 and float(pixels.max()) <= 1 + 1e-5
    assert float(pixels.std()) > 0.05  # a photo, not a flat fill
