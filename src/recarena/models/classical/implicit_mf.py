"""Matrix factorisation for implicit feedback through the `implicit` library: ALS and BPR.

Only the learned factors are kept (as float32 arrays), never implicit's model objects, so a
fitted model pickles, loads without `implicit` installed and scores with one matrix product:
``user_factors_[users] @ item_factors_.T``, the same scores ``implicit``'s ``recommend``
ranks by.

`implicit` is imported inside ``fit`` (heavy import, native code). Its fit runs under
``threadpoolctl.threadpool_limits(1, "blas")``: implicit parallelises over users itself,
a multi-threaded BLAS underneath it is slower, and implicit warns about it (once per
process) when it sees one. Scoring runs outside that limit, on every BLAS thread.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from recarena.models.base import (
    Recommender,
    TrainingData,
    is_integer,
    is_number,
    require_param,
)

logger = logging.getLogger(__name__)


class _ImplicitFactorModel(Recommender):
    """Shared fit/score plumbing: the subclass builds the implicit model."""

    seed: int
    factors: int
    iterations: int
    regularization: float
    num_threads: int

    def check_params(self) -> None:
        """Positive integer ``factors`` and ``iterations``, ``regularization`` >= 0, and
        ``num_threads`` >= 0; ALS's ``alpha`` and BPR's ``learning_rate`` positive."""
        for name in ("factors", "iterations"):
            value = getattr(self, name)
            require_param(self, name, is_integer(value) and value >= 1, "a positive integer")
        require_param(
            self,
            "regularization",
            is_number(self.regularization) and self.regularization >= 0,
            "a number >= 0",
        )
        require_param(
            self,
            "num_threads",
            is_integer(self.num_threads) and self.num_threads >= 0,
            "an integer >= 0 (0: all cores)",
        )
        for name in ("alpha", "learning_rate"):
            if hasattr(self, name):
                value = getattr(self, name)
                require_param(self, name, is_number(value) and value > 0, "a positive number")

    def _implicit_class(self) -> type:
        """The implicit model class (imported here: heavy, native code)."""
        raise NotImplementedError

    def _implicit_params(self) -> dict[str, Any]:
        raise NotImplementedError

    def _fit(self, data: TrainingData, valid: pd.DataFrame | None) -> None:
        from threadpoolctl import threadpool_limits

        user_items = data.csr().astype(np.float32)
        rng = np.random.default_rng(self.seed)
        name = type(self).__name__

        def log_iteration(iteration: int, seconds: float, *stats: Any) -> None:
            # ALS reports (loss,), BPR (correct, skipped)
            logger.debug("%s iteration %d: %.2fs %s", name, iteration + 1, seconds, stats)

        # import before limiting: a BLAS library loaded inside the block would escape it
        klass = self._implicit_class()
        with threadpool_limits(1, "blas"):
            model = klass(**self._implicit_params(), random_state=rng)
            model.fit(user_items, show_progress=False, callback=log_iteration)
        self.user_factors_ = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        self._fix_cold_rows(data)

    def _fix_cold_rows(self, data: TrainingData) -> None:
        """Give users and items without training data neutral factors (see subclasses)."""

    def _score(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        user_vectors = self.user_factors_[users]
        if items is None:
            return user_vectors @ self.item_factors_.T
        return np.einsum("uf,ucf->uc", user_vectors, self.item_factors_[items])


class ALS(_ImplicitFactorModel):
    """Alternating least squares for implicit feedback (Hu, Koren & Volinsky, ICDM 2008).

    Minimises :math:`\\sum_{u,i} c_{ui} (p_{ui} - x_u^\\top y_i)^2 + \\lambda (\\sum_u
    \\lVert x_u \\rVert^2 + \\sum_i \\lVert y_i \\rVert^2)` over all user-item pairs, with
    preference ``p = 1`` on observed pairs and 0 elsewhere. Wraps
    ``implicit.cpu.als.AlternatingLeastSquares`` (conjugate-gradient solver, Takács et al.,
    RecSys 2011). The training matrix is binary (every interaction is a positive), so every
    observed pair gets confidence ``alpha`` and every other pair confidence 1.

    Deterministic under ``seed`` with any number of threads (each user's and item's solve
    is independent). Users without training interactions get zero factors, so all their
    scores are 0 (ties broken at random by `recommend`); so do items without interactions.

    Given new histories without a second training (`update_history`, a run with
    ``refit = false``), the users whose history changed get the factors ALS would solve for
    them with the item factors fixed (folding in); the others keep theirs.

    Parameters
    ----------
    factors
        Latent dimensions (default 128).
    regularization
        L2 penalty ``lambda`` on the factors (default 10; implicit's default is 0.01). Not
        scaled by the number of interactions, so larger data sets tolerate larger values.
    alpha
        Confidence ``c = alpha`` of an observed pair; unobserved pairs have confidence 1
        (default 2; implicit's default is 1). Hu et al. found about 40 best on their TV
        viewing data; on MovieLens with every rating a positive, 1 to 4 is better.
    iterations
        ALS sweeps over users and items (default 15).
    seed
        Seed of the random initial factors.
    num_threads
        Threads used by implicit (default 0: all cores). Results do not depend on it.

    References
    ----------
    Y. Hu, Y. Koren, C. Volinsky, "Collaborative Filtering for Implicit Feedback Datasets",
    ICDM 2008. G. Takács, I. Pilászy, D. Tikk, "Applications of the Conjugate Gradient
    Method for Implicit Feedback Collaborative Filtering", RecSys 2011.
    """

    param_grid = {
        "factors": [64, 128, 256],
        "regularization": [1.0, 20.0],
        "alpha": [1.0, 4.0],
    }
    history_use = "fold-in"

    def __init__(
        self,
        factors: int = 128,
        regularization: float = 10.0,
        alpha: float = 2.0,
        iterations: int = 15,
        seed: int = 0,
        num_threads: int = 0,
    ) -> None:
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.seed = seed
        self.num_threads = num_threads

    def _implicit_class(self) -> type:
        from implicit.cpu.als import AlternatingLeastSquares

        return AlternatingLeastSquares

    def _implicit_params(self) -> dict[str, Any]:
        return {
            "factors": self.factors,
            "regularization": self.regularization,
            "alpha": self.alpha,
            "iterations": self.iterations,
            "num_threads": self.num_threads,
        }

    def _fix_cold_rows(self, data: TrainingData) -> None:
        # implicit's solve already gives empty rows zero factors; make it explicit
        self.user_factors_[data.user_activity == 0] = 0.0
        self.item_factors_[data.item_popularity == 0] = 0.0

    def _update_history(self, data: TrainingData) -> None:
        """Fold in new histories: solve the factors of the users whose rows changed.

        With the item factors fixed, a user's ALS factors are the exact solution of one
        regularised weighted least-squares problem (Hu et al., eq. 4);
        implicit's ``recalculate_user`` solves it (Cholesky). Users whose history did not
        change keep their trained factors, so their scores do not move.
        """
        from threadpoolctl import threadpool_limits

        new = data.csr().astype(np.float32)
        changed = np.flatnonzero((new != self.seen_).getnnz(axis=1))
        if len(changed) == 0:
            return
        klass = self._implicit_class()
        with threadpool_limits(1, "blas"):
            model = klass(**self._implicit_params(), random_state=self.seed)
            model.item_factors = self.item_factors_
            factors = model.recalculate_user(changed, new[changed])
        self.user_factors_ = self.user_factors_.copy()
        self.user_factors_[changed] = np.asarray(factors, dtype=np.float32)
        self.user_factors_[data.user_activity == 0] = 0.0


class BPR(_ImplicitFactorModel):
    """Bayesian personalised ranking matrix factorisation (Rendle et al., UAI 2009).

    Stochastic gradient ascent on :math:`\\sum \\ln \\sigma(\\hat x_{ui} - \\hat x_{uj})`
    over (user, positive item, sampled negative item) triples, with an L2 penalty. Wraps
    ``implicit.cpu.bpr.BayesianPersonalizedRanking``, which learns an item bias: its item
    factors have ``factors + 1`` columns (the last is the bias) and its user factors a last
    column fixed at 1, so ``user_factors_ @ item_factors_.T`` (what implicit's
    ``recommend`` ranks by) is ``x_u^T y_i + b_i``. Both are kept as they are.

    A user's factors change only by training: `update_history` refuses, and a run with
    ``refit = false`` records the model's test histories as stale.

    Users without training interactions keep implicit's random initial vector; here their
    latent part is set to zero, so they score each item by its learned bias (a popularity-
    like fallback). Items without interactions get zero factors and bias (score 0).

    Parameters
    ----------
    factors
        Latent dimensions, not counting the bias (default 64).
    learning_rate
        SGD step size (default 0.01, as implicit).
    regularization
        L2 penalty on the factors (default 0.01, as implicit).
    iterations
        Epochs; each samples as many triples as there are training interactions (default
        50; implicit's 100 overfits on MovieLens-1M leave-one-out validation).
    seed
        Seed of the initial factors and of the triple sampling.
    num_threads
        Threads of implicit's Hogwild SGD (default 1). With more than one thread the
        updates race, so the same seed no longer gives the same model; 1 keeps runs
        reproducible at the cost of speed (0 means all cores).

    References
    ----------
    S. Rendle, C. Freudenthaler, Z. Gantner, L. Schmidt-Thieme, "BPR: Bayesian Personalized
    Ranking from Implicit Feedback", UAI 2009.
    """

    param_grid = {
        "factors": [64, 128],
        "learning_rate": [0.005, 0.01, 0.03],
        "iterations": [30, 100],
    }
    # a user's factors come out of the SGD over all users' triples: no closed-form solve
    # folds in a new history (implicit's BPR has no recalculate_user), so a model that is
    # not refit keeps its train-time user factors
    history_use = "trained"

    def __init__(
        self,
        factors: int = 64,
        learning_rate: float = 0.01,
        regularization: float = 0.01,
        iterations: int = 50,
        seed: int = 0,
        num_threads: int = 1,
    ) -> None:
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.iterations = iterations
        self.seed = seed
        self.num_threads = num_threads

    def _implicit_class(self) -> type:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        return BayesianPersonalizedRanking

    def _implicit_params(self) -> dict[str, Any]:
        return {
            "factors": self.factors,
            "learning_rate": self.learning_rate,
            "regularization": self.regularization,
            "iterations": self.iterations,
            "num_threads": self.num_threads,
        }

    def _fix_cold_rows(self, data: TrainingData) -> None:
        cold_users = data.user_activity == 0
        has_bias = self.user_factors_.shape[1] == self.factors + 1
        self.user_factors_[cold_users] = 0.0
        if has_bias:
            self.user_factors_[cold_users, -1] = 1.0
        self.item_factors_[data.item_popularity == 0] = 0.0

    def n_parameters(self) -> tuple[int, int]:
        """User factors (without the constant bias column), item factors and item biases."""
        n_users, width = self.user_factors_.shape
        has_bias = width == self.factors + 1
        n = n_users * (width - int(has_bias)) + self.item_factors_.size
        return n, n
