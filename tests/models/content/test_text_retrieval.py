from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recarena.errors import DataError
from recarena.models.base import TrainingData
from recarena.models.content.text_retrieval import (
    BM25Recommender,
    TfidfRecommender,
    _history_weights,
    bm25_weights,
)
from tests.models.conformance import RecommenderConformance

TEXTS = [
    "space rocket launch to the galaxy",  # 0
    "rocket engines and galaxy maps",  # 1: shares rocket, galaxy with 0
    "baking bread in a home kitchen",  # 2
    "kitchen knives for baking",  # 3
    "football league results",  # 4: nobody has seen it (cold)
    "space galaxy rocket documentary",  # 5: cold, shares words with 0
]


def _data(rows, n_users=3, texts=TEXTS, timestamps=None) -> TrainingData:
    frame = pd.DataFrame(rows, columns=["user", "item"]).astype(np.int32)
    if timestamps is not None:
        frame["timestamp"] = np.asarray(timestamps, dtype=np.int64)
    return TrainingData(frame, n_users=n_users, n_items=len(texts), item_text=list(texts))


class _TextChecks:
    def test_shared_words_rank_above_unrelated(self):
        model = self.make_model().fit(_data([(0, 0), (1, 2)]))
        scores = model.score(np.array([0, 1]))
        # user 0 read about rockets: item 1 (shared words) above the kitchen items
        assert scores[0, 1] > scores[0, 2] and scores[0, 1] > scores[0, 3]
        assert scores[0, 2] == pytest.approx(0.0) and scores[0, 4] == pytest.approx(0.0)
        assert scores[1, 3] > max(scores[1, 0], scores[1, 1], scores[1, 4])

    def test_cold_items_are_scored_from_text(self):
        model = self.make_model().fit(_data([(0, 0), (0, 1), (1, 2)]))
        lists = model.recommend(np.array([0]), 1)
        assert lists.items[0, 0] == 5  # never interacted with, but about space rockets

    def test_family_and_text_flag(self):
        assert self.make_model().uses_text and self.make_model().family == "content"

    def test_needs_item_text(self):
        data = _data([(0, 0)])
        data.item_text = None
        with pytest.raises(ValueError, match="needs item text"):
            self.make_model().fit(data)

    def test_empty_text_is_a_clear_error(self):
        with pytest.raises(DataError, match="no usable words"):
            self.make_model().fit(_data([(0, 0)], texts=["", "the", "", "a", "", ""]))

    def test_recency_weighting_prefers_recent_history(self):
        # user 0 read kitchen items first and a rocket item last
        rows = [(0, 2), (0, 3), (0, 0)]
        data = _data(rows, n_users=1, timestamps=[1, 2, 3])
        flat = self.make_model().fit(data).score(np.array([0]))[0]
        recent = self.make_model().set_params(recency_half_life=0.5).fit(data)
        scores = recent.score(np.array([0]))[0]
        assert scores[5] - scores[2] > flat[5] - flat[2]

    def test_cosine_scores_bounded(self, fitted):
        model, data = fitted
        scores = model.score(np.arange(data.n_users))
        assert (scores >= -1e-6).all() and (scores <= 1 + 1e-5).all()


class TestTfidf(_TextChecks, RecommenderConformance):
    # item vectors come from the text alone: new histories give a refit's profiles
    history_update_matches_refit = True

    def make_model(self, seed: int = 0):
        return TfidfRecommender()

    def test_item_vectors_match_scikit_learn(self):
        from sklearn.feature_extraction.text import TfidfVectorizer

        model = self.make_model().fit(_data([(0, 0)]))
        expected = TfidfVectorizer(sublinear_tf=True, stop_words="english").fit_transform(TEXTS)
        np.testing.assert_allclose(model.item_vectors_.toarray(), expected.toarray(), rtol=1e-5)

    def test_min_df_drops_rare_words(self):
        many = TfidfRecommender(min_df=1).fit(_data([(0, 0)]))
        few = TfidfRecommender(min_df=2).fit(_data([(0, 0)]))
        assert len(few.idf_) < len(many.idf_)
        assert many.n_parameters() == (len(many.idf_),) * 2


class TestBM25(_TextChecks, RecommenderConformance):
    # item vectors come from the text alone: new histories give a refit's profiles
    history_update_matches_refit = True

    def make_model(self, seed: int = 0):
        return BM25Recommender()

    def test_bm25_formula_by_hand(self):
        # 3 documents x 2 terms; lengths 3, 1, 2 (avgdl 2); df 2 and 2
        counts = sp.csr_matrix(np.array([[2, 1], [1, 0], [0, 2]], dtype=np.float32))
        weights, idf = bm25_weights(counts, k1=1.2, b=0.75)
        idf_expected = np.log(1 + (3 - 2 + 0.5) / (2 + 0.5))
        np.testing.assert_allclose(idf, [idf_expected, idf_expected])

        def w(tf, length):
            return idf_expected * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * length / 2))

        expected = np.array([[w(2, 3), w(1, 3)], [w(1, 1), 0], [0, w(2, 2)]])
        np.testing.assert_allclose(weights.toarray(), expected, rtol=1e-6)

    def test_b_zero_ignores_length(self):
        counts = sp.csr_matrix(np.array([[1, 0, 0, 0], [1, 1, 1, 1]], dtype=np.float32))
        weights, _ = bm25_weights(counts, k1=1.2, b=0.0)
        assert weights[0, 0] == pytest.approx(weights[1, 0])


def test_history_weights_mean_and_recency():
    frame = pd.DataFrame({"user": [0, 0, 0, 2], "item": [1, 2, 1, 0], "timestamp": [1, 2, 3, 1]})
    data = TrainingData(frame, n_users=3, n_items=3)
    flat = _history_weights(data, None).toarray()
    np.testing.assert_allclose(flat, [[0, 2 / 3, 1 / 3], [0, 0, 0], [1, 0, 0]], rtol=1e-6)
    # half-life 1: latest weighs 1, the one before 0.5, then 0.25
    decayed = _history_weights(data, 1.0).toarray()
    total = 1 + 0.5 + 0.25
    np.testing.assert_allclose(decayed[0], [0, (1 + 0.25) / total, 0.5 / total], rtol=1e-6)
