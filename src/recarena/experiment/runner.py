"""Running an experiment: data -> split -> for each model: tune, fit, recommend, measure.

Stability: **stable** for `run_experiment`, `RunResult` and the run directory layout below.

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

import contextlib
import json
import logging
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recarena import _faults
from recarena._artifacts import (
    describe_damage,
    file_checksums,
    find_damage,
    folder_files,
    json_or_damage,
    load_npz_artifact,
    read_errors,
    unreadable,
)
from recarena._io import jsonable, read_json, remove_stale_temporaries, write_json, write_text
from recarena._rundir import LOCK_FILE, RunLock
from recarena.cache import resolve_cache_dir
from recarena.config import ExperimentConfig, ModelConfig, ProtocolConfig, dump_config
from recarena.cost import PeakMemory, Stopwatch
from recarena.data.dataset import Dataset
from recarena.errors import ArtifactError, ConfigError, DamagedArtifactError, RecArenaError
from recarena.experiment import preflight
from recarena.experiment.artifacts import (
    FIRST_STAGE_PREFIX,
    MODEL_FOLDER_EXCLUDE,
    STAGE_FILE,
    _hash,
    _status,
    data_hash,
    model_hash,
    run_directory_for,
    setup_hash,
    write_measurement,
)
from recarena.experiment.impressions import impression_rows, impression_table, measure_impressions
from recarena.experiment.measuring import (
    HeldOut,
    measure_lists,
    pointwise_metrics,
)
from recarena.experiment.protocols import (
    build_split,
    is_first_stage,
    item_text_template,
    protocols_for,
    sample_users,
)
from recarena.experiment.seeds import seed_runs
from recarena.experiment.tuning import (
    grid_points,
    parameter_problems,
    parameters_added_since,
    params_key,
    saved_trials,
    trial_key,
)
from recarena.models.base import STALE_HISTORY_REASONS, Recommender, TrainingData
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


@dataclass
class _ModelJob:
    """One model's run: its entry, folder, untrained model and protocols."""

    mc: ModelConfig
    label: str
    mdir: Path
    template: Recommender
    protocols: list[ProtocolConfig]
    skipped: dict[str, str]
    budget_users: int | None
    first_stage: bool
    has_valid: bool
    refit: bool
    #: the protocol validation is measured on
    tune_proto: ProtocolConfig

    @property
    def checkpoints(self) -> Path:
        return self.mdir / "checkpoints"


@dataclass
class _Tuning:
    """What validation chose: the parameters, the trials and their time."""

    needs_validation: bool
    trials: list[dict[str, Any]]
    seconds: float
    chosen: dict[str, Any] = field(default_factory=dict)
    #: what the chosen trial's fit learned for the refit (SASRec: its best epoch)
    refit_extra: dict[str, Any] = field(default_factory=dict)
    #: the chosen trial's model when it is still in memory
    best_model: Recommender | None = None


@dataclass
class _Fitted:
    """The model that is tested, and how it came to be."""

    model: Recommender
    #: the training data of the test stage (train + valid)
    data: TrainingData
    refitted: bool
    fit_seconds: float
    history_refreshed: bool | None


@dataclass
class _Measured:
    """Every protocol's metrics, and the speed of the first ranking."""

    test_users: np.ndarray
    results: dict[str, Any] = field(default_factory=dict)
    throughput: float | None = None
    latency: tuple[float, float] | None = None


def _remove_entries(folder: Path, keep: Callable[[Path], bool]) -> None:
    """Delete every file and folder in ``folder`` for which ``keep`` is false (a link is
    removed, never followed)."""
    for entry in folder.iterdir():
        if keep(entry):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


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
        # the checksums of the dataset/split files verified by `_reusable_stage`
        self._stage_checksums: dict[Path, dict[str, str] | None] = {}
        # label -> (DONE.json's mtime, size, inode) and what `done_status` found
        self._done_checks: dict[str, tuple[tuple[int, int, int], Any]] = {}

    # -------------------------------------------------------------- setup
    def prepare(self) -> None:
        """Load (or reuse) the data set and the split, and write the run's set-up files.

        `run` calls it with the run folder's lock held.
        """
        from recarena.data import load_dataset
        from recarena.environment import collect_environment

        cfg = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        state_path = self.run_dir / "run.json"
        digest = setup_hash(cfg)
        # run.json is written once the data and the split are saved: it vouches for them
        vouched = state_path.exists()
        if vouched:
            state, damage = json_or_damage(state_path)
            if damage is not None:
                self._recover_run_state(state_path, damage, digest)
            elif not isinstance(state, dict) or state.get("setup_hash") != digest:
                raise ArtifactError(
                    f"{self.run_dir} holds a run with a different data/split/evaluation setup; "
                    "choose another output folder (--output-dir) or start over (--overwrite)"
                )
        write_text(self.run_dir / "config.toml", dump_config(cfg))
        write_json(self.run_dir / "environment.json", collect_environment())

        dataset_dir = self.run_dir / "dataset"
        dataset_digest = data_hash(cfg)
        reuse_dataset = self._reusable_stage(
            dataset_dir, "dataset.json", "data", dataset_digest, vouched
        )
        if reuse_dataset:
            self.on_event(f"data: reusing {dataset_dir}")
            loaded = self._load_stage(dataset_dir, "data", Dataset.load)
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
        self._stamp_stage(
            dataset_dir, "dataset", dataset_digest, {"data": dump["data"]}, reuse_dataset
        )
        ds = self.dataset
        self.on_event(
            f"data: {ds.n_users} users, {ds.n_items} items, {ds.n_interactions} interactions"
        )

        split_dir = self.run_dir / "split"
        split = None
        if reuse_dataset and self._reusable_stage(
            split_dir, "split.json", "split", digest, vouched
        ):
            split = self._load_stage(split_dir, "split", Split.load)
        reuse_split = split is not None
        if split is None:
            # a split of another data set is never reused, whatever its stamp says
            shutil.rmtree(split_dir, ignore_errors=True)
            split = build_split(cfg, ds)
            split.save(split_dir)
            _faults.point("split:saved")
        self.split = split
        self._stamp_stage(
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

    def _remove_leftovers(self) -> None:
        """Remove the temporary files that writers killed mid-write left in the run folder.

        Only with the folder's lock held: no other run is writing there.
        """
        from recarena.experiment.distributed import remove_task_leftovers

        removed = remove_stale_temporaries(self.run_dir) + remove_task_leftovers(self.run_dir)
        if removed:
            names = ", ".join(str(p.relative_to(self.run_dir)) for p in removed[:5])
            more = f" and {len(removed) - 5} more" if len(removed) > 5 else ""
            self.on_event(
                f"removed {len(removed)} temporary file(s) an interrupted run left: {names}{more}"
            )

    def _clear_run_dir(self) -> None:
        """Delete everything the run folder holds but its lock file (``overwrite``)."""
        _remove_entries(self.run_dir, keep=lambda entry: entry.name == LOCK_FILE)

    def _reusable_stage(
        self, folder: Path, marker: str, what: str, digest: str, vouched: bool
    ) -> bool:
        """True when ``folder`` holds a complete, undamaged stage made by this configuration.

        ``marker`` is the file the stage writes last. The stage's ``stage.json`` must carry
        ``digest``, and every file whose checksum it records must still have it; a folder
        saved before stamps existed is trusted only when ``run.json`` (written after the
        data and the split) vouches for it, and one stamped before stamps held checksums is
        trusted as it is. A folder that does not pass is deleted, with a message naming the
        reason (a damaged file by name), so that the stage is recomputed.
        """
        if not folder.exists():
            return False
        stamp_path = folder / STAGE_FILE
        stamp, why = None, None
        if stamp_path.exists():
            stamp, damage = json_or_damage(stamp_path)
            if damage is not None or not isinstance(stamp, dict):
                stamp = None
                why = describe_damage(stamp_path, damage or "not a JSON object")
        if why is None and (folder / marker).exists():
            if stamp is not None and stamp.get("config_hash") == digest:
                recorded = stamp.get("files")
                damaged = find_damage(folder, recorded or {}, f"{folder.name}/{STAGE_FILE}")
                if not damaged:
                    self._stage_checksums[folder] = dict(recorded) if recorded else None
                    return True
                why = describe_damage(folder / damaged[0][0], damaged[0][1])
            elif not stamp_path.exists() and vouched:
                self._stage_checksums[folder] = None
                return True
        if why is None:
            why = f"{folder} " + (
                f"was made by another {what} configuration"
                if stamp_path.exists()
                else "has no record of the configuration that made it (an interrupted run)"
            )
        self.on_event(f"{what}: {why}: recomputing it")
        shutil.rmtree(folder)
        return False

    def _load_stage(self, folder: Path, what: str, load: Callable[[Path], Any]) -> Any:
        """``load(folder)``, or None (the folder deleted, with a message) when it cannot be
        read: a folder written before stages recorded checksums may hold a damaged file."""
        try:
            return load(folder)
        except read_errors() as exc:
            damaged = [(p, why) for p in folder_files(folder) if (why := unreadable(p))]
            if damaged:
                why = describe_damage(*damaged[0])
            else:
                detail = " ".join(str(exc).split()) or type(exc).__name__
                why = f"{folder} cannot be read ({type(exc).__name__}: {detail})"
            self.on_event(f"{what}: {why}: recomputing it")
            shutil.rmtree(folder, ignore_errors=True)
            return None

    def _recover_run_state(self, state_path: Path, damage: str, digest: str) -> None:
        """Go on past a damaged ``run.json`` when the split's stamp vouches for the setup.

        ``run.json`` holds the setup hash a resumed run must match. The split's
        ``stage.json`` records the same hash (both are written by one set-up), so when it
        is intact and matches, the folder holds this setup and ``run.json`` is rewritten at
        the end of `prepare`. Otherwise the setup that made the folder cannot be told.
        """
        stamp_path = self.run_dir / "split" / STAGE_FILE
        stamp, stamp_damage = (None, "missing")
        if stamp_path.exists():
            stamp, stamp_damage = json_or_damage(stamp_path)
        if stamp_damage is None and isinstance(stamp, dict) and stamp.get("config_hash") == digest:
            self.on_event(
                f"{state_path} is damaged ({damage}); {stamp_path} records this setup: rewriting it"
            )
            return
        raise DamagedArtifactError(
            f"{state_path} is damaged ({damage}): it records the setup that made the run "
            f"folder, and {stamp_path} does not record this experiment's either, so the folder "
            "cannot be resumed; start over (--overwrite) or choose another output folder "
            "(--output-dir)",
            path=state_path,
            reason=damage,
        )

    def _stamp_stage(
        self, folder: Path, stage: str, digest: str, settings: dict[str, Any], reused: bool
    ) -> None:
        """Write ``stage.json``: the hash (and the settings) of the configuration behind it,
        and the sha256 of every file the stage wrote (the checksums verified when it was
        ``reused``, else those of the files just written)."""
        files = self._stage_checksums.get(folder) if reused else None
        if files is None:
            # the first-stage candidates in split/ are a model's: its DONE.json records them
            paths = [
                p
                for p in folder_files(folder, exclude=(STAGE_FILE,))
                if not p.name.startswith(FIRST_STAGE_PREFIX)
            ]
            files = file_checksums(folder, paths)
        write_json(
            folder / STAGE_FILE,
            {"stage": stage, "config_hash": digest, "settings": settings, "files": files},
        )

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

    # -------------------------------------------------------------- candidates
    def candidates_for(self, proto: ProtocolConfig, stage: str) -> CandidateSet | None:
        if proto.kind == "sampled":
            return self.split.candidates.get(f"{proto.label}:{stage}")
        if proto.kind == "first_stage":
            path = self._first_stage_path(proto, stage)
            if path.exists():
                z = load_npz_artifact(path)
                return CandidateSet(z["users"], z["items"], str(z["kind"]), str(z["description"]))
            return None
        return None

    def _save_first_stage_candidates(self, label: str, stage: str, lists: RankedLists) -> None:
        for proto in self.config.evaluation.protocols:
            if proto.kind == "first_stage" and proto.first_stage == label:
                items = lists.items[:, : proto.top_n]
                cand = CandidateSet(lists.users, items, "first_stage", proto.description)
                cand.save(self._first_stage_path(proto, stage))

    def _first_stage_path(self, proto: ProtocolConfig, stage: str) -> Path:
        return self.run_dir / "split" / f"{FIRST_STAGE_PREFIX}{proto.label}__{stage}.npz"

    # -------------------------------------------------------------- one model
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
        pool = self.split.item_pool.get(stage)
        if proto.kind == "full":
            return model.recommend(users, k, exclude=exclude, item_pool=pool, seed=self.config.seed)
        cand = self.candidates_for(proto, stage)
        if cand is None:
            raise ArtifactError(f"no {proto.label} candidates for stage {stage!r}")
        rows = np.searchsorted(cand.users, users)
        if not np.array_equal(cand.users[np.minimum(rows, len(cand.users) - 1)], users):
            raise ArtifactError(f"{proto.label} candidates do not cover every {stage} user")
        return model.recommend(
            users,
            k,
            candidates=cand.items[rows],
            exclude=exclude,
            item_pool=pool,
            seed=self.config.seed,
        )

    def validation_score(self, model: Recommender, proto: ProtocolConfig) -> float:
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
            self.split.eval_users("valid"), self.config.evaluation.max_eval_users, self.config.seed
        )
        lists = self._lists(model, proto, "valid", users, self.split.seen_csr("valid"), k_val)
        frame = ranking_metrics(lists, self.split.truth_csr("valid"), [k_val], [name])
        return float(frame[f"{name}@{k_val}"].mean())

    def _finished(self, mc: ModelConfig) -> bool:
        """The model has a ``DONE.json`` written for its current configuration, and the
        files it records are undamaged (`done_status`)."""
        return self.done_status(mc)[0] == "done"

    def done_status(self, mc: ModelConfig) -> tuple[str, list[tuple[str, str]]]:
        """Whether the model finished earlier, and whether what it left can be reused.

        Returns
        -------
        tuple of (str, list of (str, str))
            ``"done"`` (reuse it), ``"absent"`` (no ``DONE.json``), ``"changed"`` (made
            by another configuration of the model) or ``"damaged"``, with the damaged files
            (path relative to the run folder, what is wrong). ``DONE.json`` records the
            sha256 of every file the model wrote (``artifacts``); a ``DONE.json`` written
            before it did is trusted as before, its files only checked for being readable
            (`recarena._artifacts.unreadable`). Each check is made once per ``DONE.json``.
        """
        done = self.run_dir / "models" / mc.display_name / "DONE.json"
        try:
            st = done.stat()
        except OSError:  # not there, or the run folder is not a folder (said when locking)
            return "absent", []
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = self._done_checks.get(mc.display_name)
        if cached is None or cached[0] != key:
            cached = (key, self._check_done(mc, done))
            self._done_checks[mc.display_name] = cached
        return cached[1]

    def _check_done(self, mc: ModelConfig, done: Path) -> tuple[str, list[tuple[str, str]]]:
        rel = done.relative_to(self.run_dir).as_posix()
        record, damage = json_or_damage(done)
        if damage is not None or not isinstance(record, dict):
            return "damaged", [(rel, damage or "not a JSON object")]
        if record.get("model_hash") != model_hash(mc):
            return "changed", []
        recorded = record.get("artifacts")
        if isinstance(recorded, dict):
            return _status(find_damage(self.run_dir, recorded, rel))
        # written before DONE.json recorded checksums: trusted, if its files can be read
        # (and a first stage's test candidates are there: a recomputed split drops them)
        paths = folder_files(done.parent, exclude=MODEL_FOLDER_EXCLUDE, recursive=True)
        paths += self._first_stage_files(mc.display_name, required=("test",))
        found = [(p.relative_to(self.run_dir).as_posix(), unreadable(p)) for p in paths]
        return _status([(p, why) for p, why in found if why is not None])

    def _first_stage_files(self, label: str, required: tuple[str, ...] = ()) -> list[Path]:
        """The candidate files ``label`` wrote as the first stage of some protocol (those
        of the ``required`` stages whether they exist or not)."""
        return [
            path
            for proto in self.config.evaluation.protocols
            if proto.kind == "first_stage" and proto.first_stage == label
            for stage in ("valid", "test")
            if (path := self._first_stage_path(proto, stage)).exists() or stage in required
        ]

    def _model_artifacts(self, label: str, mdir: Path) -> dict[str, str]:
        """``{path relative to the run folder: sha256}`` of every file the model wrote."""
        paths = folder_files(mdir, exclude=MODEL_FOLDER_EXCLUDE, recursive=True)
        return file_checksums(self.run_dir, paths + self._first_stage_files(label))

    def _discard_damaged_model(self, mdir: Path, damaged: list[tuple[str, str]]) -> None:
        """Delete what a damaged model left but its validation trials, when they are intact.

        Each saved trial carries the key it is reused under (`_saved_trials`), so an intact
        ``tuning.json`` spares the grid search; it goes too when it is one of the damaged.
        """
        names = {self.run_dir / rel for rel, _ in damaged}
        keep = mdir / "tuning.json"
        if keep in names or (keep.exists() and unreadable(keep) is not None):
            keep = None
        # first: a report reading the folder meanwhile must not see a DONE.json without files
        (mdir / "DONE.json").unlink(missing_ok=True)
        _remove_entries(mdir, keep=lambda entry: entry == keep)

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
        """Save the final model before its lists are ranked (`_load_fitted` reads it back).

        It lives under the model's ``checkpoints/``, which goes once ``DONE.json`` is
        written. A model that cannot be saved is fitted again after a stop, and says so.
        """
        tmp = folder.with_name(f".{folder.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            with _quiet_library_progress():
                model.save(tmp)
            write_json(
                tmp / "fitted.json",
                {
                    "key": key,
                    "fit_seconds": fit_seconds,
                    "history_refreshed": history_refreshed,
                    "peak_bytes": int(peak_bytes),
                },
            )
        except Exception as exc:  # noqa: BLE001 - saving is a convenience, never a failure
            shutil.rmtree(tmp, ignore_errors=True)
            self.on_event(
                f"{label}: could not save the fitted model ({type(exc).__name__}: {exc}); "
                "a stopped run fits it again"
            )
            return
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)

    def _load_fitted(
        self, label: str, template: Recommender, folder: Path, key: str
    ) -> tuple[Recommender, dict[str, Any]] | None:
        """The final model saved by a run that stopped before it finished, when it was
        fitted with the current parameters and setup (``key``); else None."""
        record_path = folder / "fitted.json"
        if not record_path.exists():
            return None
        record, damage = json_or_damage(record_path)
        if damage is not None or not isinstance(record, dict) or record.get("key") != key:
            shutil.rmtree(folder, ignore_errors=True)
            return None
        try:
            model = type(template).load(folder)
        except Exception as exc:  # noqa: BLE001 - a model that cannot be read is refitted
            self.on_event(
                f"{label}: the fitted model saved in {folder} cannot be loaded "
                f"({type(exc).__name__}: {exc}): fitting it again"
            )
            shutil.rmtree(folder, ignore_errors=True)
            return None
        self.on_event(f"{label}: reusing the model fitted before the run stopped")
        return model, record

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

    def forget_done_check(self, label: str) -> None:
        """Check ``label``'s ``DONE.json`` again when next asked: its files were written
        from elsewhere (a Ray task's results)."""
        self._done_checks.pop(label, None)

    def reuse_finished(self, mc: ModelConfig) -> dict[str, Any] | None:
        """A finished model's ``DONE.json`` record when it can be reused; else None, after
        clearing what a changed configuration or a damaged file left."""
        label = mc.display_name
        mdir = self.run_dir / "models" / label
        status, damaged = self.done_status(mc)
        if status == "done":
            record = read_json(mdir / "DONE.json")
            added = parameters_added_since(mc, record)
            if added:
                self.on_event(
                    f"{label}: done earlier, reusing its results; it was measured before "
                    f"the parameter(s) {added} existed, so a fresh run may give other numbers "
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
            self._discard_damaged_model(mdir, damaged)
        return None

    def _start_model(self, mc: ModelConfig) -> _ModelJob:
        """The model folder, the untrained model and the protocols it is measured on."""
        label = mc.display_name
        mdir = self.run_dir / "models" / label
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
        return _ModelJob(
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

    def _trial_plan(
        self, job: _ModelJob
    ) -> tuple[dict[str, list[Any]], list[dict[str, Any]], bool, dict[str, str]]:
        """The model's grid, the points tried, whether validation runs, and each point's
        trial key (by `params_key`)."""
        mc, template = job.mc, job.template
        grid, points = self.grid_points(mc, template)
        problems = parameter_problems(mc, template, points)
        if problems:
            raise ConfigError("; ".join(problems))
        needs_validation = job.has_valid and (
            len(points) > 1 or template.uses_validation or job.first_stage or not job.refit
        )
        trial_keys = {
            params_key(params): self.trial_key(mc, params, job.tune_proto)
            for params in ({**mc.params, **point} for point in points)
        }
        return grid, points, needs_validation, trial_keys

    def pending_trials(self, mc: ModelConfig) -> list[int]:
        """The grid points (indices) of the model's validation that no saved trial in
        ``tuning.json`` covers: what `run_trial` has left to run (none when the model is
        not tuned). Creates the model folder, like a run of the model."""
        job = self._start_model(mc)
        _, points, needs_validation, trial_keys = self._trial_plan(job)
        if not needs_validation:
            return []
        saved = saved_trials(job.label, job.mdir / "tuning.json", trial_keys, self.on_event)
        done_keys = {params_key(t["params"]) for t in saved}
        return [
            n
            for n, point in enumerate(points)
            if params_key({**mc.params, **point}) not in done_keys
        ]

    def run_trial(self, mc: ModelConfig, index: int) -> dict[str, Any]:
        """Fit and measure one validation trial, grid point ``index``, as `run_model` does
        (the record it saves in ``tuning.json``; nothing is written here but the
        checkpoints of a long training)."""
        job = self._start_model(mc)
        _, points, _, trial_keys = self._trial_plan(job)
        point = points[index]
        self.on_event(f"{job.label}: validation {index + 1}/{len(points)} {point or ''}".rstrip())
        trial, _ = self._fit_trial(
            job, {**mc.params, **point}, trial_keys, self.training_data("valid")
        )
        return trial

    def _fit_trial(
        self,
        job: _ModelJob,
        params: dict[str, Any],
        trial_keys: dict[str, str],
        train_data: TrainingData,
    ) -> tuple[dict[str, Any], Recommender]:
        """One validation trial: the fit on train, its score on validation, its record."""
        model = job.template.clone(**params)
        # a long training stopped part-way resumes from here on the next run
        train_data.checkpoint_dir = job.checkpoints / f"valid-{_hash(params)}"
        with Stopwatch() as sw:
            model.fit(train_data, valid=self.split.valid)
        score = self.validation_score(model, job.tune_proto)
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

    def _tune(self, job: _ModelJob) -> _Tuning:
        """Validation: the grid (or early stopping) on train -> valid, resuming the trials
        saved in ``tuning.json``; without validation, the parameters as given."""
        mc, label, template = job.mc, job.label, job.template
        grid, points, needs_validation, trial_keys = self._trial_plan(job)
        tuning_path = job.mdir / "tuning.json"
        trials = saved_trials(
            label, tuning_path, trial_keys if needs_validation else {}, self.on_event
        )
        tuning = _Tuning(
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
        train_data = self.training_data("valid")
        for n, point in enumerate(points):
            params = {**mc.params, **point}
            if params_key(params) in done_keys:
                continue
            self.on_event(f"{label}: validation {n + 1}/{len(points)} {point or ''}".rstrip())
            trial, model = self._fit_trial(job, params, trial_keys, train_data)
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

    def _fit_final(self, job: _ModelJob, tuning: _Tuning, mem: PeakMemory) -> _Fitted:
        """The model that is tested: refit on train + valid, or the validation model with
        the validation interactions in its histories; a run stopped after this fit (while
        ranking or writing the lists) resumes from the fitted model saved here."""
        label, template, chosen = job.label, job.template, tuning.chosen
        data_test = self.training_data("test")
        refitted = job.refit or not job.has_valid
        fitted_dir = job.checkpoints / "fitted"
        fitted_key = self.trial_key(
            job.mc, {**chosen, **tuning.refit_extra, "refit": refitted}, job.tune_proto
        )
        resumed = None
        if not job.first_stage:
            resumed = self._load_fitted(label, template, fitted_dir, fitted_key)
        if resumed is not None:
            final, fitted_record = resumed
            mem.peak_bytes = max(mem.peak_bytes, int(fitted_record["peak_bytes"]))
            return _Fitted(
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
                best_model = template.clone(**chosen).fit(valid_data, valid=self.split.valid)
            final = best_model
            fit_seconds = final.fit_seconds_
        if job.first_stage and job.has_valid:
            vmodel = best_model or template.clone(**chosen).fit(
                self.training_data("valid"), valid=self.split.valid
            )
            vlists = vmodel.recommend(
                self.split.eval_users("valid"),
                self._first_stage_top_n(label),
                exclude=self.split.seen_csr("valid"),
                item_pool=self.split.item_pool.get("valid"),
                seed=self.config.seed,
            )
            self._save_first_stage_candidates(label, "valid", vlists)
        # None: refit on the test-time data, so nothing to refresh
        history_refreshed = None
        if not refitted:
            # only now, after any validation lists: the model ranks the test items from
            # histories that hold the validation interactions (the SASRec paper's
            # protocol), with what it learned on train; a model that cannot take them in
            # without training is recorded, and the report names it
            history_refreshed = final.updates_history()
            if history_refreshed:
                final.update_history(data_test)
            else:
                reason = STALE_HISTORY_REASONS.get(final.history_use, final.history_use)
                self.on_event(
                    f"{label}: not refit, and {reason}: it ranks the test items from "
                    "histories without the validation interactions"
                )
        if (
            not job.first_stage
            and not fit_seconds < self.fitted_save_min_seconds  # NaN: unknown, saved
            and final.n_parameters()[0] <= self.fitted_save_max_parameters
        ):
            self._save_fitted(
                label, final, fitted_dir, fitted_key, fit_seconds, history_refreshed, mem.peak_bytes
            )
        return _Fitted(final, data_test, refitted, fit_seconds, history_refreshed)

    def _measure_protocols(self, job: _ModelJob, fitted: _Fitted) -> _Measured:
        """Rank the test users of every protocol (the first stage's candidates first) and
        measure the lists; throughput and latency on the first ranking protocol."""
        label, final = job.label, fitted.model
        exclude = self.split.seen_csr("test")
        measured = _Measured(
            test_users=sample_users(
                self.split.eval_users("test"), job.budget_users, self.config.seed
            )
        )
        test_users = measured.test_users
        if job.first_stage:
            self._first_stage_test_candidates(label, final, exclude)
        for proto in job.protocols:
            if proto.kind == "impressions":
                self.on_event(f"{label}: impressions: scoring the test impression logs")
                sample = None if job.budget_users is None else test_users
                measured.results[proto.label] = self._measure_impressions(
                    final, sample, job.mdir / proto.label, fitted.data
                )
                continue
            self.on_event(f"{label}: {proto.label}: ranking {len(test_users)} test users")
            with Stopwatch() as sw:
                lists = self._lists(final, proto, "test", test_users, exclude, self.k_max)
            if measured.throughput is None:
                measured.throughput = len(test_users) / max(sw.seconds, 1e-9)
                measured.latency = self._latency(final, proto, test_users, exclude)
            measured.results[proto.label] = self._measure(
                final, proto, lists, job.mdir / proto.label, fitted.data
            )
            _faults.point("model:measured")
        return measured

    @staticmethod
    def _cost(
        tuning: _Tuning, fitted: _Fitted, measured: _Measured, mem: PeakMemory
    ) -> dict[str, Any]:
        """``cost.json``: sizes, times, speed and memory, then the model's own record."""
        n_total, n_trainable = fitted.model.n_parameters()
        latency = measured.latency
        return {
            "parameters_total": int(n_total),
            "parameters_trainable": int(n_trainable),
            "fit_seconds": fitted.fit_seconds,
            "tuning_seconds": tuning.seconds,
            "tuning_trials": len(tuning.trials),
            "users_per_second": measured.throughput,
            "latency_ms_p50": latency[0] if latency else None,
            "latency_ms_p95": latency[1] if latency else None,
            "peak_memory_mib": mem.peak_mib,
            "gpu_peak_memory_mib": None
            if mem.gpu_peak_bytes is None
            else mem.gpu_peak_bytes / 2**20,
            **fitted.model.cost_record(),
        }

    def _record_done(
        self,
        job: _ModelJob,
        tuning: _Tuning,
        fitted: _Fitted,
        measured: _Measured,
        cost: dict[str, Any],
    ) -> dict[str, Any]:
        """Write ``cost.json``, the learning curve and, last, ``DONE.json``; remove the
        checkpoints."""
        mc, label, mdir, final = job.mc, job.label, job.mdir, fitted.model
        write_json(mdir / "cost.json", cost)
        if log := final.training_log():
            write_json(mdir / "training_log.json", log)
        all_test_users = len(self.split.eval_users("test"))
        record = {
            "label": label,
            "model": mc.name,
            "model_hash": model_hash(mc),
            # the [[models]] entry, so that a report can name what differs from config.toml
            "model_config": mc.model_dump(mode="json", exclude_none=True),
            "family": job.template.family,
            "fusion": job.template.fusion,
            "class": f"{type(job.template).__module__}:{type(job.template).__qualname__}",
            "params": jsonable(final.get_params()),
            "chosen_on_validation": tuning.needs_validation,
            "refit": bool(fitted.refitted),
            "history_use": type(final).history_use,
            # False: not refit and unable to read the validation interactions (stale)
            "history_refreshed": fitted.history_refreshed,
            # the model's [[models]] label and the seeds asked for (absent without seeds)
            **self._seed_record(label),
            "protocols": list(measured.results),
            "skipped_protocols": job.skipped,
            "evaluated_users": int(len(measured.test_users)),
            "all_test_users": int(all_test_users),
            "user_sample": job.budget_users is not None
            and len(measured.test_users) < all_test_users,
            "cost": cost,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            # verified before the model is reused (done_status) or reported
            "artifacts": self._model_artifacts(label, mdir),
        }
        write_json(mdir / "DONE.json", record)
        _faults.point("model:done")
        shutil.rmtree(job.checkpoints, ignore_errors=True)
        return record

    def _seed_record(self, label: str) -> dict[str, Any]:
        run = self.runs.get(label)
        record = None if run is None else run.record()
        return {} if record is None else {"training_seeds": record}

    def _first_stage_top_n(self, label: str) -> int:
        return max(
            p.top_n
            for p in self.config.evaluation.protocols
            if p.kind == "first_stage" and p.first_stage == label
        )

    def _first_stage_test_candidates(
        self, label: str, model: Recommender, exclude: sp.csr_matrix
    ) -> None:
        """The first stage's top-N for every test user, whatever this model's own budget."""
        if not model.scores_full_catalog:
            raise ConfigError(
                f"model {label!r} cannot score the full catalog, so it cannot be a first stage"
            )
        self.on_event(f"{label}: top-{self._first_stage_top_n(label)} candidates for re-rankers")
        lists = model.recommend(
            self.split.eval_users("test"),
            self._first_stage_top_n(label),
            exclude=exclude,
            item_pool=self.split.item_pool.get("test"),
            seed=self.config.seed,
        )
        self._save_first_stage_candidates(label, "test", lists)

    def _latency(
        self, model: Recommender, proto: ProtocolConfig, users: np.ndarray, exclude: sp.csr_matrix
    ) -> tuple[float, float] | None:
        n = self.config.evaluation.latency_users
        if n == 0 or len(users) == 0:
            return None
        sample = sample_users(users, n, self.config.seed + 1)
        times = []
        for u in sample:
            start = time.perf_counter()
            self._lists(model, proto, "test", np.array([u]), exclude, self.k_max)
            times.append((time.perf_counter() - start) * 1000)
        return float(np.percentile(times, 50)), float(np.percentile(times, 95))

    # -------------------------------------------------------------- measuring
    def _held_out(self, stage: str) -> HeldOut:
        return HeldOut(
            truth=self.split.truth_csr(stage),
            fit_interactions=self.split.fit_interactions(stage),  # type: ignore[arg-type]
            n_users=self.dataset.n_users,
            n_items=self.dataset.n_items,
            cold_items=self.split.cold_items,
            item_features=self.item_features,
        )

    def _measure(
        self,
        model: Recommender,
        proto: ProtocolConfig,
        lists: RankedLists,
        out_dir: Path,
        data: TrainingData,
    ) -> dict[str, Any]:
        """Measure a protocol's test lists (`measure_lists`) and write them and the result."""
        lists.save(out_dir / "lists.npz")
        held_out = self._held_out("test")
        pointwise = None
        if proto.kind != "full":
            candidates = self.candidates_for(proto, "test")
            pointwise = pointwise_metrics(
                model, lists, candidates, held_out.truth, self.config.seed
            )
        measurement = measure_lists(
            lists, proto, held_out, data, self.config.evaluation, pointwise=pointwise
        )
        write_measurement(out_dir, measurement)
        return measurement.record

    def _measure_impressions(
        self, model: Recommender, users: np.ndarray | None, out_dir: Path, data: TrainingData
    ) -> dict[str, Any]:
        measurement = measure_impressions(
            model,
            impression_rows(self.dataset, "test", users),
            self._held_out("test"),
            data,
            self.config.evaluation,
            self.config.seed,
        )
        write_measurement(out_dir, measurement)
        return measurement.record

    # -------------------------------------------------------------- all models
    # -------------------------------------------------------------- checks before a run
    def _models_to_run(self) -> list[ModelConfig]:
        """The models without a ``DONE.json`` of their current configuration (all of them
        when the run starts over)."""
        return [mc for mc in self.model_configs() if self._overwrite or not self._finished(mc)]

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
                self._clear_run_dir()
            else:
                self._remove_leftovers()
            return self._run_models()

    def _run_models(self) -> RunResult:
        """Data, split, every model (first stages first), summaries: the lock is held."""
        self.prepare()
        # a recomputed split has dropped the first stages' candidate files: check again
        self._done_checks.clear()
        failed: dict[str, str] = {}

        def record_failure(label: str, error: str, trace: str | None) -> None:
            mdir = self.run_dir / "models" / label
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


@contextlib.contextmanager
def _quiet_library_progress() -> Iterator[None]:
    """No transformers progress bars ("Writing model shards") while a model is saved."""
    hf_logging = sys.modules.get("transformers.utils.logging")
    if hf_logging is None or not hf_logging.is_progress_bar_enabled():
        yield
        return
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()


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
