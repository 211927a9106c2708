"""The private Gram release (Analyze Gauss) and the private EASE built on it."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recarena.models.base import TrainingData
from recarena.models.classical import ease as ease_module
from recarena.models.classical.ease import EASE
from recarena.privacy.gram import (
    gram_epsilon,
    gram_noise_multiplier,
    gram_sensitivity,
    noisy_gram,
    release_gram,
    user_weights,
)
from tests.models.conformance import RecommenderConformance

pytest.importorskip("opacus")


def _matrix(n_users: int = 60, n_items: int = 12, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_users, n_items)) < rng.uniform(0.05, 0.9, size=(n_users, 1))).astype(
        np.float64
    )
    dense[np.arange(n_users), rng.integers(0, n_items, n_users)] = 1.0
    return sp.csr_matrix(dense)


def _data(matrix: sp.csr_matrix) -> TrainingData:
    coo = matrix.tocoo()
    frame = pd.DataFrame({"user": coo.row.astype(np.int32), "item": coo.col.astype(np.int32)})
    return TrainingData(frame, n_users=matrix.shape[0], n_items=matrix.shape[1])


def _upper(a: np.ndarray) -> np.ndarray:
    return a[np.triu_indices(a.shape[0])]


@pytest.mark.parametrize("max_items", [1, 3, 7])
def test_one_user_moves_the_upper_triangle_by_at_most_the_sensitivity(max_items):
    # every history of up to 12 items, weighted as the release weights it: the largest
    # change of the upper triangle is the sensitivity, reached by a user of max_items items
    largest = 0.0
    for k in range(1, 13):
        row = sp.csr_matrix(np.r_[np.ones(k), np.zeros(12 - k)][None, :])
        w = user_weights(row, max_items)[0]
        change = np.linalg.norm(_upper(w * row.toarray().T @ row.toarray()))
        assert change <= gram_sensitivity(max_items) + 1e-12
        largest = max(largest, change)
    assert largest == pytest.approx(gram_sensitivity(max_items))


def test_users_within_the_bound_count_exactly_and_heavier_ones_are_weighted_down():
    matrix = _matrix()
    counts = np.diff(matrix.indptr)
    weights = user_weights(matrix, 5)
    np.testing.assert_array_equal(weights[counts <= 5], 1.0)
    np.testing.assert_allclose(weights[counts > 5], 5 / counts[counts > 5])
    # no noise: the weighted Gram matrix itself; no user above the bound: X^T X
    big = int(counts.max())
    exact = noisy_gram(matrix, max_items=big, noise_multiplier=1e-300)
    np.testing.assert_allclose(exact, (matrix.T @ matrix).toarray(), atol=1e-12)


def test_the_noise_is_symmetric_with_the_stated_standard_deviation():
    matrix = sp.csr_matrix((50, 200))
    gram = noisy_gram(matrix, max_items=4, noise_multiplier=0.5, seed=3)
    np.testing.assert_array_equal(gram, gram.T)
    std = 0.5 * gram_sensitivity(4)
    assert np.std(_upper(gram)) == pytest.approx(std, rel=0.02)
    again = noisy_gram(matrix, max_items=4, noise_multiplier=0.5, seed=3)
    np.testing.assert_array_equal(gram, again)
    other = noisy_gram(matrix, max_items=4, noise_multiplier=0.5, seed=4)
    assert not np.array_equal(gram, other)


def test_target_epsilon_is_met_and_recorded_from_a_fresh_accountant():
    from opacus.accountants import RDPAccountant

    matrix = _matrix()
    release = release_gram(matrix, max_items=5, epsilon=4.0, delta=1e-3)
    rec = release.record
    accountant = RDPAccountant()
    accountant.history = [(rec["noise_multiplier"], 1.0, 1)]
    assert rec["epsilon_spent"] == pytest.approx(accountant.get_epsilon(1e-3))
    assert 3.9 <= rec["epsilon_spent"] <= 4.0
    assert rec["target_epsilon"] == 4.0
    assert rec["noise_std"] == pytest.approx(rec["noise_multiplier"] * gram_sensitivity(5))
    # less noise spends more
    assert gram_epsilon(rec["noise_multiplier"] / 2, 1e-3) > 4.0
    assert gram_noise_multiplier(1.0, 1e-3) > gram_noise_multiplier(8.0, 1e-3)
    assert rec["users_weighted_down"] == int((np.diff(matrix.indptr) > 5).sum())


def test_the_release_is_projected_onto_positive_semidefinite_matrices():
    release = release_gram(_matrix(), max_items=5, noise_multiplier=5.0, seed=1)
    assert release.record["negative_eigenvalues_clipped"] > 0
    assert release.eigenvalues.min() == 0.0
    inverse = release.inverse(2.0)
    projected = (release.eigenvectors * release.eigenvalues) @ release.eigenvectors.T
    np.testing.assert_allclose(inverse @ (projected + 2.0 * np.eye(12)), np.eye(12), atol=1e-9)


def test_exactly_one_of_epsilon_and_noise_multiplier():
    with pytest.raises(ValueError, match="exactly one"):
        release_gram(_matrix(), max_items=5)
    with pytest.raises(ValueError, match="exactly one"):
        release_gram(_matrix(), max_items=5, epsilon=1.0, noise_multiplier=1.0)


class TestPrivateEASE(RecommenderConformance):
    def make_model(self, seed: int = 0):
        # the planted users have 10 items each: the bound at their size keeps the noise
        # (std 0.54 x 7.4 = 4 per entry) below the within-cluster co-counts (about 7)
        return EASE(l2=10.0, dp_epsilon=8.0, dp_max_items=10)

    def test_without_noise_it_is_ease(self):
        matrix = _matrix()
        big = int(np.diff(matrix.indptr).max())
        plain = EASE(l2=5.0).fit(_data(matrix))
        private = EASE(l2=5.0, dp_noise_multiplier=1e-12, dp_max_items=big).fit(_data(matrix))
        np.testing.assert_allclose(private.weights_, plain.weights_, atol=1e-5)

    def test_the_record_reaches_the_cost(self):
        model = EASE(l2=5.0, dp_epsilon=8.0, dp_delta=1e-3).fit(_data(_matrix()))
        dp = model.cost_record()["dp"]
        assert dp["target_epsilon"] == 8.0 and dp["epsilon_spent"] <= 8.0
        assert dp["delta"] == 1e-3 and dp["privacy_unit"].startswith("user")
        assert "dp" not in EASE(l2=5.0).fit(_data(_matrix())).cost_record()

    def test_more_noise_moves_the_weights_further(self):
        matrix = _matrix(200, 12)
        plain = EASE(l2=5.0).fit(_data(matrix)).weights_
        far = [
            np.abs(
                EASE(l2=5.0, dp_epsilon=e, dp_max_items=12).fit(_data(matrix)).weights_ - plain
            ).mean()
            for e in (8.0, 0.5)
        ]
        assert far[0] < far[1]

    def test_a_grid_over_l2_reuses_one_release(self, monkeypatch):
        calls = []
        real = ease_module.release_gram if hasattr(ease_module, "release_gram") else None
        assert real is None  # imported lazily inside the fit
        import recarena.privacy.gram as gram_module

        original = gram_module.release_gram

        def counting(*args, **kwargs):
            calls.append(kwargs)
            return original(*args, **kwargs)

        monkeypatch.setattr(gram_module, "release_gram", counting)
        data = _data(_matrix())
        fits = [EASE(l2=l2, dp_epsilon=4.0).fit(data) for l2 in (1.0, 10.0, 100.0)]
        assert len(calls) == 1
        assert not np.array_equal(fits[0].weights_, fits[2].weights_)
        # another seed is another release
        EASE(l2=1.0, dp_epsilon=4.0, dp_seed=1).fit(data)
        assert len(calls) == 2

    @pytest.mark.parametrize(
        ("params", "message"),
        [
            ({"dp_epsilon": 1.0, "dp_noise_multiplier": 1.0}, "both set the noise"),
            ({"dp_epsilon": -1.0}, "positive finite"),
            ({"dp_delta": 1e-3}, "DP is off"),
            ({"dp_epsilon": 1.0, "dp_max_items": 0}, "dp_max_items"),
            ({"dp_epsilon": "eight"}, "dp_epsilon"),
        ],
    )
    def test_bad_parameters_are_named(self, params, message):
        with pytest.raises((ValueError, TypeError), match=message):
            EASE(**params).check_params()


def test_weights_shrink_as_epsilon_grows_to_infinity():
    # the private weights approach EASE's as the noise vanishes
    matrix = _matrix(100, 10)
    big = int(np.diff(matrix.indptr).max())
    plain = EASE(l2=5.0).fit(_data(matrix)).weights_
    gaps = [
        np.abs(
            EASE(l2=5.0, dp_noise_multiplier=s, dp_max_items=big).fit(_data(matrix)).weights_
            - plain
        ).max()
        for s in (1.0, 1e-2, 1e-4)
    ]
    assert all(a > b for a, b in itertools.pairwise(gaps))
