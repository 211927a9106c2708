"""The counterfactual gender probe of the generative ranker (or the fine-tuned
cross-encoder) on MovieLens-100k, sampled-19.

SmolLM2-135M-Instruct, zero-shot, reads a prompt that names the user's age and gender
(``"A 25-year-old woman watched, in order: ... The next movie they will watch is:"``,
`recarena.models.language.generative`). For the same 200 seeded test users and the same
19 sampled negatives plus the held-out item (the split and candidates of the runner, seed
42), each user's candidates are scored as they are and with the gender swapped (woman <->
man), nothing else changed (`recarena.metrics.counterfactual.counterfactual_probe`): how
far the top 10 moves (overlap@10, rank shift, share of users whose top 10 changes), the
change of NDCG@10 of the held-out item, and the change of each genre's share of the top 10
slots. The same ranker with the attribute-free prompt is scored too, so a reader sees
whether naming the user changes quality at all.

The score normalisation is the one validation chose for this decoder on this protocol
(log-likelihood sum, prior correction .5; see the README's decoder section); no grid here.

``--model cross-encoder``: the fine-tuned cross-encoder of the README's ladder (minilm-l6's
bottom 3 layers, 20,000 training positives with 4 negatives each, one epoch, early stopping
on validation AUC) trained with ``user_text = "A {user:age}-year-old {user:gender} who
watched:"`` before the history, so it learns with the attribute in its input; the probe
then swaps the gender in that text. Its NDCG@10 is that of the model with the attribute
(the README's ladder has the one without).

Usage::

    python benchmarks/bench_counterfactual.py --output-dir /tmp/bench-cf --threads 1
    python benchmarks/bench_counterfactual.py --model cross-encoder --threads 1
    python benchmarks/bench_counterfactual.py --users 20     # pipeline check
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from recarena._logs import quiet_libraries
from recarena.cache import resolve_cache_dir
from recarena.config import parse_config
from recarena.experiment.protocols import sample_users
from recarena.experiment.runner import ExperimentRunner
from recarena.metrics.counterfactual import counterfactual_probe
from recarena.models.base import TrainingData
from recarena.models.language.generative import GenerativeRanker

ATTRIBUTE_PROMPT = (
    "A {user:age}-year-old {user:gender} watched, in order: {history}. "
    "The next movie they will watch is:"
)
WORDS = {"gender": {"M": "man", "F": "woman"}}
#: the cross-encoder's text about the user, before its history
USER_TEXT = "A {user:age}-year-old {user:gender} who watched:"
#: the cross-encoder of the README's sanity ladder (bench_cross_encoder.py --num-layers 3
#: --epochs 1), with its default budget of 30 minutes
CROSS_ENCODER = dict(model="minilm-l6", num_layers=3, epochs=1, max_train_seconds=1800)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--output-dir", default="runs/bench_counterfactual")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", choices=["generative", "cross-encoder"], default="generative")
    parser.add_argument(
        "--budget-seconds",
        type=float,
        default=1800.0,
        help="the cross-encoder's training budget (max_train_seconds)",
    )
    parser.add_argument(
        "--probe-only",
        action="store_true",
        help="skip the ranker without the attribute (its invariance and its NDCG@10)",
    )
    args = parser.parse_args()
    quiet_libraries(verbose=False)  # the libraries' warnings and bars, as `recarena run`
    out_dir = Path(args.output_dir)
    config = parse_config(
        {
            "name": "counterfactual-ml100k",
            "output_dir": str(out_dir),
            "data": {"name": "ml-100k"},
            "split": {"method": "leave_one_out"},
            "evaluation": {"protocols": [{"kind": "sampled", "n_negatives": 19}]},
            "models": [{"name": "most_popular"}],
        }
    )
    cache = resolve_cache_dir(args.cache_dir)
    runner = ExperimentRunner(config, out_dir / config.name, cache, progress=False)
    runner.prepare()
    proto = config.evaluation.protocols[0]
    cands = runner.candidates_for(proto, "test")
    assert cands is not None
    held = runner.split.held_out("test")
    users = sample_users(runner.split.eval_users("test"), args.users, config.seed)
    rows = np.searchsorted(cands.users, users)
    candidates = cands.items[rows]
    truth = dict(zip(held["user"].to_numpy(), held["item"].to_numpy(), strict=False))
    positive = np.array(
        [int(np.flatnonzero(candidates[r] == truth[u])[0]) for r, u in enumerate(users)]
    )
    items = runner.dataset.items
    genres = items["genres"] if "genres" in items.columns else None
    groups = {}
    if genres is not None:
        for genre in sorted({g for gs in genres for g in (gs if isinstance(gs, list) else [])}):
            groups[genre] = np.array(
                [genre in (gs if isinstance(gs, list) else []) for gs in genres]
            )
    data = runner.training_data("test")

    def probe_gender(model: Any) -> dict[str, Any]:
        """The gender swap on the users' candidates, with NDCG@10 and genre exposure."""
        return counterfactual_probe(
            model,
            users,
            candidates,
            "gender",
            {"M": "F", "F": "M"},
            k=10,
            positive=positive,
            item_groups=groups,
        )

    if args.model == "cross-encoder":
        probe_cross_encoder(args, runner, data, probe_gender, out_dir, len(users))
        return
    common = dict(
        model="smollm2-135m-instruct",
        length_norm="sum",
        prior_correction=0.5,
        num_threads=args.threads,
        progress=False,
    )
    result: dict = {"users": int(len(users)), "prompt": ATTRIBUTE_PROMPT}
    if not args.probe_only:
        start = time.perf_counter()
        plain = GenerativeRanker(**common).fit(data)
        plain_probe = counterfactual_probe(plain, users, candidates, "gender", {"M": "F", "F": "M"})
        plain_scores = plain.score(users, candidates)
        result["plain_seconds"] = time.perf_counter() - start
        ranks = np.argsort(np.argsort(-plain_scores, axis=1, kind="stable"), axis=1)
        r = ranks[np.arange(len(users)), positive]
        result["plain_ndcg@10"] = float(np.where(r < 10, 1 / np.log2(r + 2.0), 0).mean())
        result["plain_invariant"] = plain_probe
    start = time.perf_counter()
    ranker = GenerativeRanker(**common, prompt=ATTRIBUTE_PROMPT, user_values=WORDS).fit(data)
    probe = probe_gender(ranker)
    result["probe_seconds"] = time.perf_counter() - start
    result["probe"] = probe
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "counterfactual.json").write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({k: v for k, v in result.items() if k != "probe"}, indent=2, default=str))
    _print_probe(probe)


def probe_cross_encoder(
    args: argparse.Namespace,
    runner: ExperimentRunner,
    data_test: TrainingData,
    probe_gender: Callable[[Any], dict[str, Any]],
    out_dir: Path,
    n_users: int,
) -> None:
    """Train the cross-encoder with the user's age and gender in its input (on the
    training data, early stopping on the validation item, as the runner's tuning fit with
    ``refit = false``), then probe it."""
    from recarena.models.language.cross_encoder import CrossEncoderRecommender

    start = time.perf_counter()
    model = CrossEncoderRecommender(
        **{**CROSS_ENCODER, "max_train_seconds": args.budget_seconds},
        user_text=USER_TEXT,
        user_values=WORDS,
        num_threads=args.threads,
        progress=False,
    ).fit(runner.training_data("valid"), valid=runner.split.valid)
    # as the runner tests a model that is not refit: histories that hold the validation
    # interactions (train + valid, the test stage's data), with what it learned on train
    model.update_history(data_test)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    probe = probe_gender(model)
    result = {
        "users": n_users,
        "model": "cross-encoder",
        "user_text": USER_TEXT,
        "params": model.get_params(),
        "fit_seconds": fit_seconds,
        "probe_seconds": time.perf_counter() - start,
        "best_valid_auc": model.best_valid_auc_,
        "best_step": model.best_step_,
        "training_log": model.training_log_,
        "probe": probe,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "counterfactual-cross-encoder.json").write_text(
        json.dumps(result, indent=2, default=str)
    )
    print(
        f"cross-encoder with {USER_TEXT!r}: fit {fit_seconds:.0f} s, best validation AUC "
        f"{model.best_valid_auc_:.3f} at step {model.best_step_}"
    )
    _print_probe(probe)


def _print_probe(p: dict) -> None:
    print(
        f"gender swap, {p['n_users']} users: overlap@10 {p['overlap_at_k']['mean']:.3f} "
        f"[{p['overlap_at_k']['ci_low']:.3f}, {p['overlap_at_k']['ci_high']:.3f}], "
        f"rank shift {p['rank_shift']['mean']:.2f}, changed users "
        f"{p['changed_users']['mean']:.2f}; NDCG@10 {p['ndcg@10_before']:.4f} -> "
        f"{p['ndcg@10_after']:.4f} (change {p['ndcg@10_change']['mean']:+.4f} "
        f"[{p['ndcg@10_change']['ci_low']:+.4f}, {p['ndcg@10_change']['ci_high']:+.4f}])"
    )
    _print_exposure(p, "both directions")
    for v, row in p["by_value"].items():
        change = row["ndcg@10_change"]
        print(
            f"{v} -> {row['to']}, {row['n_users']} users: overlap@10 "
            f"{row['overlap_at_k']['mean']:.3f}, changed users {row['changed_users']['mean']:.2f}, "
            f"NDCG@10 change {change['mean']:+.4f} [{change['ci_low']:+.4f}, "
            f"{change['ci_high']:+.4f}]"
        )
        _print_exposure(row, f"{v} -> {row['to']}")


def _print_exposure(p: dict, title: str) -> None:
    """The six item groups whose top-10 share moved most, with intervals."""
    print(f"  exposure, {title}:")
    for row in sorted(p.get("exposure", []), key=lambda r: -abs(r["change_mean"]))[:6]:
        print(
            f"  {row['group']:<12} top-10 share {row['share_before']:.3f} -> "
            f"{row['share_after']:.3f} ({row['change_mean']:+.4f} "
            f"[{row['change_ci_low']:+.4f}, {row['change_ci_high']:+.4f}])"
        )


if __name__ == "__main__":
    main()
