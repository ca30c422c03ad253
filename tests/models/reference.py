"""Reference facts for the model tests: shared/reference/state_dicts.json and deterministic
synthetic checkpoints with the reference libraries' names and shapes."""

from __future__ import annotations

import functools
import json
import math
import zlib
from pathlib import Path

import torch

from tests.conftest import REPO_ROOT, SHARED_DIR

REFERENCE_JSON = SHARED_DIR / "reference" / "state_dicts.json"
OUTPUTS_DIR = REPO_ROOT / "tests" / "models" / "fixtures" / "reference_outputs"


@functools.cache
def reference_models() -> dict[str, dict]:
    return json.loads(REFERENCE_JSON.read_text())["models"]


def reference(name: str) -> dict:
    """The entry of `name` ("torchvision/resnet18", "timm/inception_v4", ...)."""
    return reference_models()[name]


def synthesize_tensor(key: str, shape: list[int]) -> torch.Tensor:
    """A tensor whose values depend only on its key: He-uniform weights, BN stats near 1 and 0."""
    gen = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    if key.endswith("num_batches_tracked"):
        return torch.tensor(100)
    if key.endswith("running_var"):
        return torch.rand(shape, generator=gen) + 0.5
    if key.endswith("running_mean"):
        return 0.1 * torch.randn(shape, generator=gen)
    if len(shape) >= 2:
        fan_in = math.prod(shape[1:])
        bound = math.sqrt(6.0 / fan_in)
        return (2 * torch.rand(shape, generator=gen) - 1) * bound
    if key.endswith("weight"):
        return torch.rand(shape, generator=gen) + 0.5
    return 0.2 * torch.rand(shape, generator=gen) - 0.1


def synthesize_state_dict(name: str) -> dict[str, torch.Tensor]:
    """A state_dict with the names and shapes of reference `name`, values from :func:`synthesize_tensor`."""
    return {key: synthesize_tensor(key, shape) for key, shape in reference(name)["state_dict"]}


def fixed_input(shape: list[int] | tuple[int, ...]) -> torch.Tensor:
    """The input the reference outputs were computed on."""
    return torch.randn(list(shape), generator=torch.Generator().manual_seed(0))


def output_fixture_path(name: str) -> Path:
    return OUTPUTS_DIR / (name.replace("/", "__") + ".json")


def load_output_fixture(name: str) -> dict | None:
    """{"input_shape": [...], "logits": [...], "sum": s, "abs_sum": a} computed by the reference
    library itself (scripts/make_reference_outputs.py), or None when not recorded."""
    path = output_fixture_path(name)
    return json.loads(path.read_text()) if path.exists() else None
