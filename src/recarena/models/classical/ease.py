"""EASE^R: the closed-form shallow linear autoencoder of Steck (WWW 2019).

One ridge regression of every item on all others, with the self-weight forced to zero,
solved in closed form from the inverse of the regularised item-item Gram matrix. Strong
on MovieLens-size catalogs, but it needs a dense ``n_items x n_items`` weight matrix, so
the catalog size is bounded by memory. Where users are far fewer than items, the same
inverse comes from the user-user Gram matrix (Woodbury's identity, ``solver="dual"``) at
a fraction of the cost.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.sparse as sp

from recarena.errors import ConfigError
from recarena.models.base import (
    Recommender,
    TrainingData,
    is_integer,
    is_number,
    require_param,
    seen_lookup,
)

logger = logging.getLogger(__name__)

#: largest catalog whose Cholesky factorisation may use several BLAS threads (see
#: `_potrf_threads`; 12,000 was checked to work, 16,000 crashed)
_THREADED_POTRF_MAX = 10_000

#: bytes per item^2 at the peak of `EASE.fit`: the Gram matrix / inverse, inverted in
#: place (8 bytes a cell in float64, 4 in float32), plus the float32 weights (a copy in
#: float64, the inverse itself in float32), plus the kept counts of a grid (2 bytes)
_BYTES_PER_CELL = {"float64": 14, "float32": 6}
#: the same for a private fit: the noisy Gram matrix, the noise, the eigenvectors and the
#: inverse
_PRIVATE_BYTES_PER_CELL = {"float64": 32, "float32": 16}
#: largest Gram matrix kept between fits on the same data (bytes): a validation grid then
#: builds it once (`_shared_gram`)
_GRAM_CACHE_BYTES = 4 << 30
#: the solvers of `EASE` (``solver``)
SOLVERS = ("auto", "cholesky", "dual")


def _shared_gram(data: TrainingData, dtype: str) -> np.ndarray:
    """``X^T X`` of ``data`` in ``dtype``, to be overwritten by the caller.

    A validation grid fits EASE once per ``l2`` on one `TrainingData`: the Gram matrix is
    the same each time. So it is kept in ``data.derived`` (freed with the data), as the
    smallest unsigned integers that hold its counts (the matrix is binary, so ``X^T X``
    counts users: uint16 below 65,536 users, a quarter of float64's memory, and exact),
    while that is at most `_GRAM_CACHE_BYTES`; each fit factorises a fresh copy in place.
    """
    key = "ease_gram_counts"
    kept = data.derived.get(key)
    if kept is not None:
        logger.debug("EASE: Gram matrix reused")
        return kept.astype(dtype)
    gram = _gram(data.csr(), dtype)
    counts = np.uint16 if data.n_users < 2**16 else np.uint32
    if gram.size * np.dtype(counts).itemsize <= _GRAM_CACHE_BYTES:
        data.derived[key] = gram.astype(counts)
    return gram


def dual_is_cheaper(n_users: int, n_items: int) -> bool:
    """Whether ``solver="auto"`` takes the dual: its flops, counted generously (an
    ``n_items^2 x n_users`` product, more than scoring every user from the factors,
    ``n_users^2 x n_items``; about ``9 n_users^3`` for the eigendecomposition), are under
    half of the Cholesky inverse's ``n_items^3``. Only catalogs with about three times more
    items than users qualify (not MovieLens-100k: 943 users, 1,682 items)."""
    n_u, n_i = float(n_users), float(n_items)
    return n_i * n_i * n_u + 9.0 * n_u**3 < 0.5 * n_i**3


def _shared_dual(data: TrainingData) -> tuple[np.ndarray, np.ndarray]:
    """The eigendecomposition of the user-user Gram matrix ``K = X X^T = U diag(s) U^T``
    of ``data``, as ``(s, Y^T)`` with ``Y^T = X^T U`` (items x users, float64), kept in
    ``data.derived`` for the next fit on the same data while ``Y^T`` is at most
    `_GRAM_CACHE_BYTES`: every ``l2`` of a grid reuses one decomposition."""
    key = "ease_dual_eigen"
    kept = data.derived.get(key)
    if kept is not None:
        logger.debug("EASE: user-user eigendecomposition reused")
        return kept
    matrix = sp.csr_matrix(data.csr(), dtype=np.float64)
    gram = (matrix @ matrix.T).toarray()
    values, vectors = scipy.linalg.eigh(gram, driver="evd", overwrite_a=True)
    np.maximum(values, 0.0, out=values)  # K is positive semi-definite: rounding only
    by_item = np.asarray(matrix.T @ vectors)  # Y^T = X^T U, items x users, C order
    if by_item.nbytes <= _GRAM_CACHE_BYTES:
        data.derived[key] = (values, by_item)
    return values, by_item


def _dual_factors(
    values: np.ndarray, by_item: np.ndarray, l2: float, dtype: str
) -> tuple[np.ndarray, np.ndarray]:
    """EASE's weights in factored form, from the user-user eigendecomposition
    (`_shared_dual`).

    Woodbury's identity gives ``P = (X^T X + l2 I)^-1 = (I - C) / l2`` with
    ``C = X^T (X X^T + l2 I)^-1 X = Y^T W Y``, ``W = diag(1 / (s + l2))``; so
    ``B_ij = -P_ij / P_jj = C_ij / (1 - C_jj)`` for ``i != j``, that is
    ``B = (C - diag(c)) diag(1 / (1 - c))`` with ``c = diag(C)``. Returned: ``Z^T =
    Y^T W^(1/2)`` (items x users, ``dtype``, C order; ``C = Z^T Z``) and ``c``, computed in
    float64 from ``Y`` (``1 - c_j`` loses digits when ``l2`` is small against an item's
    count). Scoring a user from these costs ``n_users * n_items`` flops, and no
    ``n_items x n_items`` matrix is formed. An item without interactions has ``Y_j = 0``:
    a zero column, as in the Cholesky solve.
    """
    weight = 1.0 / (values + l2)
    diag = np.einsum("jk,jk,k->j", by_item, by_item, weight)  # C_jj in float64
    factors = np.asarray(by_item * np.sqrt(weight)[None, :], dtype=dtype)  # Z^T, C order
    return factors, diag


def _shared_release(data: TrainingData, model: EASE) -> Any:
    """The private Gram release of ``model``'s DP parameters on ``data``
    (`recarena.privacy.gram.release_gram`), kept in ``data.derived`` for the next fit with
    the same release parameters: a grid over ``l2`` is then post-processing of one
    release (one noise draw, one eigendecomposition), not one release per grid point."""
    from recarena.privacy.gram import release_gram

    settings = (
        model.dp_max_items,
        model.dp_epsilon,
        model.dp_delta,
        model.dp_noise_multiplier,
        model.dp_seed,
        model.dtype,
    )
    key = f"ease_private_gram:{settings!r}"
    kept = data.derived.get(key)
    if kept is not None:
        logger.debug("EASE: private Gram release reused")
        return kept
    release = release_gram(
        data.csr(),
        max_items=model.dp_max_items,
        epsilon=model.dp_epsilon,
        delta=model.dp_delta,
        noise_multiplier=model.dp_noise_multiplier,
        seed=model.dp_seed,
        dtype=np.dtype(model.dtype),
    )
    if release.eigenvectors.nbytes <= _GRAM_CACHE_BYTES:
        data.derived[key] = release
    return release


class EASE(Recommender):
    """Embarrassingly Shallow Autoencoder (EASE^R).

    With ``X`` the binary user x item training matrix,

    .. math::

        P = (X^\\top X + \\lambda I)^{-1}, \\qquad
        B_{ij} = -P_{ij} / P_{jj} \\; (i \\ne j), \\qquad B_{jj} = 0,

    which is ``B = I - P diag(1 / diag(P))``, the solution of
    :math:`\\min_B \\lVert X - XB \\rVert_F^2 + \\lambda \\lVert B \\rVert_F^2` subject to
    ``diag(B) = 0``. A user's scores are their history row times ``B``. The inverse is
    computed by Cholesky, in place, in ``dtype`` and the weights kept in float32. The
    Gram matrix is kept with the training data for the next fit on it (a validation grid
    builds it once).

    With far fewer users than items, the dual solver computes the same ``B`` from the
    user-user Gram matrix ``X X^T`` (Woodbury's identity, see `_dual_factors`): one
    eigendecomposition of an ``n_users x n_users`` matrix, shared by every ``l2`` of a
    grid, instead of an ``n_items^3`` inverse per fit, and ``B`` is kept factored
    (``n_items x n_users``), never formed: a user's scores cost ``n_users * n_items``
    flops. On a 17,632-item catalog of 1,892 users it replaces minutes of Cholesky per fit
    with seconds (`benchmarks/bench_ease_large.py`). `weights` returns ``B`` in either
    form.

    Users without history score 0 everywhere; items without interactions get a zero column
    (score 0 for everyone).

    **Differentially private EASE.** ``dp_epsilon`` (a target, with ``dp_delta``) or
    ``dp_noise_multiplier`` fits EASE on a noisy Gram matrix released by the Gaussian
    mechanism (`recarena.privacy.gram`, Analyze Gauss): the privacy unit is one user's
    whole history, a user with more than ``dp_max_items`` items counts with weight
    ``dp_max_items / k`` (so the sensitivity is ``sqrt(m (m + 1) / 2)``), the noise
    multiplier for a target comes from Opacus and the epsilon spent from Opacus's RDP
    accountant (``dp`` in ``cost.json``). The noisy matrix's negative eigenvalues are
    clipped to zero and ``(G + l2 I)^-1`` is computed from its eigendecomposition; every
    ``l2`` of a grid reuses the same release (one noise draw, post-processing). At
    prediction a user's own history is multiplied by the private weights. Not covered by
    the accounting: choosing ``l2`` on validation.

    Parameters
    ----------
    l2
        The L2 regularisation ``lambda`` (default 500). Steck reports values in the hundreds
        to a few thousands for MovieLens/Netflix-size data; larger catalogs and denser data
        want larger values. ``param_grid`` spans 50 to 2000.
    max_items
        Largest catalog accepted by the Cholesky solve (default 40,000). The fit needs
        about ``14 * n_items**2`` bytes in float64 (22 GB for 40k items), ``6 *
        n_items**2`` in float32; above this a `ConfigError` says how much and suggests
        ItemKNN or a matrix factorisation instead. Raise it on a machine with more memory.
        The dual solver forms no ``n_items x n_items`` matrix (about ``16 * n_items *
        n_users`` bytes) and is not bounded by it.
    dtype
        Precision of the Gram matrix and its inverse: ``"float64"`` (default) or
        ``"float32"``, half the memory and faster (`benchmarks/bench_ease_large.py`
        measures both on a 17,632-item catalog).
    solver
        ``"cholesky"`` (the item-item inverse), ``"dual"`` (the user-user
        eigendecomposition; always float64 for the decomposition, ``dtype`` for the
        factors and the scores) or ``"auto"`` (default): the dual where it has under half the
        Cholesky's flops (`dual_is_cheaper`: about three times more items than users),
        else Cholesky. The one used is recorded (``solver`` in ``cost.json``). A private
        fit uses its own eigendecomposition of the noisy Gram matrix instead.
    dp_epsilon, dp_delta
        Target privacy of a private fit (None: not private; ``dp_delta`` defaults to
        ``1 / n_users**1.1``).
    dp_noise_multiplier
        The Gaussian noise's standard deviation in units of the sensitivity, in place of a
        target epsilon.
    dp_max_items
        The contribution bound of one user (default 50): a user with more items is
        weighted down to count as this many. Larger keeps more of heavy users' data and
        adds proportionally more noise; smaller bounds do better at small epsilons (on
        MovieLens-100k's validation, 25 to 50 at epsilon 8, 10 at epsilon 1). The noise
        is large against the Gram matrix, so the best ``l2`` is far larger than without
        privacy (thousands to 10^5 there).
    dp_seed
        Seeds the noise (training seeds do not: EASE runs once).

    Attributes
    ----------
    dp_
        A private fit's record: epsilon spent, delta, noise multiplier and standard
        deviation, sensitivity, users weighted down, negative eigenvalues clipped.

    References
    ----------
    Harald Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019.
    Cynthia Dwork, Kunal Talwar, Abhradeep Thakurta and Li Zhang, "Analyze Gauss: Optimal
    Bounds for Privacy-Preserving Principal Component Analysis", STOC 2014.
    """

    param_grid = {"l2": [50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0]}
    # scores are the history row of seen_ times B, read at scoring time
    history_use = "interactions"
    cost_attributes = (*Recommender.cost_attributes, "solver_", "dp_")
    #: options added after runs were saved, off at these values (`Recommender.neutral_params`;
    #: ``"auto"`` is the Cholesky solve of before on every catalog with more than about a
    #: third as many users as items)
    neutral_params = {
        "dtype": "float64",
        "solver": "auto",
        "dp_epsilon": None,
        "dp_delta": None,
        "dp_noise_multiplier": None,
        "dp_max_items": 50,
        "dp_seed": 0,
    }

    def __init__(
        self,
        l2: float = 500.0,
        max_items: int = 40_000,
        dtype: str = "float64",
        solver: str = "auto",
        dp_epsilon: float | None = None,
        dp_delta: float | None = None,
        dp_noise_multiplier: float | None = None,
        dp_max_items: int = 50,
        dp_seed: int = 0,
    ) -> None:
        self.l2 = l2
        self.max_items = max_items
        self.dtype = dtype
        self.solver = solver
        self.dp_epsilon = dp_epsilon
        self.dp_delta = dp_delta
        self.dp_noise_multiplier = dp_noise_multiplier
        self.dp_max_items = dp_max_items
        self.dp_seed = dp_seed

    def check_params(self) -> None:
        """``l2`` a positive number, ``max_items`` a positive integer."""
        require_param(
            self,
            "l2",
            is_number(self.l2) and self.l2 > 0,
            "a positive number (it keeps X^T X + l2 I invertible)",
        )
        require_param(
            self,
            "max_items",
            is_integer(self.max_items) and self.max_items >= 1,
            "a positive integer",
        )
        require_param(self, "dtype", self.dtype in _BYTES_PER_CELL, "'float64' or 'float32'")
        require_param(self, "solver", self.solver in SOLVERS, "'auto', 'cholesky' or 'dual'")
        from recarena.privacy.params import dp_problems

        for name in ("dp_epsilon", "dp_delta", "dp_noise_multiplier"):
            value = getattr(self, name)
            require_param(self, name, value is None or is_number(value), "a number or None")
        require_param(
            self,
            "dp_max_items",
            is_integer(self.dp_max_items) and self.dp_max_items >= 1,
            "a positive integer",
        )
        require_param(self, "dp_seed", is_integer(self.dp_seed), "an integer")
        problems = dp_problems(self.dp_epsilon, self.dp_delta, self.dp_noise_multiplier, 1.0)
        if problems:
            raise ValueError("EASE differential privacy: " + "; ".join(problems))

    def _private(self) -> bool:
        """Whether this fit is differentially private."""
        return self.dp_epsilon is not None or self.dp_noise_multiplier is not None

    def _fit(self, data: TrainingData, valid: pd.DataFrame | None) -> None:
        n = data.n_items
        private = self._private()
        # one form of the weights per fit: dense (weights_) or factored (factors_)
        vars(self).pop("weights_", None)
        self.factors_ = self.self_weight_ = self.denominator_ = None
        dual = not private and (
            self.solver == "dual" or (self.solver == "auto" and dual_is_cheaper(data.n_users, n))
        )
        if n > self.max_items and not dual:
            # the dual solver forms no n x n matrix: its factors are n_items x n_users
            per_cell = (_PRIVATE_BYTES_PER_CELL if private else _BYTES_PER_CELL)[self.dtype]
            need = per_cell * n * n / 1e9
            raise ConfigError(
                f"EASE needs a dense {n:,} x {n:,} item-item matrix (about {need:,.1f} GB of "
                f"memory) and this catalog has more than max_items={self.max_items:,} items. "
                "Use 'itemknn', 'als' or 'bpr' for large catalogs, filter rare items (k-core), "
                "or raise max_items if this machine has the memory."
            )
        if private:
            release = _shared_release(data, self)
            inverse = release.inverse(float(self.l2), np.dtype(self.dtype))
            diag = np.diag(inverse).copy()
            inverse /= -diag[None, :]
            inverse[np.diag_indices(n)] = 0.0
            self.weights_ = inverse.astype(np.float32, order="C")
            self.dp_ = dict(release.record)
            logger.debug("EASE: %d items, l2=%g, private (%s)", n, self.l2, self.dp_)
            return
        self.solver_ = "dual" if dual else "cholesky"
        if dual:
            # kept factored: scoring reads Z^T and c, and B is never formed (`weights`)
            values, by_item = _shared_dual(data)
            factors, diag = _dual_factors(values, by_item, float(self.l2), self.dtype)
            self.factors_ = factors
            self.self_weight_ = diag.astype(factors.dtype)
            self.denominator_ = (1.0 - diag).astype(factors.dtype)
            logger.debug("EASE: %d items, %d users, l2=%g, dual", n, data.n_users, self.l2)
            return
        gram = _shared_gram(data, self.dtype)
        gram[np.diag_indices(n)] += self.l2
        potrf, potri = scipy.linalg.lapack.get_lapack_funcs(("potrf", "potri"), (gram,))
        # Cholesky factor and inverse in place: no second n x n array (gram.T is the same
        # symmetric matrix, in the Fortran order LAPACK works in place on)
        with _potrf_threads(n):
            factor, info = potrf(gram.T, lower=False, overwrite_a=True)
        if info != 0:
            raise np.linalg.LinAlgError(f"EASE: X^T X + l2 I is not positive definite ({info})")
        inverse, info = potri(factor, lower=False, overwrite_c=True)
        if info != 0:
            raise np.linalg.LinAlgError(f"EASE: inversion failed ({info})")
        _symmetrize_from_upper(inverse)
        diag = np.diag(inverse).copy()
        if inverse.dtype == np.float32:
            # the inverse is symmetric and Fortran-ordered: its transpose is the same
            # matrix in C order, so the weights are computed in place, without a copy
            weights = inverse.T
            weights /= -diag[None, :]
            weights[np.diag_indices(n)] = 0.0
            self.weights_ = np.ascontiguousarray(weights)
        else:
            inverse /= -diag[None, :]
            inverse[np.diag_indices(n)] = 0.0
            self.weights_ = inverse.astype(np.float32, order="C")
        logger.debug("EASE: %d items, l2=%g", n, self.l2)

    def weights(self) -> np.ndarray:
        """The item-item weight matrix ``B`` (float32, zero diagonal) of the fitted model;
        formed here from the factors where the dual solver kept them factored."""
        factors = vars(self).get("factors_")
        if factors is None:
            return self.weights_
        product = factors @ factors.T
        product -= np.diag(self.self_weight_)
        product /= self.denominator_[None, :]
        product[np.diag_indices(len(product))] = 0.0
        return product.astype(np.float32)

    def _score(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        # seen_ is the binary training matrix (set by Recommender.fit, saved with the model)
        history = self.seen_[users]
        if vars(self).get("factors_") is not None:
            return self._score_factored(users, history, items)
        if items is None:
            return np.asarray(history @ self.weights_)
        # score_uj = sum over the user's items i of B[i, j], only at the candidate columns
        out = np.empty(items.shape, dtype=np.float32)
        for row in range(len(users)):
            known = history.indices[history.indptr[row] : history.indptr[row + 1]]
            out[row] = self.weights_[np.ix_(known, items[row])].sum(axis=0)
        return out

    def _score_factored(
        self, users: np.ndarray, history: sp.csr_matrix, items: np.ndarray | None
    ) -> np.ndarray:
        """``history @ B`` from the factors: ``(x Z^T) Z - x * c``, divided by ``1 - c``."""
        factors = self.factors_
        history = sp.csr_matrix(history, dtype=factors.dtype)
        latent = np.asarray(history @ factors)  # users x n_users of training
        if items is None:
            out = latent @ factors.T
            rows = np.repeat(np.arange(history.shape[0]), np.diff(history.indptr))
            out[rows, history.indices] -= history.data * self.self_weight_[history.indices]
            out /= self.denominator_[None, :]
            return out.astype(np.float32, copy=False)
        out = np.empty(items.shape, dtype=factors.dtype)
        # factors[items] is users x candidates x n_users: in chunks of about 64 MB
        step = max(1, (64 << 20) // max(1, items.shape[1] * factors.shape[1] * factors.itemsize))
        for start in range(0, len(items), step):
            chunk = slice(start, start + step)
            out[chunk] = np.einsum("uk,uck->uc", latent[chunk], factors[items[chunk]])
        own = seen_lookup(self.seen_, users, items)  # x_uj at the candidates (binary)
        out -= own * self.self_weight_[items]
        out /= self.denominator_[items]
        return out.astype(np.float32, copy=False)

    def n_parameters(self) -> tuple[int, int]:
        """Off-diagonal weights: ``n_items * (n_items - 1)`` (the dual solver keeps them
        as ``n_items x n_users`` factors, the same matrix)."""
        factors = vars(self).get("factors_")
        n = int((factors if factors is not None else self.weights_).shape[0])
        return n * (n - 1), n * (n - 1)


def _potrf_threads(n: int) -> contextlib.AbstractContextManager[object]:
    """BLAS threads for the Cholesky factorisation of an ``n x n`` matrix.

    OpenBLAS's multi-threaded ``dpotrf`` crashes (segmentation fault in its threaded
    ``dsyrk``) on large matrices: seen here at n = 16,000 with 2 threads, with both numpy's
    and scipy's bundled OpenBLAS 0.3.30 (OpenBLAS issues #1413, #2821). Above
    `_THREADED_POTRF_MAX` the factorisation runs on one thread; it is a third of the fit's
    flops, and the inverse (``dpotri``, which does not crash) keeps every thread.
    """
    if n <= _THREADED_POTRF_MAX:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, "blas")


def _gram(matrix: sp.csr_matrix, dtype: Any = np.float64) -> np.ndarray:
    """Dense ``X^T X`` in ``dtype``, built in column blocks so no large sparse product is
    held (counts are integers: exact in float32 up to 2**24 users)."""
    matrix = sp.csr_matrix(matrix, dtype=dtype)
    n = matrix.shape[1]
    out = np.empty((n, n), dtype=dtype)
    by_item = matrix.T.tocsr()
    by_col = matrix.tocsc()
    block = max(1, min(n, (32 << 20) // max(1, n)))
    for start in range(0, n, block):
        stop = min(n, start + block)
        out[:, start:stop] = (by_item @ by_col[:, start:stop]).toarray()
    return out


def _symmetrize_from_upper(a: np.ndarray, block: int = 256) -> None:
    """Copy the upper triangle of a square array onto its lower triangle, in place."""
    n = a.shape[0]
    for start in range(0, n, block):
        stop = min(n, start + block)
        # rows start:stop, columns < stop: lower part of these rows from the columns above
        lower = np.tril_indices(stop - start, k=-1)
        tile = a[start:stop, start:stop]
        tile[lower] = tile.T[lower]
        if start:
            a[start:stop, :start] = a[:start, start:stop].T
