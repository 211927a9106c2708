"""The direction of imports: shared types below both the metrics and the models.

``recarena.ranking`` (top-K selection, `RankedLists`) and ``recarena._classes`` (class
paths) sit below ``recarena.metrics`` and ``recarena.models``; the metrics never import a
model, and `recarena.models.base` and the registry do not import each other inside
functions. In ``recarena.experiment``, the stage helpers (artifacts, protocols, measuring,
cost, tuning, fitting, ...) never import the modules that drive an experiment (the runner, the Ray and
split-seed drivers), nor each other in a cycle. Checked twice: statically (every import
statement, those inside functions included) and by importing in a fresh interpreter.
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


#: the modules that drive an experiment: they import the stage helpers, never the reverse
EXPERIMENT_DRIVERS = (
    "recarena.runner",
    "recarena.experiment.runner",
    "recarena.experiment.distributed",
    "recarena.experiment.split_seeds",
)
#: the experiment's stage helpers (`ExperimentRunner` delegates to them)
EXPERIMENT_HELPERS = tuple(
    f"recarena.experiment.{name}"
    for name in (
        "artifacts",
        "cost",
        "fitting",
        "impressions",
        "measuring",
        "preflight",
        "protocols",
        "seeds",
        "stages",
        "tuning",
    )
)

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
    # what one stage hands the next sits below every module that takes it
    (
        "recarena.experiment.stages",
        (
            "recarena.runner",
            "recarena.experiment.runner",
            "recarena.experiment.artifacts",
            "recarena.experiment.cost",
            "recarena.experiment.fitting",
            "recarena.experiment.protocols",
            "recarena.experiment.tuning",
        ),
    ),
    # measuring reads no run folder: writing a measurement is artifacts.py's job
    *[
        (module, ("recarena.experiment.artifacts", *EXPERIMENT_DRIVERS))
        for module in ("recarena.experiment.measuring", "recarena.experiment.impressions")
    ],
    *[(module, EXPERIMENT_DRIVERS) for module in EXPERIMENT_HELPERS],
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


def test_the_experiments_stage_helpers_import_each_other_without_a_cycle():
    """Every import between the helpers, those inside functions included, goes one way."""
    graph = {
        module: {m for m in _imports(_files(module)[0]) if m in EXPERIMENT_HELPERS} - {module}
        for module in EXPERIMENT_HELPERS
    }
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, "import cycle: " + " -> ".join((*path, module))
        if module in done:
            return
        for imported in sorted(graph[module]):
            visit(imported, (*path, module))
        done.add(module)

    for module in EXPERIMENT_HELPERS:
        visit(module, ())


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
