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
        else the statistics above as ``{"mean", "ci_low", "ci_high"}``, the counts, and
        per item group the top-K share before and after; ``by_value`` has the same for
        each direction of the swap (the users whose original value is ``v``, swapped to
        ``swap[v]``, under ``to``), since pooling both directions can hide two opposite
        moves.
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
    stats = _ProbeStatistics(base, flipped, candidates, k, positive, item_groups, n_boot, seed)
    out: dict[str, Any] = {
        "column": column,
        "invariant": False,
        "swap": dict(swap),
        "k": k,
        "n_users": int(len(users)),
        **stats.summary(np.ones(len(users), dtype=bool)),
        # each direction of the swap on its own (the users whose value is v, given swap[v])
        "by_value": {
            str(v): {"to": str(swap[v]), **stats.summary(values == v)}
            for v in dict.fromkeys(values.tolist())
        },
    }
    return out


class _ProbeStatistics:
    """The probe's per-user statistics of one scoring before and after the swap, and
    their bootstrap summaries over any subset of the users."""

    def __init__(
        self,
        base: np.ndarray,
        flipped: np.ndarray,
        candidates: np.ndarray,
        k: int,
        positive: np.ndarray | None,
        item_groups: Mapping[str, np.ndarray] | None,
        n_boot: int,
        seed: int,
    ) -> None:
        rb, rf = _ranks(base), _ranks(flipped)
        top_b, top_f = rb < k, rf < k
        self.k, self.n_boot, self.seed = k, n_boot, seed
        self.score_change = np.abs(flipped - base).mean(axis=1) if base.size else np.zeros(0)
        self.per_user = {
            "overlap_at_k": (top_b & top_f).sum(axis=1) / min(k, candidates.shape[1]),
            "rank_shift": np.abs(rb - rf).mean(axis=1),
            "changed_users": (top_b != top_f).any(axis=1).astype(np.float64),
        }
        self.before = self.after = None
        if positive is not None:
            self.before, self.after = _ndcg(rb, positive, k), _ndcg(rf, positive, k)
        self.shares: list[tuple[str, np.ndarray, np.ndarray]] = []
        for name, mask in (item_groups or {}).items():
            member = np.asarray(mask, dtype=bool)[candidates]
            share_b = (member & top_b).sum(axis=1) / top_b.sum(axis=1).clip(min=1)
            share_f = (member & top_f).sum(axis=1) / top_f.sum(axis=1).clip(min=1)
            self.shares.append((name, share_b, share_f))

    def _estimate(self, x: np.ndarray) -> dict[str, float]:
        if not len(x):
            return {"mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
        mean, low, high = bootstrap_ci(x.astype(np.float64), n_boot=self.n_boot, seed=self.seed)
        return {"mean": float(mean[0]), "ci_low": float(low[0]), "ci_high": float(high[0])}

    def summary(self, rows: np.ndarray) -> dict[str, Any]:
        out: dict[str, Any] = {"n_users": int(rows.sum())}
        out.update({name: self._estimate(x[rows]) for name, x in self.per_user.items()})
        out["mean_abs_score_change"] = float(self.score_change[rows].mean()) if rows.any() else 0.0
        k = self.k
        if self.before is not None and self.after is not None:
            out[f"ndcg@{k}_before"] = float(self.before[rows].mean()) if rows.any() else 0.0
            out[f"ndcg@{k}_after"] = float(self.after[rows].mean()) if rows.any() else 0.0
            out[f"ndcg@{k}_change"] = self._estimate((self.after - self.before)[rows])
        if self.shares:
            out["exposure"] = [
                {
                    "group": name,
                    "share_before": float(share_b[rows].mean()) if rows.any() else 0.0,
                    "share_after": float(share_f[rows].mean()) if rows.any() else 0.0,
                    **{
                        f"change_{key}": value
                        for key, value in self._estimate((share_f - share_b)[rows]).items()
                    },
                }
                for name, share_b, share_f in self.shares
            ]
        return out
