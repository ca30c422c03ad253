import torch

from dcnn.layers.bn_act_conv import BnActConv


def test_dropout_follows_each_convolution_when_asked():
    unit = BnActConv(8, 4, 3, drop_rate=0.2)
    assert [name for name, _ in unit.named_children()] == ["bn", "act", "conv", "drop"]
    assert unit.drop.p == 0.2
    assert not hasattr(BnActConv(8, 4, 3), "drop")


def test_pre_activation_unit_puts_dropout_before_the_conv_when_asked():
    unit = BnActConv(8, 4, 3, stride=2, groups=2, drop_rate=0.3, dropout="before_conv")
    assert [name for name, _ in unit.named_children()] == ["bn", "act", "drop", "conv"]
    assert unit.conv.stride == (2, 2) and unit.conv.groups == 2 and unit.conv.padding == (1, 1)
    assert unit(torch.randn(1, 8, 6, 6)).shape == (1, 4, 3, 3)
