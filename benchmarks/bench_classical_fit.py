"""Fit time and validation NDCG@10 of the classical and text baselines on MovieLens.

For each data set (MovieLens-100k and -1M, every rating as a positive interaction), the
leave-one-out split (each user's last interaction is the test item, the one before the
validation item) is built, every model is fit at its default parameters on the training
part, and the validation item is ranked against the full catalog with the user's training
items excluded. Reported: fit seconds (best of ``--repeats``), seconds to rank every
validation user, NDCG@10 and HR@10.

Data: ``recarena.data.catalog.load_catalog_dataset``, as ``recarena data get`` fetches it.

Usage::

    python benchmarks/bench_classical_fit.py                      # both data sets, all models
    python benchmarks/bench_classical_fit.py --datasets ml-1m --models ease itemknn
    python benchmarks/bench_classical_fit.py --set ease.l2=250 --out results.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recarena._logs import quiet_libraries
from recarena.data.dataset import Dataset
from recarena.models.base import Recommender, TrainingData
from recarena.models.registry import create_model
from recarena.splits import Split, leave_one_out_split

logger = logging.getLogger("bench_classical_fit")

MODELS = ["most_popular", "itemknn", "ease", "als", "bpr", "tfidf", "bm25"]
DATASETS = ["ml-100k", "ml-1m"]
TEXT_TEMPLATE = "{title}. Genres: {genres}."


# ---------------------------------------------------------------------- data
def load_dataset(name: str, cache_dir: Path | None) -> tuple[Dataset, str]:
    """The catalog's copy of ``name``: fetched into the cache on first use, sha256 checked."""
    from recarena.cache import resolve_cache_dir
    from recarena.data.catalog import load_catalog_dataset

    cache = resolve_cache_dir(cache_dir)
    return load_catalog_dataset(name, cache), f"catalog ({cache})"


def training_data(dataset: Dataset, split: Split) -> TrainingData:
    return TrainingData(
        interactions=split.fit_interactions("valid"),
        n_users=dataset.n_users,
        n_items=dataset.n_items,
        items=dataset.items,
        item_text=dataset.item_text(TEXT_TEMPLATE),
        dataset_name=dataset.name,
    )


# ---------------------------------------------------------------------- measuring
def ndcg_hr_at_10(model: Recommender, split: Split) -> tuple[float, float, float]:
    """(NDCG@10, HR@10, seconds) of the validation items, full-catalog ranking.

    Leave-one-out holds out one item per user, so the ideal DCG is 1 and NDCG is
    ``1 / log2(rank + 1)`` when the item is in the top 10. Every evaluated user counts.
    """
    held = split.held_out("valid")
    users = held["user"].to_numpy(np.int64)
    target = held["item"].to_numpy(np.int64)
    start = time.perf_counter()
    lists = model.recommend(users, 10, seed=0)
    seconds = time.perf_counter() - start
    hit = lists.items == target[:, None]
    gains = 1.0 / np.log2(np.arange(2, 12))
    ndcg = float((hit * gains).sum(axis=1).mean())
    hr = float(hit.any(axis=1).mean())
    return ndcg, hr, seconds


def run(
    datasets: list[str],
    models: list[str],
    overrides: dict[str, dict[str, Any]],
    repeats: int,
    cache_dir: Path | None,
) -> list[dict[str, Any]]:
    rows = []
    for name in datasets:
        start = time.perf_counter()
        dataset, source = load_dataset(name, cache_dir)
        split = leave_one_out_split(dataset)
        data = training_data(dataset, split)
        logger.info(
            "%s from %s: %d users, %d items, %d training interactions (%.1fs)",
            name,
            source,
            data.n_users,
            data.n_items,
            len(data.interactions),
            time.perf_counter() - start,
        )
        for model_name in models:
            params = overrides.get(model_name, {})
            fit_seconds = []
            model = None
            for _ in range(repeats):
                model = create_model(model_name, params)
                model.fit(data, valid=split.valid)
                fit_seconds.append(model.fit_seconds_)
            assert model is not None
            ndcg, hr, rank_seconds = ndcg_hr_at_10(model, split)
            row = {
                "dataset": name,
                "model": model_name,
                "params": model.get_params(),
                "fit_s": min(fit_seconds),
                "rank_s": rank_seconds,
                "ndcg@10": ndcg,
                "hr@10": hr,
                "n_parameters": model.n_parameters()[0],
                "users": int(split.valid["user"].nunique()),
                "items": dataset.n_items,
            }
            rows.append(row)
            logger.info(
                "%-8s %-12s fit %7.2fs  rank %6.2fs  ndcg@10 %.4f  hr@10 %.4f",
                name,
                model_name,
                row["fit_s"],
                rank_seconds,
                ndcg,
                hr,
            )
    return rows


def _parse_overrides(pairs: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        model, _, param = key.partition(".")
        if not param or not value:
            raise SystemExit(f"--set expects MODEL.PARAM=VALUE, got {pair!r}")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.setdefault(model, {})[param] = parsed
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=DATASETS, choices=DATASETS)
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="MODEL.PARAM=VALUE",
        help="override a default parameter (JSON value), e.g. ease.l2=250",
    )
    parser.add_argument("--repeats", type=int, default=1, help="fits per model (best is kept)")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_libraries(verbose=False)  # the libraries' warnings and bars, as `recarena run`

    rows = run(args.datasets, args.models, _parse_overrides(args.set), args.repeats, args.cache_dir)
    table = pd.DataFrame(rows)[
        ["dataset", "model", "fit_s", "rank_s", "ndcg@10", "hr@10", "n_parameters"]
    ]
    print(
        f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}, load average at the end "
        + "/".join(f"{v:.1f}" for v in os.getloadavg())
    )
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=2, default=str))


if __name__ == "__main__":
    main()
