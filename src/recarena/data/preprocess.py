"""Preprocessing steps: implicit feedback from ratings, de-duplication, k-core filtering.

Each step returns a new `Dataset` and appends a record of what it did (parameters, rows
before and after) to ``dataset.info["preprocessing"]``, which every run saves.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np

from recarena.data.dataset import Dataset
from recarena.errors import DataError

log = logging.getLogger(__name__)


def rating_threshold(dataset: Dataset, min_rating: float) -> Dataset:
    """Keep interactions rated at least ``min_rating`` (explicit ratings to implicit feedback)."""
    if not dataset.has_ratings:
        raise DataError(
            f"data set {dataset.name!r} has no ratings, so min_rating={min_rating} cannot be "
            "applied; remove min_rating from the preprocessing settings"
        )
    mask = dataset.interactions["rating"].to_numpy() >= min_rating
    return dataset.subset(mask, _record("rating_threshold", dataset, mask, min_rating=min_rating))


def deduplicate(dataset: Dataset, keep: Literal["latest", "first"] = "latest") -> Dataset:
    """Keep one interaction per (user, item): the latest (default) or the first in time.

    Rows of one pair at the same time differ at most in rating (or ``part``); the data set's
    row order, which never depends on file order (see `recarena.data.dataset`), decides
    between them, so a shuffled copy of a file, or one with exact duplicates appended,
    keeps the same rows.
    """
    frame = dataset.interactions
    # rows are sorted by user, time and the fixed tie order, so "last" is the latest
    dup = frame.duplicated(["user", "item"], keep="last" if keep == "latest" else "first")
    mask = ~dup.to_numpy()
    return dataset.subset(mask, _record("deduplicate", dataset, mask, keep=keep))


def k_core(
    dataset: Dataset, user_k: int = 0, item_k: int = 0, max_rounds: int | None = None
) -> Dataset:
    """Repeatedly drop users with < ``user_k`` and items with < ``item_k`` interactions.

    Runs until both conditions hold at once (a true k-core), not just one pass. Every round
    removes at least one interaction, so this ends; ``max_rounds`` (None: no limit) stops
    early, with a warning, leaving a set that may not be a k-core.
    """
    users = dataset.interactions["user"].to_numpy()
    items = dataset.interactions["item"].to_numpy()
    mask = np.ones(len(users), dtype=bool)
    rounds = 0
    while True:
        u_count = np.bincount(users[mask], minlength=dataset.n_users)
        i_count = np.bincount(items[mask], minlength=dataset.n_items)
        bad = mask & ((u_count[users] < user_k) | (i_count[items] < item_k))
        if not bad.any():
            break
        if max_rounds is not None and rounds >= max_rounds:
            log.warning("k_core stopped after %d rounds before reaching a fixed point", max_rounds)
            break
        mask &= ~bad
        rounds += 1
    return dataset.subset(mask, _record("k_core", dataset, mask, user_k=user_k, item_k=item_k))


def _record(step: str, dataset: Dataset, mask: np.ndarray, **params: object) -> dict[str, object]:
    kept = dataset.interactions.loc[mask]
    return {
        "step": step,
        **params,
        "interactions_before": dataset.n_interactions,
        "interactions_after": int(mask.sum()),
        "users_before": dataset.n_users,
        "users_after": int(kept["user"].nunique()),
        "items_before": dataset.n_items,
        "items_after": int(kept["item"].nunique()),
    }
