"""Bundled training recipes (src/dcnn/recipes/*.yaml, also at recipes/ in the repository)."""

from __future__ import annotations

from pathlib import Path

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"


def bundled_recipes() -> dict[str, Path]:
    return {p.stem: p for p in sorted(RECIPES_DIR.glob("*.yaml"))}


def resolve_recipe(name_or_path: str | Path) -> Path:
    """A recipe path as given, or the bundled recipe of that name (e.g. "lenet5")."""
    path = Path(name_or_path)
    if path.exists() or path.suffix:
        return path
    return bundled_recipes().get(str(name_or_path), path)


def demo_recipe(data_dir: str | None = None) -> tuple[Path, str]:
    """The demo's recipe and dataset: full MNIST when it is on disk, else the embedded sample."""
    from dcnn.data.mnist import find_mnist

    dataset = "mnist" if find_mnist(data_dir) is not None else "mnist_sample"
    return bundled_recipes()["demo"], dataset
