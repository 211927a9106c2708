"""Differentially private fine-tuning of the cross-encoder (``dp_epsilon`` or
``dp_noise_multiplier``).

The privacy unit is one user's whole training sequence, as for SASRec and the two-tower
(`recarena.privacy.dp`): every step Poisson-samples users (each with probability ``q =
batch_size / n_users``), and each sampled user contributes one gradient, from
`DP_POSITIVES_PER_USER` positions drawn from their own sequence (each position's item
with the ``history_len`` items before it, and ``n_negatives`` items the user never
interacted with, drawn uniformly: all of it the user's own data). Opacus's `DPOptimizer`
clips each user's gradient to ``dp_max_grad_norm``, adds Gaussian noise to their sum, and
its RDP accountant counts the steps; the noise for a target epsilon is Opacus's
`get_noise_multiplier` for the ``epochs`` budget (an epoch is ``1 / q`` steps, about one
gradient per user). Per-user gradients are taken user by user
(`UserLevelDPSGD.step_each`): each user's pairs run through the network as one batch.

What changes from the ordinary fine-tuning:

- **Pairs.** No fixed sample of ``max_train_pairs`` positives: each step's users draw
  their positions afresh, so an epoch holds about ``n_users x DP_POSITIVES_PER_USER``
  positives (a few thousand on MovieLens-100k, where the ordinary recipe trains on tens of
  thousands).
- **What trains.** Every parameter with ``requires_grad`` is clipped and noised; the noise
  grows with their number, so ``train_top_layers`` (the top layers and the head only) is
  the usual private setting.
- **Measurements.** Validation AUC after every epoch (not every ``eval_every`` steps);
  early stopping counts epochs.

The learning rate rises linearly over the first ``warmup_ratio`` of the budget's steps,
then falls linearly to zero, as in the ordinary recipe. Not covered by the accounting, and
said in the record: the epoch kept by early stopping (step 0, the untrained model,
included) and the refit on train + validation, a second private training whose epsilon is
recorded on its own.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from recarena.lm import training as tr
from recarena.models.language.cross_encoder.batching import PairEncoder, sample_negatives

logger = logging.getLogger(__name__)

#: positions of a sampled user's sequence that make up that user's gradient in a step
DP_POSITIVES_PER_USER = 4


def train_private(
    network: torch.nn.Module,
    sequences: list[np.ndarray],
    seen: sp.csr_matrix,
    encoder: PairEncoder,
    params: dict[str, Any],
    dp_params: dict[str, Any],
    *,
    evaluate: Callable[[torch.nn.Module], dict[str, float]] | None,
    prefix_of: Callable[[int], list[int]],
    autocast: Callable[[], Any],
) -> tuple[torch.nn.Module, list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Step 0, then up to ``epochs`` epochs of user-level DP-SGD with early stopping.

    ``params``: the recommender's ``get_params()``; ``dp_params``: ``epsilon``, ``delta``,
    ``noise_multiplier``, ``max_grad_norm``; ``evaluate``: the validation metrics of the
    network (``valid_auc``), None without validation data. Returns the network with the
    kept weights, the learning curve, what the ordinary loop's result gives the recommender
    (``best_step``, ``best_epoch``, ``best_value``, ``steps``, ``stopped_early``,
    ``train_seconds``, ``examples_per_second``) and the privacy record
    (`recarena.privacy.dp.DPRecord.as_dict`).
    """
    from recarena.privacy.dp import UserLevelDPSGD

    users = np.flatnonzero([len(s) > 0 for s in sequences]).astype(np.int64)
    optimizer = tr.adamw(network, params["lr"], params["weight_decay"])
    dp = UserLevelDPSGD(
        network,
        optimizer,
        n_users=len(users),
        batch_size=params["batch_size"],
        epochs=max(params["epochs"], 1),
        epsilon=dp_params["epsilon"],
        delta=dp_params["delta"],
        noise_multiplier=dp_params["noise_multiplier"],
        max_grad_norm=dp_params["max_grad_norm"],
        seed=params["seed"],
    )
    budget = params["epochs"] * dp.steps_per_epoch
    if params["max_steps"] is not None:
        budget = min(budget, params["max_steps"])
    schedule = tr.linear_warmup(optimizer, round(params["warmup_ratio"] * budget), budget)
    rng = np.random.default_rng([params["seed"], 4244])
    log: list[dict[str, Any]] = []
    examples, steps, train_seconds = 0, 0, 0.0
    stopped_early = False
    began = time.perf_counter()

    def measure(epoch: int, loss: float | None) -> float | None:
        row: dict[str, Any] = {"epoch": epoch, "step": steps, "train_loss": loss}
        row["lr"] = float(optimizer.param_groups[0]["lr"]) if steps else 0.0
        value = None
        if evaluate is not None:
            network.eval()
            with torch.inference_mode(), autocast():
                metrics = evaluate(network)
            row.update(metrics)
            value = float(metrics["valid_auc"])
        row.update(examples=examples, seconds=time.perf_counter() - began, epsilon=dp.epsilon())
        log.append(row)
        return value

    best = tr.BestWeights(
        network,
        patience=params["patience"],
        value=None if evaluate is None else measure(0, None),
        step=0,
    )
    out_of_budget = False
    for epoch in range(1, params["epochs"] + 1):
        if steps >= budget:  # max_steps 0: a refit of a model whose step 0 was best
            break
        network.train()
        losses = []
        epoch_began = time.perf_counter()
        for picked in dp.epoch_batches():
            batch = users[picked]
            rows, labels = _user_batches(
                batch, sequences, seen, encoder, params, rng, prefix_of=prefix_of
            )

            def loss_of(i: int, rows: list[Any] = rows, labels: list[Any] = labels) -> Any:
                return _user_loss(network, encoder, rows[i], labels[i], params["loss"], autocast)

            loss = dp.step_each(loss_of, len(batch))
            schedule.step()
            steps += 1
            examples += sum(len(r) for r in rows)
            if not math.isnan(loss):
                losses.append(loss)
            seconds = train_seconds + time.perf_counter() - epoch_began
            if steps >= budget or (
                params["max_train_seconds"] is not None and seconds > params["max_train_seconds"]
            ):
                out_of_budget = True
                break
        train_seconds += time.perf_counter() - epoch_began
        mean_loss = float(np.mean(losses)) if losses else None
        value = measure(epoch, mean_loss)
        logger.info(
            "cross-encoder (private) epoch %d: loss %s, valid AUC %s, epsilon %.2f",
            epoch,
            "-" if mean_loss is None else f"{mean_loss:.4f}",
            "-" if value is None else f"{value:.4f}",
            dp.epsilon(),
        )
        if best.offer(epoch, value, step=steps):
            stopped_early = True
            break
        if out_of_budget:
            break
    best.restore()
    if evaluate is not None and best.epoch == 0:
        logger.info("cross-encoder (private): no epoch beat the untrained model; keeping it")
    result = {
        "best_step": best.extra["step"],
        "best_epoch": best.epoch,
        "best_value": None if evaluate is None else best.value,
        "steps": steps,
        "stopped_early": stopped_early,
        "train_seconds": train_seconds,
        "examples_per_second": examples / train_seconds if train_seconds > 0 else 0.0,
    }
    return network.eval(), log, result, dp.record().as_dict()


def _user_batches(
    batch: np.ndarray,
    sequences: list[np.ndarray],
    seen: sp.csr_matrix,
    encoder: PairEncoder,
    params: dict[str, Any],
    rng: np.random.Generator,
    *,
    prefix_of: Callable[[int], list[int]],
) -> tuple[list[list[Any]], list[np.ndarray]]:
    """Each sampled user's token pairs (`DP_POSITIVES_PER_USER` positions, each with its
    negatives) and labels (1 for a positive, 0 for a negative, -1 for a missing one)."""
    n_neg = params["n_negatives"]
    history_len = params["history_len"]
    all_rows, all_labels = [], []
    for user in batch.tolist():
        seq = sequences[user]
        positions = rng.integers(0, len(seq), size=DP_POSITIVES_PER_USER)
        negatives = sample_negatives(seen, np.full(len(positions), user), n_neg, rng)
        prefix = prefix_of(int(user))
        rows, labels = [], []
        for position, negs in zip(positions.tolist(), negatives, strict=True):
            history = seq[max(0, position - history_len) : position][::-1]
            tokens = encoder.history(history, prefix)
            target = int(seq[position])
            rows.append(encoder.pair(tokens, target))
            labels.append(1)
            for item in negs.tolist():  # -1: a user with every item has none left
                rows.append(encoder.pair(tokens, target if item < 0 else int(item)))
                labels.append(-1 if item < 0 else 0)
        all_rows.append(rows)
        all_labels.append(np.asarray(labels, dtype=np.int64))
    return all_rows, all_labels


def _user_loss(
    network: torch.nn.Module,
    encoder: PairEncoder,
    rows: list[Any],
    labels: np.ndarray,
    loss: str,
    autocast: Callable[[], Any],
) -> torch.Tensor:
    """One user's loss over their pairs: the ordinary recipe's ``"bce"`` or ``"softmax"``."""
    device = next(network.parameters()).device
    batch = {k: v.to(device) for k, v in encoder.collate(rows).items()}
    with autocast():
        logits = network(**batch).float()
    target = torch.from_numpy(labels).to(device)
    keep = target >= 0
    if loss == "softmax":
        groups = logits.view(-1, len(labels) // DP_POSITIVES_PER_USER)
        keep = keep.view(groups.shape)
        groups = groups.masked_fill(~keep, float("-inf"))
        zeros = torch.zeros(len(groups), dtype=torch.long, device=device)
        return F.cross_entropy(groups, zeros)
    return F.binary_cross_entropy_with_logits(logits[keep], target[keep].float())
