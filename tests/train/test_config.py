from __future__ import annotations

import pytest
import torch

from dcnn import create_model
from dcnn.errors import DcnnError
from dcnn.train import load_recipe, make_config
from dcnn.train.recipes import bundled_recipes


def test_defaults_and_overrides():
    cfg = make_config({"model": "lenet5", "lr": 0.3, "batch_size": "full"})
    assert cfg.lr == 0.3 and cfg.batch_size == "full" and cfg.optimizer == "sgd"


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"lrr": 0.1}, "lrr: unknown option"),
        ({"lr": -1}, "lr: Input should be greater than 0"),
        ({"optimizer": "adamax"}, "optimizer: Input should be"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": "half"}, "batch_size"),
    ],
)
def test_invalid_values_name_the_field(values, fragment):
    with pytest.raises(DcnnError, match="invalid training configuration") as info:
        make_config(values)
    assert fragment in str(info.value)


def test_bundled_recipes_are_valid_and_overridable():
    recipes = bundled_recipes()
    assert {"lenet5", "lenet5_modern", "demo", "mnist_fast"} <= set(recipes)
    for name in recipes:
        cfg = load_recipe(name)
        with torch.device("meta"):  # the recipe's model options are accepted by its model
            create_model(cfg.model, **cfg.model_options)
    cfg = load_recipe("lenet5", {"epochs": 1})
    assert cfg.model == "lenet5" and cfg.epochs == 1


def test_bad_recipe_files(tmp_path):
    with pytest.raises(DcnnError, match="not found"):
        load_recipe(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(DcnnError, match="not valid YAML"):
        load_recipe(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(DcnnError, match="mapping"):
        load_recipe(listed)


def test_set_model_options_merges_with_the_recipe():
    cfg = load_recipe("mnist_fast", {"model_options": {"maps": [6, 16, 120]}})
    assert cfg.model_options == {"batch_norm": True, "pool_first": True, "maps": [6, 16, 120]}


def test_early_stopping_without_validation_is_refused():
    with pytest.raises(DcnnError, match="early_stopping: needs a validation set"):
        make_config({"early_stopping": 2, "val_size": 0})


def test_data_options_do_not_apply_to_the_embedded_sample():
    with pytest.raises(DcnnError, match="ships inside the package"):
        make_config({"dataset": "mnist_sample", "data_dir": "/data"})


def test_the_demo_recipe_is_valid_with_and_without_full_mnist(tmp_path, mnist_dir):
    from dcnn.train.recipes import demo_recipe

    for data_dir, dataset in ((str(mnist_dir.parent), "mnist"), (str(tmp_path), "mnist_sample")):
        recipe, overrides = demo_recipe(data_dir)
        cfg = load_recipe(recipe, overrides)
        assert cfg.dataset == dataset and (dataset == "mnist_sample" or cfg.download is False)
