"""Pointwise metrics against hand computation and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from recarena.metrics import choose_threshold, per_user_auc, pointwise_metrics


def test_hand_computed_values():
    labels = np.array([1, 0, 1, 0])
    scores = np.array([0.9, 0.9, 0.3, 0.1])
    out = pointwise_metrics(labels, scores, threshold=0.5)
    # predicted [1, 1, 0, 0]: tp 1, fp 1, fn 1, tn 1
    assert out["accuracy"] == pytest.approx(0.5)
    assert out["precision"] == pytest.approx(0.5)
    assert out["recall"] == pytest.approx(0.5)
    assert out["f1"] == pytest.approx(0.5)
    # pairs (pos, neg): (.9,.9) tie 1/2, (.9,.1) 1, (.3,.9) 0, (.3,.1) 1 -> 2.5 / 4
    assert out["auc"] == pytest.approx(0.625)
    assert "gauc" not in out


def test_matches_scikit_learn():
    rng = np.random.default_rng(0)
    n = 3000
    groups = rng.integers(0, 120, n)
    labels = (rng.random(n) < 0.3).astype(int)
    scores = np.round(rng.random(n) + 0.3 * labels, 1)  # many ties
    labels[groups == 5] = 0  # a group with one class only
    out = pointwise_metrics(labels, scores, threshold=0.7, groups=groups)
    pred = (scores >= 0.7).astype(int)
    assert out["accuracy"] == pytest.approx(accuracy_score(labels, pred), abs=1e-12)
    assert out["precision"] == pytest.approx(precision_score(labels, pred), abs=1e-12)
    assert out["recall"] == pytest.approx(recall_score(labels, pred), abs=1e-12)
    assert out["f1"] == pytest.approx(f1_score(labels, pred), abs=1e-12)
    assert out["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)

    per = per_user_auc(labels, scores, groups)
    ref = {}
    for g in np.unique(groups):
        m = groups == g
        if labels[m].min() != labels[m].max():
            ref[g] = roc_auc_score(labels[m], scores[m])
    assert np.isnan(per.loc[5])
    np.testing.assert_allclose(
        per.dropna().to_numpy(), [ref[g] for g in per.dropna().index], atol=1e-12
    )
    assert out["gauc"] == pytest.approx(np.mean(list(ref.values())), abs=1e-12)


def test_zero_division_and_single_class():
    out = pointwise_metrics(np.array([0, 0]), np.array([0.1, 0.2]), threshold=0.5)
    assert out["precision"] == 0 and out["recall"] == 0 and out["f1"] == 0
    assert out["accuracy"] == 1 and np.isnan(out["auc"])
    with pytest.raises(ValueError, match="binary"):
        pointwise_metrics(np.array([0, 2]), np.array([0.1, 0.2]), threshold=0.5)


def test_choose_threshold_hand_case():
    labels = np.array([1, 1, 0, 1, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.2])
    # F1 = 2 tp / (3 + predicted): .9 -> 2/4, .8 -> 4/5, .7 -> 4/6, .6 -> 6/7, .2 -> 6/8
    assert choose_threshold(labels, scores) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="positive"):
        choose_threshold(np.zeros(3), np.ones(3))


def test_choose_threshold_maximises_f1_by_brute_force():
    rng = np.random.default_rng(1)
    labels = (rng.random(500) < 0.2).astype(int)
    scores = np.round(rng.random(500) + 0.4 * labels, 2)
    best = choose_threshold(labels, scores)
    f1_at = {t: f1_score(labels, (scores >= t).astype(int)) for t in np.unique(scores)}
    assert f1_at[best] == pytest.approx(max(f1_at.values()), abs=1e-12)
