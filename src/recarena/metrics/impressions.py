"""Per-impression metrics of news recommendation (MIND): AUC, MRR, nDCG@5, nDCG@10.

An impression is one page view: the items shown to a user, some clicked (label 1), the
rest not (label 0). A model scores every shown item and is measured per impression, then
the per-impression values are averaged over impressions. `impression_metrics` computes the
values exactly as the official MIND evaluation script (``evaluate.py`` of the MIND
competition, msnews.github.io) does for each impression:

``auc``
    ``sklearn.metrics.roc_auc_score(labels, scores)``: the share of (clicked, not clicked)
    pairs where the clicked item scores higher, ties counted half.
``mrr``
    ``sum(labels[order] / (rank)) / sum(labels)`` with ``order`` the items by decreasing
    score and ``rank`` = 1, 2, ...: the mean reciprocal rank of the clicked items.
``ndcg@5``, ``ndcg@10``
    ``dcg(k) / ideal dcg(k)`` with ``dcg(k) = sum over the first k ranks of
    (2 ** label - 1) / log2(rank + 1)`` and the ideal ordering sorting by label.

The script orders items with ``numpy.argsort(scores)[::-1]``; here that order is made
reproducible as the reverse of a *stable* ascending sort: among items with equal scores, the
one shown later comes first. (The script's own tie order depends on numpy's sorting
algorithm; with distinct scores, as in every submission, both agree exactly.) A caller that
wants seeded random tie-breaking breaks ties in ``scores`` before calling.

Impressions with one label class only (MIND's own labelled files hold none: every
impression has a click and a non-click) are handled as the script's formulas handle them:
``roc_auc_score`` gives NaN there (recent scikit-learn, with an "Only one class is present"
warning; older releases raise ``ValueError`` and the script stops), so ``auc`` is NaN; no
click makes ``mrr`` and ``ndcg@k`` 0/0, so NaN; every item clicked gives ``ndcg@k`` 1 and
``mrr`` the mean of ``1 / rank``. The benchmark's numbers are the means of the columns over
impressions; ``frame.mean()`` skips the NaN of one-class impressions, where the script's
``np.mean`` would turn the whole average into NaN.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recarena.metrics.pointwise import _grouped_auc

#: The columns of `impression_metrics`, in order.
IMPRESSION_METRICS: tuple[str, ...] = ("auc", "mrr", "ndcg@5", "ndcg@10")


def impression_metrics(
    impressions: np.ndarray, labels: np.ndarray, scores: np.ndarray
) -> pd.DataFrame:
    """AUC, MRR, nDCG@5 and nDCG@10 of every impression, as the official MIND script.

    Parameters
    ----------
    impressions
        The impression of each shown item (any sortable ids, e.g. the ``impression`` column
        of `recarena.data.Dataset.impressions`). The rows of an impression need not be
        contiguous; their relative order is the order the items were shown in (it decides
        ties, see the module docstring).
    labels
        1 where the item was clicked, 0 where it was shown but not clicked.
    scores
        The model's score of each shown item; higher ranks first.

    Returns
    -------
    pandas.DataFrame
        One row per impression, indexed by the sorted distinct impression ids (index name
        ``impression``), with float columns ``auc``, ``mrr``, ``ndcg@5`` and ``ndcg@10``.
        ``auc`` is NaN for an impression with one label class; ``mrr`` and ``ndcg@k`` are NaN
        for one without a click.

    Raises
    ------
    ValueError
        For inputs of different lengths, labels other than 0/1, or NaN scores.
    """
    imp = np.asarray(impressions).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not (len(imp) == len(y) == len(s)):
        raise ValueError(f"{len(imp)} impressions, {len(y)} labels and {len(s)} scores")
    if y.dtype != bool and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 1 (clicked) or 0 (shown, not clicked)")
    if np.isnan(s).any():
        raise ValueError("scores hold NaN")
    clicked = y.astype(bool)
    gain_of = clicked.astype(np.float64)  # 2 ** label - 1 for labels 0 and 1
    ids, codes = np.unique(imp, return_inverse=True)
    codes = codes.reshape(-1).astype(np.int64)
    n_groups = len(ids)
    index = pd.Index(ids, name="impression")
    if n_groups == 0:
        return pd.DataFrame({c: np.empty(0) for c in IMPRESSION_METRICS}, index=index)

    position = np.arange(len(s))
    # decreasing score; equal scores: the later-shown item first (a reversed stable sort)
    by_score = np.lexsort((-position, -s, codes))
    rank = _rank_in_group(codes[by_score])
    gains = gain_of[by_score]
    groups = codes[by_score]
    n_clicked = np.bincount(codes, weights=gain_of, minlength=n_groups)

    reciprocal = np.bincount(groups, weights=gains / (rank + 1.0), minlength=n_groups)
    out = {"auc": _grouped_auc(clicked, s, codes, n_groups), "mrr": _ratio(reciprocal, n_clicked)}

    # the ideal order: clicked items first (the order among equal labels does not matter)
    by_label = np.lexsort((-gain_of, codes))
    ideal_rank = _rank_in_group(codes[by_label])
    ideal_gains = gain_of[by_label]
    ideal_groups = codes[by_label]
    for k in (5, 10):
        dcg = _dcg_at(groups, rank, gains, k, n_groups)
        ideal = _dcg_at(ideal_groups, ideal_rank, ideal_gains, k, n_groups)
        out[f"ndcg@{k}"] = _ratio(dcg, ideal)
    return pd.DataFrame(out, index=index)[list(IMPRESSION_METRICS)]


def _rank_in_group(sorted_codes: np.ndarray) -> np.ndarray:
    """0-based position of each row within its group (rows sorted by group codes 0..n-1)."""
    counts = np.bincount(sorted_codes)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return (np.arange(len(sorted_codes)) - starts[sorted_codes]).astype(np.float64)


def _dcg_at(groups: np.ndarray, rank: np.ndarray, gains: np.ndarray, k: int, n: int) -> np.ndarray:
    weights = np.where(rank < k, gains / np.log2(rank + 2.0), 0.0)
    return np.bincount(groups, weights=weights, minlength=n)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator``, NaN where the denominator is 0 (numpy's 0/0)."""
    return np.divide(
        numerator, denominator, out=np.full(len(numerator), np.nan), where=denominator > 0
    )


__all__ = ["IMPRESSION_METRICS", "impression_metrics"]
