"""Every classical recommender on MovieLens-1M, leave-one-out, full ranking, all users.

Runs ``configs/ml1m-loo.toml`` through `recarena.runner.run_experiment` (each model tuned on
the validation interaction with its default grid and refit on train + validation; SASRec
with early stopping only and no refit, its validation weights ranking each test item after
a history that includes the validation item; all tested on every user's last rating),
then prints NDCG@10 and HR@10 with 95% bootstrap intervals, fit and tuning time, and the peak resident memory
of the whole process (``getrusage``: the figure the core issue bounds at 4 GiB).

Published numbers for this protocol (ML-1M, every rating an interaction, leave-one-out by
time, full ranking, rated items excluded), NDCG@10 / HR@10:

- Klenitskiy & Vasilev, "Turning Dross Into Gold Loss: is BERT4Rec really better than
  SASRec?", RecSys 2023: SASRec with full cross-entropy .1821 / .3152; SASRec with BCE and
  one negative .1341 / .2500; BERT4Rec .1537 / .2843.
- RecBole's tuned sequential results (ratings >= 3, 10-core, max length 50, so a different
  data set): SASRec .1286 / .2468.

No source we know reports EASE, ItemKNN, ALS or BPR on exactly this protocol; their numbers
are printed as measured.

Usage::

    python benchmarks/bench_ml1m_loo.py --cache-dir /tmp/cache --output-dir /tmp/bench
    python benchmarks/bench_ml1m_loo.py --models ease,itemknn   # a subset
    python benchmarks/bench_ml1m_loo.py --ties file   # ties in file order, a run of its own

Re-running resumes: finished models are read back, not recomputed (``--overwrite`` starts
over). Peak memory then covers only what this process did.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import sys
import time
from pathlib import Path

from recarena._logs import quiet_libraries
from recarena.config import load_config
from recarena.runner import run_experiment

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "ml1m-loo.toml"
PUBLISHED = {
    "sasrec": "CE .1821 / .3152 (Klenitskiy & Vasilev 2023); RecBole .1286 / .2468",
}


def _peak_rss_mib() -> float:
    # Linux reports ru_maxrss in KiB
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(CONFIG))
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--output-dir", default="runs/bench_ml1m_loo")
    parser.add_argument("--models", default=None, help="comma-separated model labels to keep")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument(
        "--ties",
        choices=("hash", "file"),
        default=None,
        help="override [data] ties: 'file' gives the split of the tables measured before "
        "equal timestamps had a fixed order",
    )
    args = parser.parse_args()
    # the models' own progress (SASRec's epochs, with validation NDCG@10) on stderr
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    quiet_libraries(verbose=False)  # the libraries' warnings and bars, as `recarena run`

    config = load_config(args.config)
    if args.ties is not None:
        data = config.data.model_copy(update={"ties": args.ties})
        config = config.model_copy(update={"data": data, "name": f"{config.name}-ties-{args.ties}"})
    if args.models:
        keep = set(args.models.split(","))
        config = config.model_copy(
            update={"models": [m for m in config.models if m.display_name in keep]}
        )
    start = time.perf_counter()
    result = run_experiment(
        config,
        output_dir=args.output_dir,
        cache_dir=args.cache_dir,
        overwrite=args.overwrite,
        progress=True,
        on_event=lambda message: print(message, file=sys.stderr, flush=True),
    )
    wall = time.perf_counter() - start
    peak = _peak_rss_mib()

    summary = result.summary
    rows = summary[(summary["protocol"] == "full") & (summary["segment"] == "all")]
    table = rows.pivot_table(
        index="model", columns="metric", values=["mean", "ci_low", "ci_high"], aggfunc="first"
    )
    out: dict[str, dict[str, float | str | None]] = {}
    print(
        f"\nML-1M leave-one-out, full ranking ({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs): {wall:.0f} s wall, peak RSS {peak:.0f} MiB"
    )
    print(
        f"{'model':14s} {'NDCG@10 [95% CI]':26s} {'HR@10 [95% CI]':26s} "
        f"{'fit s':>7s} {'tune s':>7s}  published (NDCG@10 / HR@10)"
    )
    by_ndcg = table[("mean", "ndcg@10")].sort_values(ascending=False)
    for model in by_ndcg.index:
        cost_file = result.run_dir / "models" / model / "cost.json"
        cost = json.loads(cost_file.read_text()) if cost_file.exists() else {}

        def cell(metric: str, model: str = model) -> str:
            m, lo, hi = (table.loc[model, (k, metric)] for k in ("mean", "ci_low", "ci_high"))
            return f"{m:.4f} [{lo:.4f}, {hi:.4f}]"

        fit, tune = cost.get("fit_seconds"), cost.get("tuning_seconds")
        print(
            f"{model:14s} {cell('ndcg@10'):26s} {cell('hr@10'):26s} "
            f"{fit or 0:7.1f} {tune or 0:7.1f}  {PUBLISHED.get(model, '-')}"
        )
        out[model] = {
            "ndcg@10": float(table.loc[model, ("mean", "ndcg@10")]),
            "hr@10": float(table.loc[model, ("mean", "hr@10")]),
            "fit_seconds": fit,
            "tuning_seconds": tune,
            "peak_memory_mib_model": cost.get("peak_memory_mib"),
        }
    for label, why in {**result.failed, **result.skipped}.items():
        print(f"{label}: not evaluated: {why}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"wall_seconds": wall, "peak_rss_mib": peak, "models": out}, indent=2)
        )


if __name__ == "__main__":
    main()
