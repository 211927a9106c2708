"""A differentially private item-item Gram matrix: the Gaussian mechanism on ``X^T X``.

A linear item-item model (EASE) reads the training data only through the Gram matrix
``G = X^T X`` of the binary user x item matrix. Releasing ``G`` with Gaussian noise on
every entry is the *Analyze Gauss* mechanism (Dwork, Talwar, Thakurta and Zhang, "Analyze
Gauss: optimal bounds for privacy-preserving principal component analysis", STOC 2014),
and anything computed from the noisy matrix (the EASE weights for any ``l2``) is
post-processing, private at the same epsilon.

The privacy unit is one user (add or remove a user's whole history). A user with ``k``
items adds ``x x^T`` to ``G``; its upper triangle (diagonal included) has ``k (k + 1) / 2``
ones. To bound that, a user with more than ``max_items`` items is weighted down by
``max_items / k`` (their row's contribution clipped, no item dropped), so one user moves
the upper triangle by at most ``sqrt(m (m + 1) / 2)`` in L2 norm (``m = max_items``): that
is the sensitivity. Noise of standard deviation ``noise_multiplier * sensitivity`` is added
to each entry of the upper triangle, mirrored below. Users with at most ``max_items`` items
count exactly as in ``X^T X`` (the noisy matrix is in the same units, so ``l2`` means what
it means without privacy).

A target ``(epsilon, delta)`` is turned into the noise multiplier by Opacus's
`get_noise_multiplier` for one release (sampling rate 1, one step), and the epsilon spent
is read from Opacus's `RDPAccountant` for that release: the same accountant as the
DP-SGD models (`recarena.privacy.dp`), so their epsilons compare.

The noisy matrix may have negative eigenvalues; they are set to zero (its projection onto
the positive semi-definite matrices, post-processing), and the eigendecomposition is what
a fit keeps: ``(G + l2 I)^-1 = Q diag(1 / (w + l2)) Q^T`` for every ``l2`` at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from recarena.privacy.params import default_delta, opacus_accountants

#: what the record calls the mechanism
MECHANISM = "Gaussian mechanism on X^T X (Analyze Gauss), eigenvalues clipped at 0"
#: the privacy unit, in the record
PRIVACY_UNIT = "user (the whole training history)"


def gram_sensitivity(max_items: int) -> float:
    """L2 sensitivity of the Gram matrix's upper triangle when one user, weighted down
    to at most ``max_items`` items, is added or removed: ``sqrt(m (m + 1) / 2)``."""
    m = float(max_items)
    return math.sqrt(m * (m + 1.0) / 2.0)


def gram_noise_multiplier(epsilon: float, delta: float) -> float:
    """The noise multiplier of one Gaussian release at ``(epsilon, delta)`` (Opacus)."""
    return float(
        opacus_accountants().utils.get_noise_multiplier(
            target_epsilon=epsilon,
            target_delta=delta,
            sample_rate=1.0,
            steps=1,
            accountant="rdp",
        )
    )


def gram_epsilon(noise_multiplier: float, delta: float) -> float:
    """The epsilon one Gaussian release with this noise multiplier spends (Opacus's RDP
    accountant, at ``delta``)."""
    accountant = opacus_accountants().RDPAccountant()
    accountant.history = [(float(noise_multiplier), 1.0, 1)]
    return float(accountant.get_epsilon(delta=delta))


def user_weights(matrix: sp.csr_matrix, max_items: int) -> np.ndarray:
    """Each user's weight in the Gram matrix: 1, or ``max_items / k`` for ``k`` items."""
    counts = np.diff(matrix.indptr).astype(np.float64)
    return np.minimum(1.0, max_items / np.maximum(counts, 1.0))


@dataclass
class PrivateGram:
    """The eigendecomposition of a released noisy Gram matrix (eigenvalues clipped at 0)
    and what the release spent."""

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    record: dict[str, Any]

    def inverse(self, l2: float, dtype: Any = np.float64) -> np.ndarray:
        """``(G + l2 I)^-1`` of the noisy, projected ``G``, a new array in ``dtype``."""
        q = self.eigenvectors.astype(dtype, copy=False)
        scale = (1.0 / (self.eigenvalues + l2)).astype(dtype)
        return (q * scale[None, :]) @ q.T


def noisy_gram(
    matrix: sp.csr_matrix,
    *,
    max_items: int,
    noise_multiplier: float,
    seed: int = 0,
    dtype: Any = np.float64,
) -> np.ndarray:
    """The weighted Gram matrix of the binary ``matrix`` plus symmetric Gaussian noise of
    standard deviation ``noise_multiplier * gram_sensitivity(max_items)`` on every entry
    of its upper triangle (diagonal included), mirrored below."""
    weights = user_weights(matrix, max_items)
    binary = sp.csr_matrix(matrix, dtype=np.float64, copy=True)
    binary.data[:] = 1.0
    weighted = sp.diags(np.sqrt(weights)) @ binary
    gram = np.asarray((weighted.T @ weighted).toarray(), dtype=dtype)
    n_items = gram.shape[0]
    std = float(noise_multiplier) * gram_sensitivity(max_items)
    noise = np.random.default_rng(seed).normal(0.0, std, size=(n_items, n_items))
    upper = np.triu(noise).astype(dtype, copy=False)
    del noise
    gram += upper
    gram += np.triu(upper, 1).T
    return gram


def release_gram(
    matrix: sp.csr_matrix,
    *,
    max_items: int,
    epsilon: float | None = None,
    delta: float | None = None,
    noise_multiplier: float | None = None,
    seed: int = 0,
    dtype: Any = np.float64,
) -> PrivateGram:
    """The noisy, user-level private Gram matrix of the binary ``matrix`` (see the module
    docstring), as its eigendecomposition. Give the target ``epsilon`` (with ``delta``,
    default `default_delta`) or the ``noise_multiplier``."""
    if (epsilon is None) == (noise_multiplier is None):
        raise ValueError("give epsilon or noise_multiplier (exactly one)")
    n_users = matrix.shape[0]
    delta = default_delta(n_users) if delta is None else float(delta)
    if noise_multiplier is None:
        assert epsilon is not None
        noise_multiplier = gram_noise_multiplier(float(epsilon), delta)
    gram = noisy_gram(
        matrix, max_items=max_items, noise_multiplier=noise_multiplier, seed=seed, dtype=dtype
    )
    eigenvalues, eigenvectors = np.linalg.eigh(gram)
    del gram
    negative = int((eigenvalues < 0).sum())
    eigenvalues = np.maximum(eigenvalues, 0.0)
    weights = user_weights(matrix, max_items)
    sensitivity = gram_sensitivity(max_items)
    record = {
        "epsilon_spent": gram_epsilon(float(noise_multiplier), delta),
        "delta": delta,
        "target_epsilon": None if epsilon is None else float(epsilon),
        "noise_multiplier": float(noise_multiplier),
        "noise_std": float(noise_multiplier) * sensitivity,
        "sensitivity": sensitivity,
        "max_items": int(max_items),
        "users_weighted_down": int((weights < 1.0).sum()),
        "negative_eigenvalues_clipped": negative,
        "sample_rate": 1.0,
        "steps": 1,
        "n_users": int(n_users),
        "privacy_unit": PRIVACY_UNIT,
        "mechanism": MECHANISM,
        "accountant": "opacus RDPAccountant",
        "not_covered": "model selection on validation (the grid point)",
    }
    return PrivateGram(eigenvalues, eigenvectors, record)
