"""Quality per group of users, and the gap between groups, with intervals.

Groups come from the data's user attributes (MovieLens: gender, age, occupation; any column
of the user table) and from behaviour in the training data: *activity* (the number of
training interactions) and *mainstreamness* (the mean training-popularity percentile of the
items in a user's training history), each cut at its tertiles.

For one model, a grouping gives each group's mean of a per-user metric with a percentile
bootstrap interval (users resampled within the group), and the *gap*: the best group's mean
minus the worst group's (the groups named by the observed means), with an interval from a
stratified bootstrap (users resampled within every group, so each group keeps its size).
Two models measured on the same users are compared by the difference of their gaps, on
the same resamples of users (paired): a model widens the gap of another only when that
interval lies above zero.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recarena.metrics.uncertainty import _resample_counts

#: the user-table columns used when a run names none (those present)
DEFAULT_USER_COLUMNS = ("gender", "age", "occupation")
#: a column with more distinct values than this is not a grouping (a zip code, an id)
MAX_GROUPS = 30
#: groups with fewer users are listed but never named best or worst (their means are
#: too uncertain): a gap is between groups of at least this many users
MIN_GROUP_USERS = 20
#: age bands of MovieLens-1M's own coding (under 18, 18-24, ..., 56+)
AGE_BANDS = (18, 25, 35, 45, 50, 56)
BEHAVIOUR = ("activity", "mainstreamness")


def _tertiles(values: pd.Series, names: tuple[str, str, str]) -> pd.Series:
    """Cut at the 1/3 and 2/3 quantiles; ties go to the lower group."""
    low, high = np.quantile(values.to_numpy(np.float64), [1 / 3, 2 / 3])
    labels = np.where(values <= low, names[0], np.where(values <= high, names[1], names[2]))
    return pd.Series(labels, index=values.index)


def behaviour_groups(train: sp.csr_matrix) -> pd.DataFrame:
    """Activity and mainstreamness tertiles of the users with training interactions.

    Parameters
    ----------
    train
        (n_users, n_items) training interactions (any positive value counts as one).
    """
    binary = (train > 0).astype(np.float64).tocsr()
    counts = np.asarray(binary.sum(axis=1)).ravel()
    popularity = np.asarray(binary.sum(axis=0)).ravel()
    # an item's percentile among the items by training popularity (ties share the mean rank)
    percentile = pd.Series(popularity).rank(pct=True).to_numpy()
    users = np.flatnonzero(counts > 0)
    index = pd.Index(users, name="user")
    mean_pct = np.asarray(binary[users] @ percentile).ravel() / counts[users]
    activity = pd.Series(counts[users], index=index)
    main = pd.Series(mean_pct, index=index)
    return pd.DataFrame(
        {
            "activity": _tertiles(activity, ("low", "medium", "high")),
            "mainstreamness": _tertiles(main, ("niche", "mixed", "mainstream")),
        }
    )


def _wanted_columns(
    table: pd.DataFrame, columns: list[str] | None, defaults: tuple[str, ...], what: str
) -> list[str]:
    """The columns named (each must be in ``table``), or the defaults that are there."""
    if columns is None:
        return [c for c in defaults if c in table.columns]
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise KeyError(
            f"{what} column(s) {missing} not in the {what} table; it has {list(table.columns)}"
        )
    return list(columns)


def attribute_groups(users: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """Groups from the user table (indexed by dense user id).

    ``columns`` None takes those of `DEFAULT_USER_COLUMNS` present. A numeric column with
    more than `MAX_GROUPS` values is cut into bands (``age`` into `AGE_BANDS`, others
    at their quartiles); a text column with more is left out, unless named.

    Raises
    ------
    KeyError
        A named column is not in the user table (the message lists those that are).
    """
    named = columns is not None
    wanted = _wanted_columns(users, columns, DEFAULT_USER_COLUMNS, "user")
    out = {}
    for column in wanted:
        values = users[column]
        present = values.dropna()
        if present.nunique() <= MAX_GROUPS:
            out[column] = values.astype("string")
        elif pd.api.types.is_numeric_dtype(values):
            edges = (
                [-np.inf, *AGE_BANDS, np.inf]
                if column == "age"
                else [
                    -np.inf,
                    *np.unique(np.quantile(present.astype(float), [0.25, 0.5, 0.75])),
                    np.inf,
                ]
            )
            out[column] = _bands(values.astype("Float64"), edges)
        elif named:
            out[column] = values.astype("string")
    return pd.DataFrame(out, index=users.index)


def _bands(values: pd.Series, edges: list[float]) -> pd.Series:
    labels = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        if np.isinf(lo):
            labels.append(f"< {hi:g}")
        elif np.isinf(hi):
            labels.append(f"{lo:g}+")
        else:
            labels.append(f"{lo:g}-{hi - 1:g}" if float(hi).is_integer() else f"{lo:g}-{hi:g}")
    cut = pd.cut(values.astype(float), edges, right=False, labels=labels)
    return cut.astype("string")


@dataclass(frozen=True)
class GroupGap:
    """The best and worst group of one model and the gap between them."""

    best: str
    worst: str
    gap: float
    ci_low: float
    ci_high: float
    #: the worst group's mean over the best's (1: no gap)
    ratio: float


def _group_draws(
    values: np.ndarray, groups: np.ndarray, names: list[str], n_boot: int, seed: int
) -> np.ndarray:
    """(n_boot, n_groups) group means over users resampled within each group."""
    out = np.full((n_boot, len(names)), np.nan)
    for g, name in enumerate(names):
        x = values[groups == name]
        present = ~np.isnan(x)
        filled = np.where(present, x, 0.0)
        rng = np.random.default_rng([seed, g])
        rows = []
        for counts in _resample_counts(rng, n_boot, len(x)):
            dens = counts @ present
            rows.append(
                np.divide(counts @ filled, dens, out=np.full(len(counts), np.nan), where=dens > 0)
            )
        out[:, g] = np.concatenate(rows) if rows else np.nan
    return out


def group_quality(
    values: pd.Series,
    groups: pd.Series,
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    min_users: int = MIN_GROUP_USERS,
) -> tuple[pd.DataFrame, GroupGap | None]:
    """Each group's mean of a per-user metric with its interval, and the gap.

    The best and worst group are chosen among the groups of at least ``min_users`` users
    (a group of three users is listed, but its mean is too uncertain to call it the worst).

    Parameters
    ----------
    values
        Per-user metric values, indexed by user (NaN is left out).
    groups
        Each user's group, indexed by user; users without a group are left out.

    Returns
    -------
    table, gap
        ``table``: index ``group``, columns ``mean, ci_low, ci_high, n_users`` (groups by
        mean, best first); ``gap``: None with fewer than two groups.
    """
    joined = pd.DataFrame({"value": values, "group": groups}).dropna(subset=["group"])
    joined = joined[joined.index.isin(values.index)]
    x = joined["value"].to_numpy(np.float64)
    g = joined["group"].astype(str).to_numpy()
    names = sorted(set(g))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.array(
            [np.nanmean(x[g == n]) if np.any(~np.isnan(x[g == n])) else np.nan for n in names]
        )
        draws = (
            _group_draws(x, g, names, n_boot, seed) if n_boot else np.full((0, len(names)), np.nan)
        )
        alpha = (1 - confidence) / 2
        if n_boot:
            low, high = np.nanpercentile(draws, [100 * alpha, 100 * (1 - alpha)], axis=0)
        else:
            low = high = np.full(len(names), np.nan)
    table = pd.DataFrame(
        {
            "mean": means,
            "ci_low": low,
            "ci_high": high,
            "n_users": [int(np.sum((g == n) & ~np.isnan(x))) for n in names],
        },
        index=pd.Index(names, name="group"),
    ).sort_values("mean", ascending=False, kind="stable")
    valid = table.dropna(subset=["mean"])
    valid = valid[valid["n_users"] >= min_users]
    if len(valid) < 2:
        return table, None
    best, worst = str(valid.index[0]), str(valid.index[-1])
    b, w = names.index(best), names.index(worst)
    gap = float(means[b] - means[w])
    if n_boot:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = np.nanpercentile(draws[:, b] - draws[:, w], [100 * alpha, 100 * (1 - alpha)])
    else:
        lo = hi = np.nan
    ratio = float(means[w] / means[b]) if means[b] > 0 else np.nan
    return table, GroupGap(best, worst, gap, float(lo), float(hi), ratio)


def gap_difference(
    a: pd.Series,
    b: pd.Series,
    groups: pd.Series,
    gap_a: GroupGap,
    gap_b: GroupGap,
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Model A's gap minus model B's, with a paired stratified bootstrap interval.

    Each model's gap is between its own best and worst group (`group_quality`); both are
    computed on the same resamples of users (the users both were measured on), so the
    interval is paired. Returns (difference, low, high).
    """
    users = a.index.intersection(b.index).intersection(groups.dropna().index)
    g = groups.loc[users].astype(str).to_numpy()
    names = sorted(set(g))
    da = _group_draws(a.loc[users].to_numpy(np.float64), g, names, n_boot, seed)
    db = _group_draws(b.loc[users].to_numpy(np.float64), g, names, n_boot, seed)
    diff = gap_a.gap - gap_b.gap
    if not n_boot:
        return diff, np.nan, np.nan
    ia, ja = names.index(gap_a.best), names.index(gap_a.worst)
    ib, jb = names.index(gap_b.best), names.index(gap_b.worst)
    boot = (da[:, ia] - da[:, ja]) - (db[:, ib] - db[:, jb])
    alpha = (1 - confidence) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanpercentile(boot, [100 * alpha, 100 * (1 - alpha)])
    return diff, float(lo), float(hi)


# ---------------------------------------------------------------------- items: exposure
#: the item-table columns grouped by default (those present): list columns count an item
#: in each of its groups (a film in each of its genres)
DEFAULT_ITEM_COLUMNS = ("genres", "year")


def item_groups(
    items: pd.DataFrame,
    popularity: np.ndarray,
    head_share: float,
    columns: list[str] | None = None,
) -> dict[str, list[list[str]]]:
    """Each grouping's groups of every item (a list per item, empty when it has none).

    ``popularity``: training popularity per item; the head is the ``head_share`` most
    popular items (ties by item id), the rest the tail. ``year`` (a number) is grouped by
    decade; a list column (genres) puts an item in each of its values; other columns with
    at most `MAX_GROUPS` values by value (more: left out, unless named).

    Raises
    ------
    KeyError
        A named column is not in the item table (the message lists those that are).
    """
    n = len(popularity)
    order = np.lexsort((np.arange(n), -np.asarray(popularity)))
    head = np.zeros(n, dtype=bool)
    head[order[: max(1, int(round(head_share * n)))]] = True
    out: dict[str, list[list[str]]] = {"popularity": [["head"] if h else ["tail"] for h in head]}
    named = columns is not None
    wanted = _wanted_columns(items, columns, DEFAULT_ITEM_COLUMNS, "item")
    for column in wanted:
        values = items[column].reindex(range(n))
        first = values.dropna()
        if len(first) and isinstance(first.iloc[0], (list, tuple, np.ndarray)):
            out[column] = [
                [str(v) for v in x] if isinstance(x, (list, tuple, np.ndarray)) else []
                for x in values
            ]
        elif column == "year" and pd.api.types.is_numeric_dtype(values):
            out[column] = [[] if pd.isna(v) else [f"{int(v) // 10 * 10}s"] for v in values]
        elif first.nunique() <= MAX_GROUPS or named:
            out[column] = [[] if pd.isna(v) else [str(v)] for v in values]
    return out


def exposure_shares(
    lists: np.ndarray, groups: list[list[str]], weights: np.ndarray | None = None
) -> dict[str, float]:
    """The share of listed items (or of ``weights`` per item, for the catalog and the test
    interactions) that falls in each group; an item in several groups counts in each, so
    shares are of group memberships and sum to one.

    ``lists``: item ids (any shape; negative ids, empty slots, are left out).
    """
    items = np.asarray(lists, dtype=np.int64).ravel()
    items = items[(items >= 0) & (items < len(groups))]
    counts = np.bincount(items, minlength=len(groups)).astype(np.float64)
    if weights is not None:
        counts = np.asarray(weights, dtype=np.float64)
    totals: dict[str, float] = {}
    for item in np.flatnonzero(counts):
        for group in groups[item]:
            totals[group] = totals.get(group, 0.0) + counts[item]
    whole = sum(totals.values())
    return {g: v / whole for g, v in sorted(totals.items())} if whole else {}


def grouping_problems(
    users: pd.DataFrame | None,
    items: pd.DataFrame,
    user_columns: list[str] | None,
    item_columns: list[str] | None,
) -> list[str]:
    """What is wrong with the user and item columns an experiment names for grouping, on
    its data (as messages): a named column the table lacks, or user columns named for data
    without a user table."""
    problems = []
    if user_columns:
        if users is None:
            problems.append(
                f"[fairness] user_columns {user_columns}: the data set has no user table"
            )
        else:
            try:
                _wanted_columns(users, user_columns, DEFAULT_USER_COLUMNS, "user")
            except KeyError as exc:
                problems.append(f"[fairness] user_columns: {exc.args[0]}")
    if item_columns:
        try:
            _wanted_columns(items, item_columns, DEFAULT_ITEM_COLUMNS, "item")
        except KeyError as exc:
            problems.append(f"[fairness] item_columns: {exc.args[0]}")
    return problems
