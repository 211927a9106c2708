"""`recarena.ranking.top_k`: seeded random tie-breaking that never reorders distinct scores."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recarena.metrics import ranking_metrics
from recarena.models.base import RankedLists
from recarena.ranking import top_k


def _lists_from_scores(scores: np.ndarray, k: int, seed: int = 0) -> RankedLists:
    users = np.arange(scores.shape[0])
    idx, top = top_k(scores, k, users=users, seed=seed)
    return RankedLists(users, idx, top)


def test_distinct_scores_are_sorted_exactly():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((50, 300)).astype(np.float32)
    idx, top = top_k(scores, 10)
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_array_equal(top, np.take_along_axis(scores, expected, axis=1))
    assert idx.dtype == np.int64 and top.dtype == np.float32


def test_adjacent_float32_values_are_never_swapped():
    base = np.float32(0.5)
    up = np.nextafter(base, np.float32(1))
    down = np.nextafter(base, np.float32(0))
    row = np.array([down, base, up, base, down, up], dtype=np.float32)
    for seed in range(20):
        _, top = top_k(np.tile(row, (30, 1)), 6, seed=seed)
        assert (top == np.array([up, up, base, base, down, down])).all()


def test_excluded_items_never_returned_and_short_rows_padded():
    scores = np.array([[0.3, -np.inf, 0.9, -np.inf], [-np.inf] * 4], dtype=np.float32)
    idx, top = top_k(scores, 6)
    np.testing.assert_array_equal(idx[0], [2, 0, -1, -1, -1, -1])
    np.testing.assert_array_equal(idx[1], [-1] * 6)
    assert np.isneginf(top[idx < 0]).all()


def test_ties_brute_force_against_sorting():
    rng = np.random.default_rng(3)
    for _ in range(100):
        n, m, k = rng.integers(1, 6), rng.integers(1, 25), int(rng.integers(0, 30))
        scores = rng.integers(0, 3, (n, m)).astype(np.float32)
        scores[rng.random((n, m)) < 0.2] = -np.inf
        idx, top = top_k(scores, k, users=np.arange(n) + 7, seed=5)
        for r in range(n):
            finite = np.sort(scores[r][np.isfinite(scores[r])])[::-1][:k]
            kept = idx[r] >= 0
            np.testing.assert_array_equal(top[r][kept], finite)
            np.testing.assert_array_equal(scores[r][idx[r][kept]], finite)
            assert len(set(idx[r][kept])) == kept.sum()
            assert not kept[kept.sum() :].any()  # padding only at the end


def test_tie_breaking_depends_on_seed_and_user_not_on_the_batch():
    scores = np.zeros((40, 100), dtype=np.float32)
    users = np.arange(1000, 1040)
    a, _ = top_k(scores, 10, users=users, seed=1)
    b, _ = top_k(scores[10:], 10, users=users[10:], seed=1)
    np.testing.assert_array_equal(a[10:], b)
    c, _ = top_k(scores, 10, users=users, seed=2)
    assert (a != c).any()
    assert len({tuple(row) for row in a}) == 40  # every user gets their own order


def test_nan_scores_raise():
    with pytest.raises(ValueError, match="NaN"):
        top_k(np.array([[0.1, np.nan]], dtype=np.float32), 1)


def test_constant_scores_give_hr_about_k_over_n_items():
    # A constant model must not rank the target first by id: HR@k is k / n_items on average.
    # Held-out item 0 for everyone is the case that id tie-breaking would score as HR = 1.
    n_users, n_items, k = 3000, 50, 5
    scores = np.zeros((n_users, n_items), dtype=np.float32)
    lists = _lists_from_scores(scores, k)
    for target in (
        np.zeros(n_users, dtype=np.int64),
        np.random.default_rng(0).integers(0, n_items, n_users),
    ):
        truth = sp.csr_matrix(
            (np.ones(n_users), (np.arange(n_users), target)), shape=(n_users, n_items)
        )
        hr = ranking_metrics(lists, truth, [k], ["hr"])["hr@5"].mean()
        # expected 0.1, standard error sqrt(0.1 * 0.9 / 3000) = 0.0055
        assert abs(hr - k / n_items) < 0.025


def test_popularity_like_ties_are_broken_at_random():
    # three score levels; the last place of the top 5 is a tie among 20 items of level 1
    row = np.array([2.0] * 4 + [1.0] * 20 + [0.0] * 26, dtype=np.float32)
    idx, _ = top_k(np.tile(row, (4000, 1)), 5)
    assert set(idx[:, :4].ravel()) == {0, 1, 2, 3}
    counts = np.bincount(idx[:, 4], minlength=24)[4:24]
    assert counts.min() > 120 and counts.max() < 280  # expected 200 each


def test_k_larger_than_catalog_and_zero():
    scores = np.array([[0.2, 0.1]], dtype=np.float32)
    idx, top = top_k(scores, 4)
    np.testing.assert_array_equal(idx, [[0, 1, -1, -1]])
    idx, top = top_k(scores, 0)
    assert idx.shape == (1, 0) and top.shape == (1, 0)
