"""What each metric key means: display name, description, direction.

Metric columns are lower-case ``name@k`` (``ndcg@10``) for cut-off metrics and bare names
for pointwise ones (``auc``); `metric_info` resolves either to its `MetricInfo`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["ranking", "beyond-user", "beyond-global", "pointwise"]


@dataclass(frozen=True)
class MetricInfo:
    """A metric's key, display name, description and whether higher is better.

    ``kind`` says how it is computed: ``ranking`` (per user, against held-out items),
    ``beyond-user`` (per user, from the lists alone), ``beyond-global`` (one value for all
    lists) or ``pointwise`` (classification of scored pairs, no cut-off).
    """

    key: str
    display: str
    description: str
    higher_is_better: bool
    kind: Kind
    at_k: bool = True

    def display_name(self, k: int | None = None) -> str:
        """``"NDCG@10"`` for ``k=10``; the bare display name without a cut-off."""
        return self.display if k is None or not self.at_k else f"{self.display}@{k}"


METRIC_INFO: dict[str, MetricInfo] = {
    m.key: m
    for m in (
        MetricInfo("hr", "HR", "hit rate: 1 if any relevant item is in the top k", True, "ranking"),
        MetricInfo(
            "recall",
            "Recall",
            "share of the user's relevant items found in the top k (pointwise, without @: "
            "share of positives predicted positive)",
            True,
            "ranking",
        ),
        MetricInfo(
            "precision",
            "Precision",
            "share of the top k that is relevant (pointwise, without @: share of predicted "
            "positives that are positive)",
            True,
            "ranking",
        ),
        MetricInfo("f1", "F1", "harmonic mean of precision and recall", True, "ranking"),
        MetricInfo(
            "ndcg",
            "NDCG",
            "normalised discounted cumulative gain, binary gains, log2 discount",
            True,
            "ranking",
        ),
        MetricInfo(
            "mrr",
            "MRR",
            "1 / rank of the first relevant item in the top k, else 0",
            True,
            "ranking",
        ),
        MetricInfo(
            "map",
            "MAP",
            "average precision at k, normalised by the number of relevant items (as ranx)",
            True,
            "ranking",
        ),
        MetricInfo(
            "coverage",
            "Coverage",
            "share of the catalog recommended to at least one user",
            True,
            "beyond-global",
        ),
        MetricInfo(
            "novelty",
            "Novelty",
            "mean self-information -log2 p(item) of the listed items (bits)",
            True,
            "beyond-user",
        ),
        MetricInfo(
            "ild",
            "ILD",
            "intra-list diversity: mean pairwise 1 - cosine of item features",
            True,
            "beyond-user",
        ),
        MetricInfo(
            "arp",
            "ARP",
            "average recommended popularity (training users per listed item); lower is "
            "less popularity bias",
            False,
            "beyond-user",
        ),
        MetricInfo(
            "gini",
            "Gini",
            "Gini index of recommendation counts over the catalog; 0 even, 1 one item",
            False,
            "beyond-global",
        ),
        MetricInfo(
            "accuracy",
            "Accuracy",
            "share of pairs classified correctly at the threshold",
            True,
            "pointwise",
            at_k=False,
        ),
        MetricInfo(
            "auc",
            "AUC",
            "ROC AUC over all positive-negative pairs, ties half",
            True,
            "pointwise",
            at_k=False,
        ),
        MetricInfo(
            "gauc", "GAUC", "mean per-user (per-impression) ROC AUC", True, "pointwise", at_k=False
        ),
    )
}


def split_metric_key(column: str) -> tuple[str, int | None]:
    """``"ndcg@10"`` -> ``("ndcg", 10)``; ``"auc"`` -> ``("auc", None)``."""
    name, sep, k = column.lower().partition("@")
    if not sep:
        return name, None
    if not k.isdigit():
        raise ValueError(f"bad metric column {column!r}; expected 'name@k' such as 'ndcg@10'")
    return name, int(k)


def metric_info(column: str) -> MetricInfo:
    """The `MetricInfo` of a metric key or column (``"ndcg@10"``, ``"auc"``).

    Raises
    ------
    KeyError
        For an unknown metric name.
    """
    name, _ = split_metric_key(column)
    if name not in METRIC_INFO:
        raise KeyError(f"unknown metric {column!r}; known: {', '.join(METRIC_INFO)}")
    return METRIC_INFO[name]


def display_name(column: str) -> str:
    """``"ndcg@10"`` -> ``"NDCG@10"``, ``"auc"`` -> ``"AUC"``."""
    name, k = split_metric_key(column)
    return metric_info(name).display_name(k)


def higher_is_better(column: str) -> bool:
    """Whether larger values of the metric column are better."""
    return metric_info(column).higher_is_better
