"""Preprocessing fitted on the training split: channel statistics, PCA/ZCA whitening, PCA colour noise.

Every fit reads uint8 images (N, C, H, W), or (N, H, W) for one channel, and measures pixels scaled
to [0, 1]. The data is read in chunks of `batch` images converted to float64, so 50,000 CIFAR-10
images never need a float copy of the whole set. Sums and sums of products of uint8 values are
integers, exact in float64 up to 2**53 / 255² ≈ 1.4e11 summed rows (pixels or images), so the
statistics do not depend on the chunk size.

- :func:`channel_stats`: per-channel mean and (population) std, for input normalization.
- :func:`fit_whitening`: PCA or ZCA whitening of whole images (Krizhevsky 2009, "Learning Multiple
  Layers of Features from Tiny Images", Appendix A; ZCA is the CIFAR-10 preprocessing of Coates &
  Ng 2011 and of Goodfellow et al. 2013, "Maxout Networks").
- :func:`fit_color_pca`: AlexNet's colour augmentation (Krizhevsky, Sutskever & Hinton 2012,
  Sec. 4.1, "altering the intensities of the RGB channels").

The fitted objects are saved with safetensors through ``to_tensors()`` / ``from_tensors()``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn

from dcnn.errors import DcnnError

Method = Literal["pca", "zca"]
_METHODS = ("pca", "zca")
# The report counts the components that explain this fraction of the variance.
_REPORT_FRACTION = 0.9


def _as_nchw(images: object, what: str, min_images: int = 1, channels: int | None = None) -> torch.Tensor:
    """Check a uint8 image batch (N, C, H, W) or (N, H, W) and return it as (N, C, H, W)."""
    if not isinstance(images, torch.Tensor):
        raise DcnnError(f"{what} needs a torch.Tensor of uint8 images, got {type(images).__name__}; "
                        "convert with torch.from_numpy(...)")
    if images.dtype != torch.uint8:
        raise DcnnError(f"{what} needs uint8 images (0-255), got {images.dtype}; pass the raw decoded "
                        "pixels, before scaling to [0, 1] or normalizing")
    shape = tuple(images.shape)
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4:
        raise DcnnError(f"{what} needs images shaped (N, C, H, W) or (N, H, W), got shape {shape}")
    if channels is not None and images.shape[1] != channels:
        raise DcnnError(f"{what} needs {channels}-channel images (N, {channels}, H, W), got shape {shape}")
    if images.shape[0] < min_images or images[0].numel() == 0:
        raise DcnnError(f"{what} needs at least {min_images} non-empty image{'s' if min_images > 1 else ''}, "
                        f"got shape {shape}")
    return images


def _check_batch(batch: int) -> None:
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise DcnnError(f"batch must be a positive number of images, got {batch!r}")


def _pixel_rows(images: torch.Tensor, batch: int) -> Iterator[torch.Tensor]:
    """Chunks of pixels as rows of channel values (pixels, C)."""
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        yield chunk.permute(0, 2, 3, 1).reshape(-1, chunk.shape[1])


def _image_rows(images: torch.Tensor, batch: int) -> Iterator[torch.Tensor]:
    """Chunks of whole images as rows of C·H·W features."""
    flat = images.reshape(len(images), -1)
    for start in range(0, len(flat), batch):
        yield flat[start:start + batch]


def _moments(rows: Iterator[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (F,) and population covariance (F, F) in float64 of uint8 rows (R, F), scaled to [0, 1].

    The chunks' sums and sums of products are integers (exact in float64); the covariance is
    (Σxxᵀ − (Σx)(Σx)ᵀ/n) / n, scaled by 1/255².
    """
    count, total, products = 0, None, None
    for chunk in rows:
        x = chunk.to(device=device, dtype=torch.float64)
        if total is None:
            total = torch.zeros(x.shape[1], dtype=torch.float64, device=device)
            products = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=device)
        total += x.sum(0)
        products.addmm_(x.T, x)
        count += len(x)
    covariance = (products - torch.outer(total, total) / count) / (count * 255.0**2)
    return total / (count * 255.0), covariance


def _eigh_descending(covariance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (descending, rounding negatives clamped to 0) and eigenvectors (columns).

    Each eigenvector's sign is fixed so that its largest-magnitude entry is positive (LAPACK's
    signs are arbitrary), so fits of the same data agree across machines (eigenvalues being distinct).
    """
    values, vectors = torch.linalg.eigh(covariance)
    values, vectors = values.flip(0).clamp_min(0.0), vectors.flip(1)
    largest = vectors.gather(0, vectors.abs().argmax(0, keepdim=True))
    return values, vectors * torch.where(largest < 0, -1.0, 1.0)


def _device(images: torch.Tensor, device: torch.device | str | None) -> torch.device:
    return images.device if device is None else torch.device(device)


def channel_stats(images: torch.Tensor, batch: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (N, C, H, W) or (N, H, W), pixels scaled to [0, 1].

    The std is the population std over all pixels of the set (what ``Normalize(mean, std)`` needs).
    Reads `batch` images at a time.
    """
    images = _as_nchw(images, "channel_stats")
    _check_batch(batch)
    mean, covariance = _moments(_pixel_rows(images, batch), images.device)
    std = covariance.diagonal().clamp_min(0.0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


@dataclass(frozen=True, eq=False)
class Whitening:
    """A whitening transform fitted on training images: ``z = W (x − mean)`` for a flattened image x.

    Attributes:
        method: "zca" or "pca".
        epsilon: added to the covariance eigenvalues (variance units of [0, 1] pixels).
        image_shape: (C, H, W) of the images it reads.
        mean: (D,) float32 mean image, D = C·H·W.
        matrix: W, float32, (D, D) for ZCA, (k, D) for PCA with k kept components.
        eigenvalues: (k,) float64 covariance eigenvalues of the kept components, descending.
        total_variance: the sum of all D eigenvalues (the trace of the covariance).

    Output: ZCA keeps the image's shape (C, H, W): W = U diag(1/√(λ+ε)) Uᵀ rotates back into pixel
    space, so each output pixel is its input pixel with correlations to its neighbours removed
    (edges enhanced; Krizhevsky 2009, App. A), which is what a CNN's convolutions need. PCA output
    is a flat vector (k,): W = diag(1/√(λ+ε)) Uᵀ gives component coordinates, which have no spatial
    layout, so reshaping them into an image would give a convolution meaningless "neighbours"; PCA
    whitening is for models that read vectors (linear, MLP) and for analysis. `output_shape` says
    which.
    """

    method: Method
    epsilon: float
    image_shape: tuple[int, int, int]
    mean: torch.Tensor
    matrix: torch.Tensor
    eigenvalues: torch.Tensor
    total_variance: float

    def __post_init__(self) -> None:
        if self.method not in _METHODS:
            raise DcnnError(f"unknown whitening method {self.method!r}; use 'zca' or 'pca'")
        features = math.prod(self.image_shape)
        rows = len(self.eigenvalues)
        if (self.mean.shape != (features,) or self.matrix.shape != (rows, features) or self.eigenvalues.dim() != 1
                or (self.method == "zca" and rows != features)):
            raise DcnnError(f"inconsistent {self.method} whitening for images {self.image_shape}: mean "
                            f"{tuple(self.mean.shape)}, matrix {tuple(self.matrix.shape)}, eigenvalues "
                            f"{tuple(self.eigenvalues.shape)}; refit it with fit_whitening")

    @property
    def explained_variance_ratio(self) -> torch.Tensor:
        """(k,) the fraction of the training set's variance along each kept component."""
        return self.eigenvalues / self.total_variance

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of one output: the image shape (C, H, W) for ZCA, (k,) for PCA."""
        return self.image_shape if self.method == "zca" else (len(self.eigenvalues),)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Whiten float images (N, C, H, W), or one image (C, H, W), in [0, 1]: one matrix product.

        Runs on x's device (`to(device)` keeps the matrix there); computes in x's dtype promoted to
        at least float32. Returns (N, *output_shape), or output_shape for one image.
        """
        return _whiten(x, self.mean, self.matrix, self.image_shape, self.output_shape)

    def to(self, device: torch.device | str) -> Whitening:
        """This whitening with its mean and matrix on `device`."""
        return Whitening(self.method, self.epsilon, self.image_shape, self.mean.to(device),
                         self.matrix.to(device), self.eigenvalues, self.total_variance)

    def report(self) -> str:
        """One line: kept components, the variance they explain, how many exceed epsilon."""
        ratio = self.explained_variance_ratio
        cumulative = ratio.cumsum(0)
        kept, features = len(ratio), math.prod(self.image_shape)
        line = (f"{self.method.upper()}: {kept} of {features} components explain "
                f"{cumulative[-1].item():.1%} of the variance")
        top = int((cumulative < _REPORT_FRACTION).sum()) + 1
        if top < kept:
            line += f", the top {top} explain {cumulative[top - 1].item():.1%}"
        above = int((self.eigenvalues > self.epsilon).sum())
        return line + f"; {above} have variance above epsilon {self.epsilon:g}"

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """Contiguous CPU tensors for ``safetensors.torch.save``; :meth:`from_tensors` reverses it."""
        return {
            "method": torch.tensor(list(self.method.encode()), dtype=torch.uint8),
            "epsilon": torch.tensor([self.epsilon], dtype=torch.float64),
            "image_shape": torch.tensor(self.image_shape, dtype=torch.int64),
            "mean": self.mean.detach().cpu().contiguous(),
            "matrix": self.matrix.detach().cpu().contiguous(),
            "eigenvalues": self.eigenvalues.detach().cpu().contiguous(),
            "total_variance": torch.tensor([self.total_variance], dtype=torch.float64),
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> Whitening:
        """The whitening saved by :meth:`to_tensors`."""
        tensors = _require(tensors, ("method", "epsilon", "image_shape", "mean", "matrix", "eigenvalues",
                                     "total_variance"), "whitening")
        try:
            method = bytes(tensors["method"].tolist()).decode()
        except (UnicodeDecodeError, ValueError):
            method = repr(tensors["method"].tolist())
        image_shape = tuple(int(v) for v in tensors["image_shape"].tolist())
        if len(image_shape) != 3:
            raise DcnnError(f"saved whitening has image_shape {image_shape}, expected (C, H, W); refit it")
        return cls(method, float(tensors["epsilon"].item()), image_shape, tensors["mean"].float(),
                   tensors["matrix"].float(), tensors["eigenvalues"].double(), float(tensors["total_variance"].item()))


def _require(tensors: dict[str, torch.Tensor], keys: tuple[str, ...], what: str) -> dict[str, torch.Tensor]:
    missing = [key for key in keys if key not in tensors]
    if missing:
        raise DcnnError(f"saved {what} lacks {', '.join(missing)}; it was not written by to_tensors(), refit it")
    return tensors


def _whiten(x: torch.Tensor, mean: torch.Tensor, matrix: torch.Tensor, image_shape: tuple[int, ...],
            output_shape: tuple[int, ...]) -> torch.Tensor:
    """``(x − mean) Wᵀ`` on flattened images, reshaped to output_shape (shared by Whitening and its layer)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise DcnnError(f"whitening needs float images in [0, 1], got "
                        f"{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}; divide uint8 pixels by 255")
    if x.dim() not in (3, 4) or tuple(x.shape[-3:]) != tuple(image_shape):
        raise DcnnError(f"whitening was fitted on images {tuple(image_shape)}, got shape {tuple(x.shape)}; "
                        "pass (N, C, H, W) or (C, H, W) images of the training size")
    single = x.dim() == 3
    batch = x.reshape(1 if single else len(x), -1)
    dtype = torch.promote_types(x.dtype, matrix.dtype)
    centred = batch.to(dtype) - mean.to(x.device, dtype)
    out = (centred @ matrix.to(x.device, dtype).T).reshape(len(batch), *output_shape)
    return out[0] if single else out


def fit_whitening(images: torch.Tensor, method: Method, epsilon: float = 1e-2, components: int | None = None,
                  *, batch: int = 1024, device: torch.device | str | None = None) -> Whitening:
    """Fit PCA or ZCA whitening on uint8 training images (N, C, H, W) or (N, H, W).

    Each image is a vector of D = C·H·W features (3072 for CIFAR-10) scaled to [0, 1]; the features'
    mean is subtracted and their D×D covariance Σ = U diag(λ) Uᵀ is accumulated in float64 over
    chunks of `batch` images, then decomposed (Krizhevsky 2009, App. A).

    - "zca": W = U diag(1/√(λ+ε)) Uᵀ = (Σ + εI)^(-1/2), symmetric; output image-shaped.
    - "pca": W = diag(1/√(λ+ε)) Uᵀ over the top `components` (all D when None); output (k,).

    `epsilon` is added to each eigenvalue, in the variance units of pixels in [0, 1] (ε = 0.01 here
    is ε = 0.01·255² ≈ 650 for 0-255 pixels). A direction along which the images vary less than ε is
    damped rather than amplified by 1/√λ: the output variance along component i is λᵢ/(λᵢ+ε), so a
    larger ε keeps low-variance (high-frequency, noisy) directions small. For CIFAR-10 a single
    pixel's variance is about 0.06.

    `device` is where the covariance is accumulated and decomposed (default: the images' device);
    the result lives on the CPU, `Whitening.to(device)` moves it.
    """
    images = _as_nchw(images, "fit_whitening", min_images=2)
    if method not in _METHODS:
        raise DcnnError(f"unknown whitening method {method!r}; use 'zca' or 'pca'")
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not 0 < epsilon < math.inf:
        raise DcnnError(f"epsilon must be a positive number (variance of [0, 1] pixels, e.g. 0.01), got {epsilon!r}")
    _check_batch(batch)
    features = images[0].numel()
    if components is not None:
        if method != "pca":
            raise DcnnError("components applies to PCA whitening only; ZCA keeps all components "
                            "(drop components, or use method='pca')")
        if isinstance(components, bool) or not isinstance(components, int) or not 1 <= components <= features:
            raise DcnnError(f"components must be an integer from 1 to {features} (the number of pixel values "
                            f"per image), got {components!r}")
    mean, covariance = _moments(_image_rows(images, batch), _device(images, device))
    values, vectors = _eigh_descending(covariance)
    kept = features if components is None else components
    values, vectors = values[:kept], vectors[:, :kept]
    scaled = vectors.T / (values + epsilon).sqrt()[:, None]  # diag(1/√(λ+ε)) Uᵀ
    matrix = vectors @ scaled if method == "zca" else scaled
    return Whitening(method, float(epsilon), tuple(images.shape[1:]), mean.float().cpu(),
                     matrix.float().cpu(), values.cpu(), covariance.trace().item())


class WhiteningLayer(nn.Module):
    """A fitted :class:`Whitening` as a module (mean and matrix as buffers), to put in front of a model.

    ``forward(x)`` is ``whitening.apply(x)``; ``.to(device)`` moves the buffers; the buffers are in
    the state_dict, so an exported model carries its preprocessing.
    """

    mean: torch.Tensor
    matrix: torch.Tensor

    def __init__(self, whitening: Whitening) -> None:
        super().__init__()
        self.method = whitening.method
        self.image_shape = whitening.image_shape
        self.output_shape = whitening.output_shape
        self.register_buffer("mean", whitening.mean.detach().clone())
        self.register_buffer("matrix", whitening.matrix.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _whiten(x, self.mean, self.matrix, self.image_shape, self.output_shape)

    def extra_repr(self) -> str:
        return f"method={self.method!r}, image_shape={self.image_shape}, output_shape={self.output_shape}"


@dataclass(frozen=True, eq=False)
class ColorPCA:
    """Principal components of RGB pixel values over a training set, for AlexNet's colour noise.

    Attributes:
        eigenvalues: (3,) float64, descending: variances of [0, 1] pixel values along each component.
        eigenvectors: (3, 3) float64, orthonormal; column i is the component p_i of eigenvalue λ_i.
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor

    def __post_init__(self) -> None:
        if self.eigenvalues.shape != (3,) or self.eigenvectors.shape != (3, 3):
            raise DcnnError(f"colour PCA needs eigenvalues (3,) and eigenvectors (3, 3), got "
                            f"{tuple(self.eigenvalues.shape)} and {tuple(self.eigenvectors.shape)}; refit it")

    def augment(self, x: torch.Tensor, std: float = 0.1, generator: torch.Generator | None = None) -> torch.Tensor:
        """Add [p1, p2, p3][α1λ1, α2λ2, α3λ3]ᵀ to every pixel of each image (N, 3, H, W) or (3, H, W).

        α_i ~ N(0, std²), one for each of the three components, is drawn once per image and call
        (Krizhevsky et al. 2012, Sec. 4.1: std 0.1, redrawn each time the image is used). x holds
        [0, 1] pixels, the scale λ was measured in: the formula multiplies by λ (a variance), not √λ,
        so it is not scale-free, and eigenvalues of 0-255 pixels would give a shift 255× larger
        relative to the image. The α are drawn on the generator's device (x's when None); returns a
        new tensor of x's dtype.
        """
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() not in (3, 4) or x.shape[-3] != 3:
            raise DcnnError(f"colour augmentation needs float RGB images (N, 3, H, W) or (3, H, W) in [0, 1], got "
                            f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        if isinstance(std, bool) or not isinstance(std, (int, float)) or not 0 <= std < math.inf:
            raise DcnnError(f"std must be a non-negative number (the paper uses 0.1), got {std!r}")
        count = 1 if x.dim() == 3 else len(x)
        alpha = torch.randn(count, 3, generator=generator, dtype=torch.float64,
                            device=generator.device if generator is not None else x.device) * std
        eigenvalues, eigenvectors = self.eigenvalues.to(alpha.device), self.eigenvectors.to(alpha.device)
        offset = (alpha * eigenvalues) @ eigenvectors.T  # row n: Σ_i α_i λ_i p_i
        offset = offset.to(x.device, x.dtype)[:, :, None, None]
        return x + (offset[0] if x.dim() == 3 else offset)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """Contiguous CPU tensors for ``safetensors.torch.save``; :meth:`from_tensors` reverses it."""
        return {"eigenvalues": self.eigenvalues.detach().cpu().contiguous(),
                "eigenvectors": self.eigenvectors.detach().cpu().contiguous()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> ColorPCA:
        """The colour PCA saved by :meth:`to_tensors`."""
        tensors = _require(tensors, ("eigenvalues", "eigenvectors"), "colour PCA")
        return cls(tensors["eigenvalues"].double(), tensors["eigenvectors"].double())


def fit_color_pca(images: torch.Tensor, batch: int = 4096, device: torch.device | str | None = None) -> ColorPCA:
    """PCA of the RGB values of every pixel of uint8 training images (N, 3, H, W), scaled to [0, 1].

    The 3×3 covariance of pixel values over the whole set is accumulated in float64 over chunks of
    `batch` images (Krizhevsky et al. 2012, Sec. 4.1: "PCA on the set of RGB pixel values throughout
    the ImageNet training set").
    """
    images = _as_nchw(images, "fit_color_pca", channels=3)
    _check_batch(batch)
    _, covariance = _moments(_pixel_rows(images, batch), _device(images, device))
    values, vectors = _eigh_descending(covariance)
    return ColorPCA(values.cpu(), vectors.cpu())
