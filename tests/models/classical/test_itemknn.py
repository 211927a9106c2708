from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recarena.models.base import TrainingData
from recarena.models.classical.itemknn import ItemKNN, _weight_user_item, item_similarity
from tests.models.conformance import RecommenderConformance

# 4 users x 4 items, written out by hand
X = np.array(
    [
        [1, 1, 0, 0],
        [1, 1, 1, 0],
        [0, 1, 1, 0],
        [0, 0, 1, 1],
    ],
    dtype=np.float32,
)


def _data(matrix: np.ndarray) -> TrainingData:
    users, items = np.nonzero(matrix)
    frame = pd.DataFrame({"user": users.astype(np.int32), "item": items.astype(np.int32)})
    return TrainingData(frame, n_users=matrix.shape[0], n_items=matrix.shape[1])


class TestItemKNN(RecommenderConformance):
    def make_model(self, seed: int = 0):
        return ItemKNN(k=20, shrink=5.0)

    def test_similarity_by_hand_with_shrink_and_top_k(self):
        # column norms sqrt(2), sqrt(3), sqrt(3), 1; co-occurrences 01:2 02:1 12:2 23:1
        s01 = 2 / (np.sqrt(2) * np.sqrt(3) + 1)  # 0.5798
        s02 = 1 / (np.sqrt(2) * np.sqrt(3) + 1)  # 0.2899
        s12 = 2 / (np.sqrt(3) * np.sqrt(3) + 1)  # 0.5
        s23 = 1 / (np.sqrt(3) * 1 + 1)  # 0.3660
        full = np.array(
            [
                [0, s01, s02, 0],
                [s01, 0, s12, 0],
                [s02, s12, 0, s23],
                [0, 0, s23, 0],
            ]
        )
        model = ItemKNN(k=3, shrink=1.0).fit(_data(X))
        np.testing.assert_allclose(model.similarity_.toarray(), full, rtol=1e-6)
        # k=1: each target item (column) keeps its single best neighbour
        pruned = np.zeros((4, 4))
        pruned[1, 0] = s01  # item 0: item 1 (0.58) beats item 2 (0.29)
        pruned[0, 1] = s01  # item 1: item 0 (0.58) beats item 2 (0.5)
        pruned[1, 2] = s12  # item 2: item 1 (0.5) beats item 3 (0.37) and item 0 (0.29)
        pruned[2, 3] = s23  # item 3: its only neighbour
        model = ItemKNN(k=1, shrink=1.0).fit(_data(X))
        np.testing.assert_allclose(model.similarity_.toarray(), pruned, rtol=1e-6)
        # user 3 knows items 2 and 3: only item 3 has a kept neighbour among them
        np.testing.assert_allclose(model.score(np.array([3])), [[0, 0, 0, s23]], rtol=1e-6)
        # user 0 knows items 0 and 1
        np.testing.assert_allclose(model.score(np.array([0])), [[s01, s01, s12, 0]], rtol=1e-6)

    def test_without_normalising_uses_co_occurrence(self):
        model = ItemKNN(k=3, shrink=100.0, normalise=False).fit(_data(X))
        expected = X.T @ X
        np.fill_diagonal(expected, 0)
        np.testing.assert_allclose(model.similarity_.toarray(), expected)

    def test_blocks_give_the_same_similarity(self, monkeypatch):
        rng = np.random.default_rng(0)
        matrix = sp.csr_matrix((rng.random((40, 30)) < 0.2).astype(np.float32))
        whole = item_similarity(matrix, k=5, shrink=2.0).toarray()
        # 7 items a block
        monkeypatch.setattr("recarena.models.classical.itemknn._BLOCK_CELLS", 30 * 7)
        blocked = item_similarity(matrix, k=5, shrink=2.0).toarray()
        np.testing.assert_allclose(blocked, whole)
        assert ((whole > 0).sum(axis=0) <= 5).all()

    def test_tfidf_and_bm25_weighting(self):
        matrix = sp.csr_matrix(X)
        tfidf, history = _weight_user_item(matrix, "tfidf")
        assert history is None
        activity = X.sum(axis=1)
        idf = np.maximum(np.log(4 / (1 + activity)), 0)
        np.testing.assert_allclose(tfidf.toarray(), X * idf[:, None], rtol=1e-6)
        bm25, history = _weight_user_item(matrix, "bm25")
        pop = X.sum(axis=0)
        norm = 0.25 + 0.75 * pop / pop.mean()
        item_part = 2.2 / (1.2 * norm + 1)
        np.testing.assert_allclose(bm25.toarray(), X * idf[:, None] * item_part[None, :], rtol=1e-5)
        np.testing.assert_allclose(history, item_part, rtol=1e-6)
        with pytest.raises(ValueError, match="feature_weighting"):
            _weight_user_item(matrix, "idf")  # type: ignore[arg-type]

    @pytest.mark.parametrize("weighting", ["tfidf", "bm25"])
    def test_weighted_variants_recover_planted(self, weighting, planted):
        dataset, split = planted
        from tests.models.conformance import _training_data

        data = _training_data(dataset, split.fit_interactions("valid"))
        model = ItemKNN(feature_weighting=weighting).fit(data)
        users = split.eval_users("valid")
        lists = model.recommend(users, 5)
        cluster_item = np.array([int(str(r)[1:].split("_")[0]) for r in dataset.item_ids])
        cluster_user = np.array([int(str(r)[1:].split("_")[0]) for r in dataset.user_ids])
        assert (cluster_item[lists.items] == cluster_user[users][:, None]).mean() > 0.9
        cand = np.tile(np.arange(12), (len(users), 1))
        np.testing.assert_allclose(
            model.score(users, cand), model.score(users)[:, :12], rtol=1e-5, atol=1e-7
        )

    def test_n_parameters_counts_kept_similarities(self, fitted):
        model, data = fitted
        total, trainable = model.n_parameters()
        assert total == trainable == model.similarity_.nnz <= 20 * data.n_items

    def test_bad_parameters(self):
        with pytest.raises(ValueError, match="k must be"):
            ItemKNN(k=0).fit(_data(X))


def test_update_history_scores_the_new_rows_with_the_same_similarities():
    model = ItemKNN(k=3, shrink=0.0, feature_weighting="bm25").fit(_data(X))
    similarity = model.similarity_.toarray()
    grown = X.copy()
    grown[3, 0] = 1.0  # user 3 gains item 0
    model.update_history(_data(grown))
    np.testing.assert_array_equal(model.similarity_.toarray(), similarity)
    expected = (grown * model.history_weights_[None, :]) @ similarity
    np.testing.assert_allclose(model.score(np.arange(4)), expected, rtol=1e-5)
