"""Pointwise (classification) metrics: held-out positives against sampled negatives.

``accuracy``, ``precision``, ``recall``, ``f1``
    At a decision threshold: a pair is predicted positive when ``score >= threshold``.
    Precision (recall, F1) is 0 when nothing is predicted positive (no positive exists),
    as scikit-learn's ``zero_division=0``.
``auc``
    Global ROC AUC over all (positive, negative) pairs: the share of pairs where the
    positive scores higher, ties counted half (the Mann-Whitney statistic, as
    ``sklearn.metrics.roc_auc_score``). NaN when only one class is present.
``gauc``
    Group AUC: the unweighted mean of per-group (per-user or per-impression) AUCs over the
    groups that have both a positive and a negative; other groups are left out of the mean.

The threshold comes from `choose_threshold` (the score maximising F1) on other data than
it is applied to. The runner gives every model the same rule, probabilities or not (see
`classify_pointwise`): thresholds that differ by model would compare the
thresholds, not the models.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

#: how the runner cuts every model's scores for accuracy, precision, recall and F1 (written
#: into each metrics.json as ``pointwise.threshold_rule``, and named by the summary and the
#: report wherever pointwise metrics are shown)
POINTWISE_THRESHOLD_RULE = (
    "one rule for every model: the F1-optimal threshold, chosen on one half of the users "
    "(impressions, on an impression protocol) and applied to the other half (2-fold "
    "cross-fitting); AUC needs no threshold"
)


def _check_inputs(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(y) != len(s):
        raise ValueError(f"{len(y)} labels but {len(s)} scores")
    if y.dtype != bool:
        if not np.isin(y, (0, 1)).all():
            raise ValueError("labels must be binary (0/1 or bool)")
        y = y.astype(bool)
    if np.isnan(s).any():
        raise ValueError("scores hold NaN")
    return y, s


def _grouped_auc(y: np.ndarray, s: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """ROC AUC of each group (NaN where a group lacks a class), by average ranks."""
    n = len(s)
    if n == 0:
        return np.full(n_groups, np.nan)
    order = np.lexsort((s, codes))
    cs, ss, ys = codes[order], s[order], y[order]
    # tie runs: equal (group, score) neighbours share the average of their ranks
    new_run = np.ones(n, dtype=bool)
    new_run[1:] = (cs[1:] != cs[:-1]) | (ss[1:] != ss[:-1])
    run_id = np.cumsum(new_run) - 1
    run_start = np.flatnonzero(new_run)
    run_end = np.append(run_start[1:], n) - 1
    group_start = np.searchsorted(cs, cs, side="left")
    avg_pos = (run_start[run_id] + run_end[run_id]) / 2.0
    rank = avg_pos - group_start + 1.0
    n_all = np.bincount(cs, minlength=n_groups).astype(np.float64)
    n_pos = np.bincount(cs, weights=ys.astype(np.float64), minlength=n_groups)
    n_neg = n_all - n_pos
    rank_pos = np.bincount(cs, weights=np.where(ys, rank, 0.0), minlength=n_groups)
    pairs = n_pos * n_neg
    u = rank_pos - n_pos * (n_pos + 1.0) / 2.0
    return np.divide(u, pairs, out=np.full(n_groups, np.nan), where=pairs > 0)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Global ROC AUC, ties counted half; NaN when only one class is present."""
    y, s = _check_inputs(labels, scores)
    return float(_grouped_auc(y, s, np.zeros(len(s), dtype=np.int64), 1)[0])


def per_user_auc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> pd.Series:
    """ROC AUC of each group (user or impression).

    Parameters
    ----------
    labels, scores, groups
        One entry per (group, item) pair.

    Returns
    -------
    pandas.Series
        Indexed by the sorted distinct groups (name ``group``), NaN for a group without
        both a positive and a negative.
    """
    y, s = _check_inputs(labels, scores)
    g = np.asarray(groups).reshape(-1)
    if len(g) != len(y):
        raise ValueError(f"{len(g)} groups but {len(y)} labels")
    uniques, codes = np.unique(g, return_inverse=True)
    auc = _grouped_auc(y, s, codes.astype(np.int64).reshape(-1), len(uniques))
    return pd.Series(auc, index=pd.Index(uniques, name="group"), name="auc")


def pointwise_metrics(
    labels: np.ndarray,
    scores: np.ndarray,
    *,
    threshold: float,
    groups: np.ndarray | None = None,
) -> dict[str, float]:
    """Accuracy, precision, recall, F1 at ``threshold``, AUC, and GAUC when ``groups`` given.

    Parameters
    ----------
    labels
        Binary labels (0/1 or bool), one per scored pair.
    scores
        Model scores; higher means more likely positive.
    threshold
        Pairs with ``score >= threshold`` are predicted positive.
    groups
        Group (user / impression) of each pair, for ``gauc``.

    Returns
    -------
    dict[str, float]
        Keys ``accuracy, precision, recall, f1, auc`` and, with groups, ``gauc`` (NaN when
        no group has both labels).
    """
    y, s = _check_inputs(labels, scores)
    pred = s >= threshold
    tp = float(np.count_nonzero(pred & y))
    fp = float(np.count_nonzero(pred & ~y))
    fn = float(np.count_nonzero(~pred & y))
    n = len(y)
    out = {
        "accuracy": (n - fp - fn) / n if n else float("nan"),
        "precision": tp / (tp + fp) if tp + fp > 0 else 0.0,
        "recall": tp / (tp + fn) if tp + fn > 0 else 0.0,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp > 0 else 0.0,
        "auc": float(_grouped_auc(y, s, np.zeros(n, dtype=np.int64), 1)[0]),
    }
    if groups is not None:
        per_group = per_user_auc(y, s, groups).to_numpy()
        kept = per_group[~np.isnan(per_group)]
        out["gauc"] = float(kept.mean()) if len(kept) else float("nan")
    return out


def choose_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold that maximises F1 (predict positive when ``score >= threshold``).

    Every distinct score is tried; among equally good thresholds the highest is returned.
    Meant for data held apart from the data the threshold is applied to.

    Raises
    ------
    ValueError
        When there is no positive label (F1 is 0 at every threshold).
    """
    y, s = _check_inputs(labels, scores)
    n_pos = int(y.sum())
    if n_pos == 0:
        raise ValueError("choose_threshold needs at least one positive label")
    order = np.argsort(-s, kind="stable")
    ss, ys = s[order], y[order]
    tp = np.cumsum(ys)
    # a threshold at a distinct score takes every pair down to that score's last copy
    last = np.flatnonzero(np.append(ss[1:] != ss[:-1], True))
    predicted = last + 1.0
    f1 = 2.0 * tp[last] / (n_pos + predicted)
    return float(ss[last[int(np.argmax(f1))]])


def classify_pointwise(
    labels: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray,
    *,
    seed: int,
) -> dict[str, Any]:
    """Accuracy, precision, recall, F1 and AUC of scores as a positive/negative classifier.

    Every model gets the same rule (`POINTWISE_THRESHOLD_RULE`), whatever its scores are
    (probabilities or not): the F1-optimal threshold is chosen on one half of the groups
    (users or impressions) and applied to the other half (2-fold cross-fitting), so no
    group's threshold is tuned on that group. A fixed cut such as 0.5 for some models and a
    tuned one for others would compare the thresholds, not the models. AUC is computed
    from the raw scores.
    """
    uniq, inverse = np.unique(groups, return_inverse=True)
    fold_of_group = np.random.default_rng([seed, 271828]).integers(0, 2, len(uniq))
    fold = fold_of_group[inverse]
    shifted = np.zeros(len(labels), dtype=np.float64)
    thresholds = []
    for f in (0, 1):
        fit, apply = fold != f, fold == f
        if fit.sum() == 0 or len(np.unique(labels[fit])) < 2:
            t = float(np.median(scores))
        else:
            t = choose_threshold(labels[fit], scores[fit])
        thresholds.append(t)
        shifted[apply] = scores[apply] - t
    res = pointwise_metrics(labels, shifted, threshold=0.0, groups=groups)
    res["auc"] = pointwise_metrics(labels, scores, threshold=0.0)["auc"]
    res["threshold"] = f"F1-optimal, 2-fold cross-fitted ({thresholds[0]:.4g}, {thresholds[1]:.4g})"
    res["threshold_rule"] = POINTWISE_THRESHOLD_RULE
    return res
