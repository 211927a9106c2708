from __future__ import annotations

import numpy as np

from recarena.models.classical.baselines import MostPopular, RandomRecommender
from tests.models.conformance import RecommenderConformance


class TestRandom(RecommenderConformance):
    personalised = False

    def make_model(self, seed: int = 0):
        return RandomRecommender(seed=seed)


class TestMostPopular(RecommenderConformance):
    personalised = False

    def make_model(self, seed: int = 0):
        return MostPopular()

    def test_orders_by_popularity(self, fitted):
        model, data = fitted
        pop = data.item_popularity
        lists = model.recommend(np.array([0]), 5, exclude_seen=False)
        top = lists.items[0]
        assert (pop[top] == np.sort(pop)[::-1][:5]).all()
