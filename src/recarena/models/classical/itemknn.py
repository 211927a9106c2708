"""ItemKNN: item-item cosine similarity with shrinkage and top-k neighbour pruning.

The neighbourhood baseline that Dacrema et al. found to beat most neural recommenders once
tuned (Dacrema, Cremonesi & Jannach, "Are We Really Making Much Progress? A Worrying
Analysis of Recent Neural Recommendation Approaches", RecSys 2019). This is their
``ItemKNNCFRecommender``: optional TF-IDF or BM25 weighting of the user-item matrix, cosine
similarity with a shrink term, the ``k`` most similar items kept per item, and a user's
score for item ``j`` the weighted sum of ``j``'s neighbours among the items they know.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recarena.models.base import (
    Recommender,
    TrainingData,
    is_integer,
    is_number,
    require_param,
)

logger = logging.getLogger(__name__)

FeatureWeighting = Literal["none", "tfidf", "bm25"]

#: cells of the dense similarity block computed at once (128 MB as float32, plus the
#: int64 indices of the top-k selection)
_BLOCK_CELLS = 32 << 20


class ItemKNN(Recommender):
    """Item-based nearest neighbours with cosine similarity and shrinkage.

    With ``X`` the (optionally weighted) binary user x item matrix and ``x_i`` its column for
    item ``i``, the similarity of items ``i`` and ``j`` is

    .. math:: s_{ij} = \\frac{x_i \\cdot x_j}{\\lVert x_i \\rVert \\lVert x_j \\rVert + h}

    with shrink ``h`` (Sarwar et al., WWW 2001; shrinkage as in Koren, KDD 2008), zero on
    the diagonal. Only the ``k`` largest similarities of each target item ``j`` are kept
    (column ``j`` of the pruned matrix ``S``), and a user's scores are their history row
    times ``S``: :math:`\\hat r_{uj} = \\sum_{i \\in I_u} w_{ui} s_{ij}`, where ``w_{ui}`` is
    1, or the BM25 item weight of the history when ``feature_weighting="bm25"``.

    The similarity is computed in blocks of target items, so memory stays near 0.5 GB of
    scratch space plus the pruned matrix (``k`` entries per item) whatever the catalog
    size (a 25k-item catalog with 3M interactions fits in about 30 s on 2 cores).

    Parameters
    ----------
    k
        Neighbours kept per item (default 50). Smaller values give sharper, more
        personalised lists; larger values smooth towards popular items.
    shrink
        Added to the product of the norms (default 10). Damps similarities that rest on few
        common users, which are noisy for rarely seen items.
    feature_weighting
        Weighting of the user-item matrix before the similarity, as in Dacrema et al.:
        ``"none"`` (default, binary), ``"tfidf"`` (each user's column scaled by
        ``log(n_items / (1 + n_items_of_user))``, so heavy users count less) or ``"bm25"``
        (Okapi BM25 with items as documents and users as terms, ``k1=1.2``, ``b=0.75``; also
        down-weights popular items in the history).
    normalise
        True (default) divides by the norms as above (cosine). False uses the raw
        co-occurrence (dot product) as similarity; ``shrink`` then has no effect on rankings
        and is ignored.

    References
    ----------
    Sarwar, Karypis, Konstan & Riedl, "Item-Based Collaborative Filtering Recommendation
    Algorithms", WWW 2001. Dacrema, Cremonesi & Jannach, RecSys 2019 (tuned baselines).
    """

    param_grid = {
        "k": [20, 50, 200, 800],
        "feature_weighting": ["none", "tfidf", "bm25"],
    }
    # scores are the history row of seen_ times the similarities, read at scoring time
    history_use = "interactions"

    def __init__(
        self,
        k: int = 50,
        shrink: float = 10.0,
        feature_weighting: FeatureWeighting = "none",
        normalise: bool = True,
    ) -> None:
        self.k = k
        self.shrink = shrink
        self.feature_weighting = feature_weighting
        self.normalise = normalise

    # ------------------------------------------------------------------ fitting
    def check_params(self) -> None:
        """``k`` a positive integer, ``shrink`` >= 0, ``feature_weighting`` a known scheme."""
        require_param(self, "k", is_integer(self.k) and self.k >= 1, "a positive integer")
        require_param(self, "shrink", is_number(self.shrink) and self.shrink >= 0, "a number >= 0")
        require_param(
            self,
            "feature_weighting",
            self.feature_weighting in ("none", "tfidf", "bm25"),
            "'none', 'tfidf' or 'bm25'",
        )

    def _fit(self, data: TrainingData, valid: pd.DataFrame | None) -> None:
        binary = data.csr()
        weighted, history_weights = _weight_user_item(binary, self.feature_weighting)
        self.similarity_ = item_similarity(
            weighted, k=self.k, shrink=self.shrink, normalise=self.normalise
        )
        self.history_weights_ = history_weights
        logger.debug("ItemKNN: %d items, %d similarities kept", data.n_items, self.similarity_.nnz)

    # ------------------------------------------------------------------ scoring
    def _score(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        # seen_ is the binary training matrix (set by Recommender.fit, saved with the model)
        history = self.seen_[users]
        if self.history_weights_ is not None:
            history = history.multiply(self.history_weights_[None, :]).tocsr()
        if items is None:
            return (history @ self.similarity_).toarray()
        # candidates: full rows for a bounded number of users at a time, then gathered
        out = np.empty(items.shape, dtype=np.float32)
        step = max(1, _BLOCK_CELLS // max(1, self.n_items_))
        for start in range(0, len(users), step):
            full = (history[start : start + step] @ self.similarity_).toarray()
            out[start : start + step] = np.take_along_axis(
                full, items[start : start + step], axis=1
            )
        return out

    def n_parameters(self) -> tuple[int, int]:
        """Stored similarities (at most ``k`` per item)."""
        n = int(self.similarity_.nnz)
        return n, n


def _weight_user_item(
    matrix: sp.csr_matrix, scheme: FeatureWeighting, k1: float = 1.2, b: float = 0.75
) -> tuple[sp.csr_matrix, np.ndarray | None]:
    """Weighted copy of a binary user x item matrix and the item weights of a history row.

    Follows Dacrema et al.'s ``TF_IDF(URM.T).T`` and ``okapi_BM_25(URM.T).T``: items are
    the documents and users the terms. The per-user idf factor is the same for every item of
    a user's row, so only BM25's per-item length normalisation changes how a history is
    weighted when scoring; that part is returned (None when the history is unweighted).
    """
    if scheme == "none":
        return matrix, None
    if scheme not in ("tfidf", "bm25"):
        raise ValueError(
            f"ItemKNN feature_weighting must be 'none', 'tfidf' or 'bm25', got {scheme!r}"
        )
    n_users, n_items = matrix.shape
    activity = np.diff(matrix.indptr)
    # idf of a user ("term") over items ("documents"); clipped at 0 for users who saw
    # (nearly) everything, whose log would be negative
    idf = np.maximum(np.log(n_items / (1.0 + activity)), 0.0).astype(np.float32)
    coo = matrix.tocoo()
    if scheme == "tfidf":
        data = coo.data * idf[coo.row]
        item_weights = None
    else:
        popularity = np.asarray(matrix.sum(axis=0)).ravel()
        average = popularity.mean() if n_items else 1.0
        length_norm = (1.0 - b) + b * popularity / max(average, 1e-12)
        tf = coo.data
        saturation = tf * (k1 + 1.0) / (k1 * length_norm[coo.col] + tf)
        data = saturation * idf[coo.row]
        # weight of a history item (tf = 1) without the per-user idf constant
        item_weights = ((k1 + 1.0) / (k1 * length_norm + 1.0)).astype(np.float32)
    weighted = sp.csr_matrix(
        (data.astype(np.float32), (coo.row, coo.col)), shape=(n_users, n_items)
    )
    return weighted, item_weights


def item_similarity(
    matrix: sp.csr_matrix, *, k: int, shrink: float, normalise: bool = True
) -> sp.csr_matrix:
    """Pruned item x item similarity of the columns of a user x item matrix.

    Column ``j`` of the result holds the ``k`` largest positive similarities of item ``j``
    (diagonal excluded), so ``history @ result`` scores items from their neighbours.
    Computed in blocks of target items to bound memory.
    """
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    n_items = matrix.shape[1]
    k = min(k, max(n_items - 1, 1))
    by_item = matrix.T.tocsr()  # items x users
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=0)).ravel()).astype(np.float32)
    block = max(1, min(n_items, _BLOCK_CELLS // max(1, n_items)))
    rows, cols, vals = [], [], []
    for start in range(0, n_items, block):
        stop = min(n_items, start + block)
        width = stop - start
        # one row per target item of the block, one column per candidate neighbour
        neg = -(by_item[start:stop] @ matrix).toarray()
        if normalise:
            neg /= norms[start:stop, None] * norms[None, :] + shrink + 1e-12
        neg[np.arange(width), start + np.arange(width)] = 0.0
        if k < n_items:
            # negated, so the k best are the k smallest: numpy's introselect is fast for a
            # small kth but very slow for kth near the end of rows full of tied zeros
            top = np.argpartition(neg, k - 1, axis=1)[:, :k]  # block x k
        else:
            top = np.broadcast_to(np.arange(n_items), (width, n_items))
        top_vals = -np.take_along_axis(neg, top, axis=1)
        keep = top_vals > 0
        rows.append(top[keep])
        cols.append(np.broadcast_to(np.arange(start, stop)[:, None], top.shape)[keep])
        vals.append(top_vals[keep])
    sim = sp.csr_matrix(
        (
            np.concatenate(vals) if vals else np.empty(0, np.float32),
            (
                np.concatenate(rows) if rows else np.empty(0, np.int64),
                np.concatenate(cols) if cols else np.empty(0, np.int64),
            ),
        ),
        shape=(n_items, n_items),
        dtype=np.float32,
    )
    sim.sort_indices()
    return sim
