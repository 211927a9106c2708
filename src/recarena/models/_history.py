"""Users' recent histories as one flat array plus row offsets (the layout of a CSR row list).

Sequential and language-model recommenders keep each user's last few training items to
build the user side at scoring time. Stored flat, a model saves them as two arrays and reads
any batch of users as a left-padded matrix without a Python loop per user.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


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
