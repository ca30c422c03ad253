"""Batched augmentation: each augmentation has its effect (and only it), under a seed, with validation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import yaml

import dcnn.data.augment as augment_module
from dcnn.data.augment import (
    BatchAugment,
    augmentation_names,
    build_augment,
    describe_augmentations,
    parse_augment_spec,
)
from dcnn.errors import DcnnError

N, H, W = 16, 32, 32


def batch(channels: int = 3, n: int = N, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """A fixed batch of uniform noise in [low, high)."""
    g = torch.Generator().manual_seed(1234)
    return low + (high - low) * torch.rand(n, channels, H, W, generator=g)


def augment(spec: list, images: torch.Tensor, seed: int = 0, labels: torch.Tensor | None = None, num_classes: int = N):
    aug = build_augment(spec, num_classes)
    assert isinstance(aug, BatchAugment)
    aug.fit((images * 255).round().to(torch.uint8))  # pca_lighting learns the colour statistics
    labels = torch.arange(images.shape[0]) % num_classes if labels is None else labels
    return aug(images, labels, seed)


# ----------------------------------------------------------------------------------------------
# Geometric augmentations.


@pytest.mark.parametrize(("name", "dim"), [("hflip", -1), ("vflip", -2)])
def test_flip_with_p1_is_torch_flip_and_p0_is_identity(name: str, dim: int) -> None:
    x = batch()
    out, labels = augment([{name: {"p": 1.0}}], x)
    assert torch.equal(out, x.flip(dim))
    assert torch.equal(labels, torch.arange(N))
    assert torch.equal(augment([{name: {"p": 0.0}}], x)[0], x)


def test_flip_with_p_half_flips_some_images_whole() -> None:
    x = batch(n=64)
    out, _ = augment(["hflip"], x, num_classes=64)
    flipped = [torch.equal(o, f) for o, f in zip(out, x.flip(-1), strict=True)]
    kept = [torch.equal(o, i) for o, i in zip(out, x, strict=True)]
    assert all(a != b for a, b in zip(flipped, kept, strict=True))  # each image is one or the other
    assert 16 < sum(flipped) < 48


def alternating_flips(x: torch.Tensor, index: torch.Tensor, epoch: int, spec: list | None = None) -> torch.Tensor:
    """Which images of `x` came out mirrored under [hflip: {alternate: true}] (or `spec`)."""
    aug = build_augment(spec or [{"hflip": {"alternate": True}}], 2)
    out, _ = aug(x, torch.zeros(len(x), dtype=torch.long), seed=epoch, index=index, epoch=epoch)
    mirrored = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, x, strict=True)])
    assert all(m or torch.equal(o, i) for m, o, i in zip(mirrored, out, x, strict=True))
    return mirrored


def test_alternating_flips_mirror_each_image_in_every_other_epoch() -> None:
    # airbench (Jordan 2024): an image mirrored in one epoch is shown unmirrored in the next.
    x = batch(n=64)
    index = torch.randperm(1000, generator=torch.Generator().manual_seed(0))[:64]
    epochs = [alternating_flips(x, index, epoch) for epoch in range(4)]
    assert torch.equal(epochs[0], ~epochs[1]) and torch.equal(epochs[0], epochs[2])
    assert torch.equal(epochs[1], epochs[3])
    assert 16 < int(epochs[0].sum()) < 48  # about half of the images each epoch
    # the choice follows the image (its position in the split), not its place in the batch
    shuffle = torch.randperm(64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(alternating_flips(x[shuffle], index[shuffle], 0), epochs[0][shuffle])
    # fused into a crop that comes before it, the flip draws the same
    no_shift = [{"random_crop": {"padding": 0}}, {"hflip": {"alternate": True}}]
    assert torch.equal(alternating_flips(x, index, 1, no_shift), epochs[1])
    # without positions, the batch positions stand in
    assert torch.equal(alternating_flips(x, None, 0), alternating_flips(x, torch.arange(64), 0))


@pytest.mark.parametrize(("mode", "torch_mode"), [("zeros", "constant"), ("reflect", "reflect")])
def test_random_crop_is_a_window_of_the_padded_image(mode: str, torch_mode: str) -> None:
    x = batch()
    out, _ = augment([{"random_crop": {"size": 32, "padding": 4, "padding_mode": mode}}], x)
    padded = F.pad(x, (4, 4, 4, 4), mode=torch_mode)
    offsets = set()
    for i in range(N):
        found = [
            (dy, dx)
            for dy in range(9)
            for dx in range(9)
            if torch.equal(out[i], padded[i, :, dy : dy + 32, dx : dx + 32])
        ]
        assert len(found) == 1, f"image {i} is not a window of its padded self"
        offsets.add(found[0])
    assert len(offsets) > N // 2  # offsets are drawn per image


def test_random_crop_defaults_to_the_image_size_and_replicates_edges() -> None:
    x = batch()
    out, _ = augment([{"random_crop": {"padding": 1, "padding_mode": "replicate"}}], x)
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    for i in range(N):
        assert any(torch.equal(out[i], padded[i, :, dy : dy + H, dx : dx + W]) for dy in range(3) for dx in range(3))


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate"])
@pytest.mark.parametrize("flip", [None, "hflip", "vflip"])
@pytest.mark.parametrize("channels_last", [True, False])
def test_random_crop_of_large_images_one_by_one_equals_the_gather_of_runs(
    monkeypatch: pytest.MonkeyPatch, mode: str, flip: str | None, channels_last: bool
) -> None:
    # Large images are cropped one by one, small ones by a gather of runs of a padded batch
    # (RandomCrop._one_by_one, _as_runs): the same crops, bit for bit, whichever the size. Windows
    # that leave the image on one side, on both (a crop larger than the image), and that stay inside.
    x = torch.randint(0, 256, (24, 3, 17, 23), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    for size, padding in ((None, 4), (8, 1), (21, 4), (12, 0)):
        spec = [{"random_crop": {"size": size, "padding": padding, "padding_mode": mode}}]
        spec += [{flip: {"p": 0.5}}] if flip else []
        aug, labels = build_augment(spec, 10), torch.zeros(24, dtype=torch.long)
        monkeypatch.setattr(augment_module, "CROP_ONE_BY_ONE", 10**9)
        runs, _ = aug(x, labels, seed=5)
        monkeypatch.setattr(augment_module, "CROP_ONE_BY_ONE", 0)
        one_by_one, _ = aug(x, labels, seed=5)
        assert torch.equal(runs, one_by_one), (size, padding)
        if size is None:  # each is a window of its padded image, mirrored or not
            padded = F.pad(x.float(), (padding,) * 4, mode={"zeros": "constant"}.get(mode, mode))
            windows = [padded[i, :, dy : dy + 17, dx : dx + 23] for i in range(24)
                       for dy in range(2 * padding + 1) for dx in range(2 * padding + 1)]
            dim = {None: -1, "hflip": -1, "vflip": -2}[flip]
            for i in range(24):
                out = one_by_one[i].float()
                assert any(torch.equal(out, w) or (flip and torch.equal(out, w.flip(dim)))
                           for w in windows[i * (2 * padding + 1) ** 2 : (i + 1) * (2 * padding + 1) ** 2])


def test_cutout_leaves_the_callers_batch_as_it_was() -> None:
    # Cutout zeros its holes in place only in a batch an earlier augmentation of the call made.
    x = (batch(low=0.1) * 255).round().to(torch.uint8).contiguous(memory_format=torch.channels_last)
    before = x.clone()
    for spec in ([{"cutout": {"size": 8}}], [{"random_crop": {"padding": 0}}, {"cutout": {"size": 8}}]):
        out, _ = augment(spec, x.float() / 255)
        uint8_out, _ = build_augment(spec, N)(x, torch.arange(N), 0)
        assert torch.equal(x, before)
        assert int((uint8_out == 0).all(1).sum()) >= N * 16  # each image has its hole (a clipped one: 16+)
        assert torch.equal(uint8_out.float() / 255, out)  # the same holes in uint8 and float


def test_pca_lighting_adds_one_principal_colour_shift_per_image() -> None:
    x = batch()
    aug = build_augment([{"pca_lighting": {"std": 0.1}}], N)
    aug.fit((x * 255).round().to(torch.uint8))
    mid = torch.full_like(x, 0.5)  # far from the clamp
    out, _ = aug(mid, torch.arange(N), 0)
    shift = out - mid
    assert torch.allclose(shift, shift[:, :, :1, :1].expand_as(shift), atol=1e-6)  # constant over pixels
    assert shift.abs().amax() > 0
    with pytest.raises(DcnnError, match="fitted on the training images"):
        build_augment(["pca_lighting"], N)(mid, torch.arange(N), 0)


def test_random_crop_to_a_smaller_size() -> None:
    out, _ = augment([{"random_crop": {"size": 24, "padding": 0}}], batch())
    assert out.shape == (N, 3, 24, 24)


def test_translate_moves_content_by_whole_pixels_and_keeps_values() -> None:
    # Every pixel of every image has its own value, so a shift is identified exactly.
    x = torch.randperm(N * 3 * H * W).float().div(N * 3 * H * W).view(N, 3, H, W)
    out, _ = augment([{"translate": {"fraction": 0.25}}], x)
    shifts = []
    for i in range(N):
        match = None
        for dy in range(-8, 9):
            for dx in range(-8, 9):
                shifted = torch.zeros_like(x[i])
                ys, yd = (slice(0, H - dy), slice(dy, H)) if dy >= 0 else (slice(-dy, H), slice(0, H + dy))
                xs, xd = (slice(0, W - dx), slice(dx, W)) if dx >= 0 else (slice(-dx, W), slice(0, W + dx))
                shifted[:, yd, xd] = x[i][:, ys, xs]
                if torch.equal(out[i], shifted):
                    match = (dy, dx)
        assert match is not None, f"image {i} is not a whole-pixel shift of its input"
        shifts.append(match)
    assert sum(s != (0, 0) for s in shifts) > N // 2
    assert max(max(abs(dy), abs(dx)) for dy, dx in shifts) <= 8


def blob_batch(offset: tuple[int, int], n: int = N) -> torch.Tensor:
    """Grey 4×4 squares `offset` pixels from the centre of a black 32×32 image."""
    x = torch.zeros(n, 1, H, W)
    cy, cx = H // 2 + offset[0], W // 2 + offset[1]
    x[:, :, cy - 2 : cy + 2, cx - 2 : cx + 2] = 0.8
    return x


def centroid(images: torch.Tensor) -> torch.Tensor:
    """(N, 2) intensity centroids (y, x) measured from the image centre."""
    ys = torch.arange(H, dtype=torch.float32).view(1, 1, H, 1) - (H - 1) / 2
    xs = torch.arange(W, dtype=torch.float32).view(1, 1, 1, W) - (W - 1) / 2
    mass = images.sum(dim=(1, 2, 3))
    return torch.stack([(images * ys).sum(dim=(1, 2, 3)) / mass, (images * xs).sum(dim=(1, 2, 3)) / mass], 1)


def test_rotate_turns_content_about_the_centre() -> None:
    x = blob_batch((0, 10))
    out, _ = augment([{"rotate": {"degrees": 90.0}}], x)
    before, after = centroid(x), centroid(out)
    radius_before, radius_after = before.norm(dim=1), after.norm(dim=1)
    assert torch.allclose(radius_after, radius_before, atol=0.6)
    angles = torch.rad2deg(torch.atan2(after[:, 0], after[:, 1]))
    assert angles.abs().max() <= 91 and angles.abs().max() > 30 and angles.std() > 10


def test_scale_zooms_about_the_centre() -> None:
    x = blob_batch((0, 6))
    out, _ = augment([{"scale": {"min": 2.0, "max": 2.0}}], x)
    assert torch.allclose(centroid(out), 2 * centroid(x), atol=0.3)
    assert torch.allclose(out.sum(dim=(1, 2, 3)), 4 * x.sum(dim=(1, 2, 3)), rtol=0.05)  # area ×4
    small, _ = augment([{"scale": {"min": 0.5, "max": 0.5}}], x)
    assert torch.allclose(centroid(small), 0.5 * centroid(x), atol=0.3)


def test_perspective_warps_only_when_asked() -> None:
    x = batch()
    out, _ = augment([{"perspective": {"distortion_scale": 0.5, "p": 1.0}}], x)
    assert all((o - i).abs().mean() > 0.05 for o, i in zip(out, x, strict=True))
    assert torch.equal(augment([{"perspective": {"p": 0.0}}], x)[0], x)
    # A warp keeps straight lines straight: a vertical bar stays one connected column band per row.
    bar = torch.zeros(N, 1, H, W)
    bar[:, :, :, 14:18] = 1.0
    warped, _ = augment([{"perspective": {"distortion_scale": 0.3, "p": 1.0}}], bar)
    cols = centroid(warped.clamp(min=0))  # the bar is warped, not destroyed
    assert cols[:, 1].abs().max() < 6


def test_random_resized_crop_crops_each_image_differently() -> None:
    x = batch()
    whole, _ = augment([{"random_resized_crop": {"size": 16, "scale": [1.0, 1.0], "ratio": [1.0, 1.0]}}], x)
    assert whole.shape == (N, 3, 16, 16)  # (its resize: tests/data/test_augment_pixels.py)
    cropped, _ = augment([{"random_resized_crop": {"size": 16}}], x)
    assert all((c - e).abs().mean() > 0.05 for c, e in zip(cropped, whole, strict=True))


def test_cutout_zeros_one_square_of_the_given_size() -> None:
    x = batch(low=0.1)
    out, _ = augment([{"cutout": {"size": 8}}], x, seed=3)
    centres = set()
    for i in range(N):
        hole = (out[i] == 0).all(dim=0)
        assert torch.equal((out[i] == 0).any(dim=0), hole), "a hole spans every channel"
        assert torch.equal(out[i][:, ~hole], x[i][:, ~hole]), "pixels outside the hole are kept"
        rows, cols = hole.any(dim=1).nonzero().flatten(), hole.any(dim=0).nonzero().flatten()
        top, bottom, left, right = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
        assert int(hole.sum()) == (bottom - top) * (right - left), "the hole is a rectangle"
        assert bottom - top == 8 or top == 0 or bottom == H, "a side shorter than 8 is clipped at a border"
        assert right - left == 8 or left == 0 or right == W
        centres.add((top, left))
    assert len(centres) > N // 2


def test_cutout_square_is_clipped_at_the_border_sometimes() -> None:
    x = batch(n=256, low=0.1)
    out, _ = augment([{"cutout": {"size": 8}}], x, num_classes=256)
    areas = (out == 0).all(dim=1).sum(dim=(1, 2))
    assert (areas == 64).float().mean() > 0.5  # inside whole for centres at least 4 pixels from the border
    assert (areas < 64).any() and (areas >= 16).all()  # a corner centre leaves a 4×4 quarter


# ----------------------------------------------------------------------------------------------
# Photometric augmentations.


def test_gaussian_noise_has_the_requested_std_on_mid_grey() -> None:
    x = torch.full((N, 3, H, W), 0.5)
    out, _ = augment([{"gaussian_noise": {"std": 0.1}}], x)
    noise = out - x
    assert abs(noise.std().item() - 0.1) < 0.003
    assert abs(noise.mean().item()) < 0.003
    loud, _ = augment([{"gaussian_noise": {"std": 1.0}}], x)
    assert loud.min() == 0 and loud.max() == 1  # clamped to [0, 1]


def test_contrast_stretch_maps_min_to_0_and_max_to_1() -> None:
    x = batch(low=0.3, high=0.6)
    x[0] = 0.4  # a constant image has nothing to stretch
    out, _ = augment([{"contrast_stretch": {"p": 1.0}}], x)
    low = x.flatten(1).min(1).values.view(-1, 1, 1, 1)
    high = x.flatten(1).max(1).values.view(-1, 1, 1, 1)
    torch.testing.assert_close(out[1:], ((x - low) / (high - low))[1:])
    assert torch.equal(out[0], x[0])
    assert (out[1:].flatten(1).min(1).values == 0).all() and (out[1:].flatten(1).max(1).values == 1).all()


def test_equalize_flattens_the_histogram() -> None:
    # Values in [0.1, 0.5]; 128×128 images, as PIL's integer lookup step saturates a few top levels of
    # small images (kornia reproduces PIL.ImageOps.equalize).
    x = 0.1 + 0.4 * torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    out, _ = augment([{"equalize": {"p": 1.0}}], x, num_classes=2)
    before = torch.histc(x, bins=8, min=0, max=1) / x.numel()
    after = torch.histc(out, bins=8, min=0, max=1) / out.numel()
    assert before[4:].sum() == 0
    assert (after - 1 / 8).abs().max() < 0.03
    assert torch.equal(augment([{"equalize": {"p": 0.0}}], x, num_classes=2)[0], x)


def test_clahe_raises_local_contrast() -> None:
    x = batch(low=0.45, high=0.55)
    out, _ = augment([{"clahe": {"clip_limit": 40.0, "grid_size": 4, "p": 1.0}}], x)
    assert out.std() > 4 * x.std()
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(augment([{"clahe": {"p": 0.0}}], x)[0], x)


def test_color_jitter_brightness_scales_each_image_by_one_factor() -> None:
    x = batch(low=0.2, high=0.6)
    out, _ = augment([{"color_jitter": {"brightness": 0.5, "contrast": 0, "saturation": 0}}], x)
    factors = (out / x).flatten(1)
    torch.testing.assert_close(factors.min(1).values, factors.max(1).values)  # one factor per image
    f = factors[:, 0]
    assert ((f >= 0.5) & (f <= 1.5)).all() and f.std() > 0.1


def test_color_jitter_saturation_leaves_grey_alone_and_changes_colours() -> None:
    grey = batch(channels=1).expand(N, 3, H, W).contiguous()
    spec = [{"color_jitter": {"brightness": 0, "contrast": 0, "saturation": 0.9}}]
    torch.testing.assert_close(augment(spec, grey)[0], grey, atol=1e-5, rtol=0)
    colour = batch()
    assert (augment(spec, colour)[0] - colour).abs().mean() > 0.02


def test_color_jitter_on_grayscale_needs_saturation_and_hue_off() -> None:
    x = batch(channels=1)
    with pytest.raises(DcnnError, match="saturation: 0 and hue: 0"):
        augment(["color_jitter"], x)
    out, _ = augment([{"color_jitter": {"saturation": 0}}], x)
    assert out.shape == x.shape and not torch.equal(out, x)


# ----------------------------------------------------------------------------------------------
# Label mixing.


def test_mixup_blends_images_and_targets_with_one_lambda() -> None:
    x = batch()
    out, targets = augment([{"mixup": {"alpha": 1.0}}], x)
    assert targets.shape == (N, N) and targets.dtype == torch.float32
    torch.testing.assert_close(targets.sum(1), torch.ones(N))
    lam = targets.diagonal()  # image i has label i
    partner = (targets - torch.diag(lam)).argmax(1)
    moved = lam < 1
    assert moved.sum() > N // 2 and torch.allclose(lam[moved], lam[moved][0])
    expected = lam.view(-1, 1, 1, 1) * x + (1 - lam.view(-1, 1, 1, 1)) * x[partner]
    torch.testing.assert_close(out[moved], expected[moved])


def test_mixup_lambda_follows_beta_alpha_alpha() -> None:
    x = torch.rand(4, 1, 4, 4)
    lambdas = {}
    for alpha in (0.2, 4.0):
        aug = build_augment([{"mixup": {"alpha": alpha}}], 4)
        lam = torch.tensor([aug(x, torch.tensor([0, 1, 2, 3]), s)[1].max(1).values.min().item() for s in range(300)])
        lambdas[alpha] = torch.minimum(lam, 1 - lam)  # symmetric: only the distance to 0 or 1 is seen
    # Var(λ) of Beta(α, α) is 1 / (4 (2α + 1)): near 0 or 1 for small α, near 1/2 for large α.
    assert lambdas[0.2].median() < 0.1 < 0.35 < lambdas[4.0].median()


def test_cutmix_target_weight_is_the_pasted_area() -> None:
    x = batch()
    checked = 0
    for seed in range(10):
        out, targets = augment([{"cutmix": {"alpha": 1.0}}], x, seed=seed)
        torch.testing.assert_close(targets.sum(1), torch.ones(N))
        for i in range(N):
            changed = (out[i] != x[i]).any(dim=0)
            if not changed.any():
                continue
            partner = int((targets[i] - torch.eye(N)[i] * targets[i, i]).argmax())
            rows, cols = changed.any(1).nonzero().flatten(), changed.any(0).nonzero().flatten()
            box = (slice(int(rows.min()), int(rows.max()) + 1), slice(int(cols.min()), int(cols.max()) + 1))
            area = (box[0].stop - box[0].start) * (box[1].stop - box[1].start)
            assert torch.equal(out[i][:, box[0], box[1]], x[partner][:, box[0], box[1]])
            assert torch.isclose(targets[i, partner], torch.tensor(area / (H * W)))
            assert torch.isclose(targets[i, i], torch.tensor(1 - area / (H * W)))
            checked += 1
    assert checked > 50


def test_labels_stay_aligned_with_images() -> None:
    # Image k is a constant (k + 1) / 20, so its content tells its class after any geometric op.
    labels = torch.randperm(N, generator=torch.Generator().manual_seed(5))
    x = ((labels.float() + 1) / 20).view(-1, 1, 1, 1).expand(N, 3, H, W).contiguous()
    geometric = [
        {"random_crop": {"size": 28, "padding": 4}},
        {"hflip": {"p": 1.0}},
        {"vflip": {"p": 0.5}},
        {"rotate": {"degrees": 30.0}},
        {"translate": {"fraction": 0.1}},
        {"perspective": {"p": 1.0}},
        {"cutout": {"size": 4}},
    ]
    out, targets = augment(geometric, x, labels=labels)
    assert torch.equal(targets, labels)
    torch.testing.assert_close(out.flatten(1).max(1).values, (labels.float() + 1) / 20)
    # After mixing, an image's mean is the target-weighted mean of the class values.
    # (Crops without padding: padded zeros would count in the mean.)
    no_fill = [{"random_crop": {"size": 28, "padding": 0}}, {"hflip": {"p": 1.0}}]
    mixed, soft = augment([*no_fill, {"cutmix": {"alpha": 1.0}}, {"mixup": {"alpha": 1.0}}], x, labels=labels)
    class_value = (torch.arange(N).float() + 1) / 20
    torch.testing.assert_close(mixed.mean(dim=(1, 2, 3)), soft @ class_value)
    assert (soft.max(1).values < 1).sum() > N // 2


# ----------------------------------------------------------------------------------------------
# Every augmentation, determinism, devices.


def small_options(name: str) -> dict:
    return {"random_resized_crop": {"size": 24}, "clahe": {"grid_size": 4}}.get(name, {})


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", augmentation_names())
def test_every_augmentation_keeps_values_in_range(name: str, channels: int) -> None:
    options = small_options(name)
    if name == "pca_lighting" and channels == 1:
        with pytest.raises(DcnnError, match="alters the RGB channels"):
            augment([name], batch(channels=1, n=4))
        return
    if name == "color_jitter" and channels == 1:
        options = {"saturation": 0.0}
    x = batch(channels=channels, n=4)
    out, _ = augment([{name: options}], x, num_classes=4)
    assert out.dtype == x.dtype and out.shape[:2] == x.shape[:2]
    assert out.min() >= 0 and out.max() <= 1
    if name not in ("hflip", "vflip", "equalize", "clahe", "contrast_stretch", "perspective"):  # p < 1 by default
        assert not torch.equal(out, x)


def test_same_seed_same_output_other_seed_other_output() -> None:
    spec = [name if name != "random_resized_crop" else {name: {"size": 32}} for name in augmentation_names()]
    spec = [s if s != "clahe" else {"clahe": {"grid_size": 4}} for s in spec]
    aug = build_augment(spec, N)
    x = batch()
    aug.fit((x * 255).round().to(torch.uint8))
    a, ta = aug(x, torch.arange(N), 7)
    b, tb = aug(x, torch.arange(N), 7)
    c, tc = aug(x, torch.arange(N), 8)
    assert torch.equal(a, b) and torch.equal(ta, tb)
    assert not torch.equal(a, c) and not torch.equal(ta, tc)


def test_global_random_state_is_untouched() -> None:
    aug = build_augment([{"random_crop": {"padding": 4}}, "hflip", "cutout", "mixup"], N)
    torch.manual_seed(99)
    expected = torch.rand(5)
    torch.manual_seed(99)
    aug(batch(), torch.arange(N), 0)
    torch.testing.assert_close(torch.rand(5), expected, rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batches_stay_on_the_device_and_are_deterministic() -> None:
    aug = build_augment([{"random_crop": {"padding": 4}}, "hflip", "cutout", "color_jitter", "cutmix"], N)
    x, y = batch().cuda(), torch.arange(N).cuda()
    cuda_state = torch.cuda.get_rng_state()
    a, ta = aug(x, y, 3)
    b, _ = aug(x, y, 3)
    assert a.device == x.device and ta.device == x.device and torch.equal(a, b)
    assert torch.equal(torch.cuda.get_rng_state(), cuda_state)


# ----------------------------------------------------------------------------------------------
# Recipe parsing and validation.


def test_recipe_yaml_parses_with_every_option_explicit() -> None:
    spec = yaml.safe_load(
        """
        augment:
          - random_crop: {size: 32, padding: 4}
          - hflip
          - cutout: {size: 8}
          - random_resized_crop: {size: 24, scale: [0.5, 1]}
          - vflip:
          - mixup: {alpha: 0.2}
        """
    )["augment"]
    assert parse_augment_spec(spec) == [
        ("random_crop", {"size": 32, "padding": 4, "padding_mode": "zeros"}),
        ("hflip", {"p": 0.5, "alternate": False}),
        ("cutout", {"size": 8, "p": 1.0}),
        ("random_resized_crop", {"size": 24, "scale": (0.5, 1.0), "ratio": (0.75, 4 / 3)}),
        ("vflip", {"p": 0.5}),
        ("mixup", {"alpha": 0.2}),
    ]
    aug = build_augment(spec, 10)
    assert aug is not None and aug.mixes_labels
    assert not build_augment(["hflip"], 10).mixes_labels
    assert build_augment([], 10) is None and build_augment(None, 10) is None


def test_labels_are_returned_unchanged_without_mixing() -> None:
    labels = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3])
    _, targets = augment(["hflip", "cutout"], batch(), labels=labels, num_classes=10)
    assert targets is labels


def test_describe_shows_defaults_and_help() -> None:
    described = {name: (options, help_text) for name, options, help_text in describe_augmentations()}
    assert list(described) == augmentation_names()
    assert set(described) == {
        "color_jitter", "contrast_stretch", "equalize", "clahe", "gaussian_noise", "translate", "scale",
        "rotate", "hflip", "vflip", "perspective", "random_crop", "random_resized_crop", "cutout", "mixup", "cutmix",
        "pca_lighting",
    }  # fmt: skip
    assert described["random_crop"][0] == {"size": None, "padding": 4, "padding_mode": "zeros"}
    assert described["random_resized_crop"][0] == {"size": 224, "scale": (0.08, 1.0), "ratio": (0.75, 4 / 3)}
    assert described["hflip"][0] == {"p": 0.5, "alternate": False}
    assert described["mixup"][0] == {"alpha": 0.2}
    assert "Zhang" in described["mixup"][1] and all(help_text for _, help_text in described.values())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (["hflp"], r"unknown augmentation 'hflp'\. Did you mean 'hflip'.*Known augmentations: clahe, color_jitter"),
        (
            [{"cutout": {"sise": 4}}],
            r"'cutout' has no option 'sise'\. Did you mean 'size'\? Its options are: size, p\.",
        ),
        ([{"cutout": {"size": 3.5}}], r"option 'size' must be an integer, got 3\.5"),
        ([{"hflip": {"p": "high"}}], r"option 'p' must be a number, got 'high'"),
        ([{"hflip": {"p": 1.5}}], r"'hflip': p must be a probability in \[0, 1\], got 1\.5"),
        ([{"random_crop": {"padding_mode": "edge"}}], r"option 'padding_mode' must be 'zeros' or 'reflect'"),
        ([{"random_resized_crop": {"scale": [0.5]}}], r"option 'scale' must be a pair of floats"),
        ([{"mixup": {"alpha": 0}}], r"alpha must be positive"),
        ([{"hflip": {"alternate": True, "p": 0.3}}], r"every other epoch, so p is 0\.5, not 0\.3"),
        ([{"hflip": 0.5}], r"options must be a mapping"),
        ([{"hflip": {}, "vflip": {}}], r"exactly one key"),
        ("hflip", r"must be a list"),
    ],
)
def test_bad_specs_get_one_clear_message(spec: object, message: str) -> None:
    with pytest.raises(DcnnError, match=message):
        parse_augment_spec(spec)  # type: ignore[arg-type]


def test_bad_batches_get_one_clear_message() -> None:
    aug = build_augment([{"random_crop": {"size": 48, "padding": 4}}], 10)
    with pytest.raises(DcnnError, match="larger than the padded image"):
        aug(batch(), torch.arange(N) % 10, 0)
    with pytest.raises(DcnnError, match=r"batch \(N, C, H, W\) of uint8 pixels or floats"):
        build_augment(["hflip"], 10)(batch()[0], torch.arange(N) % 10, 0)
    with pytest.raises(DcnnError, match=r"clahe: .*grid size.* Lower grid_size"):
        build_augment([{"clahe": {"grid_size": 64, "p": 1.0}}], 10)(batch(), torch.arange(N) % 10, 0)
    with pytest.raises(DcnnError, match="int64 labels"):
        build_augment(["hflip"], 10)(batch(), torch.arange(N - 1), 0)
    with pytest.raises(DcnnError, match=r"labels must lie in \[0, 9\]"):
        build_augment(["mixup"], 10)(batch(), torch.arange(N), 0)
