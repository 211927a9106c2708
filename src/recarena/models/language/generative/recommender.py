"""Generative LM ranker: a decoder scores each candidate by the log-likelihood of its title.

A GPT-style decoder (a zoo name such as ``"smollm2-135m-instruct"``, a local folder or GGUF
file, or a hub id) reads a prompt built from the user's last ``history_len`` item titles::

    A user watched, in order: Toy Story; Heat. The next movie they will watch is:

and each candidate's score is the log-likelihood of its title as the continuation: the sum
of the log-probabilities of its tokens (``length_norm="sum"``) or their mean
(``length_norm="mean"``), less ``prior_correction`` times the title's log-likelihood after
an empty history. Zero-shot by default; with ``lora=True`` a LoRA adapter is first trained
to rank each training history's next item above sampled items (fusion "fine-tuning").

The model only re-ranks candidates (``scores_full_catalog = False``): the runner gives it
the frozen candidate lists of a sampled or first-stage protocol.

Score normalisation is tuned
    How the log-likelihood is read (``length_norm`` sum or mean, ``prior_correction`` 0,
    0.5 or 1) is the default validation grid (`GenerativeRanker.param_grid`), chosen on validation
    like any other model's parameters. A grid point costs no extra language-model work: the
    token log-likelihoods of a (prompt, candidate) pair are kept in a memo shared by the
    rankers that use the same decoder weights (see "Shared decoder" in `session`), and every
    normalisation is read from them. A LoRA adapter is trained once for the whole grid (its
    training does not depend on the normalisation).

How it works
    `prompts` (which text names an item; prompts and candidates as token ids), `scoring`
    (the key-value cache shared by a user's candidates, batching, position independence,
    unscorable candidates at `UNSCORABLE_SCORE`), `session` (the decoder shared by rankers
    with the same weights) and `training` (LoRA fine-tuning, early stopping, the training
    log).

Saving
    The zero-shot model saves its parameters and the histories and texts it reads (the
    weights are the zoo's, loaded again from ``model``); a LoRA model also saves its adapter
    with peft's ``save_pretrained`` into ``FOLDER/adapter``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from recarena._progress import bars_enabled
from recarena.models._history import KeepsHistory
from recarena.models.base import Recommender, TrainingData
from recarena.models.language.generative.prompts import (
    DEFAULT_CHAT_PROMPT,
    DEFAULT_PROMPT,
    EMPTY_HISTORY,
    PromptIds,
    user_attributes,
)
from recarena.models.language.generative.scoring import UNSCORABLE_SCORE, CandidateScoring
from recarena.models.language.generative.session import UsesSession
from recarena.models.language.generative.training import LoRATraining

__all__ = [
    "DEFAULT_CHAT_PROMPT",
    "DEFAULT_PROMPT",
    "EMPTY_HISTORY",
    "UNSCORABLE_SCORE",
    "GenerativeRanker",
]

logger = logging.getLogger(__name__)


class _FollowsLoRA:
    """A class attribute whose value follows the ``lora`` parameter.

    On an instance it reads the instance's ``lora``; on the class it reads the default of
    ``lora`` in ``__init__``, so ``GenerativeRanker.fusion`` is ``"zero-shot"`` and
    ``GenerativeRanker(lora=True).fusion`` is ``"fine-tuning"``.
    """

    def __init__(self, zero_shot: Any, tuned: Any) -> None:
        self.zero_shot = zero_shot
        self.tuned = tuned

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is not None:
            lora = bool(getattr(obj, "lora", False))
        else:
            lora = bool(owner.param_default("lora"))  # type: ignore[union-attr]
        return self.tuned if lora else self.zero_shot


class GenerativeRanker(
    LoRATraining, CandidateScoring, PromptIds, UsesSession, KeepsHistory, Recommender
):
    """Re-rank candidates by the log-likelihood a decoder LM gives their titles.

    Parameters
    ----------
    model
        Zoo name (``"smollm2-135m-instruct"``, ``"gemma3-270m"``,
        ``"qwen2.5-coder-0.5b-instruct"``), local model folder or GGUF file, or hub id.
    prompt
        Template of the prompt; ``{history}`` is replaced by the user's titles, oldest
        first, joined by ``history_sep``. None: `DEFAULT_PROMPT`, or `DEFAULT_CHAT_PROMPT`
        with ``chat_template=True``. ``{user:COLUMN}`` is replaced by the user's value in
        column ``COLUMN`` of the data's user table (``"A {user:age}-year-old {user:gender}
        watched ..."``), the way a counterfactual probe puts an attribute into the input
        (`recarena.metrics.counterfactual`).
    user_values
        Words for the user table's values in the prompt, per column: ``{"gender": {"M":
        "man", "F": "woman"}}``; a value without a word is written as it is.
    history_len
        The user's last ``history_len`` items are listed (None: all that fit).
    history_sep
        Separator between history titles.
    text_field
        Column of ``TrainingData.items`` that names an item (``"title"``); the run's item
        text where the table lacks it, or when None.
    chat_template
        Put the prompt in the user turn of the tokenizer's chat template (instruct models);
        the candidate is then the assistant's answer. The tokenizer must have a template.
    strip_year
        Drop a trailing release year such as ``" (1995)"`` from titles (MovieLens style), in
        the history and the candidates. The year's digits cost a 135M decoder more
        log-likelihood than the title itself (``" Toy Story 2 (1999)"`` after Toy Story
        scores below ``" Schindler's List (1993)"`` with the year, above it without), so
        they are left out by default.
    article_first
        Put an English article that a catalogue moved behind the title back in front
        (``"Usual Suspects, The"`` becomes ``"The Usual Suspects"``, the way the title is
        written in the text a decoder learned from).
    length_norm
        ``"sum"`` of the candidate's token log-probabilities (the log-likelihood of the
        whole title) or their ``"mean"`` (per token, so long titles are not penalised).
        In the default validation grid.
    score_end
        Also score the end of the answer after the title (the tokenizer's end-of-sequence
        token, ``<|im_end|>`` for a chat template), so a title must be complete.
    prior_correction
        Weight of the candidate's log-likelihood after an empty history ("nothing yet"),
        subtracted from its score: 1.0 scores the pointwise mutual information between
        history and title, which removes the model's preference for titles that are likely
        whatever the user watched (famous or short ones). Computed once per item. In the
        default validation grid.
    max_prompt_tokens
        Longest prompt; the oldest titles are dropped until the prompt fits (within the
        model's positions, less ``max_candidate_tokens``).
    max_candidate_tokens
        Tokens kept of a candidate's text.
    batch_size
        Candidates scored per forward pass.
    kv_cache
        Reuse the prompt's key-value cache for every candidate (False: score each full
        prompt + candidate sequence; same scores, slower, never memoised).
    device, dtype
        ``"auto"`` (CUDA with bfloat16 when available, else the CPU in float32), or e.g.
        ``"cpu"``/``"cuda"`` and ``"float32"``/``"bfloat16"``/``"float16"``.
    lora
        Train a LoRA adapter before scoring (fusion "fine-tuning").
    lora_r, lora_alpha, lora_dropout, lora_target_modules
        peft ``LoraConfig`` settings (target modules: names, or ``"all-linear"``: every
        linear layer of the decoder blocks, the output head excluded).
    lora_layers
        The adapter goes into the decoder's top ``lora_layers`` blocks only (peft's
        ``layers_to_transform``; None: every block). The blocks below have nothing to
        train, so no gradient flows through them: a training step costs less, and the
        adapter sees less.
    lr, weight_decay
        AdamW settings (linear warm-up over 10% of the steps, then linear decay).
    epochs
        Epochs of training (the most, with early stopping); each draws fresh pairs.
    train_batch_size
        Training pairs per optimizer step.
    max_train_pairs
        (user, position) pairs drawn (seeded, fresh) from the training histories per epoch.
    train_loss
        ``"contrastive"``: softmax cross-entropy over the title log-likelihoods of the
        positive and ``n_train_negatives`` sampled items; ``"generative"``: cross-entropy
        of the positive title's tokens.
    train_score
        The title score the contrastive softmax and early stopping read: ``"sum"`` of its
        token log-probabilities (the probability of the whole title) or their ``"mean"``.
        Whatever it is, the grid's ``length_norm`` decides how the trained model scores.
    n_train_negatives
        Negatives per training pair (``train_loss="contrastive"``), drawn uniformly from
        the items the user has no training interaction with, anew every epoch.
    early_stopping
        ``"ndcg"``: NDCG@10 of the held-out item among ``n_valid_negatives`` sampled
        candidates, by title log-likelihood; ``"loglik"``: its title's mean token
        log-likelihood.
    patience
        Epochs without a better validation value before training stops.
    max_valid_users
        Validation users measured after each epoch (a seeded sample).
    n_valid_negatives
        Negatives per validation user for ``early_stopping="ndcg"``.
    seed
        Seeds the pair sample, the negatives, the adapter's initialisation, the batch order
        and dropout.
    num_threads
        torch CPU threads while scoring and training (None: torch's setting). One thread
        is much faster for small models on a busy machine.
    progress
        Show a tqdm bar while scoring users.

    Attributes
    ----------
    item_texts_ : list of str, the text that names each item
    unscorable_items_ : ids of items without text
    n_unscorable_, n_scored_ : candidate slots (padding excluded) passed to ``score`` since
        fit: those without text, and all of them
    device_, dtype_, lm_parameters_, load_seconds_, lm_from_converted_
        Set once the language model is loaded (at the first scoring, or in ``fit`` with LoRA).
    lora_parameters_ : parameters of the adapter (0 zero-shot)
    best_epoch_, training_log_ : LoRA training (epoch 0 is the untrained model)
    train_seconds_, train_examples_per_second_ : LoRA training time (validation excluded)
    """

    family = "generative-lm"
    #: a language model: a share of a GPU where the cluster has one
    resources = {"num_cpus": 1, "num_gpus": 0.25}
    fusion = _FollowsLoRA("zero-shot", "fine-tuning")  # type: ignore[assignment]
    uses_validation = _FollowsLoRA(False, True)  # type: ignore[assignment]
    scores_full_catalog = False
    uses_text = True
    language_model_params = ("model",)
    calibrated_scores = False
    #: a candidate's score does not depend on its position in the list or on the others
    list_position_independent: ClassVar[bool] = True
    #: how the log-likelihood is read, chosen on validation; the grid's points share one
    #: scoring pass (and one LoRA training), so tuning costs one validation pass
    param_grid: ClassVar[dict[str, list[Any]]] = {
        "length_norm": ["sum", "mean"],
        "prior_correction": [0.0, 0.5, 1.0],
    }
    #: options added after runs were saved, off at these values (`Recommender.neutral_params`)
    neutral_params: ClassVar[dict[str, Any]] = {"lora_layers": None}

    def __init__(
        self,
        model: str = "smollm2-135m-instruct",
        prompt: str | None = None,
        user_values: dict[str, dict[str, str]] | None = None,
        history_len: int | None = 10,
        history_sep: str = "; ",
        text_field: str | None = "title",
        chat_template: bool = False,
        strip_year: bool = True,
        article_first: bool = False,
        length_norm: str = "sum",
        score_end: bool = False,
        prior_correction: float = 0.0,
        max_prompt_tokens: int = 512,
        max_candidate_tokens: int = 32,
        batch_size: int = 32,
        kv_cache: bool = True,
        device: str = "auto",
        dtype: str = "auto",
        lora: bool = False,
        lora_r: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.05,
        lora_target_modules: Sequence[str] | str = "all-linear",
        lora_layers: int | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        epochs: int = 4,
        train_batch_size: int = 8,
        max_train_pairs: int = 256,
        train_loss: str = "contrastive",
        n_train_negatives: int = 9,
        train_score: str = "sum",
        early_stopping: str = "ndcg",
        patience: int = 2,
        max_valid_users: int = 100,
        n_valid_negatives: int = 19,
        seed: int = 0,
        num_threads: int | None = None,
        progress: bool = True,
    ) -> None:
        self.model = model
        self.prompt = prompt
        self.user_values = user_values
        self.history_len = history_len
        self.history_sep = history_sep
        self.text_field = text_field
        self.chat_template = chat_template
        self.strip_year = strip_year
        self.article_first = article_first
        self.length_norm = length_norm
        self.score_end = score_end
        self.prior_correction = prior_correction
        self.max_prompt_tokens = max_prompt_tokens
        self.max_candidate_tokens = max_candidate_tokens
        self.batch_size = batch_size
        self.kv_cache = kv_cache
        self.device = device
        self.dtype = dtype
        self.lora = lora
        self.lora_r = lora_r
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.lora_target_modules = lora_target_modules
        self.lora_layers = lora_layers
        self.lr = lr
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.train_batch_size = train_batch_size
        self.max_train_pairs = max_train_pairs
        self.train_loss = train_loss
        self.n_train_negatives = n_train_negatives
        self.train_score = train_score
        self.early_stopping = early_stopping
        self.patience = patience
        self.max_valid_users = max_valid_users
        self.n_valid_negatives = n_valid_negatives
        self.seed = seed
        self.num_threads = num_threads
        self.progress = progress

    # ------------------------------------------------------------------ fitting
    def check_params(self) -> None:
        if self.length_norm not in ("sum", "mean"):
            raise ValueError(f"length_norm must be 'sum' or 'mean', got {self.length_norm!r}")
        if self.early_stopping not in ("ndcg", "loglik"):
            raise ValueError(
                f"early_stopping must be 'ndcg' or 'loglik', got {self.early_stopping!r}"
            )
        if self.train_loss not in ("contrastive", "generative"):
            raise ValueError(
                f"train_loss must be 'contrastive' or 'generative', got {self.train_loss!r}"
            )
        if self.history_len is not None and self.history_len < 1:
            raise ValueError(f"history_len must be at least 1 or None, got {self.history_len}")
        for name in ("max_prompt_tokens", "max_candidate_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.train_score not in ("sum", "mean"):
            raise ValueError(f"train_score must be 'sum' or 'mean', got {self.train_score!r}")
        if self.lora_layers is not None and self.lora_layers < 1:
            raise ValueError(f"lora_layers must be at least 1 or None, got {self.lora_layers}")
        targets = self.lora_target_modules
        if self.lora_layers is not None and isinstance(targets, str) and targets != "all-linear":
            raise ValueError(
                "lora_layers needs lora_target_modules as a list of module names or "
                f"'all-linear', got the pattern {targets!r}"
            )
        if self.lora and self.train_loss == "contrastive" and self.n_train_negatives < 1:
            raise ValueError(f"n_train_negatives must be at least 1, got {self.n_train_negatives}")
        template = self._prompt_template()
        if "{history}" not in template:
            raise ValueError(f"prompt must contain '{{history}}', got {template!r}")

    def _fit(self, data: TrainingData, valid: pd.DataFrame | None) -> None:
        self._release_lm()
        self._adapter_dir: Path | None = None
        self.item_texts_ = self._item_texts(data)
        self.user_attributes_ = user_attributes(self._prompt_template(), data)
        self.unscorable_items_ = np.flatnonzero(
            np.array([not t for t in self.item_texts_], dtype=bool)
        )
        self._keep_history(data)
        self.cache_dir_ = None if data.cache_dir is None else str(data.cache_dir)
        self.n_unscorable_ = 0
        self.n_scored_ = 0
        self.lora_parameters_ = 0
        self.training_log_: list[dict[str, Any]] = []
        if self.lora:
            from recarena.lm.training import torch_threads

            with torch_threads(self.num_threads):
                self._train_lora(data, valid)

    def refit_params(self) -> dict[str, Any]:
        """The epochs to train without validation data: the best epoch (LoRA only)."""
        if self.lora and getattr(self, "best_epoch_", None) is not None:
            return {"epochs": int(self.best_epoch_)}
        return {}

    # ------------------------------------------------------------------ scoring
    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        """Scores of candidate ``items`` (see `Recommender.score`); counts unscorable ones."""
        out = super().score(users, items)
        if items is not None:
            real = np.asarray(items)[np.asarray(items) >= 0]
            self.n_scored_ += int(real.size)
            self.n_unscorable_ += int(np.isin(real, self.unscorable_items_).sum())
        return out

    def _score(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        assert items is not None  # scores_full_catalog is False: the base class checks it
        self._ensure_lm()
        out = np.empty(items.shape, dtype=np.float32)
        rows = range(len(users))
        if self.progress and bars_enabled() and len(users) > 1:
            from tqdm.auto import tqdm

            rows = tqdm(rows, desc="generative ranker", unit="user", leave=False)
        from recarena.lm.training import torch_threads

        with torch_threads(self.num_threads):
            for r in rows:
                unique, inverse = np.unique(items[r], return_inverse=True)
                scores = self._score_candidates(self._user_prompt_ids(int(users[r])), unique)
                out[r] = scores[inverse]
        return out

    # ------------------------------------------------------------------ cost
    def n_parameters(self) -> tuple[int, int]:
        """(decoder + adapter parameters, trainable ones: the adapter's, 0 zero-shot)."""
        if not hasattr(self, "n_items_"):
            return 0, 0
        if not hasattr(self, "lm_parameters_"):
            self._ensure_lm()
        lora = int(getattr(self, "lora_parameters_", 0))
        return int(self.lm_parameters_) + lora, lora

    # ------------------------------------------------------------------ persistence
    def save(self, folder: Any) -> None:
        """Parameters, texts and histories; plus ``adapter/`` (peft) for a LoRA model."""
        super().save(folder)
        if self.lora and getattr(self, "_lm", None) is not None:
            self._lm.save_pretrained(str(Path(folder) / "adapter"))

    def _restore_state(self, state: dict[str, Any], folder: Path) -> None:
        super()._restore_state(state, folder)
        self._release_lm()
        self._adapter_dir = None
        if self.lora:
            adapter = folder / "adapter"
            if not (adapter / "adapter_config.json").is_file():
                raise FileNotFoundError(f"{folder} holds a LoRA ranker but no adapter/")
            self._adapter_dir = adapter
            self._ensure_lm()  # now, while the folder certainly exists
