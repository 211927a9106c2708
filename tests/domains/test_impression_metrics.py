"""Per-impression metrics against a hand computation and the official MIND script's formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from recarena.metrics import IMPRESSION_METRICS, impression_metrics


# the formulas of MIND's evaluate.py (msnews.github.io), one impression at a time, with the
# order made reproducible as a reversed stable sort (see the module docstring)
def _order(scores):
    return np.argsort(scores, kind="stable")[::-1]


def _dcg(labels, scores, k):
    gains = 2 ** np.take(labels, _order(scores)[:k]) - 1
    return np.sum(gains / np.log2(np.arange(len(gains)) + 2))


def _official(labels, scores):
    labels = np.asarray(labels, dtype=np.float32)
    ranked = np.take(labels, _order(scores))
    return {
        "auc": roc_auc_score(labels, scores),
        "mrr": np.sum(ranked / (np.arange(len(ranked)) + 1)) / np.sum(labels),
        "ndcg@5": _dcg(labels, scores, 5) / _dcg(labels, labels, 5),
        "ndcg@10": _dcg(labels, scores, 10) / _dcg(labels, labels, 10),
    }


def test_hand_computed_impressions():
    impressions = [7] * 3 + [3] * 4 + [5] * 12
    labels = [1, 0, 0] + [0, 0, 1, 0] + [1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    scores = [0.9, 0.5, 0.1] + [0.3, 0.2, 0.1, 0.4] + [12 - k for k in range(12)]
    frame = impression_metrics(np.array(impressions), np.array(labels), np.array(scores))
    assert list(frame.columns) == ["auc", "mrr", "ndcg@5", "ndcg@10"] == list(IMPRESSION_METRICS)
    assert frame.index.tolist() == [3, 5, 7] and frame.index.name == "impression"
    # impression 7: the click ranked first
    assert frame.loc[7].tolist() == [1.0, 1.0, 1.0, 1.0]
    # impression 3: the click ranked last of four, below every non-click
    assert frame.loc[3, "auc"] == 0.0
    assert frame.loc[3, "mrr"] == pytest.approx(1 / 4)
    assert frame.loc[3, "ndcg@5"] == pytest.approx(1 / math.log2(5))
    # impression 5: clicks at ranks 1, 3 and 12 of 12
    assert frame.loc[5, "mrr"] == pytest.approx((1 + 1 / 3 + 1 / 12) / 3)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert frame.loc[5, "ndcg@5"] == pytest.approx((1 + 1 / math.log2(4)) / ideal)
    assert frame.loc[5, "ndcg@10"] == pytest.approx((1 + 1 / math.log2(4)) / ideal)
    assert frame.loc[5, "auc"] == pytest.approx((9 + 8 + 0) / 27)


def test_matches_the_official_formulas_on_random_impressions():
    rng = np.random.default_rng(0)
    sizes = rng.integers(2, 40, size=300)
    impressions = np.repeat(rng.permutation(10_000)[:300], sizes)
    labels = (rng.random(len(impressions)) < 0.2).astype(np.int8)
    for start in np.concatenate([[0], np.cumsum(sizes)[:-1]]):  # a click and a non-click each
        labels[start], labels[start + 1] = 1, 0
    scores = rng.random(len(impressions))
    # interleave the impressions' rows, each impression's rows keeping their shown order
    n = len(impressions)
    position = rng.permutation(n)
    new_position = np.empty(n, dtype=np.int64)
    new_position[np.lexsort((np.arange(n), impressions))] = position[
        np.lexsort((position, impressions))
    ]
    mixed = [np.empty_like(a) for a in (impressions, labels, scores)]
    for out, values in zip(mixed, (impressions, labels, scores), strict=True):
        out[new_position] = values
    assert not np.all(np.diff(mixed[0]) >= 0)
    frame = impression_metrics(*mixed)
    values = {name: frame[name].to_dict() for name in IMPRESSION_METRICS}
    for imp in np.unique(impressions):
        rows = impressions == imp
        expected = _official(labels[rows], scores[rows])
        for name in IMPRESSION_METRICS:
            assert values[name][imp] == pytest.approx(expected[name], abs=1e-12)


def test_ties_follow_a_reversed_stable_sort():
    # equal scores: the later-shown item ranks first, as np.argsort(kind="stable")[::-1]
    frame = impression_metrics(np.zeros(3), np.array([1, 0, 0]), np.zeros(3))
    assert frame.loc[0, "mrr"] == pytest.approx(1 / 3)
    assert frame.loc[0, "auc"] == 0.5  # ties count half, as roc_auc_score
    expected = _official([1, 0, 0], np.zeros(3))
    assert frame.loc[0, "ndcg@5"] == pytest.approx(expected["ndcg@5"])


def test_impressions_with_one_label_class():
    impressions = np.array([1, 1, 2, 2, 2])
    labels = np.array([0, 0, 1, 1, 1])
    frame = impression_metrics(impressions, labels, np.array([0.5, 0.2, 0.9, 0.1, 0.5]))
    # no click: the script's formulas give 0/0; its roc_auc_score would raise
    assert frame.loc[1].isna().all()
    # every item clicked: nDCG 1, MRR the mean of 1/rank, AUC undefined
    assert np.isnan(frame.loc[2, "auc"])
    assert frame.loc[2, "ndcg@5"] == 1.0 and frame.loc[2, "ndcg@10"] == 1.0
    assert frame.loc[2, "mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    # what the script's roc_auc_score does there depends on scikit-learn: NaN with a warning
    # (recent releases), or a ValueError that stops the evaluation (older ones)
    try:
        with pytest.warns(UserWarning, match="Only one class"):
            assert np.isnan(roc_auc_score([1, 1, 1], [0.9, 0.1, 0.5]))
    except ValueError as exc:
        assert "Only one class" in str(exc)
    assert frame.mean().isna().sum() == 1  # means skip NaN: only auc has no value at all


def test_many_impressions_at_once():
    rng = np.random.default_rng(1)
    impressions = np.repeat(np.arange(70_000), 8)
    labels = np.tile(np.array([1, 0, 0, 0, 0, 0, 0, 0]), 70_000)
    scores = rng.random(len(impressions))
    frame = impression_metrics(impressions, labels, scores)
    assert len(frame) == 70_000 and frame.notna().all().all()
    assert frame["auc"].mean() == pytest.approx(0.5, abs=0.01)  # random scores
    # random ranking of 1 click among 8: E[MRR] = H(8) / 8
    assert frame["mrr"].mean() == pytest.approx(sum(1 / k for k in range(1, 9)) / 8, abs=0.01)


def test_input_errors():
    with pytest.raises(ValueError, match="2 impressions, 3 labels and 3 scores"):
        impression_metrics(np.zeros(2), np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="labels must be 1"):
        impression_metrics(np.zeros(2), np.array([1, 2]), np.zeros(2))
    with pytest.raises(ValueError, match="NaN"):
        impression_metrics(np.zeros(2), np.array([1, 0]), np.array([0.1, np.nan]))
    empty = impression_metrics(np.empty(0), np.empty(0), np.empty(0))
    assert len(empty) == 0 and list(empty.columns) == list(IMPRESSION_METRICS)
