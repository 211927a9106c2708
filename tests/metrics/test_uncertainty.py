"""Bootstrap confidence intervals and paired comparisons."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recarena.metrics import (
    bootstrap_ci,
    paired_comparison,
    seeded_bootstrap_ci,
    seeded_paired_comparison,
    summarize,
)


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


def test_seeded_ci_with_one_seed_is_bootstrap_ci():
    rng = np.random.default_rng(7)
    values = rng.random((120, 3))
    values[rng.random((120, 3)) < 0.1] = np.nan
    mean, low, high, seed_sd = seeded_bootstrap_ci(values[None], n_boot=500, seed=4)
    ref = bootstrap_ci(values, n_boot=500, seed=4)
    np.testing.assert_array_equal(mean, ref[0])
    np.testing.assert_array_equal(low, ref[1])
    np.testing.assert_array_equal(high, ref[2])
    assert np.isnan(seed_sd).all()
    # a 2-d (n_seeds, n_users) array is one metric
    one = seeded_bootstrap_ci(values[None, :, 0], n_boot=500, seed=4)
    np.testing.assert_array_equal(one[1], bootstrap_ci(values[:, 0], n_boot=500, seed=4)[1])


def test_seeded_ci_with_identical_seeds_is_the_user_only_interval():
    values = np.random.default_rng(8).random((80, 2))
    mean, low, high, seed_sd = seeded_bootstrap_ci(np.stack([values] * 4), n_boot=400, seed=1)
    ref = bootstrap_ci(values, n_boot=400, seed=1)
    np.testing.assert_allclose(mean, ref[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(low, ref[1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(high, ref[2], rtol=0, atol=1e-12)
    np.testing.assert_allclose(seed_sd, 0.0, atol=1e-12)


def test_seeded_ci_equals_a_loop_over_the_same_resamples():
    rng = np.random.default_rng(9)
    values = rng.random((3, 40, 2)) + np.array([0.0, 0.3, 0.6])[:, None, None]
    _, low, high, _ = seeded_bootstrap_ci(values, n_boot=300, confidence=0.9, seed=5)
    users = np.random.default_rng(5).integers(0, 40, size=(300, 40))
    seeds = np.random.default_rng([5, 2]).integers(0, 3, size=(300, 3))
    pairs = zip(users, seeds, strict=True)
    boot = np.array([values[s][:, u].mean(axis=1).mean(axis=0) for u, s in pairs])
    np.testing.assert_allclose(low, np.percentile(boot, 5, axis=0))
    np.testing.assert_allclose(high, np.percentile(boot, 95, axis=0))


def test_seed_spread_widens_the_interval():
    rng = np.random.default_rng(10)
    base = rng.random((200, 1))
    shifts = np.array([0.0, 1.0, 2.0, 3.0])
    values = base[None] + shifts[:, None, None]  # seeds differ by a large constant
    mean, low, high, seed_sd = seeded_bootstrap_ci(values, n_boot=1000, seed=0)
    _, user_low, user_high = bootstrap_ci(values[0], n_boot=1000, seed=0)
    seed_means = values.mean(axis=1)
    assert mean == pytest.approx(seed_means.mean(axis=0))
    assert (high - low > 10 * (user_high - user_low)).all()
    assert (low < seed_means.mean(axis=0)).all() and (seed_means.mean(axis=0) < high).all()
    np.testing.assert_allclose(seed_sd, np.std(seed_means, axis=0, ddof=1))


def test_seeded_ci_nan_safe_and_deterministic():
    rng = np.random.default_rng(11)
    values = rng.random((3, 30, 2))
    values[:, :10, 1] = np.nan  # undefined for the same users at every seed
    values[1, 20, 0] = np.nan
    mean, low, high, seed_sd = seeded_bootstrap_ci(values, n_boot=300, seed=2)
    per_seed = np.nanmean(values, axis=1)
    np.testing.assert_allclose(mean, per_seed.mean(axis=0))
    np.testing.assert_allclose(seed_sd, np.std(per_seed, axis=0, ddof=1))
    assert np.isfinite(low).all() and np.isfinite(high).all()
    again = seeded_bootstrap_ci(values, n_boot=300, seed=2)
    for x, y in zip((mean, low, high, seed_sd), again, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(low, seeded_bootstrap_ci(values, n_boot=300, seed=3)[1])
    no_boot = seeded_bootstrap_ci(values, n_boot=0)
    assert np.isnan(no_boot[1]).all() and np.isnan(no_boot[2]).all()
    assert np.isfinite(no_boot[0]).all()
    no_users = seeded_bootstrap_ci(np.empty((2, 0, 3)), n_boot=50)
    assert all(np.isnan(x).all() and x.shape == (3,) for x in no_users)
    all_nan = seeded_bootstrap_ci(np.full((2, 5, 1), np.nan), n_boot=50)
    assert all(np.isnan(x).all() for x in all_nan)


def test_seeded_ci_validates_its_input():
    with pytest.raises(ValueError, match=r"\(4,\)"):
        seeded_bootstrap_ci(np.zeros(4))
    with pytest.raises(ValueError, match=r"\(0, 5, 1\)"):
        seeded_bootstrap_ci(np.zeros((0, 5, 1)))
    with pytest.raises(ValueError, match="confidence"):
        seeded_bootstrap_ci(np.zeros((2, 5)), confidence=1.0)
    with pytest.raises(ValueError, match="n_boot"):
        seeded_bootstrap_ci(np.zeros((2, 5)), n_boot=-1)


def test_seeded_paired_comparison_of_a_constant_gain():
    rng = np.random.default_rng(12)
    b = rng.random((1, 150, 2)) + rng.normal(0, 0.01, (3, 150, 2))  # seeds close together
    table = seeded_paired_comparison(b + 0.1, b, metrics=["ndcg@10", "hr@10"], n_boot=500)
    assert list(table.columns) == [
        "mean_a",
        "mean_b",
        "diff",
        "ci_low",
        "ci_high",
        "consistent",
        "n_seeds_a",
        "n_seeds_b",
        "n_users",
    ]
    assert list(table.index) == ["ndcg@10", "hr@10"] and table.index.name == "metric"
    np.testing.assert_allclose(table["diff"], 0.1)
    np.testing.assert_allclose(table["mean_a"] - table["mean_b"], table["diff"])
    # paired users cancel the user spread; what is left is the small seed spread
    assert ((table["ci_low"] > 0.095) & (table["ci_high"] < 0.105)).all()
    assert ((table["ci_low"] <= 0.1) & (table["ci_high"] >= 0.1)).all()
    assert table["consistent"].all()
    assert (table["n_seeds_a"] == 3).all() and (table["n_users"] == 150).all()


def test_seeded_paired_comparison_is_paired_over_users():
    rng = np.random.default_rng(13)
    b = rng.random((1, 300, 1))
    table = seeded_paired_comparison(b + 0.01, b, metrics=["m"], n_boot=500)
    # the same users in both: the user spread cancels and the interval is a point
    assert table.loc["m", "ci_low"] == pytest.approx(0.01)
    assert table.loc["m", "ci_high"] == pytest.approx(0.01)
    unpaired = bootstrap_ci(b[0] + 0.01, n_boot=500)
    assert unpaired[2] - unpaired[1] > 0.01


def test_seeded_paired_comparison_straddling_seeds_are_not_consistent():
    rng = np.random.default_rng(14)
    b = rng.random((1, 100, 1))
    a = np.concatenate([b + 0.3, b - 0.1])  # one seed above b, one below; mean above
    table = seeded_paired_comparison(a, b, metrics=["m"], n_boot=300)
    assert table.loc["m", "diff"] == pytest.approx(0.1)
    assert not table.loc["m", "consistent"]
    same = seeded_paired_comparison(b, b, metrics=["m"], n_boot=300)
    assert same.loc["m", "diff"] == 0 and not same.loc["m", "consistent"]
    below = seeded_paired_comparison(b - 0.2, a, metrics=["m"], n_boot=300)
    assert below.loc["m", "diff"] < 0 and below.loc["m", "consistent"]


def test_seeded_paired_comparison_with_different_seed_counts():
    rng = np.random.default_rng(15)
    b = rng.random((1, 60, 2))  # a deterministic model
    a = b + np.array([0.2, 0.25, 0.3])[:, None, None] + rng.normal(0, 0.01, (3, 60, 2))
    a[:, :5, 1] = np.nan
    b[0, 50, 1] = np.nan
    table = seeded_paired_comparison(a, b, metrics=["x", "y"], n_boot=400, seed=1)
    assert table.loc["x", "n_seeds_a"] == 3 and table.loc["x", "n_seeds_b"] == 1
    assert table.loc["x", "n_users"] == 60 and table.loc["y", "n_users"] == 54
    mean_a, low_a, high_a, _ = seeded_bootstrap_ci(a, n_boot=400, seed=1)
    np.testing.assert_allclose(table["mean_a"], mean_a)
    np.testing.assert_allclose(table["mean_b"], np.nanmean(b[0], axis=0))
    assert (table["ci_low"] > 0.15).all() and (table["ci_high"] < 0.35).all()
    assert table["consistent"].all()
    swapped = seeded_paired_comparison(b, a, metrics=["x", "y"], n_boot=400, seed=1)
    np.testing.assert_allclose(swapped["diff"], -table["diff"])


def test_seeded_paired_comparison_validates_shapes():
    with pytest.raises(ValueError, match=r"\(2, 10, 1\) and \(2, 11, 1\)"):
        seeded_paired_comparison(np.zeros((2, 10, 1)), np.zeros((2, 11, 1)), metrics=["m"])
    with pytest.raises(ValueError, match=r"\(1, 10, 2\) and \(1, 10, 1\)"):
        seeded_paired_comparison(np.zeros((1, 10, 2)), np.zeros((1, 10, 1)), metrics=["m"])
    with pytest.raises(ValueError, match="metric names"):
        seeded_paired_comparison(np.zeros((1, 10, 2)), np.zeros((1, 10, 2)), metrics=["m"])
    with pytest.raises(ValueError, match=r"\(10,\)"):
        seeded_paired_comparison(np.zeros(10), np.zeros((1, 10)), metrics=["m"])
