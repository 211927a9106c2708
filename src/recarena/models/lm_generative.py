"""Generative LM ranker: a decoder scores each candidate by the log-likelihood of its title.

A GPT-style decoder (a zoo name such as ``"smollm2-135m-instruct"``, a local folder or GGUF
file, or a hub id) reads a prompt built from the user's last ``history_len`` item titles::

    A user watched, in order: Toy Story (1995); Heat (1995). The next movie they will watch is:

and each candidate's score is the log-likelihood of its title as the continuation: the sum
of the log-probabilities of its tokens (``length_norm="sum"``) or their mean
(``length_norm="mean"``). Zero-shot by default; with ``lora=True`` a LoRA adapter is first
trained on next-item titles of the training histories (fusion "fine-tuning").

The model only re-ranks candidates (``scores_full_catalog = False``): the runner gives it
the frozen candidate lists of a sampled or first-stage protocol.

Item text
    Candidates and history items are named by ``text_field`` of ``TrainingData.items`` (the
    ``title`` column by default) where the item table has that column, else by the run's
    rendered item text (``TrainingData.item_text``). A bare title is what a "next movie is:"
    prompt expects, and it keeps the continuation short: the run's template ("Title: X.
    Genres: Y.") would make the score mostly about how likely the genre list and the
    formatting are. ``text_field=None`` always uses the run's item text.

Efficiency
    The prompt is run once per user with ``use_cache=True``; its key-value cache (a
    transformers ``DynamicCache``) is then shared by every batch of candidates. Each batch
    gets its own cache object whose layers hold the prompt's keys and values *expanded*
    (a broadcast view, no copy) along the batch dimension; the forward pass concatenates the
    candidates' keys onto those views into new tensors, so the shared prompt cache is never
    written to. Candidates are right-padded with an attention mask (prompt ones, then each
    candidate's own mask), sorted by length so a batch pads little, and identical
    candidates of a user are scored once. ``kv_cache=False`` scores full prompt + candidate
    sequences instead (the reference the tests compare to, and the benchmark's baseline).
    Everything runs under ``torch.inference_mode``; device ``"auto"`` is CUDA (bfloat16, or
    float16 where unsupported) when available, else the CPU in float32.

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
    Seeded (user, position) pairs of the training histories (at most ``max_train_pairs``)
    become (prompt of the history before the position, that position's title) examples;
    the loss is the cross-entropy of the title's tokens only. AdamW on the adapter's
    parameters (peft ``LoraConfig``: ``lora_r``, ``lora_alpha``, ``lora_dropout``,
    ``lora_target_modules``), run through Hugging Face Accelerate, so the same loop runs on
    one GPU, on the CPU, or under ``accelerate launch``. With validation data, the held-out
    item of up to ``max_valid_users`` users is ranked among ``n_valid_negatives`` seeded
    negatives after every epoch (``early_stopping="ndcg"``, NDCG@10) or its title's mean
    token log-likelihood is measured (``early_stopping="loglik"``); epoch 0 is the zero-shot
    model. The best epoch's adapter is kept, ``refit_params()`` returns it as ``epochs``,
    and ``training_log_`` has one row per epoch.

Saving
    The zero-shot model saves its parameters and the histories and texts it reads (the
    weights are the zoo's, loaded again from ``model``); a LoRA model also saves its adapter
    with peft's ``save_pretrained`` into ``FOLDER/adapter``.
"""

from __future__ import annotations

import copy
import inspect
import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from recarena.models._history import History, KeepsHistory
from recarena.models.base import Recommender, TrainingData

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
#: what ``{history}`` becomes for a user without history
EMPTY_HISTORY = "nothing yet"
#: cut-off of the validation NDCG that early stopping reads
_EVAL_K = 10
#: the validation number each ``early_stopping`` setting keeps the best adapter by
_MONITOR = {"ndcg": f"valid_ndcg@{_EVAL_K}", "loglik": "valid_loglik_per_token"}


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
            lora = bool(inspect.signature(owner.__init__).parameters["lora"].default)  # type: ignore[union-attr]
        return self.tuned if lora else self.zero_shot


class GenerativeRanker(KeepsHistory, Recommender):
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
    length_norm
        ``"sum"`` of the candidate's token log-probabilities (the log-likelihood of the
        whole title) or their ``"mean"`` (per token, so long titles are not penalised).
    score_end
        Also score the end of the answer after the title (the tokenizer's end-of-sequence
        token, ``<|im_end|>`` for a chat template), so a title must be complete.
    prior_correction
        Weight of the candidate's log-likelihood after an empty history ("nothing yet"),
        subtracted from its score: 1.0 scores the pointwise mutual information between
        history and title, which removes the model's preference for titles that are likely
        whatever the user watched (famous or short ones). Computed once per item.
    max_prompt_tokens
        Longest prompt; the oldest titles are dropped until the prompt fits (within the
        model's positions, less ``max_candidate_tokens``).
    max_candidate_tokens
        Tokens kept of a candidate's text.
    batch_size
        Candidates scored per forward pass.
    kv_cache
        Reuse the prompt's key-value cache for every candidate (False: score each full
        prompt + candidate sequence; same scores, slower).
    device, dtype
        ``"auto"`` (CUDA with bfloat16 when available, else the CPU in float32), or e.g.
        ``"cpu"``/``"cuda"`` and ``"float32"``/``"bfloat16"``/``"float16"``.
    lora
        Train a LoRA adapter on next-item titles before scoring (fusion "fine-tuning").
    lora_r, lora_alpha, lora_dropout, lora_target_modules
        peft ``LoraConfig`` settings (target modules: names, or ``"all-linear"``).
    lr, weight_decay
        AdamW settings.
    epochs
        Passes over the sampled training pairs (the most, with early stopping).
    train_batch_size
        Training examples per optimizer step.
    max_train_pairs
        Training (user, position) pairs sampled (seeded) from the training histories.
    early_stopping
        ``"ndcg"``: NDCG@10 of the held-out item among ``n_valid_negatives`` sampled
        candidates; ``"loglik"``: its title's mean token log-likelihood.
    patience
        Epochs without a better validation value before training stops.
    max_valid_users
        Validation users measured (a seeded sample).
    n_valid_negatives
        Negatives per validation user for ``early_stopping="ndcg"``.
    seed
        Seeds the pair sample, the adapter's initialisation, the batch order and dropout.
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
    """

    family = "generative-lm"
    fusion = _FollowsLoRA("zero-shot", "fine-tuning")  # type: ignore[assignment]
    uses_validation = _FollowsLoRA(False, True)  # type: ignore[assignment]
    scores_full_catalog = False
    uses_text = True
    calibrated_scores = False
    #: a candidate's score does not depend on its position in the list or on the others
    list_position_independent: ClassVar[bool] = True
    # no default grid: every validation trial re-runs the language model
    param_grid: ClassVar[dict[str, list[Any]]] = {}

    def __init__(
        self,
        model: str = "smollm2-135m-instruct",
        prompt: str | None = None,
        history_len: int | None = 10,
        history_sep: str = "; ",
        text_field: str | None = "title",
        chat_template: bool = False,
        strip_year: bool = True,
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
        lora_target_modules: Sequence[str] | str = ("q_proj", "v_proj"),
        lr: float = 2e-4,
        weight_decay: float = 0.0,
        epochs: int = 3,
        train_batch_size: int = 8,
        max_train_pairs: int = 2000,
        early_stopping: str = "ndcg",
        patience: int = 1,
        max_valid_users: int = 200,
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
        self.early_stopping = early_stopping
        self.patience = patience
        self.max_valid_users = max_valid_users
        self.n_valid_negatives = n_valid_negatives
        self.seed = seed
        self.num_threads = num_threads
        self.progress = progress

    # ------------------------------------------------------------------ fitting
    def _check_params(self) -> None:
        if self.length_norm not in ("sum", "mean"):
            raise ValueError(f"length_norm must be 'sum' or 'mean', got {self.length_norm!r}")
        if self.early_stopping not in ("ndcg", "loglik"):
            raise ValueError(
                f"early_stopping must be 'ndcg' or 'loglik', got {self.early_stopping!r}"
            )
        if self.history_len is not None and self.history_len < 1:
            raise ValueError(f"history_len must be at least 1 or None, got {self.history_len}")
        for name in ("max_prompt_tokens", "max_candidate_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        template = self._prompt_template()
        if "{history}" not in template:
            raise ValueError(f"prompt must contain '{{history}}', got {template!r}")

    def _fit(self, data: TrainingData, valid: pd.DataFrame | None) -> None:
        self._check_params()
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
        return texts

    def refit_params(self) -> dict[str, Any]:
        """The epochs to train without validation data: the best epoch (LoRA only)."""
        if self.lora and getattr(self, "best_epoch_", None) is not None:
            return {"epochs": int(self.best_epoch_)}
        return {}

    # ------------------------------------------------------------------ the language model
    def _release_lm(self) -> None:
        self._lm = None
        self._tokenizer = None
        self._candidate_memo: dict[int, list[int] | None] = {}
        self._prior_memo: dict[int, float] = {}

    def _ensure_lm(self) -> Any:
        """Load the decoder (and the saved adapter, if any) on first use."""
        if getattr(self, "_lm", None) is not None:
            return self._lm
        from recarena.lm.loading import load_causal_lm
        from recarena.lm.zoo import resolve_model

        resolved = resolve_model(self.model, getattr(self, "cache_dir_", None))
        loaded = load_causal_lm(resolved, device=self.device, dtype=self.dtype)
        self._lm = loaded.model
        self._tokenizer = loaded.tokenizer
        self._candidate_memo = {}
        self._prior_memo = {}
        self.device_ = loaded.device
        self.dtype_ = loaded.dtype
        self.lm_parameters_ = loaded.n_parameters
        self.load_seconds_ = loaded.load_seconds
        self.lm_from_converted_ = loaded.from_converted
        if self.chat_template and not getattr(self._tokenizer, "chat_template", None):
            raise ValueError(
                f"chat_template=True, but the tokenizer of {self.model!r} has no chat template"
            )
        adapter = getattr(self, "_adapter_dir", None)
        if adapter is not None:
            from peft import PeftModel

            self._lm = PeftModel.from_pretrained(self._lm, str(adapter)).eval()
            self.lora_parameters_ = _count_lora(self._lm)
        return self._lm

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
            if self.prior_correction:
                sums = sums - self.prior_correction * self._prior_logliks(items[ok])
            values = sums / counts if self.length_norm == "mean" else sums
            scores[ok] = np.maximum(values, UNSCORABLE_SCORE)
        return scores.astype(np.float32)

    def _prior_logliks(self, items: np.ndarray) -> np.ndarray:
        """Log-likelihood of each (scorable) item after an empty history, memoised."""
        memo = self._prior_memo
        missing = [int(i) for i in dict.fromkeys(items.tolist()) if int(i) not in memo]
        if missing:
            null_prompt = self._prompt_ids(np.empty(0, dtype=np.int64))
            conts = [self._candidate_ids(i) for i in missing]
            sums, _ = self._continuation_logprobs(null_prompt, conts)  # type: ignore[arg-type]
            memo.update(zip(missing, sums.tolist(), strict=True))
        return np.array([memo[int(i)] for i in items], dtype=np.float64)

    def _continuation_logprobs(
        self, prompt_ids: list[int], conts: list[list[int]], *, kv_cache: bool | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(sum of token log-probabilities, number of tokens) of each continuation."""
        import torch

        lm = self._ensure_lm()
        use_cache = self.kv_cache if kv_cache is None else kv_cache
        sums = np.zeros(len(conts), dtype=np.float64)
        counts = np.array([len(c) for c in conts], dtype=np.float64)
        order = np.argsort(-counts, kind="stable")  # longest first: little padding per batch
        with torch.inference_mode():
            device = _model_device(lm)
            prompt = torch.tensor([prompt_ids], dtype=torch.long, device=device)
            if use_cache:
                out = lm(input_ids=prompt, use_cache=True, logits_to_keep=1)
                prefix = _output_cache(out)
                first = out.logits[0, -1].float().log_softmax(-1)
            for begin in range(0, len(conts), self.batch_size):
                idx = order[begin : begin + self.batch_size]
                ids, mask = self._pad([conts[k] for k in idx], device)
                if use_cache:
                    token_lp = self._cached_batch(lm, prefix, first, prompt.shape[1], ids, mask)
                else:
                    token_lp = self._full_batch(lm, prompt, ids, mask)
                sums[idx] = (token_lp * mask).sum(1).double().cpu().numpy()
        return sums, counts

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
        """Token log-probabilities (B, L) of a batch of continuations after the cached prompt."""
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
            **{_cache_kwarg(lm): cache},
        ).logits
        return torch.cat([lp0, _token_logprobs(logits, ids[:, 1:])], dim=1)

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
        return _token_logprobs(logits[:, n_prompt - 1 :], ids)

    # ------------------------------------------------------------------ LoRA
    def _train_lora(self, data: TrainingData, valid: pd.DataFrame | None) -> None:
        """Train a LoRA adapter on next-item titles (`recarena.lm.training.train_loop`)."""
        import torch
        from peft import LoraConfig, get_peft_model

        from recarena.lm.training import LoopConfig, make_accelerator, seeded, train_loop

        base = self._ensure_lm()
        device = _model_device(base)
        targets = self.lora_target_modules
        targets = targets if isinstance(targets, str) else list(targets)
        monitor = _MONITOR[self.early_stopping]
        with seeded(self.seed):
            rng = np.random.default_rng(self.seed)
            config = LoraConfig(
                r=self.lora_r,
                lora_alpha=self.lora_alpha,
                lora_dropout=self.lora_dropout,
                target_modules=targets,
                task_type="CAUSAL_LM",
            )
            net = get_peft_model(base, config)
            self._lm = net.eval()
            self.lora_parameters_ = _count_lora(net)
            examples = self._training_examples(data.sequences, rng)
            checks = self._validation_set(data, valid, rng)
            self.best_epoch_ = 0
            start = time.perf_counter()
            untrained = None
            if checks is not None:
                # epoch 0, the zero-shot model (LoRA's B starts at zero): training must beat it
                with torch.inference_mode():
                    untrained = self._validate(checks)
                self.training_log_.append(
                    {"epoch": 0, "step": 0, "train_loss": None, **untrained, "seconds": 0.0}
                )
                initial = {
                    n: p.detach().clone() for n, p in net.named_parameters() if p.requires_grad
                }
            if examples and self.epochs > 0:
                loader = torch.utils.data.DataLoader(
                    examples,
                    batch_size=self.train_batch_size,
                    shuffle=True,
                    collate_fn=self._collate,
                    generator=torch.Generator().manual_seed(self.seed),
                )
                result = train_loop(
                    make_accelerator(device=device.type, mixed_precision="auto"),
                    net,
                    loader,
                    lambda model, batch: model(**batch).loss,
                    LoopConfig(
                        epochs=self.epochs,
                        lr=self.lr,
                        weight_decay=self.weight_decay,
                        patience=self.patience if checks is not None else None,
                        monitor=monitor,
                        mode="max",
                        keep_best="trainable",
                        progress=self.progress,
                        desc="generative ranker LoRA",
                    ),
                    evaluate=None if checks is None else (lambda _model: self._validate(checks)),
                )
                net = result.model
                self.best_epoch_ = result.best_epoch
                elapsed = time.perf_counter() - start
                self.training_log_.extend(
                    {**row, "seconds": row["seconds"] + (elapsed - result.seconds)}
                    for row in result.log
                )
                if untrained is not None and not (
                    result.best_value is not None and result.best_value > untrained[monitor]
                ):
                    logger.info("generative ranker: LoRA did not beat the zero-shot model")
                    net.load_state_dict(initial, strict=False)
                    self.best_epoch_ = 0
        self._lm = net.eval()
        self._candidate_memo = {}
        self._prior_memo = {}

    def _training_examples(
        self, sequences: list[np.ndarray], rng: np.random.Generator
    ) -> list[tuple[list[int], list[int]]]:
        """Seeded (prompt ids, target ids) pairs: a history prefix and the next item's title."""
        lengths = np.array([len(s) for s in sequences], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        total = int(offsets[-1])
        if total == 0:
            return []
        flat = rng.choice(total, size=min(total, self.max_train_pairs), replace=False)
        users = np.searchsorted(offsets, flat, side="right") - 1
        examples = []
        for user, position in zip(users, flat - offsets[users], strict=True):
            seq = sequences[int(user)]
            target = self._candidate_ids(int(seq[position]))
            if target is None:
                continue
            lo = 0 if self.history_len is None else max(0, position - self.history_len)
            examples.append((self._prompt_ids(seq[lo:position]), target))
        return examples

    def _collate(self, batch: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        import torch

        width = max(len(p) + len(t) for p, t in batch)
        pad = self._tokenizer.pad_token_id
        ids = torch.full((len(batch), width), 0 if pad is None else int(pad), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        for r, (p, t) in enumerate(batch):
            seq = torch.tensor(p + t, dtype=torch.long)
            ids[r, : len(seq)] = seq
            mask[r, : len(seq)] = 1
            labels[r, len(p) : len(seq)] = seq[len(p) :]  # loss on the title's tokens only
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def _validation_set(
        self, data: TrainingData, valid: pd.DataFrame | None, rng: np.random.Generator
    ) -> dict[str, Any] | None:
        """Validation users, their held-out item and (for NDCG) seeded negatives, drawn once."""
        if valid is None or len(valid) == 0:
            return None
        frame = valid.drop_duplicates("user", keep="first")
        users = frame["user"].to_numpy(np.int64)
        targets = frame["item"].to_numpy(np.int64)
        if len(users) > self.max_valid_users:
            pick = np.sort(rng.choice(len(users), self.max_valid_users, replace=False))
            users, targets = users[pick], targets[pick]
        checks: dict[str, Any] = {"users": users, "targets": targets}
        if self.early_stopping == "ndcg":
            seen = data.csr()
            n_neg = min(self.n_valid_negatives, data.n_items - 1)
            cands = np.empty((len(users), n_neg + 1), dtype=np.int64)
            for r, (u, t) in enumerate(zip(users, targets, strict=True)):
                allowed = np.ones(data.n_items, dtype=bool)
                allowed[seen.indices[seen.indptr[u] : seen.indptr[u + 1]]] = False
                allowed[t] = False
                pool = np.flatnonzero(allowed)
                negs = rng.choice(pool, size=min(n_neg, len(pool)), replace=False)
                negs = np.concatenate([negs, np.full(n_neg - len(negs), t)])
                cands[r] = np.concatenate([[t], negs])
            checks["candidates"] = cands
        return checks

    def _validate(self, checks: dict[str, Any]) -> dict[str, float]:
        """Validation numbers of the current adapter (early stopping reads `_MONITOR`)."""
        self._prior_memo = {}  # the adapter changed since the last measurement
        users, targets = checks["users"], checks["targets"]
        logliks, ndcgs = [], []
        for r, u in enumerate(users):
            prompt = self._user_prompt_ids(int(u))
            if self.early_stopping == "ndcg":
                scores = self._score_candidates(prompt, checks["candidates"][r])
                # pessimistic ties: a negative scored like the target ranks above it
                rank = int((scores[1:] >= scores[0]).sum())
                ndcgs.append(1.0 / np.log2(rank + 2) if rank < _EVAL_K else 0.0)
            target = self._candidate_ids(int(targets[r]))
            if target is not None:
                sums, counts = self._continuation_logprobs(prompt, [target])
                logliks.append(float(sums[0] / counts[0]))
        out = {_MONITOR["loglik"]: float(np.mean(logliks)) if logliks else float("nan")}
        if ndcgs:
            out[_MONITOR["ndcg"]] = float(np.mean(ndcgs))
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


# ---------------------------------------------------------------------- helpers
def expand_cache(prefix: Any, batch: int) -> Any:
    """A cache for ``batch`` continuations of one cached prompt, sharing its tensors.

    The returned cache is a new object whose layers hold the prompt's keys and values
    expanded along the batch dimension (a stride-0 view, no copy). The forward pass
    concatenates new keys onto them into fresh tensors (``DynamicLayer.update``), so
    ``prefix`` is never modified and can serve every batch. Layer kinds that might write in
    place get a deep copy repeated along the batch (``batch_repeat_interleave``) instead.
    """
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    out = copy.copy(prefix)
    layers = []
    for layer in prefix.layers:
        if type(layer) in (DynamicLayer, DynamicSlidingWindowLayer) and layer.is_initialized:
            twin = copy.copy(layer)
            twin.keys = layer.keys.expand(batch, *layer.keys.shape[1:])
            twin.values = layer.values.expand(batch, *layer.values.shape[1:])
        else:
            twin = copy.deepcopy(layer)
            if getattr(twin, "is_initialized", False):
                twin.batch_repeat_interleave(batch)
        layers.append(twin)
    out.layers = layers
    return out


def _token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) at each position: the target's logit minus the log-sum-exp, in float32."""
    logits = logits.float()
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - logits.logsumexp(-1)


def _output_cache(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _cache_kwarg(lm: Any) -> str:
    """transformers >= 5.x names the cache argument ``cache``; before, ``past_key_values``."""
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    params = inspect.signature(base.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _model_device(lm: Any) -> torch.device:
    return next(lm.parameters()).device


def _count_lora(model: Any) -> int:
    return int(sum(p.numel() for n, p in model.named_parameters() if "lora_" in n))


def _clone_state(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v.detach().clone() for k, v in state.items()}


def _clean(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return " ".join(str(value).split())
