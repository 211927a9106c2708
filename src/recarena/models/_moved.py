"""Import paths of models that moved into ``classical/``, ``content/`` and ``language/``.

Saved runs name their model class by import path (``model.json``, ``DONE.json``) and two
training caches hash it (SASRec's checkpoint key, the generative ranker's adapter key).
So that runs written before the move still load and resume, and code that imports an old
path still runs, `MOVED_MODULES` maps each old module to its new one:

- `install` puts a finder on ``sys.meta_path`` (after the file finders, so it never hides
  a real module) that makes ``import recarena.models.sasrec`` return the new module
  itself (one module object under two names; the public names a model's folder exports
  from its package, so every class a saved ``model.json`` names);
- `stable_class_path` gives the path a class had when it was first released, which the
  training caches hash, so a checkpoint written before the move still matches.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

#: old module -> new module
MOVED_MODULES: dict[str, str] = {
    "recarena.models.baselines": "recarena.models.classical.baselines",
    "recarena.models.ease": "recarena.models.classical.ease",
    "recarena.models.itemknn": "recarena.models.classical.itemknn",
    "recarena.models.implicit_mf": "recarena.models.classical.implicit_mf",
    "recarena.models.sasrec": "recarena.models.classical.sasrec",
    "recarena.models.text_retrieval": "recarena.models.content.text_retrieval",
    "recarena.models.lm_frozen": "recarena.models.language.frozen",
    "recarena.models.lm_two_tower": "recarena.models.language.two_tower",
    "recarena.models.lm_text_sasrec": "recarena.models.language.text_sasrec",
    "recarena.models.lm_cross_encoder": "recarena.models.language.cross_encoder",
    "recarena.models.lm_generative": "recarena.models.language.generative",
}


def first_released_module(module: str) -> str:
    """The module a class defined in ``module`` was first released in (``module`` itself
    for a module that never moved): a model's folder and every file in it map to the one
    module the model had before."""
    for old, new in MOVED_MODULES.items():
        if module == new or module.startswith(f"{new}."):
            return old
    return module


def stable_class_path(klass: type) -> str:
    """``"module.Qualname"`` of ``klass`` under the module it was first released in.

    Keys of saved training state hash this, not ``klass.__module__``, so that moving a
    class to another file keeps the checkpoints written before the move.
    """
    return f"{first_released_module(klass.__module__)}.{klass.__qualname__}"


class _Alias(importlib.abc.Loader):
    """Loads an old module name as the new module (the same object)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None  # a placeholder; exec_module swaps it for the real module

    def exec_module(self, module: ModuleType) -> None:
        # the import system returns sys.modules[name] after exec_module: the new module
        sys.modules[module.__name__] = importlib.import_module(self.target)


class _MovedModuleFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        new = MOVED_MODULES.get(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _Alias(new))


def install() -> None:
    """Make the old module paths importable (idempotent)."""
    if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
