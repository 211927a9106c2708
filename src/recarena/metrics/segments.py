"""Segments: where a model wins (cold users, cold items, head and tail items).

User segments (boolean masks over the evaluated users):

``cold_users``
    Users with at most ``cold_user_max`` training interactions, counted as distinct items
    in the fit data (repeats of one item count once, as in the user x item matrix models
    are fit on). Users absent from the fit data have 0 and are cold.
``warm_users``
    The others.

Item segments (boolean masks over the catalog; every item is in exactly one):

``cold_items``
    Items with no training interaction, plus any item listed in ``cold_items`` (the new
    items of a cold-item split), whatever their count.
``head_items``
    The most popular items: the top ``head_share`` of the items that are not cold, ranked
    by training popularity. The head has ``ceil(head_share * n_not_cold)`` items, and any
    item exactly as popular as the last of them joins it as well, so equally popular items
    are never split between head and tail (the head can come out slightly larger than
    ``head_share``; the result does not depend on item ids).
``tail_items``
    Items with at least one training interaction that are not in the head.

A segment metric on an item segment keeps only the relevant items of that segment
(`restrict_truth`): "NDCG@10 on tail items" ranks the full list as usual but counts hits on
tail items only. Users left with no relevant item in the segment are excluded from it; the
number of users of every segment is reported beside its metrics (`segment_ranking_metrics`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recarena.metrics.ranking import RANKING_METRICS, ranking_metrics
from recarena.ranking import RankedLists

#: the segment of every measured user (or impression), beside the segments below
SEGMENT_ALL = "all"

USER_SEGMENTS: tuple[str, ...] = ("cold_users", "warm_users")
ITEM_SEGMENTS: tuple[str, ...] = ("head_items", "tail_items", "cold_items")


def user_segments(
    eval_users: np.ndarray,
    fit_interactions: pd.DataFrame,
    n_users: int,
    *,
    cold_user_max: int = 5,
) -> dict[str, np.ndarray]:
    """Cold and warm user masks over ``eval_users``.

    Parameters
    ----------
    eval_users
        Dense ids of the evaluated users (the order of the masks).
    fit_interactions
        What the models were fit on (columns ``user``, ``item``).
    n_users
        Number of users in the data set.
    cold_user_max
        Users with at most this many distinct training items are cold.

    Returns
    -------
    dict[str, numpy.ndarray]
        ``cold_users`` and ``warm_users``, boolean arrays of ``len(eval_users)``.
    """
    if cold_user_max < 0:
        raise ValueError(f"cold_user_max must be >= 0, got {cold_user_max}")
    users = np.asarray(eval_users, dtype=np.int64).reshape(-1)
    if len(users) and (users.min() < 0 or users.max() >= n_users):
        raise ValueError(f"eval_users hold ids outside the {n_users} users")
    pairs = fit_interactions[["user", "item"]].drop_duplicates()
    activity = np.bincount(pairs["user"].to_numpy(dtype=np.int64), minlength=n_users)
    cold = activity[users] <= cold_user_max
    return {"cold_users": cold, "warm_users": ~cold}


def item_segments(
    train_popularity: np.ndarray,
    *,
    head_share: float = 0.2,
    cold_items: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Head, tail and cold item masks over the catalog (see the module docstring).

    Parameters
    ----------
    train_popularity
        (n_items,) training users (or interactions) per item.
    head_share
        Share of the non-cold items that forms the head, in (0, 1).
    cold_items
        Ids of items to class as cold whatever their popularity (a cold-item split's new
        items).

    Returns
    -------
    dict[str, numpy.ndarray]
        ``head_items``, ``tail_items``, ``cold_items``: disjoint boolean arrays of
        ``n_items`` covering the catalog.
    """
    if not 0 < head_share < 1:
        raise ValueError(f"head_share must be in (0, 1), got {head_share}")
    pop = np.asarray(train_popularity, dtype=np.float64).reshape(-1)
    cold = pop <= 0
    if cold_items is not None:
        cold[np.asarray(cold_items, dtype=np.int64)] = True
    n_known = int((~cold).sum())
    head = np.zeros(len(pop), dtype=bool)
    if n_known:
        n_head = math.ceil(head_share * n_known)
        known_pop = np.sort(pop[~cold])[::-1]
        boundary = known_pop[n_head - 1]
        head = ~cold & (pop >= boundary)
    return {"head_items": head, "tail_items": ~cold & ~head, "cold_items": cold}


def restrict_truth(truth: sp.spmatrix, item_mask: np.ndarray) -> sp.csr_matrix:
    """Keep only the relevant items inside ``item_mask`` (a users x items CSR copy).

    Rows that lose every relevant item become empty; select the users with
    ``np.diff(result.indptr)[users] > 0`` for the segment.
    """
    mask = np.asarray(item_mask, dtype=bool).reshape(-1)
    if len(mask) != truth.shape[1]:
        raise ValueError(f"item mask has {len(mask)} entries for {truth.shape[1]} items")
    out = sp.csr_matrix(truth, copy=True)
    out.sum_duplicates()
    out.data = np.where(mask[out.indices], out.data, 0).astype(out.data.dtype)
    out.eliminate_zeros()
    return out


def subset_lists(lists: RankedLists, rows: np.ndarray) -> RankedLists:
    """The lists of the rows selected by a boolean mask or index array."""
    return RankedLists(
        np.asarray(lists.users)[rows], np.asarray(lists.items)[rows], np.asarray(lists.scores)[rows]
    )


def segment_ranking_metrics(
    lists: RankedLists,
    truth: sp.spmatrix,
    ks: Sequence[int],
    metrics: Sequence[str] = RANKING_METRICS,
    *,
    user_masks: Mapping[str, np.ndarray] | None = None,
    item_masks: Mapping[str, np.ndarray] | None = None,
) -> dict[str, pd.DataFrame]:
    """Per-user ranking metrics within each user and item segment.

    Parameters
    ----------
    lists, truth, ks, metrics
        As in `ranking_metrics`.
    user_masks
        Segment name -> boolean mask over ``lists.users`` (e.g. from `user_segments`).
    item_masks
        Segment name -> boolean mask over items (e.g. from `item_segments`); relevant items
        are restricted to the segment and users left without one are excluded.

    Returns
    -------
    dict[str, pandas.DataFrame]
        Segment name -> per-user metrics of the users in it; ``len(frame)`` is the number
        of users of the segment (possibly 0).
    """
    out: dict[str, pd.DataFrame] = {}
    n_rows = len(lists.users)
    for name, mask in (user_masks or {}).items():
        mask = np.asarray(mask, dtype=bool).reshape(-1)
        if len(mask) != n_rows:
            raise ValueError(f"user segment {name!r} has {len(mask)} entries for {n_rows} lists")
        out[name] = ranking_metrics(subset_lists(lists, mask), truth, ks, metrics)
    users = np.asarray(lists.users, dtype=np.int64)
    for name, mask in (item_masks or {}).items():
        restricted = restrict_truth(truth, mask)
        keep = np.diff(restricted.indptr)[users] > 0
        out[name] = ranking_metrics(subset_lists(lists, keep), restricted, ks, metrics)
    return out
