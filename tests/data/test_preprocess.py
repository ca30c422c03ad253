"""Preprocess: planning for a model and a dataset, fitting tensor batches, normalizing, saving."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from dcnn.data.folder import decode_image_file
from dcnn.data.preprocess import Preprocess, per_channel
from dcnn.data.whitening import fit_whitening
from dcnn.errors import DcnnError
from dcnn.models._registry import CIFAR_MEAN, CIFAR_STD, MNIST_MEAN, MNIST_STD, get_model_cfg

LUMA = np.array([0.299, 0.587, 0.114])


def random_uint8(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def random_photo(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(random_uint8(height, width, 3, seed=seed).numpy(), "RGB")


# --- planning -----------------------------------------------------------------------------------


def test_mnist_into_lenet5_is_padded_from_28_to_32() -> None:
    prep = Preprocess.for_training(get_model_cfg("lenet5"), 1, (28, 28))
    assert prep.input_size == (1, 32, 32)
    assert prep.resize_mode == "pad" and prep.content_size == (28, 28)


def test_mnist_into_lenet5_modern_keeps_28() -> None:
    prep = Preprocess.for_training(get_model_cfg("lenet5_modern"), 1, (28, 28))
    assert prep.input_size == (1, 28, 28)
    assert prep.resize_mode == "pad" and prep.content_size == (28, 28)
    assert (prep.mean, prep.std) == (MNIST_MEAN, MNIST_STD)


def test_cifar_into_resnet20_is_a_full_crop_at_32() -> None:
    prep = Preprocess.for_training(get_model_cfg("resnet20"), 3, (32, 32))
    assert prep.input_size == (3, 32, 32)
    assert prep.resize_mode == "crop" and prep.crop_pct == 1.0 and prep.content_size is None
    assert (prep.mean, prep.std) == (CIFAR_MEAN, CIFAR_STD)


@pytest.mark.parametrize("fit", ["crop", "stretch"])
def test_photos_are_brought_to_the_models_input_size(fit: str) -> None:
    prep = Preprocess.for_training(get_model_cfg("resnet18"), 3, None, fit)
    assert prep.input_size == (3, 224, 224)
    assert prep.resize_mode == fit and prep.crop_pct == 1.0
    # grayscale photos for a one-channel model: fitted, not padded (no dataset box)
    gray = Preprocess.for_training(get_model_cfg("lenet5"), 1, None, fit)
    assert gray.input_size == (1, 32, 32) and gray.resize_mode == fit


def test_image_size_overrides_the_input_size() -> None:
    cifar = Preprocess.for_training(get_model_cfg("resnet20"), 3, (32, 32), image_size=40)
    assert cifar.input_size == (3, 40, 40) and cifar.resize_mode == "crop"
    mnist_32 = Preprocess.for_training(get_model_cfg("lenet5_modern"), 1, (28, 28), image_size=32)
    assert mnist_32.input_size == (1, 32, 32) and mnist_32.content_size == (28, 28)
    mnist_64 = Preprocess.for_training(get_model_cfg("lenet5_modern"), 1, (28, 28), image_size=64)
    assert mnist_64.input_size == (1, 64, 64) and mnist_64.resize_mode == "crop"  # 36 > MAX_PAD: resized


def test_a_dataset_smaller_than_the_models_minimum_is_resized() -> None:
    # MNIST into AlexNet (minimum 67): far more than 8 pixels to pad, so resized to the input size
    prep = Preprocess.for_training(get_model_cfg("alexnet"), 1, (28, 28))
    assert prep.input_size == (1, 227, 227) and prep.resize_mode == "crop"
    assert prep.mean == (sum(get_model_cfg("alexnet").mean) / 3,)


def test_per_channel_repeats_the_mean_statistic_for_another_channel_count() -> None:
    assert per_channel((0.2, 0.4, 0.6), 1) == pytest.approx((0.4,))
    assert per_channel((0.5,), 3) == (0.5, 0.5, 0.5)
    assert per_channel((0.1, 0.2, 0.3), 3) == (0.1, 0.2, 0.3)


def test_for_model_digits_pad_and_photos_crop() -> None:
    lenet = Preprocess.for_model("lenet5", invert=True)
    assert lenet.input_size == (1, 32, 32) and lenet.resize_mode == "pad"
    assert lenet.content_size == (28, 28) and lenet.invert
    resnet = Preprocess.for_model("resnet18")
    assert resnet.resize_mode == "crop" and resnet.crop_pct == 0.875 and resnet.input_size == (3, 224, 224)
    with pytest.raises(DcnnError, match="no model configuration"):
        Preprocess.for_model(nn.Linear(2, 2))


# --- fitting tensor batches ---------------------------------------------------------------------


def test_fit_batch_pads_digits_exactly() -> None:
    prep = Preprocess.for_training(get_model_cfg("lenet5"), 1, (28, 28))
    x = random_uint8(5, 28, 28)
    out = prep.fit_batch(x)
    assert out.dtype == torch.uint8 and out.shape == (5, 1, 32, 32)
    assert torch.equal(out, F.pad(x[:, None], (2, 2, 2, 2)))


def test_fit_batch_pads_an_odd_margin_as_pixels_does() -> None:
    prep = Preprocess((1, 31, 30), (0.5,), (0.5,), "pad", content_size=(28, 28))
    x = random_uint8(2, 28, 28, seed=4)
    out = prep.fit_batch(x)
    assert torch.equal(out, F.pad(x[:, None], (1, 1, 1, 2)))
    assert torch.equal(out[0].float() / 255, prep.pixels(Image.fromarray(x[0].numpy())))


def test_fit_batch_takes_the_bt601_luminance_of_colour_images() -> None:
    x = random_uint8(4, 3, 16, 16)
    out = Preprocess((1, 16, 16), (0.5,), (0.5,)).fit_batch(x)
    expected = np.clip(np.round(x.numpy().astype(np.float64).transpose(0, 2, 3, 1) @ LUMA), 0, 255)
    assert out.shape == (4, 1, 16, 16)
    assert np.array_equal(out[:, 0].numpy(), expected.astype(np.uint8))


def test_fit_batch_repeats_grayscale_into_three_channels() -> None:
    x = random_uint8(3, 10, 10)
    out = Preprocess((3, 10, 10), (0.5,) * 3, (0.5,) * 3).fit_batch(x)
    assert out.shape == (3, 3, 10, 10) and out.is_contiguous()
    for c in range(3):
        assert torch.equal(out[:, c], x)


def test_fit_batch_resizes_as_pillow_does() -> None:
    x = random_uint8(2, 3, 16, 16, seed=1)
    out = Preprocess((3, 8, 8), (0.5,) * 3, (0.5,) * 3).fit_batch(x)
    pillow = np.stack([
        np.stack([np.asarray(Image.fromarray(x[n, c].numpy()).resize((8, 8), Image.Resampling.BILINEAR))
                  for c in range(3)])
        for n in range(2)
    ])
    assert out.shape == (2, 3, 8, 8) and out.dtype == torch.uint8
    assert np.abs(out.numpy().astype(int) - pillow).max() <= 1


def test_fit_batch_keeps_images_of_the_input_size() -> None:
    x = random_uint8(2, 3, 12, 12)
    assert torch.equal(Preprocess((3, 12, 12), (0.5,) * 3, (0.5,) * 3).fit_batch(x), x)


def test_fit_batch_in_pad_mode_fits_the_content_box_as_pixels_does() -> None:
    # a 28×28 digit into a 32×32 box on a 36×36 canvas (what an evaluation view at 36 asks for):
    # scaled to 32, 2 black pixels around it, as a photo of the same digit is prepared
    prep = Preprocess((1, 36, 36), (0.5,), (0.5,), "pad", content_size=(32, 32))
    x = random_uint8(3, 28, 28, seed=2)
    out = prep.fit_batch(x)
    assert out.shape == (3, 1, 36, 36) and out.dtype == torch.uint8
    for image, fitted in zip(x, out, strict=True):
        pixels = prep.pixels(Image.fromarray(image.numpy()))
        assert (fitted.float() / 255 - pixels).abs().max() <= 1 / 255 + 1e-6
    border = torch.ones(36, 36, dtype=torch.bool)
    border[2:34, 2:34] = False
    assert out[:, :, border].eq(0).all()


# --- normalizing --------------------------------------------------------------------------------


def test_normalize_subtracts_the_mean_and_divides_by_the_std() -> None:
    prep = Preprocess((3, 4, 5), (0.1, 0.5, 0.9), (0.2, 0.25, 0.5))
    x = torch.rand(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    expected = torch.stack([(x[:, c] - m) / s for c, (m, s) in enumerate(zip(prep.mean, prep.std, strict=True))], 1)
    torch.testing.assert_close(prep.normalize(x), expected)


def zca_prep() -> Preprocess:
    whitening = fit_whitening(random_uint8(64, 1, 4, 4, seed=3), "zca")
    return Preprocess((1, 4, 4), (0.5,), (0.25,), "stretch", crop_pct=1.0).with_whitening(whitening)


def test_normalize_with_a_whitening_applies_it_instead_of_mean_and_std() -> None:
    prep = zca_prep()
    x = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(prep.normalize(x), prep.whitening.apply(x))
    assert not torch.allclose(prep.normalize(x), (x - 0.5) / 0.25)


def test_normalize_takes_uint8_pixels_as_their_floats_bit_for_bit() -> None:
    """The trainer hands uint8 batches (crops and flips move bytes) straight to normalize."""
    for prep, channels in ((Preprocess((3, 4, 5), (0.1, 0.5, 0.9), (0.2, 0.25, 0.5)), 3), (zca_prep(), 1)):
        pixels = random_uint8(6, channels, *prep.input_size[1:], seed=4)
        out = prep.normalize(pixels)
        assert out.dtype == torch.float32 and torch.equal(out, prep.normalize(pixels.float() / 255))


def test_a_whitening_of_another_size_is_refused() -> None:
    whitening = fit_whitening(random_uint8(16, 1, 4, 4), "zca")
    with pytest.raises(DcnnError, match="not to the input size"):
        Preprocess((1, 8, 8), (0.5,), (0.5,), whitening=whitening)


def test_calling_normalizes_the_fitted_pixels() -> None:
    prep = Preprocess.for_training(get_model_cfg("resnet20"), 3, (32, 32))
    photo = random_photo(40, 50)
    assert torch.equal(prep(photo), prep.normalize(prep.pixels(photo)[None])[0])


# --- saving -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prep",
    [
        Preprocess.for_training(get_model_cfg("lenet5"), 1, (28, 28)),
        Preprocess.for_model("resnet18"),
        Preprocess((3, 20, 24), (0.1, 0.2, 0.3), (0.4, 0.5, 0.6), "stretch", 0.9, None, "bicubic", False, 0.25),
    ],
)
def test_to_dict_from_dict_round_trips(prep: Preprocess) -> None:
    values = json.loads(json.dumps(prep.to_dict()))
    again = Preprocess.from_dict(values, prep.tensors())
    assert again == prep
    photo = random_photo(37, 29, seed=5)
    assert torch.equal(again(photo), prep(photo))


def test_a_whitening_round_trips_through_safetensors_bytes() -> None:
    prep = zca_prep()
    values = json.loads(json.dumps(prep.to_dict()))
    assert values["whitening"] == "zca"
    tensors = safetensors.torch.load(safetensors.torch.save(prep.tensors()))
    assert all(key.startswith("preprocess.whitening.") for key in tensors)
    again = Preprocess.from_dict(values, tensors)
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    assert torch.equal(again.normalize(x), prep.normalize(x))
    photo = random_photo(9, 7)
    assert torch.equal(again(photo), prep(photo))


def test_from_dict_without_the_whitening_tensors_is_refused() -> None:
    with pytest.raises(DcnnError, match="holds no whitening tensors"):
        Preprocess.from_dict(zca_prep().to_dict(), {})


def test_from_dict_sets_invert_for_prediction() -> None:
    prep = Preprocess.for_model("lenet5")
    assert Preprocess.from_dict(prep.to_dict(), invert=True).invert


# --- photos -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("channels", "fit"), [(3, "crop"), (3, "stretch"), (1, "crop")])
def test_pixels_of_a_photo_equal_the_training_decoding_of_its_file(tmp_path: Path, channels: int, fit: str) -> None:
    path = tmp_path / "photo.png"
    random_photo(53, 37, seed=6).save(path)
    model = "resnet20" if channels == 3 else "lenet5"
    prep = Preprocess.for_training(get_model_cfg(model), channels, None, fit, image_size=24)
    with Image.open(path) as image:
        pixels = prep.pixels(image)
    decoded = decode_image_file(path, (24, 24), channels, fit)
    assert pixels.shape == (channels, 24, 24)
    assert torch.equal((pixels * 255).round().to(torch.uint8), decoded)


def test_pixels_pad_a_digit_image_into_the_content_box() -> None:
    prep = Preprocess.for_training(get_model_cfg("lenet5"), 1, (28, 28))
    digit = random_uint8(28, 28, seed=7)
    expected = F.pad(digit.float()[None] / 255, (2, 2, 2, 2))
    torch.testing.assert_close(prep.pixels(Image.fromarray(digit.numpy())), expected)
    # a larger, non-square photo is scaled to fit the 28×28 box, keeping its aspect ratio
    wide = prep.pixels(Image.new("L", (56, 28), 255))
    rows = wide[0].sum(1).nonzero().flatten()
    cols = wide[0].sum(0).nonzero().flatten()
    assert (rows.min().item(), rows.max().item()) == (9, 22)  # 14 rows, centred in 32
    assert (cols.min().item(), cols.max().item()) == (2, 29)  # 28 columns


def test_invert_maps_pixels_to_one_minus_pixels() -> None:
    photo = random_photo(30, 30, seed=8)
    prep = Preprocess.for_training(get_model_cfg("resnet20"), 3, None)
    inverted = replace(prep, invert=True)
    torch.testing.assert_close(inverted.pixels(photo), 1 - prep.pixels(photo))
    # pad mode inverts the photo, not the canvas: a white image becomes black, margins stay black
    digits = Preprocess.for_model("lenet5", invert=True)
    white = digits.pixels(Image.new("L", (28, 28), 255))
    assert white.abs().max() == 0
    plain = Preprocess.for_model("lenet5").pixels(Image.new("L", (28, 28), 255))
    assert plain.sum() == 28 * 28


# --- invalid descriptions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"input_size": (2, 8, 8), "mean": (0.5,) * 2, "std": (0.5,) * 2}, "1 .grayscale. or 3"),
        ({"input_size": (3, 0, 8)}, "has no pixels"),
        ({"mean": (0.5, 0.5)}, "mean and std need 3"),
        ({"std": (0.5, 0.0, 0.5)}, "std must be positive"),
        ({"resize_mode": "zoom"}, "resize_mode"),
        ({"crop_pct": 0.0}, "crop_pct"),
        ({"crop_pct": 1.5}, "crop_pct"),
        ({"resize_mode": "pad", "content_size": (9, 8)}, "content_size"),
        ({"interpolation": "lanczos"}, "interpolation"),
        ({"background": 2.0}, "background"),
    ],
)
def test_invalid_descriptions_are_refused(changes: dict, message: str) -> None:
    values = {"input_size": (3, 8, 8), "mean": (0.5,) * 3, "std": (0.5,) * 3, **changes}
    with pytest.raises(DcnnError, match="invalid preprocessing: .*" + message):
        Preprocess(**values)
