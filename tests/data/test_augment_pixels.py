"""Augmentation of uint8 batches: pixel operations stay uint8, a crop applies the flip after it in the
same pass, random-resized crops resize as Pillow does, and the float conversion normalizes exactly."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from dcnn.data import preprocess
from dcnn.data.augment import Flip, RandomCrop, ResizedCrop, build_augment
from dcnn.data.preprocess import standardize, to_float
from dcnn.errors import DcnnError

N = 12


def pixels(n: int = N, channels: int = 3, height: int = 40, width: int = 40, seed: int = 0) -> torch.Tensor:
    """uint8 noise (n, channels, height, width): the hardest input for a resize to agree on."""
    return torch.randint(0, 256, (n, channels, height, width), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def run(spec: list, images: torch.Tensor, seed: int = 0, num_classes: int = N) -> tuple[torch.Tensor, torch.Tensor]:
    aug = build_augment(spec, num_classes)
    assert aug is not None
    return aug(images, torch.arange(images.shape[0]) % num_classes, seed)


def pillow_resized_crop(image: torch.Tensor, box: list[int], size: int) -> torch.Tensor:
    """Pillow's bilinear resize of the crop (top, left, height, width) of a uint8 (C, H, W) image,
    as torchvision's RandomResizedCrop does on PIL images (crop, then resize)."""
    top, left, height, width = box
    array = image.permute(1, 2, 0).numpy()
    picture = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    resized = np.asarray(picture.crop((left, top, left + width, top + height)).resize((size, size), Image.BILINEAR))
    return torch.from_numpy(resized.copy()).view(size, size, -1).permute(2, 0, 1)


# ----------------------------------------------------------------------------------------------
# Random-resized crop.


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [24, 56])  # mostly smaller and larger than the crops: down- and upsampling
def test_random_resized_crop_of_uint8_is_pillows_resize_of_the_drawn_crop(channels: int, size: int) -> None:
    x = pixels(channels=channels)
    op = ResizedCrop(size, (0.08, 1.0), (3 / 4, 4 / 3))
    torch.manual_seed(5)
    boxes = op.draw(N, 40, 40).tolist()
    torch.manual_seed(5)
    out = op(x)
    assert out.dtype == torch.uint8 and out.shape == (N, channels, size, size)
    assert len({tuple(b) for b in boxes}) == N
    for image, result, box in zip(x, out, boxes, strict=True):
        diff = (result.int() - pillow_resized_crop(image, box, size).int()).abs()
        assert diff.max() <= 1  # torch's uint8 antialiased kernel rounds as Pillow's does, within one level


def test_random_resized_crops_are_stored_channels_last_as_is_the_float_batch_made_from_them() -> None:
    # Each resized crop (channels-last, as torch's uint8 kernel makes it) is stored by a plain copy,
    # not a transposing one, and the float conversion keeps the layout.
    out = ResizedCrop(32, (0.08, 1.0), (3 / 4, 4 / 3))(pixels(n=4, height=40, width=40))
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    assert to_float(out).is_contiguous(memory_format=torch.channels_last)


def test_random_resized_crop_of_floats_is_the_uint8_result_unrounded() -> None:
    x = pixels()
    out_u8, _ = run([{"random_resized_crop": {"size": 32}}, "hflip"], x, seed=3)
    out_f, _ = run([{"random_resized_crop": {"size": 32}}, "hflip"], x.float() / 255, seed=3)
    assert out_f.dtype == torch.float32
    assert (out_f * 255 - out_u8.float()).abs().max() <= 1.001
    assert out_f.min() >= 0 and out_f.max() <= 1  # bilinear weights are not negative: no overshoot


def test_random_resized_crop_of_the_whole_image_is_a_resize() -> None:
    x = pixels()
    whole, _ = run([{"random_resized_crop": {"size": 16, "scale": [1.0, 1.0], "ratio": [1.0, 1.0]}}], x)
    for image, result in zip(x, whole, strict=True):
        assert (result.int() - pillow_resized_crop(image, [0, 0, 40, 40], 16).int()).abs().max() <= 1


def test_random_resized_crops_follow_the_scale_and_ratio_ranges() -> None:
    op = ResizedCrop(8, (0.25, 0.5), (0.5, 2.0))
    torch.manual_seed(0)
    top, left, height, width = op.draw(2000, 100, 100).T.double()
    assert (top >= 0).all() and (left >= 0).all() and (top + height <= 100).all() and (left + width <= 100).all()
    area, aspect = height * width / 100**2, width / height
    assert area.min() > 0.24 and area.max() < 0.51  # rounding the sides moves the area a little
    assert aspect.min() > 0.48 and aspect.max() < 2.1
    assert area.mean() == pytest.approx(0.375, abs=0.01)  # uniform in the range
    assert aspect.log().mean() == pytest.approx(0.0, abs=0.03)  # log-uniform about 1
    assert len(set(top.tolist())) > 20 and len(set(left.tolist())) > 20


@pytest.mark.parametrize(("height", "width", "box"), [(16, 64, [0, 21, 16, 21]), (64, 16, [21, 0, 21, 16])])
def test_random_resized_crop_falls_back_to_the_centre_crop_of_clamped_ratio(height: int, width: int,
                                                                            box: list[int]) -> None:
    # 90-100% of a 4:1 image at ratio 3/4-4/3 never fits: torchvision takes the centre crop whose
    # ratio is the image's clamped to the range (4/3 for a wide image, 3/4 for a tall one).
    op = ResizedCrop(8, (0.9, 1.0), (3 / 4, 4 / 3))
    torch.manual_seed(0)
    assert op.draw(5, height, width).tolist() == [box] * 5


# ----------------------------------------------------------------------------------------------
# A crop with the flip that follows it.


@pytest.mark.parametrize("dim", [-1, -2])
@pytest.mark.parametrize(
    "crop",
    [RandomCrop(32, 4, "zeros"), RandomCrop(28, 6, "reflect"), RandomCrop(None, 2, "replicate"),
     ResizedCrop(24, (0.08, 1.0), (3 / 4, 4 / 3))],
    ids=["crop-zeros", "crop-reflect", "crop-replicate", "resized-crop"],
)
def test_a_crop_with_its_flip_is_the_crop_then_the_flip(crop: RandomCrop | ResizedCrop, dim: int) -> None:
    x, flip = pixels(n=32, height=32, width=32), Flip(0.5, dim)
    torch.manual_seed(1)
    fused = crop(x, then_flip=flip)
    torch.manual_seed(1)
    separate = flip(crop(x))
    assert torch.equal(fused, separate)
    torch.manual_seed(1)
    assert not torch.equal(fused, crop(x))  # some images were mirrored


def test_a_recipe_fuses_the_flip_after_a_crop() -> None:
    x = pixels(height=32, width=32)
    spec = [{"random_crop": {"size": 32, "padding": 4}}, {"hflip": {"p": 1.0}}, {"vflip": {"p": 1.0}}]
    out, _ = run(spec, x, seed=4)
    torch.manual_seed(4)
    expected = RandomCrop(32, 4, "zeros")(x).flip(-1).flip(-2)
    assert torch.equal(out, expected)


# ----------------------------------------------------------------------------------------------
# uint8 through a list of augmentations.

CIFAR = [{"random_crop": {"size": 32, "padding": 4, "padding_mode": "reflect"}}, "hflip", {"cutout": {"size": 8}}]


def test_pixel_operations_keep_uint8_and_equal_the_float_path() -> None:
    x = pixels(height=32, width=32)
    out, labels = run(CIFAR, x, seed=2)
    assert out.dtype == torch.uint8 and torch.equal(labels, torch.arange(N))
    on_floats, _ = run(CIFAR, x.float() / 255, seed=2)
    assert torch.equal(to_float(out), on_floats)
    assert (out == 0).any(dim=1).flatten(1).sum(1).min() > 0  # every image has its cutout


def test_the_batch_becomes_float_before_the_first_float_augmentation() -> None:
    x = pixels(height=32, width=32)
    spec = [*CIFAR, {"gaussian_noise": {"std": 0.1}}, "hflip"]
    out, _ = run(spec, x, seed=6)
    assert out.dtype == torch.float32
    assert torch.equal(out, run(spec, x.float() / 255, seed=6)[0])


def test_mixing_labels_of_a_uint8_batch_gives_float_images_and_targets() -> None:
    x = pixels(height=32, width=32)
    out, targets = run(["hflip", {"mixup": {"alpha": 1.0}}], x, num_classes=N)
    assert out.dtype == torch.float32 and targets.dtype == torch.float32
    torch.testing.assert_close(targets.sum(1), torch.ones(N))
    assert out.max() <= 1.0


def test_other_integer_batches_are_refused_in_one_line() -> None:
    with pytest.raises(DcnnError, match=r"uint8 pixels or floats in \[0, 1\], got torch.int32"):
        run(["hflip"], pixels().int())


# ----------------------------------------------------------------------------------------------
# Conversion to the model's input.


@pytest.mark.parametrize("channels_last", [False, True])
def test_to_float_normalizes_exactly_as_the_float_formula(channels_last: bool) -> None:
    x = pixels()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    out = to_float(x, mean, std)
    unit = x.float() / 255
    expected = (unit - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert out.dtype == torch.float32 and torch.equal(out, expected)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert out.is_contiguous(memory_format=layout) and not (channels_last and out.is_contiguous())
    assert torch.equal(to_float(x), unit)
    # The float formula itself on either layout: in place and not, the layout kept.
    for in_place in (False, True):
        floats = unit.clone(memory_format=layout)
        result = standardize(floats, mean, std, in_place=in_place)
        assert torch.equal(result, expected) and result.is_contiguous(memory_format=layout)
        assert (result.data_ptr() == floats.data_ptr()) == in_place


class _Spy:
    """Wraps the compiled conversion: how many batches it converted."""

    def __init__(self, conversion: preprocess._FusedConversion) -> None:
        self.conversion, self.calls = conversion, 0

    def __call__(self, *args: torch.Tensor) -> bool:
        written = self.conversion(*args)
        self.calls += written
        return written


@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_conversion_equals_the_operators_bit_for_bit(channels_last: bool, monkeypatch) -> None:
    # Every uint8 value in every channel, at an odd width (the compiled loop's vector tail).
    x = (torch.arange(3 * 48 * 77) % 256).to(torch.uint8).view(1, 3, 48, 77)
    x = torch.cat([x, x.flip(3)])
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    spy = _Spy(preprocess._fused_conversion)
    monkeypatch.setattr(preprocess, "_fused_conversion", spy)
    for stats in ((mean, std), (None, None)):
        eager = to_float(x, *stats)
        fused = to_float(x, *stats, fused=True)
        assert torch.equal(fused, eager) and fused.stride() == eager.stride()
    assert spy.calls == 2  # and not once without `fused`


def test_fused_conversion_that_cannot_compile_warns_once_and_converts_with_the_operators(monkeypatch) -> None:
    def no_compiler(*args, **kwargs):
        raise RuntimeError("no C++ compiler found\nmore detail")

    conversion = preprocess._FusedConversion()
    monkeypatch.setattr(preprocess, "_fused_conversion", conversion)
    monkeypatch.setattr(torch, "compile", no_compiler)
    x = pixels()
    with pytest.warns(RuntimeWarning, match=r"failed \(RuntimeError: no C\+\+ compiler found\); converting with"):
        out = to_float(x, (0.5,) * 3, (0.25,) * 3, fused=True)
    assert conversion.failed and torch.equal(out, to_float(x, (0.5,) * 3, (0.25,) * 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(to_float(x, fused=True), x.float() / 255)
