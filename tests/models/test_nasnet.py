"""NASNet-A: the paper's parameter count for the mobile model, the cell layout of both models, and the
timm key map checked by value with timm's own names."""

from __future__ import annotations

import pytest
import torch

from dcnn.layers.nasnet_cells import FactorizedReduction, ReluConvBn
from dcnn.models import create_model, get_model_cfg
from dcnn.models.nasnet import NASNet
from tests.models.reference import reference


def build_on_meta(name: str) -> NASNet:
    with torch.device("meta"):
        return create_model(name)


def test_mobile_parameter_count_is_the_papers_5_3_million():
    model = build_on_meta("nasnet_a_mobile")
    count = sum(p.numel() for p in model.parameters())
    assert round(count / 1e6, 1) == 5.3  # Table 2: NASNet-A (4 @ 1056), 5.3M
    assert count == get_model_cfg("nasnet_a_mobile").num_params


@pytest.mark.parametrize(
    ("name", "normal_cells", "base_width", "stem", "input_size", "final_size"),
    [("nasnet_a_large", 6, 168, 96, 331, 11), ("nasnet_a_mobile", 4, 44, 32, 224, 7)],
)
def test_cell_layout(name, normal_cells, base_width, stem, input_size, final_size):
    model = build_on_meta(name)
    cells = list(model.cells)
    assert len(cells) == 2 + 3 * normal_cells + 2
    assert model.stem.conv.out_channels == stem
    # Widths: stem cells at 1/4 and 1/2, then doubling at each reduction (Section 3); a Normal cell
    # outputs 6 hidden states, a Reduction cell 4.
    stems, rest = cells[:2], cells[2:]
    assert [c.out_channels for c in stems] == [4 * (base_width // 4), 4 * (base_width // 2)]
    stack = normal_cells + 1
    for index, cell in enumerate(rest):
        stage, position = divmod(index + 1, stack)  # a Reduction cell opens stacks 2 and 3
        if position == 0:
            assert cell.genotype.name == "reduction" and cell.out_channels == 4 * base_width * 2**stage
        else:
            assert cell.genotype.name == "normal" and cell.out_channels == 6 * base_width * 2**stage
    assert model.num_features == 24 * base_width
    with torch.no_grad():
        features = model.forward_features(torch.empty(1, 3, input_size, input_size, device="meta"))
    assert features.shape == (1, 24 * base_width, final_size, final_size)


def test_cells_after_a_reduction_read_the_larger_map():
    # Large reads the output from before the Reduction cell's input, Mobile the Reduction cell's input
    # (the TensorFlow release's skip_reduction_layer_input); both are at twice the resolution.
    large, mobile = build_on_meta("nasnet_a_large"), build_on_meta("nasnet_a_mobile")
    assert large.previous_offsets[9] == 3 and mobile.previous_offsets[7] == 2
    for model, after_reduction in ((large, (9, 16)), (mobile, (7, 12))):
        factorized = [i for i, cell in enumerate(model.cells) if isinstance(cell.pre_previous, FactorizedReduction)]
        assert factorized == [1, 2, *after_reduction]
        assert all(
            isinstance(cell.pre_previous, ReluConvBn)
            for i, cell in enumerate(model.cells)
            if i > 2 and i not in factorized
        )


def test_timm_key_map_by_value():
    cfg = get_model_cfg("nasnet_a_large")
    source = {
        key: torch.tensor(float(index)).expand(shape)
        for index, (key, shape) in enumerate(reference("timm/nasnetalarge")["state_dict"])
    }
    model = build_on_meta("nasnet_a_large")
    model.load_state_dict(cfg.key_map(source), strict=True, assign=True)

    def value_of(key: str) -> float:
        return source[key].reshape(-1)[0].item()

    cells = model.cells
    spot_checks = {
        "conv0.conv.weight": model.stem.conv.weight,
        "conv0.bn.running_mean": model.stem.bn.running_mean,
        "cell_stem_0.conv_1x1.conv.weight": cells[0].pre_current.conv.weight,
        "cell_stem_0.comb_iter_0_right.separable_1.depthwise_conv2d.weight": cells[0]
        .blocks[0]
        .ops[1]
        .depthwise_1.weight,
        "cell_stem_1.path_2.conv.weight": cells[1].pre_previous.path_2.weight,
        "cell_0.final_path_bn.running_var": cells[2].pre_previous.bn.running_var,
        "cell_5.comb_iter_1_left.separable_2.pointwise_conv2d.weight": cells[7].blocks[1].ops[0].pointwise_2.weight,
        "reduction_cell_0.conv_prev_1x1.bn.bias": cells[8].pre_previous.bn.bias,
        "cell_6.path_1.conv.weight": cells[9].pre_previous.path_1.weight,
        "reduction_cell_1.comb_iter_4_left.bn_sep_2.weight": cells[15].blocks[4].ops[0].bn_2.weight,
        "cell_17.comb_iter_0_right.bn_sep_1.running_mean": cells[21].blocks[0].ops[1].bn_1.running_mean,
        "last_linear.weight": model.head.fc.weight,
    }
    for timm_key, ours in spot_checks.items():
        assert ours.shape == source[timm_key].shape, timm_key
        assert torch.all(ours == value_of(timm_key)), timm_key


def test_penultimate_filters_must_fit_the_widths():
    with pytest.raises(ValueError, match="divisible by 96"):
        NASNet(4, 1000, 32, skip_reduction_input=False)
