"""Popularity bias: how popular (in training) the recommended items are, against the data.

Items are ranked by training popularity (distinct users per item in the data the final
models were fit on: train + valid) and cut into ten deciles of equal item count, decile 1
the most popular tenth of the catalog (ties in popularity broken by item id). For each
model, the share of its top-k recommendations that fall in each decile is compared with
the share of all interactions of the data set and of the held-out test interactions. ARP
(average recommended popularity) is the mean training popularity of the listed items.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from recarena._artifacts import load_npz_artifact, read_parquet_artifact
from recarena.report.loading import ReportData, RunArtifacts

N_BINS = 10


@dataclass
class PopularityReference:
    """Training popularity of the catalog and the data's own spread over the deciles."""

    popularity: np.ndarray  # (n_items,) training users per item
    decile: np.ndarray  # (n_items,) 0 = most popular tenth
    data_share: np.ndarray  # (N_BINS,) share of all interactions per decile
    test_share: np.ndarray  # (N_BINS,) share of held-out test interactions per decile
    data_arp: float  # mean training popularity over all interactions
    test_arp: float  # mean training popularity of the held-out test items


@dataclass
class ModelPopularity:
    share: np.ndarray  # (N_BINS,)
    arp: float
    n_recommendations: int


@dataclass
class PopularityAnalysis:
    k: int
    reference: PopularityReference
    models: dict[str, ModelPopularity] = field(default_factory=dict)


def _shares(items: np.ndarray, decile: np.ndarray) -> np.ndarray:
    items = items[(items >= 0) & (items < len(decile))]
    counts = np.bincount(decile[items], minlength=N_BINS).astype(np.float64)
    total = counts.sum()
    return counts / total if total else np.full(N_BINS, np.nan)


def reference_for(run: RunArtifacts) -> PopularityReference | None:
    """The popularity reference of a run (None when its split or data files are missing)."""
    split_dir = run.run_dir / "split"
    paths = [split_dir / "train.parquet", split_dir / "valid.parquet", split_dir / "test.parquet"]
    if not all(p.exists() for p in paths):
        return None
    n_items = int(run.split_meta.get("n_items") or 0)
    fit = pd.concat(
        [read_parquet_artifact(p, columns=["user", "item"]) for p in paths[:2]],
        ignore_index=True,
    )
    test = read_parquet_artifact(paths[2], columns=["item"])["item"].to_numpy(np.int64)
    if not n_items:
        n_items = int(max(fit["item"].max(initial=-1), test.max(initial=-1))) + 1
    pairs = fit.drop_duplicates()
    popularity = np.bincount(pairs["item"].to_numpy(np.int64), minlength=n_items)[:n_items]
    order = np.lexsort((np.arange(n_items), -popularity))  # most popular first, then by id
    decile = np.empty(n_items, dtype=np.int64)
    decile[order] = np.minimum(np.arange(n_items) * N_BINS // max(1, n_items), N_BINS - 1)
    inter_path = run.run_dir / "dataset" / "interactions.parquet"
    if inter_path.exists():
        data_items = read_parquet_artifact(inter_path, columns=["item"])["item"].to_numpy(np.int64)
    else:
        data_items = np.concatenate([fit["item"].to_numpy(np.int64), test])
    data_items = data_items[(data_items >= 0) & (data_items < n_items)]
    test = test[(test >= 0) & (test < n_items)]
    return PopularityReference(
        popularity=popularity,
        decile=decile,
        data_share=_shares(data_items, decile),
        test_share=_shares(test, decile),
        data_arp=float(popularity[data_items].mean()) if len(data_items) else math.nan,
        test_arp=float(popularity[test].mean()) if len(test) else math.nan,
    )


def analyse_popularity(
    data: ReportData, protocol: str, labels: list[str], reference: PopularityReference
) -> PopularityAnalysis:
    """Decile shares and ARP of each model's top-k lists on one protocol."""
    out = PopularityAnalysis(k=data.k, reference=reference)
    for label in labels:
        path = data.model(label).model_dir / protocol / "lists.npz"
        if not path.exists():
            continue
        items = np.asarray(load_npz_artifact(path)["items"])[:, : data.k].astype(np.int64).ravel()
        valid = items[(items >= 0) & (items < len(reference.decile))]
        out.models[label] = ModelPopularity(
            share=_shares(valid, reference.decile),
            arp=float(reference.popularity[valid].mean()) if len(valid) else math.nan,
            n_recommendations=int(len(valid)),
        )
    return out
