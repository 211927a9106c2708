from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recarena.models.base import Recommender, TrainingData
from recarena.models.classical.implicit_mf import ALS, BPR
from tests.models.conformance import RecommenderConformance, _training_data


def _block_data(n_blocks: int = 4, users_per: int = 25, items_per: int = 15, seed: int = 0):
    """Users who interact with a random 60% of their own block's items and nothing else."""
    rng = np.random.default_rng(seed)
    rows = []
    for blk in range(n_blocks):
        for u in range(users_per):
            picks = np.flatnonzero(rng.random(items_per) < 0.6)
            rows += [(blk * users_per + u, blk * items_per + i) for i in picks]
    frame = pd.DataFrame(rows, columns=["user", "item"]).astype(np.int32)
    return TrainingData(frame, n_users=n_blocks * users_per, n_items=n_blocks * items_per)


class _PlantedMF:
    """Extra checks shared by the two implicit wrappers."""

    def test_recovers_block_structure(self):
        data = _block_data()
        model = self.make_model(seed=1).fit(data)
        lists = model.recommend(np.arange(data.n_users), 3)
        assert ((lists.items // 15) == (lists.users // 25)[:, None]).mean() >= 0.95

    def test_same_seed_same_factors_other_seed_differs(self):
        data = _block_data()
        a = self.make_model(seed=5).fit(data)
        b = self.make_model(seed=5).fit(data)
        c = self.make_model(seed=6).fit(data)
        np.testing.assert_array_equal(a.user_factors_, b.user_factors_)
        np.testing.assert_array_equal(a.item_factors_, b.item_factors_)
        assert not np.array_equal(a.item_factors_, c.item_factors_)

    def test_scores_match_implicit_recommend(self):
        data = _block_data()
        model = self.make_model(seed=2).fit(data)
        implicit_model = self.implicit_twin(model)
        users = np.arange(0, data.n_users, 9)
        ids, scores = implicit_model.recommend(
            users, data.csr()[users], N=10, filter_already_liked_items=True
        )
        ours = model.score(users)
        np.testing.assert_allclose(
            np.take_along_axis(ours, ids, axis=1), scores, rtol=1e-5, atol=1e-6
        )
        lists = model.recommend(users, 10)
        np.testing.assert_allclose(lists.scores, scores, rtol=1e-5, atol=1e-6)

    def test_no_blas_threadpool_warning(self):
        data = _block_data()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            self.make_model().fit(data)

    def test_no_blas_threadpool_warning_in_a_fresh_process(self):
        # implicit warns once per process, at its first model: check a process where this
        # fit is the first thing that loads implicit (and the BLAS libraries it pulls in)
        code = (
            "import numpy as np, pandas as pd\n"
            "from recarena.models.base import TrainingData\n"
            "from recarena.models.classical.implicit_mf import ALS, BPR\n"
            "f = pd.DataFrame({'user': [0, 0, 1, 2], 'item': [0, 1, 1, 2]}).astype(np.int32)\n"
            f"{type(self.make_model()).__name__}(factors=4, iterations=2)"
            ".fit(TrainingData(f, n_users=3, n_items=3))\n"
        )
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"}
        done = subprocess.run(
            [sys.executable, "-W", "error", "-c", code],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert "threads" not in done.stderr, done.stderr

    def test_state_is_plain_arrays(self, fitted, tmp_path):
        model, _ = fitted
        state = {k: v for k, v in vars(model).items() if k.endswith("_")}
        for value in state.values():
            assert isinstance(value, (np.ndarray, sp.spmatrix, int, float))
        model.save(tmp_path / "m")
        assert isinstance(Recommender.load(tmp_path / "m"), type(model))


class TestALS(_PlantedMF, RecommenderConformance):
    def make_model(self, seed: int = 0):
        return ALS(factors=8, iterations=10, seed=seed)

    @staticmethod
    def implicit_twin(model):
        from implicit.cpu.als import AlternatingLeastSquares

        twin = AlternatingLeastSquares(factors=model.factors)
        twin.user_factors, twin.item_factors = model.user_factors_, model.item_factors_
        return twin

    def test_deterministic_with_several_threads(self, planted):
        dataset, split = planted
        data = _training_data(dataset, split.fit_interactions("valid"))
        a = ALS(factors=8, iterations=5, seed=3, num_threads=2).fit(data)
        b = ALS(factors=8, iterations=5, seed=3, num_threads=2).fit(data)
        np.testing.assert_array_equal(a.item_factors_, b.item_factors_)

    def test_cold_user_and_item_get_zero_factors(self, planted):
        dataset, split = planted
        train = split.fit_interactions("valid")
        train = train[(train["user"] != 0) & (train["item"] != 0)]
        model = ALS(factors=8, iterations=5).fit(_training_data(dataset, train))
        assert not model.user_factors_[0].any() and not model.item_factors_[0].any()
        assert np.all(model.score(np.array([0])) == 0.0)

    def test_n_parameters(self, fitted):
        model, data = fitted
        assert model.n_parameters()[0] == (data.n_users + data.n_items) * 8

    def test_update_history_folds_in_changed_users_by_least_squares(self):
        """A changed user's factors solve (Y^T C_u Y + reg I) x = Y^T C_u p_u, items fixed."""
        data = _block_data()
        model = ALS(factors=8, iterations=10, alpha=3.0, regularization=2.0, seed=0).fit(data)
        items, before = model.item_factors_.copy(), model.user_factors_.copy()
        frame = data.interactions
        extra = pd.DataFrame({"user": [0, 0, 30], "item": [14, 20, 59]}).astype(np.int32)
        grown = pd.concat([frame, extra]).sort_values("user", kind="stable")
        new = TrainingData(grown.reset_index(drop=True), data.n_users, data.n_items)
        model.update_history(new)
        np.testing.assert_array_equal(model.item_factors_, items)
        unchanged = np.setdiff1d(np.arange(data.n_users), [0, 30])
        np.testing.assert_array_equal(model.user_factors_[unchanged], before[unchanged])
        y = items.astype(np.float64)
        for user in (0, 30):
            row = new.csr()[user].indices
            confidence = np.ones(data.n_items)
            confidence[row] = 3.0
            preference = np.zeros(data.n_items)
            preference[row] = 1.0
            a = y.T @ (confidence[:, None] * y) + 2.0 * np.eye(8)
            expected = np.linalg.solve(a, y.T @ (confidence * preference))
            np.testing.assert_allclose(model.user_factors_[user], expected, rtol=1e-3, atol=1e-4)
            assert not np.allclose(model.user_factors_[user], before[user])


class TestBPR(_PlantedMF, RecommenderConformance):
    def make_model(self, seed: int = 0):
        return BPR(factors=8, iterations=60, learning_rate=0.05, seed=seed)

    @staticmethod
    def implicit_twin(model):
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        twin = BayesianPersonalizedRanking(factors=model.factors)
        twin.user_factors, twin.item_factors = model.user_factors_, model.item_factors_
        return twin

    def test_bias_column_layout(self, fitted):
        model, data = fitted
        assert model.user_factors_.shape == (data.n_users, 9)
        assert model.item_factors_.shape == (data.n_items, 9)
        np.testing.assert_array_equal(model.user_factors_[:, -1], 1.0)

    def test_cold_user_scores_by_item_bias(self, planted):
        dataset, split = planted
        train = split.fit_interactions("valid")
        train = train[(train["user"] != 0) & (train["item"] != 0)]
        model = self.make_model().fit(_training_data(dataset, train))
        np.testing.assert_array_equal(model.user_factors_[0, :-1], 0.0)
        np.testing.assert_allclose(model.score(np.array([0]))[0], model.item_factors_[:, -1])
        assert not model.item_factors_[0].any()

    def test_n_parameters_skips_constant_user_column(self, fitted):
        model, data = fitted
        assert model.n_parameters()[0] == data.n_users * 8 + data.n_items * 9

    def test_cannot_take_in_new_histories_without_training(self, fitted):
        model, data = fitted
        assert model.history_use == "trained" and not model.updates_history()

    def test_single_thread_is_the_default(self):
        # several Hogwild threads race: the same seed would no longer give the same model
        assert BPR().num_threads == 1
