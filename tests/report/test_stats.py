"""Statistics of the report: Holm correction, paired sign-flip test, Pareto front."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from recarena.metrics import paired_comparison
from recarena.report.stats import holm_correction, paired_test, pareto_front, sign_flip_p_value


# ---------------------------------------------------------------------- Holm
def test_holm_known_values():
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone 0.06
    adjusted = holm_correction([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])


def test_holm_textbook_example():
    # p = .01, .02, .03, .04, .05 (m = 5): 5 x .01 = .05, 4 x .02 = .08, 3 x .03 = .09,
    # then 2 x .04 = .08 and 1 x .05 = .05 are raised to the running maximum .09
    adjusted = holm_correction([0.05, 0.04, 0.03, 0.02, 0.01])
    np.testing.assert_allclose(adjusted, [0.09, 0.09, 0.09, 0.08, 0.05])
    adjusted = holm_correction([0.001, 0.2, 0.015])
    np.testing.assert_allclose(adjusted, [0.003, 0.2, 0.03])


def test_holm_caps_at_one_and_keeps_nan():
    adjusted = holm_correction([0.6, np.nan, 0.9])
    assert np.isnan(adjusted[1])
    np.testing.assert_allclose(adjusted[[0, 2]], [1.0, 1.0])
    assert holm_correction([]).shape == (0,)
    np.testing.assert_allclose(holm_correction([0.02]), [0.02])


def test_holm_rejects_what_bonferroni_rejects_and_never_less():
    rng = np.random.default_rng(3)
    for _ in range(50):
        p = rng.random(7) ** 3
        holm = holm_correction(p)
        bonferroni = np.minimum(p * len(p), 1)
        assert np.all(holm <= bonferroni + 1e-12)
        assert np.all(holm >= p - 1e-12)


# ---------------------------------------------------------------------- paired test
def _exact_sign_flip(d: np.ndarray) -> float:
    d = d[d != 0]
    observed = abs(d.sum())
    hits = sum(
        abs(np.dot(signs, d)) >= observed - 1e-12
        for signs in itertools.product((-1.0, 1.0), repeat=len(d))
    )
    return hits / 2 ** len(d)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sign_flip_matches_exact_enumeration(seed):
    rng = np.random.default_rng(seed)
    d = np.round(rng.normal(0.1, 0.5, size=12), 3)
    d[rng.integers(0, 12, 2)] = 0.0  # zero differences do not change the test
    exact = _exact_sign_flip(d)
    estimate = sign_flip_p_value(d, n_resamples=100_000, seed=seed)
    assert abs(estimate - exact) < 0.006


def test_sign_flip_edge_cases():
    assert sign_flip_p_value(np.zeros(10)) == 1.0
    assert np.isnan(sign_flip_p_value(np.array([np.nan, np.nan])))
    p = sign_flip_p_value(np.ones(200), n_resamples=999)
    assert p == pytest.approx(1 / 1000)
    with pytest.raises(ValueError):
        sign_flip_p_value(np.ones(3), n_resamples=0)


def test_sign_flip_is_deterministic_under_a_seed():
    d = np.random.default_rng(0).normal(size=500)
    assert sign_flip_p_value(d, seed=4) == sign_flip_p_value(d, seed=4)


def test_paired_test_agrees_with_metrics_paired_comparison():
    rng = np.random.default_rng(11)
    n = 1500
    a = rng.random(n) * (rng.random(n) < 0.30)
    b = rng.random(n) * (rng.random(n) < 0.27)
    ours = paired_test(a, b, n_resamples=4000)
    ref = paired_comparison(pd.DataFrame({"m": a}), pd.DataFrame({"m": b}), n_boot=4000).loc["m"]
    assert ours.diff == pytest.approx(ref["diff"])
    assert ours.mean_a == pytest.approx(ref["mean_a"])
    assert ours.n_users == ref["n_users"]
    # both are Monte Carlo estimates of the same p-value
    assert abs(ours.p_value - ref["p_value"]) < 0.02
    # t-interval and bootstrap interval of the mean difference agree at this size
    assert ours.ci_low == pytest.approx(ref["ci_low"], abs=0.004)
    assert ours.ci_high == pytest.approx(ref["ci_high"], abs=0.004)


def test_paired_test_sanity():
    rng = np.random.default_rng(5)
    x = rng.random(400)
    same = paired_test(x, x)
    assert same.diff == 0 and same.p_value == 1.0
    better = paired_test(x + 0.05, x, n_resamples=2000)
    assert better.p_value == pytest.approx(1 / 2001)
    assert better.ci_low == pytest.approx(0.05) and better.ci_high == pytest.approx(0.05)
    noisy = paired_test(x + 0.05 + rng.normal(0, 0.1, 400), x)
    assert noisy.ci_low < noisy.diff < noisy.ci_high
    # NaN pairs are left out, not counted as zero
    y = x.copy()
    y[:100] = np.nan
    res = paired_test(x, y)
    assert res.n_users == 300
    with pytest.raises(ValueError):
        paired_test(x, x[:10])


def test_paired_test_type_one_error_near_alpha():
    rng = np.random.default_rng(0)
    rejections = 0
    trials = 300
    for t in range(trials):
        a = rng.random(150)
        b = rng.random(150)  # same distribution: the null holds
        rejections += paired_test(a, b, n_resamples=400, seed=t).p_value <= 0.05
    assert 0.01 <= rejections / trials <= 0.10


# ---------------------------------------------------------------------- Pareto front
def test_pareto_front_hand_made_points():
    # (cost, quality)
    points = {
        "cheap-weak": (0.5, 0.05),
        "a": (1.0, 0.10),
        "b": (2.0, 0.30),
        "b-twin": (2.0, 0.30),  # identical to b: neither dominates the other
        "dominated": (3.0, 0.20),  # b is cheaper and better
        "slower-same": (4.0, 0.30),  # as good as b but dearer: dominated
        "best": (10.0, 0.40),
        "no-cost": (np.nan, 0.90),  # never on the front
    }
    cost = [c for c, _ in points.values()]
    quality = [q for _, q in points.values()]
    front = dict(zip(points, pareto_front(cost, quality), strict=True))
    assert front == {
        "cheap-weak": True,
        "a": True,
        "b": True,
        "b-twin": True,
        "dominated": False,
        "slower-same": False,
        "best": True,
        "no-cost": False,
    }


def test_pareto_front_edge_cases():
    assert pareto_front([], []).shape == (0,)
    assert pareto_front([1.0], [0.5]).tolist() == [True]
    # same cost: only the better one
    assert pareto_front([1.0, 1.0], [0.5, 0.6]).tolist() == [False, True]
    with pytest.raises(ValueError):
        pareto_front([1.0, 2.0], [0.5])
