"""Differentially private training of the two-tower (``dp_epsilon`` or ``dp_noise_multiplier``).

The privacy unit is one user's whole training sequence, as for SASRec
(`recarena.privacy.dp`): every step Poisson-samples users (each with probability ``q =
batch_size / n_users``), and each sampled user contributes one gradient, from one (history,
next item) pair drawn from their sequence. Opacus's `DPOptimizer` clips each user's gradient
to ``dp_max_grad_norm``, adds Gaussian noise to their sum, and its RDP accountant counts the
steps; the noise for a target epsilon is Opacus's `get_noise_multiplier` for the ``epochs``
budget (an epoch is ``1 / q`` steps).

What changes from the ordinary training (`training.train`), so that one user's loss reads
only that user's data:

- **Negatives.** The in-batch softmax makes every user's loss depend on the other users'
  positives, so a private step ranks each user's target against `DP_NEGATIVES` items drawn
  uniformly from the catalog for the step (data-independent; the target itself is left
  out), with no logQ correction (uniform draws need none).
- **Per-user gradients.** Each sampled user's loss is differentiated on its own
  (`UserLevelDPSGD.step_each`): the target's text runs through the tuned top layers with
  gradients; the history and the negatives read the catalog table of the previous epoch, as
  in ordinary training.
- **ID embeddings.** Ordinary training masks the ID embeddings of items without training
  interactions to zero; which items those are depends on the users' data, so a private
  fit masks none (an item no one trained on keeps a noise-only embedding).

Not covered by the accounting, and said in the record: the warm start chosen on validation
(``tune_warm_start``), the epoch kept by early stopping (step 0, the untrained model,
included), and the refit on train + validation, a second private training whose epsilon is
recorded on its own.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from recarena.lm.training import BestWeights
from recarena.models.base import TrainingData
from recarena.models.language.two_tower.network import TwoTowerNetwork
from recarena.models.language.two_tower.training import (
    MONITOR,
    Measure,
    TrainParams,
    log_row,
    make_optimizer,
    validation_targets,
)

logger = logging.getLogger(__name__)

#: uniformly drawn negatives a private step ranks each user's target against
DP_NEGATIVES = 256


def train_private(
    net: TwoTowerNetwork,
    data: TrainingData,
    pairs: np.ndarray,
    table: np.ndarray,
    valid: pd.DataFrame | None,
    params: TrainParams,
    dp_params: dict[str, Any],
    measure: Measure,
    log: list[dict[str, Any]],
) -> tuple[TwoTowerNetwork, np.ndarray, int, float | None, dict[str, Any]]:
    """Step 0, then ``params.epochs`` epochs of user-level DP-SGD with early stopping.

    ``pairs``: the (user, position) training pairs (`training.training_pairs`); their users
    are the ones sampled. The recommender has checked that ``history_grad`` is off.

    Returns what `training.train` returns (the network with the kept weights, its catalog
    table, the kept epoch and its validation NDCG@10) and the privacy record
    (`recarena.privacy.dp.DPRecord.as_dict`). ``dp_params``: ``epsilon``, ``delta``,
    ``noise_multiplier``, ``max_grad_norm``.
    """
    from recarena.privacy.dp import UserLevelDPSGD

    rng = np.random.default_rng(params.seed)
    valid_users, truth = validation_targets(valid, data, rng, params.max_valid_users)
    sequences = data.sequences
    users = np.unique(pairs[:, 0])  # every user with a (history, next item) pair
    _, optimizer = make_optimizer(net, params)
    dp = UserLevelDPSGD(
        net,
        optimizer,
        n_users=len(users),
        batch_size=params.batch_size,
        epochs=max(params.epochs, 1),
        epsilon=dp_params["epsilon"],
        delta=dp_params["delta"],
        noise_multiplier=dp_params["noise_multiplier"],
        max_grad_norm=dp_params["max_grad_norm"],
        seed=params.seed,
    )
    began = time.perf_counter()
    untrained = None
    if valid_users is not None:
        net.eval()
        with torch.inference_mode():
            untrained = measure(table, net.heads, valid_users, truth)
        log_row(log, 0, None, 0, untrained, time.perf_counter() - began, 0.0)
    # the untrained weights compete (step 0); without validation the last epoch is kept
    best = BestWeights(net, patience=params.patience, value=untrained, table=table)
    if params.epochs > 0:
        net.encoder.build_cache(params.encode_batch_size)
    current = torch.from_numpy(table)
    pairs = 0
    for epoch in range(1, params.epochs + 1):
        net.train()
        losses = []
        for picked in dp.epoch_batches():
            batch = users[picked]
            negatives = torch.from_numpy(rng.integers(0, data.n_items, DP_NEGATIVES))
            positions = [int(rng.integers(1, len(sequences[u]))) for u in batch]

            loss_of = functools.partial(
                _row_loss, net, sequences, batch, positions, negatives, current, params
            )
            loss = dp.step_each(loss_of, len(batch))
            if not math.isnan(loss):
                losses.append(loss)
            pairs += len(batch)
        net.eval()
        encode_began = time.perf_counter()
        encoded = net.encoder.encode_all(params.encode_batch_size).cpu().numpy()
        current = torch.from_numpy(encoded)
        encode_seconds = time.perf_counter() - encode_began
        ndcg = None
        if valid_users is not None:
            with torch.inference_mode():
                ndcg = measure(encoded, net.heads, valid_users, truth)
        mean_loss = float(np.mean(losses)) if losses else None
        log_row(log, epoch, mean_loss, pairs, ndcg, time.perf_counter() - began, encode_seconds)
        log[-1]["epsilon"] = dp.epsilon()
        logger.info(
            "two-tower (private) epoch %d: loss %s, %s %s, epsilon %.2f",
            epoch,
            "-" if mean_loss is None else f"{mean_loss:.4f}",
            MONITOR,
            "-" if ndcg is None else f"{ndcg:.4f}",
            dp.epsilon(),
        )
        if best.offer(epoch, ndcg, table=encoded):
            break
    best.restore()
    if valid_users is not None and best.epoch == 0:
        logger.info("two-tower (private): no epoch beat the untrained model (step 0); keeping it")
    best_value = None if valid_users is None else best.value
    return net.eval(), best.extra["table"], best.epoch, best_value, dp.record().as_dict()


def _row_loss(
    net: TwoTowerNetwork,
    sequences: list[np.ndarray],
    batch: np.ndarray,
    positions: list[int],
    negatives: torch.Tensor,
    table: torch.Tensor,
    params: TrainParams,
    row: int,
) -> torch.Tensor:
    """The loss of the ``row``-th user of a step's ``batch``."""
    user = int(batch[row])
    return _user_loss(net, sequences[user], positions[row], negatives, table, params)


def _user_loss(
    net: TwoTowerNetwork,
    sequence: np.ndarray,
    position: int,
    negatives: torch.Tensor,
    table: torch.Tensor,
    params: TrainParams,
) -> torch.Tensor:
    """One user's loss: the softmax of its next item against the step's uniform negatives."""
    history = sequence[:position]
    if params.history_len is not None:
        history = history[-params.history_len :]
    target = int(sequence[position])
    target_ids = torch.tensor([target])
    target_vector = net.heads.item_vectors(net.encoder.encode(np.array([target])), target_ids)
    history_ids = torch.from_numpy(np.ascontiguousarray(history, dtype=np.int64))
    history_vectors = net.heads.item_vectors(table[history_ids][None], history_ids[None])
    user = net.heads.user_vectors(history_vectors, torch.ones((1, len(history)), dtype=torch.bool))
    others = negatives[negatives != target]
    negative_vectors = net.heads.item_vectors(table[others], others)
    logits = torch.cat([user @ target_vector.T, user @ negative_vectors.T], dim=1)
    logits = logits.float() / params.temperature
    return F.cross_entropy(logits, torch.zeros(1, dtype=torch.long))
