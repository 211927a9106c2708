"""Counterfactual attribute probes: does a model that reads a user's attribute change its
recommendations when only that attribute changes?

A model that reads text about the user (the generative ranker's prompt can name user-table
columns: ``"A {user:age}-year-old {user:gender} watched ..."``) may rank differently for a
woman and a man with the same history. The probe scores the same users' same candidates
twice, once as they are and once with the attribute swapped (``{"M": "F", "F": "M"}``),
the seed, history and everything else unchanged, and measures how far the lists move:

- **overlap@K**: the share of the top K both lists share (1: unchanged);
- **rank shift**: the mean absolute change of a candidate's rank;
- **changed users**: the share of users whose top K differs at all;
- **quality change**: NDCG@K of the held-out item after the swap minus before, per user;
- **exposure change**: each item group's share of the top-K slots after minus before.

Each comes with a percentile bootstrap interval over users. A model that does not read the
attribute (no ``user_attributes_`` column of that name: every model but a prompt that names
it) is invariant by construction; the probe says so instead of scoring anything.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

from recarena.metrics.uncertainty import bootstrap_ci


def reads_attribute(model: Any, column: str) -> bool:
    """Whether the fitted ``model`` puts user column ``column`` into its input."""
    return column in (vars(model).get("user_attributes_") or {})


@contextlib.contextmanager
def swapped_attribute(model: Any, column: str, swap: Mapping[str, str]) -> Iterator[None]:
    """``model`` reading every user's ``column`` value through ``swap`` (values not in it
    stay), restored afterwards."""
    attributes = model.user_attributes_
    original = attributes[column]
    attributes[column] = [swap.get(v, v) for v in original]
    try:
        yield
    finally:
        attributes[column] = original


def _ranks(scores: np.ndarray) -> np.ndarray:
    """Rank (0 first) of each candidate of each row; ties in candidate order."""
    order = np.argsort(-scores, axis=1, kind="stable")
    ranks = np.empty_like(order)
    rows = np.arange(scores.shape[0])[:, None]
    ranks[rows, order] = np.arange(scores.shape[1])[None, :]
    return ranks


def _ndcg(ranks: np.ndarray, positive: np.ndarray, k: int) -> np.ndarray:
    r = ranks[np.arange(len(ranks)), positive]
    return np.where(r < k, 1.0 / np.log2(r + 2.0), 0.0)


def counterfactual_probe(
    model: Any,
    users: np.ndarray,
    candidates: np.ndarray,
    column: str,
    swap: Mapping[str, str],
    *,
    k: int = 10,
    positive: np.ndarray | None = None,
    item_groups: Mapping[str, np.ndarray] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Probe ``model`` on ``users`` and their ``candidates`` (item ids, one row per user).

    Parameters
    ----------
    positive
        Column of each user's held-out item in ``candidates`` (for the quality change).
    item_groups
        Group name -> boolean mask over item ids (e.g. popularity head, a genre), for the
        exposure change.

    Returns
    -------
    dict
        ``invariant`` (True, with ``reason``, for a model that does not read ``column``),
        else the statistics above as ``{"mean", "ci_low", "ci_high"}``, the counts, the
        overlap by the user's original value, and per item group the top-K share before
        and after.
    """
    if not reads_attribute(model, column):
        return {
            "column": column,
            "invariant": True,
            "reason": f"{type(model).__name__} does not read the user's {column!r}: its lists "
            "cannot change when it changes",
        }
    users = np.asarray(users, dtype=np.int64)
    values = np.array([model.user_attributes_[column][u] for u in users], dtype=object)
    swapped = np.array([v in swap and swap[v] != v for v in values])
    users, candidates, values = users[swapped], candidates[swapped], values[swapped]
    if positive is not None:
        positive = np.asarray(positive)[swapped]
    base = model.score(users, candidates)
    with swapped_attribute(model, column, swap):
        flipped = model.score(users, candidates)
    rb, rf = _ranks(base), _ranks(flipped)
    top_b, top_f = rb < k, rf < k
    overlap = (top_b & top_f).sum(axis=1) / min(k, candidates.shape[1])
    shift = np.abs(rb - rf).mean(axis=1)
    changed = (top_b != top_f).any(axis=1).astype(np.float64)

    def estimate(x: np.ndarray) -> dict[str, float]:
        mean, low, high = bootstrap_ci(x.astype(np.float64), n_boot=n_boot, seed=seed)
        return {"mean": float(mean[0]), "ci_low": float(low[0]), "ci_high": float(high[0])}

    out: dict[str, Any] = {
        "column": column,
        "invariant": False,
        "swap": dict(swap),
        "k": k,
        "n_users": int(len(users)),
        "overlap_at_k": estimate(overlap),
        "rank_shift": estimate(shift),
        "changed_users": estimate(changed),
        "mean_abs_score_change": float(np.abs(flipped - base).mean()) if len(users) else 0.0,
        "by_value": {
            str(v): {
                "n_users": int((values == v).sum()),
                "overlap_at_k": float(overlap[values == v].mean()),
            }
            for v in dict.fromkeys(values.tolist())
        },
    }
    if positive is not None:
        before, after = _ndcg(rb, positive, k), _ndcg(rf, positive, k)
        out[f"ndcg@{k}_before"] = float(before.mean())
        out[f"ndcg@{k}_after"] = float(after.mean())
        out[f"ndcg@{k}_change"] = estimate(after - before)
    if item_groups:
        rows = []
        for name, mask in item_groups.items():
            member = np.asarray(mask, dtype=bool)[candidates]
            share_b = (member & top_b).sum(axis=1) / top_b.sum(axis=1).clip(min=1)
            share_f = (member & top_f).sum(axis=1) / top_f.sum(axis=1).clip(min=1)
            rows.append(
                {
                    "group": name,
                    "share_before": float(share_b.mean()),
                    "share_after": float(share_f.mean()),
                    **{f"change_{k2}": v for k2, v in estimate(share_f - share_b).items()},
                }
            )
        out["exposure"] = pd.DataFrame(rows).to_dict(orient="records")
    return out
