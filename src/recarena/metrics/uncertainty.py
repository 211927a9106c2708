"""Confidence intervals over users and paired comparisons of two models.

The unit of resampling is the user: per-user metric values are kept, and a percentile
bootstrap draws users with replacement. One matrix of resampled users is drawn from the
seed and reused for every metric column (so the intervals of different metrics come from
the same resamples), and it is applied as a count matrix product, so the cost is one
matrix multiplication per block of resamples whatever the number of metrics.

NaN values (a metric undefined for a user, e.g. a per-user AUC without negatives) are left
out of each resample's mean; a column that is NaN everywhere gives NaN.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

#: resampled users held in memory at once (resamples x users), about 64 MB of float64
_BLOCK_ELEMENTS = 1 << 23


def _resample_counts(rng: np.random.Generator, n_boot: int, n: int):
    """Yield blocks of (resamples, n) float64 matrices: how often each user is drawn."""
    step = max(1, _BLOCK_ELEMENTS // max(1, n))
    for start in range(0, n_boot, step):
        b = min(step, n_boot - start)
        idx = rng.integers(0, n, size=(b, n))
        flat = (np.arange(b, dtype=np.int64)[:, None] * n + idx).ravel()
        yield np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


def _bootstrap_means(values: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_metrics) NaN-ignoring means of the resampled users."""
    n = values.shape[0]
    present = ~np.isnan(values)
    filled = np.where(present, values, 0.0)
    weight = present.astype(np.float64)
    rng = np.random.default_rng(seed)
    blocks = []
    for counts in _resample_counts(rng, n_boot, n):
        sums = counts @ filled
        dens = counts @ weight
        blocks.append(np.divide(sums, dens, out=np.full_like(sums, np.nan), where=dens > 0))
    return np.concatenate(blocks, axis=0)


def bootstrap_ci(
    values: np.ndarray,
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column-wise mean and percentile-bootstrap confidence interval over users (rows).

    Parameters
    ----------
    values
        (n_users, n_metrics) per-user values (a 1-d array is one metric); NaN is ignored.
    n_boot
        Number of resamples; 0 gives NaN bounds.
    confidence
        Coverage of the interval, e.g. 0.95 for the 2.5th and 97.5th percentiles.
    seed
        Seed of the resampling; the same seed and shape give the same intervals.

    Returns
    -------
    mean, low, high : numpy.ndarray
        (n_metrics,) each (scalars' shape (1,) for 1-d input).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"values must be (n_users, n_metrics), got shape {x.shape}")
    n, m = x.shape
    nan = np.full(m, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: NaN, no noise
        mean = np.nanmean(x, axis=0) if n else nan.copy()
        if n == 0 or n_boot == 0:
            return mean, nan.copy(), nan.copy()
        boot = _bootstrap_means(x, n_boot, seed)
        alpha = (1.0 - confidence) / 2.0
        low, high = np.nanpercentile(boot, [100 * alpha, 100 * (1 - alpha)], axis=0)
    return mean, low, high


def summarize(
    per_user: pd.DataFrame,
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Mean, bootstrap confidence interval and user count of each per-user metric column.

    Parameters
    ----------
    per_user
        One row per user, one column per metric (e.g. from `ranking_metrics`).
    n_boot, confidence, seed
        As in `bootstrap_ci`.

    Returns
    -------
    pandas.DataFrame
        Index ``metric`` (the column names), columns ``mean, ci_low, ci_high, n_users``
        (``n_users`` counts the non-NaN values).
    """
    values = per_user.to_numpy(dtype=np.float64, na_value=np.nan)
    mean, low, high = bootstrap_ci(values, n_boot=n_boot, confidence=confidence, seed=seed)
    return pd.DataFrame(
        {
            "mean": mean,
            "ci_low": low,
            "ci_high": high,
            "n_users": (~np.isnan(values)).sum(axis=0).astype(np.int64),
        },
        index=pd.Index([str(c) for c in per_user.columns], name="metric"),
    )


def paired_comparison(
    a: pd.DataFrame,
    b: pd.DataFrame,
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Paired difference ``a - b`` of two models' per-user metrics on the same users.

    Users are matched by index (only users in both are compared) and metrics by column
    name. The interval is the percentile bootstrap of the mean difference; the p-value is
    two-sided, from a paired sign-flip randomisation test with ``n_boot`` random flips
    (``(1 + #{|flipped mean| >= |observed mean|}) / (1 + n_boot)``).

    Returns
    -------
    pandas.DataFrame
        Index ``metric``, columns ``mean_a, mean_b, diff, ci_low, ci_high, p_value,
        n_users``.
    """
    users = a.index.intersection(b.index)
    cols = [c for c in a.columns if c in b.columns]
    xa = a.loc[users, cols].to_numpy(dtype=np.float64, na_value=np.nan)
    xb = b.loc[users, cols].to_numpy(dtype=np.float64, na_value=np.nan)
    diff = xa - xb
    mean, low, high = bootstrap_ci(diff, n_boot=n_boot, confidence=confidence, seed=seed)
    present = ~np.isnan(diff)
    filled = np.where(present, diff, 0.0)
    n_present = present.sum(axis=0).astype(np.float64)
    p_value = np.full(len(cols), np.nan)
    if n_boot > 0 and len(users):
        rng = np.random.default_rng([seed, 1])
        observed = np.abs(filled.sum(axis=0))
        exceed = np.zeros(len(cols))
        step = max(1, _BLOCK_ELEMENTS // max(1, len(users)))
        for start in range(0, n_boot, step):
            signs = rng.choice(np.array([-1.0, 1.0]), size=(min(step, n_boot - start), len(users)))
            exceed += (np.abs(signs @ filled) >= observed - 1e-12).sum(axis=0)
        p_value = np.where(n_present > 0, (1.0 + exceed) / (1.0 + n_boot), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean_a, mean_b = np.nanmean(xa, axis=0), np.nanmean(xb, axis=0)
    return pd.DataFrame(
        {
            "mean_a": mean_a,
            "mean_b": mean_b,
            "diff": mean,
            "ci_low": low,
            "ci_high": high,
            "p_value": p_value,
            "n_users": n_present.astype(np.int64),
        },
        index=pd.Index([str(c) for c in cols], name="metric"),
    )
