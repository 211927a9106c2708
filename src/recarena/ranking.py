"""Top-K selection with seeded random tie-breaking.

A model that gives many items the same score (popularity, a constant, a failed model) must
not get the held-out item ranked first because of its id: breaking ties by id inflates
NDCG by about 20%. Here ties are broken by a seeded random key that depends on the seed,
the user and the item, never on the id order, and never reorders items whose float32
scores differ.

How it is fast
--------------
The random key is a counter-based hash (the splitmix64 finaliser) of ``(seed, user,
item)``: a pure function, vectorised over a whole batch, the same whatever batch a user is
scored in, and needed only for the few items that reach a list. Selection runs on the
float32 scores themselves: ``np.partition`` finds each row's K-th largest score (the
threshold), and the row's top K are the items scoring at least the threshold. Only rows
where more items tie with the threshold than there are places left (a constant model, a
popularity model) pay for a hash of the whole row to pick the tied items at random. The K
chosen items are then ordered by (score, random key), so equal scores are ordered at
random and distinct scores never are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from recarena._io import save_npz

#: rows processed at once are about this many scores, bounding temporary memory (~100 MB)
_CHUNK_ELEMENTS = 1 << 22

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a bijective, well-mixing hash of uint64 values (wraps mod 2**64)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _MIX1
    x = x ^ (x >> np.uint64(27))
    x = x * _MIX2
    return x ^ (x >> np.uint64(31))


def _user_keys(users: np.ndarray, seed: int) -> np.ndarray:
    """One uint64 stream key per (seed, user)."""
    seed_key = _mix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    u = np.asarray(users).astype(np.int64).view(np.uint64)
    return _mix64(u * _GOLDEN + seed_key)


def tie_break_keys(user_keys: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Uniform random keys in [0, 1) for ``items`` (one row per user), from `_user_keys`.

    Parameters
    ----------
    user_keys
        (n_rows,) uint64 keys of the rows' users.
    items
        (n_rows, n) item ids, or (n,) ids shared by every row (any non-negative integers).

    Returns
    -------
    numpy.ndarray
        (n_rows, n) float64 keys; the same (seed, user, item) always gives the same key.
    """
    it = np.asarray(items).astype(np.int64).view(np.uint64)
    h = _mix64(user_keys[:, None] ^ _mix64(it + _GOLDEN))
    h >>= np.uint64(11)
    return h.astype(np.float64) * (1.0 / (1 << 53))


def _select_rows(s32: np.ndarray, kk: int, user_keys: np.ndarray) -> np.ndarray:
    """Column indices of the ``kk`` best scores of each row (unordered), ties chosen at random."""
    n_rows, n_cols = s32.shape
    if kk == n_cols:
        return np.broadcast_to(np.arange(n_cols, dtype=np.int64), (n_rows, n_cols)).copy()
    thr = np.partition(s32, n_cols - kk, axis=1)[:, n_cols - kk]
    at_least = s32 >= thr[:, None]
    count = at_least.sum(axis=1)
    out = np.empty((n_rows, kk), dtype=np.int64)
    clean = count == kk
    if clean.all():
        return np.nonzero(at_least)[1].reshape(n_rows, kk).astype(np.int64)
    if clean.any():
        out[clean] = np.nonzero(at_least[clean])[1].reshape(-1, kk)
    # more items tie with the threshold than places remain: all items above the threshold,
    # plus the tied items with the largest random keys
    tied_rows = np.flatnonzero(~clean)
    sub = s32[tied_rows]
    sub_thr = thr[tied_rows, None]
    keys = tie_break_keys(user_keys[tied_rows], np.arange(n_cols))
    keys[sub > sub_thr] = 2.0
    keys[sub < sub_thr] = -1.0
    out[tied_rows] = np.argpartition(keys, n_cols - kk, axis=1)[:, n_cols - kk :]
    return out


def top_k(
    scores: np.ndarray, k: int, *, users: np.ndarray | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the ``k`` best columns of each row, best first.

    Columns scored ``-inf`` are never returned (they are excluded items): rows with fewer
    than ``k`` finite scores are padded with index -1 and score ``-inf``. NaN scores are an
    error in the model and raise. Scores are compared as float32; equal float32 scores are
    ordered by a random key that depends on ``(seed, user, item)`` only, so a user's list
    does not depend on the batch it was scored in.

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

    Returns
    -------
    indices : numpy.ndarray
        (n_rows, k) int64 column indices, -1 for padding.
    top_scores : numpy.ndarray
        (n_rows, k) float32 scores of those columns, ``-inf`` for padding.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-d (users x items), got shape {scores.shape}")
    if k < 0:
        raise ValueError(f"k must be non-negative, got {k}")
    s32 = np.asarray(scores, dtype=np.float32)
    if np.isnan(s32).any():
        raise ValueError("the model returned NaN scores")
    n_rows, n_cols = s32.shape
    if users is None:
        users = np.arange(n_rows)
    users = np.asarray(users).reshape(-1)
    if len(users) != n_rows:
        raise ValueError(f"{len(users)} users given for {n_rows} rows of scores")
    kk = min(k, n_cols)
    user_keys = _user_keys(users, seed)
    idx = np.empty((n_rows, kk), dtype=np.int64)
    if kk > 0:
        step = max(1, _CHUNK_ELEMENTS // max(1, n_cols))
        for start in range(0, n_rows, step):
            stop = min(n_rows, start + step)
            idx[start:stop] = _select_rows(s32[start:stop], kk, user_keys[start:stop])
    sel = np.take_along_axis(s32, idx, axis=1)
    # best first: by score, equal scores by their random key (np.lexsort: last key is primary)
    order = np.lexsort((-tie_break_keys(user_keys, idx), -sel), axis=1)
    idx = np.take_along_axis(idx, order, axis=1)
    top_scores = np.take_along_axis(sel, order, axis=1)
    idx[np.isneginf(top_scores)] = -1
    if kk < k:
        pad = k - kk
        idx = np.pad(idx, ((0, 0), (0, pad)), constant_values=-1)
        top_scores = np.pad(top_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    return idx, top_scores


@dataclass(eq=False)
class RankedLists:
    """Top-K lists for a set of users: ``items[r]`` is user ``users[r]``'s list, best first.

    Lists shorter than K are padded with -1 (score ``-inf``).
    """

    users: np.ndarray
    items: np.ndarray
    scores: np.ndarray
    #: with candidates: every candidate's raw score (before exclusions), not saved
    candidate_scores: np.ndarray | None = None

    @property
    def k(self) -> int:
        return int(self.items.shape[1])

    def save(self, path: str | os.PathLike[str]) -> None:
        save_npz(path, users=self.users, items=self.items, scores=self.scores)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RankedLists:
        with np.load(path, allow_pickle=False) as z:
            return cls(z["users"], z["items"], z["scores"])

    def for_user(self, user: int) -> tuple[np.ndarray, np.ndarray]:
        rows = np.flatnonzero(self.users == user)
        if len(rows) == 0:
            raise KeyError(f"user {user} has no saved list")
        row = int(rows[0])
        keep = self.items[row] >= 0
        return self.items[row][keep], self.scores[row][keep]
