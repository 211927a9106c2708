"""Evaluation metrics of RecArena: ranking, beyond-accuracy, pointwise, uncertainty, segments.

Stability: **stable** metric keys: lower-case ``name@k`` (``ndcg@10``) for cut-off metrics,
bare names for pointwise ones (``auc``). Metrics are computed per user and vectorised over
users; a user with no recommendation scores zero and no user is ever dropped silently.

Modules
-------
`recarena.metrics.ranking`
    HR, Recall, Precision, F1, NDCG, MRR, MAP at k (`ranking_metrics`).
`recarena.metrics.beyond`
    Novelty, ILD, ARP per user; coverage and Gini over all lists (`beyond_accuracy`).
`recarena.metrics.impressions`
    AUC, MRR, nDCG@5 and nDCG@10 per impression, as MIND's official script
    (`impression_metrics`).
`recarena.metrics.pointwise`
    Accuracy, precision, recall, F1, AUC, GAUC of scored pairs (`pointwise_metrics`).
`recarena.metrics.uncertainty`
    Bootstrap confidence intervals over users (`bootstrap_ci`, `summarize`) and paired
    comparisons (`paired_comparison`); over users and training seeds together
    (`seeded_bootstrap_ci`, `seeded_paired_comparison`).
`recarena.metrics.segments`
    Cold/warm users, head/tail/cold items and metrics within them.
`recarena.metrics.info`
    `METRIC_INFO`: display name, description and direction of each metric.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recarena.metrics.beyond import BEYOND_METRICS, beyond_accuracy, gini_index
from recarena.metrics.impressions import IMPRESSION_METRICS, impression_metrics
from recarena.metrics.info import (
    METRIC_INFO,
    MetricInfo,
    display_name,
    higher_is_better,
    metric_info,
    split_metric_key,
)
from recarena.metrics.pointwise import (
    choose_threshold,
    per_user_auc,
    pointwise_metrics,
    roc_auc,
)
from recarena.metrics.ranking import RANKING_METRICS, hit_matrix, ranking_metrics
from recarena.metrics.segments import (
    ITEM_SEGMENTS,
    USER_SEGMENTS,
    item_segments,
    restrict_truth,
    segment_ranking_metrics,
    subset_lists,
    user_segments,
)
from recarena.metrics.uncertainty import (
    bootstrap_ci,
    clustered_bootstrap_ci,
    paired_comparison,
    seeded_bootstrap_ci,
    seeded_paired_comparison,
    summarize,
)
from recarena.ranking import RankedLists

logger = logging.getLogger(__name__)

#: every metric name `evaluate_lists` knows, in the order of `EvaluationConfig.metrics`
LIST_METRICS: tuple[str, ...] = RANKING_METRICS + BEYOND_METRICS

__all__ = [
    "BEYOND_METRICS",
    "IMPRESSION_METRICS",
    "ITEM_SEGMENTS",
    "LIST_METRICS",
    "METRIC_INFO",
    "RANKING_METRICS",
    "USER_SEGMENTS",
    "MetricInfo",
    "beyond_accuracy",
    "bootstrap_ci",
    "choose_threshold",
    "display_name",
    "evaluate_lists",
    "gini_index",
    "higher_is_better",
    "hit_matrix",
    "impression_metrics",
    "item_segments",
    "metric_info",
    "paired_comparison",
    "per_user_auc",
    "pointwise_metrics",
    "ranking_metrics",
    "restrict_truth",
    "roc_auc",
    "clustered_bootstrap_ci",
    "seeded_bootstrap_ci",
    "seeded_paired_comparison",
    "segment_ranking_metrics",
    "split_metric_key",
    "subset_lists",
    "summarize",
    "user_segments",
]


def evaluate_lists(
    lists: RankedLists,
    truth: sp.spmatrix,
    ks: Sequence[int],
    metrics: Sequence[str] = LIST_METRICS,
    *,
    train_popularity: np.ndarray | None = None,
    n_train_users: int | None = None,
    item_features: sp.spmatrix | np.ndarray | None = None,
    n_items: int | None = None,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """All requested list metrics: per-user columns and global values.

    Parameters
    ----------
    lists
        Top-K lists (padding -1).
    truth
        Users x items sparse matrix of held-out relevant items, rows indexed by user id.
    ks
        Cut-offs.
    metrics
        Names as in `recarena.config.EvaluationConfig.metrics`: ``hr, recall, precision,
        f1, ndcg, mrr, map, coverage, novelty, ild, arp, gini`` (case-insensitive).
        ``ild`` is skipped, with a warning in the log, when ``item_features`` is None.
    train_popularity
        (n_items,) training users per item; needed by ``novelty`` and ``arp``.
    n_train_users
        Users in the training data; needed by ``novelty``.
    item_features
        (n_items, n_features) item vectors for ``ild``.
    n_items
        Catalog size (default ``truth.shape[1]``).

    Returns
    -------
    per_user : pandas.DataFrame
        One row per entry of ``lists.users`` (index ``user``): ranking columns, then
        ``novelty@k``, ``ild@k``, ``arp@k``, in the order the names were requested.
    global_values : dict[str, float]
        ``coverage@k`` and ``gini@k``.

    Raises
    ------
    ValueError
        For an unknown metric name (the message lists the known ones), or an input a
        requested metric needs but was not given.
    """
    names = list(dict.fromkeys(str(m).lower() for m in metrics))
    unknown = [m for m in names if m not in LIST_METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {', '.join(LIST_METRICS)}")
    if n_items is None:
        n_items = int(truth.shape[1])
    if "ild" in names and item_features is None:
        logger.warning("ild skipped: no item features (genres or text vectors) were given")
        names.remove("ild")
    ranking = [m for m in names if m in RANKING_METRICS]
    beyond = [m for m in names if m in BEYOND_METRICS]
    frames = []
    if ranking:
        frames.append(ranking_metrics(lists, truth, ks, ranking))
    global_values: dict[str, float] = {}
    if beyond:
        if {"novelty", "arp"} & set(beyond) and train_popularity is None:
            raise ValueError("novelty and arp need train_popularity")
        if "novelty" in beyond and n_train_users is None:
            raise ValueError("novelty needs n_train_users")
        per_user, global_values = beyond_accuracy(
            lists,
            ks,
            train_popularity=(np.zeros(n_items) if train_popularity is None else train_popularity),
            n_train_users=1 if n_train_users is None else n_train_users,
            item_features=item_features,
            n_items=n_items,
            metrics=beyond,
        )
        frames.append(per_user)
    columns: dict[str, np.ndarray] = {}
    for frame in frames:
        columns.update({c: frame[c].to_numpy() for c in frame.columns})
    order = [c for m in names for c in columns if split_metric_key(c)[0] == m]
    index = pd.Index(np.asarray(lists.users), name="user")
    return pd.DataFrame({c: columns[c] for c in order}, index=index), global_values
