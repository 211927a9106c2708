"""Generative LM ranker on MovieLens-100k: quality, speed with and without KV-cache reuse, load time.

Protocol (that of LLMRank, ECIR 2024, on ML-100k instead of ML-1M): leave-one-out by time;
each evaluated user's held-out item is ranked among itself and 19 uniformly sampled
negatives the user never interacted with (20 candidates, drawn once with the experiment's
seed and saved with the split); a seeded sample of ``--users`` users. Random ranking scores
NDCG@10 0.227 and HR@10 0.5 here. LLMRank reports NDCG@10 x100 on ML-1M: Pop 52.3, BPR 64.3,
SASRec 78.9, zero-shot ChatGPT 42.9, LLaMA-2-70B 31.2.

Parts (``--parts``, all by default):

``load``
    Load time of the decoder: the first load dequantizes the GGUF file and saves a float
    copy; the second reads the copy. Measured in a temporary cache that holds a copy of the
    installed package without its converted folder.
``speed``
    Candidates per second of the same ``--speed-users`` test users scored with the prompt's
    key-value cache reused for every candidate and without it (each full prompt +
    candidate sequence run on its own), and the largest score difference between the two.
``sweep``
    How to score, chosen on the **validation** users (never the test users): plain prompt
    or chat template, ``length_norm`` sum or mean, ``prior_correction`` 0, 0.5 or 1. One
    scoring pass per prompt format gives every variant (they combine the same per-candidate
    sums, token counts and empty-history log-likelihoods).
``runner``
    The real runner (`recarena.runner.run_experiment`) on an experiment TOML: protocol
    ``sampled`` with 19 negatives, the generative ranker (its defaults, or ``--params``)
    with a ``max_eval_users`` budget beside MostPopular and ItemKNN on the same users.
    Prints the runner's events and summary table.

Usage::

    python benchmarks/bench_generative.py --cache-dir /tmp/gen-cache --num-threads 1
    python benchmarks/bench_generative.py --parts runner --users 200 --models gemma3-270m
    python benchmarks/bench_generative.py --parts sweep --users 100 --out sweep.json

``--num-threads 1`` is much faster for a 135M model on a CPU that other processes share
(torch's multi-threaded kernels then wait on each other).
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from recarena.config import load_config  # noqa: E402
from recarena.data import load_dataset  # noqa: E402
from recarena.metrics.ranking import ranking_metrics  # noqa: E402
from recarena.models.base import RankedLists, TrainingData  # noqa: E402
from recarena.models.lm_generative import GenerativeRanker  # noqa: E402
from recarena.ranking import top_k  # noqa: E402
from recarena.runner import build_split, run_experiment  # noqa: E402

logger = logging.getLogger("bench_generative")

SEED = 42
N_NEGATIVES = 19
PROTOCOL = f"sampled-{N_NEGATIVES}"


def experiment_toml(
    name: str, run_dir: Path, cache_dir: Path, users: int, models: list[dict[str, Any]]
) -> str:
    lines = [
        f'name = "{name}"',
        f"seed = {SEED}",
        f'output_dir = "{run_dir}"',
        f'cache_dir = "{cache_dir}"',
        "",
        "[data]",
        'name = "ml-100k"',
        "",
        "[split]",
        'method = "leave_one_out"',
        "",
        "[evaluation]",
        "ks = [1, 5, 10]",
        'metrics = ["hr", "ndcg", "mrr", "coverage", "arp"]',
        'tune_metric = "ndcg@10"',
        "latency_users = 5",
        "bootstrap = 1000",
        "",
        "[[evaluation.protocols]]",
        'kind = "sampled"',
        f"n_negatives = {N_NEGATIVES}",
    ]
    for model in models:
        lines += ["", "[[models]]", f'name = "{model["name"]}"']
        if "label" in model:
            lines.append(f'label = "{model["label"]}"')
        lines.append(f"max_eval_users = {users}")
        if model.get("params"):
            lines.append(f"params = {_toml_inline(model['params'])}")
    return "\n".join(lines) + "\n"


def _toml_inline(params: dict[str, Any]) -> str:
    parts = []
    for key, value in params.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = json.dumps(value)
        else:
            text = repr(value)
        parts.append(f"{key} = {text}")
    return "{ " + ", ".join(parts) + " }"


# ---------------------------------------------------------------------------- parts
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
        out = {}
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


def _stage_data(dataset: Any, split: Any, stage: str, cache_dir: Path) -> TrainingData:
    return TrainingData(
        interactions=split.fit_interactions(stage),
        n_users=dataset.n_users,
        n_items=dataset.n_items,
        items=dataset.items,
        item_text=dataset.item_text(dataset.info.get("default_text_template") or "{title}"),
        dataset_name=dataset.name,
        cache_dir=cache_dir,
    )


def _sample(users: np.ndarray, n: int, seed: int) -> np.ndarray:
    if len(users) <= n:
        return users
    return np.sort(np.random.default_rng([seed, 31337]).choice(users, n, replace=False))


def part_speed(
    model: str, dataset: Any, split: Any, cache_dir: Path, n_users: int, threads: int | None
) -> dict[str, Any]:
    cand = split.candidates[f"{PROTOCOL}:test"]
    users = _sample(cand.users, n_users, SEED)
    items = cand.items[np.searchsorted(cand.users, users)]
    data = _stage_data(dataset, split, "test", cache_dir)
    ranker = GenerativeRanker(model, device="cpu", num_threads=threads, progress=False).fit(data)
    ranker._ensure_lm()
    out: dict[str, Any] = {"users": len(users), "candidates": int((items >= 0).sum())}
    scores = {}
    for kv in (True, False):
        ranker.kv_cache = kv
        start = time.perf_counter()
        scores[kv] = ranker.score(users, items)
        seconds = time.perf_counter() - start
        out[f"candidates_per_second_{'kv' if kv else 'no_kv'}"] = out["candidates"] / seconds
        out[f"seconds_per_user_{'kv' if kv else 'no_kv'}"] = seconds / len(users)
    out["speedup"] = out["candidates_per_second_kv"] / out["candidates_per_second_no_kv"]
    out["max_abs_score_difference"] = float(np.abs(scores[True] - scores[False]).max())
    prompts = [len(ranker._user_prompt_ids(int(u))) for u in users]
    out["mean_prompt_tokens"] = float(np.mean(prompts))
    print(
        f"{model}: {out['candidates_per_second_kv']:.1f} candidates/s with KV-cache reuse, "
        f"{out['candidates_per_second_no_kv']:.1f} without: x{out['speedup']:.1f} "
        f"(prompts {out['mean_prompt_tokens']:.0f} tokens; largest score difference "
        f"{out['max_abs_score_difference']:.1e})"
    )
    return out


def part_sweep(
    model: str, dataset: Any, split: Any, cache_dir: Path, n_users: int, threads: int | None
) -> dict[str, Any]:
    """Variants of scoring on validation users, from one scoring pass per prompt format."""
    cand = split.candidates[f"{PROTOCOL}:valid"]
    users = _sample(cand.users, n_users, SEED)
    items = cand.items[np.searchsorted(cand.users, users)]
    truth = split.truth_csr("valid")
    data = _stage_data(dataset, split, "valid", cache_dir)
    results: dict[str, Any] = {"users": len(users)}
    for chat in (False, True):
        ranker = GenerativeRanker(
            model, chat_template=chat, device="cpu", num_threads=threads, progress=False
        ).fit(data)
        ranker._ensure_lm()
        start = time.perf_counter()
        sums = np.full(items.shape, np.nan)
        counts = np.ones(items.shape)
        for r, user in enumerate(users):
            prompt = ranker._user_prompt_ids(int(user))
            row = [k for k in range(items.shape[1]) if items[r, k] >= 0]
            conts = [ranker._candidate_ids(int(items[r, k])) for k in row]
            assert all(c is not None for c in conts)
            s, c = ranker._continuation_logprobs(prompt, conts)  # type: ignore[arg-type]
            sums[r, row], counts[r, row] = s, c
        valid = items >= 0
        prior = np.zeros(items.shape)
        prior[valid] = ranker._prior_logliks(items[valid])
        seconds = time.perf_counter() - start
        # the derivation below must match the model's own scores: check one variant
        ranker.length_norm, ranker.prior_correction = "mean", 1.0
        check = ranker.score(users[:3], items[:3])
        derived = ((sums - prior) / counts)[:3]
        assert np.allclose(check[valid[:3]], derived[valid[:3]], atol=1e-3), (check, derived)
        for norm in ("sum", "mean"):
            for weight in (0.0, 0.5, 1.0):
                value = sums - weight * prior
                if norm == "mean":
                    value = value / counts
                value = np.where(valid, value, -np.inf).astype(np.float32)
                idx, top = top_k(value, 10, users=users, seed=SEED)
                lists = RankedLists(users, np.take_along_axis(items, np.maximum(idx, 0), 1), top)
                frame = ranking_metrics(lists, truth, [10], ["ndcg", "hr"])
                key = f"{'chat' if chat else 'plain'} {norm} prior={weight:g}"
                results[key] = {
                    "ndcg@10": float(frame["ndcg@10"].mean()),
                    "hr@10": float(frame["hr@10"].mean()),
                }
        results[f"{'chat' if chat else 'plain'} seconds"] = seconds
        print(
            f"{model}: {'chat' if chat else 'plain'} pass over {len(users)} users: {seconds:.0f} s"
        )
    print(f"{model}: validation users ({len(users)}), NDCG@10 / HR@10 with 20 candidates:")
    for key, value in results.items():
        if isinstance(value, dict):
            print(f"  {key:<24} {value['ndcg@10']:.4f} / {value['hr@10']:.4f}")
    return results


def part_runner(
    models: list[str],
    params: dict[str, Any],
    cache_dir: Path,
    run_dir: Path,
    n_users: int,
    threads: int | None,
) -> dict[str, Any]:
    entries: list[dict[str, Any]] = [{"name": "most_popular"}, {"name": "itemknn"}]
    for model in models:
        model_params = {"model": model, "progress": False, **params}
        if threads is not None:
            model_params["num_threads"] = threads
        entries.append(
            {"name": "lm-generative", "label": f"{model}-zero-shot", "params": model_params}
        )
    text = experiment_toml("bench-generative-ml100k", run_dir, cache_dir, n_users, entries)
    print("experiment:\n" + text)
    toml_path = run_dir / "bench-generative-ml100k.toml"
    run_dir.mkdir(parents=True, exist_ok=True)
    toml_path.write_text(text)
    config = load_config(toml_path)
    result = run_experiment(config, overwrite=True, progress=False, on_event=print)
    print(result.summary.to_string())
    out: dict[str, Any] = {"run_dir": str(result.run_dir), "failed": result.failed}
    for label_dir in sorted((result.run_dir / "models").iterdir()):
        done = label_dir / "DONE.json"
        if not done.exists():
            continue
        record = json.loads(done.read_text())
        metrics = json.loads((label_dir / PROTOCOL / "metrics.json").read_text())
        out[label_dir.name] = {
            "cost": record["cost"],
            "evaluated_users": record["evaluated_users"],
            "pointwise_auc": metrics.get("pointwise", {}).get("auc"),
        }
    out["summary"] = json.loads(result.summary.to_json(orient="records"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cache-dir", type=Path, default=Path(os.environ.get("RECARENA_CACHE", "/tmp/gen-cache"))
    )
    parser.add_argument("--run-dir", type=Path, default=Path("/tmp/bench-generative-runs"))
    parser.add_argument("--models", default="smollm2-135m-instruct")
    parser.add_argument("--parts", default="load,speed,sweep,runner")
    parser.add_argument("--users", type=int, default=200, help="users of the sweep and the runner")
    parser.add_argument("--speed-users", type=int, default=10)
    parser.add_argument("--num-threads", type=int, default=None)
    parser.add_argument(
        "--params", default="{}", help="JSON: generative ranker parameters for the runner part"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    parts = set(args.parts.split(","))
    models = [m for m in args.models.split(",") if m]
    results: dict[str, Any] = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_average": os.getloadavg(),
            "num_threads": args.num_threads,
        },
        "users": args.users,
    }
    print(f"machine: {results['machine']}")
    dataset = split = None
    if parts & {"speed", "sweep"}:
        # the runner's own data and split code, so the candidates are those of the runner part
        text = experiment_toml(
            "split-only", args.run_dir, args.cache_dir, args.users, [{"name": "random"}]
        )
        config = load_config_text(text, args.run_dir)
        dataset = load_dataset(config.data, args.cache_dir)
        split = build_split(config, dataset)
    for model in models:
        results[model] = {}
        if "load" in parts:
            results[model]["load"] = part_load(model, args.cache_dir)
        if "speed" in parts:
            results[model]["speed"] = part_speed(
                model, dataset, split, args.cache_dir, args.speed_users, args.num_threads
            )
        if "sweep" in parts:
            results[model]["sweep"] = part_sweep(
                model, dataset, split, args.cache_dir, args.users, args.num_threads
            )
    if "runner" in parts:
        results["runner"] = part_runner(
            models,
            json.loads(args.params),
            args.cache_dir,
            args.run_dir,
            args.users,
            args.num_threads,
        )
    results["machine"]["load_average_end"] = os.getloadavg()
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2, default=str))
        print(f"results written to {args.out}")


def load_config_text(text: str, folder: Path) -> Any:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "split-only.toml"
    path.write_text(text)
    return load_config(path)


if __name__ == "__main__":
    main()
