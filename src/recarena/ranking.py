"""Top-K selection with seeded random tie-breaking.

A model that gives many items the same score (popularity, a constant, a failed model) must
not get the held-out item ranked first because of its id: breaking ties by id inflates
NDCG by about 20%. Here ties are broken by a seeded random key that depends on the user and
the item, never on the id order, and never reorders items whose float32 scores differ.
"""

from __future__ import annotations

import numpy as np


def _tie_break_keys(scores: np.ndarray, users: np.ndarray, seed: int) -> np.ndarray:
    """float64 keys: each float32 score plus a random jitter below a quarter of its ulp.

    Distinct float32 values differ by at least one ulp of the smaller in magnitude, so the
    jitter breaks exact ties only.
    """
    s32 = np.ascontiguousarray(scores, dtype=np.float32)
    keys = s32.astype(np.float64)
    finite = np.isfinite(s32)
    ulp = np.abs(np.spacing(s32, where=finite, out=np.zeros_like(s32))).astype(np.float64)
    jitter = np.empty_like(keys)
    n_items = s32.shape[1]
    # one generator per user keeps a user's tie-breaking the same whatever the batch size
    for row, user in enumerate(users):
        jitter[row] = np.random.default_rng([seed, int(user)]).random(n_items)
    keys += np.where(finite, jitter * 0.25 * ulp, 0.0)
    return keys


def top_k(
    scores: np.ndarray, k: int, *, users: np.ndarray | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the ``k`` best columns of each row, best first.

    Columns scored ``-inf`` are never returned (they are excluded items): rows with fewer
    than ``k`` finite scores are padded with index -1 and score ``-inf``. NaN scores are an
    error in the model and raise.

    Parameters
    ----------
    scores
        (n_rows, n_columns) float array.
    k
        Length of the lists.
    users
        The user id of each row, which seeds that row's tie-breaking (default: row number).
    seed
        Seed of the tie-breaking.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-d (users x items), got shape {scores.shape}")
    if np.isnan(scores).any():
        raise ValueError("the model returned NaN scores")
    n_rows, n_cols = scores.shape
    if users is None:
        users = np.arange(n_rows)
    kk = min(k, n_cols)
    keys = _tie_break_keys(scores, users, seed)
    if kk < n_cols:
        part = np.argpartition(-keys, kk - 1, axis=1)[:, :kk]
    else:
        part = np.broadcast_to(np.arange(n_cols), (n_rows, n_cols)).copy()
    part_keys = np.take_along_axis(keys, part, axis=1)
    order = np.argsort(-part_keys, axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1)
    top_scores = np.take_along_axis(scores, idx, axis=1).astype(np.float32)
    idx = np.where(np.isneginf(top_scores), -1, idx)
    if kk < k:
        pad = k - kk
        idx = np.pad(idx, ((0, 0), (0, pad)), constant_values=-1)
        top_scores = np.pad(top_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    return idx.astype(np.int64), top_scores
