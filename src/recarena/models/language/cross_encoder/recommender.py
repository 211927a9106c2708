"""Fine-tuned cross-encoder: a BERT-style encoder reads (candidate item, user history) as one pair.

The direct fine-tuning recipe of language-model recommendation. An encoder reads one
candidate item's text as its first segment and the text of the user's recent items as its
second, and is fine-tuned end to end, with a small head on its token states, to tell the
item the user went on to choose from items the user never touched::

    [CLS] candidate item text [SEP] newest item text | older item text | ... [SEP]

No pretrained cross-encoder (nor BERT-base) is available without a model hub, so by default
the encoder is a sentence encoder, ``minilm-l6`` (all-MiniLM-L6-v2, a 6-layer
``BertModel``); with a hub, any encoder checkpoint works (``model`` takes a zoo name, a
local folder or a hub id).

How it is set up, and why (a pair classifier set up otherwise can stall at a constant
output, training loss ln 2 and AUC .5, which is a failure of the set-up, not of the method):

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
Scoring
    The head's logit for each candidate, from the user's last ``history_len`` items of the
    data ``fit`` saw (or given to ``update_history``). A re-ranker: it scores given
    candidate lists (sampled, or a first stage's top-N), never the full catalog. The logit
    is a score, not a calibrated probability: pointwise metrics threshold it by the rule
    every model gets.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recarena._io import publish_mode
from recarena.errors import ConfigError
from recarena.models._history import KeepsHistory
from recarena.models.base import Recommender, TrainingData
from recarena.models.language.cross_encoder.batching import (
    PairEncoder,
    pair_template,
    ragged,
    sample_negatives,
    sample_positives,
)

logger = logging.getLogger(__name__)

#: folder of a saved model that holds the fine-tuned encoder and its tokenizer
#: (``save_pretrained``), and the pooling and head weights beside them
WEIGHTS_FOLDER = "cross_encoder"
HEAD_FILE = "pair_head.pt"
HEAD_CONFIG = "pair_head.json"
#: config attributes that hold dropout rates (BERT, RoBERTa, MPNet, DistilBERT...)
_DROPOUT_NAMES = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "dropout",
    "attention_dropout",
)
#: config attributes that hold the number of transformer layers
_LAYER_NAMES = ("num_hidden_layers", "n_layers", "num_layers")
#: (user, candidate) pairs tokenized at once when scoring (bounds host memory)
_SCORE_CHUNK = 16_384
POOLINGS = ("auto", "mean", "cls")
LOSSES = ("bce", "softmax")


# ---------------------------------------------------------------------------- sampling


# ---------------------------------------------------------------------------- the model
class CrossEncoderRecommender(KeepsHistory, Recommender):
    """Fine-tuned BERT-style cross-encoder over (candidate item text, user history text).

    See the module docstring for the recipe. A re-ranker: give it candidate lists.

    Parameters
    ----------
    model
        Zoo name, local folder or hub id of the encoder to fine-tune (default
        ``"minilm-l6"``, all-MiniLM-L6-v2).
    pooling
        ``"auto"`` (the checkpoint's own pooling: mean for sentence encoders), ``"mean"``,
        or ``"cls"`` (a re-initialised pooler on the [CLS] state).
    history_len
        Most recent training items of the user in the history text (default 5; 0: no
        history, the candidate alone: the model can then only learn what an item's text
        says about its popularity, the first rung of the sanity ladder).
    max_length
        Most tokens in a (candidate, history) pair (default 64; capped at the model's limit).
    separator
        Text between two history items (default ``" | "``).
    n_negatives
        Negatives per positive in training, drawn afresh every epoch (default 4).
    loss
        ``"bce"`` (default: binary cross-entropy of every pair) or ``"softmax"``
        (cross-entropy of each positive against its own negatives).
    max_train_pairs
        Budget: most (user, position) positives drawn for training (default 20,000; None:
        every position).
    epochs
        Most passes over the positives (default 3).
    max_steps
        Budget: most optimizer steps (default None: ``epochs`` decides).
    max_train_seconds
        Budget: training stops after the first step past this many seconds (default None).
    batch_size
        Positives per batch, each with its ``n_negatives`` negatives (default 16: 80 pairs).
    gradient_accumulation_steps
        Batches per optimizer step (default 1).
    lr, weight_decay, warmup_ratio, max_grad_norm
        AdamW learning rate (1e-4), weight decay (0.01), share of steps with linear warm-up
        (0.1), gradient-norm clip (1.0). 1e-4 for a small encoder with a fresh head and
        warm-up: on MovieLens-100k minilm-l6 reached validation AUC .76 after 20,000 pairs
        at 1e-4 against .68 at 5e-5 (``benchmarks/bench_cross_encoder.py``); for 12-layer
        encoders 2e-5 to 5e-5 is the usual range.
    dropout
        Dropout of the encoder's hidden states and attention, and before the head (None:
        the checkpoint's own, 0.1 for BERT-style models).
    num_layers
        Keep only the encoder's bottom ``num_layers`` transformer layers (None: all).
    freeze_embeddings
        Keep the word-embedding matrix fixed (default True); position and type
        embeddings, every layer, the pooler and the head train.
    eval_every
        Optimizer steps between validation measurements (default 200; None: after each
        epoch); the first is made before training.
    patience
        Measurements without a gain before training stops (default 4; None: never early).
    n_valid_negatives
        Negatives per validation user in the frozen validation set (default 19).
    max_valid_users
        Most validation users in it (default 300).
    eval_batch_size
        Pairs per forward pass when scoring (default 128).
    device
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
    mixed_precision
        ``"auto"``: bf16 (fp16 where unsupported) autocast on a GPU, bf16 autocast on a CPU
        with bfloat16 instructions (AVX512-BF16 or AMX), float32 otherwise; ``"no"``,
        ``"fp16"``, ``"bf16"``. The precision used is ``mixed_precision_``.
    num_threads
        CPU threads for torch during fit and scoring (None: torch's default).
    progress
        Show progress bars for training and scoring.
    seed
        Seeds the head's initial weights, dropout, the training sample, negatives, the data
        order and the validation set: on CPU the same seed gives the same scores.

    Attributes
    ----------
    network_
        The fine-tuned `PairScorer` module (eval mode).
    tokenizer_
        Its tokenizer.
    pooling_
        The pooling used (``pooling`` with ``"auto"`` resolved).
    training_log_
        One dict per validation measurement (the first at step 0, before training) and
        per epoch: ``epoch``, ``step``, ``train_loss``, ``lr``, ``valid_auc``,
        ``valid_loss`` (None where not measured), ``examples``, ``seconds``.
    best_step_, best_epoch_, best_valid_auc_
        Step and epoch of the kept weights and their validation AUC (None without
        validation data).
    train_positives_, train_examples_
        Positives drawn, and training examples (positives + negatives) per epoch.
    train_seconds_, train_examples_per_second_
        Time in training steps (validation excluded) and its throughput.
    """

    family = "cross-encoder"
    #: a language model: a share of a GPU where the cluster has one
    resources = {"num_cpus": 1, "num_gpus": 0.25}
    fusion = "fine-tuning"
    scores_full_catalog = False
    uses_text = True
    language_model_params = ("model",)
    uses_validation = True
    history_dtype = np.int32
    #: the pooling is chosen on validation: the checkpoint's own (mean for sentence
    #: encoders) against a re-initialised [CLS] pooler
    param_grid: dict[str, list[Any]] = {"pooling": ["mean", "cls"]}

    def __init__(
        self,
        model: str = "minilm-l6",
        pooling: str = "auto",
        history_len: int = 5,
        max_length: int = 64,
        separator: str = " | ",
        n_negatives: int = 4,
        loss: str = "bce",
        max_train_pairs: int | None = 20_000,
        epochs: int = 3,
        max_steps: int | None = None,
        max_train_seconds: float | None = None,
        batch_size: int = 16,
        gradient_accumulation_steps: int = 1,
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        max_grad_norm: float | None = 1.0,
        dropout: float | None = None,
        num_layers: int | None = None,
        freeze_embeddings: bool = True,
        eval_every: int | None = 200,
        patience: int | None = 4,
        n_valid_negatives: int = 19,
        max_valid_users: int | None = 300,
        eval_batch_size: int = 128,
        device: str = "auto",
        mixed_precision: str = "auto",
        num_threads: int | None = None,
        progress: bool = True,
        seed: int = 0,
    ) -> None:
        self.model = model
        self.pooling = pooling
        self.history_len = history_len
        self.max_length = max_length
        self.separator = separator
        self.n_negatives = n_negatives
        self.loss = loss
        self.max_train_pairs = max_train_pairs
        self.epochs = epochs
        self.max_steps = max_steps
        self.max_train_seconds = max_train_seconds
        self.batch_size = batch_size
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_ratio = warmup_ratio
        self.max_grad_norm = max_grad_norm
        self.dropout = dropout
        self.num_layers = num_layers
        self.freeze_embeddings = freeze_embeddings
        self.eval_every = eval_every
        self.patience = patience
        self.n_valid_negatives = n_valid_negatives
        self.max_valid_users = max_valid_users
        self.eval_batch_size = eval_batch_size
        self.device = device
        self.mixed_precision = mixed_precision
        self.num_threads = num_threads
        self.progress = progress
        self.seed = seed

    # ------------------------------------------------------------------ fitting
    def check_params(self) -> None:
        positive = {
            "max_length": self.max_length,
            "batch_size": self.batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "epochs": self.epochs,
            "eval_batch_size": self.eval_batch_size,
            "n_negatives": self.n_negatives,
            "n_valid_negatives": self.n_valid_negatives,
        }
        for name, value in positive.items():
            if value is None or value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.history_len is None or self.history_len < 0:
            raise ValueError(f"history_len must be 0 or more, got {self.history_len}")
        optional = ("max_train_pairs", "max_steps", "eval_every", "max_valid_users", "patience")
        for name in (*optional, "num_layers"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 or None, got {value}")
        if self.max_train_seconds is not None and not self.max_train_seconds > 0:
            raise ValueError(
                f"max_train_seconds must be positive or None, got {self.max_train_seconds}"
            )
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, not {self.pooling!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, not {self.loss!r}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")

    def _fit(self, data: TrainingData, valid: pd.DataFrame | None) -> None:
        import torch

        from recarena.lm import training as tr
        from recarena.lm.zoo import resolve_model

        assert data.item_text is not None  # its length is checked by Recommender.fit
        resolved = resolve_model(self.model, data.cache_dir)
        if resolved.format != "transformers":
            raise ConfigError(
                f"{resolved.name} is a {resolved.format} model: the cross-encoder fine-tunes "
                "a transformers encoder (e.g. minilm-l6, mpnet-base, a local folder or hub id)"
            )
        self.pooling_ = resolved.default_pooling if self.pooling == "auto" else self.pooling
        if self.pooling_ not in ("mean", "cls"):
            raise ConfigError(
                f"{resolved.name} pools by {self.pooling_!r}; the cross-encoder reads the mean "
                "of the token states or the [CLS] state: set pooling = 'mean' or 'cls'"
            )
        rng = np.random.default_rng([self.seed, 4242])
        accelerator = tr.make_accelerator(
            self.device,
            tr.resolve_training_precision(self.mixed_precision, self.device),
            self.gradient_accumulation_steps,
        )
        self.device_ = str(accelerator.device)
        self.mixed_precision_ = str(accelerator.mixed_precision)
        with tr.seeded(self.seed), tr.torch_threads(self.num_threads):
            network, tokenizer = self._load_network(resolved.load_target, self.pooling_)
            self.tokenizer_ = tokenizer
            self.encoder_parameters_ = sum(p.numel() for p in network.encoder.parameters())
            encoder = self._build_encoder(tokenizer, network.encoder.config, data.item_text)
            if encoder.n_cut_items:
                logger.warning(
                    "%d item texts are longer than max_length %d allows and were cut at the end",
                    encoder.n_cut_items,
                    encoder.max_length,
                )
            self._keep_history(data)

            positives = sample_positives(
                data.sequences,
                history_len=self.history_len,
                max_pairs=self.max_train_pairs,
                rng=rng,
            )
            seen = data.csr()
            group = 1 + self.n_negatives
            self.train_positives_ = len(positives)
            self.train_examples_ = len(positives) * group
            validation = self._validation_set(data, valid, encoder, rng)
            # negatives are drawn as batches are built, afresh each epoch, from a generator
            # of their own: the data order (the loader's generator) does not depend on them
            negative_rng = np.random.default_rng([self.seed, 4243])

            def collate(indices: list[int]) -> dict[str, Any]:
                idx = np.asarray(indices, dtype=np.int64)
                users = positives.user[idx]
                negatives = sample_negatives(seen, users, self.n_negatives, negative_rng)
                items = np.concatenate([positives.item[idx][:, None], negatives], axis=1)
                rows = []
                for r, e in enumerate(idx):
                    hist = positives.flat_items[positives.start[e] : positives.stop[e]][::-1]
                    tokens = encoder.history(hist)
                    # a user who has every item has no negative (-1): the positive stands in,
                    # masked out of the loss
                    rows.extend(encoder.pair(tokens, int(max(i, items[r, 0]))) for i in items[r])
                batch = encoder.collate(rows)
                labels = np.zeros(items.shape, dtype=np.float32)
                labels[:, 0] = 1.0
                batch["labels"] = torch.from_numpy(labels)
                batch["valid"] = torch.from_numpy(items >= 0)
                return batch

            generator = torch.Generator().manual_seed(int(self.seed))
            loader = torch.utils.data.DataLoader(
                range(len(positives)),
                batch_size=self.batch_size,
                shuffle=True,
                generator=generator,
                collate_fn=collate,
            )
            loss_name = self.loss

            def loss_fn(net: Any, batch: dict[str, Any]) -> Any:
                labels, keep = batch["labels"], batch["valid"]
                inputs = {k: v for k, v in batch.items() if k not in ("labels", "valid")}
                logits = net(**inputs).float().view(labels.shape)
                if loss_name == "softmax":
                    logits = logits.masked_fill(~keep, float("-inf"))
                    target = torch.zeros(len(labels), dtype=torch.long, device=logits.device)
                    return torch.nn.functional.cross_entropy(logits, target)
                return torch.nn.functional.binary_cross_entropy_with_logits(
                    logits[keep], labels[keep]
                )

            evaluate = None
            start_record: dict[str, Any] | None = None
            if validation is not None:
                rows, labels = validation

                def evaluate(net: Any) -> dict[str, float]:
                    return self._validation_metrics(net, encoder, rows, labels)

                network.to(accelerator.device).eval()
                with torch.inference_mode(), accelerator.autocast():
                    start_record = {"epoch": 0, "step": 0, "train_loss": None, "lr": 0.0}
                    start_record.update(evaluate(network))
                start_record.update({"examples": 0, "seconds": 0.0})
                logger.info("fine-tuning cross-encoder: before training: %s", start_record)
                network.train()

            config = tr.LoopConfig(
                epochs=self.epochs,
                max_steps=self.max_steps,
                lr=self.lr,
                weight_decay=self.weight_decay,
                warmup_ratio=self.warmup_ratio,
                max_grad_norm=self.max_grad_norm,
                eval_every=self.eval_every,
                patience=self.patience,
                monitor="valid_auc",
                mode="max",
                max_seconds=self.max_train_seconds,
                progress=self.progress,
                desc="fine-tuning cross-encoder",
            )
            result = tr.train_loop(accelerator, network, loader, loss_fn, config, evaluate=evaluate)
        self.network_ = result.model
        self.training_log_ = ([start_record] if start_record else []) + result.log
        self.best_step_ = int(result.best_step)
        self.best_epoch_ = int(result.best_epoch)
        self.best_valid_auc_ = result.best_value
        self.train_steps_ = int(result.steps)
        self.stopped_early_ = bool(result.stopped_early)
        self.train_seconds_ = float(result.train_seconds)
        self.train_examples_per_second_ = float(result.examples_per_second)
        self._encoder = encoder

    def _load_network(self, target: str, pooling: str, *, trained: bool = False) -> tuple[Any, Any]:
        """The encoder (bottom ``num_layers`` layers, given dropout) in a `PairScorer`, and
        its tokenizer. ``trained``: ``target`` is a saved fine-tuned folder."""
        from transformers import AutoConfig, AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from recarena.errors import ModelNotAvailableError

        try:
            tokenizer = AutoTokenizer.from_pretrained(target)
            config = AutoConfig.from_pretrained(target)
            if self.dropout is not None:
                for name in _DROPOUT_NAMES:
                    if hasattr(config, name):
                        setattr(config, name, float(self.dropout))
            if self.num_layers is not None and not trained:
                for name in _LAYER_NAMES:
                    if hasattr(config, name):
                        if int(getattr(config, name)) < self.num_layers:
                            raise ConfigError(
                                f"num_layers {self.num_layers}: {target} has only "
                                f"{getattr(config, name)} layers"
                            )
                        setattr(config, name, int(self.num_layers))
                        break
                else:
                    raise ConfigError(f"cannot tell how many layers {target} has: num_layers")
            # the sentence-encoder checkpoints carry no trained pooler and, with num_layers,
            # unused upper layers: transformers reports those weights, expectedly, as
            # missing or unused
            verbosity = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()
            try:
                try:
                    encoder = AutoModel.from_pretrained(
                        target, config=config, add_pooling_layer=False
                    )
                except TypeError:  # a model class without a pooler
                    encoder = AutoModel.from_pretrained(target, config=config)
            finally:
                hf_logging.set_verbosity(verbosity)
        except OSError as exc:
            raise ModelNotAvailableError(f"cannot load {target} for fine-tuning: {exc}") from exc
        if self.freeze_embeddings:
            encoder.get_input_embeddings().weight.requires_grad_(False)
        dropout = float(
            self.dropout
            if self.dropout is not None
            else getattr(config, "hidden_dropout_prob", getattr(config, "dropout", 0.1)) or 0.0
        )
        from recarena.models.language.cross_encoder.network import PairScorer

        return PairScorer(encoder, pooling, dropout), tokenizer

    def _effective_max_length(self, tokenizer: Any, config: Any) -> int:
        limit = int(self.max_length)
        positions = getattr(config, "max_position_embeddings", None)
        if positions:
            if getattr(config, "model_type", "") in {
                "roberta",
                "xlm-roberta",
                "camembert",
                "mpnet",
            }:
                positions -= (getattr(config, "pad_token_id", 1) or 1) + 1
            limit = min(limit, int(positions))
        model_max = getattr(tokenizer, "model_max_length", None)
        if model_max and model_max < 1_000_000:
            limit = min(limit, int(model_max))
        return limit

    def _build_encoder(self, tokenizer: Any, config: Any, item_text: Sequence[str]) -> PairEncoder:
        tokens = tokenizer(list(item_text), add_special_tokens=False)["input_ids"]
        self.item_token_ids_, self.item_token_indptr_ = ragged(tokens)
        self.max_length_ = self._effective_max_length(tokenizer, config)
        return self._encoder_from_state(tokenizer)

    def _encoder_from_state(self, tokenizer: Any) -> PairEncoder:
        ids, indptr = self.item_token_ids_, self.item_token_indptr_
        tokens = [ids[indptr[i] : indptr[i + 1]].tolist() for i in range(len(indptr) - 1)]
        separator = list(tokenizer(self.separator, add_special_tokens=False)["input_ids"])
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        return PairEncoder(
            pair_template(tokenizer),
            tokens,
            separator,
            self.max_length_,
            int(pad),
            "token_type_ids" in getattr(tokenizer, "model_input_names", ()),
        )

    def _validation_set(
        self,
        data: TrainingData,
        valid: pd.DataFrame | None,
        encoder: PairEncoder,
        rng: np.random.Generator,
    ) -> tuple[list[tuple[list[int], list[int]]], np.ndarray] | None:
        """Frozen validation pairs: held-out item(s) + sampled negatives per user, labels."""
        if valid is None or len(valid) == 0:
            return None
        from recarena.data.dataset import interactions_csr

        held = interactions_csr(valid, data.n_users, data.n_items)
        users = np.unique(valid["user"].to_numpy()).astype(np.int64)
        if self.max_valid_users is not None and len(users) > self.max_valid_users:
            users = np.sort(rng.choice(users, size=self.max_valid_users, replace=False))
        exclude = (data.csr() + held).tocsr()
        negatives = sample_negatives(exclude, users, self.n_valid_negatives, rng)
        rows: list[tuple[list[int], list[int]]] = []
        labels: list[int] = []
        for r, user in enumerate(users):
            history = encoder.history(self._history_of(int(user)))
            positives = held.indices[held.indptr[user] : held.indptr[user + 1]]
            for item, label in [(p, 1) for p in positives] + [
                (n, 0) for n in negatives[r] if n >= 0
            ]:
                rows.append(encoder.pair(history, int(item)))
                labels.append(label)
        return rows, np.asarray(labels, dtype=np.int64)

    def _validation_metrics(
        self,
        net: Any,
        encoder: PairEncoder,
        rows: list[tuple[list[int], list[int]]],
        labels: np.ndarray,
    ) -> dict[str, float]:
        """ROC AUC of the validation pairs, and their binary cross-entropy."""
        from recarena.metrics.pointwise import roc_auc

        logits = self._predict(net, encoder, rows, autocast=False, progress=False)
        z = logits.astype(np.float64)
        # -log sigmoid(z) for positives, -log(1 - sigmoid(z)) for negatives, stably
        loss = float(np.mean(np.logaddexp(0.0, np.where(labels == 1, -z, z))))
        return {"valid_auc": roc_auc(labels, logits), "valid_loss": loss}

    def refit_params(self) -> dict[str, Any]:
        """Train as long as the best validation measurement: its epoch and optimizer step."""
        return {"epochs": max(1, int(self.best_epoch_)), "max_steps": max(1, int(self.best_step_))}

    # ------------------------------------------------------------------ scoring
    def _history_of(self, user: int) -> np.ndarray:
        """The user's last ``history_len`` training items, newest first."""
        return self._kept_history().row(user)[::-1]

    def _pair_encoder(self) -> PairEncoder:
        encoder = getattr(self, "_encoder", None)
        if encoder is None:
            encoder = self._encoder = self._encoder_from_state(self.tokenizer_)
        return encoder

    def _autocast(self, device: Any) -> Any:
        import torch

        precision = getattr(self, "mixed_precision_", "no")
        if precision == "no" or (device.type == "cpu" and precision != "bf16"):
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device.type, dtype=dtype)

    def _predict(
        self,
        net: Any,
        encoder: PairEncoder,
        rows: Sequence[tuple[list[int], list[int]]],
        *,
        autocast: bool = True,
        progress: bool | None = None,
    ) -> np.ndarray:
        """The logit of each pair: batches of similar length, longest first."""
        import torch
        from tqdm.auto import tqdm

        device = next(net.parameters()).device
        lengths = np.fromiter((len(ids) for ids, _ in rows), dtype=np.int64, count=len(rows))
        order = np.argsort(-lengths, kind="stable")
        out = np.empty(len(rows), dtype=np.float32)
        show = self.progress if progress is None else progress
        bar = tqdm(
            total=len(rows),
            desc="cross-encoder scoring",
            unit="pair",
            disable=not show or len(rows) < 4 * self.eval_batch_size,
            leave=False,
        )
        context = self._autocast(device) if autocast else contextlib.nullcontext()
        with torch.inference_mode(), context:
            for begin in range(0, len(order), self.eval_batch_size):
                idx = order[begin : begin + self.eval_batch_size]
                batch = encoder.collate([rows[i] for i in idx])
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                out[idx] = net(**batch).float().cpu().numpy()
                bar.update(len(idx))
        bar.close()
        return out

    def _score(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        from recarena.lm.training import torch_threads

        if items is None:  # the base class never asks: scores_full_catalog is False
            raise NotImplementedError("the cross-encoder only scores candidate lists")
        encoder = self._pair_encoder()
        out = np.empty(items.shape, dtype=np.float32)
        n_cand = max(1, items.shape[1])
        users_per_chunk = max(1, _SCORE_CHUNK // n_cand)
        with torch_threads(self.num_threads):
            for begin in range(0, len(users), users_per_chunk):
                chunk = slice(begin, begin + users_per_chunk)
                history: dict[int, list[int]] = {}  # tokenized once per user in a call
                rows = []
                for user, cands in zip(users[chunk].tolist(), items[chunk], strict=True):
                    if user not in history:
                        history[user] = encoder.history(self._history_of(user))
                    rows.extend(encoder.pair(history[user], int(c)) for c in cands)
                if rows:
                    logits = self._predict(self.network_, encoder, rows)
                    out[chunk] = logits.reshape(-1, items.shape[1])
        return out

    # ------------------------------------------------------------------ cost
    def n_parameters(self) -> tuple[int, int]:
        """(parameters of the fine-tuned network, those trained: all but frozen embeddings)."""
        network = getattr(self, "network_", None)
        if network is None:
            return 0, 0
        total = sum(p.numel() for p in network.parameters())
        trainable = sum(p.numel() for p in network.parameters() if p.requires_grad)
        return int(total), int(trainable)

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | os.PathLike[str]) -> None:
        """Save parameters and small state as usual, the network as a transformers folder.

        The fine-tuned encoder and its tokenizer go to ``folder/cross_encoder/`` with
        ``save_pretrained`` (``AutoModel`` loads it as is), the pooler and head beside them
        (``pair_head.pt``, a state dict, and ``pair_head.json``); no module is pickled.
        """
        import torch

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        network = self.__dict__.get("network_")
        if network is not None:
            target = folder / WEIGHTS_FOLDER
            tmp = Path(tempfile.mkdtemp(prefix=f".{WEIGHTS_FOLDER}.", dir=folder))
            try:
                network.encoder.save_pretrained(tmp)
                self.tokenizer_.save_pretrained(tmp)
                torch.save(network.head_state(), tmp / HEAD_FILE)
                (tmp / HEAD_CONFIG).write_text(
                    json.dumps({"pooling": network.pooling, "dropout": network.dropout.p})
                )
                publish_mode(tmp)  # mkdtemp made it 0o700
                if target.exists():
                    shutil.rmtree(target)
                os.replace(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        # the base class pickles every attribute ending in "_": leave the network out
        held = {k: self.__dict__.pop(k) for k in ("network_", "tokenizer_") if k in self.__dict__}
        try:
            super().save(folder)
        finally:
            self.__dict__.update(held)

    def _restore_state(self, state: dict[str, Any], folder: Path) -> None:
        import torch

        from recarena.lm.loading import resolve_device

        super()._restore_state(state, folder)
        target = folder / WEIGHTS_FOLDER
        if not (target / HEAD_FILE).is_file():
            raise FileNotFoundError(
                f"{target} holds no fine-tuned cross-encoder (no {HEAD_FILE}; a model saved "
                "by RecArena before the pair head was introduced cannot be read: fit it again)"
            )
        head = json.loads((target / HEAD_CONFIG).read_text())
        network, tokenizer = self._load_network(str(target), head["pooling"], trained=True)
        missing = network.load_state_dict(
            torch.load(target / HEAD_FILE, map_location="cpu", weights_only=True), strict=False
        )
        if missing.unexpected_keys or any(
            not k.startswith("encoder.") for k in missing.missing_keys
        ):
            raise ValueError(f"{target / HEAD_FILE} does not fit the saved encoder: {missing}")
        device = resolve_device(self.device)
        if device.startswith("cuda") and not torch.cuda.is_available():
            device = "cpu"
        self.network_ = network.eval().to(device)
        self.tokenizer_ = tokenizer
        self.device_ = device
        self._encoder = None
