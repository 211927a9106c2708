"""The generative ranker's training data: uniformly drawn negatives, and batches of
candidate titles cut by length so that one long title does not pad a whole batch."""

from __future__ import annotations

import numpy as np

from recarena.models.base import TrainingData


class NegativeSampler:
    """Items a user has no training interaction with, drawn uniformly (seeded).

    Items without text are never drawn (they cannot be scored). Draws continue one
    generator, so every epoch gets new negatives and a fit is reproducible.
    """

    def __init__(self, data: TrainingData, unscorable: np.ndarray, seed: int) -> None:
        self.seen = data.csr()
        allowed = np.ones(data.n_items, dtype=bool)
        allowed[unscorable] = False
        self.pool = np.flatnonzero(allowed)
        self.rng = np.random.default_rng([seed, 104729])

    def draw(self, user: int, n: int) -> np.ndarray:
        seen = self.seen.indices[self.seen.indptr[user] : self.seen.indptr[user + 1]]
        if len(seen) * 2 < len(self.pool):
            # most of the catalog is allowed: draw extra and drop seen ones and repeats
            picks = self.rng.choice(self.pool, size=min(len(self.pool), 2 * n + len(seen) // 4))
            picks = picks[~np.isin(picks, seen)]
            picks = picks[np.sort(np.unique(picks, return_index=True)[1])][:n]
            if len(picks) == n:
                return picks
        pool = np.setdiff1d(self.pool, seen)
        return self.rng.choice(pool, size=min(n, len(pool)), replace=False)


def length_buckets(lengths: np.ndarray, max_batch: int, overhead: int = 8) -> list[np.ndarray]:
    """Batches of indices of ``lengths`` (each at most ``max_batch``) that pad little.

    Sequences are sorted by length (longest first) and cut where the padded tokens saved
    are worth another forward pass (``overhead``, in tokens): a dynamic programme over
    the sorted lengths minimises the sum over batches of (size x longest + overhead).
    Titles are short with a long tail, so one long title no longer pads a whole batch.
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    sorted_lengths = np.asarray(lengths)[order]
    n = len(order)
    best = np.zeros(n + 1)
    cut = np.zeros(n + 1, dtype=np.int64)
    for j in range(1, n + 1):
        starts = np.arange(max(0, j - max_batch), j)
        costs = best[starts] + sorted_lengths[starts] * (j - starts) + overhead
        k = int(np.argmin(costs))
        best[j], cut[j] = costs[k], starts[k]
    batches = []
    j = n
    while j > 0:
        batches.append(order[cut[j] : j])
        j = int(cut[j])
    return batches[::-1]
