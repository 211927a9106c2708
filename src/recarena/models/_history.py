"""Users' recent histories as one flat array plus row offsets (the layout of a CSR row list).

Sequential and language-model recommenders keep each user's last few training items to
build the user side at scoring time. Stored flat, a model saves them as two arrays and reads
any batch of users as a left-padded matrix without a Python loop per user.

`KeepsHistory` is the part such a model shares: its fit and `Recommender.update_history`
both build the kept `History` with `KeepsHistory._keep_history`, from one declaration of
how many items are kept, their id shift and dtype, so a model tested on new histories
(without refitting) reads them exactly as a model fit on that data would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    from recarena.models.base import HistoryUse, TrainingData


@dataclass
class History:
    """Row ``u`` is ``items[indptr[u]:indptr[u + 1]]``: user ``u``'s kept items, oldest first.

    ``items`` holds item ids plus the ``shift`` given to `from_sequences` (SASRec shifts by
    one so that 0 can be its padding id).
    """

    items: np.ndarray
    indptr: np.ndarray

    @classmethod
    def from_sequences(
        cls,
        sequences: Sequence[np.ndarray],
        keep_last: int | None,
        *,
        shift: int = 0,
        dtype: Any = np.int64,
    ) -> History:
        """Each user's last ``keep_last`` items (None: all of them), ids plus ``shift``."""
        if keep_last is None:
            tails = list(sequences)
        else:
            tails = [seq[len(seq) - min(len(seq), max(keep_last, 0)) :] for seq in sequences]
        lengths = np.fromiter((len(t) for t in tails), dtype=np.int64, count=len(tails))
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat = np.concatenate(tails) if tails else np.empty(0, dtype=np.int64)
        return cls((np.asarray(flat, dtype=np.int64) + shift).astype(dtype), indptr)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def row(self, user: int) -> np.ndarray:
        return self.items[self.indptr[user] : self.indptr[user + 1]]

    def left_padded(self, users: np.ndarray, pad: int) -> np.ndarray:
        """(len(users), T) int64, each row right-aligned and filled with ``pad`` on the left.

        T is the longest of the rows asked for, at least 1.
        """
        ends = self.indptr[users + 1]
        lengths = ends - self.indptr[users]
        width = max(1, int(lengths.max(initial=0)))
        if not len(self.items):
            return np.full((len(users), width), pad, dtype=np.int64)
        cols = np.arange(width)
        index = ends[:, None] - width + cols[None, :]
        real = cols[None, :] >= width - lengths[:, None]
        return np.where(real, self.items[np.where(real, index, 0)], pad).astype(np.int64)


class KeepsHistory:
    """Mixin for recommenders that keep each user's recent items to score from.

    Put it before `Recommender` among the bases. The model's ``_fit`` calls
    ``self._keep_history(data)`` where it used to build its history; `update_history` (the
    ``_update_history`` hook below) calls the same function on the new data. The kept
    items are ``history_items_`` and ``history_indptr_`` (saved with the model);
    ``_kept_history()`` reads them back as a `History`.

    Attributes
    ----------
    history_length_param
        Name of the parameter holding how many recent items are kept (None: all).
    history_shift
        Added to every kept item id (SASRec shifts by one so that 0 is its padding id).
    history_dtype
        The dtype of the kept ids.
    """

    history_use: ClassVar[HistoryUse] = "rebuilt"
    history_length_param: ClassVar[str] = "history_len"
    history_shift: ClassVar[int] = 0
    history_dtype: ClassVar[Any] = np.int64

    history_items_: np.ndarray
    history_indptr_: np.ndarray

    def _keep_history(self, data: TrainingData) -> History:
        """Keep each user's last items of ``data`` (``history_items_``, ``history_indptr_``)."""
        history = History.from_sequences(
            data.sequences,
            getattr(self, self.history_length_param),
            shift=self.history_shift,
            dtype=self.history_dtype,
        )
        self.history_items_, self.history_indptr_ = history.items, history.indptr
        return history

    def _update_history(self, data: TrainingData) -> None:
        self._keep_history(data)

    def _kept_history(self) -> History:
        return History(self.history_items_, self.history_indptr_)
