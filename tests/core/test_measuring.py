"""Measuring without a run folder: `measure_lists` and `pointwise_metrics` on lists built by
hand, and `write_measurement`, the one place the result becomes files."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recarena.config import EvaluationConfig, ProtocolConfig
from recarena.experiment.artifacts import write_measurement
from recarena.experiment.measuring import HeldOut, measure_lists, pointwise_metrics
from recarena.metrics.segments import SEGMENT_ALL
from recarena.models.base import Recommender, TrainingData
from recarena.ranking import RankedLists
from recarena.splits import CandidateSet

N_USERS, N_ITEMS = 3, 6
#: training interactions: item 0 is the most popular
TRAIN = pd.DataFrame(
    {
        "user": [0, 0, 1, 1, 2, 2, 2],
        "item": [0, 1, 0, 3, 0, 1, 4],
        "timestamp": [1, 2, 1, 2, 1, 2, 3],
    }
)
#: held out: user 0 item 2, user 1 item 5, user 2 item 3
TRUTH = sp.csr_matrix((np.ones(3), ([0, 1, 2], [2, 5, 3])), shape=(N_USERS, N_ITEMS))


def _data() -> TrainingData:
    return TrainingData(interactions=TRAIN, n_users=N_USERS, n_items=N_ITEMS)


def _held_out() -> HeldOut:
    return HeldOut(truth=TRUTH, fit_interactions=TRAIN, n_users=N_USERS, n_items=N_ITEMS)


def _lists() -> RankedLists:
    # user 0 finds item 2 first, user 1 at rank 3, user 2 never
    items = np.array([[2, 3, 4], [2, 4, 5], [5, 2, 1]])
    scores = np.array([[3.0, 2.0, 1.0]] * 3)
    return RankedLists(np.arange(3), items, scores)


def test_measure_lists_counts_by_hand():
    evaluation = EvaluationConfig(ks=[1, 3], metrics=["hr", "ndcg", "mrr"])
    m = measure_lists(_lists(), ProtocolConfig(), _held_out(), _data(), evaluation)
    every = m.per_user[m.per_user["segment"] == SEGMENT_ALL].set_index("user")
    assert every["hr@1"].tolist() == [1.0, 0.0, 0.0]
    assert every["hr@3"].tolist() == [1.0, 1.0, 0.0]
    assert every["mrr@3"].tolist() == pytest.approx([1.0, 1 / 3, 0.0])
    assert every["ndcg@3"].tolist() == pytest.approx([1.0, 1 / math.log2(4), 0.0])
    assert m.record["protocol"] == "full" and m.record["segment_users"][SEGMENT_ALL] == 3
    assert not m.record["sampled_candidates"] and "pointwise" not in m.record
    # every user segment's rows are rows of the same users
    assert set(m.per_user["user"]) == {0, 1, 2}


def test_pointwise_metrics_read_the_candidates_scores():
    class Fixed(Recommender):
        history_use = "none"

        def _fit(self, data, valid):
            pass

        def _score(self, users, items):
            return np.asarray(items, dtype=np.float32)  # a higher id scores higher

    model = Fixed().fit(_data())
    candidates = CandidateSet(
        users=np.arange(3),
        items=np.array([[2, 0, 1], [5, 0, 4], [3, 4, 5]]),
        kind="sampled",
        description="held-out + 2",
    )
    lists = RankedLists(np.arange(3), candidates.items, np.zeros((3, 3)))
    result = pointwise_metrics(model, lists, candidates, TRUTH, seed=0)
    # pooled AUC: positives 2, 5, 3 against negatives 0, 1, 0, 4, 4, 5 (18 pairs): 2 beats
    # three, 5 beats five and ties one (a half), 3 beats three
    assert result["auc"] == pytest.approx((3 + 5.5 + 3) / 18)
    assert pointwise_metrics(model, lists, None, TRUTH, seed=0) == {}


def test_write_measurement_writes_the_table_and_then_the_record(tmp_path):
    evaluation = EvaluationConfig(ks=[3], metrics=["hr"])
    m = measure_lists(
        _lists(), ProtocolConfig(), _held_out(), _data(), evaluation, pointwise={"auc": 0.5}
    )
    write_measurement(tmp_path / "full", m)
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "full" / "per_user.parquet"), m.per_user
    )
    assert json.loads((tmp_path / "full" / "metrics.json").read_text())["pointwise"] == {"auc": 0.5}
