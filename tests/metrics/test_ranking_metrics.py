"""Ranking metrics: hand-computed cases, edge cases, and ranx as an independent reference."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recarena.metrics import ranking_metrics
from recarena.models.base import RankedLists

L2, L3, L5 = 1.0, 1.0 / np.log2(3), 1.0 / np.log2(6)  # discounts 1/log2(rank+1), ranks 1, 2, 5


def _truth(rel: dict[int, list[int]], n_users: int, n_items: int) -> sp.csr_matrix:
    rows = [u for u, items in rel.items() for _ in items]
    cols = [i for items in rel.values() for i in items]
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_users, n_items))


def _lists(users: list[int], items: list[list[int]]) -> RankedLists:
    arr = np.array(items, dtype=np.int64)
    scores = np.where(arr >= 0, -np.arange(arr.shape[1], dtype=np.float32), -np.inf)
    return RankedLists(np.array(users), arr, scores.astype(np.float32))


@pytest.fixture
def hand_case():
    # user 0: list [3, 1, 4, 7, 5], relevant {1, 5, 9}: hits at ranks 2 and 5
    # user 1: leave-one-out, list [2, 6, 8, pad, pad], relevant {8}: hit at rank 3
    # user 2: all padding, relevant {0}: everything 0
    # user 3: list [9, 9, 0, 2, pad], relevant {9, 2}: hits at ranks 1 and 4 (the repeated
    #         9 at rank 2 counts once)
    lists = _lists(
        [0, 1, 2, 3],
        [[3, 1, 4, 7, 5], [2, 6, 8, -1, -1], [-1] * 5, [9, 9, 0, 2, -1]],
    )
    truth = _truth({0: [1, 5, 9], 1: [8], 2: [0], 3: [9, 2]}, 4, 10)
    return lists, truth


def test_hand_computed_values(hand_case):
    lists, truth = hand_case
    df = ranking_metrics(lists, truth, [3, 5])
    idcg3 = 1 + 1 / np.log2(3) + 1 / np.log2(4)  # three relevant items, k >= 3
    idcg2 = 1 + 1 / np.log2(3)  # two relevant items
    # fmt: off
    expected = {
        # user 0, k=3: one hit (rank 2) of 3 relevant
        (0, "hr@3"): 1, (0, "recall@3"): 1 / 3, (0, "precision@3"): 1 / 3,
        (0, "f1@3"): 1 / 3,  # 2 * (1/3 * 1/3) / (2/3)
        (0, "ndcg@3"): (1 / np.log2(3)) / idcg3, (0, "mrr@3"): 1 / 2,
        (0, "map@3"): (1 / 2) / 3,  # precision@2 over |rel| = 3
        # user 0, k=5: hits at ranks 2 and 5
        (0, "hr@5"): 1, (0, "recall@5"): 2 / 3, (0, "precision@5"): 2 / 5,
        (0, "f1@5"): 0.5,  # 2 * (2/5 * 2/3) / (2/5 + 2/3) = (8/15) / (16/15)
        (0, "ndcg@5"): (1 / np.log2(3) + 1 / np.log2(6)) / idcg3, (0, "mrr@5"): 1 / 2,
        (0, "map@5"): (1 / 2 + 2 / 5) / 3,
        # user 1: the single relevant item at rank 3
        (1, "hr@3"): 1, (1, "recall@3"): 1, (1, "precision@3"): 1 / 3,
        (1, "f1@3"): 0.5,  # 2 * (1/3) / (4/3)
        (1, "ndcg@3"): 1 / np.log2(4), (1, "mrr@3"): 1 / 3, (1, "map@3"): 1 / 3,
        (1, "precision@5"): 1 / 5, (1, "f1@5"): 1 / 3,  # 2 * (1/5) / (6/5)
        (1, "ndcg@5"): 0.5, (1, "mrr@5"): 1 / 3, (1, "map@5"): 1 / 3,
        # user 3, k=3: one hit (rank 1) of 2 relevant
        (3, "hr@3"): 1, (3, "recall@3"): 1 / 2, (3, "precision@3"): 1 / 3,
        (3, "f1@3"): 0.4,  # 2 * (1/3 * 1/2) / (5/6)
        (3, "ndcg@3"): 1 / idcg2, (3, "mrr@3"): 1, (3, "map@3"): 1 / 2,
        # user 3, k=5: hits at ranks 1 and 4
        (3, "recall@5"): 1, (3, "precision@5"): 2 / 5, (3, "f1@5"): 0.8 / 1.4,
        (3, "ndcg@5"): (1 + 1 / np.log2(5)) / idcg2, (3, "map@5"): (1 + 2 / 4) / 2,
    }
    # fmt: on
    for (user, col), value in expected.items():
        assert df.loc[user, col] == pytest.approx(value, abs=1e-12), (user, col)
    # the all-padding user is kept and scores 0 everywhere
    assert (df.loc[2] == 0).all()
    assert list(df.index) == [0, 1, 2, 3]
    assert df.index.name == "user"
    assert list(df.columns) == [
        f"{m}@{k}"
        for m in ("hr", "recall", "precision", "f1", "ndcg", "mrr", "map")
        for k in (3, 5)
    ]


def test_cut_off_beyond_list_width_counts_missing_places_as_misses(hand_case):
    lists, truth = hand_case
    df = ranking_metrics(lists, truth, [10], ["precision", "recall", "ndcg"])
    assert df.loc[0, "precision@10"] == pytest.approx(2 / 10)
    assert df.loc[0, "recall@10"] == pytest.approx(2 / 3)
    assert df.loc[1, "ndcg@10"] == pytest.approx(0.5)


def test_order_follows_lists_users_and_metric_selection(hand_case):
    lists, truth = hand_case
    rev = RankedLists(lists.users[::-1].copy(), lists.items[::-1].copy(), lists.scores[::-1])
    df = ranking_metrics(rev, truth, [5], ["NDCG", "mrr"])
    assert list(df.index) == [3, 2, 1, 0]
    assert list(df.columns) == ["ndcg@5", "mrr@5"]
    ref = ranking_metrics(lists, truth, [5], ["ndcg", "mrr"])
    assert np.allclose(df.loc[[0, 1, 2, 3]].to_numpy(), ref.to_numpy())


def test_user_without_relevant_items_raises():
    lists = _lists([0, 1], [[1, 2], [3, 4]])
    truth = _truth({0: [1]}, 2, 5)
    with pytest.raises(ValueError, match="no relevant items"):
        ranking_metrics(lists, truth, [2])


def test_unknown_metric_and_bad_inputs_raise(hand_case):
    lists, truth = hand_case
    with pytest.raises(ValueError, match="known: hr, recall"):
        ranking_metrics(lists, truth, [5], ["ndgc"])
    with pytest.raises(ValueError, match="positive"):
        ranking_metrics(lists, truth, [0])
    with pytest.raises(ValueError, match="outside"):
        ranking_metrics(_lists([0], [[12]]), truth, [1])


def test_empty_lists_and_zero_users():
    truth = _truth({0: [1], 1: [2]}, 2, 5)
    empty = RankedLists(np.array([0, 1]), np.empty((2, 0), np.int64), np.empty((2, 0)))
    df = ranking_metrics(empty, truth, [1, 5])
    assert df.shape == (2, 14) and (df.to_numpy() == 0).all()
    none = RankedLists(np.empty(0, np.int64), np.empty((0, 5), np.int64), np.empty((0, 5)))
    assert ranking_metrics(none, truth, [5]).shape == (0, 7)


def test_truth_with_duplicate_entries_counts_each_item_once():
    # item 1 stored twice: relevant {1, 2}, so one hit is recall 1/2, not 2/3
    truth = sp.csr_matrix((np.ones(3), np.array([1, 1, 2]), np.array([0, 3])), shape=(1, 4))
    df = ranking_metrics(_lists([0], [[1, 0]]), truth, [2], ["recall"])
    assert df.loc[0, "recall@2"] == pytest.approx(1 / 2)


# ---------------------------------------------------------------- ranx as a reference
RANX_NAMES = {
    "hr": "hit_rate",
    "recall": "recall",
    "precision": "precision",
    "f1": "f1",
    "ndcg": "ndcg",
    "mrr": "mrr",
    "map": "map",
}


def test_matches_ranx_on_random_rankings():
    ranx = pytest.importorskip("ranx")
    rng = np.random.default_rng(7)
    n_users, n_items, width = 400, 150, 25
    users = rng.choice(1000, size=n_users, replace=False)
    items = np.full((n_users, width), -1, dtype=np.int64)
    lengths = rng.integers(1, width + 1, size=n_users)
    lengths[:50] = width
    rel: dict[int, list[int]] = {}
    for r, u in enumerate(users):
        perm = rng.permutation(n_items)
        items[r, : lengths[r]] = perm[: lengths[r]]
        n_rel = 1 if r % 4 == 0 else int(rng.integers(1, 40))  # leave-one-out and many
        # bias towards listed items so that hits are frequent
        pool = np.concatenate([perm[:width], rng.permutation(n_items)])
        rel[int(u)] = list(dict.fromkeys(pool[rng.integers(0, len(pool), 3 * n_rel)]))[:n_rel]
    truth = _truth(rel, 1000, n_items)
    scores = np.where(items >= 0, width - np.arange(width, dtype=np.float32), -np.inf)
    lists = RankedLists(users, items, scores.astype(np.float32))
    ks = [1, 3, 5, 10, 20, 25]
    ours = ranking_metrics(lists, truth, ks)

    qrels = ranx.Qrels({str(u): {str(i): 1 for i in rel[int(u)]} for u in users})
    run = ranx.Run(
        {
            str(u): {str(i): float(width - j) for j, i in enumerate(items[r]) if i >= 0}
            for r, u in enumerate(users)
        }
    )
    names = [f"{theirs}@{k}" for theirs in RANX_NAMES.values() for k in ks]
    ranx.evaluate(qrels, run, names, make_comparable=True)
    for mine, theirs in RANX_NAMES.items():
        for k in ks:
            ref = np.array([run.scores[f"{theirs}@{k}"][str(u)] for u in users])
            got = ours[f"{mine}@{k}"].to_numpy()
            np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12, err_msg=f"{mine}@{k}")
    assert ours["hr@5"].mean() > 0.2  # the comparison is not between all-zero columns
