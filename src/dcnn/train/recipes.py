"""Bundled training recipes (src/dcnn/recipes/*.yaml, also at recipes/ in the repository)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"


def bundled_recipes() -> dict[str, Path]:
    return {p.stem: p for p in sorted(RECIPES_DIR.glob("*.yaml"))}


def resolve_recipe(name_or_path: str | Path) -> Path:
    """A recipe path as given, or the bundled recipe of that name (e.g. "lenet5")."""
    path = Path(name_or_path)
    if path.exists() or path.suffix:
        return path
    return bundled_recipes().get(str(name_or_path), path)


def demo_recipe(data_dir: str | None = None) -> tuple[Path, dict[str, Any]]:
    """The demo's recipe and its data options: full MNIST when it is on disk (never downloaded),
    else the sample inside the package."""
    from dcnn.data.mnist import find_mnist

    if find_mnist(data_dir) is not None:
        return bundled_recipes()["demo"], {"dataset": "mnist", "data_dir": data_dir, "download": False}
    return bundled_recipes()["demo"], {"dataset": "mnist_sample"}
