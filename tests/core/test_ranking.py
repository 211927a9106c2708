from __future__ import annotations

import numpy as np
import pytest

from recarena.ranking import top_k


def test_top_k_orders_by_score_and_pads():
    scores = np.array(
        [[0.1, 0.9, -np.inf, 0.5], [-np.inf, -np.inf, 1.0, -np.inf]], dtype=np.float32
    )
    idx, top = top_k(scores, 3)
    assert idx[0].tolist() == [1, 3, 0]
    assert idx[1].tolist() == [2, -1, -1]
    assert np.isneginf(top[1, 1:]).all()


def test_ties_are_broken_at_random_not_by_id():
    scores = np.zeros((2000, 50), dtype=np.float32)
    idx, _ = top_k(scores, 1, users=np.arange(2000), seed=0)
    counts = np.bincount(idx[:, 0], minlength=50)
    # item 0 would win every time if ties were broken by id
    assert counts.max() < 100 and (counts > 0).sum() > 45


def test_tie_breaking_never_reorders_distinct_scores():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=(50, 200)).astype(np.float32)
    scores += np.float32(1e-7) * rng.integers(0, 2, size=scores.shape)
    idx, top = top_k(scores, 200, users=np.arange(50), seed=3)
    assert (np.diff(top, axis=1) <= 0).all()


def test_tie_breaking_is_seeded_per_user():
    scores = np.zeros((3, 30), dtype=np.float32)
    a, _ = top_k(scores, 5, users=np.array([7, 8, 9]), seed=1)
    b, _ = top_k(scores[:1], 5, users=np.array([7]), seed=1)
    np.testing.assert_array_equal(a[0], b[0])


def test_nan_scores_raise():
    with pytest.raises(ValueError, match="NaN"):
        top_k(np.array([[np.nan, 1.0]]), 1)
