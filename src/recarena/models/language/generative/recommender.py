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
    rankers that use the same decoder weights (see "Shared decoder" below), and every
    normalisation is read from them. A LoRA adapter is trained once for the whole grid (its
    training does not depend on the normalisation).

Item text
    Candidates and history items are named by ``text_field`` of ``TrainingData.items`` (the
    ``title`` column by default) where the item table has that column, else by the run's
    rendered item text (``TrainingData.item_text``). A bare title is what a "next movie is:"
    prompt expects, and it keeps the continuation short: the run's template ("Title: X.
    Genres: Y.") would make the score mostly about how likely the genre list and the
    formatting are. ``text_field=None`` always uses the run's item text. A trailing release
    year is dropped (``strip_year``), and ``article_first`` writes "Usual Suspects, The" as
    "The Usual Suspects".

Efficiency
    The prompt is run once per user with ``use_cache=True``; its key-value cache (a
    transformers ``DynamicCache``) is then shared by every batch of candidates. Each batch
    gets its own cache object whose layers hold the prompt's keys and values *expanded*
    (a broadcast view, no copy) along the batch dimension; the forward pass concatenates the
    candidates' keys onto those views into new tensors, so the shared prompt cache is never
    written to. Candidates are right-padded with an attention mask (prompt ones, then each
    candidate's own mask), sorted by length so a batch pads little, and identical
    candidates of a user are scored once. ``kv_cache=False`` scores full prompt + candidate
    sequences instead (the reference the tests compare to, and the benchmark's baseline;
    it never reads the memo). Everything runs under ``torch.inference_mode``; device
    ``"auto"`` is CUDA (bfloat16, or float16 where unsupported) when available, else the
    CPU in float32.

Shared decoder
    Rankers of one process that score with the same weights (the same decoder, device and
    dtype, zero-shot; or the same trained adapter) share one loaded model and one memo of
    (prompt, candidate) log-likelihoods, held through a weak reference: it lives as long as
    one of those rankers does, so the runner's validation grid and its refit load the
    decoder once and score each validation user once. A LoRA ranker whose training
    parameters and data equal those of a live ranker reuses that ranker's trained adapter
    (its training log included) instead of training again. The memo is keyed by token ids
    (and ``batch_size``), so it can never serve another prompt's numbers.

Position bias
    Each candidate is scored on its own (a pointwise log-likelihood): no candidate list is
    ever shown to the model, so a candidate's score does not depend on where it sits in the
    list or on which other candidates there are (``list_position_independent = True``; a
    test checks that permuting the candidates permutes the scores). Candidates still arrive
    in the split's seeded random order.

Unscorable candidates
    A candidate without text (empty or missing title) cannot be scored. It is not dropped:
    it gets `UNSCORABLE_SCORE`, the lowest finite float32, so it ranks last (ties among
    such candidates are broken at random by the ranking code), and it is counted:
    ``unscorable_items_`` lists the catalog's items without text, ``n_unscorable_`` counts
    the unscorable candidate slots scored since ``fit`` (``n_scored_`` counts them all).

LoRA fine-tuning (``lora=True``)
    Every epoch draws ``max_train_pairs`` fresh (user, position) pairs of the training
    histories (seeded); each pair is the prompt of the history before the position, that
    position's title (the positive) and ``n_train_negatives`` titles drawn uniformly from
    the items the user has not interacted with in training (drawn anew every epoch), the
    way the sampled evaluation protocol draws its negatives. ``train_loss="contrastive"``
    (default) is the cross-entropy of a softmax over the candidates' title scores
    (``train_score``: the sum of the title's token log-probabilities, the probability the
    decoder gives the whole title, or their mean), with the positive as the label: it
    teaches what is measured, ranking the next item above other items for this history,
    and, since positives follow the items' popularity and negatives do not, which items
    are popular. The prompts of a batch run in one forward pass; their key-value caches,
    with gradients, serve all the candidates (the scoring code path, checked equal in the
    tests). With ``train_loss="generative"`` the loss is instead the cross-entropy of the
    positive title's tokens (next-title language modelling; no negatives).

    AdamW on the adapter's parameters (peft ``LoraConfig``: ``lora_r``, ``lora_alpha``,
    ``lora_dropout``, ``lora_target_modules``), a linear warm-up over the first 10% of the
    steps then linear decay, gradients clipped to norm 1, run through Hugging Face
    Accelerate, so the same loop runs on one GPU, on the CPU, or under ``accelerate
    launch``. With validation data, the held-out item of up to ``max_valid_users`` users is
    ranked among ``n_valid_negatives`` seeded negatives after every epoch by the training
    score (``early_stopping="ndcg"``, NDCG@10; the NDCG by the title's log-likelihood sum
    and by its mean are logged too) or its title's mean token log-likelihood is measured
    (``early_stopping="loglik"``); epoch 0 is the zero-shot model, which training must
    beat. The best epoch's adapter is kept, ``refit_params()`` returns it as ``epochs``,
    and ``training_log_`` has one row per epoch (the learning curve the runner saves as
    ``training_log.json``). The rows of epoch 0 and of the kept epoch also hold a sanity
    check: NDCG@10 of the validation items when the decoder is given no history (a
    popularity ranking) and the Spearman correlation of that no-history score with the
    items' training popularity.

Saving
    The zero-shot model saves its parameters and the histories and texts it reads (the
    weights are the zoo's, loaded again from ``model``); a LoRA model also saves its adapter
    with peft's ``save_pretrained`` into ``FOLDER/adapter``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from recarena.models._history import History, KeepsHistory
from recarena.models.base import Recommender, TrainingData
from recarena.models.language.generative.batching import length_buckets
from recarena.models.language.generative.network import (
    cache_kwarg,
    count_lora,
    expand_cache,
    model_device,
    output_cache,
    token_logprobs,
)
from recarena.models.language.generative.session import SESSIONS, Session
from recarena.models.language.generative.training import LoRATraining

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: score of a candidate that cannot be scored (no text): the lowest finite float32
UNSCORABLE_SCORE = float(np.finfo(np.float32).min)
#: prompt of plain (non-chat) use; ``{history}`` is the user's titles joined by ``history_sep``
DEFAULT_PROMPT = "A user watched, in order: {history}. The next movie they will watch is:"
#: prompt put in the user turn of a chat template; the assistant's answer is the title
DEFAULT_CHAT_PROMPT = (
    "A user watched these movies, in order: {history}. "
    "Which movie will they watch next? Answer with the title only."
)
#: a release year at the end of a title: "Toy Story (1995)", "Heat (1995) "
_TRAILING_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")
#: an English article moved behind the title (MovieLens, library catalogues), before any
#: alternative title in parentheses: "City of Lost Children, The (Cité des enfants...)"
_TRAILING_ARTICLE = re.compile(r"^(?P<main>.+?), (?P<article>The|A|An)(?P<rest>\s*\(.*\))?$")
#: what ``{history}`` becomes for a user without history
EMPTY_HISTORY = "nothing yet"
#: prompts whose candidates' log-likelihoods a shared memo keeps (oldest dropped first)
_MEMO_PROMPTS = 20_000


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


class GenerativeRanker(LoRATraining, KeepsHistory, Recommender):
    """Re-rank candidates by the log-likelihood a decoder LM gives their titles.

    Parameters
    ----------
    model
        Zoo name (``"smollm2-135m-instruct"``, ``"gemma3-270m"``,
        ``"qwen2.5-coder-0.5b-instruct"``), local model folder or GGUF file, or hub id.
    prompt
        Template of the prompt; ``{history}`` is replaced by the user's titles, oldest
        first, joined by ``history_sep``. None: `DEFAULT_PROMPT`, or `DEFAULT_CHAT_PROMPT`
        with ``chat_template=True``.
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

    def __init__(
        self,
        model: str = "smollm2-135m-instruct",
        prompt: str | None = None,
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
        if self.lora and self.train_loss == "contrastive" and self.n_train_negatives < 1:
            raise ValueError(f"n_train_negatives must be at least 1, got {self.n_train_negatives}")
        template = self._prompt_template()
        if "{history}" not in template:
            raise ValueError(f"prompt must contain '{{history}}', got {template!r}")

    def _fit(self, data: TrainingData, valid: pd.DataFrame | None) -> None:
        self._release_lm()
        self._adapter_dir: Path | None = None
        self.item_texts_ = self._item_texts(data)
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

    def _item_texts(self, data: TrainingData) -> list[str]:
        field = self.text_field
        if field is not None and field in data.items.columns and len(data.items) == data.n_items:
            raw = data.items[field].tolist()
        else:
            assert data.item_text is not None  # fit() checks it (uses_text)
            raw = list(data.item_text)
        if len(raw) != data.n_items:
            raise ValueError(f"{len(raw)} item texts for {data.n_items} items")
        texts = [_clean(value) for value in raw]
        if self.strip_year:
            texts = [_TRAILING_YEAR.sub("", t) or t for t in texts]
        if self.article_first:
            texts = [_TRAILING_ARTICLE.sub(r"\g<article> \g<main>\g<rest>", t) for t in texts]
        return texts

    def refit_params(self) -> dict[str, Any]:
        """The epochs to train without validation data: the best epoch (LoRA only)."""
        if self.lora and getattr(self, "best_epoch_", None) is not None:
            return {"epochs": int(self.best_epoch_)}
        return {}

    # ------------------------------------------------------------------ the language model
    def _release_lm(self) -> None:
        self._session: Session | None = None
        self._lm = None
        self._tokenizer = None
        self._candidate_memo: dict[int, list[int] | None] = {}

    def _attach(self, session: Session) -> Any:
        """Score with ``session``'s decoder from now on."""
        self._session = session
        self._lm = session.lm
        self._tokenizer = session.tokenizer
        self._candidate_memo = {}
        self.device_ = session.device
        self.dtype_ = session.dtype
        self.lm_parameters_ = session.n_parameters
        self.load_seconds_ = session.load_seconds
        self.lm_from_converted_ = session.from_converted
        if self.chat_template and not getattr(self._tokenizer, "chat_template", None):
            raise ValueError(
                f"chat_template=True, but the tokenizer of {self.model!r} has no chat template"
            )
        return self._lm

    def _load(self) -> Any:
        """A freshly loaded decoder (``LoadedCausalLM``), shared with nobody."""
        from recarena.lm.loading import load_causal_lm
        from recarena.lm.zoo import resolve_model

        resolved = resolve_model(self.model, getattr(self, "cache_dir_", None))
        return load_causal_lm(resolved, device=self.device, dtype=self.dtype)

    def _base_key(self) -> str:
        """The identity of the zero-shot weights: decoder, revision, device, dtype."""
        from recarena.lm.zoo import resolve_model

        resolved = resolve_model(self.model, getattr(self, "cache_dir_", None))
        return "|".join(
            ["base", resolved.identity, resolved.load_target, resolved.revision]
            + [str(self.device), str(self.dtype)]
        )

    def _ensure_lm(self) -> Any:
        """Load the decoder (and the saved adapter, if any) on first use."""
        if getattr(self, "_lm", None) is not None:
            return self._lm
        adapter = getattr(self, "_adapter_dir", None)
        if adapter is not None:
            from peft import PeftModel

            loaded = self._load()
            lm = PeftModel.from_pretrained(loaded.model, str(adapter)).eval()
            self._attach(Session(lm, loaded.tokenizer, loaded, memo=True))
            self.lora_parameters_ = count_lora(lm)
            return self._lm
        key = self._base_key()
        session = SESSIONS.get(key)
        if session is None:
            loaded = self._load()
            session = Session(loaded.model, loaded.tokenizer, loaded, memo=True)
            SESSIONS[key] = session
        return self._attach(session)

    def _prompt_template(self) -> str:
        if self.prompt is not None:
            return self.prompt
        return DEFAULT_CHAT_PROMPT if self.chat_template else DEFAULT_PROMPT

    def _max_positions(self) -> int | None:
        config = self._lm.config
        value = getattr(config, "max_position_embeddings", None)
        return int(value) if value else None

    def _render(self, titles: list[str]) -> list[int]:
        history = self.history_sep.join(titles) if titles else EMPTY_HISTORY
        text = self._prompt_template().replace("{history}", history)
        tok = self._tokenizer
        if self.chat_template:
            text = tok.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
            )
            return list(tok(text, add_special_tokens=False)["input_ids"])
        return list(tok(text)["input_ids"])

    def _prompt_ids(self, history: np.ndarray) -> list[int]:
        """Token ids of the prompt for a history (item ids, oldest first)."""
        titles = [self.item_texts_[i] for i in history.tolist() if self.item_texts_[i]]
        if self.history_len is not None:
            titles = titles[-self.history_len :]
        limit = self.max_prompt_tokens
        positions = self._max_positions()
        if positions is not None:
            limit = max(1, min(limit, positions - self.max_candidate_tokens - 1))
        ids = self._render(titles)
        if len(ids) > limit and titles:
            # keep the most recent titles that fit (the length grows with the titles kept)
            lo, hi = 0, len(titles) - 1  # titles[-k:] fits for k = lo; try up to hi
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if len(self._render(titles[-mid:])) <= limit:
                    lo = mid
                else:
                    hi = mid - 1
            ids = self._render(titles[-lo:] if lo else [])
        return ids[-limit:]

    def _user_prompt_ids(self, user: int) -> list[int]:
        return self._prompt_ids(History(self.history_items_, self.history_indptr_).row(user))

    def _continuation_prefix(self) -> str:
        """A space before the title unless the prompt ends in whitespace (chat templates)."""
        if self.chat_template:
            return ""
        return "" if self._prompt_template()[-1:].isspace() else " "

    def _candidate_ids(self, item: int) -> list[int] | None:
        """Token ids of item ``item`` as a continuation (None when it has no text)."""
        memo = self._candidate_memo
        if item in memo:
            return memo[item]
        text = self.item_texts_[item]
        ids: list[int] | None = None
        if text:
            tok = self._tokenizer
            ids = list(
                tok(self._continuation_prefix() + text, add_special_tokens=False)["input_ids"]
            )
            ids = ids[: self.max_candidate_tokens]
            if self.score_end and tok.eos_token_id is not None:
                ids.append(int(tok.eos_token_id))
            ids = ids or None
        memo[item] = ids
        return ids

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
        if self.progress and len(users) > 1:
            from tqdm.auto import tqdm

            rows = tqdm(rows, desc="generative ranker", unit="user", leave=False)
        from recarena.lm.training import torch_threads

        with torch_threads(self.num_threads):
            for r in rows:
                unique, inverse = np.unique(items[r], return_inverse=True)
                scores = self._score_candidates(self._user_prompt_ids(int(users[r])), unique)
                out[r] = scores[inverse]
        return out

    def _score_candidates(self, prompt_ids: list[int], items: np.ndarray) -> np.ndarray:
        """Scores of ``items`` after one prompt (unscorable ones at `UNSCORABLE_SCORE`)."""
        conts = [self._candidate_ids(int(i)) for i in items]
        ok = [k for k, c in enumerate(conts) if c is not None]
        scores = np.full(len(items), UNSCORABLE_SCORE, dtype=np.float64)
        if ok:
            sums, counts = self._continuation_logprobs(prompt_ids, [conts[k] for k in ok])
            values = self._normalise(sums, counts, items[ok])
            scores[ok] = np.maximum(values, UNSCORABLE_SCORE)
        return scores.astype(np.float32)

    def _normalise(self, sums: np.ndarray, counts: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The score of (scorable) ``items`` from their log-likelihood sums and token counts."""
        if self.prior_correction:
            sums = sums - self.prior_correction * self._prior_logliks(items)
        return sums / counts if self.length_norm == "mean" else sums

    def _prior_logliks(self, items: np.ndarray) -> np.ndarray:
        """Log-likelihood of each (scorable) item after an empty history."""
        null_prompt = self._prompt_ids(np.empty(0, dtype=np.int64))
        conts = [self._candidate_ids(int(i)) for i in items]
        sums, _ = self._continuation_logprobs(null_prompt, conts)  # type: ignore[arg-type]
        return sums

    def _continuation_logprobs(
        self, prompt_ids: list[int], conts: list[list[int]], *, kv_cache: bool | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(sum of token log-probabilities, number of tokens) of each continuation.

        The default path (``kv_cache`` None and the ``kv_cache`` parameter on) reads and
        fills the shared memo of the decoder's session, when it has one.
        """
        self._ensure_lm()
        counts = np.array([len(c) for c in conts], dtype=np.float64)
        session = getattr(self, "_session", None)
        memo = (
            None if session is None or kv_cache is not None or not self.kv_cache else session.memo
        )
        if memo is None:
            return self._compute_logprobs(prompt_ids, conts, kv_cache=kv_cache), counts
        key = (self.batch_size, tuple(prompt_ids))
        known = memo.get(key)
        if known is None:
            if len(memo) >= _MEMO_PROMPTS:
                del memo[next(iter(memo))]  # the oldest prompt
            known = memo[key] = {}
        wanted = [tuple(c) for c in conts]
        missing = list(dict.fromkeys(c for c in wanted if c not in known))
        if missing:
            sums = self._compute_logprobs(prompt_ids, [list(c) for c in missing])
            known.update(zip(missing, sums.tolist(), strict=True))
        return np.array([known[c] for c in wanted], dtype=np.float64), counts

    def _compute_logprobs(
        self, prompt_ids: list[int], conts: list[list[int]], *, kv_cache: bool | None = None
    ) -> np.ndarray:
        """Sum of token log-probabilities of each continuation, from the decoder."""
        import torch

        lm = self._ensure_lm()
        use_cache = self.kv_cache if kv_cache is None else kv_cache
        sums = np.zeros(len(conts), dtype=np.float64)
        lengths = np.array([len(c) for c in conts], dtype=np.int64)
        with torch.inference_mode():
            device = model_device(lm)
            prompt = torch.tensor([prompt_ids], dtype=torch.long, device=device)
            if use_cache:
                out = lm(input_ids=prompt, use_cache=True, logits_to_keep=1)
                prefix = output_cache(out)
                first = out.logits[0, -1].float().log_softmax(-1)
            for idx in length_buckets(lengths, self.batch_size):
                ids, mask = self._pad([conts[k] for k in idx], device)
                if use_cache:
                    token_lp = self._cached_batch(lm, prefix, first, prompt.shape[1], ids, mask)
                else:
                    token_lp = self._full_batch(lm, prompt, ids, mask)
                sums[idx] = (token_lp * mask).sum(1).double().cpu().numpy()
        return sums

    def _pad(self, conts: list[list[int]], device: Any) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        width = max(len(c) for c in conts)
        pad = self._tokenizer.pad_token_id
        ids = torch.full((len(conts), width), 0 if pad is None else int(pad), dtype=torch.long)
        mask = torch.zeros((len(conts), width), dtype=torch.long)
        for r, c in enumerate(conts):
            ids[r, : len(c)] = torch.tensor(c, dtype=torch.long)
            mask[r, : len(c)] = 1
        return ids.to(device), mask.to(device)

    def _cached_batch(
        self,
        lm: Any,
        prefix: Any,
        first: torch.Tensor,
        n_prompt: int,
        ids: torch.Tensor,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        """Token log-probabilities (B, L) of a batch of continuations after the cached prompt.

        Differentiable: training runs the same code with gradients through the prompt's
        cache.
        """
        import torch

        batch = ids.shape[0]
        cache = expand_cache(prefix, batch)
        attention = torch.cat(
            [torch.ones((batch, n_prompt), dtype=mask.dtype, device=mask.device), mask], dim=1
        )
        # the first token's log-probability comes from the prompt's last position
        lp0 = first[ids[:, 0]].unsqueeze(1)
        if ids.shape[1] == 1:
            return lp0
        logits = lm(
            input_ids=ids[:, :-1],
            attention_mask=attention[:, :-1],
            use_cache=True,
            **{cache_kwarg(lm): cache},
        ).logits
        return torch.cat([lp0, token_logprobs(logits, ids[:, 1:])], dim=1)

    def _full_batch(
        self, lm: Any, prompt: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """The same log-probabilities from full prompt + continuation sequences, no cache."""
        import torch

        batch, n_prompt = ids.shape[0], prompt.shape[1]
        seq = torch.cat([prompt.expand(batch, -1), ids], dim=1)
        attention = torch.cat(
            [torch.ones((batch, n_prompt), dtype=mask.dtype, device=mask.device), mask], dim=1
        )
        logits = lm(input_ids=seq[:, :-1], attention_mask=attention[:, :-1], use_cache=False).logits
        return token_logprobs(logits[:, n_prompt - 1 :], ids)

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


# ---------------------------------------------------------------------- helpers


def _clean(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return " ".join(str(value).split())
