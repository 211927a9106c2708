"""Top-K ranking metrics per user: HR, Recall, Precision, F1, NDCG, MRR, MAP.

Everything is computed from one boolean hit matrix (users x list positions), vectorised
over users; each metric at every cut-off is a cumulative sum over positions.

Definitions (binary relevance; ``rel`` the user's held-out items, ``hit_i`` whether the
item at rank ``i`` is relevant, ranks from 1):

``hr@k``
    1 if any of the top k is relevant, else 0.
``recall@k``
    ``hits@k / |rel|``.
``precision@k``
    ``hits@k / k`` (a list shorter than k is padded with non-hits).
``f1@k``
    Harmonic mean of precision@k and recall@k, 0 when both are 0.
``ndcg@k``
    ``DCG@k / IDCG@k`` with ``DCG@k = sum_{i<=k} hit_i / log2(i + 1)`` and the ideal DCG
    over ``min(|rel|, k)`` hits in the first places.
``mrr@k``
    ``1 / rank`` of the first relevant item within the top k, else 0.
``map@k``
    Average precision at k, ``sum_{i<=k} hit_i * precision@i / |rel|``. The denominator is
    the number of relevant items ``|rel|``, not ``min(|rel|, k)``: this is ranx's (and
    trec_eval's) normalisation, so a user with more relevant items than k cannot reach 1.

Conventions: padding (-1) is never a hit; an item repeated in a list counts once (its first
place); a user whose list is empty or all padding scores 0 on every metric and is kept; a
user without relevant items is an error (only users with held-out items are evaluated).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recarena.ranking import RankedLists

#: ranking metric names, in the order their columns are produced by default
RANKING_METRICS: tuple[str, ...] = ("hr", "recall", "precision", "f1", "ndcg", "mrr", "map")


def check_ks(ks: Sequence[int] | int) -> list[int]:
    """Cut-offs as a list of distinct positive ints, in the order given.

    Raises
    ------
    ValueError
        When ``ks`` is empty or holds a non-positive cut-off.
    """
    if isinstance(ks, int | np.integer):
        ks = [int(ks)]
    out: list[int] = []
    for k in ks:
        if int(k) != k or k <= 0:
            raise ValueError(f"cut-offs must be positive integers, got {k!r}")
        if int(k) not in out:
            out.append(int(k))
    if not out:
        raise ValueError("at least one cut-off k is needed")
    return out


def list_items(lists: RankedLists, n_items: int | None = None) -> np.ndarray:
    """The lists' item ids as a 2-d int64 array, checked against the catalog size.

    Any negative id is padding and is normalised to -1.
    """
    items = np.asarray(lists.items)
    if items.ndim != 2:
        raise ValueError(f"RankedLists.items must be 2-d (users x k), got shape {items.shape}")
    if len(lists.users) != items.shape[0]:
        raise ValueError(f"{len(lists.users)} users but {items.shape[0]} ranked lists")
    items = items.astype(np.int64, copy=False)
    if items.size and n_items is not None and items.max() >= n_items:
        raise ValueError(f"item id {items.max()} is outside the {n_items}-item catalog")
    if items.size and items.min() < -1:
        items = np.where(items < 0, -1, items)
    return items


def first_occurrence(items: np.ndarray) -> np.ndarray:
    """Mask of list positions holding an item not seen earlier in the same row (padding False)."""
    valid = items >= 0
    if items.shape[1] < 2:
        return valid
    srt = np.sort(items, axis=1)
    if not ((srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)).any():
        return valid
    order = np.argsort(items, axis=1, kind="stable")
    srt = np.take_along_axis(items, order, axis=1)
    first_sorted = np.ones(items.shape, dtype=bool)
    first_sorted[:, 1:] = srt[:, 1:] != srt[:, :-1]
    first = np.empty(items.shape, dtype=bool)
    np.put_along_axis(first, order, first_sorted, axis=1)
    return first & valid


def _truth_rows(truth: sp.spmatrix, users: np.ndarray) -> sp.csr_matrix:
    """The rows of ``truth`` of ``users``, canonical (sorted, no duplicates, no zeros)."""
    if not sp.issparse(truth):
        raise TypeError(f"truth must be a scipy.sparse matrix, got {type(truth).__name__}")
    truth = sp.csr_matrix(truth)
    users = np.asarray(users, dtype=np.int64)
    if len(users) and (users.min() < 0 or users.max() >= truth.shape[0]):
        bad = users[(users < 0) | (users >= truth.shape[0])][0]
        raise ValueError(f"user {bad} is outside the truth matrix's {truth.shape[0]} rows")
    sub = truth[users]
    sub.sum_duplicates()
    sub.eliminate_zeros()
    sub.sort_indices()
    return sub


def hit_matrix(lists: RankedLists, truth: sp.spmatrix) -> tuple[np.ndarray, np.ndarray]:
    """Which list positions hold a relevant item, and how many relevant items each user has.

    Parameters
    ----------
    lists
        Ranked lists; ``lists.users[r]`` is the user of row ``r``.
    truth
        Users x items sparse matrix of held-out relevant items, rows indexed by user id
        (as `recarena.splits.Split.truth_csr` gives). Stored non-zero entries are relevant.

    Returns
    -------
    hits : numpy.ndarray
        (n_lists, k) bool.
    n_relevant : numpy.ndarray
        (n_lists,) int64.
    """
    sub = _truth_rows(truth, lists.users)
    n_items = sub.shape[1]
    items = list_items(lists, n_items)
    n_rel = np.diff(sub.indptr).astype(np.int64)
    n_rows, width = items.shape
    if n_rows == 0 or width == 0 or sub.nnz == 0:
        return np.zeros((n_rows, width), dtype=bool), n_rel
    # (row, item) pairs as one sorted int64 key each; a position is a hit when its key is there
    t_rows = np.repeat(np.arange(n_rows, dtype=np.int64), n_rel)
    t_keys = t_rows * n_items + sub.indices.astype(np.int64)
    l_keys = np.arange(n_rows, dtype=np.int64)[:, None] * n_items + items
    pos = np.searchsorted(t_keys, l_keys)
    np.minimum(pos, len(t_keys) - 1, out=pos)
    hits = (t_keys[pos] == l_keys) & first_occurrence(items)
    return hits, n_rel


def ranking_metrics(
    lists: RankedLists,
    truth: sp.spmatrix,
    ks: Sequence[int],
    metrics: Sequence[str] = RANKING_METRICS,
) -> pd.DataFrame:
    """Per-user ranking metrics of ranked lists against held-out items.

    See the module docstring for the definitions.

    Parameters
    ----------
    lists
        Top-K lists (padding -1). Cut-offs above the lists' width see padding beyond it.
    truth
        Users x items sparse matrix of held-out relevant items (binary), rows indexed by user
        id.
    ks
        Cut-offs.
    metrics
        Names among ``hr, recall, precision, f1, ndcg, mrr, map`` (case-insensitive).

    Returns
    -------
    pandas.DataFrame
        One row per entry of ``lists.users`` in that order (index ``user``), float columns
        ``"{name}@{k}"`` for each name, then each k.

    Raises
    ------
    ValueError
        For an unknown metric name, a bad cut-off, an item outside the catalog, or a user
        without relevant items.
    """
    names = [str(m).lower() for m in metrics]
    unknown = [m for m in names if m not in RANKING_METRICS]
    if unknown:
        raise ValueError(
            f"unknown ranking metric(s) {unknown}; known: {', '.join(RANKING_METRICS)}"
        )
    ks = check_ks(ks)
    users = np.asarray(lists.users)
    hits, n_rel = hit_matrix(lists, truth)
    if (n_rel == 0).any():
        bad = users[n_rel == 0]
        raise ValueError(
            f"{len(bad)} user(s) have no relevant items (e.g. user {bad[0]}); evaluate only "
            "users with held-out items"
        )
    width = hits.shape[1]
    max_k = max(ks)
    # lists shorter than a cut-off: the missing places are non-hits
    hits = np.pad(hits, ((0, 0), (0, max_k - width))) if width < max_k else hits[:, :max_k]
    h = hits.astype(np.float64)
    ranks = np.arange(1, max_k + 1, dtype=np.float64)
    discount = 1.0 / np.log2(ranks + 1.0)
    cum_hits = np.cumsum(h, axis=1)
    need = set(names)
    if "ndcg" in need:
        cum_dcg = np.cumsum(h * discount, axis=1)
        ideal = np.cumsum(discount)
    if "map" in need:
        cum_ap = np.cumsum(h * (cum_hits / ranks), axis=1)
    if "mrr" in need:
        any_hit = hits.any(axis=1)
        first = np.where(any_hit, hits.argmax(axis=1), max_k)  # 0-based rank of first hit
    rel = n_rel.astype(np.float64)
    columns: dict[str, np.ndarray] = {}
    for name in names:
        for k in ks:
            n_hits = cum_hits[:, k - 1]
            if name == "hr":
                value = (n_hits > 0).astype(np.float64)
            elif name == "recall":
                value = n_hits / rel
            elif name == "precision":
                value = n_hits / k
            elif name == "f1":
                p, r = n_hits / k, n_hits / rel
                denom = p + r
                value = np.divide(2.0 * p * r, denom, out=np.zeros_like(denom), where=denom > 0)
            elif name == "ndcg":
                idcg = ideal[np.minimum(n_rel, k) - 1]
                value = cum_dcg[:, k - 1] / idcg
            elif name == "mrr":
                value = np.where(first < k, 1.0 / (first + 1.0), 0.0)
            else:  # map
                value = cum_ap[:, k - 1] / rel
            columns[f"{name}@{k}"] = value
    return pd.DataFrame(columns, index=pd.Index(users, name="user"))
