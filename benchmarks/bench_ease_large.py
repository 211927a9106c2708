"""EASE on a 17,632-item catalog: float64 against float32, the Cholesky solve against the
dual (user-user) one, and a validation grid that builds its decomposition once.

The catalog has Last.fm HetRec's shape (1,892 users, 17,632 items, about 92,800
interactions, item popularity Zipf-like), generated with a seed, so the benchmark needs no
download. Each user's last interaction is held out; NDCG@10 over the full catalog (seen
items excluded) says whether float32 ranks as float64 does.

Measured, each in a fresh process so that peak memory is the fit's own (``ru_maxrss``):

- one fit in float64 and in float32 (``--fits``; ``-dual`` for ``solver="dual"``):
  seconds of fitting and of scoring every user, peak resident memory of the two, the
  largest weight difference relative to the largest weight of the first fit, NDCG@10,
  top-10 overlap with it;
- a six-point ``l2`` grid on one `TrainingData` (the Gram matrix, or for the dual solver
  the user-user eigendecomposition, built once and kept in ``data.derived``) against six
  fits on fresh data (built each time, as before); each point is fitted and then scored
  (NDCG@10 of the held-out items, the tuning's validation; the grid's seconds include
  it), the best ``l2`` reported.

Usage::

    python benchmarks/bench_ease_large.py --out /tmp/ease.json
    python benchmarks/bench_ease_large.py --fits float64,float32-dual --grids shared-float32-dual
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import pandas as pd

N_USERS, N_ITEMS, N_INTERACTIONS = 1_892, 17_632, 92_834
GRID = [50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0]


def make_data(seed: int = 0):
    from recarena.models.base import TrainingData

    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, N_ITEMS + 1) ** 0.9
    popularity /= popularity.sum()
    per_user = np.maximum(2, rng.poisson(N_INTERACTIONS / N_USERS, N_USERS))
    rows = []
    for u, n in enumerate(per_user):
        items = rng.choice(N_ITEMS, size=min(int(n), N_ITEMS), replace=False, p=popularity)
        rows.append(pd.DataFrame({"user": u, "item": items, "timestamp": np.arange(len(items))}))
    frame = pd.concat(rows, ignore_index=True)
    last = frame.groupby("user").tail(1)
    train = frame.drop(index=last.index).reset_index(drop=True)
    data = TrainingData(train, N_USERS, N_ITEMS)
    return data, last["item"].to_numpy()


def ndcg10(model, data, held: np.ndarray) -> tuple[float, np.ndarray]:
    users = np.arange(N_USERS)
    top = model.recommend(users, 10)
    items = top.items if hasattr(top, "items") else top[0]
    gains = [
        1.0 / np.log2(np.flatnonzero(row == h)[0] + 2) if h in row else 0.0
        for row, h in zip(items, held, strict=True)
    ]
    return float(np.mean(gains)), np.asarray(items)


def one_fit(name: str) -> dict:
    from recarena.models.classical.ease import EASE

    dtype, _, solver = name.partition("-")
    data, held = make_data()
    start = time.perf_counter()
    model = EASE(l2=500.0, dtype=dtype, solver=solver or "cholesky").fit(data)
    seconds = time.perf_counter() - start
    begin = time.perf_counter()
    quality, top = ndcg10(model, data, held)
    score_seconds = time.perf_counter() - begin
    # the peak of fitting and scoring, before `weights` forms a factored model's matrix
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    np.save(f"/tmp/ease_{name}_weights.npy", model.weights())
    np.save(f"/tmp/ease_{name}_top.npy", top)
    return {
        "fit": name,
        "solver": model.solver_,
        "fit_seconds": seconds,
        "score_seconds": score_seconds,
        "peak_rss_mb": peak,
        "ndcg@10": quality,
    }


def grid(shared: bool, dtype: str, solver: str) -> dict:
    from recarena.models.classical.ease import EASE

    data, held = make_data()
    start = time.perf_counter()
    fit_seconds, score_seconds, quality = 0.0, 0.0, {}
    for l2 in GRID:
        begin = time.perf_counter()
        model = EASE(l2=l2, dtype=dtype, solver=solver).fit(data if shared else make_data()[0])
        fit_seconds += time.perf_counter() - begin
        begin = time.perf_counter()
        quality[l2] = ndcg10(model, data, held)[0]
        score_seconds += time.perf_counter() - begin
        del model
    return {
        "shared_gram": shared,
        "dtype": dtype,
        "solver": solver,
        "grid_seconds": time.perf_counter() - start,
        "fit_seconds": fit_seconds,
        "score_seconds": score_seconds,
        "ndcg@10": quality,
        "best_l2": max(quality, key=quality.get),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def child(args: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", nargs="+", default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument(
        "--fits",
        default="float64,float32",
        help="comma-separated single fits, the first the reference: float64|float32[-dual]",
    )
    parser.add_argument(
        "--grids",
        default="fresh-float64,shared-float64,shared-float32",
        help="comma-separated grids to time: fresh|shared - float64|float32 [-dual|-auto] "
        "('' for none; the Cholesky solve without a suffix)",
    )
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "fit":
            result = one_fit(rest[0])
        else:
            result = grid(rest[0] == "shared", rest[1], rest[2] if len(rest) > 2 else "cholesky")
        print(json.dumps(result))
        return
    results: dict = {"fits": [], "grids": []}
    names = [n for n in args.fits.split(",") if n]
    for name in names:
        results["fits"].append(child(["fit", name]))
        print(results["fits"][-1], flush=True)
    # the grids before the weight comparisons: a child's peak RSS (ru_maxrss) starts from
    # this process's at the fork, and comparing two weight matrices holds several GB here
    for grid_name in filter(None, args.grids.split(",")):
        results["grids"].append(child(["grid", *grid_name.split("-")]))
        print(results["grids"][-1], flush=True)
    reference = names[0] if names else None
    for name in names[1:]:
        w_ref, w = (
            np.load(f"/tmp/ease_{reference}_weights.npy"),
            np.load(f"/tmp/ease_{name}_weights.npy"),
        )
        t_ref, t = np.load(f"/tmp/ease_{reference}_top.npy"), np.load(f"/tmp/ease_{name}_top.npy")
        against = {
            "max_relative_weight_difference": float(np.abs(w_ref - w).max() / np.abs(w_ref).max()),
            "top10_overlap": float(
                np.mean([len(set(a) & set(b)) / 10 for a, b in zip(t_ref, t, strict=True)])
            ),
        }
        results.setdefault("against_" + reference, {})[name] = against
        print(name, "against", reference, against, flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
