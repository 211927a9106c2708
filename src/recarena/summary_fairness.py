"""Quality per group of users, beside the leaderboards: ``fairness_users.csv`` and
``fairness_gaps.csv`` of a run folder, and a section of ``summary.md``.

Built from saved artifacts only (the data set's user table, the split's training
interactions, every model's per-user metrics), like the other summaries. The groupings
are the user table's columns (``[fairness] user_columns``; by default gender, age and
occupation where the data has them) and the behaviour groups (activity, mainstreamness) of
`recarena.metrics.fairness`, on the users each model was measured on, by the tuning metric
(segment ``all``). Each model's gap (best group's mean minus the worst's) is compared with
that of the best classical model of the protocol (the reference), paired on the same users.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recarena._artifacts import read_parquet_artifact
from recarena._io import atomic_path
from recarena.config import EvaluationConfig, FairnessConfig
from recarena.metrics.segments import SEGMENT_ALL

GROUP_COLUMNS = [
    "model",
    "protocol",
    "grouping",
    "group",
    "metric",
    "mean",
    "ci_low",
    "ci_high",
    "n_users",
]
GAP_COLUMNS = [
    "model",
    "protocol",
    "grouping",
    "metric",
    "best_group",
    "worst_group",
    "gap",
    "ci_low",
    "ci_high",
    "ratio",
    "reference",
    "gap_vs_reference",
    "vs_ci_low",
    "vs_ci_high",
    "verdict",
]


def load_fit_data(run_dir: Path) -> tuple[Any, Any, pd.DataFrame]:
    """The run's data set, its split, and the test-time training interactions (train +
    validation): read once for the user and the item tables."""
    from recarena.data.dataset import Dataset
    from recarena.splits import Split

    dataset = Dataset.load(run_dir / "dataset")
    split = Split.load(run_dir / "split")
    return dataset, split, pd.concat([split.train, split.valid], ignore_index=True)


def user_groupings(dataset: Any, seen: pd.DataFrame, fairness: FairnessConfig) -> pd.DataFrame:
    """One column per grouping, indexed by dense user id (``seen``, the test-time training
    data, decides the behaviour groups)."""
    import scipy.sparse as sp

    from recarena.metrics.fairness import attribute_groups, behaviour_groups

    train = sp.csr_matrix(
        (np.ones(len(seen)), (seen["user"].to_numpy(), seen["item"].to_numpy())),
        shape=(dataset.n_users, dataset.n_items),
    )
    frames = [behaviour_groups(train)]
    if dataset.users is not None:
        frames.insert(0, attribute_groups(dataset.users, fairness.user_columns))
    return pd.concat(frames, axis=1)


def build_fairness(
    run_dir: Path,
    evaluation: EvaluationConfig,
    fairness: FairnessConfig,
    records: list[dict[str, Any]],
    groupings: pd.DataFrame,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The group table and the gap table of every finished model and protocol, for the
    users' ``groupings`` (`user_groupings`)."""
    from recarena.metrics.fairness import gap_difference, group_quality

    metric = evaluation.tune_metric
    rows: list[dict[str, Any]] = []
    gaps: list[dict[str, Any]] = []
    protocols = list(dict.fromkeys(p for rec in records for p in rec.get("protocols", [])))
    for proto in protocols:
        values: dict[str, pd.Series] = {}
        family: dict[str, str] = {}
        for rec in records:
            path = run_dir / "models" / rec["label"] / proto / "per_user.parquet"
            if proto not in rec.get("protocols", []) or not path.exists():
                continue
            table = read_parquet_artifact(path)
            if metric not in table.columns or "impression" in table.columns:
                continue
            table = table[table["segment"] == SEGMENT_ALL]
            values[rec["label"]] = table.set_index("user")[metric].astype(float)
            family[rec["label"]] = str(rec.get("family", "?"))
        classical = [m for m in values if family[m] == "classical" and m != "random"]
        reference = max(classical, key=lambda m: values[m].mean()) if classical else None
        for grouping in groupings.columns:
            groups = groupings[grouping]
            found = {}
            for label, series in values.items():
                table, gap = group_quality(
                    series,
                    groups,
                    n_boot=evaluation.bootstrap,
                    confidence=evaluation.confidence,
                    seed=seed,
                    min_users=fairness.min_group_users,
                )
                found[label] = gap
                for group, r in table.iterrows():
                    rows.append(
                        {
                            "model": label,
                            "protocol": proto,
                            "grouping": grouping,
                            "group": group,
                            "metric": metric,
                            **{k: r[k] for k in ("mean", "ci_low", "ci_high")},
                            "n_users": int(r["n_users"]),
                        }
                    )
            for label, gap in found.items():
                if gap is None:
                    continue
                row = {
                    "model": label,
                    "protocol": proto,
                    "grouping": grouping,
                    "metric": metric,
                    "best_group": gap.best,
                    "worst_group": gap.worst,
                    "gap": gap.gap,
                    "ci_low": gap.ci_low,
                    "ci_high": gap.ci_high,
                    "ratio": gap.ratio,
                    "reference": reference,
                    "gap_vs_reference": math.nan,
                    "vs_ci_low": math.nan,
                    "vs_ci_high": math.nan,
                    "verdict": "",
                }
                ref_gap = found.get(reference) if reference else None
                if reference is not None and label != reference and ref_gap is not None:
                    diff, lo, hi = gap_difference(
                        values[label],
                        values[reference],
                        groups,
                        gap,
                        ref_gap,
                        n_boot=evaluation.bootstrap,
                        confidence=evaluation.confidence,
                        seed=seed,
                    )
                    row.update(gap_vs_reference=diff, vs_ci_low=lo, vs_ci_high=hi)
                    row["verdict"] = (
                        "wider" if lo > 0 else "narrower" if hi < 0 else "not shown to differ"
                    )
                gaps.append(row)
    return pd.DataFrame(rows, columns=GROUP_COLUMNS), pd.DataFrame(gaps, columns=GAP_COLUMNS)


def write_fairness(
    run_dir: Path,
    evaluation: EvaluationConfig,
    fairness: FairnessConfig,
    records: list[dict[str, Any]],
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame] | None:
    """``fairness_users.csv``, ``fairness_gaps.csv`` and ``fairness_items.csv`` (None
    without finished models)."""
    if not records:
        return None
    fit_data = load_fit_data(run_dir)
    groupings = user_groupings(fit_data[0], fit_data[2], fairness)
    groups, gaps = build_fairness(run_dir, evaluation, fairness, records, groupings, seed)
    items = build_exposure(run_dir, evaluation, fairness, records, fit_data)
    for frame, name in (
        (groups, "fairness_users.csv"),
        (gaps, "fairness_gaps.csv"),
        (items, "fairness_items.csv"),
    ):
        with atomic_path(run_dir / name) as tmp:
            frame.to_csv(tmp, index=False)
    return groups, gaps, items


def fairness_markdown(gaps: pd.DataFrame, evaluation: EvaluationConfig, min_users: int) -> str:
    """The section of ``summary.md`` on quality by user group."""
    if gaps.empty:
        return ""
    metric = evaluation.tune_metric.upper()
    parts = [
        "\n## Quality by user group\n\n",
        f"{metric} of each model's worst and best group of users, and the gap between them "
        f"with its {evaluation.confidence:.0%} interval (users resampled within each group); "
        "against the best classical model (the reference), the difference of the gaps on the "
        "same resamples: *wider* or *narrower* only when its interval excludes zero. Groups "
        f"of fewer than {min_users} users are not named worst or best. All groups: "
        "`fairness_users.csv`.\n",
    ]
    for (proto, grouping), sub in gaps.groupby(["protocol", "grouping"], sort=False):
        ref = sub["reference"].dropna()
        parts.append(
            f"\n### `{proto}` by {grouping}"
            + (f" (reference: {ref.iloc[0]})" if len(ref) else "")
            + "\n\n"
        )
        parts.append(
            "| model | worst group | best group | gap | vs reference |\n|---|---|---|---|---|\n"
        )
        for _, r in sub.sort_values("gap", kind="stable").iterrows():
            vs = (
                f"{r['gap_vs_reference']:+.4f} [{r['vs_ci_low']:+.4f}, {r['vs_ci_high']:+.4f}] {r['verdict']}"
                if isinstance(r["verdict"], str) and r["verdict"]
                else "–"
            )
            parts.append(
                f"| {r['model']} | {r['worst_group']} | {r['best_group']} | {r['gap']:.4f} "
                f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}] | {vs} |\n"
            )
    return "".join(parts)


ITEM_COLUMNS = [
    "model",
    "protocol",
    "grouping",
    "group",
    "exposure",
    "catalog_share",
    "training_share",
    "test_share",
    "exposure_over_catalog",
]


def build_exposure(
    run_dir: Path,
    evaluation: EvaluationConfig,
    fairness: FairnessConfig,
    records: list[dict[str, Any]],
    fit_data: tuple[Any, Any, pd.DataFrame],
) -> pd.DataFrame:
    """Each model's share of top-K slots per item group on full-catalog ranking, beside the
    group's share of the catalog, of the training interactions and of the test items
    (``fit_data``: `load_fit_data`)."""
    from recarena._artifacts import load_npz_artifact
    from recarena.metrics.fairness import exposure_shares, item_groups

    k = 10 if 10 in evaluation.ks else evaluation.ks[0]
    dataset, split, seen = fit_data
    n_items = dataset.n_items
    pairs = seen[["user", "item"]].drop_duplicates()
    popularity = np.bincount(pairs["item"].to_numpy(np.int64), minlength=n_items)[:n_items]
    test_counts = np.bincount(split.test["item"].to_numpy(np.int64), minlength=n_items)[:n_items]
    groupings = item_groups(dataset.items, popularity, evaluation.head_share, fairness.item_columns)
    rows = []
    for grouping, groups in groupings.items():
        catalog = exposure_shares(np.empty(0), groups, np.ones(n_items))
        training = exposure_shares(np.empty(0), groups, popularity)
        test = exposure_shares(np.empty(0), groups, test_counts)
        for rec in records:
            path = run_dir / "models" / rec["label"] / "full" / "lists.npz"
            if "full" not in rec.get("protocols", []) or not path.exists():
                continue
            lists = np.asarray(load_npz_artifact(path)["items"])[:, :k]
            shares = exposure_shares(lists, groups)
            for group in catalog:
                share = shares.get(group, 0.0)
                rows.append(
                    {
                        "model": rec["label"],
                        "protocol": "full",
                        "grouping": grouping,
                        "group": group,
                        "exposure": share,
                        "catalog_share": catalog[group],
                        "training_share": training.get(group, 0.0),
                        "test_share": test.get(group, 0.0),
                        "exposure_over_catalog": share / catalog[group],
                    }
                )
    return pd.DataFrame(rows, columns=ITEM_COLUMNS)


def exposure_markdown(items: pd.DataFrame, k: int) -> str:
    """The section of ``summary.md`` on the exposure of item groups."""
    if items.empty:
        return ""
    parts = [
        "\n## Exposure of item groups (full ranking)\n\n",
        f"Share of each model's top-{k} slots that goes to each group of items, beside the "
        "group's share of the catalog, of the training interactions and of the held-out test "
        "items (an item in several genres counts in each). All numbers: "
        "`fairness_items.csv`.\n",
    ]
    for grouping, sub in items.groupby("grouping", sort=False):
        models = list(dict.fromkeys(sub["model"]))
        parts.append(f"\n### by {grouping}\n\n")
        parts.append("| group | catalog | training | test | " + " | ".join(models) + " |\n")
        parts.append("|---|---|---|---|" + "---|" * len(models) + "\n")
        first = sub[sub["model"] == models[0]].set_index("group")
        by_model = {m: sub[sub["model"] == m].set_index("group")["exposure"] for m in models}
        for group, r in first.iterrows():
            cells = [
                f"{r['catalog_share']:.3f}",
                f"{r['training_share']:.3f}",
                f"{r['test_share']:.3f}",
            ]
            cells += [f"{by_model[m].get(group, 0.0):.3f}" for m in models]
            parts.append(f"| {group} | " + " | ".join(cells) + " |\n")
    return "".join(parts)
