"""Statistics of the report: paired tests between models, Holm correction, Pareto front.

The paired test is a two-sided sign-flip randomization test on per-user differences: under
the null hypothesis that two models are exchangeable for every user, each user's difference
``a - b`` is as likely to have either sign, so the observed sum of differences is compared
with the sums after flipping the signs at random. Users whose difference is zero do not
change any flipped sum and are skipped (the test is the same, only faster). The p-value is
``(1 + #{|flipped sum| >= |observed sum|}) / (1 + n_resamples)``, as in
`recarena.metrics.paired_comparison`, which computes the same test with a bootstrap
interval and is the reference the tests compare against; this version is vectorized over
random bits so a report with dozens of comparisons on thousands of users stays fast.

The interval of the mean difference is a paired t-interval (users are the unit); with the
hundreds to thousands of users of a recommender test set it agrees with the percentile
bootstrap to the displayed digits and costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import stdtrit

#: random bytes drawn per block (groups of 8 users x resamples)
_BLOCK_ELEMENTS = 1 << 23


@dataclass(frozen=True)
class PairedResult:
    """One paired comparison ``a - b`` on the users both models were evaluated on."""

    mean_a: float
    mean_b: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    n_users: int


def sign_flip_p_value(diffs: np.ndarray, *, n_resamples: int = 5000, seed: int = 0) -> float:
    """Two-sided p-value of a paired sign-flip randomization test of ``mean(diffs) == 0``.

    Parameters
    ----------
    diffs
        Per-user differences (NaN entries are left out).
    n_resamples
        Random sign flips; the smallest possible p-value is ``1 / (1 + n_resamples)``.
    seed
        Seed of the flips.

    Returns
    -------
    float
        The p-value; 1.0 when every difference is zero, NaN when there are no users.
    """
    d = np.asarray(diffs, dtype=np.float64).ravel()
    d = d[~np.isnan(d)]
    if len(d) == 0:
        return float("nan")
    d = d[d != 0]
    m = len(d)
    if m == 0:
        return 1.0
    if n_resamples <= 0:
        raise ValueError(f"n_resamples must be > 0, got {n_resamples}")
    # Flipping the users of a set S turns the sum into sum(d) - 2 * sum(d[S]). Users are
    # grouped by 8: one random byte per group and resample picks which of them flip, and a
    # table of the 256 partial sums of each group turns that byte into one lookup. Looking
    # up group by group (a 2 KiB table, a contiguous row of bytes) keeps it in cache.
    total = float(d.sum())
    observed = abs(total)
    tol = 1e-9 * max(1.0, float(np.abs(d).sum()))
    n_groups = (m + 7) // 8
    padded = np.zeros(n_groups * 8)
    padded[:m] = d
    patterns = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(np.float64)
    table = padded.reshape(n_groups, 8) @ patterns.T  # (n_groups, 256)
    rng = np.random.default_rng([seed, 20240611])
    step = max(1, _BLOCK_ELEMENTS // n_groups)
    exceed = 0
    for start in range(0, n_resamples, step):
        b = min(step, n_resamples - start)
        raw = rng.integers(0, 256, size=(n_groups, b), dtype=np.uint8)
        flipped_part = table[0].take(raw[0])
        for j in range(1, n_groups):
            flipped_part += table[j].take(raw[j])
        flipped = total - 2.0 * flipped_part
        exceed += int((np.abs(flipped) >= observed - tol).sum())
    return (1.0 + exceed) / (1.0 + n_resamples)


def paired_test(
    a: np.ndarray,
    b: np.ndarray,
    *,
    n_resamples: int = 5000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedResult:
    """Paired comparison of two models' per-user values (same users, same order).

    Users with a NaN value in either array are left out. Returns the means, the mean
    difference ``a - b`` with its paired t-interval, and the sign-flip p-value.
    """
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired values need the same shape, got {x.shape} and {y.shape}")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    n = len(x)
    if n == 0:
        nan = float("nan")
        return PairedResult(nan, nan, nan, nan, nan, nan, 0)
    d = x - y
    diff = float(d.mean())
    if n > 1:
        half = float(stdtrit(n - 1, 0.5 + confidence / 2)) * float(d.std(ddof=1)) / np.sqrt(n)
    else:
        half = float("nan")
    return PairedResult(
        mean_a=float(x.mean()),
        mean_b=float(y.mean()),
        diff=diff,
        ci_low=float(diff - half),
        ci_high=float(diff + half),
        p_value=sign_flip_p_value(d, n_resamples=n_resamples, seed=seed),
        n_users=n,
    )


def holm_correction(p_values: np.ndarray | list[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down), in the input order.

    The i-th smallest of m p-values is multiplied by ``m - i + 1`` (i from 1), running
    maxima keep the adjusted values monotone, and they are capped at 1. NaN entries are
    left NaN and do not count in m. Reject where the adjusted value is <= alpha.
    """
    p = np.asarray(p_values, dtype=np.float64).ravel()
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    scaled = p[order] * (m - np.arange(m))
    out[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return out


def pareto_front(cost: np.ndarray | list[float], quality: np.ndarray | list[float]) -> np.ndarray:
    """Mask of the points no other point dominates (lower cost and higher quality).

    A point is dominated when another has cost <= and quality >=, one of them strictly.
    Points with a NaN cost or quality are never on the front. Identical points are all on
    the front when they are not dominated.
    """
    c = np.asarray(cost, dtype=np.float64).ravel()
    q = np.asarray(quality, dtype=np.float64).ravel()
    if c.shape != q.shape:
        raise ValueError(f"cost and quality need the same shape, got {c.shape} and {q.shape}")
    valid = ~(np.isnan(c) | np.isnan(q))
    front = np.zeros(len(c), dtype=bool)
    idx = np.flatnonzero(valid)
    for i in idx:
        others = idx[idx != i]
        dominated = (
            (c[others] <= c[i]) & (q[others] >= q[i]) & ((c[others] < c[i]) | (q[others] > q[i]))
        )
        front[i] = not dominated.any()
    return front
