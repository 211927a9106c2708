"""Summaries across training seeds: each model's mean over its seeds, with an interval over
users and seeds, the spread across seeds, and paired comparisons that use the seeds.

A model trained once per seed (`recarena.experiment.seeds`) leaves one run per seed, each
with its per-user metrics on the same users. Here the runs of one ``[[models]]`` entry are
put together (read from the ``training_seeds`` of their ``DONE.json``):

- the mean over seeds of each seed's mean over users;
- a two-level percentile bootstrap (`recarena.metrics.seeded_bootstrap_ci`: users drawn
  once for every seed, seeds drawn with replacement), so the interval covers both the
  sampling of users and training randomness;
- the standard deviation of the per-seed means beside the half-width of the user-only
  interval (the mean of the seeds' own intervals), so a reader sees which dominates;
- paired comparisons (`recarena.metrics.seeded_paired_comparison`): a model is "better"
  than another only when the two-level interval of the difference excludes zero *and*
  the difference has the same sign at every pair of their seeds.

A model without seeds, or deterministic given its data (no ``seed`` parameter: it ran
once), takes part as one seed: its interval is over users alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recarena._artifacts import read_parquet_artifact
from recarena._io import atomic_path, write_json
from recarena.config import EvaluationConfig
from recarena.errors import ArtifactError
from recarena.metrics.segments import SEGMENT_ALL
from recarena.summary import SUMMARY_COLUMNS

#: the summary's columns (`recarena.summary.SUMMARY_COLUMNS`) but its user-sample flag,
#: then what the seeds add
SEED_SUMMARY_COLUMNS = [
    *(c for c in SUMMARY_COLUMNS if c != "user_sample"),
    "n_seeds",
    "seeds",
    "seed_sd",
    "user_half_width",
    "deterministic",
]

#: columns of the per-seed comparison table
COMPARISON_COLUMNS = [
    "protocol",
    "metric",
    "model_a",
    "model_b",
    "mean_a",
    "mean_b",
    "diff",
    "ci_low",
    "ci_high",
    "consistent",
    "better",
    "n_seeds_a",
    "n_seeds_b",
    "n_users",
]

_IDS = ("user", "segment", "impression")


@dataclass
class SeedGroup:
    """The runs of one ``[[models]]`` entry that finished."""

    label: str
    family: str
    fusion: str
    #: run label -> its seed (None: one run without a seed)
    runs: dict[str, int | None] = field(default_factory=dict)
    #: the seeds the experiment asked for (empty: none)
    asked: list[int] = field(default_factory=list)
    deterministic: bool = False
    protocols: list[str] = field(default_factory=list)

    @property
    def n_seeds(self) -> int:
        return len(self.runs)

    @property
    def seeded(self) -> bool:
        """Trained at more than one seed."""
        return len(self.runs) > 1


def seed_groups(records: list[dict[str, Any]]) -> dict[str, SeedGroup]:
    """Finished runs grouped by their ``[[models]]`` entry, in the order of ``records``.

    A run without ``training_seeds`` (no seeds asked) is a group of its own.
    """
    groups: dict[str, SeedGroup] = {}
    for rec in records:
        seeds = rec.get("training_seeds") or {}
        label = str(seeds.get("group", rec["label"]))
        group = groups.setdefault(
            label,
            SeedGroup(
                label,
                str(rec.get("family", "?")),
                str(rec.get("fusion", "none")),
                asked=list(seeds.get("seeds") or []),
                deterministic=bool(seeds.get("deterministic", False)),
            ),
        )
        group.runs[rec["label"]] = seeds.get("seed")
        for proto in rec.get("protocols", []):
            if proto not in group.protocols:
                group.protocols.append(proto)
    return groups


def has_seeds(records: list[dict[str, Any]]) -> bool:
    """Whether any run of the folder was asked for training seeds."""
    return any(rec.get("training_seeds") for rec in records)


def _seed_stack(
    run_dir: Path, group: SeedGroup, protocol: str
) -> tuple[list[int | None], dict[str, list[pd.DataFrame]]] | None:
    """Per segment, every seed's per-user table (indexed by user), or None when some run
    of the group was not measured on ``protocol``."""
    tables: dict[str, list[pd.DataFrame]] = {}
    seeds = []
    for label, seed in group.runs.items():
        path = run_dir / "models" / label / protocol / "per_user.parquet"
        if not path.exists():
            return None
        table = read_parquet_artifact(path)
        if "impression" in table.columns:
            # one row per impression: the unit of resampling is the user's mean
            table = (
                table.drop(columns="impression")
                .groupby(["segment", "user"], sort=False, as_index=False)
                .mean()
            )
        seeds.append(seed)
        for segment, frame in table.groupby("segment", sort=False):
            values = frame.drop(columns=[c for c in _IDS if c in frame.columns])
            values.index = pd.Index(frame["user"].to_numpy(), name="user")
            tables.setdefault(str(segment), []).append(values)
    return seeds, tables


def _aligned(frames: list[pd.DataFrame]) -> tuple[np.ndarray, list[str], int]:
    """(seeds, users, metrics) values over the users and metrics every seed has."""
    users = frames[0].index
    metrics = list(frames[0].columns)
    for frame in frames[1:]:
        users = users.intersection(frame.index)
        metrics = [m for m in metrics if m in frame.columns]
    users = users.sort_values()
    stack = np.stack(
        [f.loc[users, metrics].to_numpy(dtype=np.float64, na_value=np.nan) for f in frames]
    )
    return stack, metrics, len(users)


def mean_user_half_width(
    groups: list[np.ndarray], evaluation: EvaluationConfig, seed: int = 0
) -> np.ndarray:
    """The mean over ``groups`` (training seeds, or splits) of the half-width of each
    one's bootstrap interval over its users alone, per metric."""
    from recarena.metrics import bootstrap_ci

    half = np.zeros(groups[0].shape[1])
    for x in groups:
        _, low, high = bootstrap_ci(
            x, n_boot=evaluation.bootstrap, confidence=evaluation.confidence, seed=seed
        )
        half += (high - low) / 2
    return half / len(groups)


def build_seed_summary(
    run_dir: Path,
    evaluation: EvaluationConfig,
    records: list[dict[str, Any]],
    seed: int = 0,
) -> pd.DataFrame:
    """One row per model (``[[models]]`` entry) x protocol x segment x per-user metric."""
    from recarena.metrics import seeded_bootstrap_ci

    rows: list[dict[str, Any]] = []
    for group in seed_groups(records).values():
        for proto in group.protocols:
            stacked = _seed_stack(run_dir, group, proto)
            if stacked is None:
                continue
            seeds, tables = stacked
            for segment, frames in tables.items():
                values, metrics, n_users = _aligned(frames)
                if not metrics:
                    continue
                mean, low, high, sd = seeded_bootstrap_ci(
                    values,
                    n_boot=evaluation.bootstrap,
                    confidence=evaluation.confidence,
                    seed=seed,
                )
                half = mean_user_half_width(list(values), evaluation, seed)
                counts = (~np.isnan(values)).all(axis=0).sum(axis=0)
                for j, metric in enumerate(metrics):
                    rows.append(
                        {
                            "model": group.label,
                            "family": group.family,
                            "fusion": group.fusion,
                            "protocol": proto,
                            "segment": segment,
                            "metric": str(metric),
                            "mean": float(mean[j]),
                            "ci_low": float(low[j]),
                            "ci_high": float(high[j]),
                            "n_users": int(counts[j]) if n_users else 0,
                            "n_seeds": len(seeds),
                            "seeds": ",".join("" if s is None else str(s) for s in seeds),
                            "seed_sd": float(sd[j]) if len(seeds) > 1 else math.nan,
                            "user_half_width": float(half[j]),
                            "deterministic": group.deterministic,
                        }
                    )
    return pd.DataFrame(rows, columns=SEED_SUMMARY_COLUMNS)


def compare_across_seeds(
    run_dir: Path,
    evaluation: EvaluationConfig,
    records: list[dict[str, Any]],
    protocol: str,
    metric: str,
    pairs: list[tuple[str, str]],
    seed: int = 0,
) -> pd.DataFrame:
    """Paired comparisons of models (``[[models]]`` labels) over their seeds, on the users
    of segment ``all`` that every seed of both was measured on."""
    from recarena.metrics import seeded_paired_comparison

    groups = seed_groups(records)
    stacks: dict[str, pd.DataFrame | list[pd.DataFrame]] = {}
    rows = []
    for a, b in pairs:
        frames = []
        for label in (a, b):
            if label not in stacks:
                stacked = _seed_stack(run_dir, groups[label], protocol)
                if stacked is None:
                    raise ArtifactError(f"{label}: no per-user metrics on {protocol}")
                stacks[label] = [f[[metric]] for f in stacked[1][SEGMENT_ALL] if metric in f]
            frames.append(stacks[label])
        fa, fb = frames
        if not fa or not fb:
            continue
        users = fa[0].index
        for frame in [*fa, *fb]:
            users = users.intersection(frame.index)
        users = users.sort_values()

        def stack(fs: list[pd.DataFrame], users: pd.Index = users) -> np.ndarray:
            return np.stack([f.loc[users].to_numpy(dtype=np.float64, na_value=np.nan) for f in fs])

        result = seeded_paired_comparison(
            stack(fa),
            stack(fb),
            metrics=[metric],
            n_boot=evaluation.bootstrap,
            confidence=evaluation.confidence,
            seed=seed,
        ).iloc[0]
        excludes_zero = bool(result["ci_low"] > 0 or result["ci_high"] < 0)
        rows.append(
            {
                "protocol": protocol,
                "metric": metric,
                "model_a": a,
                "model_b": b,
                **{k: result[k] for k in ("mean_a", "mean_b", "diff", "ci_low", "ci_high")},
                "consistent": bool(result["consistent"]),
                "better": excludes_zero and bool(result["consistent"]),
                "n_seeds_a": int(result["n_seeds_a"]),
                "n_seeds_b": int(result["n_seeds_b"]),
                "n_users": int(result["n_users"]),
            }
        )
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def ranking_across_seeds(seed_summary: pd.DataFrame, protocol: str, metric: str) -> pd.DataFrame:
    """The models on ``protocol`` (segment ``all``), best mean of ``metric`` first."""
    sub = seed_summary[
        (seed_summary["protocol"] == protocol)
        & (seed_summary["segment"] == SEGMENT_ALL)
        & (seed_summary["metric"] == metric)
    ]
    return sub.sort_values("mean", ascending=False, kind="stable").reset_index(drop=True)


def seed_comparisons(
    run_dir: Path,
    evaluation: EvaluationConfig,
    records: list[dict[str, Any]],
    seed_summary: pd.DataFrame,
    seed: int = 0,
) -> pd.DataFrame:
    """The best model of each protocol (by the tuning metric) against every other one."""
    metric = evaluation.tune_metric
    frames = []
    for proto in dict.fromkeys(seed_summary["protocol"]):
        ranked = ranking_across_seeds(seed_summary, proto, metric)
        if len(ranked) < 2:
            continue
        best = str(ranked["model"].iloc[0])
        pairs = [(best, str(other)) for other in ranked["model"].iloc[1:]]
        frames.append(
            compare_across_seeds(run_dir, evaluation, records, proto, metric, pairs, seed)
        )
    if not frames:
        return pd.DataFrame(columns=COMPARISON_COLUMNS)
    return pd.concat(frames, ignore_index=True)


def write_seed_summaries(
    run_dir: Path,
    evaluation: EvaluationConfig,
    records: list[dict[str, Any]],
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """``summary_seeds.csv`` and ``comparisons_seeds.csv`` when the run has seeds (else
    None, and any earlier files of that name are removed)."""
    paths = [run_dir / "summary_seeds.csv", run_dir / "comparisons_seeds.csv"]
    if not has_seeds(records):
        for path in paths:
            path.unlink(missing_ok=True)
        return None
    table = build_seed_summary(run_dir, evaluation, records, seed)
    comparisons = seed_comparisons(run_dir, evaluation, records, table, seed)
    for frame, path in zip((table, comparisons), paths, strict=True):
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False)
    write_json(
        run_dir / "summary_seeds.json",
        {
            "summary": table.replace({np.nan: None}).to_dict(orient="records"),
            "comparisons": comparisons.replace({np.nan: None}).to_dict(orient="records"),
        },
    )
    return table, comparisons


def seeds_text(row: Any) -> str:
    """How a row of the seed summary was trained, in words."""
    if bool(row["deterministic"]):
        return "deterministic (ran once)"
    seeds = "" if pd.isna(row["seeds"]) else str(row["seeds"])
    if not seeds:
        return "one run"
    return f"seed {seeds}" if int(row["n_seeds"]) == 1 else seeds.replace(",", ", ")


def seeds_markdown(
    table: pd.DataFrame,
    comparisons: pd.DataFrame,
    evaluation: EvaluationConfig,
    fmt: Callable[[Any], str],
) -> str:
    """The section of ``summary.md`` on training seeds."""
    metric = evaluation.tune_metric
    parts = ["\n## Across training seeds\n\n"]
    parts.append(
        f"Each model's {metric.upper()} is the mean over its seeds of the mean over users. "
        f"The {evaluation.confidence:.0%} interval covers users and seeds (a two-level "
        "bootstrap: users drawn once for every seed, seeds drawn with replacement); "
        "`seed sd` is the standard deviation of the per-seed means, `user ±` the half-width "
        "of the interval over users alone (the mean of the seeds' own). A model that takes "
        "no seed is deterministic given its data: it ran once.\n"
    )
    for proto in dict.fromkeys(table["protocol"]):
        ranked = ranking_across_seeds(table, proto, metric)
        if ranked.empty:
            continue
        parts.append(f"\n### `{proto}`\n\n")
        parts.append(f"| model | seeds | {metric.upper()} | seed sd | user ± |\n")
        parts.append("|---|---|---|---|---|\n")
        for _, r in ranked.iterrows():
            seeds = seeds_text(r)
            interval = (
                f" [{r['ci_low']:.4f}, {r['ci_high']:.4f}]"
                if math.isfinite(r["ci_low"]) and math.isfinite(r["ci_high"])
                else ""
            )
            parts.append(
                f"| {r['model']} | {seeds} | {r['mean']:.4f}{interval} | "
                f"{fmt(r['seed_sd'])} | {fmt(r['user_half_width'])} |\n"
            )
        sub = comparisons[comparisons["protocol"] == proto]
        if len(sub):
            best = sub["model_a"].iloc[0]
            parts.append(
                f"\n{best} against each other model (difference of {metric.upper()}, its "
                "interval over users and seeds; *better* only when the interval excludes "
                "zero and the difference has the same sign at every pair of seeds):\n\n"
            )
            parts.append("| against | difference | same sign at every seed pair | better |\n")
            parts.append("|---|---|---|---|\n")
            for _, r in sub.iterrows():
                parts.append(
                    f"| {r['model_b']} | {r['diff']:+.4f} [{r['ci_low']:+.4f}, "
                    f"{r['ci_high']:+.4f}] | {'yes' if r['consistent'] else 'no'} | "
                    f"{'yes' if r['better'] else 'not shown'} |\n"
                )
    return "".join(parts)
