"""init_classes: a new classifier starts, class by class, from rows of the init_from run's classifier."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from dcnn.errors import DcnnError
from dcnn.train import make_config, train
from dcnn.train.trainer import Trainer

BASE = dict(model="resnet20", image_size=16, val_size=None, val_split=0.25, epochs=1, batch_size=8, progress=False,
            seed=0)


def make_folder(root: Path, classes: tuple[str, ...]) -> Path:
    generator = torch.Generator().manual_seed(len(classes))
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(4):
            pixels = (torch.rand(20, 20, 3, generator=generator) * 200 + 10 * c).to(torch.uint8)
            Image.fromarray(pixels.numpy()).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A finished 3-class run (classes bird, cat, dog) to start from."""
    tmp = tmp_path_factory.mktemp("source")
    folder = make_folder(tmp / "animals", ("bird", "cat", "dog"))
    run_dir, _ = train(make_config({**BASE, "dataset": str(folder), "run_dir": str(tmp / "run")}))
    return Path(run_dir)


def trainer_for(tmp_path: Path, source: Path, **values) -> Trainer:
    folder = make_folder(tmp_path / "pets", ("cats", "dogs"))
    cfg = make_config({**BASE, "dataset": str(folder), "init_from": str(source), "run_dir": str(tmp_path / "run"),
                       **values})
    return Trainer(cfg, tmp_path / "run")


def test_the_rows_of_the_named_classes_are_copied(tmp_path, source):
    weights = load_file(str(source / "model.safetensors"))
    mapped = trainer_for(tmp_path / "a", source, init_classes={"cats": "cat", "dogs": "dog"}).model.state_dict()
    fresh = trainer_for(tmp_path / "b", source).model.state_dict()
    for key in ("head.fc.weight", "head.fc.bias"):
        assert torch.equal(mapped[key], weights[key][[1, 2]])  # cat and dog, in the new class order
        assert not torch.equal(fresh[key], weights[key][[1, 2]])
    # the backbone is init_from's in both
    assert torch.equal(mapped["stem.conv.weight"], weights["stem.conv.weight"])


def test_classes_left_out_keep_their_fresh_rows(tmp_path, source):
    weights = load_file(str(source / "model.safetensors"))
    fresh = trainer_for(tmp_path / "a", source).model.state_dict()["head.fc.weight"]
    mapped = trainer_for(tmp_path / "b", source, init_classes={"dogs": "bird"}).model.state_dict()["head.fc.weight"]
    assert torch.equal(mapped[1], weights["head.fc.weight"][0])
    assert torch.equal(mapped[0], fresh[0])


@pytest.mark.parametrize(("mapping", "fragment"), [
    ({"kittens": "cat"}, "kittens not among this dataset's classes (cats, dogs)"),
    ({"cats": "lion"}, "lion not among"),
])
def test_unknown_names_are_refused_naming_the_choices(tmp_path, source, mapping, fragment):
    with pytest.raises(DcnnError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        trainer_for(tmp_path, source, init_classes=mapping)


def test_init_classes_needs_init_from():
    with pytest.raises(DcnnError, match=r"init_classes: .*give init_from"):
        make_config({**BASE, "dataset": "mnist_sample", "init_classes": {"3": "7"}})


def test_a_checkpoint_without_class_names_is_refused(tmp_path, source):
    reference = tmp_path / "reference.pth"
    torch.save(load_file(str(source / "model.safetensors")), reference)  # a torchvision-style state_dict
    with pytest.raises(DcnnError, match="has no class names"):
        trainer_for(tmp_path, reference, init_classes={"cats": "cat"})
