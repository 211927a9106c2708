"""Summaries across split seeds: each model's mean over independently drawn splits, with an
interval over splits and users, the spread across splits, and paired comparisons that hold
at every split.

An experiment with ``split_seeds`` (`recarena.experiment.split_seeds`) leaves one complete
run folder per split seed. Here the runs of one ``[[models]]`` entry are put together across
those folders:

- within a split, a model trained at several training seeds (``seeds``) counts as the mean
  over its seeds of each user's value (the users are the same at every training seed);
- across splits, the mean over splits of each split's mean over users, and a two-stage
  percentile bootstrap (`recarena.metrics.clustered_bootstrap_ci`: splits drawn with
  replacement, then the users of each drawn split), so the interval covers the choice of
  split, candidates and samples as well as of users; the users of different splits are
  different draws, so they are not paired across splits;
- the standard deviation of the per-split means beside the half-width of the user-only
  interval (the mean of the splits' own), so a reader sees which dominates;
- paired comparisons of the best model of each protocol against every other one: within a
  split, on the users both were measured on; *better* only when the two-stage interval of
  the difference excludes zero and the difference has the same sign at every split.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recarena._io import atomic_path, write_json, write_text
from recarena.config import EvaluationConfig
from recarena.metrics.segments import SEGMENT_ALL
from recarena.summary import SUMMARY_COLUMNS

#: columns of ``summary_splits.csv``: the summary's, but its user counts, then the splits'
SPLIT_SUMMARY_COLUMNS = [
    *(c for c in SUMMARY_COLUMNS if c not in ("n_users", "user_sample")),
    "n_splits",
    "split_seeds",
    "split_sd",
    "user_half_width",
    "n_users_min",
    "n_users_max",
    "training_seeds",
]

#: columns of ``comparisons_splits.csv``
SPLIT_COMPARISON_COLUMNS = [
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
    "n_splits",
]


@dataclass
class _Model:
    """One ``[[models]]`` entry's per-user values, per protocol and segment, per split."""

    label: str
    family: str
    fusion: str
    training_seeds: int = 1
    #: (protocol, segment) -> split seed -> per-user values (index: user; columns: metrics)
    values: dict[tuple[str, str], dict[int, pd.DataFrame]] = field(default_factory=dict)


def _split_values(runs: dict[int, Path]) -> dict[str, _Model]:
    """Every finished model's per-user values in every split folder, training seeds
    averaged per user."""
    from recarena.summary import load_model_records
    from recarena.summary_seeds import _aligned, _seed_stack, seed_groups

    models: dict[str, _Model] = {}
    for split_seed, run_dir in runs.items():
        records, _ = load_model_records(run_dir)
        for group in seed_groups(records).values():
            model = models.setdefault(group.label, _Model(group.label, group.family, group.fusion))
            model.training_seeds = max(model.training_seeds, group.n_seeds)
            for proto in group.protocols:
                stacked = _seed_stack(run_dir, group, proto)
                if stacked is None:
                    continue
                for segment, frames in stacked[1].items():
                    values, metrics, n_users = _aligned(frames)
                    if not metrics or not n_users:
                        continue
                    users = frames[0].index
                    for frame in frames[1:]:
                        users = users.intersection(frame.index)
                    with warnings.catch_warnings():
                        # a user undefined at every training seed stays NaN
                        warnings.simplefilter("ignore", RuntimeWarning)
                        per_user = np.nanmean(values, axis=0)
                    model.values.setdefault((proto, segment), {})[split_seed] = pd.DataFrame(
                        per_user, index=users.sort_values(), columns=metrics
                    )
    return models


def build_split_summary(
    runs: dict[int, Path], evaluation: EvaluationConfig, seed: int = 0
) -> pd.DataFrame:
    """One row per model x protocol x segment x per-user metric, over the split seeds."""
    from recarena.metrics import clustered_bootstrap_ci
    from recarena.summary_seeds import mean_user_half_width

    rows: list[dict[str, Any]] = []
    for model in _split_values(runs).values():
        for (proto, segment), by_split in model.values.items():
            seeds = list(by_split)
            metrics = list(by_split[seeds[0]].columns)
            for frame in by_split.values():
                metrics = [m for m in metrics if m in frame.columns]
            if not metrics:
                continue
            arrays = [by_split[s][metrics].to_numpy(dtype=np.float64) for s in seeds]
            mean, low, high, sd = clustered_bootstrap_ci(
                arrays, n_boot=evaluation.bootstrap, confidence=evaluation.confidence, seed=seed
            )
            half = mean_user_half_width(arrays, evaluation, seed)
            counts = np.stack([(~np.isnan(x)).sum(axis=0) for x in arrays])
            for j, metric in enumerate(metrics):
                rows.append(
                    {
                        "model": model.label,
                        "family": model.family,
                        "fusion": model.fusion,
                        "protocol": proto,
                        "segment": segment,
                        "metric": str(metric),
                        "mean": float(mean[j]),
                        "ci_low": float(low[j]),
                        "ci_high": float(high[j]),
                        "n_splits": len(seeds),
                        "split_seeds": ",".join(str(s) for s in seeds),
                        "split_sd": float(sd[j]) if len(seeds) > 1 else math.nan,
                        "user_half_width": float(half[j]),
                        "n_users_min": int(counts[:, j].min()),
                        "n_users_max": int(counts[:, j].max()),
                        "training_seeds": model.training_seeds,
                    }
                )
    return pd.DataFrame(rows, columns=SPLIT_SUMMARY_COLUMNS)


def ranking_across_splits(table: pd.DataFrame, protocol: str, metric: str) -> pd.DataFrame:
    """The models on ``protocol`` (segment ``all``), best mean of ``metric`` first (the
    same selection as `recarena.summary_seeds.ranking_across_seeds`)."""
    from recarena.summary_seeds import ranking_across_seeds

    return ranking_across_seeds(table, protocol, metric)


def compare_across_splits(
    models: dict[str, _Model],
    evaluation: EvaluationConfig,
    protocol: str,
    metric: str,
    pairs: Sequence[tuple[str, str]],
    seed: int = 0,
) -> pd.DataFrame:
    """Paired differences ``a - b`` of ``metric`` on ``protocol`` (segment ``all``): per
    split, on the users both were measured on; the splits where both ran."""
    from recarena.metrics import clustered_bootstrap_ci

    rows = []
    key = (protocol, SEGMENT_ALL)
    for a, b in pairs:
        va, vb = models[a].values.get(key, {}), models[b].values.get(key, {})
        diffs, means_a, means_b = [], [], []
        for s in [s for s in va if s in vb]:
            fa, fb = va[s], vb[s]
            if metric not in fa.columns or metric not in fb.columns:
                continue
            users = fa.index.intersection(fb.index)
            xa = fa.loc[users, metric].to_numpy(dtype=np.float64)
            xb = fb.loc[users, metric].to_numpy(dtype=np.float64)
            both = ~np.isnan(xa) & ~np.isnan(xb)
            diffs.append(xa[both] - xb[both])
            means_a.append(float(xa[both].mean()) if both.any() else math.nan)
            means_b.append(float(xb[both].mean()) if both.any() else math.nan)
        if not diffs:
            continue
        mean, low, high, _ = clustered_bootstrap_ci(
            diffs, n_boot=evaluation.bootstrap, confidence=evaluation.confidence, seed=seed
        )
        diff = float(mean[0])
        split_diffs = np.array(means_a) - np.array(means_b)
        consistent = bool(
            diff != 0 and not math.isnan(diff) and (np.sign(split_diffs) == np.sign(diff)).all()
        )
        excludes_zero = bool(low[0] > 0 or high[0] < 0)
        rows.append(
            {
                "protocol": protocol,
                "metric": metric,
                "model_a": a,
                "model_b": b,
                "mean_a": float(np.nanmean(means_a)),
                "mean_b": float(np.nanmean(means_b)),
                "diff": diff,
                "ci_low": float(low[0]),
                "ci_high": float(high[0]),
                "consistent": consistent,
                "better": excludes_zero and consistent,
                "n_splits": len(diffs),
            }
        )
    return pd.DataFrame(rows, columns=SPLIT_COMPARISON_COLUMNS)


def split_comparisons(
    runs: dict[int, Path], evaluation: EvaluationConfig, table: pd.DataFrame, seed: int = 0
) -> pd.DataFrame:
    """The best model of each protocol (by the tuning metric) against every other one."""
    metric = evaluation.tune_metric
    models = _split_values(runs)
    frames = []
    for proto in dict.fromkeys(table["protocol"]):
        ranked = ranking_across_splits(table, proto, metric)
        if len(ranked) < 2:
            continue
        best = str(ranked["model"].iloc[0])
        pairs = [(best, str(other)) for other in ranked["model"].iloc[1:]]
        frames.append(compare_across_splits(models, evaluation, proto, metric, pairs, seed))
    if not frames:
        return pd.DataFrame(columns=SPLIT_COMPARISON_COLUMNS)
    return pd.concat(frames, ignore_index=True)


def write_split_summaries(
    run_dir: Path, runs: dict[int, Path], evaluation: EvaluationConfig, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``summary_splits.csv``, ``comparisons_splits.csv``, ``summary_splits.json`` and
    ``summary_splits.md`` in ``run_dir``, from the split folders ``runs`` (split seed ->
    run folder)."""
    table = build_split_summary(runs, evaluation, seed)
    comparisons = split_comparisons(runs, evaluation, table, seed)
    for frame, name in ((table, "summary_splits.csv"), (comparisons, "comparisons_splits.csv")):
        with atomic_path(run_dir / name) as tmp:
            frame.to_csv(tmp, index=False)
    write_json(
        run_dir / "summary_splits.json",
        {
            "split_seeds": list(runs),
            "runs": {str(s): path.name for s, path in runs.items()},
            "summary": table.replace({np.nan: None}).to_dict(orient="records"),
            "comparisons": comparisons.replace({np.nan: None}).to_dict(orient="records"),
        },
    )
    write_text(run_dir / "summary_splits.md", splits_markdown(table, comparisons, evaluation, runs))
    return table, comparisons


def _fmt(value: Any) -> str:
    return (
        "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"
    )


def splits_markdown(
    table: pd.DataFrame,
    comparisons: pd.DataFrame,
    evaluation: EvaluationConfig,
    runs: dict[int, Path],
    fmt: Callable[[Any], str] = _fmt,
) -> str:
    """``summary_splits.md``: the models across split seeds, one table per protocol."""
    metric = evaluation.tune_metric
    parts = [
        "# Across split seeds\n\n",
        f"Split seeds {', '.join(str(s) for s in runs)}: the experiment ran once per seed, "
        "each split, its candidates and its samples drawn from that seed (run folders: "
        + ", ".join(f"`{p.name}`" for p in runs.values())
        + "). ",
        f"Each model's {metric.upper()} is the mean over splits of the mean over users (a "
        "model trained at several training seeds: each user's mean over them). The "
        f"{evaluation.confidence:.0%} interval covers splits and users (a two-stage "
        "bootstrap: splits drawn with replacement, then each drawn split's users); `split "
        "sd` is the standard deviation of the per-split means, `user ±` the half-width of "
        "the interval over users alone (the mean of the splits' own).\n",
    ]
    for proto in dict.fromkeys(table["protocol"]):
        ranked = ranking_across_splits(table, proto, metric)
        if ranked.empty:
            continue
        parts.append(f"\n## `{proto}`\n\n")
        parts.append(f"| model | splits | {metric.upper()} | split sd | user ± | users |\n")
        parts.append("|---|---|---|---|---|---|\n")
        for _, r in ranked.iterrows():
            interval = (
                f" [{r['ci_low']:.4f}, {r['ci_high']:.4f}]"
                if math.isfinite(r["ci_low"]) and math.isfinite(r["ci_high"])
                else ""
            )
            users = (
                str(r["n_users_min"])
                if r["n_users_min"] == r["n_users_max"]
                else f"{r['n_users_min']}–{r['n_users_max']}"
            )
            parts.append(
                f"| {r['model']} | {r['n_splits']} | {r['mean']:.4f}{interval} | "
                f"{fmt(r['split_sd'])} | {fmt(r['user_half_width'])} | {users} |\n"
            )
        sub = comparisons[comparisons["protocol"] == proto]
        if len(sub):
            best = sub["model_a"].iloc[0]
            parts.append(
                f"\n{best} against each other model (difference of {metric.upper()}, paired "
                "on the users of each split, its interval over splits and users; *better* "
                "only when the interval excludes zero and the difference has the same sign "
                "at every split):\n\n"
            )
            parts.append("| against | difference | same sign at every split | better |\n")
            parts.append("|---|---|---|---|\n")
            for _, r in sub.iterrows():
                parts.append(
                    f"| {r['model_b']} | {r['diff']:+.4f} [{r['ci_low']:+.4f}, "
                    f"{r['ci_high']:+.4f}] | {'yes' if r['consistent'] else 'no'} | "
                    f"{'yes' if r['better'] else 'not shown'} |\n"
                )
    return "".join(parts)
