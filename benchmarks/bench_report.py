"""Time `recarena.report.build_report` on an ML-1M-sized run directory.

Target: under 10 seconds for an ML-1M run with every model.

Given run directories, it times the report of those. Without any, it writes a synthetic run
directory the size of ML-1M with the real artifact formats (6,040 users, 3,706 items, about
a million interactions, leave-one-out split, ks 5/10/20, protocols full, sampled-99 and
first-stage-ease-50, ten finished models of every family plus one failed one, per-user
metrics computed by `recarena.metrics.evaluate_lists`, summaries by
`recarena.summary.write_summaries`) and times that. The synthetic run is kept and reused.

Three timings, each as wall-clock and as CPU seconds of the process (user + system; on a
machine shared with other jobs the wall time grows with the load average, the CPU time
does not, and it is what the wall time is on an idle machine):

``fresh process``
    ``python -c "build_report(...)"`` in a new interpreter: imports included, what
    ``recarena report`` costs.
``first call``
    The first `build_report` in this process (imports of matplotlib and pyarrow included).
``warm``
    Best of ``--repeats`` further calls.

Usage::

    python benchmarks/bench_report.py                         # synthetic ML-1M-sized run
    python benchmarks/bench_report.py runs/ml1m-all           # a real run
    python benchmarks/bench_report.py runs/a runs/b --repeats 5 --out bench.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

logger = logging.getLogger("bench_report")

N_USERS, N_ITEMS, KS = 6040, 3706, (5, 10, 20)

#: label, family, fusion, quality (hit probability in full ranking), popularity exponent,
#: protocols it ran on (None: all), has a training log
MODELS: list[tuple[str, str, str, float, float, tuple[str, ...] | None, bool]] = [
    ("random", "classical", "none", 0.005, 0.0, None, False),
    ("most_popular", "classical", "none", 0.05, 8.0, None, False),
    ("itemknn", "classical", "none", 0.17, 1.2, None, False),
    ("ease", "classical", "none", 0.20, 1.5, None, False),
    ("als", "classical", "none", 0.18, 1.3, None, False),
    ("bpr", "classical", "none", 0.15, 1.0, None, False),
    ("sasrec", "classical", "none", 0.24, 0.8, None, True),
    ("tfidf", "content", "none", 0.04, 0.2, None, False),
    ("lm-frozen-minilm", "frozen-lm", "feature-extraction", 0.07, 0.4, None, False),
    ("cross-encoder", "cross-encoder", "fine-tuning", 0.22, 0.6, ("sampled-99",), True),
]
FAILED = ("generative-lm-zero-shot", "generative-lm", "CUDA out of memory (synthetic failure)")
PROTOCOLS = {
    "full": "full-catalog ranking, items seen in training excluded",
    "sampled-99": "held-out item(s) + 99 uniformly sampled negatives (100 candidates)",
    "first-stage-ease-50": "top-50 of ease (50 candidates)",
}


# ---------------------------------------------------------------------- synthetic run
def _interactions(rng: np.random.Generator) -> pd.DataFrame:
    popularity = 1.0 / np.arange(1, N_ITEMS + 1) ** 0.9
    popularity = popularity[rng.permutation(N_ITEMS)]
    p = popularity / popularity.sum()
    sizes = np.clip(rng.lognormal(4.6, 1.0, N_USERS).astype(int), 20, 2000)
    users, items = [], []
    for u, n in enumerate(sizes):
        picks = rng.choice(N_ITEMS, size=min(n, N_ITEMS - 1), replace=False, p=p)
        users.append(np.full(len(picks), u, dtype=np.int32))
        items.append(picks.astype(np.int32))
    user = np.concatenate(users)
    item = np.concatenate(items)
    ts = 956_703_932 + np.cumsum(rng.integers(1, 60, len(user))).astype(np.int64)
    rating = rng.integers(1, 6, len(user)).astype(np.float32)
    return pd.DataFrame({"user": user, "item": item, "timestamp": ts, "rating": rating})


def _top_k_by_score(scores: np.ndarray, k: int) -> np.ndarray:
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1)
    return np.take_along_axis(part, order, axis=1)


def write_synthetic_run(run_dir: Path, seed: int = 0) -> Path:
    """An ML-1M-sized run directory in the real artifact formats (see the module docstring)."""
    from recarena._io import write_json, write_text
    from recarena.config import dump_config, parse_config
    from recarena.environment import collect_environment
    from recarena.metrics import evaluate_lists, item_segments, restrict_truth, user_segments
    from recarena.models.base import RankedLists
    from recarena.splits import CandidateSet
    from recarena.summary import write_summaries

    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)
    inter = _interactions(rng)
    (run_dir / "dataset").mkdir(exist_ok=True)
    inter.to_parquet(run_dir / "dataset" / "interactions.parquet", index=False)
    per_user = np.bincount(inter["user"], minlength=N_USERS)
    per_item = np.bincount(inter["item"], minlength=N_ITEMS)
    stats = {
        "users": N_USERS,
        "items": N_ITEMS,
        "interactions": len(inter),
        "density": len(inter) / (N_USERS * N_ITEMS),
        "interactions_per_user_median": float(np.median(per_user)),
        "interactions_per_user_min": int(per_user.min()),
        "interactions_per_item_median": float(np.median(per_item)),
        "has_timestamps": True,
        "has_ratings": True,
        "item_fields": ["title", "genres"],
    }
    write_json(
        run_dir / "dataset" / "dataset.json",
        {
            "name": "synthetic-ml-1m",
            "has_user_table": False,
            "info": {
                "format": "synthetic",
                "note": "written by benchmarks/bench_report.py: ML-1M sizes, random interactions",
                "preprocessing": [],
                "stats": stats,
            },
        },
    )

    # leave-one-out by time: last interaction -> test, the one before -> valid
    inter = inter.sort_values(["user", "timestamp"], kind="stable").reset_index(drop=True)
    last = inter.groupby("user").cumcount(ascending=False)
    test, valid, train = inter[last == 0], inter[last == 1], inter[last >= 2]
    split_dir = run_dir / "split"
    split_dir.mkdir(exist_ok=True)
    for name, frame in (("train", train), ("valid", valid), ("test", test)):
        frame.to_parquet(split_dir / f"{name}.parquet", index=False)
    np.savez(split_dir / "arrays.npz", cold_items=np.array([], dtype=np.int64))
    fit = pd.concat([train, valid])
    pop = np.bincount(fit["item"], minlength=N_ITEMS).astype(np.int64)
    seen = sp.csr_matrix(
        (np.ones(len(fit), np.float32), (fit["user"], fit["item"])), shape=(N_USERS, N_ITEMS)
    )
    truth = sp.csr_matrix(
        (np.ones(len(test), np.float32), (test["user"], test["item"])), shape=(N_USERS, N_ITEMS)
    )
    target = test.set_index("user")["item"].reindex(range(N_USERS)).to_numpy()
    users = np.arange(N_USERS, dtype=np.int64)

    negatives = np.empty((N_USERS, 99), dtype=np.int64)
    for u in range(N_USERS):
        pool = rng.integers(0, N_ITEMS, 200)
        pool = pool[(pool != target[u]) & (seen[u].toarray().ravel()[pool] == 0)]
        pool = np.unique(pool)[:99]
        negatives[u, : len(pool)] = pool
        negatives[u, len(pool) :] = -1
    sampled = np.concatenate([target[:, None], negatives], axis=1)
    sampled = np.take_along_axis(sampled, rng.random(sampled.shape).argsort(axis=1), axis=1)
    CandidateSet(users, sampled, "sampled", "99 sampled negatives + held-out").save(
        split_dir / "candidates_sampled-99__test.npz"
    )
    write_json(
        split_dir / "split.json",
        {
            "method": "leave_one_out",
            "n_users": N_USERS,
            "n_items": N_ITEMS,
            "params": {"min_history": 1, "order": "time"},
            "notes": [],
            "candidates": ["sampled-99:test"],
            "stats": {
                "method": "leave_one_out",
                "train": len(train),
                "valid": len(valid),
                "test": len(test),
                "valid_users": N_USERS,
                "test_users": N_USERS,
                "cold_items": 0,
            },
        },
    )

    config = parse_config(
        {
            "name": run_dir.name,
            "data": {"path": "synthetic.csv", "format": "csv"},
            "evaluation": {
                "protocols": [
                    {"kind": "full"},
                    {"kind": "sampled", "n_negatives": 99},
                    {"kind": "first_stage", "first_stage": "ease", "top_n": 50},
                ],
                "bootstrap": 200,
            },
            "models": [{"name": m[0]} for m in MODELS] + [{"name": FAILED[0]}],
        }
    )
    write_text(run_dir / "config.toml", dump_config(config))
    write_json(run_dir / "environment.json", collect_environment())
    write_json(
        run_dir / "run.json",
        {
            "setup_hash": "synthetic",
            "name": run_dir.name,
            "dataset": "synthetic-ml-1m",
            "split": "leave_one_out",
            "protocols": PROTOCOLS,
            "item_text_template": "Title: {title}. Genres: {genres}.",
            "notes": [],
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    )

    ev = config.evaluation
    user_masks = user_segments(users, fit, N_USERS, cold_user_max=ev.cold_user_max)
    item_masks = item_segments(pop, head_share=ev.head_share)
    log_pop = np.log1p(pop).astype(np.float32)
    first_stage = None
    order = sorted(MODELS, key=lambda m: m[0] != "ease")  # the first stage runs first
    for label, family, fusion, quality, alpha, protos, logged in order:
        mdir = run_dir / "models" / label
        mdir.mkdir(parents=True, exist_ok=True)
        ran = []
        for proto in PROTOCOLS:
            if protos is not None and proto not in protos:
                continue
            if proto == "first-stage-ease-50" and (label == "ease" or first_stage is None):
                continue
            if proto == "full":
                rows = []
                k = 50 if label == "ease" else max(KS)
                for lo in range(0, N_USERS, 1000):
                    block = slice(lo, min(lo + 1000, N_USERS))
                    s = alpha * log_pop[None, :] + rng.gumbel(size=(block.stop - lo, N_ITEMS))
                    s[seen[block].nonzero()] = -np.inf
                    rows.append(_top_k_by_score(s.astype(np.float32), k))
                items = np.concatenate(rows)
            else:
                cand = sampled if proto == "sampled-99" else first_stage
                s = alpha * log_pop[np.maximum(cand, 0)] + rng.gumbel(size=cand.shape)
                s[cand < 0] = -np.inf
                items = np.take_along_axis(cand, _top_k_by_score(s, max(KS)), axis=1)
            # plant the held-out item for a share of users, at a rank biased to the top
            boost = {"full": 1.0, "sampled-99": 3.5, "first-stage-ease-50": 1.3}[proto]
            hit = rng.random(N_USERS) < min(0.95, quality * boost)
            rank = np.minimum(rng.geometric(0.25, N_USERS) - 1, max(KS) - 1)
            has = (items[:, : max(KS)] == target[:, None]).any(axis=1)
            put = hit & ~has
            items[put, rank[put]] = target[put]
            if label == "ease" and proto == "full":
                first_stage = items[:, :50].copy()
                CandidateSet(users, first_stage, "first_stage", PROTOCOLS[proto]).save(
                    split_dir / "first_stage__first-stage-ease-50__test.npz"
                )
            items = items[:, : max(KS)]
            scores = np.sort(rng.random(items.shape).astype(np.float32), axis=1)[:, ::-1]
            lists = RankedLists(users, items.astype(np.int64), np.ascontiguousarray(scores))
            pdir = mdir / proto
            pdir.mkdir(exist_ok=True)
            lists.save(pdir / "lists.npz")
            kwargs = dict(train_popularity=pop, n_train_users=N_USERS, n_items=N_ITEMS)
            frame, global_values = evaluate_lists(
                lists, truth, KS, [m for m in ev.metrics if m != "ild"], **kwargs
            )
            frames = [frame.assign(segment="all")]
            counts = {"all": N_USERS}
            for name, mask in user_masks.items():
                counts[name] = int(mask.sum())
                if mask.any():
                    frames.append(frame.loc[mask].assign(segment=name))
            for name, mask in item_masks.items():
                seg_truth = restrict_truth(truth, mask)
                sel = np.diff(seg_truth.indptr)[users] > 0
                counts[name] = int(sel.sum())
                if sel.any():
                    sub = RankedLists(users[sel], lists.items[sel], lists.scores[sel])
                    seg, _ = evaluate_lists(
                        sub,
                        seg_truth,
                        KS,
                        ["hr", "recall", "precision", "f1", "ndcg", "mrr", "map"],
                    )
                    frames.append(seg.assign(segment=name))
            table = pd.concat(frames)
            table.index.name = "user"
            table.reset_index().to_parquet(pdir / "per_user.parquet", index=False)
            metrics: dict[str, Any] = {
                "global": global_values,
                "segment_users": counts,
                "protocol": proto,
                "description": PROTOCOLS[proto],
                "sampled_candidates": proto == "sampled-99",
            }
            if proto != "full":
                auc = 0.5 + quality
                metrics["pointwise"] = {
                    "accuracy": 0.9 - quality / 3,
                    "precision": quality,
                    "recall": quality * 1.5,
                    "f1": quality * 1.2,
                    "auc": auc,
                    "gauc": auc - 0.01,
                    "threshold": "synthetic",
                }
            write_json(pdir / "metrics.json", metrics)
            ran.append(proto)
        lm = family != "classical" and family != "content"
        cost = {
            "parameters_total": int(rng.integers(10_000, 3_000_000) * (40 if lm else 1)),
            "parameters_trainable": int(rng.integers(0, 1_000_000)),
            "fit_seconds": float(10 ** rng.uniform(-2, 3)),
            "tuning_seconds": float(10 ** rng.uniform(0, 3)),
            "tuning_trials": int(rng.integers(0, 12)),
            "users_per_second": float(10 ** rng.uniform(1, 4)),
            "latency_ms_p50": float(10 ** rng.uniform(-1, 2)),
            "latency_ms_p95": float(10 ** rng.uniform(0, 2.5)),
            "peak_memory_mib": float(rng.uniform(300, 9000)),
            "gpu_peak_memory_mib": float(rng.uniform(500, 20000)) if lm else None,
            "device": "cuda:0" if lm else "cpu",
        }
        if lm:
            cost["encode_items_per_second"] = float(rng.uniform(200, 5000))
        write_json(mdir / "cost.json", cost)
        if logged:
            loss = 8 * np.exp(-np.arange(1, 31) / 12) + rng.normal(0, 0.05, 30)
            write_json(
                mdir / "training_log.json",
                [
                    {
                        "epoch": e + 1,
                        "loss": float(loss[e]),
                        "valid_ndcg@10": float(0.2 * (1 - np.exp(-(e + 1) / 8))),
                        "seconds": 30.0 * (e + 1),
                    }
                    for e in range(30)
                ],
            )
        write_json(
            mdir / "DONE.json",
            {
                "label": label,
                "model": label,
                "family": family,
                "fusion": fusion,
                "params": {},
                "protocols": ran,
                "skipped_protocols": {"full": "re-ranker: cannot score the full catalog"}
                if protos is not None
                else {},
                "evaluated_users": N_USERS,
                "all_test_users": N_USERS,
                "user_sample": False,
                "cost": cost,
            },
        )
    fdir = run_dir / "models" / FAILED[0]
    fdir.mkdir(parents=True, exist_ok=True)
    write_json(fdir / "FAILED.json", {"error": FAILED[2], "traceback": "synthetic"})
    write_summaries(run_dir, ev)
    logger.info("synthetic run written to %s in %.0f s", run_dir, time.perf_counter() - start)
    return run_dir


# ---------------------------------------------------------------------- timing
def time_fresh_process(run_dirs: list[Path], out: Path) -> tuple[float, float]:
    """Wall seconds of a new interpreter that builds the report, and its CPU seconds."""
    code = (
        "import time; from recarena.report import build_report; "
        f"build_report({[str(p) for p in run_dirs]!r}, {str(out)!r}); "
        "print(time.process_time())"
    )
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    wall = time.perf_counter() - start
    cpu = float(result.stdout.strip().splitlines()[-1])
    logger.info("fresh process: %.2f s wall, %.2f s CPU", wall, cpu)
    return wall, cpu


def _timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "run_dirs", nargs="*", type=Path, help="run directories (default: synthetic)"
    )
    parser.add_argument(
        "--synthetic-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "recarena-bench-report" / "synthetic-ml1m",
        help="where the synthetic run is written (reused when it exists)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    run_dirs = args.run_dirs
    if not run_dirs:
        if not (args.synthetic_dir / "summary.csv").exists():
            logger.info("writing a synthetic ML-1M-sized run to %s", args.synthetic_dir)
            write_synthetic_run(args.synthetic_dir)
        run_dirs = [args.synthetic_dir]
    out_dir = Path(tempfile.mkdtemp(prefix="bench-report-"))
    load_before = os.getloadavg()[0]
    fresh, fresh_cpu = time_fresh_process(run_dirs, out_dir / "fresh.html")

    from recarena.report import build_report

    first, first_cpu = _timed(lambda: build_report(run_dirs, out_dir / "first.html"))
    warm = [
        _timed(lambda i=i: build_report(run_dirs, out_dir / f"warm{i}.html"))
        for i in range(args.repeats)
    ]
    summary = pd.read_csv(run_dirs[0] / "summary.csv")
    result = {
        "run_dirs": [str(p) for p in run_dirs],
        "models": int(summary["model"].nunique()),
        "protocols": int(summary["protocol"].nunique()),
        "users": int(summary.loc[summary["segment"] == "all", "n_users"].max()),
        "fresh_process_wall_s": round(fresh, 2),
        "fresh_process_cpu_s": round(fresh_cpu, 2),
        "first_call_wall_s": round(first, 2),
        "first_call_cpu_s": round(first_cpu, 2),
        "warm_best_wall_s": round(min(w for w, _ in warm), 2) if warm else None,
        "warm_best_cpu_s": round(min(c for _, c in warm), 2) if warm else None,
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "cpu_count": os.cpu_count(),
        "html_bytes": (out_dir / "first.html").stat().st_size,
        "machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}",
        "target_s": 10.0,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
