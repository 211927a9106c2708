"""How the cross-encoder is set up and fine-tuned, and why (a pair classifier set up
otherwise can stall at a constant output, training loss ln 2 and AUC .5, which is a failure
of the set-up, not of the method):

Pooling and head
    A fresh linear head reads one vector per pair. ``pooling="mean"`` averages the token
    states (the pooling sentence encoders such as all-MiniLM-L6-v2 were trained with);
    ``"cls"`` reads the [CLS] state through a *re-initialised* pooler (dense + tanh): the
    pooler that sentence-encoder checkpoints carry was never trained, and its outputs
    barely differ between inputs. ``"auto"`` (default) takes the checkpoint's own pooling
    (mean for the zoo's sentence encoders). The choice is a parameter, so the runner can
    choose it on validation (``grid = { pooling = ["mean", "cls"] }``) and records it.
Input order
    The candidate comes first, at fixed positions, and is never cut; the history follows,
    most recent item first, and only the history is cut (from its old end) to fit
    ``max_length`` tokens. A candidate buried behind a long history at varying positions
    makes differences between users swamp differences between candidates.
Training
    Held-in positives: a seeded sample of at most ``max_train_pairs`` (user, position)
    pairs of the training sequences, each position's item with the ``history_len`` items
    before it as the history (newest first; position 0 has an empty history). Each positive
    gets ``n_negatives`` negatives with the same history, drawn afresh every epoch,
    uniformly from the items the user never interacted with in the training data. Loss:
    ``"bce"`` (each pair a binary label) or ``"softmax"`` (cross-entropy of the positive
    against its own negatives). AdamW with linear warm-up (``warmup_ratio``) and decay,
    gradient clipping, through `recarena.lm.training` (Hugging Face Accelerate: one CPU, one
    GPU, or several GPUs with ``accelerate launch``).
Budget on a CPU
    Short pairs (``max_length`` 64: the candidate and a few recent titles), dynamic padding,
    the word-embedding matrix frozen (``freeze_embeddings``: the optimizer then skips its
    ~12M entries, the bulk of a small encoder's weights, while every transformer layer
    trains), optionally only the bottom ``num_layers`` layers, and bfloat16 autocast where
    the CPU has bfloat16 instructions (``mixed_precision="auto"``; weights and optimizer
    state stay float32). ``max_train_seconds`` caps the training's wall time.
Early stopping and the learning curve
    With validation data (``valid`` given to ``fit``: each validation user's held-out
    item), a frozen validation set is drawn once per fit, seeded: at most
    ``max_valid_users`` users, their held-out item(s) against ``n_valid_negatives`` items
    they never interacted with, with the user's training history. Its ROC AUC is measured
    before training (step 0) and every ``eval_every`` steps: ``training_log_`` is the
    learning curve. The best weights are kept and ``refit_params()`` gives the step count
    to train on train + valid without validation.

Here: the checkpoint's resolution (`resolve_checkpoint`), the validation set and its
metrics (`validation_set`, `validation_metrics`), the losses (`pair_loss`) and the loop
(`fine_tune`, with `loop_config`); the token pairs and training batches are in `batching`,
the network in `network`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from recarena.errors import ConfigError
from recarena.lm import training as tr
from recarena.models.base import TrainingData
from recarena.models.language.cross_encoder.batching import PairEncoder, sample_negatives

logger = logging.getLogger(__name__)

#: the validation metric that early stopping watches (higher is better)
MONITOR = "valid_auc"
#: the progress bar's label
DESC = "fine-tuning cross-encoder"
#: the recommender's parameters that are `recarena.lm.training.LoopConfig` fields of the
#: same name
LOOP_PARAMS = (
    "epochs",
    "max_steps",
    "lr",
    "weight_decay",
    "warmup_ratio",
    "max_grad_norm",
    "eval_every",
    "patience",
    "progress",
)

#: token pairs: (ids, token type ids) each
Rows = list[tuple[list[int], list[int]]]


def resolve_checkpoint(model: str, pooling: str, cache_dir: Path | None) -> tuple[str, str]:
    """What to load for ``model`` (a zoo name, a local folder or a hub id), and the pooling
    (``pooling`` with ``"auto"`` resolved to the checkpoint's own)."""
    from recarena.lm.zoo import resolve_model

    resolved = resolve_model(model, cache_dir)
    if resolved.format != "transformers":
        raise ConfigError(
            f"{resolved.name} is a {resolved.format} model: the cross-encoder fine-tunes "
            "a transformers encoder (e.g. minilm-l6, mpnet-base, a local folder or hub id)"
        )
    chosen = resolved.default_pooling if pooling == "auto" else pooling
    if chosen not in ("mean", "cls"):
        raise ConfigError(
            f"{resolved.name} pools by {chosen!r}; the cross-encoder reads the mean "
            "of the token states or the [CLS] state: set pooling = 'mean' or 'cls'"
        )
    return resolved.load_target, chosen


def validation_set(
    data: TrainingData,
    valid: pd.DataFrame | None,
    encoder: PairEncoder,
    rng: np.random.Generator,
    *,
    history_of: Callable[[int], np.ndarray],
    prefix_of: Callable[[int], list[int]] | None = None,
    max_users: int | None,
    n_negatives: int,
) -> tuple[Rows, np.ndarray] | None:
    """Frozen validation pairs: held-out item(s) + sampled negatives per user, labels.

    At most ``max_users`` users (drawn from ``rng``), each with ``n_negatives`` items they
    never interacted with (training or validation), all with the user's history
    (``history_of(user)``: item ids, newest first; ``prefix_of(user)``: the tokens before
    it, `PairEncoder.history`). None without validation data.
    """
    if valid is None or len(valid) == 0:
        return None
    from recarena.data.dataset import interactions_csr

    held = interactions_csr(valid, data.n_users, data.n_items)
    users = np.unique(valid["user"].to_numpy()).astype(np.int64)
    if max_users is not None and len(users) > max_users:
        users = np.sort(rng.choice(users, size=max_users, replace=False))
    exclude = (data.csr() + held).tocsr()
    negatives = sample_negatives(exclude, users, n_negatives, rng)
    rows: Rows = []
    labels: list[int] = []
    for r, user in enumerate(users):
        prefix = prefix_of(int(user)) if prefix_of is not None else ()
        history = encoder.history(history_of(int(user)), prefix)
        positives = held.indices[held.indptr[user] : held.indptr[user + 1]]
        for item, label in [(p, 1) for p in positives] + [(n, 0) for n in negatives[r] if n >= 0]:
            rows.append(encoder.pair(history, int(item)))
            labels.append(label)
    return rows, np.asarray(labels, dtype=np.int64)


def validation_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """ROC AUC of the validation pairs' logits, and their binary cross-entropy."""
    from recarena.metrics.pointwise import roc_auc

    z = logits.astype(np.float64)
    # -log sigmoid(z) for positives, -log(1 - sigmoid(z)) for negatives, stably
    loss = float(np.mean(np.logaddexp(0.0, np.where(labels == 1, -z, z))))
    return {"valid_auc": roc_auc(labels, logits), "valid_loss": loss}


def pair_loss(loss: str) -> Callable[[Any, dict[str, Any]], torch.Tensor]:
    """The training loss of a batch (`batching.training_loader`): ``"bce"``, binary
    cross-entropy of every pair that is not masked out; ``"softmax"``, cross-entropy of
    each positive against its own negatives."""

    def loss_fn(net: Any, batch: dict[str, Any]) -> torch.Tensor:
        labels, keep = batch["labels"], batch["valid"]
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "valid")}
        logits = net(**inputs).float().view(labels.shape)
        if loss == "softmax":
            logits = logits.masked_fill(~keep, float("-inf"))
            target = torch.zeros(len(labels), dtype=torch.long, device=logits.device)
            return torch.nn.functional.cross_entropy(logits, target)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits[keep], labels[keep])

    return loss_fn


def loop_config(params: Mapping[str, Any]) -> tr.LoopConfig:
    """The loop's settings from the recommender's parameters (``get_params()``)."""
    return tr.LoopConfig(
        **{name: params[name] for name in LOOP_PARAMS},
        monitor=MONITOR,
        mode="max",
        max_seconds=params["max_train_seconds"],
        desc=DESC,
    )


def fine_tune(
    accelerator: Any,
    network: torch.nn.Module,
    loader: Any,
    config: tr.LoopConfig,
    loss: str,
    evaluate: Callable[[Any], dict[str, float]] | None,
) -> tuple[tr.LoopResult, list[dict[str, Any]]]:
    """Train ``network`` on ``loader``'s batches: the loop's result and the learning curve.

    With ``evaluate`` (the validation metrics of a network) the untrained network is
    measured first, as step 0 of the curve; the loop then measures it every
    ``config.eval_every`` steps and keeps the best weights.
    """
    start_record: dict[str, Any] | None = None
    if evaluate is not None:
        network.to(accelerator.device).eval()
        with torch.inference_mode(), accelerator.autocast():
            start_record = {"epoch": 0, "step": 0, "train_loss": None, "lr": 0.0}
            start_record.update(evaluate(network))
        start_record.update({"examples": 0, "seconds": 0.0})
        logger.info("fine-tuning cross-encoder: before training: %s", start_record)
        network.train()
    result = tr.train_loop(accelerator, network, loader, pair_loss(loss), config, evaluate=evaluate)
    return result, ([start_record] if start_record else []) + result.log
