"""A loaded decoder shared by the rankers that use the same weights, and the memo of what it
scored (`Session`); `SESSIONS` finds a live one by the identity of its weights."""

from __future__ import annotations

import weakref
from typing import Any


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
