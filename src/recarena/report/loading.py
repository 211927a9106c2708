"""Reading run directories for the report, and merging several runs into one comparison.

Only saved artifacts are read (see the layout in `recarena.experiment.runner`); nothing is recomputed
except the summary table of a run that lacks ``summary.csv``.

Runs merge when they share a data set and a split: the same data set name, statistics,
preprocessing and source files, the same split method, parameters and sizes, the same
segment definitions, and for every protocol that two runs both have, the same candidates.
Anything else is refused with an `ArtifactError` naming what differs, because numbers
from different data, splits or candidates must never sit in one table.
"""

from __future__ import annotations

import logging
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recarena._artifacts import (
    damaged_error,
    load_npz_artifact,
    read_errors,
    read_json_artifact,
    read_parquet_artifact,
)
from recarena.errors import ArtifactError

log = logging.getLogger(__name__)

#: keys of dataset.json ``info`` that record where or when files were fetched, not what
#: they hold; two copies of one data set differ there and still merge
_VOLATILE_INFO_KEYS = frozenset({"fetched_at", "cache_folder", "path", "source_path", "paths"})

#: evaluation settings that change which users or items a number is computed on
_SEGMENT_SETTINGS = ("cold_user_max", "head_share")


@dataclass
class ModelRecord:
    """One model of one run, finished or failed, as the report shows it."""

    label: str
    source_label: str
    run: int
    status: str  # "done" or "failed"
    family: str = "?"
    fusion: str = "none"
    name: str = ""
    protocols: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    user_sample: bool = False
    #: refit on train + valid before testing (None: a run from before the record said)
    refit: bool | None = None
    #: how the model reads a user's history (``Recommender.history_use``; None: not recorded)
    history_use: str | None = None
    #: not refit: whether the test histories took in the validation interactions (False:
    #: stale); None when refit, or when the run predates the record (see
    #: ``history_recorded``)
    history_refreshed: bool | None = None
    #: whether the run recorded ``history_refreshed`` (runs before it did not)
    history_recorded: bool = False
    evaluated_users: int | None = None
    all_test_users: int | None = None
    cost: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    traceback: str | None = None
    training_log: list[dict[str, Any]] | None = None
    model_dir: Path = Path()

    @property
    def done(self) -> bool:
        return self.status == "done"


@dataclass
class RunArtifacts:
    """What one run directory holds, read once."""

    run_dir: Path
    config: dict[str, Any]
    state: dict[str, Any]
    environment: dict[str, Any]
    dataset_meta: dict[str, Any]
    split_meta: dict[str, Any]
    summary: pd.DataFrame
    summary_rebuilt: bool
    models: list[ModelRecord]

    @property
    def name(self) -> str:
        return str(self.state.get("name") or self.config.get("name") or self.run_dir.name)

    @property
    def evaluation(self) -> dict[str, Any]:
        return dict(self.config.get("evaluation", {}))

    @property
    def protocols(self) -> dict[str, str]:
        """Protocol label -> description, in the order of the experiment."""
        protos = dict(self.state.get("protocols") or {})
        if not protos:
            for label in self.summary["protocol"].drop_duplicates():
                protos[str(label)] = str(label)
        return protos


@dataclass
class ReportData:
    """The runs of one report, merged: unique model labels and one summary table."""

    runs: list[RunArtifacts]
    models: list[ModelRecord]
    summary: pd.DataFrame
    protocols: dict[str, str]
    ks: list[int]
    k: int
    confidence: float
    _per_user_cache: dict[tuple[str, str], pd.DataFrame] = field(default_factory=dict)

    @property
    def done_models(self) -> list[ModelRecord]:
        return [m for m in self.models if m.done]

    @property
    def failed_models(self) -> list[ModelRecord]:
        return [m for m in self.models if not m.done]

    def model(self, label: str) -> ModelRecord:
        for m in self.models:
            if m.label == label:
                return m
        raise KeyError(label)

    def per_user(self, label: str, protocol: str, columns: list[str]) -> pd.DataFrame:
        """Per-user values (``user``, ``segment``, ``impression`` if any, ``columns``)."""
        key = (label, protocol)
        cached = self._per_user_cache.get(key)
        if cached is not None and all(c in cached.columns for c in columns):
            return cached
        path = self.model(label).model_dir / protocol / "per_user.parquet"
        if not path.exists():
            raise ArtifactError(f"{path} is missing; re-run the model or `recarena report`")
        import pyarrow.parquet as pq

        try:
            present = set(pq.read_schema(path).names)
        except read_errors() as exc:
            raise damaged_error(path, f"not a readable parquet file: {exc}") from None
        # impression protocols keep one row per impression (column ``impression``)
        keys = [c for c in ("user", "impression", "segment") if c in present]
        wanted = [*keys, *[c for c in columns if c in present]]
        if cached is not None:
            wanted = list(dict.fromkeys([*wanted, *[c for c in cached.columns if c in present]]))
        frame = read_parquet_artifact(path, columns=wanted)
        self._per_user_cache[key] = frame
        return frame


# ---------------------------------------------------------------------- one run
def _read_json_if(path: Path, default: Any) -> Any:
    try:
        return read_json_artifact(path)
    except FileNotFoundError:
        return default


def _registry_family(name: str) -> str:
    try:
        from recarena.models.registry import model_entries

        for entry in model_entries():
            if entry.name == name:
                return entry.family
    except Exception:  # the registry is a convenience here; a failed model still shows
        pass
    return "?"


def load_run(run_dir: str | Path) -> RunArtifacts:
    """Read a run directory, once `recarena._rundir.check_run_folder` has checked it.

    Raises `ArtifactError` when it is not one, when its run stopped before saving the data
    and the split, when its ``config.toml`` does not describe the run, or when a file is
    damaged (`recarena.errors.DamagedArtifactError`, naming the file).
    """
    from recarena._rundir import check_run_folder

    run_dir = Path(run_dir)
    check_run_folder(run_dir)
    try:
        config = tomllib.loads((run_dir / "config.toml").read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ArtifactError(f"{run_dir / 'config.toml'}: not valid TOML: {exc}") from None
    state = _read_json_if(run_dir / "run.json", {})
    environment = _read_json_if(run_dir / "environment.json", {})
    dataset_meta = _read_json_if(run_dir / "dataset" / "dataset.json", {})
    split_meta = _read_json_if(run_dir / "split" / "split.json", {})

    names_by_label = {
        str(m.get("label") or m.get("name")): str(m.get("name", ""))
        for m in config.get("models", [])
    }
    models: list[ModelRecord] = []
    models_dir = run_dir / "models"
    dirs = sorted(p for p in models_dir.iterdir() if p.is_dir()) if models_dir.exists() else []
    for mdir in dirs:
        done_path, failed_path = mdir / "DONE.json", mdir / "FAILED.json"
        if done_path.exists():
            rec = read_json_artifact(done_path)
            cost = rec.get("cost") or _read_json_if(mdir / "cost.json", {})
            log_path = mdir / "training_log.json"
            training_log = _read_json_if(log_path, None)
            models.append(
                ModelRecord(
                    label=mdir.name,
                    source_label=mdir.name,
                    run=0,
                    status="done",
                    family=str(rec.get("family", "?")),
                    fusion=str(rec.get("fusion", "none")),
                    name=str(rec.get("model", names_by_label.get(mdir.name, mdir.name))),
                    protocols=list(rec.get("protocols", [])),
                    skipped=dict(rec.get("skipped_protocols") or {}),
                    user_sample=bool(rec.get("user_sample", False)),
                    refit=rec.get("refit"),
                    history_use=rec.get("history_use"),
                    history_refreshed=rec.get("history_refreshed"),
                    history_recorded="history_refreshed" in rec,
                    evaluated_users=rec.get("evaluated_users"),
                    all_test_users=rec.get("all_test_users"),
                    cost=dict(cost),
                    params=dict(rec.get("params") or {}),
                    training_log=training_log if isinstance(training_log, list) else None,
                    model_dir=mdir,
                )
            )
        elif failed_path.exists():
            rec = _read_json_if(failed_path, {})
            name = names_by_label.get(mdir.name, mdir.name)
            models.append(
                ModelRecord(
                    label=mdir.name,
                    source_label=mdir.name,
                    run=0,
                    status="failed",
                    family=_registry_family(name),
                    name=name,
                    error=str(rec.get("error", "failed (no message)")),
                    traceback=rec.get("traceback"),
                    model_dir=mdir,
                )
            )
    # configured models without a folder never started (the run was stopped): say so
    seen = {m.source_label for m in models}
    for label, name in names_by_label.items():
        if label not in seen:
            models.append(
                ModelRecord(
                    label=label,
                    source_label=label,
                    run=0,
                    status="failed",
                    family=_registry_family(name),
                    name=name,
                    error="no results: the run stopped before this model finished",
                    model_dir=models_dir / label,
                )
            )

    summary_path = run_dir / "summary.csv"
    rebuilt = False
    if summary_path.exists():
        try:
            summary = pd.read_csv(summary_path)
        except (ValueError, UnicodeDecodeError) as exc:
            raise damaged_error(summary_path, f"not a readable CSV file: {exc}") from None
    else:
        from recarena.config import EvaluationConfig
        from recarena.summary import build_summary

        evaluation = EvaluationConfig.model_validate(config.get("evaluation", {}))
        summary = build_summary(run_dir, evaluation)
        rebuilt = True
    if "user_sample" in summary.columns:
        summary["user_sample"] = summary["user_sample"].map(
            lambda v: str(v).lower() == "true" if not isinstance(v, bool) else v
        )
    summary["model"] = summary["model"].astype(str)
    summary["protocol"] = summary["protocol"].astype(str)
    summary["segment"] = summary["segment"].astype(str)
    # the rows over the users every model was measured on are recomputed by the report
    # over the models it shows (runs merge), so a run's own are left out here
    from recarena.summary import COMMON_USERS_SEGMENT

    summary = summary[summary["segment"] != COMMON_USERS_SEGMENT].reset_index(drop=True)
    return RunArtifacts(
        run_dir=run_dir,
        config=config,
        state=state,
        environment=environment,
        dataset_meta=dataset_meta,
        split_meta=split_meta,
        summary=summary,
        summary_rebuilt=rebuilt,
        models=models,
    )


# ---------------------------------------------------------------------- merging
def _dataset_identity(run: RunArtifacts) -> dict[str, Any]:
    meta = run.dataset_meta
    info = {k: v for k, v in (meta.get("info") or {}).items() if k not in _VOLATILE_INFO_KEYS}
    if info.get("files"):
        # local files: their hashes say what they hold; where they lie does not matter
        info.pop("source", None)
    return {"name": meta.get("name", run.state.get("dataset")), **info}


def _split_identity(run: RunArtifacts) -> dict[str, Any]:
    meta = run.split_meta
    stats = dict(meta.get("stats") or {})
    stats.pop("candidates", None)
    stats.pop("notes", None)
    return {
        "method": meta.get("method", run.state.get("split")),
        "params": meta.get("params", {}),
        "n_users": meta.get("n_users"),
        "n_items": meta.get("n_items"),
        "stats": stats,
    }


def _first_difference(a: Any, b: Any) -> str | None:
    """The first key path where two JSON-like values differ, with both values."""
    from recarena._rundir import MISSING, first_difference

    found = first_difference(a, b, close=lambda x, y: np.isclose(x, y, rtol=1e-9, atol=0))
    if found is None:
        return None
    path, first, second = found
    if first is MISSING:
        return f"{path} (only in the second run: {_short(second)})"
    if second is MISSING:
        return f"{path} (only in the first run: {_short(first)})"
    return f"{path} ({_short(first)} vs {_short(second)})"


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _candidate_arrays(run: RunArtifacts, protocol: str) -> tuple[np.ndarray, np.ndarray] | None:
    split_dir = run.run_dir / "split"
    for name in (f"candidates_{protocol}__test.npz", f"first_stage__{protocol}__test.npz"):
        path = split_dir / name
        if path.exists():
            z = load_npz_artifact(path)
            return z.get("users", np.array([])), z.get("items", np.array([]))
    return None


def check_mergeable(runs: list[RunArtifacts]) -> None:
    """Raise `ArtifactError` naming the first difference that makes runs incomparable."""
    first = runs[0]
    for other in runs[1:]:
        pair = f"{first.run_dir} and {other.run_dir}"
        diff = _first_difference(_dataset_identity(first), _dataset_identity(other))
        if diff:
            raise ArtifactError(f"cannot merge {pair}: different data sets: {diff}")
        diff = _first_difference(_split_identity(first), _split_identity(other))
        if diff:
            raise ArtifactError(f"cannot merge {pair}: different splits: split {diff}")
        for key in _SEGMENT_SETTINGS:
            a, b = first.evaluation.get(key), other.evaluation.get(key)
            if a is not None and b is not None and a != b:
                raise ArtifactError(
                    f"cannot merge {pair}: different segments: evaluation.{key} ({a} vs {b})"
                )
        for proto in first.protocols:
            if proto == "full" or proto not in other.protocols:
                continue
            ca, cb = _candidate_arrays(first, proto), _candidate_arrays(other, proto)
            if ca is None or cb is None:
                continue
            if not (np.array_equal(ca[0], cb[0]) and np.array_equal(ca[1], cb[1])):
                raise ArtifactError(
                    f"cannot merge {pair}: protocol {proto!r} has different test candidates "
                    "(drawn with another seed or from another first-stage model); results on "
                    "different candidates are not comparable"
                )


def _run_tags(runs: list[RunArtifacts]) -> list[str]:
    names = [r.run_dir.name for r in runs]
    if len(set(names)) == len(names):
        return names
    return [f"run{i + 1}" for i in range(len(runs))]


def merge_runs(runs: list[RunArtifacts]) -> ReportData:
    """Merge runs that share a data set and split (see `check_mergeable`) into one report.

    Models whose label occurs in more than one run are shown as ``"LABEL (TAG)"``, with the
    run's folder name as the tag (``run1``, ``run2``... when folder names repeat).
    """
    if not runs:
        raise ArtifactError("no run directories given")
    check_mergeable(runs)
    tags = _run_tags(runs)
    counts = Counter(m.source_label for r in runs for m in r.models)
    models: list[ModelRecord] = []
    frames = []
    for i, run in enumerate(runs):
        mapping: dict[str, str] = {}
        for m in run.models:
            m.run = i
            if counts[m.source_label] > 1 and len(runs) > 1:
                m.label = f"{m.source_label} ({tags[i]})"
            mapping[m.source_label] = m.label
            models.append(m)
        frame = run.summary.copy()
        frame["model"] = frame["model"].map(lambda x, mp=mapping: mp.get(x, x))
        frame["run"] = i
        frames.append(frame)
    summary = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    protocols: dict[str, str] = {}
    for run in runs:
        for label, desc in run.protocols.items():
            protocols.setdefault(label, desc)
    ordered = dict(sorted(protocols.items(), key=lambda kv: kv[0] != "full"))
    ks = sorted({int(k) for r in runs for k in r.evaluation.get("ks", [5, 10, 20])})
    k = 10 if 10 in ks else ks[0]
    confidence = float(runs[0].evaluation.get("confidence", 0.95))
    return ReportData(
        runs=runs,
        models=models,
        summary=summary,
        protocols=ordered,
        ks=ks,
        k=k,
        confidence=confidence,
    )


def load_report_data(run_dirs: list[Path]) -> ReportData:
    """Read and merge the given run directories."""
    return merge_runs([load_run(p) for p in run_dirs])
