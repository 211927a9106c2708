"""The cross-encoder's network: the encoder, a pooling of its token states (the mean under
the attention mask, or a fresh dense + tanh pooler on the first token) and a linear head,
one logit per (candidate, history) pair; loading a checkpoint into it (`load_pair_scorer`)
and its forward passes over token pairs (`predict_logits`). Imported when a model is built,
so that importing the recommender needs no torch."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from recarena.errors import ConfigError
from recarena.models.language.cross_encoder.batching import PairEncoder

#: config attributes that hold dropout rates (BERT, RoBERTa, MPNet, DistilBERT...)
_DROPOUT_NAMES = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "dropout",
    "attention_dropout",
)
#: config attributes that hold the number of transformer layers
_LAYER_NAMES = ("num_hidden_layers", "n_layers", "num_layers")


class PairScorer(nn.Module):
    """An encoder, a pooling of its token states and a linear head: one logit per pair.

    ``pooling="mean"``: the mean of the token states under the attention mask;
    ``"cls"``: the first token's state through a freshly initialised dense + tanh
    pooler. The head (and that pooler) start from the encoder's initialiser: normal
    weights with the config's ``initializer_range``, zero biases.
    """

    def __init__(self, encoder: Any, pooling: str, dropout: float) -> None:
        super().__init__()
        hidden = int(encoder.config.hidden_size)
        std = float(getattr(encoder.config, "initializer_range", 0.02))
        self.encoder = encoder
        self.pooling = pooling
        self.pooler = nn.Linear(hidden, hidden) if pooling == "cls" else None
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, 1)
        for layer in (self.pooler, self.head):
            if layer is not None:
                nn.init.normal_(layer.weight, std=std)
                nn.init.zeros_(layer.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        states = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, **extra
        ).last_hidden_state
        if self.pooler is None:
            mask = attention_mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        else:
            pooled = torch.tanh(self.pooler(states[:, 0]))
        return self.head(self.dropout(pooled)).squeeze(-1)

    def head_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("encoder.")}


def load_pair_scorer(
    target: str,
    pooling: str,
    *,
    dropout: float | None,
    num_layers: int | None,
    freeze_embeddings: bool,
    train_top_layers: int | None = None,
    trained: bool = False,
) -> tuple[PairScorer, Any]:
    """The encoder of ``target`` (bottom ``num_layers`` layers, given ``dropout``) in a
    `PairScorer`, and its tokenizer. ``trained``: ``target`` is a saved fine-tuned folder
    (it holds only the layers it kept). ``train_top_layers``: only the top layers (and the
    pooler and head) keep ``requires_grad``."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from recarena.errors import ModelNotAvailableError
    from recarena.lm.loading import dtype_kwarg

    try:
        tokenizer = AutoTokenizer.from_pretrained(target)
        config = AutoConfig.from_pretrained(target)
        if dropout is not None:
            for name in _DROPOUT_NAMES:
                if hasattr(config, name):
                    setattr(config, name, float(dropout))
        if num_layers is not None and not trained:
            for name in _LAYER_NAMES:
                if hasattr(config, name):
                    if int(getattr(config, name)) < num_layers:
                        raise ConfigError(
                            f"num_layers {num_layers}: {target} has only "
                            f"{getattr(config, name)} layers"
                        )
                    setattr(config, name, int(num_layers))
                    break
            else:
                raise ConfigError(f"cannot tell how many layers {target} has: num_layers")
        # the sentence-encoder checkpoints carry no trained pooler and, with num_layers,
        # unused upper layers: transformers reports those weights, expectedly, as
        # missing or unused
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        # float32 master weights whatever the checkpoint was stored in (many are float16 or
        # bfloat16, which transformers would otherwise keep): the precision of the
        # computation is mixed_precision's autocast, not the storage format
        as_float32 = dtype_kwarg(torch.float32)
        try:
            try:
                encoder = AutoModel.from_pretrained(
                    target, config=config, add_pooling_layer=False, **as_float32
                )
            except TypeError:  # a model class without a pooler
                encoder = AutoModel.from_pretrained(target, config=config, **as_float32)
        finally:
            hf_logging.set_verbosity(verbosity)
    except OSError as exc:
        raise ModelNotAvailableError(f"cannot load {target} for fine-tuning: {exc}") from exc
    if freeze_embeddings:
        encoder.get_input_embeddings().weight.requires_grad_(False)
    if train_top_layers is not None:
        _train_only_top(encoder, train_top_layers, target)
    rate = float(
        dropout
        if dropout is not None
        else getattr(config, "hidden_dropout_prob", getattr(config, "dropout", 0.1)) or 0.0
    )
    return PairScorer(encoder, pooling, rate), tokenizer


def _train_only_top(encoder: Any, top: int, target: str) -> None:
    """Fix every encoder parameter but those of its top ``top`` transformer layers."""
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ConfigError(f"train_top_layers: cannot find the transformer layers of {target}")
    if top > len(layers):
        raise ConfigError(f"train_top_layers {top}: {target} has only {len(layers)} layers")
    keep = {id(p) for layer in list(layers)[len(layers) - top :] for p in layer.parameters()}
    for param in encoder.parameters():
        if id(param) not in keep:
            param.requires_grad_(False)


def autocast_context(device: torch.device, precision: str) -> Any:
    """Autocast for ``precision`` (``mixed_precision_``) on ``device``: on a CPU only bf16."""
    if precision == "no" or (device.type == "cpu" and precision != "bf16"):
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def predict_logits(
    net: nn.Module,
    encoder: PairEncoder,
    rows: Sequence[tuple[list[int], list[int]]],
    *,
    batch_size: int,
    context: Any,
    progress: bool,
) -> np.ndarray:
    """The logit of each pair: batches of similar length, longest first, in ``context``
    (an autocast or a null context)."""
    from tqdm.auto import tqdm

    from recarena._progress import bars_enabled

    device = next(net.parameters()).device
    lengths = np.fromiter((len(ids) for ids, _ in rows), dtype=np.int64, count=len(rows))
    order = np.argsort(-lengths, kind="stable")
    out = np.empty(len(rows), dtype=np.float32)
    bar = tqdm(
        total=len(rows),
        desc="cross-encoder scoring",
        unit="pair",
        disable=not (progress and bars_enabled()) or len(rows) < 4 * batch_size,
        leave=False,
    )
    with torch.inference_mode(), context:
        for begin in range(0, len(order), batch_size):
            idx = order[begin : begin + batch_size]
            batch = encoder.collate([rows[i] for i in idx])
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            out[idx] = net(**batch).float().cpu().numpy()
            bar.update(len(idx))
    bar.close()
    return out
