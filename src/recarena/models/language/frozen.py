"""Frozen language-model features: item vectors from item text, users as their history's mean.

The language model is never trained. Every item's text (``TrainingData.item_text``) is
encoded once by `recarena.lm.encoder.ItemTextEncoder` (and cached under
``TrainingData.cache_dir``), a user is the recency-weighted mean of the vectors of the items
in their history, and an item's score is its cosine with the user. Items that nobody
interacted with (cold items) have text, so they are scored like any other; a user without
history scores every item 0 (the ranking is then the random tie-break).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recarena.models.base import Recommender, TrainingData


class FrozenLMRecommender(Recommender):
    """Cosine between a user's recency-weighted history vector and frozen LM item vectors.

    Parameters
    ----------
    model
        Zoo name (``"minilm-l6"``, ``"mpnet-base"``, ``"smollm2-135m-instruct"``...), local
        model path or hub id.
    pooling
        ``"auto"``, ``"mean"`` or ``"cls"`` (encoders), ``"last"`` or ``"mean"`` (decoders).
    max_length
        Tokens kept per item text.
    batch_size
        Item texts per forward pass.
    recency_decay
        Weight of an item ``a`` positions before the user's latest one is
        ``recency_decay ** a``; 1.0 is the plain mean of the history.
    history_len
        Use only the user's last ``history_len`` items (None: all).
    device
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``...
    prompt
        Template around each item text before encoding; ``{text}`` is the text.
    dtype
        Precision of the encoding (`recarena.lm.encoder.ItemTextEncoder`): ``"auto"``
        (float32 on a CPU, half precision on a GPU), ``"float32"``, or ``"bfloat16"``
        (on a CPU: bfloat16 autocast where the vectors stay within cosine .999 of
        float32's, else float32). The precision used is ``encode_dtype`` in ``cost.json``.

    Attributes
    ----------
    item_vectors_ : (n_items, dim) float32, L2-normalised
    user_vectors_ : (n_users, dim) float32, L2-normalised (zeros for users without history)
    encode_seconds_, encode_items_per_second_
        Cost of encoding the catalog (the original encoding's, when the vectors came from
        the cache; ``encode_cache_hit_`` says which).
    """

    family = "frozen-lm"
    #: a language model: a share of a GPU where the cluster has one
    resources = {"num_cpus": 1, "num_gpus": 0.25}
    fusion = "feature-extraction"
    uses_text = True
    language_model_params = ("model",)
    history_use = "rebuilt"
    param_grid = {"recency_decay": [1.0, 0.9, 0.7], "history_len": [None, 50, 10]}

    def __init__(
        self,
        model: str = "minilm-l6",
        pooling: str = "auto",
        max_length: int = 128,
        batch_size: int = 64,
        recency_decay: float = 1.0,
        history_len: int | None = None,
        device: str = "auto",
        prompt: str = "{text}",
        dtype: str = "auto",
    ) -> None:
        self.model = model
        self.pooling = pooling
        self.max_length = max_length
        self.batch_size = batch_size
        self.recency_decay = recency_decay
        self.history_len = history_len
        self.device = device
        self.prompt = prompt
        self.dtype = dtype

    def _fit(self, data: TrainingData, valid: pd.DataFrame | None) -> None:
        from recarena.lm.encoder import encode_catalog

        if not 0.0 < self.recency_decay <= 1.0:
            raise ValueError(f"recency_decay must be in (0, 1], got {self.recency_decay}")
        if self.history_len is not None and self.history_len < 1:
            raise ValueError(f"history_len must be at least 1 or None, got {self.history_len}")
        assert data.item_text is not None  # its length is checked by Recommender.fit
        self.item_vectors_, stats = encode_catalog(
            data.item_text,
            self.model,
            cache_dir=data.cache_dir,
            pooling=self.pooling,
            max_length=self.max_length,
            batch_size=self.batch_size,
            template=self.prompt,
            device=self.device,
            dtype=self.dtype,
        )
        self.encode_seconds_ = stats.encode_seconds
        self.encode_items_per_second_ = stats.items_per_second
        self.encode_cache_hit_ = stats.cache_hit
        self.lm_parameters_ = stats.n_parameters
        self.lm_device_ = stats.device
        self.encode_dtype_ = stats.dtype
        self._update_history(data)

    def _update_history(self, data: TrainingData) -> None:
        # the item vectors depend on the item text alone: new histories give the user
        # vectors a fit on the new data would give
        self.user_vectors_ = self._user_vectors(data.sequences)

    def _user_vectors(self, sequences: list[np.ndarray]) -> np.ndarray:
        dim = self.item_vectors_.shape[1]
        out = np.zeros((len(sequences), dim), dtype=np.float32)
        for user, history in enumerate(sequences):
            if len(history) == 0:
                continue
            if self.history_len is not None:
                history = history[-self.history_len :]
            age = np.arange(len(history) - 1, -1, -1, dtype=np.float64)
            weights = (self.recency_decay**age).astype(np.float32)
            out[user] = weights @ self.item_vectors_[history] / weights.sum()
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def _score(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        profile = self.user_vectors_[users]
        if items is None:
            return profile @ self.item_vectors_.T
        return np.einsum("ud,ucd->uc", profile, self.item_vectors_[items])

    def n_parameters(self) -> tuple[int, int]:
        """(parameters of the language model, 0 trainable): nothing here is trained."""
        return int(getattr(self, "lm_parameters_", 0)), 0
