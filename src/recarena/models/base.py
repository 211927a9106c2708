"""The `Recommender` API that every model in RecArena implements.

Stability: **frozen** (v0.1) for ``fit``, ``score``, ``recommend``, ``save``/``load``,
``TrainingData`` and ``RankedLists`` (defined in `recarena.ranking`, below the metrics and
the models, and importable from here as before). Class attributes describing a model (``family``,
``fusion``...) may gain new values.

A model follows scikit-learn's rules: the constructor stores its keyword arguments and does
nothing else; ``fit`` returns ``self``; what is learned ends in ``_``; ``seed`` is turned
into a generator inside ``fit``. A model implements two methods:

``_fit(data, valid)``
    Learn from a `TrainingData`; ``valid`` (held-out interactions) is there for early
    stopping.
``_score(users, items)``
    Scores for the given users: over the whole catalog when ``items`` is None, else over
    each user's row of candidate ids.

The base class builds ``recommend`` on ``_score`` (seen items excluded, ties broken at
random with a seed, users scored in memory-bounded batches). A re-ranker that cannot score
the full catalog sets ``scores_full_catalog = False`` and is given candidates instead.

A model declares in ``history_use`` how it reads a user's history when scoring (see
`Recommender`); `Recommender.update_history` then gives a fitted model new histories (the
validation interactions, when the runner tests a model without refitting it) through the
hook ``_update_history(data)`` of the models that keep a representation of them.
"""

from __future__ import annotations

import copy
import inspect
import numbers
import os
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recarena._classes import resolve_class
from recarena._io import atomic_open, jsonable, read_json, write_json
from recarena.data.dataset import interactions_csr
from recarena.ranking import RankedLists, top_k

Family = Literal[
    "classical",
    "content",
    "frozen-lm",
    "lm-features-trained",
    "cross-encoder",
    "two-tower",
    "generative-lm",
]
Fusion = Literal["none", "feature-extraction", "fine-tuning", "joint-training", "zero-shot"]
HistoryUse = Literal["none", "interactions", "rebuilt", "fold-in", "trained", "undeclared"]

#: values of ``history_use`` under which `Recommender.update_history` brings a fitted model
#: up to date with new histories
UPDATABLE_HISTORY_USES: frozenset[str] = frozenset({"none", "interactions", "rebuilt", "fold-in"})

#: why a model whose ``history_use`` is not updatable keeps the histories it was fit on
STALE_HISTORY_REASONS: dict[str, str] = {
    "trained": "its per-user weights are learned and change only by training",
    "undeclared": "it does not declare how it reads a user's history (history_use)",
}


@dataclass(eq=False)
class TrainingData:
    """What a model is fit on: interactions plus the item (and user) side information.

    ``interactions`` has the `Dataset` columns (``user``, ``item``, optional ``timestamp``
    and ``rating``) and is sorted by user then time. ``n_users``/``n_items`` span the whole
    data set, so users and items without training interactions still have ids (cold users
    and cold items). ``item_text`` holds one rendered text per item id (the experiment's
    template) for text-aware models. ``cache_dir`` is where a model may keep what is
    expensive to recompute (encoded item vectors); None means no caching. ``checkpoint_dir``
    is where a long training may save its progress to resume from after an interruption.
    """

    interactions: pd.DataFrame
    n_users: int
    n_items: int
    items: pd.DataFrame = field(default_factory=pd.DataFrame)
    item_text: list[str] | None = None
    users: pd.DataFrame | None = None
    dataset_name: str = ""
    #: where models may cache expensive derived data (encoded item vectors, converted weights)
    cache_dir: Path | None = None
    #: where a long training may keep checkpoints, so that a fit stopped part-way resumes
    #: where it stopped; one folder per fit (the runner gives each its own and removes it
    #: once the model is done); None: no checkpoints
    checkpoint_dir: Path | None = None

    @cached_property
    def _csr_cache(self) -> dict[str, sp.csr_matrix]:
        return {}

    @cached_property
    def derived(self) -> dict[str, Any]:
        """What models derive from this data and may share between fits on it (EASE keeps
        its Gram matrix here, so a validation grid builds it once); freed with the data."""
        return {}

    def csr(self, weights: Literal["binary", "rating", "count"] = "binary") -> sp.csr_matrix:
        """User x item matrix (cached)."""
        if weights not in self._csr_cache:
            self._csr_cache[weights] = interactions_csr(
                self.interactions, self.n_users, self.n_items, weights
            )
        return self._csr_cache[weights]

    @cached_property
    def sequences(self) -> list[np.ndarray]:
        """Each user's item ids in time order (empty arrays for users without history)."""
        users = self.interactions["user"].to_numpy()
        items = self.interactions["item"].to_numpy().astype(np.int64)
        bounds = np.searchsorted(users, np.arange(self.n_users + 1))
        return [items[bounds[u] : bounds[u + 1]] for u in range(self.n_users)]

    @cached_property
    def item_popularity(self) -> np.ndarray:
        """Number of distinct users per item in training."""
        return np.asarray(self.csr().sum(axis=0)).ravel().astype(np.int64)

    @cached_property
    def user_activity(self) -> np.ndarray:
        return np.diff(self.csr().indptr).astype(np.int64)


def is_number(value: Any) -> bool:
    """A real number (int, float or NumPy scalar), not a bool and not NaN."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and not np.isnan(value)


def is_integer(value: Any) -> bool:
    """An integer (int or NumPy integer), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def require_param(model: Recommender, name: str, valid: bool, expected: str) -> None:
    """Raise `ValueError` for parameter ``name`` of ``model`` unless ``valid``.

    The message names the class, the parameter, what was expected and the value given:
    ``EASE parameter l2 must be a positive number, got -100.0``.
    """
    if not valid:
        raise ValueError(
            f"{type(model).__name__} parameter {name} must be {expected}, "
            f"got {getattr(model, name)!r}"
        )


class Recommender:
    """Base class of every RecArena model. See the module docstring for the contract.

    Class attributes declare what a model is and can do (scikit-learn's tags, read by the
    runner and the report, never probed). ``history_use`` says how the model reads a user's
    history when it scores, which decides what `update_history` does:

    ``"none"``
        Scores do not depend on the user's history (random scores, popularity).
    ``"interactions"``
        Scores are computed from the interaction matrix ``seen_`` at scoring time (EASE,
        ItemKNN); new histories only replace ``seen_``.
    ``"rebuilt"``
        A representation of the history is built from the data (kept recent items of
        SASRec and the language-model recommenders, TF-IDF/BM25 profiles, frozen-LM user
        vectors); ``_update_history(data)`` rebuilds it, with the function the fit used.
    ``"fold-in"``
        Learned per-user weights that ``_update_history(data)`` recomputes from the new
        rows with the item side held fixed (ALS: one least-squares solve per user).
    ``"trained"``
        Learned per-user weights that only training changes (BPR): `update_history`
        refuses, and a runner that does not refit such a model records its histories as
        stale.
    ``"undeclared"``
        The default of a model that says nothing; treated as ``"trained"``, unless the class
        defines its own ``update_history`` (the earlier contract), which is then trusted.
    """

    #: model family shown in reports
    family: ClassVar[Family] = "classical"
    #: which of the three ways of using a language model this is ("none" for non-LM models)
    fusion: ClassVar[Fusion] = "none"
    #: False for re-rankers that can only score given candidates
    scores_full_catalog: ClassVar[bool] = True
    #: True when the model reads ``TrainingData.item_text``
    uses_text: ClassVar[bool] = False
    #: default validation grid: parameter name -> values tried
    param_grid: ClassVar[dict[str, list[Any]]] = {}
    #: True when fit uses validation data (early stopping): the runner then always runs a
    #: validation fit and refits with ``refit_params()``
    uses_validation: ClassVar[bool] = False
    #: True when scores are probabilities (descriptive only: pointwise metrics apply the same
    #: threshold rule to every model, see `recarena.metrics.pointwise.classify_pointwise`)
    calibrated_scores: ClassVar[bool] = False
    #: how the model reads a user's history when scoring (see the class docstring)
    history_use: ClassVar[HistoryUse] = "undeclared"
    #: parameters whose value names a language model of the zoo (`recarena.lm.zoo`): a run
    #: checks that each one's model (given, in the grid, or the default) is available
    #: before it starts
    language_model_params: ClassVar[tuple[str, ...]] = ()
    #: what one run of the model asks of a node when an experiment runs on a cluster (Ray
    #: task resources: ``num_cpus``, ``num_gpus`` (a fraction shares a GPU), ``memory`` in
    #: bytes); a ``num_threads`` parameter sets the CPUs (`task_resources`)
    resources: ClassVar[dict[str, float]] = {"num_cpus": 1}
    #: parameters added to the model after runs were saved, each with the value at which it
    #: is an option left off (the behaviour from before it existed, e.g. ``dp_epsilon:
    #: None``): a finished model reused from such a run is not announced as possibly
    #: different (`recarena.experiment.tuning.parameters_added_since`)
    neutral_params: ClassVar[dict[str, Any]] = {}
    #: fitted attributes that `cost_record` reports (those the fit set), in this order
    cost_attributes: ClassVar[tuple[str, ...]] = (
        "encode_items_per_second_",
        "encode_seconds_",
        "train_examples_per_second_",
        "train_seconds_",
        "best_step_",
        "best_epoch_",
        "mixed_precision_",
        "encode_dtype_",
    )

    # ------------------------------------------------------------------ parameters
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [
            p.name
            for p in sig.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]

    @classmethod
    def param_default(cls, name: str) -> Any:
        """The default value of parameter ``name`` (`inspect.Parameter.empty`: none)."""
        return inspect.signature(cls.__init__).parameters[name].default

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Self:
        valid = set(self._param_names())
        for key, value in params.items():
            if key not in valid:
                raise ValueError(
                    f"{type(self).__name__} has no parameter {key!r}; parameters: {sorted(valid)}"
                )
            setattr(self, key, value)
        return self

    def check_params(self) -> None:
        """Raise `ValueError` naming the first parameter whose value this model cannot use.

        `fit` calls it first, and the runner calls it on every grid point before anything
        is fit, so an invalid value in an experiment fails at once, with the model and the
        parameter named, instead of after the data has loaded or as a silently wrong model.
        The base class accepts every value; a model overrides it with `require_param`.
        """

    def clone(self, **params: Any) -> Self:
        """A new, unfitted model with the same parameters (overridden by ``params``)."""
        merged = {**copy.deepcopy(self.get_params()), **params}
        return type(self)(**merged)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------ fitting
    def fit(self, data: TrainingData, valid: pd.DataFrame | None = None) -> Self:
        """Learn from ``data``; ``valid`` holds held-out interactions for early stopping."""
        self.check_params()
        self.n_users_ = data.n_users
        self.n_items_ = data.n_items
        self.seen_ = data.csr()
        if self.uses_text and data.item_text is None:
            raise ValueError(f"{type(self).__name__} needs item text, but none was given")
        if self.uses_text and len(data.item_text or ()) != data.n_items:
            raise ValueError(
                f"{type(self).__name__}: item_text has {len(data.item_text or ())} texts for "
                f"{data.n_items} items"
            )
        start = time.perf_counter()
        self._fit(data, valid)
        self.fit_seconds_ = time.perf_counter() - start
        return self

    def _fit(self, data: TrainingData, valid: pd.DataFrame | None) -> None:
        raise NotImplementedError

    def refit_params(self) -> dict[str, Any]:
        """Parameters to use when refitting without validation data (e.g. the best epoch)."""
        return {}

    # ------------------------------------------------------------------ new histories
    @classmethod
    def updates_history(cls) -> bool:
        """True when `update_history` brings a fitted model up to date with new histories."""
        if cls.history_use == "undeclared":
            # written against the earlier contract, where an own update_history was the
            # declaration (the runner looked for the method)
            return cls.update_history is not Recommender.update_history
        return cls.history_use in UPDATABLE_HISTORY_USES

    def update_history(self, data: TrainingData) -> Self:
        """Score users from the histories in ``data``, keeping what was learned.

        Used to test a model chosen on validation without a second training: the users'
        histories then include their validation interactions. ``data`` must span the users
        and items the model was fit on. ``seen_`` (what ``recommend`` excludes by default)
        becomes ``data``'s interactions, and the model's ``_update_history`` hook refreshes
        whatever it built from the histories (see ``history_use``).

        Raises
        ------
        NotImplementedError
            When the model cannot take in new histories without training
            (``history_use`` ``"trained"``, or undeclared).
        ValueError
            When ``data`` has other users or items than the fitted model.
        """
        self._check_fitted()
        cls = type(self)
        if not cls.updates_history():
            reason = STALE_HISTORY_REASONS.get(cls.history_use, cls.history_use)
            raise NotImplementedError(
                f"{cls.__name__} cannot take in new histories without training: {reason}; "
                "refit it on the new data instead"
            )
        if data.n_users != self.n_users_ or data.n_items != self.n_items_:
            raise ValueError(
                f"data has {data.n_users} users and {data.n_items} items; this model was fit "
                f"on {self.n_users_} users and {self.n_items_} items"
            )
        if self.uses_text and len(data.item_text or ()) != data.n_items:
            raise ValueError(
                f"{cls.__name__}: item_text has {len(data.item_text or ())} texts for "
                f"{data.n_items} items"
            )
        if cls.history_use in ("rebuilt", "fold-in") and (
            cls._update_history is Recommender._update_history
        ):
            raise NotImplementedError(
                f"{cls.__name__} declares history_use = {cls.history_use!r} but does not "
                "implement _update_history"
            )
        # the hook runs first, so it can compare the new histories with the old (seen_)
        self._update_history(data)
        self.seen_ = data.csr()
        return self

    def _update_history(self, data: TrainingData) -> None:
        """Refresh what the model built from users' histories (models that keep some).

        Called by `update_history` after its checks and before ``seen_`` changes.
        """

    # ------------------------------------------------------------------ scoring
    def _check_fitted(self) -> None:
        if not hasattr(self, "n_items_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() first")

    def _check_users(self, users: np.ndarray) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        if len(users) and (users.min() < 0 or users.max() >= self.n_users_):
            bad = users[(users < 0) | (users >= self.n_users_)][0]
            raise ValueError(
                f"user id {bad} is outside the {self.n_users_} users this model was fit on"
            )
        return users

    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        """Scores (float32) of items for users; higher is better.

        ``items=None`` scores the whole catalog: shape (len(users), n_items). A 2-d
        ``items`` of candidate ids per user (padding -1) gives scores of the same shape,
        ``-inf`` at padding.
        """
        self._check_fitted()
        users = self._check_users(users)
        if items is None:
            if not self.scores_full_catalog:
                raise NotImplementedError(
                    f"{type(self).__name__} re-ranks candidates and cannot score the full "
                    "catalog; pass candidate items"
                )
            return np.asarray(self._score(users, None), dtype=np.float32)
        items = np.asarray(items, dtype=np.int64)
        if items.ndim != 2 or items.shape[0] != len(users):
            raise ValueError(
                f"candidate items must be (n_users, n_candidates), got shape {items.shape}"
            )
        if items.size and items.max() >= self.n_items_:
            raise ValueError(f"item id {items.max()} is outside the {self.n_items_}-item catalog")
        pad = items < 0
        out = np.asarray(self._score(users, np.where(pad, 0, items)), dtype=np.float32)
        out[pad] = -np.inf
        return out

    def _score(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        """Default: candidates scored by picking them from full-catalog scores."""
        raise NotImplementedError

    def _gather(self, full: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        """Helper for ``_score``: full-catalog scores, or their values at candidate ids."""
        return full if items is None else np.take_along_axis(full, items, axis=1)

    def recommend(
        self,
        users: np.ndarray,
        k: int,
        *,
        exclude_seen: bool = True,
        candidates: np.ndarray | None = None,
        item_pool: np.ndarray | None = None,
        exclude: sp.csr_matrix | None = None,
        seed: int = 0,
        batch_size: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> RankedLists:
        """Top-``k`` lists for ``users``.

        Parameters
        ----------
        exclude_seen
            Drop items the user has in the training data (``exclude`` overrides which).
        candidates
            (len(users), n) candidate ids per user; only these are ranked.
        item_pool
            Ids of the only items that may be recommended (e.g. the new items of a
            cold-item split).
        seed
            Seed of the random tie-breaking.
        batch_size
            Users scored at once; by default as many as keep a batch of scores near 256 MB.
        progress
            Called with the number of users done after each batch.
        """
        self._check_fitted()
        users = self._check_users(users)
        seen = exclude if exclude is not None else self.seen_
        if candidates is None and not self.scores_full_catalog:
            raise ValueError(f"{type(self).__name__} needs candidate lists to rank")
        width = self.n_items_ if candidates is None else candidates.shape[1]
        if batch_size is None:
            batch_size = max(1, min(4096, (64 << 20) // max(1, width)))
        pool_mask = None
        if item_pool is not None:
            pool_mask = np.zeros(self.n_items_, dtype=bool)
            pool_mask[np.asarray(item_pool, dtype=np.int64)] = True
        out_items, out_scores, raw_scores = [], [], []
        for start in range(0, len(users), batch_size):
            batch = users[start : start + batch_size]
            cand = None if candidates is None else candidates[start : start + batch_size]
            scores = self.score(batch, cand)
            if cand is not None:
                raw_scores.append(scores.copy())
            ids = cand
            if cand is None:
                if exclude_seen:
                    _mask_seen(scores, seen, batch)
                if pool_mask is not None:
                    scores[:, ~pool_mask] = -np.inf
            else:
                if exclude_seen:
                    hit = seen_lookup(seen, batch, cand)
                    scores[hit] = -np.inf
                if pool_mask is not None:
                    scores[~pool_mask[np.where(cand < 0, 0, cand)]] = -np.inf
            idx, top = top_k(scores, k, users=batch, seed=seed)
            if ids is not None:
                idx = np.where(idx >= 0, np.take_along_axis(ids, np.maximum(idx, 0), axis=1), -1)
            out_items.append(idx)
            out_scores.append(top)
            if progress is not None:
                progress(len(batch))
        if not out_items:
            return RankedLists(users, np.empty((0, k), np.int64), np.empty((0, k), np.float32))
        return RankedLists(
            users,
            np.concatenate(out_items),
            np.concatenate(out_scores),
            np.concatenate(raw_scores) if raw_scores else None,
        )

    # ------------------------------------------------------------------ cost
    def n_parameters(self) -> tuple[int, int]:
        """(total, trainable) learned parameters; arrays ending in ``_`` are counted."""
        total = 0
        for name, value in vars(self).items():
            if name.endswith("_") and name != "seen_":
                if isinstance(value, np.ndarray):
                    total += value.size
                elif sp.issparse(value):
                    total += value.nnz
        return total, total

    # ------------------------------------------------------------------ persistence
    # ------------------------------------------------------------------ reporting
    def cost_record(self) -> dict[str, Any]:
        """The fitted model's own part of ``cost.json``, beside what the runner measures:
        the device it ran on (``device_``, else ``"cpu"``), then each attribute of
        ``cost_attributes`` the fit set, named without its trailing ``_`` (an encoding's
        speed, a training's time, the best epoch). Override it to report something else."""
        state = vars(self)
        record: dict[str, Any] = {"device": str(state.get("device_", "cpu"))}
        for name in self.cost_attributes:
            if name in state:
                record[name.rstrip("_")] = state[name]
        return record

    def task_resources(self) -> dict[str, float]:
        """What a run of this model asks of a cluster node: `resources`, with the CPUs of a
        positive integer ``num_threads`` parameter when the model has one."""
        out = {k: float(v) for k, v in type(self).resources.items()}
        threads = vars(self).get("num_threads")
        if isinstance(threads, int) and not isinstance(threads, bool) and threads > 0:
            out["num_cpus"] = float(threads)
        return out

    def training_log(self) -> list[dict[str, Any]]:
        """The fitted model's learning curve: one record per measurement of its training
        (``training_log_``; empty for a model without one). The runner saves it as
        ``training_log.json`` and the report plots it."""
        return list(vars(self).get("training_log_") or [])

    def save(self, folder: str | os.PathLike[str]) -> None:
        """Save the fitted model to ``folder`` (parameters as JSON, state pickled)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(
            folder / "model.json",
            {
                "class": f"{type(self).__module__}:{type(self).__qualname__}",
                "params": jsonable(self.get_params()),
            },
        )
        state = {k: v for k, v in vars(self).items() if k.endswith("_")}
        with atomic_open(folder / "state.pkl", "wb") as fh:
            pickle.dump(state, fh, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> Recommender:
        """Load a model saved with `save` (the class is read from ``model.json``)."""
        folder = Path(folder)
        meta = read_json(folder / "model.json")
        klass = resolve_class(meta["class"])
        model = klass(**meta["params"])
        with open(folder / "state.pkl", "rb") as fh:
            state = pickle.load(fh)
        model._restore_state(state, folder)
        return model

    def _restore_state(self, state: dict[str, Any], folder: Path) -> None:
        vars(self).update(state)


def _mask_seen(scores: np.ndarray, seen: sp.csr_matrix, users: np.ndarray) -> None:
    sub = seen[users]
    rows = np.repeat(np.arange(len(users)), np.diff(sub.indptr))
    scores[rows, sub.indices] = -np.inf


def seen_lookup(seen: sp.csr_matrix, users: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Whether each candidate ``cand[i, j]`` is in ``seen`` for user ``users[i]`` (boolean,
    shaped like ``cand``); padding candidates (negative ids) are never seen."""
    sub = seen[users].tocsr()
    safe = np.where(cand < 0, 0, cand)
    rows = np.repeat(np.arange(len(users)), cand.shape[1]).reshape(cand.shape)
    hit = np.asarray(sub[rows.ravel(), safe.ravel()]).reshape(cand.shape) > 0
    return hit & (cand >= 0)
