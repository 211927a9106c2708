"""Benchmark: top-K selection and metrics on an ML-1M-sized score matrix.

A full 6,040 users x 3,706 items float32 score matrix (random scores, a popularity trend, a
planted bonus on each user's held-out item, about 165 seen items per user excluded as
``-inf``), one held-out item per user as leave-one-out gives. Timed, best of ``--repeats``:

1. ``recarena.ranking.top_k`` at K=20;
2. ``recarena.metrics.evaluate_lists``: HR, Recall, Precision, F1, NDCG, MRR, MAP at 10 and
   20, plus coverage, novelty and ARP.

Then the per-user values are checked against ranx on the same lists (to 1e-9), and
coverage, novelty and ARP against a plain per-user loop. With ``--legacy`` the previous
``top_k`` (one NumPy generator per user, float64 keys over the whole matrix) is timed once
for comparison.

Run: ``python benchmarks/bench_metrics.py`` (target: under 2 s in total on 2 cores).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import numpy as np
import scipy.sparse as sp

from recarena.metrics import evaluate_lists
from recarena.models.base import RankedLists
from recarena.ranking import top_k

RANKING = ("hr", "recall", "precision", "f1", "ndcg", "mrr", "map")
RANX_NAMES = {
    "hr": "hit_rate",
    "recall": "recall",
    "precision": "precision",
    "f1": "f1",
    "ndcg": "ndcg",
    "mrr": "mrr",
    "map": "map",
}


def make_data(n_users: int, n_items: int, seed: int):
    """Scores with seen items excluded, the held-out matrix and training popularity."""
    rng = np.random.default_rng(seed)
    weight = 1.0 / np.arange(1, n_items + 1) ** 0.8
    weight = weight[rng.permutation(n_items)]
    weight /= weight.sum()
    n_seen = np.clip(rng.geometric(1 / 165, n_users), 20, 2000)
    seen_rows = np.repeat(np.arange(n_users), n_seen)
    seen_cols = rng.choice(n_items, size=len(seen_rows), p=weight)
    seen = sp.csr_matrix(
        (np.ones(len(seen_rows)), (seen_rows, seen_cols)), shape=(n_users, n_items)
    )
    seen.data[:] = 1.0
    popularity = np.diff(seen.tocsc().indptr).astype(np.int64)
    # held-out item: popularity-weighted, not seen by the user
    target = rng.choice(n_items, size=n_users, p=weight)
    clash = np.asarray(seen[np.arange(n_users), target]).ravel() > 0
    while clash.any():
        target[clash] = rng.choice(n_items, size=int(clash.sum()), p=weight)
        clash = np.asarray(seen[np.arange(n_users), target]).ravel() > 0
    truth = sp.csr_matrix(
        (np.ones(n_users), (np.arange(n_users), target)), shape=(n_users, n_items)
    )
    log_pop = np.log1p(popularity) / np.log1p(popularity.max())
    trend = (0.2 * log_pop).astype(np.float32)
    scores = np.float32(0.8) * rng.random((n_users, n_items), dtype=np.float32) + trend
    scores[np.arange(n_users), target] += rng.uniform(0, 0.5, n_users).astype(np.float32)
    scores[seen.nonzero()] = -np.inf
    return scores, truth, popularity


def legacy_top_k(scores: np.ndarray, k: int, users: np.ndarray, seed: int = 0):
    """The previous top_k: a per-user generator and float64 keys over the whole matrix."""
    s32 = np.ascontiguousarray(scores, dtype=np.float32)
    keys = s32.astype(np.float64)
    finite = np.isfinite(s32)
    ulp = np.abs(np.spacing(s32, where=finite, out=np.zeros_like(s32))).astype(np.float64)
    jitter = np.empty_like(keys)
    for row, user in enumerate(users):
        jitter[row] = np.random.default_rng([seed, int(user)]).random(s32.shape[1])
    keys += np.where(finite, jitter * 0.25 * ulp, 0.0)
    part = np.argpartition(-keys, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(keys, part, axis=1), axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1)
    top = np.take_along_axis(s32, idx, axis=1)
    return np.where(np.isneginf(top), -1, idx), top


def run_pipeline(scores, truth, popularity, users, ks, k_max):
    times = {}
    t0 = time.perf_counter()
    idx, top = top_k(scores, k_max, users=users, seed=0)
    t1 = time.perf_counter()
    lists = RankedLists(users, idx, top)
    per_user, glob = evaluate_lists(
        lists,
        truth,
        ks,
        [*RANKING, "coverage", "novelty", "arp"],
        train_popularity=popularity,
        n_train_users=len(users),
        n_items=scores.shape[1],
    )
    t2 = time.perf_counter()
    times["top_k"] = t1 - t0
    times["metrics"] = t2 - t1
    times["total"] = t2 - t0
    return lists, per_user, glob, times


def check_with_ranx(lists, truth, per_user, ks) -> float:
    from ranx import Qrels, Run, evaluate

    users = lists.users
    qrels = Qrels(
        {
            str(u): {str(i): 1 for i in truth.indices[truth.indptr[u] : truth.indptr[u + 1]]}
            for u in users
        }
    )
    k_max = lists.items.shape[1]
    run = Run(
        {
            str(u): {str(i): float(k_max - j) for j, i in enumerate(lists.items[r]) if i >= 0}
            for r, u in enumerate(users)
        }
    )
    names = [f"{RANX_NAMES[m]}@{k}" for m in RANKING for k in ks]
    evaluate(qrels, run, names, make_comparable=True)
    worst = 0.0
    for m in RANKING:
        for k in ks:
            ref = np.array([run.scores[f"{RANX_NAMES[m]}@{k}"][str(u)] for u in users])
            worst = max(worst, float(np.abs(ref - per_user[f"{m}@{k}"].to_numpy()).max()))
    return worst


def check_beyond_by_loop(lists, per_user, glob, popularity, n_items, ks) -> float:
    n_train = len(lists.users)
    info = -np.log2(np.minimum((popularity + 1.0) / (n_train + 1.0), 1.0))
    worst = 0.0
    for k in ks:
        nov, arp, seen = [], [], set()
        for row in lists.items[:, :k]:
            listed = [int(i) for i in row if i >= 0]
            seen.update(listed)
            nov.append(np.mean([info[i] for i in listed]) if listed else 0.0)
            arp.append(np.mean([popularity[i] for i in listed]) if listed else 0.0)
        worst = max(
            worst,
            float(np.abs(np.array(nov) - per_user[f"novelty@{k}"]).max()),
            float(np.abs(np.array(arp) - per_user[f"arp@{k}"]).max()),
            abs(len(seen) / n_items - glob[f"coverage@{k}"]),
        )
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=6040)
    parser.add_argument("--items", type=int, default=3706)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", type=float, default=2.0, help="seconds, top_k + metrics")
    parser.add_argument("--legacy", action="store_true", help="also time the previous top_k")
    parser.add_argument("--no-ranx", action="store_true", help="skip the ranx check")
    args = parser.parse_args(argv)

    ks, k_max = [10, 20], 20
    scores, truth, popularity = make_data(args.users, args.items, args.seed)
    users = np.arange(args.users)
    best: dict[str, float] = {}
    for _ in range(args.repeats):
        lists, per_user, glob, times = run_pipeline(scores, truth, popularity, users, ks, k_max)
        for key, value in times.items():
            best[key] = min(best.get(key, np.inf), value)

    print(
        f"{args.users:,} users x {args.items:,} items, K={k_max}, "
        f"cut-offs {ks}; best of {args.repeats}; "
        f"python {platform.python_version()}, numpy {np.__version__}"
    )
    print(f"{'stage':<28}{'seconds':>10}")
    for key in ("top_k", "metrics", "total"):
        print(f"{key:<28}{best[key]:>10.3f}")
    if args.legacy:
        t0 = time.perf_counter()
        old_idx, _ = legacy_top_k(scores, k_max, users)
        legacy = time.perf_counter() - t0
        same = float((old_idx == lists.items).all(axis=1).mean())
        print(f"{'legacy top_k (once)':<28}{legacy:>10.3f}   identical lists: {same:.4f}")

    print()
    print(f"{'metric':<16}{'mean':>10}")
    for col in per_user.columns:
        print(f"{col:<16}{per_user[col].mean():>10.4f}")
    for key, value in glob.items():
        print(f"{key:<16}{value:>10.4f}")
    print()
    ok = best["total"] < args.target
    if not args.no_ranx:
        diff = check_with_ranx(lists, truth, per_user, ks)
        print(
            f"ranx: max |ours - ranx| over {len(RANKING) * len(ks)} metrics x "
            f"{args.users:,} users = {diff:.3g}"
        )
        ok &= diff <= 1e-9
    loop = check_beyond_by_loop(lists, per_user, glob, popularity, args.items, ks)
    print(f"coverage/novelty/arp: max |vectorised - loop| = {loop:.3g}")
    ok &= loop <= 1e-9
    print(
        f"target total < {args.target:.1f} s: {'met' if best['total'] < args.target else 'MISSED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
