"""Test-time views: exact crop offsets, averaged probabilities against independent loops, evaluator use."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dcnn.errors import DcnnError
from dcnn.evaluate import evaluate
from dcnn.evaluate.views import EVAL_VIEWS, ViewModel, eval_source_size, view_names


class Recorder(nn.Module):
    """Returns features of its input (per-image mean and top-left pixel) and keeps the batch it saw."""

    num_classes = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.clone()
        return torch.stack([x.mean(dim=(1, 2, 3)), x[:, 0, 0, 0]], dim=1)


def small_cnn(num_classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, num_classes)
    )
    return model.eval()


def coordinate_images(n: int, height: int, width: int) -> torch.Tensor:
    """(n, 1, height, width) images whose pixel (i, j) of image k holds 1000·k + width·i + j."""
    grid = torch.arange(height * width, dtype=torch.float32).reshape(1, 1, height, width)
    return grid + 1000.0 * torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1)


def test_registry_lists_the_views_with_descriptions() -> None:
    assert view_names() == ["center", "flip", "ten_crop", "flip_shift"]
    assert [EVAL_VIEWS[name].num_views for name in view_names()] == [1, 2, 10, 6]
    assert all(EVAL_VIEWS[name].description for name in view_names())


def test_eval_source_size() -> None:
    assert eval_source_size("center", (224, 224)) == (224, 224)
    assert eval_source_size("flip", (32, 32)) == (32, 32)
    assert eval_source_size("ten_crop", (224, 224)) == (256, 256)  # AlexNet, Krizhevsky et al. 2012
    assert eval_source_size("ten_crop", (32, 32)) == (36, 36)  # CIFAR: floor(32 / 0.875) = floor(36.57)
    assert eval_source_size("ten_crop", (224, 112), crop_pct=0.5) == (448, 224)


def test_ten_crop_offsets_and_mirrors() -> None:
    # 10x13 images, 6x8 crops: corners at rows 0/4 and columns 0/5; the center at
    # (round(4 / 2), round(5 / 2)) = (2, 2), as torchvision's center_crop rounds.
    x = coordinate_images(2, 10, 13)
    recorder = Recorder()
    ViewModel(recorder, "ten_crop", (6, 8))(x)
    seen = recorder.seen
    assert seen.shape == (20, 1, 6, 8)  # one batch of N·V crops
    expected_offsets = [(0, 0), (0, 5), (4, 0), (4, 5), (2, 2)]
    for v, (top, left) in enumerate(expected_offsets):
        for n in range(2):
            crop = seen[v * 2 + n, 0]
            assert crop[0, 0].item() == 1000 * n + 13 * top + left
            assert torch.equal(crop, x[n, 0, top : top + 6, left : left + 8])
            assert torch.equal(seen[(v + 5) * 2 + n], torch.flip(crop[None], dims=[-1]))


def test_center_and_flip_take_the_center_of_larger_images() -> None:
    x = coordinate_images(1, 9, 9)
    recorder = Recorder()
    ViewModel(recorder, "center", (5, 5))(x)
    assert recorder.seen.shape == (1, 1, 5, 5) and recorder.seen[0, 0, 0, 0].item() == 9 * 2 + 2
    ViewModel(recorder, "flip", (5, 5))(x)
    assert torch.equal(recorder.seen[0], x[0, :, 2:7, 2:7])
    assert torch.equal(recorder.seen[1], x[0, :, 2:7, 2:7].flip(-1))


def test_flip_shift_scores_one_pixel_translations_reflect_padded_and_their_mirrors() -> None:
    # airbench's TTA (Jordan 2024): pixel (i, j) of the down-right view is pixel (i - 1, j - 1) of the
    # image, row and column 0 reflected (they take row/column 1); the up-left view the other way.
    x = coordinate_images(2, 4, 5)
    recorder = Recorder()
    ViewModel(recorder, "flip_shift", (4, 5))(x)
    seen = recorder.seen
    assert seen.shape == (12, 1, 4, 5)
    rows_down, cols_right = [1, 0, 1, 2], [1, 0, 1, 2, 3]  # reflect: index -1 becomes 1
    rows_up, cols_left = [1, 2, 3, 2], [1, 2, 3, 4, 3]  # index H becomes H - 2
    expected = [x, x[:, :, rows_up][:, :, :, cols_left], x[:, :, rows_down][:, :, :, cols_right]]
    for v, view in enumerate(expected):
        assert torch.equal(seen[2 * v : 2 * v + 2], view)
        assert torch.equal(seen[6 + 2 * v : 6 + 2 * v + 2], view.flip(-1))


def test_center_at_the_input_size_is_log_softmax_of_the_logits() -> None:
    model = small_cnn()
    x = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = ViewModel(model, "center", (12, 12))(x)
        expected = F.log_softmax(model(x), dim=1)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_flip_averages_the_probabilities_of_the_image_and_its_mirror() -> None:
    model = small_cnn()
    x = torch.randn(3, 3, 10, 10, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = ViewModel(model, "flip", (10, 10))(x)
        expected = torch.log((F.softmax(model(x), dim=1) + F.softmax(model(torch.flip(x, dims=[3])), dim=1)) / 2)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out.exp().sum(dim=1), torch.ones(3))


def test_ten_crop_averages_the_probabilities_of_ten_crops() -> None:
    model = small_cnn()
    x = torch.randn(3, 3, 11, 12, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = ViewModel(model, "ten_crop", (8, 8))(x)
        total = torch.zeros(3, 5)
        for top, left in [(0, 0), (0, 4), (3, 0), (3, 4), (2, 2)]:  # center: round(1.5), round(2)
            crop = x[:, :, top : top + 8, left : left + 8]
            total += F.softmax(model(crop), dim=1) + F.softmax(model(crop.flip(3)), dim=1)
    torch.testing.assert_close(out, torch.log(total / 10))


def test_tuple_outputs_are_scored_on_the_first_element() -> None:
    class WithAux(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = small_cnn()

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = self.inner(x)
            return logits, torch.zeros_like(logits)

    wrapped = WithAux()
    x = torch.randn(2, 3, 10, 10, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(ViewModel(wrapped, "flip", (8, 8))(x), ViewModel(wrapped.inner, "flip", (8, 8))(x))


def test_mode_and_num_classes_follow_the_wrapped_model() -> None:
    recorder = Recorder().eval()
    scored = ViewModel(recorder, "flip", (4, 4))
    assert scored.num_classes == 2
    assert not scored.training  # starts in the wrapped model's mode
    scored.train()
    assert recorder.training
    scored.eval()
    assert not recorder.training
    scored.train()
    assert recorder.training
    assert not hasattr(ViewModel(nn.Flatten(), "center", (4, 4)), "num_classes")


def test_evaluate_scores_the_view_averaged_prediction() -> None:
    model = small_cnn(num_classes=3)
    generator = torch.Generator().manual_seed(5)
    batches = [
        (torch.randn(6, 3, 11, 11, generator=generator), torch.randint(0, 3, (6,), generator=generator))
        for _ in range(3)
    ]
    scored = ViewModel(model, "ten_crop", (9, 9))
    result = evaluate(scored, batches, topk=(1,))
    correct, losses = 0, []
    with torch.no_grad():
        for images, labels in batches:
            for image, label in zip(images, labels, strict=True):
                probs = torch.zeros(3)
                for top, left in [(0, 0), (0, 2), (2, 0), (2, 2), (1, 1)]:
                    crop = image[None, :, top : top + 9, left : left + 9]
                    probs += F.softmax(model(crop)[0], 0) + F.softmax(model(crop.flip(3))[0], 0)
                probs /= 10
                correct += int(probs.argmax() == label)
                losses.append(-math.log(probs[label].item()))
    assert result.num_samples == 18
    assert result.accuracy(1) == correct / 18
    assert result.mean_loss == pytest.approx(sum(losses) / 18, rel=1e-5)
    assert model.training is False  # evaluate restored the mode it found


def test_bad_names_and_sizes() -> None:
    with pytest.raises(DcnnError, match=r"unknown evaluation view 'ten_crops'.*'ten_crop'.*center, flip, ten_crop"):
        ViewModel(Recorder(), "ten_crops", (8, 8))
    with pytest.raises(DcnnError, match="unknown evaluation view"):
        eval_source_size("five_crop", (8, 8))
    with pytest.raises(DcnnError, match=r"crops 8x8 pixels but the images are 8x7"):
        ViewModel(Recorder(), "center", (8, 8))(torch.zeros(1, 1, 8, 7))
    with pytest.raises(DcnnError, match=r"input_size must be \(height, width\).*cfg.input_size\[1:\]"):
        ViewModel(Recorder(), "center", (3, 8, 8))  # type: ignore[arg-type]
    with pytest.raises(DcnnError, match=r"batch of images \(N, C, H, W\)"):
        ViewModel(Recorder(), "center", (8, 8))(torch.zeros(1, 8, 8))
    with pytest.raises(DcnnError, match="crop_pct must be in"):
        eval_source_size("ten_crop", (32, 32), crop_pct=1.5)
