"""Resolving ``"package.module:ClassName"`` paths to classes.

Below the model registry and `recarena.models.base` alike, so that loading a saved model
(`Recommender.load`, which reads the class path from ``model.json``) and naming a model in a
config share one rule without importing each other.
"""

from __future__ import annotations

import importlib

from recarena.errors import ConfigError


def resolve_class(target: str) -> type:
    """Import ``"module:Class"``."""
    if ":" not in target:
        raise ConfigError(f"model path {target!r} must look like 'package.module:ClassName'")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import model module {module_name!r}: {exc}") from exc
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"module {module_name!r} has no {attr!r}") from None
    return obj  # type: ignore[return-value]
