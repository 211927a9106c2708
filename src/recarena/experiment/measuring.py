"""Measuring one protocol's ranked lists: per-user metrics by segment, the global metrics,
and the pointwise metrics of a candidate protocol, returned as a `Measurement`.

Nothing here reads or writes a run folder: `measure_lists` takes the lists, what the split
holds out (`HeldOut`, `held_out` of a split) and the training data, and returns the
per-user table and the record that ``metrics.json`` keeps; `measure_protocol` adds a
candidate protocol's pointwise metrics, as a run measures its test lists;
`recarena.experiment.artifacts.write_measurement` writes them. So a metric can be checked
on lists built by hand, as LensKit's ``measure_list`` and Cornac's ``ranking_eval`` are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recarena.config import ACCURACY_METRICS, EvaluationConfig, ProtocolConfig
from recarena.data.dataset import Dataset
from recarena.metrics.pointwise import classify_pointwise
from recarena.metrics.segments import SEGMENT_ALL
from recarena.models.base import Recommender, TrainingData
from recarena.ranking import RankedLists
from recarena.splits import CandidateSet, Split


@dataclass(frozen=True)
class Measurement:
    """One protocol measured: ``per_user`` has a row per (user, segment) (per impression
    for the impressions protocol), ``record`` is what ``metrics.json`` holds."""

    per_user: pd.DataFrame
    record: dict[str, Any]


@dataclass(frozen=True)
class HeldOut:
    """What measuring reads of the data and the split at one stage."""

    #: users x items, the held-out items (binary)
    truth: sp.csr_matrix
    #: the interactions the model was fit on (user segments count them)
    fit_interactions: pd.DataFrame
    n_users: int
    n_items: int
    #: items without training interactions in a cold-item split (None: no such split)
    cold_items: np.ndarray | None = None
    #: item vectors for intra-list diversity (None: not measured)
    item_features: sp.csr_matrix | None = None


def held_out(
    split: Split, dataset: Dataset, stage: str, item_features: sp.csr_matrix | None = None
) -> HeldOut:
    """What ``split`` holds out at ``stage`` ("valid" or "test"), for `measure_lists`."""
    return HeldOut(
        truth=split.truth_csr(stage),
        fit_interactions=split.fit_interactions(stage),  # type: ignore[arg-type]
        n_users=dataset.n_users,
        n_items=dataset.n_items,
        cold_items=split.cold_items,
        item_features=item_features,
    )


def measure_protocol(
    model: Recommender,
    proto: ProtocolConfig,
    lists: RankedLists,
    held_out: HeldOut,
    data: TrainingData,
    evaluation: EvaluationConfig,
    *,
    candidates: CandidateSet | None,
    seed: int,
) -> Measurement:
    """A protocol's lists measured (`measure_lists`), with the pointwise metrics of its
    ``candidates`` (`pointwise_metrics`) unless it ranks the full catalog."""
    pointwise = None
    if proto.kind != "full":
        pointwise = pointwise_metrics(model, lists, candidates, held_out.truth, seed)
    return measure_lists(lists, proto, held_out, data, evaluation, pointwise=pointwise)


def measure_lists(
    lists: RankedLists,
    proto: ProtocolConfig,
    held_out: HeldOut,
    data: TrainingData,
    evaluation: EvaluationConfig,
    *,
    pointwise: dict[str, Any] | None = None,
) -> Measurement:
    """Per-user metrics of ``lists`` for every user and item segment, and the global ones.

    ``pointwise`` (from `pointwise_metrics`) joins the record of a candidate protocol.
    """
    from recarena.metrics import evaluate_lists, item_segments, restrict_truth, user_segments

    ev = evaluation
    truth = held_out.truth
    pop = data.item_popularity
    kwargs = dict(
        train_popularity=pop,
        n_train_users=int((data.user_activity > 0).sum()),
        item_features=held_out.item_features,
        n_items=held_out.n_items,
    )
    per_user, global_metrics = evaluate_lists(lists, truth, ev.ks, ev.metrics, **kwargs)
    per_user = per_user.copy()
    frames = [per_user.assign(segment=SEGMENT_ALL)]
    counts = {SEGMENT_ALL: len(per_user)}
    for name, mask in user_segments(
        lists.users, held_out.fit_interactions, held_out.n_users, cold_user_max=ev.cold_user_max
    ).items():
        sub = per_user.loc[mask]
        counts[name] = len(sub)
        if len(sub):
            frames.append(sub.assign(segment=name))
    cold = held_out.cold_items
    item_masks = item_segments(
        pop, head_share=ev.head_share, cold_items=cold if cold is not None and len(cold) else None
    )
    # the metrics measured again on each item segment (those that read the held-out items)
    accuracy_metrics = [m for m in ev.metrics if m in ACCURACY_METRICS]
    for name, mask in item_masks.items():
        seg_truth = restrict_truth(truth, mask)
        has = np.diff(seg_truth.indptr)[lists.users] > 0
        counts[name] = int(has.sum())
        if not has.any() or not accuracy_metrics:
            continue
        sub_lists = RankedLists(lists.users[has], lists.items[has], lists.scores[has])
        seg, _ = evaluate_lists(sub_lists, seg_truth, ev.ks, accuracy_metrics, **kwargs)
        frames.append(seg.assign(segment=name))
    table = pd.concat(frames)
    table.index.name = "user"
    record: dict[str, Any] = {
        "global": global_metrics,
        "segment_users": counts,
        "protocol": proto.label,
        "description": proto.description,
        "sampled_candidates": proto.kind == "sampled",
    }
    if pointwise is not None:
        record["pointwise"] = pointwise
    return Measurement(per_user=table.reset_index(), record=record)


def pointwise_metrics(
    model: Recommender,
    lists: RankedLists,
    candidates: CandidateSet | None,
    truth: sp.csr_matrix,
    seed: int,
) -> dict[str, Any]:
    """Held-out positives against the protocol's other candidates, as a classifier.

    Every model's threshold follows `POINTWISE_THRESHOLD_RULE` (see `classify_pointwise`).
    Empty without candidates.
    """
    if candidates is None:
        return {}
    users = lists.users
    items = candidates.items[np.searchsorted(candidates.users, users)]
    # the scores recommend() computed for these candidates; score again only without them
    scores = lists.candidate_scores
    if scores is None or scores.shape != items.shape:
        scores = model.score(users, items)
    labels = (
        np.asarray(truth[np.repeat(users, items.shape[1]), np.maximum(items, 0).ravel()]).reshape(
            items.shape
        )
        > 0
    )
    valid = (items >= 0) & np.isfinite(scores)
    groups = np.repeat(users, items.shape[1]).reshape(items.shape)[valid]
    return classify_pointwise(
        labels[valid].astype(int), scores[valid].astype(np.float64), groups, seed=seed
    )
