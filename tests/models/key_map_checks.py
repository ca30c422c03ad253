"""Spot checks of key maps by value: a reference state_dict with distinct values in every tensor,
loaded through our key map, must put the reference's named tensors where we expect them."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn

from dcnn.models import create_model, get_model_cfg
from tests.models.reference import synthesize_state_dict


def load_synthesized_reference(name: str) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """Model `name` with its reference's synthesized state_dict loaded through its key map (strict),
    and that state_dict under the reference's own names."""
    cfg = get_model_cfg(name)
    source = synthesize_state_dict(cfg.reference)
    model = create_model(name)
    model.load_state_dict(cfg.key_map(source))
    return model, source


def assert_same_values(ours_by_their_key: Mapping[str, torch.Tensor], source: Mapping[str, torch.Tensor]) -> None:
    """Each of our tensors equals the reference tensor named by its key."""
    for key, ours in ours_by_their_key.items():
        assert torch.equal(ours, source[key]), key
