from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recarena.errors import ConfigError, RecArenaError
from recarena.models.base import TrainingData
from recarena.models.classical.ease import EASE, _symmetrize_from_upper
from tests.models.conformance import RecommenderConformance

# 5 users x 4 items, written out by hand
X = np.array(
    [
        [1, 1, 0, 0],
        [1, 1, 1, 0],
        [0, 1, 1, 0],
        [0, 0, 1, 1],
        [1, 0, 0, 1],
    ],
    dtype=np.float64,
)


def _data(matrix: np.ndarray) -> TrainingData:
    users, items = np.nonzero(matrix)
    frame = pd.DataFrame({"user": users.astype(np.int32), "item": items.astype(np.int32)})
    return TrainingData(frame, n_users=matrix.shape[0], n_items=matrix.shape[1])


class TestEASE(RecommenderConformance):
    def make_model(self, seed: int = 0):
        return EASE(l2=10.0)

    def test_matches_direct_numpy_solution(self):
        l2 = 2.0
        model = EASE(l2=l2).fit(_data(X))
        p = np.linalg.inv(X.T @ X + l2 * np.eye(4))
        expected = np.eye(4) - p / np.diag(p)[None, :]
        np.testing.assert_allclose(np.diag(expected), 0.0, atol=1e-12)
        np.testing.assert_allclose(model.weights_, expected, rtol=1e-5, atol=1e-6)
        assert model.weights_.dtype == np.float32
        np.testing.assert_allclose(model.score(np.arange(5)), X @ expected, rtol=1e-5, atol=1e-6)
        cand = np.array([[3, 0], [2, -1], [0, 1], [1, 2], [2, 3]])
        got = model.score(np.arange(5), cand)
        full = X @ expected
        for u in range(5):
            for c in range(2):
                if cand[u, c] >= 0:
                    assert got[u, c] == pytest.approx(full[u, cand[u, c]], abs=1e-5)

    def test_weights_solve_the_constrained_ridge_problem(self):
        # stationarity of ||X - XB||^2 + l2 ||B||^2 off the diagonal: (G + l2 I) B - G = 0
        l2 = 3.0
        b = EASE(l2=l2).fit(_data(X)).weights_.astype(np.float64)
        g = X.T @ X
        residual = (g + l2 * np.eye(4)) @ b - g
        off = ~np.eye(4, dtype=bool)
        np.testing.assert_allclose(residual[off], 0.0, atol=1e-5)

    def test_too_many_items_is_a_clear_error(self):
        data = _data(X)
        with pytest.raises(ConfigError, match=r"4 x 4.*GB.*max_items=3") as info:
            EASE(max_items=3).fit(data)
        assert isinstance(info.value, RecArenaError)
        assert "itemknn" in str(info.value)

    def test_memory_estimate_for_a_big_catalog(self):
        n = 50_000
        data = TrainingData(pd.DataFrame({"user": [0], "item": [n - 1]}), n_users=1, n_items=n)
        with pytest.raises(ConfigError, match=r"50,000 x 50,000 .*35\.0 GB"):
            EASE().fit(data)

    def test_symmetrize_in_blocks(self):
        rng = np.random.default_rng(0)
        a = rng.random((7, 7))
        expected = np.triu(a) + np.triu(a, 1).T
        _symmetrize_from_upper(a, block=3)
        np.testing.assert_array_equal(a, expected)

    def test_larger_l2_shrinks_weights(self):
        small = EASE(l2=1.0).fit(_data(X)).weights_
        large = EASE(l2=100.0).fit(_data(X)).weights_
        assert np.abs(large).sum() < np.abs(small).sum()

    def test_n_parameters(self, fitted):
        model, data = fitted
        assert model.n_parameters() == (data.n_items * (data.n_items - 1),) * 2


def test_large_catalogs_factorise_on_one_blas_thread(monkeypatch):
    # OpenBLAS's threaded dpotrf crashes on large matrices; above the threshold it runs on
    # one thread, with the same result
    from threadpoolctl import threadpool_info

    from recarena.models import ease

    monkeypatch.setattr(ease, "_THREADED_POTRF_MAX", 3)
    with ease._potrf_threads(4):
        blas = [p for p in threadpool_info() if p["user_api"] == "blas"]
        assert all(p["num_threads"] == 1 for p in blas)
    model = EASE(l2=2.0).fit(_data(X))
    p = np.linalg.inv(X.T @ X + 2.0 * np.eye(4))
    np.testing.assert_allclose(model.weights_, np.eye(4) - p / np.diag(p), rtol=1e-5, atol=1e-6)


def test_update_history_scores_the_new_rows_with_the_same_weights():
    """Not refit: B stays as learned, each user's scores are their new row times B."""
    model = EASE(l2=2.0).fit(_data(X))
    weights = model.weights_.copy()
    grown = X.copy()
    grown[0, 3] = 1.0  # user 0 gains item 3
    model.update_history(_data(grown))
    np.testing.assert_array_equal(model.weights_, weights)
    np.testing.assert_allclose(model.score(np.arange(5)), grown @ weights, rtol=1e-6)
    assert model.history_use == "interactions"


def _random_data(n_users=300, n_items=120, density=0.08, seed=0) -> TrainingData:
    rng = np.random.default_rng(seed)
    return _data((rng.random((n_users, n_items)) < density).astype(np.float64))


def test_float32_solve_agrees_with_float64():
    data = _random_data()
    exact = EASE(l2=50.0).fit(data)
    single = EASE(l2=50.0, dtype="float32").fit(_random_data())
    scale = np.abs(exact.weights_).max()
    assert np.abs(single.weights_ - exact.weights_).max() < 1e-4 * scale
    users = np.arange(50)
    top_exact = np.argsort(-exact.score(users), axis=1)[:, :10]
    top_single = np.argsort(-single.score(users), axis=1)[:, :10]
    overlap = np.mean(
        [len(set(a) & set(b)) / 10 for a, b in zip(top_exact, top_single, strict=True)]
    )
    assert overlap > 0.99
    with pytest.raises(ValueError, match="'float64' or 'float32'"):
        EASE(dtype="float16").check_params()


def test_a_grid_on_one_data_builds_the_gram_matrix_once(monkeypatch):
    import recarena.models.classical.ease as ease

    calls = []
    real = ease._gram
    monkeypatch.setattr(ease, "_gram", lambda *a, **k: calls.append(1) or real(*a, **k))
    data = _random_data()
    fits = [EASE(l2=l2).fit(data) for l2 in (10.0, 100.0, 10.0)]
    assert len(calls) == 1
    # the kept matrix is not the one a fit overwrote: refits give the same weights
    assert np.array_equal(fits[0].weights_, fits[2].weights_)
    assert np.array_equal(fits[1].weights_, EASE(l2=100.0).fit(_random_data()).weights_)
    assert len(calls) == 2  # other data: built again
    # the counts are kept as integers, exact in either precision
    kept = EASE(l2=10.0, dtype="float32").fit(data)
    assert len(calls) == 2 and data.derived["ease_gram_counts"].dtype == np.uint16
    assert np.array_equal(
        kept.weights_, EASE(l2=10.0, dtype="float32").fit(_random_data()).weights_
    )
