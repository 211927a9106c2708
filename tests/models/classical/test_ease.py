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
            EASE(solver="cholesky").fit(data)

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


# --------------------------------------------------------------------------- dual solver
def _wide_data(seed: int = 0) -> tuple[TrainingData, np.ndarray]:
    """30 users (the last without history) x 200 items (the last 10 never interacted):
    a catalog of the shape where the dual solver pays."""
    rng = np.random.default_rng(seed)
    matrix = (rng.random((30, 200)) < 0.08).astype(np.float64)
    matrix[-1] = 0.0
    matrix[:, -10:] = 0.0
    return _data(matrix), matrix


class TestEASEDual(RecommenderConformance):
    def make_model(self, seed: int = 0):
        return EASE(l2=10.0, solver="dual")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("l2", [0.5, 20.0, 2000.0])
def test_dual_solver_matches_the_direct_solution(dtype, l2):
    data, matrix = _wide_data()
    model = EASE(l2=l2, dtype=dtype, solver="dual").fit(data)
    assert model.solver_ == "dual" and "weights_" not in vars(model)  # kept factored
    assert model.factors_.shape == (200, 30) and model.factors_.dtype == np.dtype(dtype)
    weights = model.weights()
    assert weights.dtype == np.float32
    p = np.linalg.inv(matrix.T @ matrix + l2 * np.eye(200))
    expected = np.eye(200) - p / np.diag(p)[None, :]
    scale = np.abs(expected).max()
    tolerance = 1e-9 if dtype == "float64" else 2e-5
    assert np.abs(weights - expected).max() <= tolerance * scale + 1e-7
    assert np.all(np.diag(weights) == 0.0)
    assert np.all(weights[:, -10:] == 0.0)  # items without interactions: zero columns
    cholesky = EASE(l2=l2, dtype=dtype, solver="cholesky").fit(_wide_data()[0])
    assert cholesky.solver_ == "cholesky" and cholesky.factors_ is None
    np.testing.assert_array_equal(cholesky.weights(), cholesky.weights_)
    # the scores from the factors are the history times B, seen items included
    users = np.arange(30)
    exact = (matrix @ expected).astype(np.float32)
    score_scale = np.abs(exact).max()
    np.testing.assert_allclose(
        model._score(users, None), exact, atol=(tolerance * 10 + 1e-6) * score_scale
    )
    np.testing.assert_allclose(model.score(users), cholesky.score(users), atol=1e-4 * score_scale)
    # candidates (seen ones among them) score as the same columns of the full scores
    rng = np.random.default_rng(1)
    candidates = rng.integers(0, 200, size=(30, 7))
    np.testing.assert_allclose(
        model._score(users, candidates),
        np.take_along_axis(model._score(users, None), candidates, axis=1),
        rtol=1e-5,
        atol=1e-6 * score_scale,
    )


def test_auto_takes_the_dual_only_where_it_is_far_cheaper():
    from recarena.models.classical.ease import dual_is_cheaper

    assert dual_is_cheaper(1_892, 17_632)  # Last.fm HetRec's shape
    assert not dual_is_cheaper(943, 1_682)  # MovieLens-100k: the Cholesky solve of before
    assert not dual_is_cheaper(6_040, 3_706)  # MovieLens-1M
    wide = EASE(l2=10.0).fit(_wide_data()[0])
    assert wide.solver_ == "dual" and wide.cost_record()["solver"] == "dual"
    assert EASE(l2=10.0).fit(_data(X)).solver_ == "cholesky"
    with pytest.raises(ValueError, match="'auto', 'cholesky' or 'dual'"):
        EASE(solver="woodbury").check_params()


def test_a_dual_grid_decomposes_the_user_gram_matrix_once(monkeypatch):
    import recarena.models.classical.ease as ease

    calls = []
    real = ease.scipy.linalg.eigh
    monkeypatch.setattr(ease.scipy.linalg, "eigh", lambda *a, **k: calls.append(1) or real(*a, **k))
    data = _wide_data()[0]
    fits = [EASE(l2=l2, solver="dual").fit(data) for l2 in (10.0, 100.0, 10.0)]
    assert len(calls) == 1
    assert np.array_equal(fits[0].factors_, fits[2].factors_)
    assert np.array_equal(
        fits[1].factors_, EASE(l2=100.0, solver="dual").fit(_wide_data()[0]).factors_
    )
    assert len(calls) == 2  # other data: decomposed again


def test_the_dual_solver_is_not_bounded_by_the_dense_catalog_limit():
    """max_items bounds the n_items x n_items matrix of the Cholesky solve; the dual forms
    none (its factors are n_items x n_users), so a catalog above the limit fits."""
    n = 50_000
    frame = pd.DataFrame({"user": [0, 0, 1], "item": [3, n - 1, 3]})
    data = TrainingData(frame, n_users=2, n_items=n)
    with pytest.raises(ConfigError, match=r"50,000 x 50,000 .*15\.0 GB"):
        EASE(dtype="float32", solver="cholesky").fit(data)
    model = EASE(l2=1.0, dtype="float32", solver="dual").fit(data)
    assert model.factors_.shape == (n, 2)
    scores = model.score(np.array([1]))
    # user 1 (item 3) is close to item n - 1 through user 0: the one positive unseen score
    assert scores[0, n - 1] > 0 and np.count_nonzero(scores[0] > 0) == 1


def test_a_model_saved_before_the_factored_form_loads_and_scores_the_same(tmp_path):
    """A dense model saved before the dual solver existed has ``weights_`` and no
    ``factors_`` in its state: it loads and scores from the dense weights."""
    import pickle

    from recarena.models.base import Recommender

    data = _wide_data()[0]
    model = EASE(l2=10.0, solver="cholesky").fit(data)
    model.save(tmp_path / "m")
    state_path = tmp_path / "m" / "state.pkl"
    state = pickle.loads(state_path.read_bytes())
    old = {k: v for k, v in state.items() if k not in ("factors_", "self_weight_", "denominator_")}
    state_path.write_bytes(pickle.dumps(old))
    loaded = Recommender.load(tmp_path / "m")
    users = np.arange(30)
    np.testing.assert_array_equal(loaded.score(users), model.score(users))
    np.testing.assert_array_equal(loaded.weights(), model.weights_)
    # and a factored model round-trips through save and load
    dual = EASE(l2=10.0, solver="dual").fit(data)
    dual.save(tmp_path / "d")
    np.testing.assert_array_equal(Recommender.load(tmp_path / "d").score(users), dual.score(users))
