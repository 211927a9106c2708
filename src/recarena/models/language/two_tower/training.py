"""How the two-tower trains: the warm start, step 0, the epochs and early stopping.

**Warm start.** Before any training step the model *is* `lm-frozen` with the same encoder,
text, truncation, ``recency_decay`` and ``history_len`` (with validation data and
``tune_warm_start``, the pair of lm-frozen's grid that ranks the validation users best, as
lm-frozen's own tuning would pick it): the item vectors are the frozen
encoder's (LoRA's second matrices start at zero, ID embeddings at zero), the user vector is
the recency-weighted mean of the history's vectors (the attention pooling starts with a zero
query, recency biases ``age * log(recency_decay)`` and an identity output map), and scores
are cosines. The temperature and the logQ correction only shape the training loss. This
untrained state is measured on validation first (step 0, epoch 0 in the log) and competes
with every epoch: an epoch is kept only if it beats every earlier measurement, step 0
included, so early stopping can only keep or improve on the frozen vectors. When no epoch
beats it, ``best_epoch_`` is 0 and the refit trains no epoch.

What is cheap and what is not, on a CPU:

- The layers below the tuned ones never change, so their output for every item's text is
  computed once per fit and cached (`recarena.lm.top_layers.TopLayerEncoder`); a training
  step runs only the tuned top layers, and so does the re-encoding of the catalog.
- Only the *target* items of a batch run through the language model with gradients (each
  distinct target once). The history side reads the item vectors of the whole catalog as
  encoded (without gradients) after the previous epoch, plus the ID embeddings and the pooling
  weights, which do get gradients. The tower is shared; only the gradient through the
  history's text is cut. ``history_grad=True`` encodes the distinct history items with
  gradients as well (the full two-tower gradient; several times the cost, for GPUs).
- The catalog is encoded once per epoch without gradients: that table scores the validation
  users (early stopping on NDCG@10) and feeds the next epoch's histories. The first table
  comes from `recarena.lm.encoder.ItemTextEncoder`, so the untrained encoder's vectors are
  shared with (and cached for) the frozen-feature models and the refit.
- Early stopping ranks the validation users' held-out items over the full catalog, or, in
  a cold-item split (no validation item was trained on), among the items without training
  interactions, as the runner does (`cold_validation_pool`).
- ``max_train_pairs`` (user, position) pairs are drawn per epoch, seeded, from all positions
  of the training sequences; ``max_length`` caps the tokens per item text.

Training runs through `recarena.lm.training.train_loop` on Hugging Face Accelerate: the same
code runs on a CPU, one GPU, or several GPUs under ``accelerate launch`` (each process trains
on its share of the pairs; the gradients are averaged; every process encodes the catalog for
validation, so all reach the same early-stopping decision). On a GPU the forward passes use
bfloat16 (float16 where bfloat16 is unsupported) mixed precision. AdamW (no decay on biases,
norms and the heads), gradients clipped at norm 1, a constant learning rate, so that a refit
for ``refit_params()`` epochs retraces the validation fit.

The validation ranking itself is the recommender's (`TwoTowerRecommender._validation_ndcg`,
passed in as ``measure``): it ranks as the runner does, with the recommender's scoring.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from recarena.data.dataset import interactions_csr
from recarena.lm.top_layers import TopLayerEncoder
from recarena.lm.training import LoopConfig, adamw, train_loop
from recarena.models.base import TrainingData
from recarena.models.language.common import trainable_encoder
from recarena.models.language.two_tower.batching import ItemTokens, PairBatches, next_item_pairs
from recarena.models.language.two_tower.network import TowerHeads, TwoTowerNetwork

logger = logging.getLogger(__name__)

#: cut-off of the validation metric used for early stopping, and its name in the logs
EVAL_K = 10
MONITOR = f"valid_ndcg@{EVAL_K}"
#: what train_loop monitors: the validation NDCG@10 where it beats every earlier
#: measurement (step 0 included), NaN elsewhere; train_loop never keeps a NaN as best and
#: counts it towards patience, so step 0 competes as if train_loop had measured it
GAIN = "valid_gain"

#: NDCG@10 of a catalog text table and heads over validation users and their held-out items
Measure = Callable[[np.ndarray, TowerHeads, np.ndarray, Any], float]


@dataclass(frozen=True)
class TrainParams:
    """The recommender's parameters that shape training (see `TwoTowerRecommender`);
    ``history_len`` is the one the warm start chose (``history_len_``)."""

    tuning: str
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    lora_targets: list[str] | None
    train_layers: int | None
    history_len: int | None
    history_grad: bool
    temperature: float
    logq_correction: bool
    batch_size: int
    max_train_pairs: int | None
    epochs: int
    patience: int
    lr: float | None
    head_lr: float
    weight_decay: float
    max_valid_users: int | None
    encode_batch_size: int
    seed: int

    @classmethod
    def of(cls, params: dict[str, Any], **chosen: Any) -> TrainParams:
        """From ``get_params()``, with the values the fit chose (``history_len``) over them."""
        names = {f.name for f in fields(cls)}
        return cls(**{**{k: v for k, v in params.items() if k in names}, **chosen})


def untrained_encoder(
    model: str,
    data: TrainingData,
    *,
    max_length: int,
    batch_size: int,
    template: str,
    device: str,
) -> tuple[np.ndarray, Any, Any]:
    """The untrained encoder's catalog table, the loaded encoder and the resolved zoo entry.

    The table is cached and shared with the frozen-feature models (lm-frozen reads the same
    vectors: the warm start is lm-frozen).
    """
    from recarena.lm.encoder import ItemTextEncoder
    from recarena.lm.zoo import resolve_model

    assert data.item_text is not None  # its length is checked by Recommender.fit
    resolved = resolve_model(model, data.cache_dir)
    if resolved.format != "transformers" or resolved.family == "decoder":
        raise ValueError(
            f"{resolved.name} is a {resolved.format} {resolved.family or ''} model; the "
            "two-tower trains a transformers encoder (BERT-style)"
        )
    # float32 weights, since they are trained next (autocast does the rest)
    first = ItemTextEncoder(
        model,
        cache_dir=data.cache_dir,
        pooling="mean",
        max_length=max_length,
        batch_size=batch_size,
        template=template,
        device=device,
        dtype="float32",
        progress=False,
    )
    table = first.encode(data.item_text)
    loaded = first.load()  # the encoder that just encoded, or a load on a cache hit
    first.unload()
    if loaded.backend != "torch" or loaded.family != "encoder":
        raise ValueError(f"{resolved.name} is not a transformers encoder (BERT-style)")
    return table, loaded, resolved


def warm_start_pairs(
    history_len: int | None, recency_decay: float
) -> list[tuple[int | None, float]]:
    """The (history_len, recency_decay) of `FrozenLMRecommender.param_grid` to try, in order.

    The given pair first (it wins ties), then shorter histories first: of equal rankings,
    the first tried is kept, and a shorter history makes every training step cheaper.
    """
    from recarena.models.language.frozen import FrozenLMRecommender

    grid = FrozenLMRecommender.param_grid
    windows = sorted(grid["history_len"], key=lambda h: math.inf if h is None else h)
    return [(history_len, recency_decay)] + [
        (h, d)
        for h in windows
        for d in grid["recency_decay"]
        if (h, d) != (history_len, recency_decay)
    ]


def tune_warm_start(
    pairs: list[tuple[int | None, float]],
    measure: Callable[[int | None, float], float],
    tried: list[dict[str, Any]],
) -> tuple[int | None, float]:
    """Measure the untrained tower of each pair (appended to ``tried``); the best pair.

    ``measure(history_len, recency_decay)`` is the validation NDCG@10 of the untrained tower
    with those values, measured as step 0 is.
    """
    for history_len, decay in pairs:
        ndcg = measure(history_len, decay)
        tried.append({"history_len": history_len, "recency_decay": decay, MONITOR: ndcg})
    chosen = max(tried, key=lambda row: row[MONITOR])  # the first of ties
    logger.info(
        "two-tower: warm start from lm-frozen with history_len %s, recency_decay %s "
        "(%s %.4f; %d tried)",
        chosen["history_len"],
        chosen["recency_decay"],
        MONITOR,
        chosen[MONITOR],
        len(pairs),
    )
    return chosen["history_len"], chosen["recency_decay"]


def build_network(
    loaded: Any,
    tokens: ItemTokens,
    make_heads: Callable[[int], TowerHeads],
    item_has_id: np.ndarray,
    params: TrainParams,
) -> TwoTowerNetwork:
    """The loaded encoder with its top ``train_layers`` trainable, the heads and the encoder
    of the top layers over cached lower states, joined (on the CPU)."""
    n_layers = int(getattr(loaded.model.config, "num_hidden_layers", 0) or 0)
    if params.train_layers is not None and not 1 <= params.train_layers <= max(n_layers, 1):
        raise ValueError(f"train_layers must be between 1 and the model's {n_layers} layers")
    n_top = n_layers if params.train_layers is None else params.train_layers
    lm = trainable_encoder(
        loaded.model,
        params.tuning,
        n_top,
        lora_r=params.lora_r,
        lora_alpha=params.lora_alpha,
        lora_dropout=params.lora_dropout,
        lora_targets=params.lora_targets,
    )
    heads = make_heads(int(loaded.dim))  # after the adapters: their random draws come first
    if heads.id_embedding is not None:
        heads.id_mask.copy_(torch.from_numpy(item_has_id.astype(np.float32))[:, None])
    encoder = TopLayerEncoder(lm, n_top, tokens.ids, tokens.pad)
    return TwoTowerNetwork(lm, heads, encoder)


def training_pairs(sequences: list[np.ndarray]) -> np.ndarray:
    """Every (user, position) pair to train on; a `ValueError` when there is none."""
    pairs = next_item_pairs(sequences)
    if len(pairs) == 0:
        raise ValueError("no user has two training interactions: nothing to train on")
    return pairs


def validation_targets(
    valid: pd.DataFrame | None,
    data: TrainingData,
    rng: np.random.Generator,
    max_users: int | None,
) -> tuple[np.ndarray | None, Any]:
    """The validation users (a seeded sample of ``max_users``) and their held-out items."""
    if valid is None or len(valid) == 0:
        return None, None
    users = np.unique(valid["user"].to_numpy()).astype(np.int64)
    if max_users is not None and len(users) > max_users:
        users = np.sort(rng.choice(users, size=max_users, replace=False))
    return users, interactions_csr(valid, data.n_users, data.n_items)


def log_row(
    log: list[dict[str, Any]],
    epoch: int,
    loss: float | None,
    pairs: int,
    ndcg: float | None,
    seconds: float,
    encode_seconds: float | None,
) -> None:
    """Append one measurement to ``log`` (``training_log_``)."""
    log.append(
        {
            "epoch": epoch,
            "loss": loss,
            "pairs": pairs,
            MONITOR: ndcg,
            "seconds": seconds,
            "encode_seconds": encode_seconds,
        }
    )
    if epoch == 0:
        logger.info("two-tower: untrained (step 0): %s %.4f", MONITOR, ndcg)


def make_optimizer(net: TwoTowerNetwork, params: TrainParams) -> tuple[float, torch.optim.AdamW]:
    """The encoder's learning rate (``lr``; None: 5e-4 for LoRA, 5e-5 for full tuning) and
    AdamW over the encoder's trained weights, then the heads at ``head_lr``."""
    lr = params.lr if params.lr is not None else (5e-4 if params.tuning == "lora" else 5e-5)
    optimizer = adamw(net.lm, lr, params.weight_decay)
    # no decay on the heads: it would pull the pooling's identity map to zero
    optimizer.add_param_group(
        {"params": list(net.heads.parameters()), "lr": params.head_lr, "weight_decay": 0.0}
    )
    return lr, optimizer


def train(
    accelerator: Any,
    net: TwoTowerNetwork,
    data: TrainingData,
    pairs: np.ndarray,
    table: np.ndarray,
    valid: pd.DataFrame | None,
    params: TrainParams,
    measure: Measure,
    log: list[dict[str, Any]],
) -> tuple[TwoTowerNetwork, np.ndarray, int, float | None]:
    """Step 0, then the epochs through `recarena.lm.training.train_loop`.

    Returns the network with the kept weights (the best measurement's, step 0 included,
    with validation data; the last epoch's without), the catalog text table of those
    weights, the kept epoch and its validation NDCG@10 (None without validation data).
    Each measurement is appended to ``log`` as it is made.
    """
    targets = np.concatenate([seq[1:] for seq in data.sequences])
    share = np.maximum(np.bincount(targets, minlength=data.n_items), 1) / len(pairs)
    log_q = torch.from_numpy(np.log(share).astype(np.float32)).to(accelerator.device)
    rng = np.random.default_rng(params.seed)
    valid_users, truth = validation_targets(valid, data, rng, params.max_valid_users)
    best = {"ndcg": -math.inf, "table": table}

    # step 0: the untrained model, i.e. lm-frozen, measured on validation; it competes
    # with every epoch as the weights to keep
    if valid_users is not None:
        began = time.perf_counter()
        net.eval()
        with torch.inference_mode(), accelerator.autocast():
            best["ndcg"] = measure(table, net.heads, valid_users, truth)
        log_row(log, 0, None, 0, best["ndcg"], time.perf_counter() - began, 0.0)
    best_epoch, best_value = 0, None if valid_users is None else best["ndcg"]
    if params.epochs == 0:
        return net.eval(), table, best_epoch, best_value
    untrained = {
        k: v.detach().to("cpu", copy=True)
        for k, v in net.state_dict().items()
        if k in {n for n, p in net.named_parameters() if p.requires_grad}
    }

    began = time.perf_counter()
    net.encoder.build_cache(params.encode_batch_size, autocast=accelerator.autocast)
    cache_seconds = time.perf_counter() - began
    batches = PairBatches(data.sequences, pairs, params.history_len, params.history_grad)
    batches.table = table
    budget = (
        len(pairs) if params.max_train_pairs is None else min(params.max_train_pairs, len(pairs))
    )
    # a fresh seeded draw of `budget` pairs each epoch (no replacement within an epoch)
    sampler = torch.utils.data.RandomSampler(
        range(len(pairs)),
        num_samples=budget,
        generator=torch.Generator().manual_seed(params.seed),
    )
    loader = torch.utils.data.DataLoader(
        range(len(pairs)), batch_size=params.batch_size, sampler=sampler, collate_fn=batches
    )

    def loss_fn(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        items = batch["items"]
        n_targets = int(batch["n_targets"])
        users, vectors = model(
            items,
            n_targets,
            batch["history_items"],
            batch["history_valid"],
            history_text=batch.get("history_text"),
            history_index=batch.get("history_index"),
        )
        # the logits in float32, outside autocast: at temperature 0.05 they span tens
        logits = (users.float() @ vectors.float().T) / params.temperature
        if params.logq_correction:
            logits = logits - log_q[items[:n_targets]]
        return F.cross_entropy(logits, batch["target_index"])

    def evaluate(model: nn.Module) -> dict[str, float]:
        # the catalog as the encoder now sees it: the next epoch's histories read it
        began = time.perf_counter()
        encoded = model.encoder.encode_all(params.encode_batch_size).cpu().numpy()
        batches.table = encoded
        seconds = time.perf_counter() - began
        if valid_users is None:
            best["table"] = encoded
            return {MONITOR: math.nan, GAIN: math.nan, "encode_seconds": seconds}
        ndcg = measure(encoded, model.heads, valid_users, truth)
        gain = math.nan
        if ndcg > best["ndcg"]:
            best["ndcg"], best["table"], gain = ndcg, encoded, ndcg
        return {MONITOR: ndcg, GAIN: gain, "encode_seconds": seconds}

    lr, optimizer = make_optimizer(net, params)
    # a constant rate: a refit for refit_params()'s epochs retraces the validation fit
    constant = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    config = LoopConfig(
        epochs=params.epochs,
        lr=lr,
        weight_decay=params.weight_decay,
        warmup_ratio=0.0,
        max_grad_norm=1.0,
        patience=params.patience if valid_users is not None else None,
        monitor=GAIN,
        keep_best="trainable",
        progress=False,
        desc="two-tower",
    )
    result = train_loop(
        accelerator,
        net,
        loader,
        loss_fn,
        config,
        evaluate=evaluate,
        optimizer=optimizer,
        scheduler=constant,
    )
    for row in result.log:
        log_row(
            log,
            row["epoch"],
            row["train_loss"],
            row["examples"],
            None if valid_users is None else row.get(MONITOR),
            row["seconds"] + cache_seconds,
            row.get("encode_seconds"),
        )
    net = result.model
    if valid_users is None:
        best_epoch = result.epochs
    elif result.best_value is None:
        # no epoch beat the untrained model: keep it
        logger.info("two-tower: no epoch beat the untrained model (step 0); keeping it")
        net.load_state_dict(
            {k: v.to(next(net.parameters()).device) for k, v in untrained.items()},
            strict=False,
        )
        best["table"] = table
    else:
        best_epoch, best_value = result.best_epoch, result.best_value
    return net.eval(), best["table"], best_epoch, best_value
