"""The package is layered: a module imports only from its own package and the packages below it.

Every import statement of every module under src/dcnn is read with `ast` (at module level, inside
functions and under TYPE_CHECKING alike; absolute and relative), so a lazy import does not get
around the rule. DEVELOPERS.md states the same order.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

SOURCE = REPO_ROOT / "src" / "dcnn"

# Lowest first. Top-level helper modules (errors.py, fileio.py, device.py) and packages (folders)
# are ranked by name; "dcnn" is the root package's __init__, which re-exports the model API, and
# __main__ (python -m dcnn) runs the command line.
ORDER = ["errors", "fileio", "device", "layers", "models", "dcnn", "data", "evaluate", "train", "analysis",
         "visualize", "export", "serve", "cli", "__main__"]
RANK = {name: rank for rank, name in enumerate(ORDER)}


def module_name(path: Path, source: Path) -> str:
    """The dotted name of a module file: src/dcnn/train/trainer.py is dcnn.train.trainer."""
    parts = list(path.relative_to(source.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(name: str) -> str:
    """The layer a dotted dcnn module name belongs to (see ORDER): dcnn.train.trainer is in train."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "dcnn"


def imported_modules(tree: ast.Module, module: str, is_package: bool, source: Path) -> list[tuple[int, str]]:
    """(line, dotted module name) of every dcnn module `tree` imports, wherever the statement is."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package, one level up per extra dot
                package = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target == "dcnn":  # `from dcnn import errors` imports a submodule; `__version__`, the root
                found += [(node.lineno, f"dcnn.{alias.name}" if _is_submodule(alias.name, source) else "dcnn")
                          for alias in node.names]
            else:
                found.append((node.lineno, target))
    return [(line, name) for line, name in found if name == "dcnn" or name.startswith("dcnn.")]


def _is_submodule(name: str, source: Path) -> bool:
    return (source / f"{name}.py").is_file() or (source / name / "__init__.py").is_file()


def violations(source: Path) -> list[str]:
    """Each import of a higher layer, as 'file:line: module imports target (layer above layer)'."""
    found = []
    for path in sorted(source.rglob("*.py")):
        module = module_name(path, source)
        own = layer_of(module)
        tree = ast.parse(path.read_text(), filename=str(path))
        for line, target in imported_modules(tree, module, path.name == "__init__.py", source):
            other = layer_of(target)
            if other != own and RANK[other] > RANK[own]:
                found.append(f"{path.relative_to(source.parent.parent)}:{line}: {module} imports {target} "
                             f"({other} is above {own})")
    return found


def test_every_module_and_package_has_a_place_in_the_order():
    layers = {layer_of(module_name(path, SOURCE)) for path in SOURCE.rglob("*.py")}
    assert layers - set(RANK) == set(), "add the new top-level module or package to ORDER (and DEVELOPERS.md)"


def test_lower_layers_never_import_higher_ones():
    found = violations(SOURCE)
    assert not found, "imports against the layering:\n" + "\n".join(found)


@pytest.mark.parametrize("statement, where, expected", [
    ("from dcnn.train.config import make_config", "data/x.py", "dcnn.train.config"),
    ("import numpy, dcnn.visualize.curves", "train/x.py", "dcnn.visualize.curves"),
    ("def f():\n    from dcnn.serve import app", "export/x.py", "dcnn.serve"),
    ("from ..train import trainer", "evaluate/x.py", "dcnn.train"),
    ("from .. import cli", "evaluate/x.py", "dcnn.cli"),
    ("from ...cli import main", "visualize/sub/x.py", "dcnn.cli"),
    ("from dcnn import __version__", "layers/x.py", "dcnn"),
])
def test_a_higher_import_is_named_with_its_file_and_line(tmp_path, statement, where, expected):
    """Every form of import statement is seen, each reported with the file, line and what it imports."""
    source = tmp_path / "src" / "dcnn"
    (source / "cli").mkdir(parents=True)
    (source / "cli" / "__init__.py").touch()
    path = source / where
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("import torch\nfrom dcnn.errors import DcnnError\n" + statement + "\n")
    line = 2 + len(statement.splitlines())
    (found,) = violations(source)
    assert found.startswith(f"src/dcnn/{where}:{line}: ") and f" imports {expected} " in found, found


def test_imports_of_the_own_package_and_lower_ones_pass(tmp_path):
    source = tmp_path / "src" / "dcnn"
    (source / "visualize").mkdir(parents=True)
    (source / "visualize" / "x.py").write_text(
        "from dcnn.visualize.y import z\nfrom dcnn.train.trainer import train\nimport dcnn.errors\n"
        "from . import y\nfrom dcnn import create_model, errors\n")
    assert violations(source) == []
