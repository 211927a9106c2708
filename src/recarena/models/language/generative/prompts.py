"""The generative ranker's text: item titles, the prompt of a user's history, and the token
ids of prompts and candidates (`PromptIds`, mixed into `GenerativeRanker`, whose parameters
and loaded tokenizer it reads).

Item text
    Candidates and history items are named by ``text_field`` of ``TrainingData.items`` (the
    ``title`` column by default) where the item table has that column, else by the run's
    rendered item text (``TrainingData.item_text``). A bare title is what a "next movie is:"
    prompt expects, and it keeps the continuation short: the run's template ("Title: X.
    Genres: Y.") would make the score mostly about how likely the genre list and the
    formatting are. ``text_field=None`` always uses the run's item text. A trailing release
    year is dropped (``strip_year``), and ``article_first`` writes "Usual Suspects, The" as
    "The Usual Suspects".

Prompts
    ``{history}`` in the prompt template becomes the user's last ``history_len`` titles,
    oldest first, joined by ``history_sep`` (`EMPTY_HISTORY` for a user without history);
    with ``chat_template`` the prompt is the user turn of the tokenizer's chat template. A
    prompt longer than ``max_prompt_tokens`` (or than the decoder's positions, less
    ``max_candidate_tokens``) keeps the most recent titles that fit. A candidate is its
    title's tokens after a space (none after a prompt ending in whitespace or a chat
    template), at most ``max_candidate_tokens``, plus the end-of-sequence token with
    ``score_end``.

User attributes
    ``{user:COLUMN}`` in the template is the user's value in ``COLUMN`` of the data's user
    table (`user_attributes` keeps them as text at fit, ``user_attributes_``), written with
    the ranker's ``user_values`` words where it has one. A prompt without a user (the
    empty-history prompt of the prior correction) leaves the placeholder empty. Replacing a
    column of ``user_attributes_`` is how `recarena.metrics.counterfactual` swaps an
    attribute while everything else stays the same.
"""

from __future__ import annotations

import re

import numpy as np

from recarena.models._history import History
from recarena.models.base import TrainingData
from recarena.models.language.user_text import (
    USER_FIELD,
    clean_text,
    fill_user_fields,
    user_attributes,
)

__all__ = ["USER_FIELD", "PromptIds", "clean_text", "item_texts", "user_attributes"]

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


def item_texts(
    data: TrainingData, text_field: str | None, *, strip_year: bool, article_first: bool
) -> list[str]:
    """The text that names each item of ``data`` (empty where an item has none)."""
    field = text_field
    if field is not None and field in data.items.columns and len(data.items) == data.n_items:
        raw = data.items[field].tolist()
    else:
        assert data.item_text is not None  # fit() checks it (uses_text)
        raw = list(data.item_text)
    if len(raw) != data.n_items:
        raise ValueError(f"{len(raw)} item texts for {data.n_items} items")
    texts = [clean_text(value) for value in raw]
    if strip_year:
        texts = [_TRAILING_YEAR.sub("", t) or t for t in texts]
    if article_first:
        texts = [_TRAILING_ARTICLE.sub(r"\g<article> \g<main>\g<rest>", t) for t in texts]
    return texts


class PromptIds:
    """Prompts and candidates as token ids, for `GenerativeRanker`.

    Reads the ranker's prompt parameters, its ``item_texts_`` and histories, and the
    tokenizer and decoder it has loaded (``_tokenizer``, ``_lm``); candidates' ids are kept
    in ``_candidate_memo`` (emptied whenever another decoder is attached).
    """

    def _item_texts(self, data: TrainingData) -> list[str]:
        return item_texts(
            data, self.text_field, strip_year=self.strip_year, article_first=self.article_first
        )

    def _prompt_template(self) -> str:
        if self.prompt is not None:
            return self.prompt
        return DEFAULT_CHAT_PROMPT if self.chat_template else DEFAULT_PROMPT

    def _max_positions(self) -> int | None:
        config = self._lm.config
        value = getattr(config, "max_position_embeddings", None)
        return int(value) if value else None

    def _render(self, titles: list[str], user: int | None = None) -> list[int]:
        history = self.history_sep.join(titles) if titles else EMPTY_HISTORY
        text = self._prompt_template().replace("{history}", history)
        text = fill_user_fields(text, getattr(self, "user_attributes_", {}), self.user_values, user)
        tok = self._tokenizer
        if self.chat_template:
            text = tok.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
            )
            return list(tok(text, add_special_tokens=False)["input_ids"])
        return list(tok(text)["input_ids"])

    def _prompt_ids(self, history: np.ndarray, user: int | None = None) -> list[int]:
        """Token ids of the prompt for a history (item ids, oldest first) of ``user``
        (None: no user, for the user attributes of the template)."""
        titles = [self.item_texts_[i] for i in history.tolist() if self.item_texts_[i]]
        if self.history_len is not None:
            titles = titles[-self.history_len :]
        limit = self.max_prompt_tokens
        positions = self._max_positions()
        if positions is not None:
            limit = max(1, min(limit, positions - self.max_candidate_tokens - 1))
        ids = self._render(titles, user)
        if len(ids) > limit and titles:
            # keep the most recent titles that fit (the length grows with the titles kept)
            lo, hi = 0, len(titles) - 1  # titles[-k:] fits for k = lo; try up to hi
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if len(self._render(titles[-mid:], user)) <= limit:
                    lo = mid
                else:
                    hi = mid - 1
            ids = self._render(titles[-lo:] if lo else [], user)
        return ids[-limit:]

    def _user_prompt_ids(self, user: int) -> list[int]:
        history = History(self.history_items_, self.history_indptr_).row(user)
        return self._prompt_ids(history, user)

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
