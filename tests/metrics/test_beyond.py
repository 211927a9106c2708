"""Beyond-accuracy metrics: novelty, ILD, ARP, coverage, Gini."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recarena.metrics import beyond_accuracy, gini_index
from recarena.models.base import RankedLists

# n_items = 6, n_train_users = 7, training users per item:
POP = np.array([7, 3, 1, 0, 3, 0])
# smoothed p = (pop + 1) / 8 = [1, 1/2, 1/4, 1/8, 1/2, 1/8] -> -log2 p = [0, 1, 2, 3, 1, 3] bits
# genres (multi-hot): cos(0,1) = 1/sqrt(2), cos(1,4) = 1, cos(0,4) = 1/sqrt(2), item 2 shares
# no genre with 0, 1, 4; item 5 has none
GENRES = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
R2 = 1 / np.sqrt(2)


@pytest.fixture
def lists():
    items = np.array([[0, 1, 2], [3, -1, -1], [-1, -1, -1], [1, 4, 0]])
    return RankedLists(np.array([10, 11, 12, 13]), items, np.zeros(items.shape, np.float32))


def _run(lists, features=GENRES, **kw):
    return beyond_accuracy(
        lists,
        [2, 3],
        train_popularity=POP,
        n_train_users=7,
        item_features=features,
        n_items=6,
        **kw,
    )


def test_hand_computed_values(lists):
    df, glob = _run(lists)
    expected = {
        # novelty: mean bits of the listed items; user 12 has no item and scores 0
        "novelty@2": [(0 + 1) / 2, 3, 0, (1 + 1) / 2],
        "novelty@3": [(0 + 1 + 2) / 3, 3, 0, (1 + 1 + 0) / 3],
        # ARP: mean training users of the listed items
        "arp@2": [(7 + 3) / 2, 0, 0, (3 + 3) / 2],
        "arp@3": [(7 + 3 + 1) / 3, 0, 0, (3 + 3 + 7) / 3],
        # ILD: mean pairwise 1 - cos; fewer than 2 items -> 0
        "ild@2": [1 - R2, 0, 0, 1 - 1],
        "ild@3": [((1 - R2) + 1 + 1) / 3, 0, 0, (0 + (1 - R2) + (1 - R2)) / 3],
    }
    for col, values in expected.items():
        np.testing.assert_allclose(df[col].to_numpy(), values, atol=1e-12, err_msg=col)
    assert list(df.index) == [10, 11, 12, 13]
    # coverage@2: {0, 1, 3, 4} of 6 items; @3 adds item 2
    assert glob["coverage@2"] == pytest.approx(4 / 6)
    assert glob["coverage@3"] == pytest.approx(5 / 6)
    # gini@2: counts [1, 2, 0, 1, 1, 0] sorted [0, 0, 1, 1, 1, 2]; weights 2j - 7 =
    # [-5, -3, -1, 1, 3, 5]: (-1 + 1 + 3 + 10) / ((6 - 1) * 5) = 13 / 25
    assert glob["gini@2"] == pytest.approx(13 / 25)
    # gini@3: counts [2, 2, 1, 1, 1, 0] sorted [0, 1, 1, 1, 2, 2]:
    # (-3 - 1 + 1 + 6 + 10) / (5 * 7) = 13 / 35
    assert glob["gini@3"] == pytest.approx(13 / 35)


def test_sparse_features_and_metric_selection(lists):
    dense, _ = _run(lists)
    sparse, glob = _run(lists, features=sp.csr_matrix(GENRES), metrics=["ild", "gini"])
    assert list(sparse.columns) == ["ild@2", "ild@3"] and list(glob) == ["gini@2", "gini@3"]
    np.testing.assert_allclose(sparse.to_numpy(), dense[["ild@2", "ild@3"]].to_numpy())
    no_features, _ = _run(lists, features=None)
    assert not any(c.startswith("ild") for c in no_features.columns)
    with pytest.raises(ValueError, match="item_features"):
        _run(lists, features=None, metrics=["ild"])
    with pytest.raises(ValueError, match="known"):
        _run(lists, metrics=["serendipity"])


def test_item_without_features_is_at_distance_one():
    lists = RankedLists(np.array([0]), np.array([[5, 0]]), np.zeros((1, 2), np.float32))
    df, _ = _run(lists)
    assert df.loc[0, "ild@2"] == pytest.approx(1.0)


def test_ild_matches_brute_force_on_text_vectors():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((40, 8))
    vectors[3] = 0.0
    items = np.array([rng.permutation(40)[:6] for _ in range(30)])
    items[0, 4:] = -1
    items[1, 1:] = -1
    lists = RankedLists(np.arange(30), items, np.zeros(items.shape, np.float32))
    df, _ = beyond_accuracy(
        lists,
        [4, 6],
        train_popularity=np.ones(40),
        n_train_users=5,
        item_features=vectors,
        n_items=40,
        metrics=["ild"],
    )
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    for k in (4, 6):
        for r in range(30):
            listed = [i for i in items[r, :k] if i >= 0]
            dist = [1 - unit[a] @ unit[b] for x, a in enumerate(listed) for b in listed[x + 1 :]]
            expected = np.mean(dist) if dist else 0.0
            assert df.loc[r, f"ild@{k}"] == pytest.approx(expected, abs=1e-12)


def test_novelty_of_unseen_items_is_finite_and_largest():
    lists = RankedLists(np.array([0]), np.array([[3]]), np.zeros((1, 1), np.float32))
    df, _ = _run(lists, features=None, metrics=["novelty"])
    assert df.loc[0, "novelty@2"] == pytest.approx(np.log2(8))


def test_gini_extremes():
    assert gini_index(np.array([5, 5, 5, 5])) == pytest.approx(0.0)
    assert gini_index(np.array([0, 0, 0, 9])) == pytest.approx(1.0)
    assert np.isnan(gini_index(np.zeros(4)))


def test_bad_inputs_raise(lists):
    with pytest.raises(ValueError, match="one per item"):
        beyond_accuracy(lists, [2], train_popularity=np.ones(5), n_train_users=7, n_items=6)
    with pytest.raises(ValueError, match="outside"):
        beyond_accuracy(lists, [2], train_popularity=np.ones(3), n_train_users=7, n_items=3)
