"""train_limit and test_limit keep a seeded subset with every class in proportion, for image folders
(stored class by class, where the first N images would be one or two classes) and named datasets."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from dcnn.data.mnist import load_mnist_sample
from dcnn.models import get_model_cfg
from dcnn.train import make_config
from dcnn.train.trainer import Data, prepare_data
from tests.train.test_image_folders import make_folder


def prepared(**values) -> Data:
    cfg = make_config({"model": "lenet5_modern", "val_size": 0, "progress": False, **values})
    return prepare_data(cfg, get_model_cfg(cfg.model), torch.device("cpu"))


@pytest.fixture
def class_ordered(tmp_path, monkeypatch):
    monkeypatch.setenv("DCNN_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "colours"
    make_folder(root / "train", {"blue": 6, "green": 12, "red": 18}, size=(8, 8))
    make_folder(root / "test", {"blue": 4, "green": 4, "red": 4}, seed=1, size=(8, 8))
    return root


def test_limits_on_a_class_ordered_folder_keep_every_class_in_proportion(class_ordered):
    data = prepared(dataset=str(class_ordered), train_limit=12, test_limit=6, seed=0)
    assert data.counts == {"train": [2, 4, 6], "test": [2, 2, 2]}  # the first 12 would be [6, 6, 0]
    assert [path.parent.name for path in data.train.paths] == ["blue"] * 2 + ["green"] * 4 + ["red"] * 6
    same = prepared(dataset=str(class_ordered), train_limit=12, test_limit=6, seed=0)
    assert same.train.paths == data.train.paths and same.test.paths == data.test.paths
    assert torch.equal(same.train.images, data.train.images)
    other = prepared(dataset=str(class_ordered), train_limit=12, test_limit=6, seed=1)
    assert other.counts == data.counts
    assert other.train.paths != data.train.paths and other.test.paths != data.test.paths


def test_train_limit_on_a_named_dataset_gives_each_class_its_share():
    labels = load_mnist_sample("train")[1]
    shares = {c: 300 * n / len(labels) for c, n in Counter(labels.tolist()).items()}
    counts = prepared(dataset="mnist_sample", train_limit=300, test_limit=100, seed=2).counts["train"]
    assert sum(counts) == 300
    assert all(abs(counts[c] - share) < 1 for c, share in shares.items()), (counts, shares)
