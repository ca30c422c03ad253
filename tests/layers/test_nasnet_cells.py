"""NASNet-A cells: output widths and sizes from the Figure 4 tables, TensorFlow "SAME" padding, the
factorized reduction's two pixel grids, and the separable operation's structure."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from dcnn.layers.nasnet_cells import (
    CURRENT,
    NASNET_A_NORMAL,
    NASNET_A_REDUCTION,
    PREVIOUS,
    CellGenotype,
    FactorizedReduction,
    NasNetCell,
    SamePool2d,
    SeparableStack,
    block_output,
    same_padding_amounts,
)


def test_figure_4_tables():
    # Normal: h_{i-1} and the five blocks; Reduction: blocks 1-4 (Figure 4).
    assert NASNET_A_NORMAL.num_outputs == 6 and not NASNET_A_NORMAL.reduction
    assert NASNET_A_REDUCTION.num_outputs == 4 and NASNET_A_REDUCTION.reduction
    ops = [op for genotype in (NASNET_A_NORMAL, NASNET_A_REDUCTION) for block in genotype.blocks for _, op in block]
    assert len(ops) == 20
    assert sorted(set(ops)) == ["avg3", "identity", "max3", "sep3", "sep5", "sep7"]
    # The Normal cell's blocks read only the two cell inputs; the Reduction cell's last two blocks
    # read block outputs.
    assert {state for block in NASNET_A_NORMAL.blocks for state, _ in block} == {CURRENT, PREVIOUS}
    assert [state for state, _ in NASNET_A_REDUCTION.blocks[4]] == [block_output(0), CURRENT]


@pytest.mark.parametrize(
    ("genotype", "size", "out_size"),
    [(NASNET_A_NORMAL, 7, 7), (NASNET_A_NORMAL, 6, 6), (NASNET_A_REDUCTION, 7, 4), (NASNET_A_REDUCTION, 6, 3)],
)
@pytest.mark.parametrize("previous", ["conv", "factorized"])
def test_cell_output_channels_and_size_from_the_table(genotype, size, out_size, previous):
    width, current_channels, previous_channels = 4, 10, 6
    cell = NasNetCell(genotype, current_channels, previous_channels, width, previous)
    expected_channels = len(genotype.concat) * width
    assert cell.out_channels == expected_channels
    prev_size = 2 * size if previous == "factorized" else size
    out = cell(torch.randn(2, current_channels, size, size), torch.randn(2, previous_channels, prev_size, prev_size))
    assert out.shape == (2, expected_channels, out_size, out_size)


def test_first_stem_cell_reads_the_raw_input_twice():
    # The first stem cell's h_{i-1} is the stem conv output itself: its separables read 5 channels.
    cell = NasNetCell(NASNET_A_REDUCTION, 5, 5, 3, previous="none")
    assert isinstance(cell.pre_previous, nn.Identity)
    assert cell.blocks[0].ops[1].depthwise_1.weight.shape == (5, 1, 7, 7)  # sep7 on h_{i-1}
    assert cell.blocks[0].ops[0].depthwise_1.weight.shape == (3, 1, 5, 5)  # sep5 on h_i after its 1x1
    x = torch.randn(1, 5, 9, 9)
    assert cell(x, x).shape == (1, 12, 5, 5)


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "expected"),
    [
        (42, 3, 2, (0, 1)),
        (21, 3, 2, (1, 1)),
        (42, 7, 2, (2, 3)),
        (21, 7, 2, (3, 3)),
        (9, 5, 1, (2, 2)),
        (1, 5, 2, (2, 2)),
    ],
)
def test_same_padding_amounts(size, kernel, stride, expected):
    before, after = same_padding_amounts(size, kernel, stride)
    assert (before, after) == expected
    assert (size + before + after - kernel) // stride + 1 == math.ceil(size / stride)


def test_average_pooling_counts_padded_zeros_only_at_stride_2():
    ones = torch.ones(1, 1, 4, 4)
    assert torch.equal(SamePool2d("avg", 3, 1)(ones), ones)  # stride 1: padding not counted
    # Stride 2 on 4 pixels pads 0 before, 1 after: the last window holds 2x2 ones of 3x3.
    expected = torch.tensor([[1.0, 6 / 9], [6 / 9, 4 / 9]])
    torch.testing.assert_close(SamePool2d("avg", 3, 2)(ones)[0, 0], expected)


def test_max_pooling_pads_with_minus_infinity():
    x = -torch.arange(1.0, 26.0).reshape(1, 1, 5, 5)
    out = SamePool2d("max", 3, 2)(x)[0, 0]
    # Windows centred on rows/columns 0, 2, 4 (one pixel of padding each side): the top-left maximum.
    expected = torch.tensor([[x[0, 0, r, c].item() for c in (0, 1, 3)] for r in (0, 1, 3)])
    assert torch.equal(out, expected)


def test_factorized_reduction_reads_even_and_odd_pixels():
    reduce = FactorizedReduction(1, 2).eval()
    with torch.no_grad():
        reduce.path_1.weight.fill_(1.0)
        reduce.path_2.weight.fill_(1.0)
    x = torch.arange(1.0, 26.0).reshape(1, 1, 5, 5)  # positive: the ReLU keeps it
    out = reduce(x)[0] * math.sqrt(1 + reduce.bn.eps)  # undo the fresh BN's 1/sqrt(1 + eps)
    odd = torch.zeros(3, 3)
    odd[:2, :2] = x[0, 0, 1::2, 1::2]  # the shifted grid runs past the border into zero padding
    torch.testing.assert_close(out[0], x[0, 0, ::2, ::2])
    torch.testing.assert_close(out[1], odd)


def test_separable_operation_structure_and_parameter_count():
    op = SeparableStack(6, 4, kernel_size=5, stride=2)
    expected = (25 * 6 + 6 * 4 + 2 * 4) + (25 * 4 + 4 * 4 + 2 * 4)  # depthwise, pointwise, BN; twice
    assert sum(p.numel() for p in op.parameters()) == expected
    assert [type(m).__name__ for m in op] == ["ReLU", "SameConv2d", "Conv2d", "BatchNorm2d"] * 2
    assert op.depthwise_1.stride == (2, 2) and op.depthwise_2.stride == (1, 1)
    assert op(torch.randn(1, 6, 9, 8)).shape == (1, 4, 5, 4)


def test_genotype_rejects_bad_tables():
    with pytest.raises(ValueError, match="unknown operation"):
        CellGenotype("bad", (((CURRENT, "conv9"), (PREVIOUS, "sep3")),), (2,), reduction=False)
    with pytest.raises(ValueError, match="not computed yet"):
        CellGenotype("bad", (((block_output(0), "sep3"), (PREVIOUS, "sep3")),), (2,), reduction=False)
    with pytest.raises(ValueError, match="keeps the width"):
        NasNetCell(
            CellGenotype("bad", (((PREVIOUS, "avg3"), (CURRENT, "sep3")),), (2,), reduction=False), 5, 5, 3, "none"
        )
