"""A loaded decoder shared by the rankers that use the same weights, and the memo of what it
scored (`Session`); `SESSIONS` finds a live one by the identity of its weights; `UsesSession`
loads, shares and attaches the decoder of a `GenerativeRanker`.

Shared decoder
    Rankers of one process that score with the same weights (the same decoder, device and
    dtype, zero-shot; or the same trained adapter) share one loaded model and one memo of
    (prompt, candidate) log-likelihoods, held through a weak reference: it lives as long as
    one of those rankers does, so the runner's validation grid and its refit load the
    decoder once and score each validation user once. A LoRA ranker whose training
    parameters and data equal those of a live ranker reuses that ranker's trained adapter
    (its training log included) instead of training again. The memo is keyed by token ids
    (and ``batch_size``), so it can never serve another prompt's numbers.
"""

from __future__ import annotations

import weakref
from typing import Any

from recarena.models.language.generative.network import count_lora


class Session:
    """A loaded decoder (with its adapter, if any) and the memo of what it scored.

    ``memo`` maps (batch size, prompt token ids) to {candidate token ids: sum of their
    log-probabilities}; None while the weights still change (during LoRA training).
    ``training`` holds a trained adapter's results, so a ranker that would train the same
    adapter on the same data can take them instead.
    """

    def __init__(self, lm: Any, tokenizer: Any, loaded: Any, *, memo: bool) -> None:
        self.lm = lm
        self.tokenizer = tokenizer
        self.device = loaded.device
        self.dtype = loaded.dtype
        self.n_parameters = loaded.n_parameters
        self.load_seconds = loaded.load_seconds
        self.from_converted = loaded.from_converted
        self.memo: dict[tuple[Any, ...], dict[tuple[int, ...], float]] | None = {} if memo else None
        self.training: dict[str, Any] | None = None


#: live sessions by the identity of their weights; an entry lasts while a ranker holds it
SESSIONS: weakref.WeakValueDictionary[str, Session] = weakref.WeakValueDictionary()


class UsesSession:
    """The decoder of `GenerativeRanker`: loaded on first use, shared through `SESSIONS`.

    Reads the ranker's ``model``, ``device``, ``dtype``, ``chat_template`` and
    ``cache_dir_``, and the saved adapter's folder (``_adapter_dir``); sets ``_session``,
    ``_lm``, ``_tokenizer``, an empty ``_candidate_memo`` and the decoder's attributes
    (``device_``, ``dtype_``, ``lm_parameters_``, ``load_seconds_``, ``lm_from_converted_``).
    """

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
