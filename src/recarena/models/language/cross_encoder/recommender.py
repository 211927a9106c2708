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

How it is set up and trained, and why (pooling and head, input order, training pairs and
losses, the budget on a CPU, early stopping and the learning curve): see
`recarena.models.language.cross_encoder.training`.

Scoring
    The head's logit for each candidate, from the user's last ``history_len`` items of the
    data ``fit`` saw (or given to ``update_history``). A re-ranker: it scores given
    candidate lists (sampled, or a first stage's top-N), never the full catalog. The logit
    is a score, not a calibrated probability: pointwise metrics threshold it by the rule
    every model gets.
Persistence
    ``save`` writes the fine-tuned encoder and its tokenizer to ``cross_encoder/``
    (``save_pretrained``: ``AutoModel`` loads it as is), the pooler and head beside them
    (``pair_head.pt``, a state dict, and ``pair_head.json``); no module is pickled.
    The popularity prior's logits (``item_prior_``, an array) are in the pickled state.
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
from recarena.models._dp_sgd import DP_SGD_OFF, DPSGDParams
from recarena.models._history import KeepsHistory
from recarena.models.base import Recommender, TrainingData
from recarena.models.language.cross_encoder.batching import (
    PairEncoder,
    effective_max_length,
    pair_encoder,
    ragged,
    sample_positives,
    training_loader,
)
from recarena.models.language.user_text import fill_user_fields, user_attributes

logger = logging.getLogger(__name__)

#: folder of a saved model that holds the fine-tuned encoder and its tokenizer
#: (``save_pretrained``), and the pooling and head weights beside them
WEIGHTS_FOLDER = "cross_encoder"
HEAD_FILE = "pair_head.pt"
HEAD_CONFIG = "pair_head.json"
#: (user, candidate) pairs tokenized at once when scoring (bounds host memory)
_SCORE_CHUNK = 16_384
POOLINGS = ("auto", "mean", "cls")
LOSSES = ("bce", "softmax")
#: passes of the popularity prior where ``prior_passes`` is None (auto) and the fit is not
#: private: the regression's Pearson correlation with its target passes .9 by the eighth
#: pass on MovieLens-100k and -1M (`benchmarks/bench_cross_encoder.py`)
DEFAULT_PRIOR_PASSES = 8


class CrossEncoderRecommender(DPSGDParams, KeepsHistory, Recommender):
    """Fine-tuned BERT-style cross-encoder over (candidate item text, user history text).

    How it is set up and trained: `recarena.models.language.cross_encoder.training`. A
    re-ranker: give it candidate lists.

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
    user_text
        Text about the user put before the history (default None: none), naming columns of
        the data's user table as ``{user:COLUMN}``: ``"A {user:age}-year-old {user:gender}
        who watched:"``. The model then trains and scores with it, and
        `recarena.metrics.counterfactual` can swap the attribute (a probe of whether the
        fine-tuned matcher treats people differently). It is never cut: a long one leaves
        less room for the history.
    user_values
        Words for the user table's values in ``user_text``, per column: ``{"gender": {"M":
        "man", "F": "woman"}}``; a value without a word is written as it is.
    max_length
        Most tokens in a (candidate, history) pair (default 64; capped at the model's limit).
    separator
        Text between two history items (default ``" | "``).
    n_negatives
        Negatives per positive in training, drawn afresh every epoch (default 4).
    loss
        ``"bce"`` (default: binary cross-entropy of every pair) or ``"softmax"``
        (cross-entropy of each positive against its own negatives).
    prior_passes
        Passes over the catalog of the popularity prior, a stage before pair training
        (default None: 8 for an ordinary fit, 0 (none) for a private one; the value used is
        ``prior_passes_``). The network's logit for each item's text alone (the pair with
        no history) is regressed on the log-odds that pair training converges to for it
        (`training.popularity_logits`: the item's share of the training interactions
        against how often it is drawn as a negative). Its output becomes a fixed logit per
        item (``item_prior_``), the head is zeroed, and pair training learns what the
        history adds to it: every logit, in training, validation and scoring, is the item's
        prior plus the network's. Without it, pair training from sampled pairs learns an
        item's popularity slowly on a large catalog (on ML-1M the no-history model stayed
        at AUC .70 against MostPopular's .81); trained from the prior's weights without the
        fixed offset, it forgot what the prior taught within a few hundred steps
        (``benchmarks/bench_cross_encoder.py --prior-passes``). It reads the training
        counts of every item, as MostPopular does; a private fit refuses a positive value
        (the counts are not protected by DP-SGD) and leaves it out by default.
    max_train_pairs
        Budget: most (user, position) positives drawn for training (default 20,000; None:
        every position).
    epochs
        Most passes over the positives (default 3).
    max_steps
        Budget: most optimizer steps (default None: ``epochs`` decides; 0: no pair
        training, as a refit of a model whose step 0 was best).
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
    train_top_layers
        Train only the top ``train_top_layers`` transformer layers, the pooler and the head
        (0: the pooler and the head alone); the embeddings and the layers below stay fixed
        (default None: every layer trains). Cheaper, and the usual setting for a private
        fit, whose noise grows with the number of trained parameters.
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
    dp_epsilon, dp_delta
        Fine-tune with differential privacy for this target (epsilon, delta) over the
        ``epochs`` budget (None: not private; ``dp_delta`` defaults to ``1 / n_users**1.1``):
        user-level DP-SGD through Opacus, each step's users Poisson-sampled at rate
        ``batch_size / n_users``, each contributing one clipped gradient from a few
        positions of their own sequence (see `private`; ``max_train_pairs`` and
        ``eval_every`` do not apply, validation is measured after every epoch).
    dp_noise_multiplier
        Or the noise multiplier itself (not both); the spent epsilon is still recorded.
    dp_max_grad_norm
        Clipping norm of one user's gradient (default 1.0).
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
    prior_passes_
        The passes of the popularity prior this fit made (``prior_passes`` with None
        resolved; 0: none).
    prior_log_, item_prior_
        With a prior: one dict per pass of the popularity prior (``pass``,
        ``mse``, ``pearson``, ``seconds``; the learning curve's step 0 is measured after
        it), and the prior's fixed logit of each item (float32, one per item).
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
    #: options added after runs were saved, off at these values (`Recommender.neutral_params`)
    neutral_params = {
        "user_text": None,
        "user_values": None,
        "train_top_layers": None,
        "prior_passes": 0,
        **DP_SGD_OFF,
    }
    cost_attributes = (*Recommender.cost_attributes, "prior_passes_", "dp_")

    def __init__(
        self,
        model: str = "minilm-l6",
        pooling: str = "auto",
        history_len: int = 5,
        user_text: str | None = None,
        user_values: dict[str, dict[str, str]] | None = None,
        max_length: int = 64,
        separator: str = " | ",
        n_negatives: int = 4,
        loss: str = "bce",
        prior_passes: int | None = None,
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
        train_top_layers: int | None = None,
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
        dp_epsilon: float | None = None,
        dp_delta: float | None = None,
        dp_noise_multiplier: float | None = None,
        dp_max_grad_norm: float = 1.0,
    ) -> None:
        self.model = model
        self.pooling = pooling
        self.history_len = history_len
        self.user_text = user_text
        self.user_values = user_values
        self.max_length = max_length
        self.separator = separator
        self.n_negatives = n_negatives
        self.loss = loss
        self.prior_passes = prior_passes
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
        self.train_top_layers = train_top_layers
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
        self.dp_epsilon = dp_epsilon
        self.dp_delta = dp_delta
        self.dp_noise_multiplier = dp_noise_multiplier
        self.dp_max_grad_norm = dp_max_grad_norm

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
        if self.user_text is not None and not isinstance(self.user_text, str):
            raise ValueError(f"user_text must be text or None, got {self.user_text!r}")
        if self.user_values is not None and not (
            isinstance(self.user_values, dict)
            and all(isinstance(v, dict) for v in self.user_values.values())
        ):
            raise ValueError(
                "user_values must map a user column to {value: word}, e.g. "
                f'{{"gender": {{"M": "man", "F": "woman"}}}}; got {self.user_values!r}'
            )
        optional = ("max_train_pairs", "eval_every", "max_valid_users", "patience")
        if self.max_steps is not None and self.max_steps < 0:
            raise ValueError(f"max_steps must be 0 or more, or None, got {self.max_steps}")
        top = vars(self).get("train_top_layers")
        if top is not None and (not isinstance(top, int) or isinstance(top, bool) or top < 0):
            raise ValueError(f"train_top_layers must be 0 or more, or None, got {top!r}")
        self._check_dp_params()
        prior = vars(self).get("prior_passes", 0)
        if prior is not None and (
            not isinstance(prior, int) or isinstance(prior, bool) or prior < 0
        ):
            raise ValueError(f"prior_passes must be 0 or more, or None (auto), got {prior!r}")
        if prior and self._private():
            raise ValueError(
                "prior_passes reads every item's training count, which DP-SGD does not "
                "protect: leave prior_passes unset (auto: none for a private fit) or 0"
            )
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
        from recarena.lm import training as tr
        from recarena.models.language.cross_encoder import training

        assert data.item_text is not None  # its length is checked by Recommender.fit
        target, self.pooling_ = training.resolve_checkpoint(
            self.model, self.pooling, data.cache_dir
        )
        rng = np.random.default_rng([self.seed, 4242])
        accelerator = tr.make_accelerator(
            self.device,
            tr.resolve_training_precision(self.mixed_precision, self.device),
            self.gradient_accumulation_steps,
        )
        self.device_ = str(accelerator.device)
        self.mixed_precision_ = str(accelerator.mixed_precision)
        if self.mixed_precision_ in ("bf16", "fp16"):
            from recarena.lm.loading import warn_if_emulated

            half = "bfloat16" if self.mixed_precision_ == "bf16" else "float16"
            warn_if_emulated(self.device_, half, "the cross-encoder's training and scoring")
        with tr.seeded(self.seed), tr.torch_threads(self.num_threads):
            network, self.tokenizer_ = self._load_network(target, self.pooling_)
            self.encoder_parameters_ = sum(p.numel() for p in network.encoder.parameters())
            encoder = self._build_encoder(self.tokenizer_, network.encoder.config, data.item_text)
            self._keep_history(data)
            self.user_attributes_ = user_attributes(self.user_text or "", data)
            # drawn for a private fit too, which does not train on it: the validation users
            # come next from the same generator, so that private and ordinary fits of the
            # same seed are validated on the same users
            positives = sample_positives(
                data.sequences,
                history_len=self.history_len,
                max_pairs=self.max_train_pairs,
                rng=rng,
            )
            validation = self._validation_set(data, valid, encoder, rng)
            self.prior_passes_ = self._prior_passes()
            if self._private():
                self._fit_private(network, data, encoder, validation, accelerator.device)
                return
            seen = data.csr()
            if self.prior_passes_:
                self._fit_prior(network, data, seen, encoder, accelerator)
            self.train_positives_ = len(positives)
            self.train_examples_ = len(positives) * (1 + self.n_negatives)
            loader = training_loader(
                positives,
                seen,
                encoder,
                n_negatives=self.n_negatives,
                batch_size=self.batch_size,
                seed=self.seed,
                prefix_of=self._user_tokens,
                offsets=self._item_prior(),
            )
            evaluate = None
            if validation is not None:
                rows, labels, items = validation

                def evaluate(net: Any) -> dict[str, float]:
                    return self._validation_metrics(net, encoder, rows, labels, items)

            config = training.loop_config(self.get_params())
            result, self.training_log_ = training.fine_tune(
                accelerator, network, loader, config, self.loss, evaluate
            )
            prior = vars(self).get("prior_log_")
            if prior and self.training_log_ and self.training_log_[0]["step"] == 0:
                # step 0 of the curve is measured after the prior stage: say so in it
                self.training_log_[0].update(
                    prior_passes=prior[-1]["pass"],
                    prior_pearson=prior[-1]["pearson"],
                    prior_seconds=prior[-1]["seconds"],
                )
        self.network_ = result.model
        self.best_step_ = int(result.best_step)
        self.best_epoch_ = int(result.best_epoch)
        self.best_valid_auc_ = result.best_value
        self.train_steps_ = int(result.steps)
        self.stopped_early_ = bool(result.stopped_early)
        self.train_seconds_ = float(result.train_seconds)
        self.train_examples_per_second_ = float(result.examples_per_second)
        self._encoder = encoder

    def _fit_prior(
        self,
        network: Any,
        data: TrainingData,
        seen: Any,
        encoder: PairEncoder,
        accelerator: Any,
    ) -> None:
        """The popularity prior stage (``prior_passes``): `prior_log_` is its curve."""
        from recarena.models.language.cross_encoder import training

        target = training.popularity_logits(data.sequences, seen, data.n_items, self.n_negatives)
        network.to(accelerator.device)
        alone = [encoder.pair([], item) for item in range(data.n_items)]
        self.prior_log_ = training.fit_popularity_prior(
            network,
            encoder,
            alone,
            target,
            passes=self.prior_passes_,
            lr=self.lr,
            weight_decay=self.weight_decay,
            batch_size=2 * self.batch_size,
            max_grad_norm=self.max_grad_norm,
            autocast=lambda: self._autocast(accelerator.device),
            seed=self.seed,
        )
        network.eval()
        self.item_prior_ = self._predict(network, encoder, alone, autocast=False, progress=False)
        network.train()
        training.zero_head(network)

    def _prior_passes(self) -> int:
        """The passes of the popularity prior this fit makes: ``prior_passes``, or where it
        is None, `DEFAULT_PRIOR_PASSES` for an ordinary fit and 0 for a private one."""
        passes = vars(self).get("prior_passes", 0)
        if passes is None:
            return 0 if self._private() else DEFAULT_PRIOR_PASSES
        return int(passes)

    def _item_prior(self) -> np.ndarray | None:
        """The popularity prior's fixed logit per item (``prior_passes``), or None."""
        return vars(self).get("item_prior_")

    def _fit_private(
        self,
        network: Any,
        data: TrainingData,
        encoder: PairEncoder,
        validation: tuple[list[tuple[list[int], list[int]]], np.ndarray, np.ndarray] | None,
        device: Any,
    ) -> None:
        """User-level DP-SGD (`private.train_private`) instead of the ordinary loop."""
        from recarena.models.language.cross_encoder.private import train_private

        logger.info(
            "cross-encoder: private fine-tuning: each step's users draw their own positives "
            "(max_train_pairs does not apply) and validation is measured after every epoch "
            "(eval_every does not apply)"
        )

        evaluate = None
        if validation is not None:
            rows, labels, items = validation

            def evaluate(net: Any) -> dict[str, float]:
                return self._validation_metrics(net, encoder, rows, labels, items)

        dp = {
            "epsilon": self.dp_epsilon,
            "delta": self.dp_delta,
            "noise_multiplier": self.dp_noise_multiplier,
            "max_grad_norm": self.dp_max_grad_norm,
        }
        network, self.training_log_, result, self.dp_ = train_private(
            network.to(device),
            data.sequences,
            data.csr(),
            encoder,
            self.get_params(),
            dp,
            evaluate=evaluate,
            prefix_of=self._user_tokens,
            autocast=lambda: self._autocast(device),
        )
        # no fixed sample of positives: what the sampled users drew
        self.train_examples_ = int(self.training_log_[-1]["examples"]) if self.training_log_ else 0
        self.train_positives_ = self.train_examples_ // (1 + self.n_negatives)
        self.network_ = network
        self.best_step_ = int(result["best_step"])
        self.best_epoch_ = int(result["best_epoch"])
        self.best_valid_auc_ = result["best_value"]
        self.train_steps_ = int(result["steps"])
        self.stopped_early_ = bool(result["stopped_early"])
        self.train_seconds_ = float(result["train_seconds"])
        self.train_examples_per_second_ = float(result["examples_per_second"])
        self._encoder = encoder

    def _load_network(self, target: str, pooling: str, *, trained: bool = False) -> tuple[Any, Any]:
        """The encoder (bottom ``num_layers`` layers, given dropout) in a `PairScorer`, and
        its tokenizer. ``trained``: ``target`` is a saved fine-tuned folder."""
        from recarena.models.language.cross_encoder.network import load_pair_scorer

        return load_pair_scorer(
            target,
            pooling,
            dropout=self.dropout,
            num_layers=self.num_layers,
            freeze_embeddings=self.freeze_embeddings,
            train_top_layers=vars(self).get("train_top_layers"),
            trained=trained,
        )

    def _build_encoder(self, tokenizer: Any, config: Any, item_text: Sequence[str]) -> PairEncoder:
        tokens = tokenizer(list(item_text), add_special_tokens=False)["input_ids"]
        self.item_token_ids_, self.item_token_indptr_ = ragged(tokens)
        self.max_length_ = effective_max_length(tokenizer, config, self.max_length)
        encoder = self._encoder_from_state(tokenizer)
        if encoder.n_cut_items:
            logger.warning(
                "%d item texts are longer than max_length %d allows and were cut at the end",
                encoder.n_cut_items,
                encoder.max_length,
            )
        return encoder

    def _encoder_from_state(self, tokenizer: Any) -> PairEncoder:
        ids, indptr = self.item_token_ids_, self.item_token_indptr_
        return pair_encoder(tokenizer, ids, indptr, self.separator, self.max_length_)

    def _validation_set(
        self,
        data: TrainingData,
        valid: pd.DataFrame | None,
        encoder: PairEncoder,
        rng: np.random.Generator,
    ) -> tuple[list[tuple[list[int], list[int]]], np.ndarray, np.ndarray] | None:
        """Frozen validation pairs: held-out item(s) + sampled negatives per user, their
        labels and candidate items."""
        from recarena.models.language.cross_encoder.training import validation_set

        return validation_set(
            data,
            valid,
            encoder,
            rng,
            history_of=self._history_of,
            prefix_of=self._user_tokens,
            max_users=self.max_valid_users,
            n_negatives=self.n_valid_negatives,
        )

    def _validation_metrics(
        self,
        net: Any,
        encoder: PairEncoder,
        rows: list[tuple[list[int], list[int]]],
        labels: np.ndarray,
        items: np.ndarray,
    ) -> dict[str, float]:
        """ROC AUC of the validation pairs, and their binary cross-entropy."""
        from recarena.models.language.cross_encoder.training import validation_metrics

        logits = self._predict(net, encoder, rows, autocast=False, progress=False)
        prior = self._item_prior()
        if prior is not None:
            logits = logits + prior[items]
        return validation_metrics(logits, labels)

    def refit_params(self) -> dict[str, Any]:
        """Train as long as the best validation measurement: its epoch and optimizer step
        (none where the weights before training were best: step 0, the popularity prior
        alone where there is one)."""
        return {"epochs": max(1, int(self.best_epoch_)), "max_steps": int(self.best_step_)}

    # ------------------------------------------------------------------ scoring
    def _history_of(self, user: int) -> np.ndarray:
        """The user's last ``history_len`` training items, newest first."""
        return self._kept_history().row(user)[::-1]

    def _user_tokens(self, user: int) -> list[int]:
        """Token ids of ``user_text`` for ``user`` (none without it), read from
        ``user_attributes_`` at every call, so a swapped attribute is seen."""
        template = vars(self).get("user_text")
        if not template:
            return []
        attributes = vars(self).get("user_attributes_") or {}
        text = fill_user_fields(template, attributes, self.user_values, int(user)).strip()
        return list(self.tokenizer_(text, add_special_tokens=False)["input_ids"])

    def _pair_encoder(self) -> PairEncoder:
        encoder = getattr(self, "_encoder", None)
        if encoder is None:
            encoder = self._encoder = self._encoder_from_state(self.tokenizer_)
        return encoder

    def _autocast(self, device: Any) -> Any:
        from recarena.models.language.cross_encoder.network import autocast_context

        return autocast_context(device, getattr(self, "mixed_precision_", "no"))

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
        from recarena.models.language.cross_encoder.network import predict_logits

        device = next(net.parameters()).device
        context = self._autocast(device) if autocast else contextlib.nullcontext()
        show = self.progress if progress is None else progress
        return predict_logits(
            net, encoder, rows, batch_size=self.eval_batch_size, context=context, progress=show
        )

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
                        history[user] = encoder.history(
                            self._history_of(user), self._user_tokens(user)
                        )
                    rows.extend(encoder.pair(history[user], int(c)) for c in cands)
                if rows:
                    logits = self._predict(self.network_, encoder, rows)
                    out[chunk] = logits.reshape(-1, items.shape[1])
        prior = self._item_prior()
        if prior is not None:
            out += prior[items]
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
