"""Running an experiment: data -> split -> for each model: tune, fit, recommend, measure.

Stability: **stable** for `run_experiment`, `RunResult` and the run directory layout below.

`ExperimentRunner` prepares the run (data set, split, the run's set-up files), runs every
model and writes the summaries; one model's run, `ExperimentRunner.run_model`, is a list
of stage calls. What the stages read and write lives beside it in `recarena.experiment`:

- `artifacts`: the run folder (`RunFolder`: ``dataset/`` and ``split/`` stamped, verified
  and reused, leftovers removed) and the model folders (`ModelFolders`: the ``DONE.json``
  check, the fitted model saved before its lists, first-stage candidates, ``cost.json``
  and ``DONE.json``), hashes and names;
- `protocols`: the split, each protocol's candidates, ranking a protocol's lists, a first
  stage's top-N;
- `tuning`: grid points and trial keys, the saved trials a resume reuses, and the tuning
  stage (`Validation`: ``_tune``, ``pending_trials`` and ``run_trial`` delegate to it);
- `fitting`: the refit stage (`FinalFit`: ``_fit_final`` delegates to it);
- `measuring` (and `impressions`): the metrics of a protocol's lists, as a `Measurement`;
- `cost`: latency and the ``cost.json`` record; `preflight`: the checks before a run;
- `stages`: what one stage hands the next (`ModelJob`, `Tuning`, `Fitted`, `Measured`).

The stages are given what they need of the run, never the runner; the runner's hooks
(``validation_score``, ``_save_fitted``, ``_save_first_stage_candidates``, the
``fitted_save_*`` settings) are handed over at each call, so a hook patched on the runner
still decides what the stage does.

Every stage leaves an artifact in the run directory, written atomically, so a killed run
loses nothing already written and the same command resumes where it stopped: finished
models (``DONE.json``) are not recomputed, a half-done validation grid restarts at its first
missing trial. What is reused must come from the current configuration: the data set and
the split carry the hash of the configuration that made them (``stage.json``), every
validation trial the hash of its model, parameters and setup, and a model's ``DONE.json``
the hash of its configuration; anything else is recomputed. What is reused must also be
undamaged: ``stage.json`` and ``DONE.json`` record the sha256 of every file of their stage
or model, and a file that is missing, cut short or altered is named and its stage or model
recomputed (an intact ``tuning.json`` keeps its trials; a folder written before checksums
were recorded is trusted, its files only checked for being readable). Temporary files that
a killed writer left (``.NAME.XXXXXXXX.tmp``) are removed when a run starts.

Before anything is read or written, the whole experiment is checked (model names, split
ratios, protocols, parameters and grids: `ExperimentRunner.check_config`), and one error
lists every problem. A run then holds its folder's lock (``run.lock``, `recarena._rundir`)
until it ends: a second run of the same folder fails at once naming the holder, and a lock
a killed run left is taken over with a message.

Run directory layout::

    RUN_DIR/
      run.lock              while a process holds the folder: its pid, host and start time
      config.toml           the resolved experiment (every default written out)
      environment.json      versions, git revision, CPU, memory, GPU
      run.json              setup hash (a resumed run must match it), notes, protocols
      dataset/              the preprocessed Dataset (parquet + dataset.json with stats);
                            stage.json: the hash of the data configuration that made it
                            and the sha256 of every file (``files``)
      split/                the Split: train/valid/test, frozen candidates per stage;
                            stage.json: the hash of the setup (data, split, evaluation, seed)
                            and the sha256 of every file but the first stages' candidates'
                            (``first_stage__*.npz``, recorded by their model's DONE.json)
      models/LABEL/
        tuning.json         every validation trial: params, validation metric, fit seconds,
                            the key (hash of model, params and setup) it is reused under
        cost.json           parameters, fit time, throughput, latency p50/p95, peak memory
        training_log.json   per-epoch curves, where the model logs them
        PROTOCOL/
          lists.npz         ranked lists of the test users (users, items, scores)
          per_user.parquet  per-user metric values, one row per (user, segment)
          metrics.json      global metrics (coverage, Gini), pointwise metrics, counts
        DONE.json           written last (parameters, refit, whether the test histories
                            took in the validation interactions, its [[models]] entry, the
                            sha256 of every file the model wrote: ``artifacts``);
                            FAILED.json instead when the model failed
      summary.csv / summary.json / summary.md
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recarena import _faults
from recarena._artifacts import describe_damage, json_or_damage
from recarena._io import read_json, write_json, write_text
from recarena._progress import progress_bars
from recarena._progress import (  # noqa: F401 - recarena.runner re-exports it
    quiet_library_progress as _quiet_library_progress,
)
from recarena._rundir import LOCK_FILE, RunLock
from recarena.cache import resolve_cache_dir
from recarena.config import ExperimentConfig, ModelConfig, ProtocolConfig, dump_config
from recarena.cost import PeakMemory, Stopwatch
from recarena.data.dataset import Dataset
from recarena.errors import ArtifactError, ConfigError, RecArenaError
from recarena.experiment import preflight
from recarena.experiment.artifacts import (
    ModelFolders,
    RunFolder,
    data_hash,
    model_hash,  # noqa: F401 - imported from here before artifacts.py held it
    run_directory_for,
    setup_hash,
    write_measurement,
)
from recarena.experiment.cost import cost_record, latency_ms
from recarena.experiment.fitting import FinalFit
from recarena.experiment.impressions import impression_rows, impression_table, measure_impressions
from recarena.experiment.measuring import held_out, measure_protocol
from recarena.experiment.protocols import (
    build_split,
    candidates_for,
    check_first_stage,
    first_stage_lists,
    first_stage_top_n,
    is_first_stage,
    item_text_template,
    protocols_for,
    rank_lists,
    sample_users,
)
from recarena.experiment.seeds import seed_runs
from recarena.experiment.stages import Fitted, Measured, ModelJob, Tuning
from recarena.experiment.tuning import (
    Validation,
    defaults_changed_since,
    grid_points,
    parameters_added_since,
    trial_key,
)
from recarena.models.base import Recommender, TrainingData
from recarena.models.registry import create_model
from recarena.ranking import RankedLists
from recarena.splits import CandidateSet, Split

if TYPE_CHECKING:
    from recarena.experiment.split_seeds import SplitRunResult

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What `run_experiment` returns: where the artifacts are and the summary table."""

    run_dir: Path
    summary: pd.DataFrame
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------- the runner
class ExperimentRunner:
    """Runs one experiment into one run directory. Use `run_experiment` unless you need hooks."""

    #: the final model is saved before its lists (`_save_fitted`) when its fit took at least
    #: this long (a faster fit is cheaper to repeat than to save and load) ...
    fitted_save_min_seconds: float = 30.0
    #: ... and it holds at most this many parameters (about 4 GiB in float64): a larger
    #: model (EASE on a very large catalog) would cost more memory to pickle than it saves
    fitted_save_max_parameters: int = 2**29

    def __init__(
        self,
        config: ExperimentConfig,
        run_dir: Path,
        cache_dir: Path,
        *,
        progress: bool = True,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        # the runs of the [[models]] entries: one per training seed where seeds are asked
        self.runs = {run.label: run for run in seed_runs(config)}
        self.run_dir = run_dir
        self.cache_dir = cache_dir
        self.progress = progress
        self.on_event = on_event or (lambda msg: log.info(msg))
        self.ks = config.evaluation.ks
        self.k_max = max(self.ks)
        # True while `run(overwrite=True)` checks the experiment: saved results do not count
        self._overwrite = False
        # the run folder's set-up stages and its model folders (their messages go to
        # whatever `on_event` is when they are said)
        self.run_folder = RunFolder(run_dir, self._event)
        self.model_folders = ModelFolders(
            run_dir, config.evaluation.protocols, self.runs, self._event
        )

    def _event(self, msg: str) -> None:
        self.on_event(msg)

    @property
    def _done_checks(self) -> dict[str, tuple[tuple[int, int, int], Any]]:
        """label -> (DONE.json's mtime, size, inode) and what `done_status` found."""
        return self.model_folders.done_checks

    # -------------------------------------------------------------- setup
    def prepare(self) -> None:
        """Load (or reuse) the data set and the split, and write the run's set-up files.

        `run` calls it with the run folder's lock held.
        """
        from recarena.data import load_dataset
        from recarena.environment import collect_environment

        cfg = self.config
        folder = self.run_folder
        self.run_dir.mkdir(parents=True, exist_ok=True)
        state_path = self.run_dir / "run.json"
        digest = setup_hash(cfg)
        # run.json is written once the data and the split are saved: it vouches for them
        vouched = state_path.exists()
        if vouched:
            state, damage = json_or_damage(state_path)
            if damage is not None:
                folder.recover_run_state(state_path, damage, digest)
            elif not isinstance(state, dict) or state.get("setup_hash") != digest:
                raise ArtifactError(
                    f"{self.run_dir} holds a run with a different data/split/evaluation setup; "
                    "choose another output folder (--output-dir) or start over (--overwrite)"
                )
        write_text(self.run_dir / "config.toml", dump_config(cfg))
        write_json(self.run_dir / "environment.json", collect_environment())

        dataset_dir = self.run_dir / "dataset"
        dataset_digest = data_hash(cfg)
        reuse_dataset = folder.reusable_stage(
            dataset_dir, "dataset.json", "data", dataset_digest, vouched
        )
        if reuse_dataset:
            self.on_event(f"data: reusing {dataset_dir}")
            loaded = folder.load_stage(dataset_dir, "data", Dataset.load)
            reuse_dataset = loaded is not None
            if loaded is not None:
                self.dataset = loaded
        if not reuse_dataset:
            self.on_event(
                "data: loading" + (f" {cfg.data.name}" if cfg.data.name else f" {cfg.data.path}")
            )
            self.dataset = load_dataset(cfg.data, self.cache_dir)
            self.dataset.info["stats"] = self.dataset.stats()
            self.dataset.save(dataset_dir)
            _faults.point("data:saved")
        dump = cfg.model_dump(mode="json")
        folder.stamp_stage(
            dataset_dir, "dataset", dataset_digest, {"data": dump["data"]}, reuse_dataset
        )
        ds = self.dataset
        self.on_event(
            f"data: {ds.n_users} users, {ds.n_items} items, {ds.n_interactions} interactions"
        )

        split_dir = self.run_dir / "split"
        split = None
        if reuse_dataset and folder.reusable_stage(
            split_dir, "split.json", "split", digest, vouched
        ):
            split = folder.load_stage(split_dir, "split", Split.load)
        reuse_split = split is not None
        if split is None:
            # a split of another data set is never reused, whatever its stamp says
            shutil.rmtree(split_dir, ignore_errors=True)
            split = build_split(cfg, ds)
            split.save(split_dir)
            _faults.point("split:saved")
        self.split = split
        folder.stamp_stage(
            split_dir,
            "split",
            digest,
            {k: dump[k] for k in ("data", "split", "evaluation", "seed")},
            reuse_split,
        )
        for note in self.split.notes:
            self.on_event(f"split: {note}")

        from recarena.metrics.fairness import grouping_problems

        # the summaries group users and items by these columns: checked before any model
        problems = grouping_problems(
            ds.users, ds.items, cfg.fairness.user_columns, cfg.fairness.item_columns
        )
        if problems:
            raise ConfigError("; ".join(problems))
        self.template = item_text_template(cfg, ds)
        self.item_text = ds.item_text(self.template) if self.template else None
        self.item_features = self._item_features()
        write_json(
            state_path,
            {
                "setup_hash": digest,
                "name": cfg.name,
                "dataset": ds.name,
                "split": self.split.method,
                "protocols": {p.label: p.description for p in cfg.evaluation.protocols},
                "item_text_template": self.template,
                "notes": self.split.notes,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            },
        )
        _faults.point("run:prepared")

    def _item_features(self) -> sp.csr_matrix | None:
        """Item vectors for intra-list diversity: genres when there are some, else text."""
        items = self.dataset.items
        if "genres" in items.columns:
            lists = items["genres"].map(
                lambda v: list(v) if isinstance(v, (list, tuple, np.ndarray)) else []
            )
            vocab = sorted({g for row in lists for g in row})
            if vocab:
                index = {g: i for i, g in enumerate(vocab)}
                rows = np.repeat(np.arange(len(lists)), lists.map(len).to_numpy())
                cols = np.array([index[g] for row in lists for g in row], dtype=np.int64)
                mat = sp.csr_matrix(
                    (np.ones(len(cols), np.float32), (rows, cols)), shape=(len(lists), len(vocab))
                )
                return mat
        if self.item_text:
            from sklearn.feature_extraction.text import TfidfVectorizer

            return (
                TfidfVectorizer(min_df=1).fit_transform(self.item_text).astype(np.float32).tocsr()
            )
        return None

    def training_data(self, stage: str) -> TrainingData:
        ds = self.dataset
        return TrainingData(
            interactions=self.split.fit_interactions(stage),  # type: ignore[arg-type]
            n_users=ds.n_users,
            n_items=ds.n_items,
            items=ds.items,
            item_text=self.item_text,
            users=ds.users,
            dataset_name=ds.name,
            cache_dir=self.cache_dir,
        )

    # -------------------------------------------------------------- protocols and candidates
    def candidates_for(self, proto: ProtocolConfig, stage: str) -> CandidateSet | None:
        """The frozen candidates of ``proto`` at ``stage`` (`protocols.candidates_for`)."""
        return candidates_for(self.split, self.run_dir, proto, stage)

    def _save_first_stage_candidates(self, label: str, stage: str, lists: RankedLists) -> None:
        self.model_folders.save_first_stage(label, stage, lists)

    def is_first_stage(self, label: str) -> bool:
        return is_first_stage(self.config, label)

    def protocols_for(
        self, mc: ModelConfig, model: Recommender
    ) -> tuple[list[ProtocolConfig], dict[str, str]]:
        """The protocols ``model`` is measured on, and why it skips the others."""
        return protocols_for(self.config, mc, model)

    def grid_points(
        self, mc: ModelConfig, template: Recommender
    ) -> tuple[dict[str, list[Any]], list[dict[str, Any]]]:
        """The model's validation grid and the points tried (`tuning.grid_points`)."""
        return grid_points(mc, template, self.config.seed)

    def trial_key(self, mc: ModelConfig, params: dict[str, Any], proto: ProtocolConfig) -> str:
        """What a validation trial depends on, hashed (`tuning.trial_key`)."""
        return trial_key(self.config, mc, params, proto)

    def _lists(
        self,
        model: Recommender,
        proto: ProtocolConfig,
        stage: str,
        users: np.ndarray,
        exclude: sp.csr_matrix,
        k: int,
    ) -> RankedLists:
        """``users``' top-``k`` of ``proto`` at ``stage`` (`protocols.rank_lists`)."""
        return rank_lists(
            model,
            proto,
            stage,
            users,
            exclude,
            k,
            item_pool=self.split.item_pool.get(stage),
            candidates=None if proto.kind == "full" else self.candidates_for(proto, stage),
            seed=self.config.seed,
        )

    def validation_score(
        self, model: Recommender, proto: ProtocolConfig, max_users: int | None = None
    ) -> float:
        """``model``'s tuning metric on validation, over a seeded sample of ``max_users``
        users (the model's budget: ``max_eval_users`` of its entry, else the experiment's)."""
        from recarena.metrics import ranking_metrics

        metric = self.config.evaluation.tune_metric
        name, _, k = metric.partition("@")
        k_val = int(k) if k else 10
        if proto.kind == "impressions":
            rows = impression_rows(self.dataset, "valid")
            table, _ = impression_table(model, rows, self.config.seed)
            column = metric if metric in table.columns else ("mrr" if name == "mrr" else "auc")
            return float(table[column].mean())
        users = sample_users(
            self.split.eval_users("valid"),
            max_users if max_users is not None else self.config.evaluation.max_eval_users,
            self.config.seed,
        )
        lists = self._lists(model, proto, "valid", users, self.split.seen_csr("valid"), k_val)
        frame = ranking_metrics(lists, self.split.truth_csr("valid"), [k_val], [name])
        return float(frame[f"{name}@{k_val}"].mean())

    # -------------------------------------------------------------- the model folders
    def done_status(self, mc: ModelConfig) -> tuple[str, list[tuple[str, str]]]:
        """Whether the model finished earlier, and whether what it left can be reused
        (`recarena.experiment.artifacts.ModelFolders.done_status`)."""
        return self.model_folders.done_status(mc)

    def forget_done_check(self, label: str) -> None:
        """Check ``label``'s ``DONE.json`` again when next asked: its files were written
        from elsewhere (a Ray task's results)."""
        self.model_folders.forget(label)

    def _save_fitted(
        self,
        label: str,
        model: Recommender,
        folder: Path,
        key: str,
        fit_seconds: float,
        history_refreshed: bool | None,
        peak_bytes: int,
    ) -> None:
        """`ModelFolders.save_fitted`: the final model saved before its lists are ranked."""
        self.model_folders.save_fitted(
            label, model, folder, key, fit_seconds, history_refreshed, peak_bytes
        )

    # -------------------------------------------------------------- one model, in stages
    def run_model(self, mc: ModelConfig) -> dict[str, Any]:
        """Tune, fit, measure and record one model: a list of stage calls (each a method
        below), and the model's ``DONE.json`` record as the result."""
        reused = self.reuse_finished(mc)
        if reused is not None:
            return reused
        job = self._start_model(mc)
        tuning = self._tune(job)
        with PeakMemory() as mem:
            fitted = self._fit_final(job, tuning, mem)
            _faults.point("model:fitted")
            measured = self._measure_protocols(job, fitted)
        cost = self._cost(tuning, fitted, measured, mem)
        return self._record_done(job, tuning, fitted, measured, cost)

    def reuse_finished(self, mc: ModelConfig) -> dict[str, Any] | None:
        """A finished model's ``DONE.json`` record when it can be reused; else None, after
        clearing what a changed configuration or a damaged file left."""
        label = mc.display_name
        mdir = self.model_folders.folder(label)
        status, damaged = self.done_status(mc)
        if status == "done":
            record = read_json(mdir / "DONE.json")
            added = parameters_added_since(mc, record)
            changed = defaults_changed_since(mc, record)
            if added or changed:
                what = []
                if added:
                    what.append(f"before the parameter(s) {added} existed")
                if changed:
                    what.append(f"before the default(s) changed: {changed}")
                self.on_event(
                    f"{label}: done earlier, reusing its results; it was measured "
                    f"{', and '.join(what)}, so a fresh run may give other numbers "
                    f"(remove {mdir} to measure it again)"
                )
            else:
                self.on_event(f"{label}: done earlier, reusing its results")
            return record
        if status == "changed":
            self.on_event(f"{label}: its configuration changed, recomputing")
            shutil.rmtree(mdir)
        elif status == "damaged":
            rel, why = damaged[0]
            more = f" (and {len(damaged) - 1} more damaged file(s))" if len(damaged) > 1 else ""
            self.on_event(
                f"{label}: {describe_damage(self.run_dir / rel, why)}{more}: recomputing the model"
            )
            self.model_folders.discard_damaged(mdir, damaged)
        return None

    def _start_model(self, mc: ModelConfig) -> ModelJob:
        """The model folder, the untrained model and the protocols it is measured on."""
        label = mc.display_name
        mdir = self.model_folders.folder(label)
        mdir.mkdir(parents=True, exist_ok=True)
        (mdir / "FAILED.json").unlink(missing_ok=True)
        template = create_model(mc.name, mc.params)
        protocols, skipped = self.protocols_for(mc, template)
        for plabel, why in skipped.items():
            self.on_event(f"{label}: not run on {plabel} ({why})")
        first_stage = self.is_first_stage(label)
        if not protocols and not first_stage:
            raise ConfigError(f"model {label!r} fits none of the experiment's protocols: {skipped}")
        refit = self.config.evaluation.refit if mc.refit is None else mc.refit
        return ModelJob(
            mc=mc,
            label=label,
            mdir=mdir,
            template=template,
            protocols=protocols,
            skipped=skipped,
            budget_users=mc.max_eval_users or self.config.evaluation.max_eval_users,
            first_stage=first_stage,
            has_valid=len(self.split.valid) > 0,
            refit=refit,
            tune_proto=protocols[0] if protocols else ProtocolConfig(kind="full"),
        )

    # the tuning stage (`recarena.experiment.tuning.Validation`) and the refit stage
    # (`recarena.experiment.fitting.FinalFit`), made at each call: they call back the
    # runner's hooks (``validation_score``, ``_save_fitted``, ...) as they are then
    def _validation(self) -> Validation:
        """The tuning stage, given what it needs of this run."""
        return Validation(
            config=self.config,
            valid=self.split.valid,
            training_data=lambda: self.training_data("valid"),
            score=self.validation_score,
            on_event=self._event,
        )

    def _final_fit(self) -> FinalFit:
        """The refit stage, given what it needs of this run."""
        return FinalFit(
            config=self.config,
            split=self.split,
            training_data=self.training_data,
            load_fitted=self.model_folders.load_fitted,
            save_fitted=self._save_fitted,
            save_first_stage=self._save_first_stage_candidates,
            on_event=self._event,
            save_min_seconds=self.fitted_save_min_seconds,
            save_max_parameters=self.fitted_save_max_parameters,
        )

    def pending_trials(self, mc: ModelConfig) -> list[int]:
        """The grid points (indices) of the model's validation that no saved trial in
        ``tuning.json`` covers: what `run_trial` has left to run (none when the model is
        not tuned). Creates the model folder, like a run of the model."""
        job = self._start_model(mc)
        validation = self._validation()
        return validation.pending(job, validation.plan(job))

    def run_trial(self, mc: ModelConfig, index: int) -> dict[str, Any]:
        """Fit and measure one validation trial, grid point ``index``, as `run_model` does
        (the record it saves in ``tuning.json``; nothing is written here but the
        checkpoints of a long training)."""
        job = self._start_model(mc)
        validation = self._validation()
        return validation.run_trial(job, validation.plan(job), index)

    def _tune(self, job: ModelJob) -> Tuning:
        """Validation: the grid (or early stopping) on train -> valid, resuming the trials
        saved in ``tuning.json``; without validation, the parameters as given
        (`tuning.Validation.tune`)."""
        validation = self._validation()
        return validation.tune(job, validation.plan(job))

    def _fit_final(self, job: ModelJob, tuning: Tuning, mem: PeakMemory) -> Fitted:
        """The model that is tested: refit on train + valid, or the validation model with
        the validation interactions in its histories; a run stopped after this fit (while
        ranking or writing the lists) resumes from the fitted model saved here
        (`fitting.FinalFit.fit`)."""
        return self._final_fit().fit(job, tuning, mem)

    def _measure_protocols(self, job: ModelJob, fitted: Fitted) -> Measured:
        """Rank the test users of every protocol (the first stage's candidates first) and
        measure the lists (`measuring.measure_protocol`, `impressions.measure_impressions`;
        written by `artifacts.write_measurement`); throughput and latency on the first
        ranking protocol (`cost.latency_ms`)."""
        label, final = job.label, fitted.model
        exclude = self.split.seen_csr("test")
        measured = Measured(
            test_users=sample_users(
                self.split.eval_users("test"), job.budget_users, self.config.seed
            )
        )
        test_users = measured.test_users
        if job.first_stage:
            # the first stage's top-N for every test user, whatever this model's own budget
            check_first_stage(label, final)
            top_n = first_stage_top_n(self.config, label)
            self.on_event(f"{label}: top-{top_n} candidates for re-rankers")
            lists = first_stage_lists(self.config, label, final, self.split, "test", exclude)
            self._save_first_stage_candidates(label, "test", lists)
        for proto in job.protocols:
            out_dir = job.mdir / proto.label
            if proto.kind == "impressions":
                self.on_event(f"{label}: impressions: scoring the test impression logs")
                sample = None if job.budget_users is None else test_users
                measurement = measure_impressions(
                    final,
                    impression_rows(self.dataset, "test", sample),
                    held_out(self.split, self.dataset, "test", self.item_features),
                    fitted.data,
                    self.config.evaluation,
                    self.config.seed,
                )
                write_measurement(out_dir, measurement)
                measured.results[proto.label] = measurement.record
                continue
            self.on_event(f"{label}: {proto.label}: ranking {len(test_users)} test users")
            with Stopwatch() as sw:
                lists = self._lists(final, proto, "test", test_users, exclude, self.k_max)
            if measured.throughput is None:
                measured.throughput = len(test_users) / max(sw.seconds, 1e-9)
                measured.latency = latency_ms(
                    lambda user, proto=proto: self._lists(
                        final, proto, "test", user, exclude, self.k_max
                    ),
                    test_users,
                    self.config.evaluation.latency_users,
                    self.config.seed,
                )
            lists.save(out_dir / "lists.npz")
            measurement = measure_protocol(
                final,
                proto,
                lists,
                held_out(self.split, self.dataset, "test", self.item_features),
                fitted.data,
                self.config.evaluation,
                candidates=self.candidates_for(proto, "test"),
                seed=self.config.seed,
            )
            write_measurement(out_dir, measurement)
            measured.results[proto.label] = measurement.record
            _faults.point("model:measured")
        return measured

    @staticmethod
    def _cost(
        tuning: Tuning, fitted: Fitted, measured: Measured, mem: PeakMemory
    ) -> dict[str, Any]:
        """``cost.json``'s record (`recarena.experiment.cost.cost_record`)."""
        return cost_record(tuning, fitted, measured, mem)

    def _record_done(
        self,
        job: ModelJob,
        tuning: Tuning,
        fitted: Fitted,
        measured: Measured,
        cost: dict[str, Any],
    ) -> dict[str, Any]:
        """Write ``cost.json``, the learning curve and, last, ``DONE.json``; remove the
        checkpoints (`ModelFolders.record_done`)."""
        all_test_users = len(self.split.eval_users("test"))
        return self.model_folders.record_done(job, tuning, fitted, measured, cost, all_test_users)

    # -------------------------------------------------------------- checks before a run
    def _models_to_run(self) -> list[ModelConfig]:
        """The models without a ``DONE.json`` of their current configuration (all of them
        when the run starts over)."""
        return [
            mc
            for mc in self.model_configs()
            if self._overwrite or not self.model_folders.finished(mc)
        ]

    def model_configs(self) -> list[ModelConfig]:
        """The configuration of every run: a ``[[models]]`` entry's, or one per seed of it
        (`recarena.experiment.seeds`)."""
        return [run.config for run in self.runs.values()]

    def check_config(self) -> None:
        """Stop before any work when the experiment cannot run as it is written.

        Everything that can be told without the data is checked, and one `ConfigError`
        lists every problem (`config_problems`). Nothing is read but the run folder's
        ``DONE.json`` files (finished models are not checked again); nothing is written.
        """
        problems = self.config_problems()
        if problems:
            raise ConfigError(
                "the experiment cannot run as it is configured; nothing was run:\n"
                + "\n".join(problems)
            )

    def config_problems(self) -> list[str]:
        """What is wrong with the experiment's models still to run, told without its data
        (`recarena.experiment.preflight.config_problems`)."""
        return preflight.config_problems(self.config, self._models_to_run())

    def check_model_parameters(self) -> None:
        """Stop before any work when a model's parameters or grid hold a value it cannot use.

        The error lists every problem `model_parameter_problems` finds. `check_config`
        makes this check with the others.
        """
        problems = self.model_parameter_problems(self._models_to_run())
        if problems:
            raise ConfigError(
                "the experiment gives models parameter values they cannot use; nothing was "
                "run:\n" + "\n".join(problems)
            )

    def model_parameter_problems(self, models: list[ModelConfig]) -> list[str]:
        """`recarena.experiment.preflight.model_parameter_problems` of ``models``."""
        return preflight.model_parameter_problems(self.config, models)

    def check_language_models(self) -> None:
        """Stop before any work when a language model the experiment names is not here.

        The error lists every missing model of the models still to run
        (`recarena.experiment.preflight.language_model_problems`) with the command that
        fetches it, so a long experiment does not fail at its fifth model, and nothing is
        fetched silently mid-run.
        """
        from recarena.errors import ModelNotAvailableError

        problems = preflight.language_model_problems(self._models_to_run(), self.cache_dir)
        if problems:
            raise ModelNotAvailableError(
                "the experiment names language models that are not available here; "
                "nothing was run:\n" + "\n".join(problems)
            )

    def run(self, *, overwrite: bool = False) -> RunResult:
        """Check the experiment, hold the run folder, run every model, write the summaries.

        Parameters
        ----------
        overwrite
            Delete what the run folder holds (once its lock is held) instead of resuming.

        Raises
        ------
        recarena.errors.ConfigError, recarena.errors.ModelNotAvailableError
            The experiment cannot run as configured (`check_config`) or names a language
            model that is not here; raised before anything is read or written.
        recarena.errors.RunLockedError
            Another live process holds the run folder (a run in progress there).
        recarena.errors.RunDirectoryError
            The run folder cannot be created or written.
        """
        self._overwrite = overwrite
        try:
            # the config's own mistakes first: they are fixed in the file being edited
            self.check_config()
            self.check_language_models()
        finally:
            self._overwrite = False
        with RunLock(self.run_dir, purpose="run", on_event=self.on_event):
            # with the lock held, nobody else writes here: what a killed writer left can go
            if overwrite:
                self.run_folder.clear(keep=LOCK_FILE)
            else:
                self.run_folder.remove_leftovers()
            with progress_bars(self.progress):
                return self._run_models()

    def _run_models(self) -> RunResult:
        """Data, split, every model (first stages first), summaries: the lock is held."""
        self.prepare()
        # a recomputed split has dropped the first stages' candidate files: check again
        self.model_folders.done_checks.clear()
        failed: dict[str, str] = {}

        def record_failure(label: str, error: str, trace: str | None) -> None:
            mdir = self.model_folders.folder(label)
            failed[label] = error
            mdir.mkdir(parents=True, exist_ok=True)
            if trace is None:
                write_json(mdir / "FAILED.json", {"error": error})
                self.on_event(f"{label}: FAILED: {error}")
            else:
                write_json(mdir / "FAILED.json", {"error": error, "traceback": trace})
                self.on_event(f"{label}: FAILED: {error} (traceback in {mdir / 'FAILED.json'})")

        order = sorted(self.model_configs(), key=lambda m: not self.is_first_stage(m.display_name))
        if self.config.execution.executor == "ray":
            from recarena.experiment.distributed import run_on_ray

            run_on_ray(self, order, record_failure)
        else:
            for mc in order:
                try:
                    self.run_model(mc)
                except KeyboardInterrupt:
                    raise
                except RecArenaError as exc:
                    record_failure(mc.display_name, str(exc), None)
                except Exception as exc:  # a model bug must not lose the others' results
                    record_failure(
                        mc.display_name, f"{type(exc).__name__}: {exc}", traceback.format_exc()
                    )
        from recarena.summary import write_summaries

        summary = write_summaries(
            self.run_dir, self.config.evaluation, fairness=self.config.fairness
        )
        _faults.point("run:summarised")
        return RunResult(self.run_dir, summary, failed)


def run_experiment(
    config: ExperimentConfig | str | os.PathLike[str],
    *,
    output_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    on_event: Callable[[str], None] | None = None,
) -> RunResult | SplitRunResult:
    """Run an experiment (a config object or the path of a TOML file).

    With ``split_seeds``, the experiment runs once per split seed, each in a run folder of
    its own inside the run directory, and a `recarena.experiment.split_seeds.SplitRunResult`
    is returned (its ``run_dir``, ``summary`` and ``failed`` as here, ``runs`` per seed).

    Re-running into the same run directory resumes: models with a ``DONE.json`` are reused.
    ``overwrite`` empties the run directory first (once its lock is held, so never under a
    run in progress). The experiment is checked before anything is read or written, and
    the run directory is locked while the run lasts (`ExperimentRunner.run`).
    """
    from recarena.config import load_config
    from recarena.experiment.split_seeds import check_split_parent, run_split_seeds

    if not isinstance(config, ExperimentConfig):
        config = load_config(config)
    run_dir = run_directory_for(config, output_dir)
    cache = resolve_cache_dir(cache_dir if cache_dir is not None else config.cache_dir)
    if config.split_seeds is not None:
        return run_split_seeds(
            config, run_dir, cache, overwrite=overwrite, progress=progress, on_event=on_event
        )
    check_split_parent(run_dir, config, overwrite)
    runner = ExperimentRunner(config, run_dir, cache, progress=progress, on_event=on_event)
    return runner.run(overwrite=overwrite)
