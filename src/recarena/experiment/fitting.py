"""The refit stage: the model that is tested, from what validation chose.

`FinalFit.fit` (``ExperimentRunner._fit_final`` delegates to it) either refits the chosen
parameters on train + valid (``refit``, the default, or a split without validation data),
or keeps the validation model and gives it the histories that hold the validation
interactions (`update_histories`; a model that cannot take them in without training is
named). A first stage draws its validation candidates here, from train-only histories,
before any history grows. A long fit is saved before the lists are ranked
(`worth_saving`), so a run stopped while ranking or writing them resumes from the fitted
model instead of fitting again.

`FinalFit` is given what the stage needs of a run (the experiment, the split, the
training data of a stage, the fitted model's save and load, the first stage's candidate
writer, where messages go), never the runner; it returns a
`recarena.experiment.stages.Fitted`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recarena.config import ExperimentConfig
from recarena.cost import PeakMemory, Stopwatch
from recarena.experiment.artifacts import _hash
from recarena.experiment.protocols import first_stage_lists
from recarena.experiment.stages import Fitted, ModelJob, Tuning
from recarena.experiment.tuning import trial_key
from recarena.models.base import STALE_HISTORY_REASONS, Recommender, TrainingData
from recarena.ranking import RankedLists
from recarena.splits import Split

__all__ = ["FinalFit", "is_refit", "update_histories", "worth_saving"]


def is_refit(job: ModelJob) -> bool:
    """Whether the tested model is refit on train + valid: the model's ``refit`` (the
    experiment's when unset), and always when the split has no validation data."""
    return job.refit or not job.has_valid


def update_histories(
    label: str, model: Recommender, data: TrainingData, on_event: Callable[[str], None]
) -> bool:
    """Give a model that is not refit the test-time histories (train + valid): True when
    it took them in (`Recommender.update_history`); False, with a message, when it cannot
    without training and ranks the test items from train-only histories."""
    refreshed = model.updates_history()
    if refreshed:
        model.update_history(data)
    else:
        reason = STALE_HISTORY_REASONS.get(model.history_use, model.history_use)
        on_event(
            f"{label}: not refit, and {reason}: it ranks the test items from "
            "histories without the validation interactions"
        )
    return refreshed


def worth_saving(
    job: ModelJob,
    model: Recommender,
    fit_seconds: float,
    min_seconds: float,
    max_parameters: int,
) -> bool:
    """Whether the tested model is saved before its lists: not a first stage (its
    candidates are saved instead), a fit of at least ``min_seconds`` (NaN: unknown,
    saved) and at most ``max_parameters`` parameters."""
    return (
        not job.first_stage
        and not fit_seconds < min_seconds  # NaN: unknown, saved
        and model.n_parameters()[0] <= max_parameters
    )


@dataclass
class FinalFit:
    """The refit stage, with what it needs of a run (see the module's docstring)."""

    config: ExperimentConfig
    split: Split
    #: the training data of a stage ("valid": train; "test": train + valid)
    training_data: Callable[[str], TrainingData]
    #: `ModelFolders.load_fitted`: (label, template, folder, key) -> (model, record) | None
    load_fitted: Callable[[str, Recommender, Path, str], tuple[Recommender, dict[str, Any]] | None]
    #: the runner's ``_save_fitted``: (label, model, folder, key, fit_seconds,
    #: history_refreshed, peak_bytes)
    save_fitted: Callable[..., None]
    #: the runner's ``_save_first_stage_candidates``: (label, stage, lists)
    save_first_stage: Callable[[str, str, RankedLists], None]
    on_event: Callable[[str], None]
    #: the runner's ``fitted_save_min_seconds`` and ``fitted_save_max_parameters``
    save_min_seconds: float = 30.0
    save_max_parameters: int = 2**29

    def fit(self, job: ModelJob, tuning: Tuning, mem: PeakMemory) -> Fitted:
        """The model that is tested: refit on train + valid, or the validation model with
        the validation interactions in its histories; a run stopped after this fit (while
        ranking or writing the lists) resumes from the fitted model saved here."""
        label, template, chosen = job.label, job.template, tuning.chosen
        split = self.split
        data_test = self.training_data("test")
        refitted = is_refit(job)
        fitted_dir = job.checkpoints / "fitted"
        fitted_key = trial_key(
            self.config,
            job.mc,
            {**chosen, **tuning.refit_extra, "refit": refitted},
            job.tune_proto,
        )
        resumed = None
        if not job.first_stage:
            resumed = self.load_fitted(label, template, fitted_dir, fitted_key)
        if resumed is not None:
            final, fitted_record = resumed
            mem.peak_bytes = max(mem.peak_bytes, int(fitted_record["peak_bytes"]))
            return Fitted(
                final,
                data_test,
                refitted,
                fitted_record["fit_seconds"],
                fitted_record["history_refreshed"],
            )
        best_model = tuning.best_model
        if refitted:
            final = template.clone(**{**chosen, **tuning.refit_extra})
            self.on_event(f"{label}: fitting on train + valid")
            data_test.checkpoint_dir = job.checkpoints / "refit"
            with Stopwatch() as sw:
                final.fit(data_test, valid=None)
            fit_seconds = sw.seconds
        else:
            if best_model is None:
                valid_data = self.training_data("valid")
                valid_data.checkpoint_dir = job.checkpoints / f"valid-{_hash(chosen)}"
                best_model = template.clone(**chosen).fit(valid_data, valid=split.valid)
            final = best_model
            fit_seconds = final.fit_seconds_
        if job.first_stage and job.has_valid:
            vmodel = best_model or template.clone(**chosen).fit(
                self.training_data("valid"), valid=split.valid
            )
            vlists = first_stage_lists(
                self.config, label, vmodel, split, "valid", split.seen_csr("valid")
            )
            self.save_first_stage(label, "valid", vlists)
        # None: refit on the test-time data, so nothing to refresh
        history_refreshed = None
        if not refitted:
            # only now, after any validation lists: the model ranks the test items from
            # histories that hold the validation interactions (the SASRec paper's
            # protocol), with what it learned on train; a model that cannot take them in
            # without training is recorded, and the report names it
            history_refreshed = update_histories(label, final, data_test, self.on_event)
        if worth_saving(job, final, fit_seconds, self.save_min_seconds, self.save_max_parameters):
            self.save_fitted(
                label, final, fitted_dir, fitted_key, fit_seconds, history_refreshed, mem.peak_bytes
            )
        return Fitted(final, data_test, refitted, fit_seconds, history_refreshed)
