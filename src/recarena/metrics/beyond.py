"""Beyond-accuracy metrics: novelty, intra-list diversity, popularity bias, coverage, Gini.

Per user (one value per list, over its top k; padding -1 is ignored, a list with no item
scores 0):

``novelty@k``
    Mean self-information ``-log2 p_i`` of the listed items, with ``p_i`` the share of
    training users who interacted with item ``i``. It is add-one smoothed,
    ``p_i = (pop_i + 1) / (n_train_users + 1)``, so an item never seen in training is
    finite (``log2(n_train_users + 1)`` bits, the largest value) and an item every user has
    gives 0. ``p_i`` is capped at 1 when a popularity count exceeds the number of users.
``ild@k``
    Intra-list diversity: the mean over pairs of listed items of ``1 - cos(f_i, f_j)``,
    the cosine of their item feature rows (multi-hot genres, TF-IDF or text embeddings).
    An item whose feature row is all zero has cosine 0 with every item (distance 1).
    Lists with fewer than 2 items score 0. Values lie in [0, 1] for non-negative features
    and in [0, 2] otherwise. Computed without forming pairs:
    ``sum_{i != j} cos_ij = ||sum_i v_i||^2 - sum_i ||v_i||^2`` over unit rows ``v_i``.
``arp@k``
    Average recommended popularity: mean training popularity (users per item) of the
    listed items. Lower means less popularity bias.

Global (over every user's top k together):

``coverage@k``
    Share of the ``n_items`` catalog that appears in at least one list.
``gini@k``
    Gini index of how often each catalog item is recommended,
    ``sum_j (2j - n - 1) c_(j) / ((n - 1) sum_j c_j)`` over the counts ``c`` sorted
    ascending (``j`` from 1, ``n = n_items``): 0 when every item is recommended equally
    often, 1 when one item takes every place. NaN when no list holds an item.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recarena.metrics.ranking import check_ks, list_items
from recarena.ranking import RankedLists

logger = logging.getLogger(__name__)

#: per-user beyond-accuracy metrics
PER_USER_BEYOND: tuple[str, ...] = ("novelty", "ild", "arp")
#: global beyond-accuracy metrics (one value for all lists)
GLOBAL_BEYOND: tuple[str, ...] = ("coverage", "gini")
BEYOND_METRICS: tuple[str, ...] = ("coverage", "novelty", "ild", "arp", "gini")


def self_information(train_popularity: np.ndarray, n_train_users: int) -> np.ndarray:
    """Add-one smoothed self-information ``-log2 p_i`` of each item (bits, >= 0)."""
    if n_train_users <= 0:
        raise ValueError(f"n_train_users must be positive, got {n_train_users}")
    pop = np.asarray(train_popularity, dtype=np.float64)
    p = np.minimum((pop + 1.0) / (n_train_users + 1.0), 1.0)
    return -np.log2(p)


def gini_index(counts: np.ndarray) -> float:
    """Normalised Gini index of non-negative counts (0 even, 1 all in one; NaN if all 0)."""
    c = np.sort(np.asarray(counts, dtype=np.float64))
    n = len(c)
    total = c.sum()
    if total <= 0:
        return float("nan")
    if n < 2:
        return 0.0
    j = np.arange(1, n + 1, dtype=np.float64)
    return float(np.dot(2.0 * j - n - 1.0, c) / ((n - 1.0) * total))


def _unit_rows(features: sp.spmatrix | np.ndarray, n_items: int) -> sp.csr_matrix | np.ndarray:
    """Feature rows scaled to unit L2 norm (all-zero rows stay zero)."""
    if features.shape[0] != n_items:
        raise ValueError(
            f"item_features has {features.shape[0]} rows, expected one per item ({n_items})"
        )
    if sp.issparse(features):
        x = sp.csr_matrix(features, dtype=np.float64)
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
        scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        return sp.csr_matrix(sp.diags(scale) @ x)
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"item_features must be 2-d (items x features), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("item_features holds NaN or infinite values")
    norms = np.linalg.norm(x, axis=1)
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return x * scale[:, None]


def _row_sq_norms(s: sp.spmatrix | np.ndarray) -> np.ndarray:
    if sp.issparse(s):
        return np.asarray(s.multiply(s).sum(axis=1)).ravel()
    return np.einsum("ij,ij->i", s, s)


def _mean_over_lists(items: np.ndarray, values: np.ndarray, ks: list[int]) -> dict[int, np.ndarray]:
    """Mean of ``values[item]`` over each list's top k (padding ignored; 0 for no item)."""
    n_rows, width = items.shape
    valid = items >= 0
    cum = np.cumsum(np.where(valid, values[np.maximum(items, 0)], 0.0), axis=1)
    cum_count = np.cumsum(valid, axis=1, dtype=np.float64)
    out: dict[int, np.ndarray] = {}
    for k in ks:
        if width == 0:
            out[k] = np.zeros(n_rows)
            continue
        c = min(k, width) - 1
        out[k] = np.divide(
            cum[:, c], cum_count[:, c], out=np.zeros(n_rows), where=cum_count[:, c] > 0
        )
    return out


def _ild(
    items: np.ndarray, ks: list[int], unit: sp.csr_matrix | np.ndarray
) -> dict[int, np.ndarray]:
    """Intra-list diversity at each cut-off, adding list positions block by block."""
    n_rows, width = items.shape
    n_items = unit.shape[0]
    has_norm = _row_sq_norms(unit) > 0.5  # rows are unit or zero
    out: dict[int, np.ndarray] = {}
    summed: sp.csr_matrix | np.ndarray | None = None  # per user: sum of listed unit rows
    n_listed = np.zeros(n_rows)
    n_unit = np.zeros(n_rows)
    done = 0
    for k in sorted(ks):
        stop = min(k, width)
        if stop > done:
            block = items[:, done:stop]
            valid = block >= 0
            rows = np.nonzero(valid)[0]
            ind = sp.csr_matrix((np.ones(len(rows)), (rows, block[valid])), shape=(n_rows, n_items))
            part = ind @ unit
            summed = part if summed is None else summed + part
            n_listed += valid.sum(axis=1)
            n_unit += (valid & has_norm[np.maximum(block, 0)]).sum(axis=1)
            done = stop
        sq = _row_sq_norms(summed) if summed is not None else np.zeros(n_rows)
        pairs = n_listed * (n_listed - 1.0)
        mean_sim = np.divide(sq - n_unit, pairs, out=np.zeros(n_rows), where=pairs > 0)
        out[k] = np.where(pairs > 0, 1.0 - mean_sim, 0.0)
    return out


def beyond_accuracy(
    lists: RankedLists,
    ks: Sequence[int],
    *,
    train_popularity: np.ndarray,
    n_train_users: int,
    item_features: sp.spmatrix | np.ndarray | None = None,
    n_items: int,
    metrics: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Novelty, intra-list diversity, popularity bias, coverage and Gini of ranked lists.

    See the module docstring for the definitions.

    Parameters
    ----------
    lists
        Top-K lists (padding -1).
    ks
        Cut-offs.
    train_popularity
        (n_items,) number of training users of each item.
    n_train_users
        Number of users in the training data (the denominator of ``p_i``).
    item_features
        (n_items, n_features) item vectors for ILD (multi-hot genres, TF-IDF, embeddings),
        dense or sparse; without them ILD is not computed.
    n_items
        Catalog size (coverage and Gini count every catalog item).
    metrics
        Subset of ``coverage, novelty, ild, arp, gini`` to compute; default all (ILD only
        when ``item_features`` is given).

    Returns
    -------
    per_user : pandas.DataFrame
        One row per entry of ``lists.users`` (index ``user``), columns ``novelty@k``,
        ``ild@k``, ``arp@k`` for the requested names.
    global_values : dict[str, float]
        ``coverage@k`` and ``gini@k`` for the requested names.
    """
    if metrics is None:
        names = [m for m in BEYOND_METRICS if m != "ild" or item_features is not None]
    else:
        names = [str(m).lower() for m in metrics]
        unknown = [m for m in names if m not in BEYOND_METRICS]
        if unknown:
            raise ValueError(
                f"unknown beyond-accuracy metric(s) {unknown}; known: {', '.join(BEYOND_METRICS)}"
            )
        if "ild" in names and item_features is None:
            raise ValueError("ild needs item_features (genres or text vectors), none given")
    if n_items <= 0:
        raise ValueError(f"n_items must be positive, got {n_items}")
    ks = check_ks(ks)
    items = list_items(lists, n_items)
    per_user: dict[str, np.ndarray] = {}
    global_values: dict[str, float] = {}
    for name in names:
        if name in ("novelty", "arp"):
            pop = np.asarray(train_popularity, dtype=np.float64).reshape(-1)
            if len(pop) != n_items:
                raise ValueError(
                    f"train_popularity has {len(pop)} entries, expected one per item ({n_items})"
                )
            values = self_information(pop, n_train_users) if name == "novelty" else pop
            by_k = _mean_over_lists(items, values, ks)
        elif name == "ild":
            by_k = _ild(items, ks, _unit_rows(item_features, n_items))
        else:
            for k in ks:
                top = items[:, :k]
                counts = np.bincount(top[top >= 0], minlength=n_items)
                if name == "coverage":
                    global_values[f"coverage@{k}"] = float((counts > 0).sum() / n_items)
                else:
                    global_values[f"gini@{k}"] = gini_index(counts)
            continue
        per_user.update({f"{name}@{k}": by_k[k] for k in ks})
    frame = pd.DataFrame(per_user, index=pd.Index(np.asarray(lists.users), name="user"))
    return frame, global_values
