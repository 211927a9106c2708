"""The two-tower model's training data: (user, position) pairs of the training sequences,
their batches (targets and right-aligned histories), and item texts as token batches."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch


def next_item_pairs(sequences: list[np.ndarray]) -> np.ndarray:
    """Every (user, position) whose position has at least one earlier item: (n, 2) int64."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    users = np.repeat(np.arange(len(sequences)), np.maximum(lengths - 1, 0))
    starts = np.concatenate([[0], np.cumsum(np.maximum(lengths - 1, 0))])[:-1]
    positions = np.arange(len(users)) - np.repeat(starts, np.maximum(lengths - 1, 0)) + 1
    return np.stack([users, positions], axis=1).astype(np.int64)


def batch_pairs(
    sequences: list[np.ndarray], pairs: np.ndarray, history_len: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Targets (B,) and right-aligned histories (B, H), -1 padding, of (user, position) pairs.

    A history is the ``history_len`` items before the position (None: all of them).
    """
    targets = np.empty(len(pairs), dtype=np.int64)
    longest = int(pairs[:, 1].max())
    width = longest if history_len is None else min(history_len, longest)
    history = np.full((len(pairs), width), -1, dtype=np.int64)
    for row, (user, pos) in enumerate(pairs):
        seq = sequences[user]
        targets[row] = seq[pos]
        past = seq[max(0, pos - width) : pos]
        history[row, width - len(past) :] = past
    return targets, history


class PairBatches:
    """``collate_fn`` of the pair loader: (user, position) pair ids to a training batch.

    ``items`` lists the distinct targets (each encoded once), then with ``history_grad`` the
    distinct history items; histories are right-aligned. Without ``history_grad`` they read
    ``table``, the catalog text vectors of the previous epoch.
    """

    def __init__(
        self,
        sequences: list[np.ndarray],
        pairs: np.ndarray,
        history_len: int | None,
        history_grad: bool,
    ) -> None:
        self.sequences, self.pairs = sequences, pairs
        self.history_len, self.history_grad = history_len, history_grad
        self.table: np.ndarray | None = None

    def __call__(self, rows: list[int]) -> dict[str, Any]:
        targets, history = batch_pairs(
            self.sequences, self.pairs[np.asarray(rows)], self.history_len
        )
        items, target_index = np.unique(targets, return_inverse=True)
        valid = history >= 0
        history_items = np.where(valid, history, 0)
        # target_index first: the training loop counts examples by the first tensor
        batch: dict[str, Any] = {"target_index": torch.from_numpy(target_index.astype(np.int64))}
        batch["n_targets"] = len(items)
        if self.history_grad:
            extra = np.setdiff1d(history_items[valid], items)
            items = np.concatenate([items, extra])
            position = np.zeros(int(items.max()) + 1, dtype=np.int64)
            position[items] = np.arange(len(items))
            batch["history_index"] = torch.from_numpy(position[history_items])
        else:
            assert self.table is not None
            batch["history_text"] = torch.from_numpy(self.table[history_items])
        batch["items"] = torch.from_numpy(items)
        batch["history_items"] = torch.from_numpy(history_items)
        batch["history_valid"] = torch.from_numpy(valid)
        return batch


class ItemTokens:
    """Token ids of every item text, padded into batches on demand."""

    def __init__(self, ids: list[list[int]], pad: int) -> None:
        self.ids, self.pad = ids, pad
        self.lengths = np.array([len(r) for r in ids], dtype=np.int64)

    @classmethod
    def from_texts(cls, tokenizer: Any, texts: list[str], max_length: int) -> ItemTokens:
        ids = tokenizer(
            texts,
            truncation=True,
            max_length=max_length,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return cls([row if len(row) else [pad] for row in ids], int(pad))

    def batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        width = int(self.lengths[rows].max())
        ids = np.full((len(rows), width), self.pad, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for r, i in enumerate(rows):
            ids[r, : self.lengths[i]] = self.ids[i]
            mask[r, : self.lengths[i]] = 1
        return torch.from_numpy(ids), torch.from_numpy(mask)

    def length_batches(self, size: int) -> Iterator[np.ndarray]:
        """Row ids in batches of similar length (longest first: little padding)."""
        order = np.argsort(-self.lengths, kind="stable")
        for begin in range(0, len(order), size):
            yield order[begin : begin + size]
