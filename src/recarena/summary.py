"""Summaries of a run directory: one table of every model x protocol x segment x metric.

Built from saved artifacts only (per-user metric values, global metrics, cost), so
``recarena report RUN_DIR`` can rebuild them, and a new summary never re-runs a model.

Where a model was measured on a seeded sample of users (``max_eval_users``), the models of
that protocol were not measured on the same users. Their per-user metrics are then also
summarised over the users every model of the protocol was measured on (`find_common_users`),
as segment `COMMON_USERS_SEGMENT`, beside the all-users numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recarena._artifacts import read_json_artifact, read_parquet_artifact
from recarena._io import atomic_path, write_json, write_text
from recarena.config import EvaluationConfig, FairnessConfig
from recarena.errors import ArtifactError
from recarena.metrics.pointwise import POINTWISE_THRESHOLD_RULE
from recarena.metrics.segments import SEGMENT_ALL

SUMMARY_COLUMNS = [
    "model",
    "family",
    "fusion",
    "protocol",
    "segment",
    "metric",
    "mean",
    "ci_low",
    "ci_high",
    "n_users",
    "user_sample",
]

# columns of the printed leaderboard, in order, when the run has them
LEADERBOARD_METRICS = ("ndcg", "hr", "recall", "mrr", "coverage")

#: segment of the summary rows over the users every model of a protocol was measured on,
#: present for protocols where some model was measured on a sample of the users
COMMON_USERS_SEGMENT = "common_users"


@dataclass
class CommonUsers:
    """The users every model of one protocol was measured on, when the models differ.

    Attributes
    ----------
    users
        Sorted ids of the users in every model's evaluation.
    models
        Labels of the models of the protocol.
    samples
        Label -> number of users, for the models measured on a sample of the users.
    sample_groups
        The sampled models grouped by the users they were measured on (models with the
        same seed and budget share a sample).
    """

    users: np.ndarray
    models: list[str]
    samples: dict[str, int]
    sample_groups: list[list[str]]

    @property
    def same_sample(self) -> bool:
        """True when every sampled model was measured on the same users."""
        return len(self.sample_groups) <= 1

    @property
    def n_users(self) -> int:
        return len(self.users)

    def title(self) -> str:
        return f"on the {self.n_users:,} users every model was measured on"

    def describe(self) -> str:
        """One sentence on where these users come from."""
        head = f"The {self.n_users:,} users every model of this protocol was measured on"
        if not self.samples:
            return head + "."
        if self.same_sample:
            names = ", ".join(self.samples)
            return (
                f"{head}: the seeded sample of {names} (the same users for every sampled "
                "model: same seed and budget)."
            )
        sizes = "; ".join(
            f"{', '.join(group)}: {self.samples[group[0]]:,}"
            + (" (one sample)" if len(group) > 1 else "")
            for group in self.sample_groups
        )
        return (
            f"{head}: the sampled models were measured on different users ({sizes}; a "
            "different budget draws a different sample), so these are the users in all of "
            "their samples."
        )


def find_common_users(
    user_sets: Mapping[str, np.ndarray], sampled: Mapping[str, bool]
) -> CommonUsers | None:
    """The users every model was measured on, or None when all were measured on the same.

    Parameters
    ----------
    user_sets
        Model label -> the users it was measured on (on one protocol).
    sampled
        Model label -> whether it was measured on a sample of the users.
    """
    sets = {label: np.unique(np.asarray(users)) for label, users in user_sets.items()}
    if len(sets) < 2:
        return None
    first = next(iter(sets.values()))
    if all(np.array_equal(first, other) for other in sets.values()):
        return None
    common = first
    for other in sets.values():
        common = np.intersect1d(common, other, assume_unique=True)
    samples = {label: len(sets[label]) for label in sets if sampled.get(label)}
    groups: list[list[str]] = []
    for label in samples:
        for group in groups:
            if np.array_equal(sets[group[0]], sets[label]):
                group.append(label)
                break
        else:
            groups.append([label])
    return CommonUsers(common, list(sets), samples, groups)


def _evaluated_users(table: pd.DataFrame) -> np.ndarray:
    return np.unique(table.loc[table["segment"] == SEGMENT_ALL, "user"].to_numpy())


def load_model_records(run_dir: Path) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """DONE records of finished models and the errors of failed ones."""
    models_dir = run_dir / "models"
    done, failed = [], {}
    if not models_dir.exists():
        return done, failed
    for mdir in sorted(p for p in models_dir.iterdir() if p.is_dir()):
        if (mdir / "DONE.json").exists():
            done.append(read_json_artifact(mdir / "DONE.json"))
        elif (mdir / "FAILED.json").exists():
            failed[mdir.name] = read_json_artifact(mdir / "FAILED.json").get("error", "failed")
    return done, failed


def build_summary(run_dir: Path, evaluation: EvaluationConfig, seed: int = 0) -> pd.DataFrame:
    """The long summary table with bootstrap confidence intervals.

    Protocols on which some model was measured on a sample of the users get, for every
    model, rows of segment `COMMON_USERS_SEGMENT`: its per-user metrics over the users
    every model of the protocol was measured on (see `common_users_by_protocol`).
    """
    from recarena.metrics import summarize

    records, _ = load_model_records(run_dir)
    rows: list[dict[str, Any]] = []
    sampled = _sampled_protocols(records)
    kept: dict[str, dict[str, tuple[dict[str, Any], pd.DataFrame]]] = {}
    for rec in records:
        label = rec["label"]
        for proto in rec["protocols"]:
            pdir = run_dir / "models" / label / proto
            if not (pdir / "per_user.parquet").exists():
                raise ArtifactError(f"{pdir}: per_user.parquet is missing; re-run the model")
            table = read_parquet_artifact(pdir / "per_user.parquet")
            metrics = read_json_artifact(pdir / "metrics.json")
            base = {
                "model": label,
                "family": rec["family"],
                "fusion": rec["fusion"],
                "protocol": proto,
                "user_sample": bool(rec.get("user_sample", False)),
            }
            if proto in sampled:
                kept.setdefault(proto, {})[label] = (base, table)
            for segment, frame in table.groupby("segment", sort=False):
                rows += _summary_rows(base, str(segment), frame, evaluation, seed, summarize)
            n_all = int(metrics.get("segment_users", {}).get("all", 0))
            for metric, value in metrics.get("global", {}).items():
                rows.append(
                    {
                        **base,
                        "segment": "all",
                        "metric": metric,
                        "mean": value,
                        "ci_low": math.nan,
                        "ci_high": math.nan,
                        "n_users": n_all,
                    }
                )
            for metric, value in (metrics.get("pointwise") or {}).items():
                if isinstance(value, (int, float)):
                    rows.append(
                        {
                            **base,
                            "segment": "all",
                            "metric": f"pointwise_{metric}",
                            "mean": float(value),
                            "ci_low": math.nan,
                            "ci_high": math.nan,
                            "n_users": n_all,
                        }
                    )
    for models in kept.values():
        common = find_common_users(
            {label: _evaluated_users(table) for label, (_, table) in models.items()},
            {label: base["user_sample"] for label, (base, _) in models.items()},
        )
        if common is None:
            continue
        for base, table in models.values():
            frame = table[(table["segment"] == SEGMENT_ALL) & table["user"].isin(common.users)]
            rows += _summary_rows(base, COMMON_USERS_SEGMENT, frame, evaluation, seed, summarize)
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _summary_rows(
    base: dict[str, Any],
    segment: str,
    frame: pd.DataFrame,
    evaluation: EvaluationConfig,
    seed: int,
    summarize: Any,
) -> list[dict[str, Any]]:
    """Mean and bootstrap interval of every per-user metric column of ``frame``."""
    ids = [c for c in ("user", "segment", "impression") if c in frame.columns]
    values = frame.drop(columns=ids).dropna(axis=1, how="all")
    summ = summarize(
        values, n_boot=evaluation.bootstrap, confidence=evaluation.confidence, seed=seed
    )
    return [
        {
            **base,
            "segment": segment,
            "metric": metric,
            "mean": r["mean"],
            "ci_low": r["ci_low"],
            "ci_high": r["ci_high"],
            "n_users": int(r["n_users"]),
        }
        for metric, r in summ.iterrows()
    ]


def _sampled_protocols(records: list[dict[str, Any]]) -> set[str]:
    """Protocols on which some model was measured on a sample of the users."""
    return {p for rec in records if rec.get("user_sample") for p in rec.get("protocols", [])}


def common_users_by_protocol(run_dir: Path) -> dict[str, CommonUsers]:
    """For each protocol whose models were not all measured on the same users, those users.

    Read from the saved per-user files, so it describes the rows of segment
    `COMMON_USERS_SEGMENT` that `build_summary` writes.
    """
    records, _ = load_model_records(run_dir)
    sampled = _sampled_protocols(records)
    out: dict[str, CommonUsers] = {}
    for proto in sorted(sampled):
        user_sets, flags = {}, {}
        for rec in records:
            if proto not in rec.get("protocols", []):
                continue
            path = run_dir / "models" / rec["label"] / proto / "per_user.parquet"
            if not path.exists():
                raise ArtifactError(f"{path.parent}: per_user.parquet is missing; re-run the model")
            table = read_parquet_artifact(path, columns=["user", "segment"])
            user_sets[rec["label"]] = _evaluated_users(table)
            flags[rec["label"]] = bool(rec.get("user_sample", False))
        common = find_common_users(user_sets, flags)
        if common is not None:
            out[proto] = common
    return out


def _cost_frame(run_dir: Path) -> pd.DataFrame:
    records, _ = load_model_records(run_dir)
    rows = []
    for rec in records:
        cost = rec.get("cost", {})
        rows.append({"model": rec["label"], **cost})
    return pd.DataFrame(rows)


def leaderboard(
    summary: pd.DataFrame,
    run_dir: Path,
    protocol: str,
    *,
    k: int = 10,
    segment: str = "all",
    sort_metric: str | None = None,
) -> pd.DataFrame:
    """One row per model: main metrics with CIs and cost, best first."""
    sub = summary[(summary["protocol"] == protocol) & (summary["segment"] == segment)]
    if sub.empty:
        return pd.DataFrame()
    cost = (
        _cost_frame(run_dir).set_index("model") if (run_dir / "models").exists() else pd.DataFrame()
    )
    out = []
    for model, frame in sub.groupby("model", sort=False):
        row: dict[str, Any] = {
            "model": model,
            "family": frame["family"].iloc[0],
            "fusion": frame["fusion"].iloc[0],
        }
        by_metric = frame.set_index("metric")
        for name in LEADERBOARD_METRICS:
            key = f"{name}@{k}"
            if key in by_metric.index:
                r = by_metric.loc[key]
                row[key] = r["mean"]
                row[f"{key} ci"] = (r["ci_low"], r["ci_high"])
        for key in ("pointwise_accuracy", "pointwise_f1", "pointwise_auc"):
            if key in by_metric.index:
                row[key.replace("pointwise_", "")] = by_metric.loc[key, "mean"]
        row["n_users"] = int(frame["n_users"].max())
        row["user_sample"] = bool(frame["user_sample"].iloc[0])
        if model in cost.index:
            c = cost.loc[model]
            row["fit_s"] = c.get("fit_seconds")
            row["users_per_s"] = c.get("users_per_second")
            row["latency_p50_ms"] = c.get("latency_ms_p50")
            row["params"] = c.get("parameters_total")
            row["peak_mib"] = c.get("peak_memory_mib")
        out.append(row)
    table = pd.DataFrame(out)
    key = sort_metric or f"ndcg@{k}"
    if key in table.columns:
        table = table.sort_values(key, ascending=False, kind="stable")
    return table.reset_index(drop=True)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.{digits}f}"
    return str(value)


def leaderboard_markdown(table: pd.DataFrame, k: int = 10) -> str:
    if table.empty:
        return "_no results_\n"
    metric_cols = [c for c in table.columns if "@" in c and not c.endswith(" ci")]
    extra = [c for c in ("accuracy", "f1", "auc") if c in table.columns]
    header = [
        "model",
        "family",
        *[c.upper().replace("HR@", "HR@") for c in metric_cols],
        *extra,
        "fit s",
        "users/s",
        "p50 ms",
        "params",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, r in table.iterrows():
        cells = [str(r["model"]) + (" *" if r.get("user_sample") else ""), str(r["family"])]
        for c in metric_cols:
            ci = r.get(f"{c} ci")
            text = _fmt(r[c])
            if isinstance(ci, tuple) and all(isinstance(x, float) and math.isfinite(x) for x in ci):
                text += f" [{ci[0]:.4f}, {ci[1]:.4f}]"
            cells.append(text)
        cells += [_fmt(r.get(c)) for c in extra]
        cells += [
            _fmt(r.get("fit_s"), 2),
            _fmt(r.get("users_per_s"), 1),
            _fmt(r.get("latency_p50_ms"), 2),
            _fmt(r.get("params")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_summaries(
    run_dir: Path,
    evaluation: EvaluationConfig,
    seed: int = 0,
    fairness: FairnessConfig | None = None,
) -> pd.DataFrame:
    """Write summary.csv, summary.json and summary.md into ``run_dir`` (with the tables
    across training seeds and by user group); return the table."""
    from recarena.summary_fairness import write_fairness
    from recarena.summary_seeds import write_seed_summaries

    summary = build_summary(run_dir, evaluation, seed)
    with atomic_path(run_dir / "summary.csv") as tmp:
        summary.to_csv(tmp, index=False)
    write_json(run_dir / "summary.json", summary.replace({np.nan: None}).to_dict(orient="records"))
    records, _ = load_model_records(run_dir)
    seeds = write_seed_summaries(run_dir, evaluation, records, seed)
    fairness = fairness or FairnessConfig()
    groups = write_fairness(run_dir, evaluation, fairness, records, seed)
    text = summary_markdown(run_dir, summary, evaluation, seeds)
    if groups is not None:
        from recarena.summary_fairness import exposure_markdown, fairness_markdown

        text += fairness_markdown(groups[1], evaluation, fairness.min_group_users)
        text += exposure_markdown(groups[2], 10 if 10 in evaluation.ks else evaluation.ks[0])
    write_text(run_dir / "summary.md", text)
    return summary


def summary_markdown(
    run_dir: Path,
    summary: pd.DataFrame,
    evaluation: EvaluationConfig,
    seeds: tuple[pd.DataFrame, pd.DataFrame] | None = None,
) -> str:
    """``summary.md``: per protocol the leaderboard, its common users and segments; the
    models across their training seeds (``seeds``: `write_seed_summaries`'s tables)."""
    state = read_json_artifact(run_dir / "run.json") if (run_dir / "run.json").exists() else {}
    _, failed = load_model_records(run_dir)
    k = 10 if 10 in evaluation.ks else evaluation.ks[0]
    parts = [
        f"# {state.get('name', run_dir.name)}: results\n",
        f"Data set: {state.get('dataset', '?')}; split: {state.get('split', '?')}.\n",
    ]
    for note in state.get("notes", []):
        parts.append(f"- {note}\n")
    common = common_users_by_protocol(run_dir)
    for proto, desc in state.get("protocols", {}).items():
        parts.append(f"\n## Protocol `{proto}`: {desc}\n\n")
        if proto != "full":
            parts.append(
                "Results on sampled or first-stage candidates are not comparable with "
                "full-catalog ranking.\n\n"
            )
        board = leaderboard(summary, run_dir, proto, k=k)
        parts.append(leaderboard_markdown(board, k))
        if any(c in board.columns for c in ("accuracy", "f1")):
            parts.append(f"\nPointwise accuracy and F1: {POINTWISE_THRESHOLD_RULE}.\n")
        if proto in common:
            shared = leaderboard(summary, run_dir, proto, k=k, segment=COMMON_USERS_SEGMENT)
            parts.append(f"\n### `{proto}` {common[proto].title()}\n\n")
            parts.append(f"{common[proto].describe()} Per-user metrics with their intervals over ")
            parts.append(
                "these users; coverage and pointwise metrics stay over each model's own.\n\n"
            )
            parts.append(leaderboard_markdown(shared, k))
        seg = summary[
            (summary["protocol"] == proto)
            & (summary["metric"] == f"ndcg@{k}")
            & (summary["segment"] != COMMON_USERS_SEGMENT)
        ]
        if not seg.empty and seg["segment"].nunique() > 1:
            parts.append(f"\nNDCG@{k} by segment (users in segment):\n\n")
            pivot = seg.pivot_table(index="model", columns="segment", values="mean", sort=False)
            n = seg.groupby("segment")["n_users"].max()
            cols = list(pivot.columns)
            parts.append("| model | " + " | ".join(f"{c} ({n[c]})" for c in cols) + " |\n")
            parts.append("|---|" + "---|" * len(cols) + "\n")
            for model, r in pivot.iterrows():
                parts.append(f"| {model} | " + " | ".join(_fmt(r[c]) for c in cols) + " |\n")
    if seeds is not None:
        from recarena.summary_seeds import seeds_markdown

        parts.append(seeds_markdown(*seeds, evaluation, _fmt))
    stale = stale_history_models(run_dir)
    if stale:
        parts.append("\n## Stale histories\n\n")
        for label, reason in stale.items():
            parts.append(
                f"- **{label}** was not refit and {reason}: it ranked the test items from "
                "histories without the validation interactions.\n"
            )
    if failed:
        parts.append("\n## Failed models\n\n")
        for label, err in failed.items():
            parts.append(f"- **{label}**: {err}\n")
    parts.append(
        "\n`*` evaluated on a seeded sample of users (see n_users); intervals are "
        f"{evaluation.confidence:.0%} percentile bootstrap over users.\n"
    )
    return "".join(parts)


def stale_history_models(run_dir: Path) -> dict[str, str]:
    """Label -> reason, for models that were not refit and kept train-only histories."""
    from recarena.models.base import STALE_HISTORY_REASONS

    records, _ = load_model_records(run_dir)
    return {
        rec["label"]: STALE_HISTORY_REASONS.get(rec.get("history_use"), str(rec.get("history_use")))
        for rec in records
        if rec.get("refit") is False and rec.get("history_refreshed") is False
    }
