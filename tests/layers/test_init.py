import math

import torch
import torch.nn as nn

from dcnn.layers.init import he_init_fan_out


def test_he_init_fan_out_scales_convs_by_fan_out_and_resets_batch_norm() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 64, 3)  # fan-out 64·3·3 = 576: std √(2/576)
    bn = nn.BatchNorm2d(64)
    nn.init.constant_(bn.weight, 3.0)
    nn.init.constant_(bn.bias, 2.0)
    linear = nn.Linear(4, 4)
    linear_before = linear.weight.clone()
    he_init_fan_out(nn.Sequential(conv, bn, linear).modules())
    assert math.isclose(conv.weight.std().item(), math.sqrt(2 / 576), rel_tol=0.05)
    assert torch.equal(bn.weight, torch.ones(64)) and torch.equal(bn.bias, torch.zeros(64))
    assert torch.equal(linear.weight, linear_before)
