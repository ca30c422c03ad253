"""`pip install .` ships everything the package reads at run time: the wheel holds every file under
src/dcnn (recipes, the MNIST sample, page templates, ...), and the installed copy works on its own."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

SOURCE = REPO_ROOT / "src" / "dcnn"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Without build isolation: setuptools is in the test environment and nothing is downloaded.
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(out), str(REPO_ROOT)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (path,) = out.glob("dcnn-*.whl")
    return path


def test_the_wheel_holds_every_package_file(wheel):
    shipped = {name for name in zipfile.ZipFile(wheel).namelist() if name.startswith("dcnn/")}
    expected = {f"dcnn/{path.relative_to(SOURCE).as_posix()}" for path in SOURCE.rglob("*")
                if path.is_file() and "__pycache__" not in path.parts}
    assert expected - shipped == set()
    assert {"dcnn/recipes/demo.yaml", "dcnn/py.typed"} <= shipped


def test_the_installed_wheel_runs_without_the_checkout(wheel, tmp_path):
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)  # what pip installs of a pure-Python wheel
    env = {**os.environ, "PYTHONPATH": str(target)}  # ahead of the editable install of the checkout
    script = ("import dcnn, dcnn.train.recipes as r; from dcnn.train import load_recipe; "
              "print(dcnn.__file__); print(load_recipe(r.resolve_recipe('demo')).model)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    where, model = done.stdout.split()
    assert Path(where).is_relative_to(target)
    assert model == "lenet5_modern"
