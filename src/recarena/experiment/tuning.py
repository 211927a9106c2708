"""Validation: the grid points a model tries, what is wrong with its parameters, the key a
trial is saved under, which saved trials a resumed run may reuse, and the tuning stage
itself.

The functions (`grid_points`, `parameter_problems`, `trial_key`, `saved_trials`) are
functions of the experiment and the model's ``[[models]]`` entry, so they are checked
before any data is read (`recarena.experiment.preflight`) and unit-tested without a run.
The stage, `Validation` (``ExperimentRunner._tune``, ``pending_trials`` and ``run_trial``
delegate to it), plans a model's trials (`trial_plan` -> `TrialPlan`), fits each grid
point on train and scores it on validation, saving every trial in ``tuning.json`` as it is
measured, so a resumed run fits only the points still missing; it returns a
`recarena.experiment.stages.Tuning`. It is given what it needs of the run (the
experiment, the validation interactions, the training data, the validation score, where
messages go), never the runner.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from recarena import _faults
from recarena._artifacts import json_or_damage
from recarena._io import jsonable, write_json
from recarena.config import ExperimentConfig, ModelConfig, ProtocolConfig
from recarena.cost import Stopwatch
from recarena.errors import ConfigError
from recarena.experiment.artifacts import _hash, setup_hash
from recarena.experiment.stages import ModelJob, Tuning
from recarena.models.base import Recommender, TrainingData
from recarena.models.registry import get_model_class
from recarena.tuning import expand_grid, params_key

__all__ = [
    "TrialPlan",
    "Validation",
    "expand_grid",
    "grid_points",
    "parameter_problems",
    "parameters_added_since",
    "defaults_changed_since",
    "params_key",
    "resolved_params",
    "saved_trials",
    "trial_key",
    "trial_plan",
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
    A parameter the model class names in ``neutral_params`` (an option that, at that
    value, is off: the behaviour from before it existed) is left out when it has that
    value.
    """
    recorded = record.get("params")
    if not isinstance(recorded, dict):
        return ""
    current = resolved_params(mc, mc.params)
    if current is None:
        return ""
    neutral = jsonable(dict(get_model_class(mc.name).neutral_params))
    added = [
        k
        for k in sorted(current)
        if k not in recorded and not (k in neutral and neutral[k] == current[k])
    ]
    return ", ".join(f"{k}={current[k]!r}" for k in added)


def defaults_changed_since(mc: ModelConfig, record: dict[str, Any]) -> str:
    """The parameters that the unchanged ``[[models]]`` entry of a finished model resolves
    to other values now than when it was measured (a default changed since), as
    ``"prior_passes=0 (now None)"``, or ``""``.

    Read from the ``entry_params`` its ``DONE.json`` records. A record from before it did
    is checked for the options of ``neutral_params`` only: one it ran with off (its neutral
    value) that the entry now turns on by default, unless the validation grid sets it.
    """
    current = resolved_params(mc, mc.params)
    if current is None:
        return ""
    entry = record.get("entry_params")
    if isinstance(entry, dict):
        changed = [k for k in sorted(current) if k in entry and entry[k] != current[k]]
        then = entry
    else:
        ran = record.get("params")
        if not isinstance(ran, dict):
            return ""
        klass = get_model_class(mc.name)
        grid = mc.grid if mc.grid is not None else klass.param_grid
        neutral = jsonable(dict(klass.neutral_params))
        changed = [
            k
            for k in sorted(neutral)
            if k in ran
            and k in current
            and k not in (grid or {})
            and k not in mc.params
            and ran[k] == neutral[k] != current[k]
        ]
        then = ran
    return ", ".join(f"{k}={then[k]!r} (now {current[k]!r})" for k in changed)


def trial_key(
    config: ExperimentConfig,
    mc: ModelConfig,
    params: dict[str, Any],
    proto: ProtocolConfig,
    valid_users: int | None = None,
) -> str:
    """What a validation trial depends on, hashed: model, parameters, setup, protocol.

    The parameters as the model resolves them (``get_params``: every default written
    out) are part of it, so a trial saved before a default changed or a parameter was
    added (SASRec's ``patience_steps``) is measured again, never reused. ``valid_users``
    is a model's own user budget where it differs from the experiment's (`scored_users`):
    its trials are scored on that sample. It enters the key only when given, so the keys
    of every other model (and their saved trials) are as before.
    """
    fields: dict[str, Any] = {
        "model": mc.name,
        "params": params,
        "resolved": resolved_params(mc, params),
        "setup": setup_hash(config),
        "protocol": proto.label,
    }
    if valid_users is not None:
        fields["valid_users"] = valid_users
    return _hash(fields)


def scored_users(config: ExperimentConfig, job: ModelJob) -> int | None:
    """A model's own ``max_eval_users`` where it differs from the experiment's: its
    validation trials are scored on a seeded sample of that many users, like its test."""
    own = job.budget_users
    return own if own != config.evaluation.max_eval_users else None


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


# ---------------------------------------------------------------------- the tuning stage
@dataclass(frozen=True)
class TrialPlan:
    """What a model's validation tries: its grid, the points of it, whether validation runs
    at all, and each point's trial key (by `params_key` of its parameters)."""

    grid: dict[str, list[Any]]
    points: list[dict[str, Any]]
    needs_validation: bool
    trial_keys: dict[str, str]

    def params(self, mc: ModelConfig, index: int) -> dict[str, Any]:
        """Grid point ``index`` over the model's fixed parameters."""
        return {**mc.params, **self.points[index]}


def trial_plan(config: ExperimentConfig, job: ModelJob) -> TrialPlan:
    """The model's `TrialPlan`; a `ConfigError` names parameters it cannot take.

    Validation runs when the split has validation data and there is something to learn
    from it: more than one grid point, a model that uses validation (early stopping), a
    first stage (its validation candidates), or a model that is not refit (its validation
    fit is the tested model).
    """
    mc, template = job.mc, job.template
    grid, points = grid_points(mc, template, config.seed)
    problems = parameter_problems(mc, template, points)
    if problems:
        raise ConfigError("; ".join(problems))
    needs_validation = job.has_valid and (
        len(points) > 1 or template.uses_validation or job.first_stage or not job.refit
    )
    trial_keys = {
        params_key(params): trial_key(
            config, mc, params, job.tune_proto, valid_users=scored_users(config, job)
        )
        for params in ({**mc.params, **point} for point in points)
    }
    return TrialPlan(grid, points, needs_validation, trial_keys)


@dataclass
class Validation:
    """The tuning stage: fit each grid point on train, score it on validation, save it.

    It holds what the stage needs of a run, nothing more: the experiment, the validation
    interactions (early stopping), the training data of the validation stage (asked for
    only when a trial is fit), the score of a fitted model on validation (the runner's
    ``validation_score``) and where messages go. ``tuning.json`` is read and written in
    the model's folder (``job.mdir``).
    """

    config: ExperimentConfig
    #: the split's validation interactions, given to ``fit`` (early stopping)
    valid: pd.DataFrame
    #: the training data of the validation stage (train), made when a trial is fit
    training_data: Callable[[], TrainingData]
    #: a fitted model's validation metric on a protocol, over a seeded sample of the
    #: given number of users (None: the experiment's ``max_eval_users``)
    score: Callable[[Recommender, ProtocolConfig, int | None], float]
    on_event: Callable[[str], None]

    def plan(self, job: ModelJob) -> TrialPlan:
        return trial_plan(self.config, job)

    def pending(self, job: ModelJob, plan: TrialPlan) -> list[int]:
        """The grid points (indices) no saved trial in ``tuning.json`` covers: none when
        the model is not tuned."""
        if not plan.needs_validation:
            return []
        saved = saved_trials(job.label, job.mdir / "tuning.json", plan.trial_keys, self.on_event)
        done_keys = {params_key(t["params"]) for t in saved}
        return [
            n
            for n in range(len(plan.points))
            if params_key(plan.params(job.mc, n)) not in done_keys
        ]

    def run_trial(self, job: ModelJob, plan: TrialPlan, index: int) -> dict[str, Any]:
        """Fit and score grid point ``index``: the record `tune` saves (nothing is written
        but the checkpoints of a long training)."""
        point = plan.points[index]
        self.on_event(
            f"{job.label}: validation {index + 1}/{len(plan.points)} {point or ''}".rstrip()
        )
        trial, _ = self.fit_trial(
            job, plan.params(job.mc, index), plan.trial_keys, self.training_data()
        )
        return trial

    def fit_trial(
        self,
        job: ModelJob,
        params: dict[str, Any],
        trial_keys: dict[str, str],
        train_data: TrainingData,
    ) -> tuple[dict[str, Any], Recommender]:
        """One validation trial: the fit on train, its score on validation, its record."""
        model = job.template.clone(**params)
        # a long training stopped part-way resumes from here on the next run
        train_data.checkpoint_dir = job.checkpoints / f"valid-{_hash(params)}"
        with Stopwatch() as sw:
            model.fit(train_data, valid=self.valid)
        score = self.score(model, job.tune_proto, job.budget_users)
        trial = {
            "key": trial_keys[params_key(params)],
            "params": params,
            "metric": self.config.evaluation.tune_metric,
            "protocol": job.tune_proto.label,
            "value": score,
            "fit_seconds": sw.seconds,
            "refit_params": model.refit_params(),
        }
        return trial, model

    def tune(self, job: ModelJob, plan: TrialPlan) -> Tuning:
        """Validation: the grid (or early stopping) on train -> valid, resuming the trials
        saved in ``tuning.json`` (each saved as soon as it is measured); without
        validation, the parameters as given."""
        mc, label, template = job.mc, job.label, job.template
        grid, points, needs_validation = plan.grid, plan.points, plan.needs_validation
        tuning_path = job.mdir / "tuning.json"
        trials = saved_trials(
            label, tuning_path, plan.trial_keys if needs_validation else {}, self.on_event
        )
        tuning = Tuning(
            needs_validation=needs_validation,
            trials=trials,
            seconds=sum(t["fit_seconds"] for t in trials),
        )
        if not needs_validation:
            # not tuned: a grid of one point (one value per parameter, or max_trials = 1)
            # gives the model its parameters; a larger grid without validation data is not
            # tried, and the split's notes say so
            point = points[0] if len(points) == 1 else {}
            tuning.chosen = {**mc.params, **point}
            if point:
                self.on_event(
                    f"{label}: one grid point, not tuned: {json.dumps(point, default=str)}"
                )
            return tuning
        done_keys = {params_key(t["params"]) for t in trials}
        train_data = self.training_data()
        for n, point in enumerate(points):
            params = {**mc.params, **point}
            if params_key(params) in done_keys:
                continue
            self.on_event(f"{label}: validation {n + 1}/{len(points)} {point or ''}".rstrip())
            trial, model = self.fit_trial(job, params, plan.trial_keys, train_data)
            trials.append(trial)
            tuning.seconds += trial["fit_seconds"]
            write_json(tuning_path, {"trials": trials})
            _faults.point("model:trial")
            best_so_far = max(trials, key=lambda t: t["value"])
            if best_so_far["params"] == params:
                tuning.best_model = model
        best = max(trials, key=lambda t: t["value"])
        if (
            tuning.best_model is None
            or tuning.best_model.get_params() != template.clone(**best["params"]).get_params()
        ):
            tuning.best_model = None  # resumed: the best trial's model is not in memory
        tuning.chosen = dict(best["params"])
        tuning.refit_extra = best.get("refit_params", {})
        chosen = {k: v for k, v in tuning.chosen.items() if k in grid}
        self.on_event(
            f"{label}: chose {json.dumps(chosen) if grid else 'defaults'}"
            f" ({best['metric']} {best['value']:.4f} on validation)"
        )
        return tuning
