"""Bootstrap confidence intervals and paired comparisons."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recarena.metrics import bootstrap_ci, paired_comparison, summarize


def test_ci_contains_the_mean_and_narrows_with_more_users():
    rng = np.random.default_rng(0)
    widths = []
    for n in (100, 10_000):
        values = np.column_stack([rng.random(n) < 0.3, rng.random(n)]).astype(float)
        mean, low, high = bootstrap_ci(values, n_boot=500, seed=1)
        np.testing.assert_allclose(mean, values.mean(axis=0))
        assert (low <= mean).all() and (mean <= high).all()
        widths.append(high - low)
    # width shrinks like 1 / sqrt(n): about 10 times narrower
    assert (widths[1] < widths[0] / 5).all()


def test_equals_a_loop_over_the_same_resamples():
    rng = np.random.default_rng(3)
    values = rng.random((50, 3))
    mean, low, high = bootstrap_ci(values, n_boot=200, confidence=0.9, seed=11)
    idx = np.random.default_rng(11).integers(0, 50, size=(200, 50))
    boot = np.array([values[row].mean(axis=0) for row in idx])
    np.testing.assert_allclose(low, np.percentile(boot, 5, axis=0))
    np.testing.assert_allclose(high, np.percentile(boot, 95, axis=0))


def test_coverage_is_close_to_nominal():
    rng = np.random.default_rng(5)
    data = rng.exponential(size=(300, 200))  # 300 experiments of 200 users, true mean 1
    _, low, high = bootstrap_ci(data.T, n_boot=400, seed=0)
    covered = np.mean((low <= 1.0) & (high >= 1.0))
    assert 0.88 <= covered <= 0.99


def test_nan_safe_and_deterministic():
    values = np.array([[1.0, np.nan], [0.0, np.nan], [1.0, np.nan], [np.nan, np.nan]])
    values[:, 1] = [np.nan, 2.0, 4.0, np.nan]
    mean, low, high = bootstrap_ci(values, n_boot=300, seed=2)
    assert mean == pytest.approx([2 / 3, 3.0])
    assert np.isfinite(low).all() and np.isfinite(high).all()
    again = bootstrap_ci(values, n_boot=300, seed=2)
    np.testing.assert_array_equal(low, again[1])
    all_nan = bootstrap_ci(np.full((5, 1), np.nan), n_boot=50)
    assert np.isnan(all_nan[0]).all() and np.isnan(all_nan[1]).all()
    no_boot = bootstrap_ci(values, n_boot=0)
    assert np.isnan(no_boot[1]).all() and np.isfinite(no_boot[0]).all()


def test_summarize_table():
    per_user = pd.DataFrame({"ndcg@10": [0.0, 1.0, 0.5, 0.5], "auc": [np.nan, 1, 0, 1]})
    table = summarize(per_user, n_boot=100, confidence=0.9, seed=0)
    assert list(table.columns) == ["mean", "ci_low", "ci_high", "n_users"]
    assert list(table.index) == ["ndcg@10", "auc"]
    assert table.loc["ndcg@10", "mean"] == pytest.approx(0.5)
    assert table.loc["auc", "n_users"] == 3 and table.loc["ndcg@10", "n_users"] == 4


def test_paired_comparison_detects_a_real_difference():
    rng = np.random.default_rng(0)
    users = pd.Index(np.arange(400), name="user")
    base = rng.random(400)
    a = pd.DataFrame({"ndcg@10": base + 0.05, "hr@10": base}, index=users)
    b = pd.DataFrame({"ndcg@10": base + rng.normal(0, 0.01, 400), "hr@10": base}, index=users)
    table = paired_comparison(a, b, n_boot=500, seed=0)
    assert table.loc["ndcg@10", "p_value"] < 0.01
    assert table.loc["ndcg@10", "ci_low"] > 0
    assert table.loc["hr@10", "diff"] == 0 and table.loc["hr@10", "p_value"] == 1.0
