"""The impressions protocol (MIND): each impression's shown items, clicked against shown but
not clicked, scored by the model and measured per impression (MIND's definitions).

`measure_impressions` returns a `Measurement` like `measure_lists`; nothing here touches a
run folder.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recarena.config import EvaluationConfig
from recarena.data.dataset import Dataset
from recarena.errors import ConfigError
from recarena.experiment.measuring import HeldOut, Measurement
from recarena.metrics.pointwise import classify_pointwise
from recarena.metrics.segments import SEGMENT_ALL
from recarena.models.base import Recommender, TrainingData


def impression_rows(dataset: Dataset, stage: str, users: np.ndarray | None = None) -> pd.DataFrame:
    """The impression logs of ``stage`` ("valid" or "test"), of ``users`` only if given."""
    imp = dataset.impressions
    if imp is None:
        raise ConfigError(
            f"protocol 'impressions' needs a data set with impression logs (such as MIND); "
            f"{dataset.name!r} has none"
        )
    rows = imp[imp["part"] == (2 if stage == "test" else 1)]
    if users is not None:
        rows = rows[rows["user"].isin(users)]
    return rows


def impression_scores(model: Recommender, rows: pd.DataFrame) -> np.ndarray:
    """The model's score of every shown item, each user's items scored in one call."""
    users = rows["user"].to_numpy(np.int64)
    items = rows["item"].to_numpy(np.int64)
    order = np.argsort(users, kind="stable")
    u_sorted, i_sorted = users[order], items[order]
    uniq, starts, counts = np.unique(u_sorted, return_index=True, return_counts=True)
    position = np.arange(len(order)) - np.repeat(starts, counts)
    out_sorted = np.empty(len(order), dtype=np.float32)
    batch = max(1, (8 << 20) // max(1, int(counts.max(initial=1))))
    for b in range(0, len(uniq), batch):
        lo, hi = (
            starts[b],
            starts[min(b + batch, len(uniq)) - 1] + counts[min(b + batch, len(uniq)) - 1],
        )
        group = np.repeat(np.arange(min(batch, len(uniq) - b)), counts[b : b + batch])
        cand = np.full((len(counts[b : b + batch]), int(counts[b : b + batch].max())), -1, np.int64)
        cand[group, position[lo:hi]] = i_sorted[lo:hi]
        scores = model.score(uniq[b : b + batch], cand)
        out_sorted[lo:hi] = scores[group, position[lo:hi]]
    out = np.empty(len(order), dtype=np.float32)
    out[order] = out_sorted
    return out


def impression_table(
    model: Recommender, rows: pd.DataFrame, seed: int
) -> tuple[pd.DataFrame, np.ndarray]:
    """Per-impression metrics (MIND's definitions); ties broken at random with the seed."""
    from recarena.metrics import impression_metrics

    scores = impression_scores(model, rows)
    # impression_metrics breaks ties by shown order: shuffle the order within impressions
    rng = np.random.default_rng([seed, 4242])
    perm = rng.permutation(len(rows))
    imp = rows["impression"].to_numpy()[perm]
    keep = np.argsort(imp, kind="stable")
    idx = perm[keep]
    table = impression_metrics(
        rows["impression"].to_numpy()[idx], rows["label"].to_numpy()[idx], scores[idx]
    )
    return table, scores


def measure_impressions(
    model: Recommender,
    rows: pd.DataFrame,
    held_out: HeldOut,
    data: TrainingData,
    evaluation: EvaluationConfig,
    seed: int,
) -> Measurement:
    """Per-impression metrics for every user segment, and the pointwise metrics of clicks."""
    from recarena.metrics import user_segments

    table, scores = impression_table(model, rows, seed)
    user_of = rows.groupby("impression", sort=False)["user"].first()
    table = table.copy()
    table.insert(0, "user", user_of.reindex(table.index).to_numpy())
    table.index.name = "impression"
    table = table.reset_index()
    frames = [table.assign(segment=SEGMENT_ALL)]
    counts = {SEGMENT_ALL: len(table)}
    eval_users = np.unique(table["user"].to_numpy())
    masks = user_segments(
        eval_users,
        held_out.fit_interactions,
        held_out.n_users,
        cold_user_max=evaluation.cold_user_max,
    )
    for name, mask in masks.items():
        sub = table[table["user"].isin(eval_users[mask])]
        counts[name] = len(sub)
        if len(sub):
            frames.append(sub.assign(segment=name))
    labels = rows["label"].to_numpy().astype(int)
    pointwise = classify_pointwise(
        labels, scores.astype(np.float64), rows["impression"].to_numpy(), seed=seed
    )
    train_items = np.flatnonzero(data.item_popularity > 0)
    record = {
        "global": {},
        "segment_users": counts,
        "unit": "impressions",
        "protocol": "impressions",
        "description": "per impression: the items shown, clicked vs shown but not clicked",
        "sampled_candidates": False,
        "pointwise": pointwise,
        "impressions": len(table),
        "shown_items": len(rows),
        "shown_items_never_in_training": int(
            (~np.isin(rows["item"].to_numpy(), train_items)).sum()
        ),
    }
    return Measurement(per_user=pd.concat(frames), record=record)
