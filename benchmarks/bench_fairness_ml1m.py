"""Quality per user group and item exposure on MovieLens-1M, for classical and LM models.

One experiment through the runner: ``configs/ml1m-loo.toml`` (leave-one-out by time, full
ranking, all 6,040 users, each classical model tuned on its default grid) with the
language-model entrants added: ``lm-frozen`` (minilm-l6 item vectors, the user the
recency-weighted mean of their history) and ``lm-two-tower`` (LoRA on the encoder's top
layers, its CPU defaults). SASRec and the text-SASRec train for an hour or more each on 2
CPU cores; they run only when named with ``--models`` (``sasrec``, ``lm-text-sasrec+id``;
with ``--sasrec-recipe cosine``, both by configs/ml1m-sasrec-fast.toml's 40-epoch cosine
schedule: ``sasrec-cosine``, ``lm-text-sasrec+id-cosine``). ``lm-text-sasrec-joint+id``, the
text-SASRec with the encoder's top layers then trained with it, always trains by the constant
learning rate: under the cosine schedule its frozen stage would use every epoch.

The run writes `fairness_users.csv`, `fairness_gaps.csv` and `fairness_items.csv`
(`recarena.summary_fairness`); this script prints from them, per model: NDCG@10 for women
and men and the gap between them with its 95% interval (stratified bootstrap), the worst
and best age band and their gap, the gap's difference from the best classical model's
(*wider* / *narrower* only where its interval excludes zero), and the share of top-10
slots that go to the popularity tail (80% of the catalog) beside the tail's share of the
test items. It writes them to ``<output-dir>/fairness_ml1m.json``; a stopped run resumes.

Usage::

    python benchmarks/bench_fairness_ml1m.py --output-dir /tmp/bench-fairness --threads 1
    python benchmarks/bench_fairness_ml1m.py --models ease,most_popular,lm-frozen
    python benchmarks/bench_fairness_ml1m.py --models ease,sasrec-cosine --sasrec-recipe cosine
    python benchmarks/bench_fairness_ml1m.py --models ease,lm-text-sasrec-joint+id
    python benchmarks/bench_fairness_ml1m.py --models ease,lm-text-sasrec+id-cosine \
        --sasrec-recipe cosine
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from recarena._logs import quiet_libraries
from recarena.config import load_config, parse_config
from recarena.runner import run_experiment

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "ml1m-loo.toml"
#: ``--sasrec-recipe cosine``: SASRec as this file trains it (a cosine learning rate over
#: 40 epochs, about half an hour on 2 CPU cores) instead of ml1m-loo.toml's constant 1e-3
FAST_SASREC = Path(__file__).resolve().parent.parent / "configs" / "ml1m-sasrec-fast.toml"
#: run only when named with --models: an hour or more each on 2 CPU cores
LONG = {
    "sasrec",
    "lm-text-sasrec+id",
    "sasrec-cosine",
    "lm-text-sasrec+id-cosine",
    "lm-text-sasrec-joint+id",
}
#: the parameters of the cosine recipe that the text-SASRec takes from the fast SASRec
COSINE_SCHEDULE = ("lr", "lr_schedule", "warmup_epochs", "decay_epochs", "epochs")


def language_models(threads: int | None) -> list[dict[str, Any]]:
    torch_opts = {} if threads is None else {"num_threads": threads}
    # the text-SASRec with ids, frozen and jointly trained alike
    text_sasrec = {
        "model": "minilm-l6",
        "id_embedding": True,
        "max_len": 200,
        "dropout": 0.2,
        "eval_every": 2,
        "patience": 5,
        **torch_opts,
    }
    return [
        {"name": "lm-frozen", "params": {"model": "minilm-l6"}},
        {
            "name": "lm-two-tower",
            "params": {"model": "minilm-l6", "tuning": "lora", **torch_opts},
            "grid": {},
        },
        {
            "name": "lm-text-sasrec",
            "label": "lm-text-sasrec+id",
            "params": dict(text_sasrec),
            "grid": {},
            "refit": False,
        },
        {
            # the text-SASRec above, then LoRA on the encoder's top 2 layers trained with it
            # (its defaults) once its frozen stage stops improving; always the constant 1e-3
            # schedule: the cosine one leaves no epochs for a second stage
            "name": "lm-text-sasrec-joint",
            "label": "lm-text-sasrec-joint+id",
            "params": dict(text_sasrec),
            "grid": {},
            "refit": False,
        },
    ]


def experiment(args: argparse.Namespace) -> dict[str, Any]:
    base = load_config(CONFIG).model_dump(mode="json", exclude_none=True)
    models = base["models"] + language_models(args.threads)
    if args.sasrec_recipe == "cosine":
        fast = load_config(FAST_SASREC).model_dump(mode="json", exclude_none=True)
        (cosine,) = (m for m in fast["models"] if m["name"] == "sasrec")
        cosine["params"].pop("num_threads", None)  # --threads decides, as for the others
        models = [cosine if m["name"] == "sasrec" else m for m in models]
        # the text-SASRec trains by the same schedule as the SASRec beside it
        schedule = {k: cosine["params"][k] for k in COSINE_SCHEDULE}
        for entry in models:
            if entry.get("label") == "lm-text-sasrec+id":
                entry["params"].update(schedule)
                entry["label"] = "lm-text-sasrec+id-cosine"
    if args.threads is not None:
        for entry in models:
            if entry["name"] == "sasrec":
                entry.setdefault("params", {})["num_threads"] = args.threads
    keep = None if args.models is None else set(args.models.split(","))
    chosen = [
        m
        for m in models
        if (keep is None and m.get("label", m["name"]) not in LONG)
        or (keep is not None and m.get("label", m["name"]) in keep)
    ]
    base.update(name="fairness-ml1m", output_dir=args.output_dir, models=chosen)
    base["evaluation"]["ks"] = [10]
    return base


def _gap(gaps: pd.DataFrame, model: str, grouping: str) -> dict[str, Any] | None:
    rows = gaps[(gaps["model"] == model) & (gaps["grouping"] == grouping)]
    if rows.empty:
        return None
    r = rows.iloc[0]
    return {
        "best": str(r["best_group"]),
        "worst": str(r["worst_group"]),
        "gap": float(r["gap"]),
        "ci": [float(r["ci_low"]), float(r["ci_high"])],
        "reference": None if pd.isna(r["reference"]) else str(r["reference"]),
        "vs_reference": None if pd.isna(r["gap_vs_reference"]) else float(r["gap_vs_reference"]),
        "vs_ci": [float(r["vs_ci_low"]), float(r["vs_ci_high"])],
        "verdict": None if pd.isna(r["verdict"]) else str(r["verdict"]),
    }


def summarise(run_dir: Path) -> list[dict[str, Any]]:
    users = pd.read_csv(run_dir / "fairness_users.csv")
    gaps = pd.read_csv(run_dir / "fairness_gaps.csv")
    items = pd.read_csv(run_dir / "fairness_items.csv")
    summary = pd.read_csv(run_dir / "summary.csv")
    overall = summary[(summary["segment"] == "all") & (summary["metric"] == "ndcg@10")].set_index(
        "model"
    )
    rows = []
    for model in overall.sort_values("mean", ascending=False).index:
        by_group = users[(users["model"] == model) & (users["metric"] == "ndcg@10")]
        groups = {
            f"{g.grouping}={g.group}": {
                "mean": float(g.mean),
                "ci": [float(g.ci_low), float(g.ci_high)],
                "n_users": int(g.n_users),
            }
            for g in by_group.itertuples()
        }
        tail = items[
            (items["model"] == model)
            & (items["grouping"] == "popularity")
            & (items["group"] == "tail")
        ]
        rows.append(
            {
                "model": model,
                "ndcg@10": float(overall.loc[model, "mean"]),
                "ci": [float(overall.loc[model, "ci_low"]), float(overall.loc[model, "ci_high"])],
                "groups": groups,
                "gender_gap": _gap(gaps, model, "gender"),
                "age_gap": _gap(gaps, model, "age"),
                "tail_exposure": None if tail.empty else float(tail["exposure"].iloc[0]),
                "tail_test_share": None if tail.empty else float(tail["test_share"].iloc[0]),
                "tail_catalog_share": None if tail.empty else float(tail["catalog_share"].iloc[0]),
            }
        )
    return rows


def _fmt_gap(gap: dict[str, Any] | None) -> str:
    if gap is None:
        return "-"
    verdict = "" if gap["verdict"] in (None, "reference") else f" ({gap['verdict']})"
    return (
        f"{gap['best']}>{gap['worst']} {gap['gap']:+.4f} "
        f"[{gap['ci'][0]:+.4f}, {gap['ci'][1]:+.4f}]{verdict}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--output-dir", default="runs/bench_fairness_ml1m")
    parser.add_argument("--models", default=None, help="comma-separated labels to run")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the models")
    parser.add_argument(
        "--sasrec-recipe",
        choices=("published", "cosine"),
        default="published",
        help="SASRec as configs/ml1m-loo.toml trains it (constant 1e-3, up to 200 epochs) or "
        "as configs/ml1m-sasrec-fast.toml does (cosine over 40 epochs; label sasrec-cosine, "
        "and the text-SASRec by the same schedule: lm-text-sasrec+id-cosine)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    quiet_libraries(verbose=False)  # the libraries' warnings and bars, as `recarena run`
    config = parse_config(experiment(args))
    start = time.perf_counter()
    result = run_experiment(config, cache_dir=args.cache_dir, progress=False, on_event=print)
    seconds = time.perf_counter() - start
    for label, error in result.failed.items():
        print(f"FAILED {label}: {error}")
    rows = summarise(result.run_dir)
    out = {"run_seconds": seconds, "rows": rows}
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.output_dir) / "fairness_ml1m.json").write_text(json.dumps(out, indent=2))
    print(f"\nrun {seconds:.0f} s; NDCG@10, full ranking, {config.data.name}")
    header = f"{'model':<20} {'all':>7} {'F':>7} {'M':>7}  {'gender gap':<44} {'age gap':<48} tail"
    print(header)
    for r in rows:
        g = r["groups"]
        women = g.get("gender=F", {}).get("mean", float("nan"))
        men = g.get("gender=M", {}).get("mean", float("nan"))
        tail = "-" if r["tail_exposure"] is None else f"{r['tail_exposure']:.3f}"
        print(
            f"{r['model']:<20} {r['ndcg@10']:.4f} {women:.4f} {men:.4f}  "
            f"{_fmt_gap(r['gender_gap']):<44} {_fmt_gap(r['age_gap']):<48} {tail}"
        )
    if rows and rows[0]["tail_test_share"] is not None:
        print(
            f"tail: {rows[0]['tail_catalog_share']:.0%} of the catalog, "
            f"{rows[0]['tail_test_share']:.1%} of the test items"
        )


if __name__ == "__main__":
    main()
