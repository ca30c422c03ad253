"""Shared test fixtures: where the shared data and reference facts live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("DCNN_SHARED_DIR", REPO_ROOT.parent / "shared"))


def data_dir() -> Path:
    """The data root holding `mnist/` (DCNN_DATA_DIR, else ../shared/data)."""
    return Path(os.environ.get("DCNN_DATA_DIR", SHARED_DIR / "data"))


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    path = data_dir() / "mnist"
    if not (path / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(f"canonical MNIST not found in {path}; set DCNN_DATA_DIR to the folder holding mnist/")
    return path


@pytest.fixture(scope="session")
def images_dir() -> Path:
    return data_dir() / "images"
