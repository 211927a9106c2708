"""The tuning stage (`recarena.experiment.tuning.Validation`) without a run: a hand-built
model job, training data and a validation score given as a function.

`ExperimentRunner._tune`, ``pending_trials`` and ``run_trial`` delegate to it; the runner's
own checks of the stage are in test_runner_stages.py and the fault suite.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recarena.config import ExperimentConfig, ProtocolConfig, parse_config
from recarena.errors import ConfigError
from recarena.experiment.stages import ModelJob
from recarena.experiment.tuning import TrialPlan, Validation, params_key, trial_plan
from recarena.models.base import Recommender
from recarena.models.registry import create_model
from tests.conftest import make_planted_dataset
from tests.core.test_runner import _config
from tests.models.conformance import _training_data

PROBE = "tests.core.test_tuning_stage:Probe"


class Probe(Recommender):
    """Scores every item alike; records the parameter of every fit."""

    history_use = "interactions"
    fits: list[float] = []

    def __init__(self, a: float = 1.0, seed: int = 0) -> None:
        self.a = a
        self.seed = seed

    def check_params(self) -> None:
        if self.a < 0:
            raise ValueError("Probe parameter a must be at least 0")

    def _fit(self, data, valid):
        Probe.fits.append(self.a)
        self.weights_ = np.full(data.n_items, self.a, dtype=np.float32)

    def _score(self, users, items):
        scores = np.tile(self.weights_, (len(users), 1))
        return scores if items is None else np.take_along_axis(scores, items, axis=1)


def _job(tmp_path: Path, entry: dict, **job) -> tuple[ExperimentConfig, ModelJob]:
    config = parse_config(_config(tmp_path, [entry]))
    mc = config.models[0]
    settings = {"has_valid": True, "refit": True, "first_stage": False, **job}
    return config, ModelJob(
        mc=mc,
        label=mc.display_name,
        mdir=tmp_path / "models" / mc.display_name,
        template=create_model(mc.name, mc.params),
        protocols=[ProtocolConfig(kind="full")],
        skipped={},
        budget_users=None,
        tune_proto=ProtocolConfig(kind="full"),
        **settings,
    )


def _validation(config, events: list[str], scored: list[float]) -> Validation:
    """Scores a model by how close its ``a`` is to 2: the grid point a = 2 wins."""
    dataset = make_planted_dataset(users_per_cluster=5)

    def score(model: Recommender, proto: ProtocolConfig, max_users: int | None) -> float:
        scored.append(model.a)
        return -abs(model.a - 2.0)

    return Validation(
        config=config,
        valid=dataset.interactions.iloc[:0],
        training_data=lambda: _training_data(dataset),
        score=score,
        on_event=events.append,
    )


GRID = {"name": PROBE, "label": "probe", "grid": {"a": [1.0, 2.0, 3.0]}}


@pytest.fixture(autouse=True)
def _clear_fits():
    Probe.fits.clear()


def test_the_plan_keys_every_grid_point(tmp_path):
    config, job = _job(tmp_path, GRID)
    plan = trial_plan(config, job)
    assert isinstance(plan, TrialPlan) and plan.needs_validation
    assert plan.grid == {"a": [1.0, 2.0, 3.0]}
    assert sorted(p["a"] for p in plan.points) == [1.0, 2.0, 3.0]
    assert len(set(plan.trial_keys.values())) == 3
    assert plan.params(job.mc, 0) == {**job.mc.params, **plan.points[0]}


@pytest.mark.parametrize(
    ("job", "tuned"),
    [
        ({"has_valid": False}, False),  # no validation data: nothing to tune on
        ({"has_valid": False, "refit": False, "first_stage": True}, False),
        ({}, False),  # one point, refit: nothing to learn from validation
        ({"refit": False}, True),  # not refit: the validation fit is the tested model
        ({"first_stage": True}, True),  # a first stage draws validation candidates
    ],
)
def test_the_plan_of_one_point_validates_only_when_something_needs_it(tmp_path, job, tuned):
    config, model_job = _job(tmp_path, {"name": PROBE, "grid": {"a": [2.5]}}, **job)
    assert trial_plan(config, model_job).needs_validation is tuned


def test_a_model_without_validation_data_takes_its_parameters_untried(tmp_path):
    events: list[str] = []
    scored: list[float] = []
    config, job = _job(tmp_path, GRID, has_valid=False)
    validation = _validation(config, events, scored)
    plan = validation.plan(job)
    assert not plan.needs_validation
    assert validation.pending(job, plan) == []
    tuning = validation.tune(job, plan)
    # a larger grid without validation data is not tried: the parameters as given
    assert tuning.chosen == job.mc.params and tuning.trials == [] and tuning.seconds == 0
    assert scored == [] and Probe.fits == [] and events == []
    assert not (job.mdir / "tuning.json").exists()

    config, job = _job(tmp_path, {**GRID, "grid": {"a": [2.5]}}, has_valid=False)
    validation = _validation(config, events, scored)
    tuning = validation.tune(job, validation.plan(job))
    assert tuning.chosen == {"a": 2.5} and tuning.best_model is None
    assert events == ['probe: one grid point, not tuned: {"a": 2.5}'] and scored == []


def test_a_parameter_the_model_cannot_take_stops_the_plan(tmp_path):
    config, job = _job(tmp_path, {"name": PROBE, "grid": {"a": [1.0, -1.0]}})
    with pytest.raises(ConfigError, match=r"grid point \{\"a\": -1.0\}.*at least 0"):
        trial_plan(config, job)


def test_tuning_resumes_a_half_done_grid_and_skips_its_finished_trials(tmp_path):
    events: list[str] = []
    scored: list[float] = []
    config, job = _job(tmp_path, GRID)
    validation = _validation(config, events, scored)
    plan = validation.plan(job)
    a_of = [p["a"] for p in plan.points]
    done = a_of.index(2.0)  # the best point was measured before the run stopped
    params = plan.params(job.mc, done)
    finished = {
        "key": plan.trial_keys[params_key(params)],
        "params": params,
        "metric": "ndcg@10",
        "protocol": "full",
        "value": 0.5,
        "fit_seconds": 7.0,
        "refit_params": {},
    }
    other_grid = {**finished, "params": {"a": 9.0}, "value": 0.9}  # not a point of this grid
    job.mdir.mkdir(parents=True)
    (job.mdir / "tuning.json").write_text(json.dumps({"trials": [finished, other_grid]}))

    pending = validation.pending(job, plan)
    assert pending == [n for n in range(3) if n != done]
    assert any("dropped 1 saved validation trial(s)" in e for e in events)

    events.clear()
    tuning = validation.tune(job, plan)
    # only the missing points are fitted and scored, in grid order
    assert Probe.fits == scored == [a_of[n] for n in pending]
    assert [e for e in events if "/3" in e] == [
        f"probe: validation {n + 1}/3 {plan.points[n]}" for n in pending
    ]
    saved = json.loads((job.mdir / "tuning.json").read_text())["trials"]
    assert saved == tuning.trials and saved[0] == finished and len(saved) == 3
    assert [t["params"]["a"] for t in saved[1:]] == [a_of[n] for n in pending]
    # the saved trial scored best: chosen, its model not in memory (the refit trains it)
    assert tuning.chosen == params and tuning.best_model is None
    assert tuning.seconds == pytest.approx(7.0 + sum(t["fit_seconds"] for t in saved[1:]))
    assert events[-1] == 'probe: chose {"a": 2.0} (ndcg@10 0.5000 on validation)'
    assert validation.pending(job, plan) == []


def test_a_fresh_grid_keeps_the_best_model_in_memory(tmp_path):
    events: list[str] = []
    scored: list[float] = []
    config, job = _job(tmp_path, GRID)
    validation = _validation(config, events, scored)
    tuning = validation.tune(job, validation.plan(job))
    assert sorted(scored) == [1.0, 2.0, 3.0]
    assert tuning.chosen == {"a": 2.0} and tuning.best_model.a == 2.0
    assert tuning.best_model.fit_seconds_ >= 0


def test_one_trial_runs_alone_and_writes_nothing(tmp_path):
    events: list[str] = []
    scored: list[float] = []
    config, job = _job(tmp_path, GRID)
    job.mdir.mkdir(parents=True)
    validation = _validation(config, events, scored)
    plan = validation.plan(job)
    trial = validation.run_trial(job, plan, 1)
    assert trial["params"] == plan.params(job.mc, 1) and scored == [plan.points[1]["a"]]
    assert trial["key"] == plan.trial_keys[params_key(trial["params"])]
    assert trial["value"] == -abs(plan.points[1]["a"] - 2.0) and trial["protocol"] == "full"
    assert not (job.mdir / "tuning.json").exists()
    assert events == [f"probe: validation 2/3 {plan.points[1]}"]


def test_an_added_parameter_away_from_its_neutral_value_is_named():
    """`parameters_added_since` leaves out an added option only at its neutral value."""
    from recarena.config import ModelConfig
    from recarena.experiment.tuning import parameters_added_since, resolved_params

    plain = ModelConfig(name="sasrec")
    record = {"params": dict(resolved_params(plain, {}))}
    for name in ("lr_schedule", "warmup_epochs", "decay_epochs", "dp_epsilon"):
        record["params"].pop(name)
    assert parameters_added_since(plain, record) == ""
    cosine = ModelConfig(name="sasrec", params={"lr_schedule": "cosine"})
    assert parameters_added_since(cosine, record) == "lr_schedule='cosine'"
    record["params"].pop("patience_steps")  # not an option that is off: always named
    assert parameters_added_since(plain, record) == "patience_steps=250"


def test_a_changed_default_is_named_from_the_entry_or_from_an_option_left_off():
    """`defaults_changed_since` compares the entry's parameters as resolved when the model
    was measured (``entry_params``) with now; a record from before it did shows only the
    options of ``neutral_params`` it ran with off (the cross-encoder's popularity prior,
    off by default until it became auto), unless the grid or the entry sets them."""
    from recarena.config import ModelConfig
    from recarena.experiment.tuning import defaults_changed_since, resolved_params

    entry = ModelConfig(name="lm-cross-encoder")
    now = dict(resolved_params(entry, {}))
    assert defaults_changed_since(entry, {"entry_params": now, "params": now}) == ""
    then = {**now, "lr": 5e-5}
    assert defaults_changed_since(entry, {"entry_params": then}) == "lr=5e-05 (now 0.0001)"
    # before entry_params: the prior off (0, its neutral value) and now auto (None)
    old = {"params": {**now, "prior_passes": 0, "lr": 5e-5, "max_steps": 800}}
    assert defaults_changed_since(entry, old) == "prior_passes=0 (now None)"
    gridded = ModelConfig(name="lm-cross-encoder", grid={"prior_passes": [0, 8]})
    assert defaults_changed_since(gridded, old) == ""
    assert defaults_changed_since(entry, {"params": {**now, "prior_passes": None}}) == ""
    assert defaults_changed_since(entry, {}) == ""
