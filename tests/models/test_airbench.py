"""The airbench94 network (Jordan 2024): parameter count derived from the widths, shapes, the
whitening layer fitted on the first training batch, and the 64x learning rate of the BN shifts."""

from __future__ import annotations

import torch
import torch.nn as nn

from dcnn.models import create_model, get_model_cfg, list_models
from dcnn.models.airbench import AirbenchNet, ScaledBiasBatchNorm


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registered_with_its_paper():
    assert "airbench94" in list_models("airbench*")
    assert get_model_cfg("airbench94").year == 2024
    assert "Jordan" in get_model_cfg("airbench94").paper


def test_parameter_count_by_hand():
    # whitening: 2·3·2·2 = 24 filters of 3×2×2 weights (frozen, still parameters) and 24 biases
    whitening = 24 * 3 * 2 * 2 + 24
    # a block cin → c: two 3×3 convs without bias, two BNs with a scale and a shift each
    def block(cin: int, c: int) -> int:
        return 9 * cin * c + 9 * c * c + 2 * 2 * c

    head = 256 * 10 + 10  # linear classifier with a bias
    expected = whitening + block(24, 64) + block(64, 256) + block(256, 256) + head
    with torch.device("meta"):
        model = create_model("airbench94")
    assert count_params(model) == expected == get_model_cfg("airbench94").num_params


def test_forward_backward_shapes():
    model = create_model("airbench94", num_classes=7).train()
    x = torch.randn(4, 3, 32, 32, requires_grad=True)
    assert model.forward_features(x).shape == (4, 256, 3, 3)
    logits = model(x)
    assert logits.shape == (4, 7)
    logits.sum().backward()
    assert x.grad.shape == x.shape
    assert model.whitening.conv.weight.grad is None  # frozen
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (4, 256)
    model.reset_classifier(3)
    assert model(x).shape == (4, 3) and model.num_classes == 3
    assert create_model("airbench94").eval()(torch.randn(2, 3, 9, 9)).shape == (2, 10)  # min_input_size


def test_whitening_fitted_on_first_training_batch_whitens_its_patches():
    torch.manual_seed(0)
    mixing = torch.tensor([[1.0, 0.8, 0.6], [0.0, 0.5, 0.4], [0.0, 0.0, 0.3]])
    x = torch.einsum("dc,nchw->ndhw", mixing, torch.randn(16, 3, 12, 12)).cumsum(-1)  # correlated pixels
    model = AirbenchNet().train()
    assert not model.whitening.fitted
    model(x)
    assert model.whitening.fitted
    with torch.no_grad():
        out = model.whitening.conv(x) - model.whitening.conv.bias.view(1, -1, 1, 1)
    half = out[:, :12].permute(0, 2, 3, 1).reshape(-1, 12).double()
    covariance = half.T @ half / len(half)
    # decorrelated, each component's variance shrunk to eigenvalue / (eigenvalue + eps), largest first
    patches = x.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12).double()
    eigenvalues = torch.linalg.eigvalsh(patches.T @ patches / len(patches)).flip(0)
    expected = torch.diag(eigenvalues / (eigenvalues + model.whitening.eps))
    assert torch.allclose(covariance, expected, atol=1e-3)
    assert torch.allclose(out[:, 12:], -out[:, :12])  # the negated filters
    weights = model.whitening.conv.weight.clone()
    model(torch.randn(4, 3, 12, 12))  # a second batch does not refit
    assert torch.equal(weights, model.whitening.conv.weight)


def test_bn_shift_moves_64_times_as_far_under_sgd():
    norm = ScaledBiasBatchNorm(2, bias_lr_scale=64.0).train()
    x = torch.randn(8, 2, 3, 3)
    (norm(x) * torch.tensor([1.0, -2.0]).view(1, 2, 1, 1)).sum().backward()
    shift_before = norm.bias.detach() * norm.multiplier
    torch.optim.SGD([norm.bias], lr=0.01).step()
    shift_after = norm.bias.detach() * norm.multiplier
    plain_step = -0.01 * torch.tensor([1.0, -2.0]) * 9 * 8  # d(sum)/d(shift) = weight·count, at lr 0.01
    assert torch.allclose(shift_after - shift_before, 64 * plain_step)
    assert not norm.weight.requires_grad
