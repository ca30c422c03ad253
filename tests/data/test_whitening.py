"""Training-set preprocessing: channel statistics, PCA/ZCA whitening, AlexNet's PCA colour noise."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from dcnn.data.whitening import (
    ColorPCA,
    Whitening,
    WhiteningLayer,
    channel_stats,
    fit_color_pca,
    fit_whitening,
)
from dcnn.errors import DcnnError
from tests.conftest import data_dir

SHAPE = (3, 4, 4)
FEATURES = math.prod(SHAPE)
TINY = 1e-10  # an epsilon far below every eigenvalue of the test images (the smallest is ~6e-5)


def correlated_images(count: int = 500, shape: tuple[int, ...] = SHAPE, seed: int = 0) -> torch.Tensor:
    """uint8 images whose pixels are correlated: a random rotation of independent sources whose
    standard deviations fall from 40 to 2 grey levels."""
    generator = torch.Generator().manual_seed(seed)
    features = math.prod(shape)
    rotation, _ = torch.linalg.qr(torch.randn(features, features, generator=generator, dtype=torch.float64))
    sources = torch.randn(count, features, generator=generator, dtype=torch.float64) * torch.logspace(
        math.log10(40), math.log10(2), features, dtype=torch.float64)
    pixels = (128 + sources @ rotation.T).round().clamp(0, 255)
    return pixels.to(torch.uint8).reshape(count, *shape)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return correlated_images()


def as_rows(images: torch.Tensor) -> torch.Tensor:
    """Images as float64 rows of [0, 1] pixels (N, D): the independent reference."""
    return images.reshape(len(images), -1).double() / 255


def covariance(rows: torch.Tensor) -> torch.Tensor:
    """Population covariance of rows (N, F), computed directly."""
    return torch.cov(rows.T, correction=0)


def eigen_descending(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    values, vectors = torch.linalg.eigh(matrix)
    return values.flip(0), vectors.flip(1)


def whiten(whitening: Whitening, images: torch.Tensor) -> torch.Tensor:
    """Whitened images as float64 rows (N, output features)."""
    return whitening.apply(images.double() / 255).reshape(len(images), -1)


def test_channel_stats_match_direct_computation() -> None:
    images = torch.randint(0, 256, (7, 3, 5, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    mean, std = channel_stats(images, batch=3)  # three chunks: 3 + 3 + 1 images
    pixels = images.double() / 255
    assert mean == pytest.approx(pixels.mean(dim=(0, 2, 3)).tolist(), abs=1e-12)
    assert std == pytest.approx(pixels.std(dim=(0, 2, 3), correction=0).tolist(), abs=1e-12)
    gray_mean, gray_std = channel_stats(images[:, 0])  # (N, H, W): one channel
    assert gray_mean == pytest.approx(mean[:1], abs=1e-12)
    assert gray_std == pytest.approx(std[:1], abs=1e-12)


@pytest.mark.parametrize("method", ["zca", "pca"])
def test_whitened_training_data_has_identity_covariance(images: torch.Tensor, method: str) -> None:
    whitening = fit_whitening(images, method, epsilon=TINY, batch=128)
    z = whiten(whitening, images)
    assert z.shape == (len(images), FEATURES)
    torch.testing.assert_close(z.mean(0), torch.zeros(FEATURES, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.T @ z / len(z), torch.eye(FEATURES, dtype=torch.float64), atol=1e-4, rtol=0)


def test_zca_is_symmetric_and_image_shaped_pca_is_flat(images: torch.Tensor) -> None:
    zca = fit_whitening(images, "zca")
    torch.testing.assert_close(zca.matrix, zca.matrix.T, atol=1e-5, rtol=1e-5)
    assert zca.output_shape == SHAPE
    assert zca.apply(images.float() / 255).shape == (len(images), *SHAPE)
    pca = fit_whitening(images, "pca", components=5)
    assert pca.matrix.shape == (5, FEATURES)
    assert pca.output_shape == (5,)
    assert pca.apply(images.float() / 255).shape == (len(images), 5)


def test_zca_is_the_minimal_distortion_whitening(images: torch.Tensor) -> None:
    """Among whitening transforms (any rotation Q of a whitening W whitens too), ZCA's output is the
    closest to its input: it maximizes the cross-covariance tr cov(z, x) (Kessy, Lewin & Strimmer
    2018, "Optimal Whitening and Decorrelation"), and each output pixel correlates with its input
    pixel, while PCA's outputs (components) do not correspond to pixels."""
    x = as_rows(images)
    x = x - x.mean(0)
    zca, pca = (whiten(fit_whitening(images, method, epsilon=TINY), images) for method in ("zca", "pca"))

    def mean_correlation(z: torch.Tensor) -> float:
        pairs = (torch.corrcoef(torch.stack([z[:, j], x[:, j]]))[0, 1] for j in range(FEATURES))
        return torch.stack(list(pairs)).mean().item()

    assert mean_correlation(zca) > 0.5 > abs(mean_correlation(pca)) + 0.3
    cross = (zca * x).sum() / len(x)
    generator = torch.Generator().manual_seed(2)
    for _ in range(5):
        rotation, _ = torch.linalg.qr(torch.randn(FEATURES, FEATURES, generator=generator, dtype=torch.float64))
        rotated = zca @ rotation.T
        torch.testing.assert_close(rotated.T @ rotated / len(x), torch.eye(FEATURES, dtype=torch.float64),
                                   atol=1e-4, rtol=0)  # still white
        assert (rotated * x).sum() / len(x) < cross


def test_explained_variance_matches_independent_eigenvalues(images: torch.Tensor) -> None:
    values, _ = eigen_descending(covariance(as_rows(images)))
    expected = values / values.sum()
    for whitening in (fit_whitening(images, "zca"), fit_whitening(images, "pca")):
        ratio = whitening.explained_variance_ratio
        assert ratio.sum().item() == pytest.approx(1.0, abs=1e-12)
        assert bool((ratio[:-1] >= ratio[1:]).all())
        torch.testing.assert_close(ratio, expected, atol=1e-12, rtol=1e-9)
    top = int((expected.cumsum(0) < 0.9).sum()) + 1  # components that explain 90%
    kept = top + 3
    pca = fit_whitening(images, "pca", components=kept)
    torch.testing.assert_close(pca.explained_variance_ratio, expected[:kept], atol=1e-12, rtol=1e-9)
    above = int((values[:kept] > 1e-2).sum())
    assert pca.report() == (f"PCA: {kept} of {FEATURES} components explain {expected[:kept].sum().item():.1%} of the "
                            f"variance, the top {top} explain {expected[:top].sum().item():.1%}; {above} have "
                            "variance above epsilon 0.01")


def test_larger_epsilon_shrinks_low_variance_directions(images: torch.Tensor) -> None:
    """Along eigenvector u_i the whitened variance is λ_i / (λ_i + ε): about 1 where λ ≫ ε, damped
    where λ ≲ ε."""
    values, vectors = eigen_descending(covariance(as_rows(images)))
    smallest = values[-1].item()
    variances = {}
    for epsilon in (smallest / 10, smallest * 10):
        pca = whiten(fit_whitening(images, "pca", epsilon=epsilon), images)
        torch.testing.assert_close(pca.var(0, correction=0), values / (values + epsilon), atol=1e-5, rtol=1e-4)
        zca = whiten(fit_whitening(images, "zca", epsilon=epsilon), images)
        along = (vectors.T @ covariance(zca) @ vectors).diagonal()
        torch.testing.assert_close(along, values / (values + epsilon), atol=1e-5, rtol=1e-4)
        variances[epsilon] = along
    small, large = variances.values()
    assert bool((large < small).all())
    assert small[0].item() > 0.99 and large[0].item() > 0.97  # the strongest direction stays white
    assert small[-1].item() == pytest.approx(10 / 11, rel=1e-3) and large[-1].item() == pytest.approx(1 / 11, rel=1e-3)


@pytest.mark.parametrize(("method", "components"), [("zca", None), ("pca", 7)])
def test_round_trip_through_tensors_safetensors_and_layer(images: torch.Tensor, method: str,
                                                          components: int | None) -> None:
    whitening = fit_whitening(images, method, components=components)
    x = torch.rand(6, *SHAPE, generator=torch.Generator().manual_seed(3))
    expected = whitening.apply(x)
    restored = Whitening.from_tensors(whitening.to_tensors())
    loaded = Whitening.from_tensors(load_safetensors(save_safetensors(whitening.to_tensors())))
    for other in (restored, loaded):
        assert (other.method, other.epsilon, other.image_shape) == (method, 0.01, SHAPE)
        assert torch.equal(other.apply(x), expected)
        assert torch.equal(other.eigenvalues, whitening.eigenvalues)
        assert other.report() == whitening.report()
    layer = WhiteningLayer(whitening)
    assert torch.equal(layer(x), expected)
    fresh = WhiteningLayer(Whitening.from_tensors(fit_whitening(correlated_images(seed=9), method,
                                                                components=components).to_tensors()))
    fresh.load_state_dict(load_safetensors(save_safetensors(layer.state_dict())))
    assert torch.equal(fresh(x), expected)
    torch.testing.assert_close(whitening.apply(x[2]), expected[2])  # one image (C, H, W)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: fit_whitening(torch.rand(4, *SHAPE), "zca"), "needs uint8 images"),
    (lambda: fit_whitening(np.zeros((4, *SHAPE), np.uint8), "zca"), "needs a torch.Tensor"),
    (lambda: fit_whitening(torch.zeros(4, 1, *SHAPE, dtype=torch.uint8), "zca"), r"shaped \(N, C, H, W\)"),
    (lambda: fit_whitening(torch.zeros(4, 16, dtype=torch.uint8), "zca"), r"shaped \(N, C, H, W\)"),
    (lambda: fit_whitening(torch.zeros(1, *SHAPE, dtype=torch.uint8), "zca"), "at least 2"),
    (lambda: fit_whitening(correlated_images(20), "pca", components=0), "from 1 to 48"),
    (lambda: fit_whitening(correlated_images(20), "pca", components=49), "from 1 to 48"),
    (lambda: fit_whitening(correlated_images(20), "zca", components=5), "PCA whitening only"),
    (lambda: fit_whitening(correlated_images(20), "zca", epsilon=0.0), "epsilon must be a positive"),
    (lambda: fit_whitening(correlated_images(20), "zca", epsilon=-1e-3), "epsilon must be a positive"),
    (lambda: fit_whitening(correlated_images(20), "zca", epsilon=math.nan), "epsilon must be a positive"),
    (lambda: fit_whitening(correlated_images(20), "whiten"), "unknown whitening method"),
    (lambda: fit_whitening(correlated_images(20), "zca").apply(torch.rand(2, 3, 8, 8)), r"fitted on images \(3, 4"),
    (lambda: fit_whitening(correlated_images(20), "zca").apply(correlated_images(2)), "float images"),
    (lambda: Whitening.from_tensors({"mean": torch.zeros(3)}), "lacks method, epsilon"),
    (lambda: channel_stats(torch.zeros(2, 3, 4, 4)), "needs uint8 images"),
    (lambda: fit_color_pca(correlated_images(20, (1, 4, 4))), r"3-channel images"),
    (lambda: fit_color_pca(correlated_images(20)).augment(torch.rand(2, 3, 4, 4), std=-0.1), "std must be"),
    (lambda: fit_color_pca(correlated_images(20)).augment(torch.rand(2, 1, 4, 4)), "float RGB images"),
])
def test_bad_input_is_refused_with_one_message(call, message: str) -> None:
    with pytest.raises(DcnnError, match=message):
        call()


def test_color_pca_matches_torch_linalg_on_independent_covariance() -> None:
    images = correlated_images(60, (3, 6, 6), seed=4)
    color = fit_color_pca(images, batch=16)
    pixels = images.permute(0, 2, 3, 1).reshape(-1, 3).double() / 255
    rgb_covariance = covariance(pixels)
    values, vectors = eigen_descending(rgb_covariance)
    torch.testing.assert_close(color.eigenvalues, values, atol=1e-12, rtol=1e-9)
    p = color.eigenvectors
    torch.testing.assert_close(p.T @ p, torch.eye(3, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close((p.T @ vectors).abs(), torch.eye(3, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(rgb_covariance @ p, p * color.eigenvalues, atol=1e-12, rtol=0)


def test_color_augmentation_adds_one_scaled_principal_shift_per_image() -> None:
    """Krizhevsky et al. 2012, Sec. 4.1: each image gets Σ_i α_i λ_i p_i with α_i ~ N(0, 0.1²)."""
    color = fit_color_pca(correlated_images(60, (3, 6, 6), seed=5))
    x = torch.rand(4000, 3, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    offset = color.augment(x, generator=torch.Generator().manual_seed(7)) - x
    torch.testing.assert_close(offset, offset[:, :, :1, :1].expand_as(offset), atol=1e-15, rtol=0)
    shift = offset[:, :, 0, 0]
    p = color.eigenvectors
    torch.testing.assert_close(p @ (p.T @ shift.T), shift.T, atol=1e-15, rtol=0)  # in the span of p1, p2, p3
    alpha = shift @ p / color.eigenvalues  # coordinates α_i λ_i divided by λ_i
    torch.testing.assert_close(alpha.std(0), torch.full((3,), 0.1, dtype=torch.float64), atol=6e-3, rtol=0)
    torch.testing.assert_close(alpha.mean(0), torch.zeros(3, dtype=torch.float64), atol=6e-3, rtol=0)
    assert abs(torch.corrcoef(alpha.T)[0, 1].item()) < 0.06  # drawn independently


def test_color_augmentation_is_deterministic_under_a_generator_and_round_trips() -> None:
    color = fit_color_pca(correlated_images(30, (3, 4, 4), seed=8))
    x = torch.rand(5, 3, 4, 4)
    before = x.clone()
    first = color.augment(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(x, before)  # the input is not modified
    assert torch.equal(color.augment(x, generator=torch.Generator().manual_seed(1)), first)
    assert not torch.equal(color.augment(x, generator=torch.Generator().manual_seed(2)), first)
    assert torch.equal(color.augment(x, std=0.0), x)
    loaded = ColorPCA.from_tensors(load_safetensors(save_safetensors(color.to_tensors())))
    assert torch.equal(loaded.augment(x, generator=torch.Generator().manual_seed(1)), first)
    single = color.augment(x[0], generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(single, first[0])  # one image (3, H, W) takes the first draw


@pytest.fixture(scope="module")
def cifar_train() -> torch.Tensor:
    """2,000 real CIFAR-10 training images, the first 200 of each class, uint8 (N, 3, 32, 32)."""
    root = data_dir() / "cifar10-jpeg" / "train"
    classes = sorted(path for path in root.glob("*") if path.is_dir())
    if len(classes) != 10:
        pytest.fail(f"CIFAR-10 JPEGs not found in {root}; set DCNN_DATA_DIR to the folder holding cifar10-jpeg/")
    pixels = [np.asarray(Image.open(path).convert("RGB")) for folder in classes
              for path in sorted(folder.glob("*.jpg"))[:200]]
    return torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous()


def test_cifar10_channel_stats_near_the_published_training_set_values(cifar_train: torch.Tensor) -> None:
    mean, std = channel_stats(cifar_train, batch=512)
    # The whole training set's statistics, as published with CIFAR-10 training recipes.
    assert mean == pytest.approx((0.4914, 0.4822, 0.4465), abs=0.01)
    assert std == pytest.approx((0.2470, 0.2435, 0.2616), abs=0.01)


def test_zca_on_cifar10_whitens_and_reports_explained_variance(cifar_train: torch.Tensor) -> None:
    """ZCA fitted on real images: the central 16×16 crops (D = 768) of the 2,000 images. The code path
    is the one for full 32×32 images (D = 3072), whose eigendecomposition alone takes 10-20 s on one
    core of a shared CI machine, over this file's time budget."""
    crops = cifar_train[:, :, 8:24, 8:24].contiguous()
    count, features = len(crops), crops[0].numel()
    whitening = fit_whitening(crops, "zca", epsilon=1e-2, batch=512)
    x = crops.float() / 255
    z = whitening.apply(x)
    assert z.shape == (count, 3, 16, 16)
    rows, flat = as_rows(crops), z.reshape(count, -1).double()
    # The total variance is the sum of the pixels' variances, computed directly.
    assert whitening.total_variance == pytest.approx(rows.var(0, correction=0).sum().item(), rel=1e-9)
    # The top principal directions, found independently by randomized PCA, have λ ≫ ε: along them the
    # output is white (identity covariance).
    _, singular, directions = torch.pca_lowrank(rows, q=20, niter=6, center=True)
    torch.testing.assert_close(whitening.eigenvalues[:10], singular[:10] ** 2 / count, rtol=1e-4, atol=0)
    assert whitening.eigenvalues[9].item() > 50 * 1e-2
    top = flat @ directions[:, :10]
    torch.testing.assert_close(covariance(top), torch.eye(10, dtype=torch.float64), atol=0.02, rtol=0)
    # In total, each direction keeps λ/(λ+ε) of unit variance.
    values = whitening.eigenvalues
    assert flat.var(0, correction=0).sum().item() == pytest.approx((values / (values + 1e-2)).sum().item(), rel=1e-4)

    # Neighbouring pixels of natural images are strongly correlated; whitening removes most of that
    # (the output keeps edges, Krizhevsky 2009, App. A), ε keeps some in the damped high frequencies.
    def neighbour_correlation(images: torch.Tensor) -> float:
        return torch.corrcoef(torch.stack([images[..., :-1].flatten(), images[..., 1:].flatten()]))[0, 1].item()

    assert neighbour_correlation(x) > 0.85
    assert abs(neighbour_correlation(z)) < 0.5
    report = whitening.report()
    numbers = re.fullmatch(rf"ZCA: {features} of {features} components explain 100\.0% of the variance, the top "
                           r"(\d+) explain (\d+\.\d)%; (\d+) have variance above epsilon 0\.01", report)
    assert numbers, report
    cumulative = whitening.explained_variance_ratio.cumsum(0)
    top90 = int(numbers[1])
    assert cumulative[top90 - 2] < 0.9 <= cumulative[top90 - 1]
    assert float(numbers[2]) == pytest.approx(100 * cumulative[top90 - 1].item(), abs=0.05)
    assert 10 < top90 < 100  # natural images: most variance in few, low-frequency components
    assert int(numbers[3]) == int((values > 1e-2).sum())
