"""Validation: the grid points a model tries, what is wrong with its parameters, the key a
trial is saved under, and which saved trials a resumed run may reuse.

The runner's ``_tune`` stage fits the points and measures them; everything here is a
function of the experiment and the model's ``[[models]]`` entry, so it is checked before
any data is read (`recarena.experiment.preflight`) and unit-tested without a run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recarena._artifacts import json_or_damage
from recarena._io import jsonable, write_json
from recarena.config import ExperimentConfig, ModelConfig, ProtocolConfig
from recarena.experiment.artifacts import _hash, setup_hash
from recarena.models.base import Recommender
from recarena.models.registry import get_model_class
from recarena.tuning import expand_grid, params_key

__all__ = [
    "expand_grid",
    "grid_points",
    "parameter_problems",
    "parameters_added_since",
    "params_key",
    "resolved_params",
    "saved_trials",
    "trial_key",
]


def grid_points(
    mc: ModelConfig, template: Recommender, seed: int
) -> tuple[dict[str, list[Any]], list[dict[str, Any]]]:
    """The model's validation grid and the points of it that are tried.

    The model's default grid (``grid`` unset) leaves out the parameters fixed in
    ``params``; a grid that is given is taken as it is.
    """
    if mc.grid is None:
        grid = {k: v for k, v in template.param_grid.items() if k not in mc.params}
    else:
        grid = mc.grid
    return grid, expand_grid(grid, mc.max_trials, seed)


def parameter_problems(
    mc: ModelConfig, template: Recommender, points: list[dict[str, Any]]
) -> list[str]:
    """What is wrong with a model's ``params`` and grid points, as messages.

    The fixed ``params`` go through `Recommender.check_params` first; when they pass,
    every grid point does, so each message names the model, the parameter and the grid
    point whose value is wrong. Nothing is fit.
    """
    label = mc.display_name
    try:
        template.check_params()
    except (TypeError, ValueError) as exc:
        return [f"model {label!r} (params in the experiment): {exc}"]
    names = set(template._param_names())
    problems: dict[str, None] = {}
    for point in points:
        unknown = sorted(set(point) - names)
        if unknown:
            problems[
                f"model {label!r}: the grid names {', '.join(map(repr, unknown))}, which "
                f"{type(template).__name__} does not take; its parameters are "
                f"{sorted(names)}"
            ] = None
            continue
        try:
            template.clone(**point).check_params()
        except (TypeError, ValueError) as exc:
            problems[f"model {label!r} (grid point {json.dumps(point, default=str)}): {exc}"] = None
    return list(problems)


def resolved_params(mc: ModelConfig, params: dict[str, Any]) -> dict[str, Any] | None:
    """``params`` as the model resolves them, every default written out (keys that are not
    the model's parameters, such as the runner's ``refit``, left out); None when the model
    cannot be created (its own run reports why)."""
    try:
        klass = get_model_class(mc.name)
        names = set(klass._param_names())
        model = klass(**{k: v for k, v in params.items() if k in names})
    except Exception:  # noqa: BLE001 - the key only; run_model reports the model's errors
        return None
    return jsonable(model.get_params())


def parameters_added_since(mc: ModelConfig, record: dict[str, Any]) -> str:
    """The parameters the model has now that a finished model's ``DONE.json`` does not
    record, with their current defaults (``"patience_steps=250"``), or ``""``.

    A finished model is reused for its unchanged ``[[models]]`` entry; a parameter added
    to the model since (a new default behaviour) is the one thing that entry cannot show.
    """
    recorded = record.get("params")
    if not isinstance(recorded, dict):
        return ""
    current = resolved_params(mc, mc.params)
    if current is None:
        return ""
    return ", ".join(f"{k}={current[k]!r}" for k in sorted(current) if k not in recorded)


def trial_key(
    config: ExperimentConfig, mc: ModelConfig, params: dict[str, Any], proto: ProtocolConfig
) -> str:
    """What a validation trial depends on, hashed: model, parameters, setup, protocol.

    The parameters as the model resolves them (``get_params``: every default written
    out) are part of it, so a trial saved before a default changed or a parameter was
    added (SASRec's ``patience_steps``) is measured again, never reused.
    """
    return _hash(
        {
            "model": mc.name,
            "params": params,
            "resolved": resolved_params(mc, params),
            "setup": setup_hash(config),
            "protocol": proto.label,
        }
    )


def saved_trials(
    label: str, path: Path, keys: dict[str, str], on_event: Callable[[str], None]
) -> list[dict[str, Any]]:
    """The saved validation trials that belong to the current grid and setup.

    ``keys`` maps each grid point's parameters (`params_key`) to its `trial_key`. A
    saved trial is kept only when its parameters are a current grid point and it carries
    that point's key; the others (another grid, setup or model, or saved before trials
    had keys) are dropped from ``tuning.json``, with a message, and never chosen.
    """
    if not path.exists():
        return []
    content, damage = json_or_damage(path)
    if damage is not None or not isinstance(content, dict):
        on_event(
            f"{label}: {path} is damaged ({damage or 'not a JSON object'}): its validation "
            "trials are recomputed"
        )
        path.unlink()
        return []
    saved = content.get("trials", [])
    kept = [
        t
        for t in saved
        if t.get("key") is not None and keys.get(params_key(t.get("params", {}))) == t["key"]
    ]
    if len(kept) < len(saved):
        on_event(
            f"{label}: dropped {len(saved) - len(kept)} saved validation trial(s) from "
            f"another grid or setup ({path})"
        )
        if kept:
            write_json(path, {"trials": kept})
        else:
            path.unlink()
    return kept
