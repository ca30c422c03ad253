"""The fast inference path: each preparation step has its effect, and the prepared model computes the
eval-mode model's function to fp32 rounding (1e-5 of the logits' largest magnitude)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import dcnn.export.fast as fast_module
from dcnn.device import native_bf16
from dcnn.errors import DcnnError
from dcnn.export.fast import (
    CLOSE_CALL,
    SMALL_CONV_MACS,
    GemmConv2d,
    chunk_size,
    close_calls,
    fast_inference,
    last_level_cache_bytes,
    peak_layer_bytes,
)
from dcnn.models import create_model
from dcnn.models.lenet import PartiallyConnectedConv
from tests.export.conftest import calibrate


def assert_same_function(fast: nn.Module, model: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        expected = model(x)
    assert (fast(x) - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_fast_inference_folds_batch_norm_and_computes_the_same_function():
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = calibrate(create_model("resnet20", num_classes=10), x)
    batch_norms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    fast = fast_inference(model)
    left = sum(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert batch_norms == 19 and left == 0  # the stem's and the two of each of the 9 blocks, all folded
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 19  # the model itself is untouched
    # 16 channels or more everywhere: channels-last weights
    assert fast.channels_last and fast.model.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert model(x).abs().max() > 1  # calibrated: logits of a size where the tolerance means something
    assert_same_function(fast, model, x)


def test_lenet5_runs_c3_as_one_dense_convolution_in_nchw():
    torch.manual_seed(0)
    model = create_model("lenet5").eval()
    fast = fast_inference(model)
    assert not any(isinstance(m, PartiallyConnectedConv) for m in fast.modules())
    assert isinstance(fast.model.features.c3, GemmConv2d) and fast.model.features.c3.weight.shape == (16, 6, 5, 5)
    assert not fast.channels_last  # 6 maps: NCHW
    assert fast.model.features.c1.weight.is_contiguous()
    assert_same_function(fast, model, torch.randn(5, 1, 32, 32))


def test_small_convolutions_run_as_im2col_gemm_and_larger_ones_in_onednn(monkeypatch):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 16, 5, padding=1).eval()
    gemm = GemmConv2d.of(conv)
    calls = []
    thnn = torch._C._nn.thnn_conv2d
    monkeypatch.setattr(torch._C._nn, "thnn_conv2d", lambda *args: calls.append(args[0].shape) or thnn(*args))
    one = torch.randn(1, 6, 14, 14)  # 16 * 6 * 25 * 12 * 12 = 345,600 multiply-adds an image
    assert 345_600 < SMALL_CONV_MACS < 2 * 345_600
    for x in (one, torch.cat([one, one])):
        with torch.no_grad():
            expected = F.conv2d(x, conv.weight, conv.bias, padding=1)
            assert (gemm(x) - expected).abs().max() < 1e-5 * expected.abs().max()
    assert calls == [(1, 6, 14, 14)]  # the batch of 2 went to oneDNN
    grouped = nn.Conv2d(4, 4, 3, groups=2)
    assert fast_module._gemm_conv(grouped) is grouped  # not what ATen's im2col kernel computes


def test_batches_run_in_chunks_that_fit_half_the_cache(monkeypatch, tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten()).eval()
    x = torch.randn(8, 1, 8, 8)
    # conv: 64 floats in, 256 out; ReLU: 256 in, 256 out (the peak), 4 bytes each
    assert peak_layer_bytes(model, x[:1]) == 512 * 4
    assert chunk_size(1000, 10_000) == 5 and chunk_size(10**9, 10_000) == 1 and chunk_size(1000, None) is None

    monkeypatch.setattr(fast_module, "last_level_cache_bytes", lambda: 2 * 3 * 512 * 4)  # 3 images a chunk
    fast = fast_inference(model)
    seen = []
    fast.model.register_forward_pre_hook(lambda module, args: seen.append(len(args[0])))
    assert_same_function(fast, model, x)
    assert fast.chunks == {((1, 8, 8), "fp32"): 3} and seen == [1, 3, 3, 2]  # one image measured, then the chunks
    if native_bf16(torch.device("cpu")):  # bf16 maps take half the bytes: chunks of twice as many images
        bf16 = fast_inference(model, precision="bf16", close_call=None)
        bf16(x)
        assert bf16.chunks == {((1, 8, 8), "bf16"): 6}


def test_last_level_cache_size_from_sysfs(tmp_path):
    for index, size in (("index0", "48K"), ("index2", "1024K"), ("index3", "32768K")):
        (tmp_path / index).mkdir()
        (tmp_path / index / "size").write_text(size + "\n")
    assert last_level_cache_bytes(tmp_path) == 32 << 20
    assert last_level_cache_bytes(tmp_path / "missing") is None


def small_net(x: torch.Tensor, width: int = 16) -> nn.Module:
    torch.manual_seed(0)
    return calibrate(nn.Sequential(nn.Conv2d(x.shape[1], width, 3), nn.BatchNorm2d(width), nn.ReLU(),
                                   nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 3)), x)


@pytest.mark.slow
def test_compiled_fast_inference_freezes_weights_in_a_cpp_wrapper_and_computes_the_same_function(monkeypatch):
    """Inductor at two batch sizes (about 15 s of CPU with an empty inductor cache, most of it C++);
    each shape compiled once, then looked up."""
    from torch._inductor import config as inductor
    from torch._inductor.utils import run_and_get_cpp_code

    x = torch.rand(40, 1, 16, 16)  # 40 images: 1.1M multiply-adds in the first convolution, oneDNN's
    model = small_net(x)
    fast = fast_inference(model, compile=True)
    _, code = run_and_get_cpp_code(fast, x)
    assert "_convolution_pointwise" in code  # freezing: the weights prepacked for oneDNN, the ReLU fused
    assert "inductor_entry_impl" in code  # the C++ wrapper
    assert not inductor.freezing and not inductor.cpp_wrapper  # switched on only while compiling
    assert_same_function(fast, model, x)
    assert_same_function(fast, model, x[:1])  # one image: the convolution by im2col + GEMM
    assert set(fast.compiled_for) == {((40, 1, 16, 16), torch.float32), ((1, 1, 16, 16), torch.float32)}
    # the input is made contiguous in the layout compiled for (channels-last here, NCHW for a model
    # with narrow maps): a transposed view gives the same answers (uncopied, the compiled code
    # refuses its strides)
    strided = x.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)
    assert not strided.is_contiguous()
    narrow = small_net(x, width=8)
    nchw = fast_inference(narrow, compile=True)
    assert not nchw.channels_last
    assert_same_function(nchw, narrow, strided[:2])
    monkeypatch.setattr(fast_module, "_compile", lambda *args: pytest.fail("a compiled shape compiled again"))
    assert_same_function(fast, model, x)
    assert_same_function(fast, model, strided)


def test_a_model_that_cannot_be_compiled_gets_one_clear_message():
    class DataDependent(nn.Module):  # a branch on the values: torch.export cannot capture it
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1) if x.sum() > 0 else -x.flatten(1)

    fast = fast_inference(DataDependent(), compile=True)
    with pytest.raises(DcnnError, match=r"compiling the model for inputs \(1, 1, 2, 2\) failed "
                                        r"\(GuardOnDataDependentSymNode: .*leave out --compile"):
        fast(torch.ones(1, 1, 2, 2))
    assert not fast.compiled_for


# ----------------------------------------------------------------------------------------------
# bf16, with close calls computed again in fp32.

needs_bf16 = pytest.mark.skipif(not native_bf16(torch.device("cpu")), reason="a CPU without native bf16")


def test_close_calls_are_top_two_logits_nearer_than_a_share_of_the_largest():
    logits = torch.tensor([[10.0, 9.6, 0.0], [10.0, 9.4, 0.0], [-20.0, 0.5, 0.0], [0.0, 0.0, 0.0]])
    # margins 0.4, 0.6, 0.5 and 0 against 5% of 10, 10, 20 and 0
    assert close_calls(logits).tolist() == [True, False, True, False]
    assert close_calls(logits, margin=0.01).tolist() == [False, False, False, False]
    assert CLOSE_CALL == 0.05


@needs_bf16
def test_bf16_keeps_clear_answers_and_computes_close_calls_again_in_fp32():
    # Logits (mean of channel 0, (1 + 2^-12) × mean of channel 1): bf16 rounds the second weight to 1.
    conv = nn.Conv2d(2, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0 + 2**-12]).view(2, 2, 1, 1))
    model = nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    x = torch.ones(2, 2, 4, 4)
    x[1, 1] = 3.0  # image 1: a clear call, 1 against 3
    with torch.no_grad():
        fp32 = model(x)
    fast = fast_inference(model, precision="bf16")
    out = fast(x)
    assert out.dtype == torch.float32 and fast.recomputed == 1
    assert set(fast.chunks) == {((2, 4, 4), "bf16"), ((2, 4, 4), "fp32")}  # the second look sized for fp32
    # Image 0 ties in bf16 (class 0 by argmax, class 1 in fp32): a close call, its fp32 logits.
    assert torch.equal(out[0], fp32[0]) and out[0].argmax() == 1
    # Image 1: bf16's answer, the weight rounded to 1.
    assert out[1].tolist() == [1.0, 3.0] and not torch.equal(out[1], fp32[1])
    assert torch.equal(fast_inference(model)(x), fp32)  # fp32 by default
    alone = fast_inference(model, precision="bf16", close_call=None)  # no second look: bf16's tie
    assert alone(x)[0].tolist() == [1.0, 1.0] and alone.recomputed == 0


@needs_bf16
@pytest.mark.parametrize("name", ["lenet5_modern", "resnet20"])
def test_bf16_predicts_the_fp32_classes_within_bf16_rounding(name):
    torch.manual_seed(0)
    size = (1, 28, 28) if name == "lenet5_modern" else (3, 32, 32)
    x = torch.randn(48, *size)
    model = calibrate(create_model(name, num_classes=10), x)
    with torch.no_grad():
        expected = model(x)
    out = fast_inference(model, precision="bf16")(x)
    assert torch.equal(out.argmax(1), expected.argmax(1))
    scale = expected.abs().amax(1, keepdim=True)
    assert ((out - expected).abs() <= 0.05 * scale).all()
    assert not torch.equal(out, expected)  # bf16 did compute


@needs_bf16
@pytest.mark.slow
def test_compiled_bf16_computes_in_bf16():
    """Autocast is compiled into the graph: the compiled answers are bf16's, not fp32's."""
    x = torch.rand(6, 3, 12, 12)
    model = small_net(x)
    with torch.no_grad():
        expected = model(x)
    out = fast_inference(model, compile=True, precision="bf16", close_call=None)(x)
    error = (out - expected).abs().max() / expected.abs().max()
    assert 1e-4 < error < 0.05  # bf16's rounding (8 bits of mantissa), far above fp32's


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision 'fp16'"):
        fast_inference(nn.Linear(2, 2), precision="fp16")
