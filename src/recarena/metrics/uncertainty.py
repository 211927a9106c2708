"""Confidence intervals over users and paired comparisons of two models.

The unit of resampling is the user: per-user metric values are kept, and a percentile
bootstrap draws users with replacement. One matrix of resampled users is drawn from the
seed and reused for every metric column (so the intervals of different metrics come from
the same resamples), and it is applied as a count matrix product, so the cost is one
matrix multiplication per block of resamples whatever the number of metrics.

NaN values (a metric undefined for a user, e.g. a per-user AUC without negatives) are left
out of each resample's mean; a column that is NaN everywhere gives NaN.

`seeded_bootstrap_ci` and `seeded_paired_comparison` take one slice of per-user values per
training seed and resample at two levels: the users (one draw shared by every seed, since
the same users are measured at every seed) and, independently, the seeds. Their intervals
cover both the choice of users and the training randomness; with one seed they are the
user-only intervals.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

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


def _bootstrap_means(values: np.ndarray, n_boot: int, seed: int | Sequence[int]) -> np.ndarray:
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


def _check_options(n_boot: int, confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")


def _as_seeded(values: np.ndarray, name: str) -> np.ndarray:
    """``values`` as a float64 (n_seeds, n_users, n_metrics) array (2-d: one metric)."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3:
        raise ValueError(f"{name} must be (n_seeds, n_users, n_metrics), got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} needs at least one seed, got shape {x.shape}")
    return x


def _seed_means(x: np.ndarray) -> np.ndarray:
    """(n_seeds, n_metrics) NaN-ignoring user mean of each seed (NaN without users)."""
    if x.shape[1] == 0:
        return np.full((x.shape[0], x.shape[2]), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=1)


def _seeded_bootstrap_means(
    arrays: Sequence[np.ndarray], n_boot: int, seed: int
) -> list[np.ndarray]:
    """(n_boot, n_metrics) two-level resampled means of each (n_seeds, n_users, n_metrics) array.

    Each resample draws the users once, from ``default_rng(seed)`` exactly as
    `_bootstrap_means`, and applies the draw to every seed of every array; the seeds of
    array ``i`` are drawn from ``default_rng([seed, 2 + i])``. The statistic is the mean,
    over the drawn seeds with multiplicity, of each drawn seed's NaN-ignoring user mean; a
    seed whose mean is undefined in a resample is left out of it.
    """
    n_users = arrays[0].shape[1]
    prepared = []
    for i, x in enumerate(arrays):
        s, u, m = x.shape
        # (users, seeds * metrics): one matrix product per block covers every seed
        flat = np.ascontiguousarray(x.transpose(1, 0, 2)).reshape(u, s * m)
        present = ~np.isnan(flat)
        filled = np.where(present, flat, 0.0)
        weight = present.astype(np.float64)
        seed_rng = np.random.default_rng([seed, 2 + i])
        seed_counts = np.concatenate(list(_resample_counts(seed_rng, n_boot, s)), axis=0)
        prepared.append((filled, weight, seed_counts, s, m))
    blocks: list[list[np.ndarray]] = [[] for _ in arrays]
    start = 0
    for counts in _resample_counts(np.random.default_rng(seed), n_boot, n_users):
        b = counts.shape[0]
        for out, (filled, weight, seed_counts, s, m) in zip(blocks, prepared, strict=True):
            sums = counts @ filled
            dens = counts @ weight
            means = np.divide(sums, dens, out=np.full_like(sums, np.nan), where=dens > 0)
            means = means.reshape(b, s, m)
            defined = ~np.isnan(means)
            w = seed_counts[start : start + b, :, None] * defined
            num = (w * np.where(defined, means, 0.0)).sum(axis=1)
            den = w.sum(axis=1)
            out.append(np.divide(num, den, out=np.full_like(num, np.nan), where=den > 0))
        start += b
    return [np.concatenate(out, axis=0) for out in blocks]


def _percentile_bounds(boot: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = (1.0 - confidence) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: NaN, no noise
        low, high = np.nanpercentile(boot, [100 * alpha, 100 * (1 - alpha)], axis=0)
    return low, high


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
    _check_options(n_boot, confidence)
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


def seeded_bootstrap_ci(
    values: np.ndarray,
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean and two-level bootstrap confidence interval over users and training seeds.

    Each resample draws ``n_users`` users with replacement, one draw applied to every
    seed's slice (the same users are measured at every seed), and, independently,
    ``n_seeds`` seeds with replacement; its value is the mean over the drawn seeds (with
    multiplicity) of each drawn seed's mean over the drawn users. The interval is the
    percentile interval of these values, so it covers both the choice of users and the
    training randomness. With one seed it equals `bootstrap_ci` of that slice for the same
    ``seed`` (the same user draws).

    Parameters
    ----------
    values
        (n_seeds, n_users, n_metrics) per-user values, one slice per training seed, the
        users in the same order in every slice (a 2-d (n_seeds, n_users) array is one
        metric). NaN (undefined for that user) is left out of the user means; a seed whose
        user mean is undefined is left out of the mean over seeds.
    n_boot
        Number of resamples; 0 gives NaN bounds.
    confidence
        Coverage of the interval, e.g. 0.95 for the 2.5th and 97.5th percentiles.
    seed
        Seed of the resampling: users are drawn from ``default_rng(seed)``, as in
        `bootstrap_ci`, and training seeds from ``default_rng([seed, 2])``; the same seed and
        shape give the same intervals.

    Returns
    -------
    mean, low, high, seed_sd : numpy.ndarray
        (n_metrics,) each: the mean over seeds of the per-seed user means, the interval
        bounds, and the standard deviation (``ddof=1``) of the per-seed user means (NaN with
        one seed). Without users every value is NaN.

    Raises
    ------
    ValueError
        For ``confidence`` outside (0, 1), a negative ``n_boot``, or ``values`` that is not
        2-d or 3-d or has no seed (the message gives the shape).
    """
    _check_options(n_boot, confidence)
    x = _as_seeded(values, "values")
    n_users, m = x.shape[1], x.shape[2]
    per_seed = _seed_means(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns, one seed
        mean = np.nanmean(per_seed, axis=0)
        seed_sd = np.nanstd(per_seed, axis=0, ddof=1)
    if n_users == 0 or n_boot == 0:
        return mean, np.full(m, np.nan), np.full(m, np.nan), seed_sd
    (boot,) = _seeded_bootstrap_means([x], n_boot, seed)
    low, high = _percentile_bounds(boot, confidence)
    return mean, low, high, seed_sd


def seeded_paired_comparison(
    a: np.ndarray,
    b: np.ndarray,
    *,
    metrics: Sequence[str],
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Difference ``a - b`` of two models measured on the same users over training seeds.

    Each model's value is the mean over its seeds of the per-seed NaN-ignoring user means
    (as in `seeded_bootstrap_ci`). Each resample draws the users once, shared by ``a`` and
    ``b`` (the comparison is paired), and, independently, ``a``'s seeds and ``b``'s seeds
    with replacement; the interval is the percentile interval of the difference of the two
    resampled means. ``consistent`` is True when every pair (seed i of ``a``, seed j of
    ``b``) has a difference of per-seed user means of the same strict sign as ``diff``
    (False when ``diff`` is 0 or NaN). "Better across seeds" is an interval that excludes
    0 together with ``consistent``.

    Parameters
    ----------
    a, b
        (n_seeds_a, n_users, n_metrics) and (n_seeds_b, n_users, n_metrics) per-user values,
        the users in the same order in both (the caller aligns them) and in every seed; a
        2-d array is one metric. A deterministic model has one seed. NaN is ignored.
    metrics
        Names of the ``n_metrics`` columns, the index of the result.
    n_boot, confidence
        As in `seeded_bootstrap_ci`.
    seed
        Seed of the resampling: users from ``default_rng(seed)``, ``a``'s seeds from
        ``default_rng([seed, 2])`` and ``b``'s seeds from ``default_rng([seed, 3])``.

    Returns
    -------
    pandas.DataFrame
        Index ``metric``, columns ``mean_a, mean_b, diff, ci_low, ci_high, consistent,
        n_seeds_a, n_seeds_b, n_users``; ``n_users`` counts the users with a value in every
        seed of both models.

    Raises
    ------
    ValueError
        For ``confidence`` outside (0, 1), a negative ``n_boot``, arrays that are not 2-d or
        3-d or have no seed, different user or metric counts in ``a`` and ``b`` (the message
        gives both shapes), or a number of names other than ``n_metrics``.
    """
    _check_options(n_boot, confidence)
    xa = _as_seeded(a, "a")
    xb = _as_seeded(b, "b")
    if xa.shape[1:] != xb.shape[1:]:
        raise ValueError(
            f"a and b must have the same users and metrics, got shapes {xa.shape} and {xb.shape}"
        )
    names = [str(name) for name in metrics]
    n_users, m = xa.shape[1], xa.shape[2]
    if len(names) != m:
        raise ValueError(f"{len(names)} metric names for {m} metrics (shape {xa.shape})")
    seeds_a, seeds_b = _seed_means(xa), _seed_means(xb)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean_a, mean_b = np.nanmean(seeds_a, axis=0), np.nanmean(seeds_b, axis=0)
    diff = mean_a - mean_b
    low, high = np.full(m, np.nan), np.full(m, np.nan)
    if n_users and n_boot:
        boot_a, boot_b = _seeded_bootstrap_means([xa, xb], n_boot, seed)
        low, high = _percentile_bounds(boot_a - boot_b, confidence)
    pairs = seeds_a[:, None, :] - seeds_b[None, :, :]  # (n_seeds_a, n_seeds_b, n_metrics)
    sign = np.sign(diff)
    consistent = (sign != 0) & (np.sign(pairs) == sign).all(axis=(0, 1))
    both = (~np.isnan(xa)).all(axis=0) & (~np.isnan(xb)).all(axis=0)
    return pd.DataFrame(
        {
            "mean_a": mean_a,
            "mean_b": mean_b,
            "diff": diff,
            "ci_low": low,
            "ci_high": high,
            "consistent": consistent,
            "n_seeds_a": np.full(m, xa.shape[0], dtype=np.int64),
            "n_seeds_b": np.full(m, xb.shape[0], dtype=np.int64),
            "n_users": both.sum(axis=0).astype(np.int64),
        },
        index=pd.Index(names, name="metric"),
    )


def clustered_bootstrap_ci(
    groups: Sequence[np.ndarray],
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean and two-stage bootstrap confidence interval over groups and the users in each.

    The groups are independent draws of the whole experiment (its split seeds): each has
    its own users, possibly different ones and in different numbers. Each resample draws
    ``n_groups`` groups with replacement and, for every drawn group (a group drawn twice is
    resampled twice, independently), its users with replacement; its value is the mean
    over the drawn groups of their NaN-ignoring user means (the two-stage bootstrap of
    Davison and Hinkley, 1997, section 3.8). The interval is the percentile interval of
    these values, so it covers both the choice of users and the variation between groups.

    Parameters
    ----------
    groups
        One (n_users_g, n_metrics) array per group (1-d: one metric); the metric columns
        the same in every group. NaN (undefined for that user) is left out of the user
        means; a group whose user mean is undefined is left out of the mean over groups.
    n_boot, confidence
        As in `bootstrap_ci`; ``n_boot`` 0 gives NaN bounds.
    seed
        Seed of the resampling: the groups are drawn from ``default_rng([seed, 5])`` and
        group ``g``'s users from ``default_rng([seed, 11, g])``.

    Returns
    -------
    mean, low, high, group_sd : numpy.ndarray
        (n_metrics,) each: the mean over groups of the per-group user means, the interval
        bounds, and the standard deviation (``ddof=1``) of the per-group means (NaN with
        one group).

    Raises
    ------
    ValueError
        For ``confidence`` outside (0, 1), a negative ``n_boot``, no group, or groups with
        different numbers of metrics (the message gives the shapes).
    """
    _check_options(n_boot, confidence)
    arrays = []
    for g in groups:
        x = np.asarray(g, dtype=np.float64)
        arrays.append(x[:, None] if x.ndim == 1 else x)
    if not arrays:
        raise ValueError("clustered_bootstrap_ci needs at least one group")
    shapes = [x.shape for x in arrays]
    if any(len(shape) != 2 for shape in shapes) or len({shape[1] for shape in shapes}) > 1:
        raise ValueError(
            f"groups must be (n_users, n_metrics) arrays with the same metrics, got shapes {shapes}"
        )
    n_groups, m = len(arrays), shapes[0][1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # groups without users, one group
        per_group = np.stack(
            [np.nanmean(x, axis=0) if len(x) else np.full(m, np.nan) for x in arrays]
        )
        mean = np.nanmean(per_group, axis=0)
        group_sd = np.nanstd(per_group, axis=0, ddof=1)
    if n_boot == 0:
        return mean, np.full(m, np.nan), np.full(m, np.nan), group_sd
    picks = np.random.default_rng([seed, 5]).integers(0, n_groups, size=(n_boot, n_groups))
    drawn = np.full((n_boot, n_groups, m), np.nan)
    for g, x in enumerate(arrays):
        where = picks == g
        count = int(where.sum())
        if count and len(x):
            drawn[where] = _bootstrap_means(x, count, [seed, 11, g])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        boot = np.nanmean(drawn, axis=1)
    low, high = _percentile_bounds(boot, confidence)
    return mean, low, high, group_sd
