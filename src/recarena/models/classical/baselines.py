"""The two floors every model must clear: random scores and popularity."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recarena.models.base import Recommender, TrainingData, is_number, require_param


class RandomRecommender(Recommender):
    """Uniformly random scores, different per user, fixed by ``seed``.

    Parameters
    ----------
    seed
        Seed of the scores: the same seed gives the same lists.
    """

    history_use = "none"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def _fit(self, data: TrainingData, valid: pd.DataFrame | None) -> None:
        pass

    def _score(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        out = np.empty((len(users), self.n_items_), dtype=np.float32)
        for row, user in enumerate(users):
            out[row] = np.random.default_rng([self.seed, int(user)]).random(self.n_items_)
        return self._gather(out, items)

    def n_parameters(self) -> tuple[int, int]:
        return 0, 0


class MostPopular(Recommender):
    """Items ranked by the number of distinct training users (ties broken at random).

    Parameters
    ----------
    recent_days
        Count only interactions from the last ``recent_days`` days of the training data
        (needs timestamps); None counts all.
    """

    param_grid = {"recent_days": [None, 30, 180]}
    history_use = "none"

    def __init__(self, recent_days: float | None = None) -> None:
        self.recent_days = recent_days

    def check_params(self) -> None:
        """``recent_days`` None or a positive number."""
        require_param(
            self,
            "recent_days",
            self.recent_days is None or (is_number(self.recent_days) and self.recent_days > 0),
            "None or a positive number of days",
        )

    def _fit(self, data: TrainingData, valid: pd.DataFrame | None) -> None:
        frame = data.interactions
        if self.recent_days is not None and "timestamp" in frame and len(frame):
            cutoff = frame["timestamp"].max() - self.recent_days * 86400
            frame = frame[frame["timestamp"] >= cutoff]
        pairs = frame.drop_duplicates(["user", "item"])
        self.popularity_ = np.bincount(pairs["item"].to_numpy(), minlength=data.n_items).astype(
            np.float32
        )

    def _score(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        if items is None:
            return np.broadcast_to(self.popularity_, (len(users), self.n_items_)).copy()
        return self.popularity_[items]
