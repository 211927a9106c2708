"""`ExperimentRunner.run_model`'s stages one at a time, on a prepared runner.

`run_model` is a list of stage calls: reuse a finished model, start it, tune it, fit the
tested model, measure every protocol, then the cost and the ``DONE.json`` record. Each is
checked here on its own (the whole runs are in test_runner.py and the fault suite).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recarena.config import parse_config
from recarena.cost import PeakMemory
from recarena.errors import ConfigError
from recarena.runner import ExperimentRunner
from tests.core.test_runner import _config


def _runner(tmp_path: Path, models: list[dict], **evaluation) -> ExperimentRunner:
    raw = _config(tmp_path, models, **evaluation)
    config = parse_config(raw)
    runner = ExperimentRunner(
        config, tmp_path / "runs" / "t", tmp_path / "cache", progress=False, on_event=None
    )
    runner.run_dir.mkdir(parents=True)
    runner.prepare()
    runner.events = []
    runner.on_event = runner.events.append
    return runner


EASE_GRID = {"name": "ease", "grid": {"l2": [1.0, 10.0]}}
PROTOCOLS = [{"kind": "full"}, {"kind": "sampled", "n_negatives": 9}]


@pytest.fixture
def runner(tmp_path) -> ExperimentRunner:
    return _runner(tmp_path, [EASE_GRID, {"name": "most_popular"}], protocols=PROTOCOLS)


def test_start_model_names_the_folder_protocols_and_refit(runner):
    job = runner._start_model(runner.config.models[0])
    assert job.label == "ease" and job.mdir == runner.run_dir / "models" / "ease"
    assert job.mdir.is_dir() and not (job.mdir / "FAILED.json").exists()
    assert [p.label for p in job.protocols] == ["full", "sampled-9"]
    assert job.tune_proto.label == "full" and job.refit and job.has_valid
    assert not job.first_stage and job.budget_users is None


def test_start_model_refuses_a_model_that_fits_no_protocol(tmp_path):
    runner = _runner(
        tmp_path,
        [{"name": "ease"}, {"name": "lm-cross-encoder", "params": {"model": "tiny"}}],
        protocols=[{"kind": "full"}],
    )
    with pytest.raises(ConfigError, match="fits none of the experiment's protocols"):
        runner._start_model(runner.config.models[1])


def test_tune_chooses_the_best_trial_and_resumes_saved_trials(runner):
    job = runner._start_model(runner.config.models[0])
    tuning = runner._tune(job)
    assert tuning.needs_validation and len(tuning.trials) == 2
    best = max(tuning.trials, key=lambda t: t["value"])
    assert tuning.chosen == best["params"] and tuning.refit_extra == {}
    assert tuning.best_model is not None
    assert tuning.best_model.get_params()["l2"] == best["params"]["l2"]
    assert tuning.seconds == pytest.approx(sum(t["fit_seconds"] for t in tuning.trials))
    saved = json.loads((job.mdir / "tuning.json").read_text())["trials"]
    assert saved == tuning.trials
    assert sum(e.startswith("ease: validation") for e in runner.events) == 2

    # again: both trials come from tuning.json, no model is fitted, the same choice
    runner.events.clear()
    again = runner._tune(job)
    assert again.chosen == tuning.chosen and again.trials == tuning.trials
    assert not any(e.startswith("ease: validation") for e in runner.events)
    assert again.best_model is None  # not in memory: the final fit trains it


def test_tune_without_a_grid_takes_the_parameters_as_given(tmp_path):
    runner = _runner(tmp_path, [{"name": "ease", "grid": {}, "params": {"l2": 5.0}}])
    tuning = runner._tune(runner._start_model(runner.config.models[0]))
    assert not tuning.needs_validation and tuning.trials == [] and tuning.seconds == 0
    assert tuning.chosen == {"l2": 5.0} and tuning.best_model is None


def test_fit_final_refits_or_keeps_the_validation_model(runner):
    job = runner._start_model(runner.config.models[0])
    tuning = runner._tune(job)
    with PeakMemory() as mem:
        fitted = runner._fit_final(job, tuning, mem)
    assert fitted.refitted and fitted.history_refreshed is None
    assert fitted.model is not tuning.best_model
    assert fitted.model.get_params() == {**tuning.best_model.get_params()}
    assert fitted.fit_seconds >= 0 and "ease: fitting on train + valid" in runner.events
    # the test stage's data: train + valid
    assert fitted.data.csr().nnz == len(runner.split.fit_interactions("test"))
    assert fitted.data.csr().nnz == len(runner.split.train) + len(runner.split.valid)

    job.refit = False
    with PeakMemory() as mem:
        kept = runner._fit_final(job, tuning, mem)
    assert kept.model is tuning.best_model and not kept.refitted
    assert kept.history_refreshed is True  # EASE reads the histories it is given


def test_measure_protocols_and_cost(runner):
    job = runner._start_model(runner.config.models[0])
    tuning = runner._tune(job)
    with PeakMemory() as mem:
        fitted = runner._fit_final(job, tuning, mem)
        measured = runner._measure_protocols(job, fitted)
    assert list(measured.results) == ["full", "sampled-9"]
    np.testing.assert_array_equal(measured.test_users, runner.split.eval_users("test"))
    assert measured.throughput > 0
    for proto in ("full", "sampled-9"):
        assert (job.mdir / proto / "per_user.parquet").is_file()
    cost = runner._cost(tuning, fitted, measured, mem)
    assert list(cost)[:5] == [
        "parameters_total",
        "parameters_trainable",
        "fit_seconds",
        "tuning_seconds",
        "tuning_trials",
    ]
    assert cost["tuning_trials"] == 2 and cost["device"] == "cpu"

    record = runner._record_done(job, tuning, fitted, measured, cost)
    assert json.loads((job.mdir / "DONE.json").read_text()) == record
    assert record["protocols"] == ["full", "sampled-9"] and record["chosen_on_validation"]
    assert set(record["artifacts"]) >= {"models/ease/cost.json", "models/ease/tuning.json"}
    assert not job.checkpoints.exists()


def test_reuse_finished_returns_the_record_or_clears_a_changed_model(tmp_path):
    runner = _runner(tmp_path, [EASE_GRID])
    record = runner.run_model(runner.config.models[0])
    runner.events.clear()
    assert runner.reuse_finished(runner.config.models[0]) == record
    assert runner.events == ["ease: done earlier, reusing its results"]

    changed = runner.config.models[0].model_copy(update={"grid": {"l2": [3.0]}})
    runner._done_checks.clear()
    assert runner.reuse_finished(changed) is None
    assert runner.events[-1] == "ease: its configuration changed, recomputing"
    assert not (runner.run_dir / "models" / "ease").exists()


def test_the_stages_call_the_runners_hooks_as_they_are_when_called(runner, monkeypatch):
    """`_tune` and `_fit_final` run in tuning.py and fitting.py, but a hook patched on the
    runner (``validation_score``, ``_save_fitted``, ``fitted_save_min_seconds``) still
    decides what they do."""
    monkeypatch.setattr(
        ExperimentRunner, "validation_score", lambda self, model, proto, max_users=None: 0.25
    )
    saved: list[str] = []
    monkeypatch.setattr(
        ExperimentRunner, "_save_fitted", lambda self, label, *a: saved.append(label)
    )
    monkeypatch.setattr(ExperimentRunner, "fitted_save_min_seconds", 0.0)
    job = runner._start_model(runner.config.models[0])
    tuning = runner._tune(job)
    assert [t["value"] for t in tuning.trials] == [0.25, 0.25]
    with PeakMemory() as mem:
        runner._fit_final(job, tuning, mem)
    assert saved == ["ease"]
