"""SASRec on MovieLens leave-one-out: epoch time, epochs to converge, test NDCG@10 and HR@10.

Protocol (that of the SASRec paper and of Klenitskiy & Vasilev, RecSys 2023): every rating is
an interaction; each user's last interaction (by time) is the test item, the one before the
validation item. Ranking is over the full catalog with the user's known items excluded.

1. **Validation fit.** SASRec trains on ``train``, measuring validation NDCG@10 every
   ``eval_every`` epochs; the best epoch's weights are kept (early stopping).
2. **Test, same weights** (``same-weights``): the validation model ranks the test items
   after each user's history *including* the validation item (`SASRec.update_history`),
   with train + valid items excluded. This is the paper's protocol; it costs no training.
3. **Test, refit** (``refit``, skipped with ``--no-refit``): a fresh model trains
   ``best_epoch_`` epochs on train + valid without validation, as the RecArena runner does
   with ``refit_params()``, and ranks the test items the same way.

Test metrics come from `recarena.metrics.ranking.ranking_metrics` over `Recommender.recommend`
lists (seeded random tie-breaking), not from the model's own validation code.

Published numbers for this protocol (ML-1M, full ranking): SASRec with full CE .1821 / .3152
(Klenitskiy & Vasilev 2023); RecBole's tuned SASRec .1286 / .2468 (ratings >= 3, 10-core,
max length 50, so not the same data).

Data: ``recarena.data.catalog.load_catalog_dataset``, as ``recarena data get`` fetches it.

Usage::

    python benchmarks/bench_sasrec.py                          # ML-1M, defaults
    python benchmarks/bench_sasrec.py --dataset ml-100k --no-refit
    python benchmarks/bench_sasrec.py --set epochs=3 patience=2 num_threads=1 --out r.json
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
import torch

from recarena._logs import quiet_libraries
from recarena.data.dataset import Dataset
from recarena.metrics.ranking import ranking_metrics
from recarena.models.base import TrainingData
from recarena.models.classical.sasrec import SASRec
from recarena.splits import Split, leave_one_out_split

logger = logging.getLogger("bench_sasrec")

DATASETS = ("ml-100k", "ml-1m")


def load_dataset(name: str, cache_dir: Path | None) -> tuple[Dataset, str]:
    """The catalog's copy of ``name``: fetched into the cache on first use, sha256 checked."""
    from recarena.cache import resolve_cache_dir
    from recarena.data.catalog import load_catalog_dataset

    cache = resolve_cache_dir(cache_dir)
    return load_catalog_dataset(name, cache), f"catalog ({cache})"


def training_data(dataset: Dataset, interactions: pd.DataFrame) -> TrainingData:
    return TrainingData(interactions, dataset.n_users, dataset.n_items, dataset_name=dataset.name)


def test_metrics(model: SASRec, split: Split) -> dict[str, float]:
    users = split.eval_users("test")
    start = time.perf_counter()
    lists = model.recommend(users, 10, exclude=split.seen_csr("test"), seed=0)
    seconds = time.perf_counter() - start
    frame = ranking_metrics(lists, split.truth_csr("test"), [10], ["ndcg", "hr"])
    return {
        "ndcg@10": float(frame["ndcg@10"].mean()),
        "hr@10": float(frame["hr@10"].mean()),
        "rank_s": seconds,
        "users": len(users),
    }


def run(name: str, params: dict[str, Any], refit: bool, cache_dir: Path | None) -> dict[str, Any]:
    dataset, source = load_dataset(name, cache_dir)
    split = leave_one_out_split(dataset)
    train = training_data(dataset, split.fit_interactions("valid"))
    full = training_data(dataset, split.fit_interactions("test"))
    logger.info(
        "%s from %s: %d users, %d items, %d train interactions, %d valid, %d test",
        name,
        source,
        dataset.n_users,
        dataset.n_items,
        len(split.train),
        len(split.valid),
        len(split.test),
    )
    model = SASRec(**params)
    logger.info("%r", model)
    cpu_start = time.process_time()
    model.fit(train, valid=split.valid)
    fit_cpu_s = time.process_time() - cpu_start
    log = model.training_log_
    epoch_s = np.diff([0.0] + [row["seconds"] for row in log])
    result: dict[str, Any] = {
        "dataset": name,
        "source": source,
        "params": model.get_params(),
        "n_parameters": model.n_parameters()[0],
        "device": str(next(model.network_.parameters()).device),
        "torch_threads": torch.get_num_threads()
        if params.get("num_threads") is None
        else params["num_threads"],
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "epochs_run": len(log),
        "best_epoch": model.best_epoch_,
        "valid_ndcg@10": model.best_valid_ndcg_,
        "median_epoch_s": float(np.median(epoch_s)),
        "validation_fit_s": model.fit_seconds_,
        # CPU seconds of this process (all threads): what an idle machine would take at
        # one thread, whatever else shares the cores
        "validation_fit_cpu_s": fit_cpu_s,
        "cpu_s_per_epoch": fit_cpu_s / max(len(log), 1),
        "training_log": log,
    }
    model.update_history(full)
    result["same-weights"] = test_metrics(model, split)
    logger.info("test, same weights, history with the valid item: %s", result["same-weights"])
    if refit:
        final = SASRec(**{**params, **model.refit_params()}).fit(full)
        result["refit"] = {"fit_s": final.fit_seconds_, **test_metrics(final, split)}
        logger.info(
            "test, refit on train + valid for %d epochs: %s", model.best_epoch_, result["refit"]
        )
    return result


def _parse_params(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if not value:
            raise SystemExit(f"--set expects PARAM=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-1m", choices=DATASETS)
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="PARAM=VALUE",
        help="SASRec parameter (JSON value), e.g. max_len=50 num_threads=1",
    )
    parser.add_argument(
        "--no-refit", action="store_true", help="skip the refit on train + valid (halves the time)"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="data cache (default: $RECARENA_CACHE or ~/.cache/recarena)",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    quiet_libraries(verbose=False)  # the libraries' warnings and bars, as `recarena run`
    start = time.perf_counter()
    result = run(args.dataset, _parse_params(args.set), not args.no_refit, args.cache_dir)
    result["total_s"] = time.perf_counter() - start
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2))
    summary = {k: v for k, v in result.items() if k != "training_log"}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
