"""SASRec over language-model text vectors: item embeddings from item text, UniSRec-style.

Hou et al. ("Towards Universal Sequence Representation Learning for Recommender Systems",
UniSRec, KDD 2022) replace SASRec's item-ID table with frozen text vectors of the items put
through a small trained adaptor. This model does the same on top of `recarena.models.classical.sasrec`:

- every item's text is encoded once by a frozen language model
  (`recarena.lm.encoder.ItemTextEncoder`: L2-normalised vectors, cached on disk and shared
  with the other models that use the same encoder);
- a trained adaptor maps a text vector to the SASRec width: ``"linear"`` (default) is a
  linear layer then LayerNorm; ``"moe"`` is UniSRec's mixture of parametric-whitening
  experts, ``sum_k softmax(g(x))_k W_k (x - b_k)``, then LayerNorm. The LayerNorm gain starts
  at ``1 / sqrt(hidden)``, so the embeddings enter the blocks (which multiply them by
  ``sqrt(hidden)``) at unit scale;
- with ``id_embedding=True`` an item-ID embedding, zero at the start, is added. It is masked
  to zero for items without training interactions, which never appear as a target and would
  otherwise only be pushed down by the softmax denominator. Text-only mode
  (``id_embedding=False``) has no ``n_items x hidden`` table at all: its parameters are the
  adaptor and the Transformer, and it scores items that had no training interactions (cold
  items) from their text, which is its point.

Early stopping is SASRec's, except in a cold-item split (no validation item was trained on):
there the validation items are ranked among the items without training interactions, as the
runner ranks them, instead of against the whole catalog.

The same embedding is the input and the output layer, as in SASRec; the network, the
every-position causal training pass, the full-softmax cross-entropy (or SASRec's other
losses), early stopping, scoring, ``update_history`` and ``refit_params`` are SASRec's own
(this class subclasses `recarena.models.classical.sasrec.SASRec` and swaps the item-embedding module
of its network for a `TextItemEmbedding`).

`JointTextSASRec`, its joint training with the encoder, is in `joint`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from recarena.models.base import Recommender, TrainingData, is_integer, require_param
from recarena.models.classical.sasrec import WEIGHTS_FILE, SASRec, SASRecNetwork
from recarena.models.classical.sasrec.recommender import LRSchedule
from recarena.models.language.common import cold_validation_pool
from recarena.models.language.text_sasrec.network import (
    Adaptor,
    TextItemEmbedding,
)

logger = logging.getLogger(__name__)


class TextSASRec(SASRec):
    """SASRec whose item embeddings come from frozen LM text vectors through a trained adaptor.

    Parameters
    ----------
    model
        Encoder of the item texts: zoo name (default ``"minilm-l6"``), local path or hub id
        (any model `recarena.lm.encoder.ItemTextEncoder` takes, decoders included).
    pooling, text_max_length, text_batch_size, prompt
        How the texts are encoded (see `ItemTextEncoder`: pooling ``"auto"``, 128 tokens,
        64 texts per pass, template ``"{text}"``).
    id_embedding
        Add a trained item-ID embedding (default True); False is text-only, which ranks items
        without training interactions.
    adaptor
        ``"linear"`` (default) or ``"moe"`` (UniSRec's whitening experts).
    n_experts
        Experts of the ``"moe"`` adaptor (default 4).
    encode_device
        Device of the text encoding (default ``"auto"``).
    max_len, hidden, n_blocks, n_heads, dropout, loss, n_negatives, lr, weight_decay,
    batch_size, epochs, eval_every, patience, patience_steps, device, mixed_precision,
    num_threads, eval_batch_size, seed, lr_schedule, warmup_epochs, decay_epochs,
    max_train_seconds
        As for `recarena.models.classical.sasrec.SASRec` (same defaults).
    dp_epsilon, dp_delta, dp_noise_multiplier, dp_max_grad_norm
        Differentially private training as SASRec's (`recarena.privacy.dp`): the text
        adaptor, ID embeddings and the network get per-user clipped, noised gradients; the
        frozen text vectors are public (the encoder never saw the users).

    Attributes
    ----------
    network_, best_epoch_, best_valid_ndcg_, training_log_
        As for SASRec; ``network_.item_embedding`` is a `TextItemEmbedding`.
    encode_seconds_, encode_items_per_second_, encode_cache_hit_
        Cost of encoding the catalog (the original encoding's when the vectors came from the
        cache).
    """

    family = "lm-features-trained"
    #: a language model: a share of a GPU where the cluster has one
    resources = {"num_cpus": 1, "num_gpus": 0.25}
    fusion = "feature-extraction"
    uses_text = True
    language_model_params = ("model",)
    uses_validation = True
    param_grid = {"dropout": [0.2, 0.5]}

    def __init__(
        self,
        model: str = "minilm-l6",
        *,
        pooling: str = "auto",
        text_max_length: int = 128,
        text_batch_size: int = 64,
        prompt: str = "{text}",
        id_embedding: bool = True,
        adaptor: Adaptor = "linear",
        n_experts: int = 4,
        encode_device: str = "auto",
        max_len: int = 200,
        hidden: int = 64,
        n_blocks: int = 2,
        n_heads: int = 1,
        dropout: float = 0.2,
        loss: Literal["ce", "bce", "sampled_ce"] = "ce",
        n_negatives: int | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        batch_size: int = 128,
        epochs: int = 200,
        eval_every: int = 1,
        patience: int = 10,
        patience_steps: int = 250,
        device: str = "auto",
        mixed_precision: bool = True,
        num_threads: int | None = None,
        eval_batch_size: int = 256,
        seed: int = 0,
        dp_epsilon: float | None = None,
        dp_delta: float | None = None,
        dp_noise_multiplier: float | None = None,
        dp_max_grad_norm: float = 1.0,
        lr_schedule: LRSchedule = "constant",
        warmup_epochs: int = 0,
        decay_epochs: int | None = None,
        max_train_seconds: float | None = None,
    ) -> None:
        super().__init__(
            max_len=max_len,
            hidden=hidden,
            n_blocks=n_blocks,
            n_heads=n_heads,
            dropout=dropout,
            loss=loss,
            n_negatives=n_negatives,
            lr=lr,
            weight_decay=weight_decay,
            batch_size=batch_size,
            epochs=epochs,
            eval_every=eval_every,
            patience=patience,
            patience_steps=patience_steps,
            device=device,
            mixed_precision=mixed_precision,
            num_threads=num_threads,
            eval_batch_size=eval_batch_size,
            seed=seed,
            dp_epsilon=dp_epsilon,
            dp_delta=dp_delta,
            dp_noise_multiplier=dp_noise_multiplier,
            dp_max_grad_norm=dp_max_grad_norm,
            lr_schedule=lr_schedule,
            warmup_epochs=warmup_epochs,
            decay_epochs=decay_epochs,
            max_train_seconds=max_train_seconds,
        )
        self.model = model
        self.pooling = pooling
        self.text_max_length = text_max_length
        self.text_batch_size = text_batch_size
        self.prompt = prompt
        self.id_embedding = id_embedding
        self.adaptor = adaptor
        self.n_experts = n_experts
        self.encode_device = encode_device

    # ------------------------------------------------------------------ fitting
    def check_params(self) -> None:
        """SASRec's checks, and the text side's: encoder batch sizes, adaptor, prompt."""
        super().check_params()
        for name in ("text_max_length", "text_batch_size", "n_experts"):
            value = getattr(self, name)
            require_param(self, name, is_integer(value) and value >= 1, "a positive integer")
        require_param(self, "adaptor", self.adaptor in ("linear", "moe"), "'linear' or 'moe'")
        require_param(
            self,
            "prompt",
            isinstance(self.prompt, str) and "{text}" in self.prompt,
            "a string holding {text} (where the item's text goes)",
        )

    def _fit(self, data: TrainingData, valid: pd.DataFrame | None) -> None:
        from recarena.lm.encoder import encode_catalog

        assert data.item_text is not None  # its length is checked by Recommender.fit
        self._text, stats = encode_catalog(
            data.item_text,
            self.model,
            cache_dir=data.cache_dir,
            pooling=self.pooling,
            max_length=self.text_max_length,
            batch_size=self.text_batch_size,
            template=self.prompt,
            device=self.encode_device,
            dtype=self._encode_dtype(),
            progress=False,
        )
        self.encode_seconds_ = stats.encode_seconds
        self.encode_dtype_ = stats.dtype
        self.encode_items_per_second_ = stats.items_per_second
        self.encode_cache_hit_ = stats.cache_hit
        self.lm_parameters_ = stats.n_parameters
        self.text_dim_ = int(self._text.shape[1])
        self.trained_items_ = data.item_popularity > 0
        try:
            super()._fit(data, valid)
        finally:
            del self._text

    def _encode_dtype(self) -> str:
        """Precision of the catalog's text vectors (`recarena.lm.encoder.ItemTextEncoder`):
        ``"auto"`` (float32 on a CPU), as the joint text-SASRec's frozen stage needs: its
        joint stage re-encodes the catalog with the float32 encoder it trains."""
        return "auto"

    def _text_embedding(self) -> TextItemEmbedding:
        return TextItemEmbedding(
            self.n_items_,
            self.text_dim_,
            self.hidden,
            adaptor=self.adaptor,
            n_experts=self.n_experts,
            id_embedding=self.id_embedding,
        )

    def _prepare_training(self, net: SASRecNetwork, optimizer: torch.optim.Optimizer) -> None:
        # SASRec builds its network (with an ID table) and optimizer in its _fit; before the
        # first step (and before a checkpoint is loaded) the ID table is swapped for the text
        # embedding, whose parameters join the optimizer (the dropped table gets no
        # gradient, so Adam never touches it again)
        device = next(net.parameters()).device
        embedding = self._text_embedding()
        embedding.set_text(self._text, self.trained_items_)
        net.item_embedding = embedding.to(device)
        optimizer.add_param_group({"params": list(embedding.parameters())})

    # ------------------------------------------------------------------ early stopping
    def _validation_ndcg(self, users: np.ndarray, truth: Any, seen: Any) -> float:
        """SASRec's validation NDCG@10, among the new items when validation is cold.

        In a cold-item split no validation item was trained on, and the runner ranks them
        among the new items only; so does early stopping here (see
        `recarena.models.language.two_tower.cold_validation_pool`).
        """
        pool = cold_validation_pool(truth, self.trained_items_)
        if pool is not None:
            device = next(self.network_.parameters()).device
            outside = torch.ones(self.n_items_, dtype=torch.bool, device=device)
            outside[torch.from_numpy(pool).to(device)] = False
            self._outside_pool = outside
        try:
            return super()._validation_ndcg(users, truth, seen)
        finally:
            self._outside_pool = None

    @torch.inference_mode()
    def _full_scores(self, users: np.ndarray) -> torch.Tensor:
        scores = super()._full_scores(users)
        outside = getattr(self, "_outside_pool", None)
        if outside is not None:  # only while measuring a cold validation
            scores[:, outside] = -torch.inf
        return scores

    # ------------------------------------------------------------------ cost
    def n_parameters(self) -> tuple[int, int]:
        """(text encoder + network, network): the encoder is frozen, the network trained.

        The text vectors are a buffer, not counted: without ID embeddings there is no
        ``n_items x hidden`` table among the parameters.
        """
        total, trainable = super().n_parameters()
        return total + int(getattr(self, "lm_parameters_", 0)), trainable

    # ------------------------------------------------------------------ persistence
    def _restore_state(self, state: dict[str, Any], folder: Path) -> None:
        Recommender._restore_state(self, state, folder)
        weights = torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        net = SASRecNetwork(self._config())
        net.item_embedding = self._text_embedding()
        net.load_state_dict(weights)
        self.network_ = net.to(self._torch_device()).eval()
