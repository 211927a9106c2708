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
Popularity prior (``prior_passes``)
    Optionally, before pair training: the network regresses each item's training log-odds
    (`popularity_logits`) from the item's text alone, a few passes over the catalog
    (`fit_popularity_prior`); its outputs become a fixed logit per item, added to the
    network's in training, validation and scoring, and the head restarts at zero, so pair
    training learns what the history adds to the popularity the text carries.
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
) -> tuple[Rows, np.ndarray, np.ndarray] | None:
    """Frozen validation pairs: held-out item(s) + sampled negatives per user, their
    labels and their candidate items.

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
    items: list[int] = []
    for r, user in enumerate(users):
        prefix = prefix_of(int(user)) if prefix_of is not None else ()
        history = encoder.history(history_of(int(user)), prefix)
        positives = held.indices[held.indptr[user] : held.indptr[user + 1]]
        for item, label in [(p, 1) for p in positives] + [(n, 0) for n in negatives[r] if n >= 0]:
            rows.append(encoder.pair(history, int(item)))
            labels.append(label)
            items.append(int(item))
    return rows, np.asarray(labels, dtype=np.int64), np.asarray(items, dtype=np.int64)


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
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "valid", "offset")}
        logits = net(**inputs).float().view(labels.shape)
        if "offset" in batch:  # the popularity prior's fixed logit of each pair's item
            logits = logits + batch["offset"]
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
    ``config.eval_every`` steps and keeps the best weights, step 0's included (after the
    popularity prior, training may not improve on it).
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
    result = tr.train_loop(
        accelerator,
        network,
        loader,
        pair_loss(loss),
        config,
        evaluate=evaluate,
        start_metrics=start_record,
    )
    return result, ([start_record] if start_record else []) + result.log


def popularity_logits(
    sequences: list[np.ndarray] | tuple[np.ndarray, ...],
    seen: Any,
    n_items: int,
    n_negatives: int,
    smoothing: float = 0.5,
) -> np.ndarray:
    """Each item's log-odds of being a training positive rather than one of its
    ``n_negatives`` negatives, as a pair with no history sees it.

    Positives are training positions drawn uniformly (item ``i`` with probability
    ``c_i / N``, its share of the training interactions); each comes with ``n_negatives``
    items drawn uniformly from those its user never touched (item ``i`` with probability
    ``q_i``, the mean over positions of ``1 / (n_items - |S_u|)`` where ``i`` is not in the
    user's items ``S_u``). Binary cross-entropy on such pairs, with nothing to read but the
    candidate, is minimised by the logit ``log(c_i / N) - log(n_negatives * q_i)``: this
    function returns that value (``c_i`` smoothed by ``smoothing``, so an item never seen
    in training gets a finite, low value). It orders items as their training counts do,
    adjusted for how often each can be drawn as a negative.
    """
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.float64, count=len(sequences))
    flat = (
        np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences])
        if len(sequences)
        else np.empty(0, np.int64)
    )
    total = max(float(lengths.sum()), 1.0)
    counts = np.bincount(flat, minlength=n_items).astype(np.float64)
    binary = seen.tocsr().astype(bool).astype(np.float64)
    unseen = np.maximum(n_items - np.asarray(binary.sum(axis=1)).ravel(), 1.0)
    weight = lengths / unseen  # positions of user u, each spreading its negatives
    q = (weight.sum() - binary.T @ weight) / total
    q = np.maximum(q, 1e-12)
    return np.log((counts + smoothing) / total) - np.log(n_negatives * q)


def fit_popularity_prior(
    network: torch.nn.Module,
    encoder: PairEncoder,
    rows: Rows,
    target: np.ndarray,
    *,
    passes: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    max_grad_norm: float | None,
    autocast: Callable[[], Any],
    seed: int,
) -> list[dict[str, float]]:
    """Regress the network's logit of every item's history-free pair (``rows``, one per
    item, in item order) on ``target`` (`popularity_logits`), ``passes`` times over the
    catalog in a seeded order.

    The regression runs on the standardised target; the head is then rescaled so that the
    network outputs the target's own scale (the log-odds that the pair loss converges to
    for a pair without history). The recommender keeps those outputs as a fixed logit per
    item and zeroes the head (`zero_head`) before pair training. Returns one record
    per pass: its mean squared error (standardised), the Pearson correlation of the
    logits with the target, and the seconds since the start.
    """
    import time

    device = next(network.parameters()).device
    mean, std = float(target.mean()), float(target.std()) or 1.0
    z = torch.tensor((target - mean) / std, dtype=torch.float32)
    optimizer = tr.adamw(network, lr, weight_decay)
    generator = torch.Generator().manual_seed(int(seed))
    trainable = [p for p in network.parameters() if p.requires_grad]
    log: list[dict[str, float]] = []
    start = time.perf_counter()
    network.train()
    for n in range(1, passes + 1):
        order = torch.randperm(len(rows), generator=generator).tolist()
        outputs = np.empty(len(rows), dtype=np.float64)
        squared = 0.0
        for begin in range(0, len(order), batch_size):
            idx = order[begin : begin + batch_size]
            batch = {k: v.to(device) for k, v in encoder.collate([rows[i] for i in idx]).items()}
            with autocast():
                out = network(**batch).float()
            loss = torch.nn.functional.mse_loss(out, z[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)
            optimizer.step()
            squared += float(loss.detach()) * len(idx)
            outputs[idx] = out.detach().cpu().numpy()
        record = {
            "pass": n,
            "mse": squared / len(rows),
            "pearson": float(np.corrcoef(outputs, z.numpy())[0, 1]) if len(rows) > 1 else 0.0,
            "seconds": time.perf_counter() - start,
        }
        log.append(record)
        logger.info("cross-encoder popularity prior: %s", record)
    with torch.no_grad():  # from the standardised scale to the log-odds
        network.head.weight.mul_(std)
        network.head.bias.mul_(std).add_(mean)
    return log


def zero_head(network: torch.nn.Module) -> None:
    """Zero the head's weights and bias: the network then adds nothing to a fixed offset
    until pair training moves it (the gradient still reaches the head)."""
    with torch.no_grad():
        network.head.weight.zero_()
        network.head.bias.zero_()
