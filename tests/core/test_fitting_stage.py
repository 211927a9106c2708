"""The refit stage (`recarena.experiment.fitting.FinalFit`) without a run: a hand-built
model job and validation result, the training data and the fitted model's save and load
given as functions.

`ExperimentRunner._fit_final` delegates to it; the runner's own checks of the stage are in
test_runner_stages.py, the saved fitted model's resume in the fault suite.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from recarena.config import ProtocolConfig
from recarena.cost import PeakMemory
from recarena.experiment.fitting import FinalFit, is_refit, update_histories, worth_saving
from recarena.experiment.stages import Tuning
from recarena.experiment.tuning import trial_key
from tests.conftest import make_planted_dataset
from tests.core.test_tuning_stage import GRID, PROBE, Probe, _job
from tests.models.conformance import _training_data


class Stale(Probe):
    """A Probe whose per-user weights would need training to take in new histories."""

    history_use = "trained"


class Stage:
    """The run's side of the stage: what it was asked for and what it saved."""

    def __init__(self, resumed=None) -> None:
        self.dataset = make_planted_dataset(users_per_cluster=5)
        self.asked: list[str] = []
        self.saved: list[tuple] = []
        self.loaded: list[str] = []
        self.events: list[str] = []
        self.resumed = resumed

    def training_data(self, stage: str):
        self.asked.append(stage)
        return _training_data(self.dataset)

    def load_fitted(self, label, template, folder, key):
        self.loaded.append(key)
        return self.resumed

    def save_fitted(self, *args) -> None:
        self.saved.append(args)

    def final_fit(self, config, **settings) -> FinalFit:
        return FinalFit(
            config=config,
            split=SimpleNamespace(valid=self.dataset.interactions.iloc[:0]),
            training_data=self.training_data,
            load_fitted=self.load_fitted,
            save_fitted=self.save_fitted,
            save_first_stage=lambda *a: pytest.fail("not a first stage"),
            on_event=self.events.append,
            **settings,
        )


def _tuning(best_model=None) -> Tuning:
    return Tuning(
        needs_validation=True,
        trials=[],
        seconds=1.0,
        chosen={"a": 2.0},
        refit_extra={"seed": 3},
        best_model=best_model,
    )


@pytest.fixture(autouse=True)
def _clear_fits():
    Probe.fits.clear()


@pytest.mark.parametrize(
    ("refit", "has_valid", "expected"),
    [(True, True, True), (False, True, False), (True, False, True), (False, False, True)],
)
def test_is_refit_follows_the_config_and_the_split(tmp_path, refit, has_valid, expected):
    _, job = _job(tmp_path, GRID, refit=refit, has_valid=has_valid)
    assert is_refit(job) is expected


def test_the_refit_fits_the_chosen_parameters_on_train_and_valid(tmp_path):
    config, job = _job(tmp_path, GRID)  # refit: the experiment's default
    stage = Stage()
    validation_model = Probe(a=2.0)
    with PeakMemory() as mem:
        fitted = stage.final_fit(config).fit(job, _tuning(validation_model), mem)
    assert fitted.refitted and fitted.history_refreshed is None
    assert fitted.model is not validation_model
    # the chosen parameters with what the chosen trial learned for the refit
    assert fitted.model.get_params() == {"a": 2.0, "seed": 3} and Probe.fits == [2.0]
    assert stage.asked == ["test"] and fitted.data.checkpoint_dir == job.checkpoints / "refit"
    assert stage.events == ["probe: fitting on train + valid"]
    assert stage.loaded == [
        trial_key(config, job.mc, {"a": 2.0, "seed": 3, "refit": True}, job.tune_proto)
    ]
    assert stage.saved == []  # a fit of milliseconds is cheaper to repeat than to save


def test_without_refit_the_validation_model_takes_in_the_validation_histories(tmp_path):
    config, job = _job(tmp_path, GRID, refit=False)
    stage = Stage()
    validation_model = Probe(a=2.0).fit(_training_data(stage.dataset))
    Probe.fits.clear()
    with PeakMemory() as mem:
        kept = stage.final_fit(config).fit(job, _tuning(validation_model), mem)
    assert kept.model is validation_model and not kept.refitted
    assert kept.history_refreshed is True and Probe.fits == []  # no second training
    assert kept.fit_seconds == validation_model.fit_seconds_
    assert stage.asked == ["test"] and stage.events == []


def test_without_refit_a_model_not_in_memory_is_fitted_on_train(tmp_path):
    config, job = _job(tmp_path, GRID, refit=False)
    stage = Stage()
    with PeakMemory() as mem:
        kept = stage.final_fit(config).fit(job, _tuning(None), mem)
    assert not kept.refitted and Probe.fits == [2.0] and kept.model.get_params()["a"] == 2.0
    assert stage.asked == ["test", "valid"]


def test_a_model_that_cannot_take_in_histories_is_named(tmp_path):
    config, job = _job(tmp_path, {**GRID, "name": "tests.core.test_fitting_stage:Stale"})
    job.refit = False
    stage = Stage()
    model = Stale(a=2.0).fit(_training_data(stage.dataset))
    with PeakMemory() as mem:
        kept = stage.final_fit(config).fit(job, _tuning(model), mem)
    assert kept.history_refreshed is False
    assert stage.events == [
        "probe: not refit, and its per-user weights are learned and change only by "
        "training: it ranks the test items from histories without the validation interactions"
    ]
    events: list[str] = []
    probe = Probe(a=1.0).fit(_training_data(stage.dataset))
    assert update_histories("p", probe, _training_data(stage.dataset), events.append)
    assert events == []


def test_a_long_fit_is_saved_and_a_saved_one_resumed(tmp_path):
    config, job = _job(tmp_path, GRID)
    stage = Stage()
    with PeakMemory() as mem:
        fitted = stage.final_fit(config, save_min_seconds=0.0).fit(job, _tuning(), mem)
    ((label, model, folder, key, seconds, refreshed, peak),) = stage.saved
    assert (label, model, folder) == ("probe", fitted.model, job.checkpoints / "fitted")
    assert key == stage.loaded[0] and seconds == fitted.fit_seconds and refreshed is None

    resumed_model = Probe(a=2.0)
    record = {"fit_seconds": 12.5, "history_refreshed": None, "peak_bytes": 2**40}
    stage = Stage(resumed=(resumed_model, record))
    Probe.fits.clear()
    with PeakMemory() as mem:
        fitted = stage.final_fit(config, save_min_seconds=0.0).fit(job, _tuning(), mem)
    assert fitted.model is resumed_model and fitted.fit_seconds == 12.5 and fitted.refitted
    assert Probe.fits == [] and stage.saved == [] and mem.peak_bytes == 2**40


def test_worth_saving_weighs_time_size_and_first_stages(tmp_path: Path):
    _, job = _job(tmp_path, {"name": PROBE})
    model = Probe(a=1.0).fit(_training_data(make_planted_dataset(users_per_cluster=5)))
    size = model.n_parameters()[0]
    assert worth_saving(job, model, 30.0, 30.0, size)
    assert not worth_saving(job, model, 29.9, 30.0, size)
    assert worth_saving(job, model, math.nan, 30.0, size)  # unknown: saved
    assert not worth_saving(job, model, 60.0, 30.0, size - 1)
    job.first_stage = True
    assert not worth_saving(job, model, 60.0, 30.0, size)


def test_the_protocol_of_the_fitted_key_is_the_tuning_protocol(tmp_path):
    config, job = _job(tmp_path, GRID)
    job.tune_proto = ProtocolConfig(kind="sampled", n_negatives=9)
    stage = Stage()
    with PeakMemory() as mem:
        stage.final_fit(config).fit(job, _tuning(), mem)
    assert stage.loaded == [
        trial_key(config, job.mc, {"a": 2.0, "seed": 3, "refit": True}, job.tune_proto)
    ]
