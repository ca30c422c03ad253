"""Building blocks shared by the model families. Import from the submodules, e.g.
``from dcnn.layers.conv_bn_act import ConvBnAct``."""
