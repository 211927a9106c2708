"""`evaluate_lists` and `METRIC_INFO`."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import scipy.sparse as sp

from recarena.config import EvaluationConfig
from recarena.metrics import (
    METRIC_INFO,
    beyond_accuracy,
    display_name,
    evaluate_lists,
    higher_is_better,
    ranking_metrics,
)
from recarena.models.base import RankedLists


@pytest.fixture
def case():
    rng = np.random.default_rng(0)
    n_users, n_items = 30, 40
    items = np.array([rng.permutation(n_items)[:10] for _ in range(n_users)])
    items[0, 3:] = -1
    lists = RankedLists(np.arange(n_users), items, np.zeros(items.shape, np.float32))
    truth = sp.csr_matrix(
        (np.ones(n_users), (np.arange(n_users), rng.integers(0, n_items, n_users))),
        shape=(n_users, n_items),
    )
    features = (rng.random((n_items, 5)) < 0.4).astype(float)
    pop = rng.integers(0, 30, n_items)
    return lists, truth, features, pop


def test_all_default_metrics(case):
    lists, truth, features, pop = case
    names = EvaluationConfig().metrics
    per_user, glob = evaluate_lists(
        lists,
        truth,
        [5, 10],
        names,
        train_popularity=pop,
        n_train_users=30,
        item_features=features,
        n_items=40,
    )
    per_user_names = [m for m in names if m not in ("coverage", "gini")]
    assert list(per_user.columns) == [f"{m}@{k}" for m in per_user_names for k in (5, 10)]
    assert set(glob) == {"coverage@5", "coverage@10", "gini@5", "gini@10"}
    ranking = ranking_metrics(lists, truth, [5, 10])
    beyond, glob2 = beyond_accuracy(
        lists, [5, 10], train_popularity=pop, n_train_users=30, item_features=features, n_items=40
    )
    np.testing.assert_array_equal(per_user[ranking.columns].to_numpy(), ranking.to_numpy())
    np.testing.assert_array_equal(per_user[beyond.columns].to_numpy(), beyond.to_numpy())
    assert glob == glob2


def test_unknown_name_lists_known_ones(case):
    lists, truth, _, pop = case
    with pytest.raises(ValueError, match="known: hr, recall.*gini"):
        evaluate_lists(lists, truth, [5], ["ndcg", "serendipity"])


def test_ild_without_features_is_skipped_with_a_warning(case, caplog):
    lists, truth, _, pop = case
    with caplog.at_level(logging.WARNING):
        per_user, glob = evaluate_lists(lists, truth, [5], ["ild", "ndcg", "coverage"])
    assert list(per_user.columns) == ["ndcg@5"] and list(glob) == ["coverage@5"]
    assert "ild skipped" in caplog.text
    with pytest.raises(ValueError, match="train_popularity"):
        evaluate_lists(lists, truth, [5], ["novelty"])


def test_metric_info_covers_every_metric():
    for name in EvaluationConfig().metrics + ["accuracy", "auc", "gauc"]:
        info = METRIC_INFO[name]
        assert info.key == name and info.description
    assert display_name("ndcg@10") == "NDCG@10"
    assert display_name("hr@5") == "HR@5"
    assert display_name("auc") == "AUC"
    assert higher_is_better("ndcg@10") and not higher_is_better("arp@10")
    assert not higher_is_better("gini@20") and higher_is_better("coverage@20")
    with pytest.raises(KeyError):
        display_name("foo@3")
