"""SASRec's training data: each user's recent items, and batches of next-item targets.

Sequences are left-padded with item id 0 (real items are shifted by one), so the most
recent item always sits at the last position and gets the same positional embedding. A
batch holds every position of its users' sequences: the inputs are items ``[0, n-1)`` and
the targets items ``[1, n)`` of each kept history, trained in one causal pass.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from recarena.models._history import History


def shifted_history(sequences: list[np.ndarray], keep_last: int) -> History:
    """Each user's last ``keep_last`` items with ids shifted by one (0 is the padding id)."""
    return History.from_sequences(sequences, keep_last, shift=1, dtype=np.int32)


def next_item_batches(
    train: History, order: np.ndarray, batch_size: int, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    """``(inputs, targets, positions)`` for each run of ``batch_size`` users of ``order``.

    ``inputs`` and ``targets`` are (B, T) shifted ids on ``device``, a target of 0 being
    padding; ``positions`` counts the real targets, on the host, so that a loop summing
    losses never waits for the device.
    """
    for begin in range(0, len(order), batch_size):
        users = order[begin : begin + batch_size]
        seq = torch.from_numpy(train.left_padded(users, pad=0)).to(device)
        yield seq[:, :-1], seq[:, 1:], int(train.lengths[users].sum()) - len(users)
