"""Record what the reference libraries compute, for tests/models/test_zoo.py (a developer tool).

For each reference model, builds it with torchvision or timm, loads the deterministic synthetic
checkpoint of tests/models/reference.py, runs the fixed input in eval mode and writes the logits to
tests/models/fixtures/reference_outputs/. The tests then check that our model, loading the same
checkpoint through `load_pretrained`, computes the same function.

Needs torchvision and timm (not dependencies of dcnn):
    pip install torchvision==0.28.0 timm
    python scripts/make_reference_outputs.py torchvision/resnet18 timm/inception_v4 ...
torchvision's compiled ops are not needed for its model definitions; with a CPU-only torch its import
fails while registering them, so this script skips those registrations.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.library

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.models.reference import fixed_input, output_fixture_path, reference, synthesize_state_dict

# Input sizes: small, at or above each reference's minimum.
INPUT_SIZES = {
    "torchvision/inception_v3": 107,
    "timm/inception_v4": 107,
    "timm/inception_resnet_v2": 107,
    "timm/legacy_xception": 107,
    "timm/nasnetalarge": 107,
}


def _tolerate_missing_ops() -> None:
    register = torch.library.register_fake

    def tolerant(*args, **kwargs):
        try:
            decorate = register(*args, **kwargs)
        except RuntimeError:
            return lambda fn: fn

        def apply(fn):
            try:
                return decorate(fn)
            except RuntimeError:
                return fn

        return apply

    torch.library.register_fake = tolerant


def build_reference(name: str) -> torch.nn.Module:
    library, arch = name.split("/", 1)
    if library == "torchvision":
        import torchvision

        # Their checkpoints expect [-1, 1] pixels: torchvision turns on transform_input when it loads
        # them (ImageNet-normalized inputs in), and so do dcnn's googlenet_bn and inception_v3.
        inception = arch in ("googlenet", "inception_v3")
        kwargs = {"init_weights": False, "transform_input": True} if inception else {}
        return getattr(torchvision.models, arch)(**kwargs)
    import timm

    return timm.create_model(arch, pretrained=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", help="reference names, e.g. torchvision/resnet18")
    args = parser.parse_args()
    _tolerate_missing_ops()
    for name in args.names:
        model = build_reference(name).eval()
        model.load_state_dict(synthesize_state_dict(name), strict=True)
        size = INPUT_SIZES.get(name, 64)
        shape = [1, *reference(name)["input"][:1], size, size]
        with torch.no_grad():
            logits = model(fixed_input(shape))[0]
        record = {
            "input_shape": shape,
            "logits": [round(v, 6) for v in logits[:32].tolist()],
            "sum": float(logits.sum()),
            "abs_sum": float(logits.abs().sum()),
        }
        path = output_fixture_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1) + "\n")
        print(f"{name}: {shape} -> {path}")


if __name__ == "__main__":
    main()
