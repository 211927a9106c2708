"""The direction of imports: shared types below both the metrics and the models.

``recarena.ranking`` (top-K selection, `RankedLists`) and ``recarena._classes`` (class
paths) sit below ``recarena.metrics`` and ``recarena.models``; the metrics never import a
model, and `recarena.models.base` and the registry do not import each other inside
functions. Checked twice: statically (every import statement, those inside functions
included) and by importing in a fresh interpreter.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import recarena.ranking

#: the package folder (recarena is a namespace package: no __init__.py to locate it by)
SRC = Path(recarena.ranking.__file__).resolve().parent


def _imports(path: Path) -> set[str]:
    """Every ``recarena`` module ``path`` imports, at any depth of the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("recarena")}
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").startswith("recarena")
        ):
            found.add(str(node.module))
    return found


def _files(package: str) -> list[Path]:
    folder = SRC.joinpath(*package.split(".")[1:])
    return sorted(folder.rglob("*.py")) if folder.is_dir() else [folder.with_suffix(".py")]


#: (modules, packages they must never import)
RULES = [
    (
        "recarena.ranking",
        ("recarena.metrics", "recarena.models", "recarena.runner", "recarena.experiment"),
    ),
    (
        "recarena._classes",
        ("recarena.metrics", "recarena.models", "recarena.runner", "recarena.experiment"),
    ),
    (
        "recarena.metrics",
        ("recarena.models", "recarena.runner", "recarena.experiment", "recarena.lm"),
    ),
    (
        "recarena.models.base",
        ("recarena.models.registry", "recarena.runner", "recarena.experiment"),
    ),
]


@pytest.mark.parametrize(("package", "forbidden"), RULES, ids=[r[0] for r in RULES])
def test_no_import_goes_up(package, forbidden):
    wrong = [
        f"{path.relative_to(SRC.parent)} imports {module}"
        for path in _files(package)
        for module in sorted(_imports(path))
        if any(module == f or module.startswith(f + ".") for f in forbidden)
    ]
    assert not wrong, "\n".join(wrong)


def _loaded_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    return {m for m in out.split() if m.startswith("recarena")}


def test_importing_the_metrics_loads_no_model():
    loaded = _loaded_after_import("recarena.metrics")
    assert "recarena.ranking" in loaded
    assert not {m for m in loaded if m.startswith(("recarena.models", "recarena.lm"))}


def test_old_import_paths_still_work():
    from recarena import _classes, ranking
    from recarena.models import base, registry

    assert base.RankedLists is ranking.RankedLists
    assert registry.resolve_class is _classes.resolve_class
    assert registry.resolve_class("recarena.models.ease:EASE").__name__ == "EASE"


def test_no_model_file_imports_a_private_name_of_another_module():
    """What models share is public (``recarena.models.language.common``, a model folder's
    package): a model never reaches into another module's private names."""
    wrong = []
    for path in _files("recarena.models"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("recarena"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                if private:
                    wrong.append(f"{path.relative_to(SRC.parent)}: {node.module} {private}")
    assert not wrong, "\n".join(wrong)
