"""Item text: one template over item fields, used by every text-aware model.

A template is a Python format string over the item table's columns, for example
``"Title: {title}. Genres: {genres}."``. List-valued fields (genres, categories, tags) are
joined with ", "; missing values become empty strings and the sentence around an empty field
is dropped, so an item without a description does not read "Description: .".
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recarena.errors import ConfigError

DEFAULT_TEMPLATE = "{title}"


def _missing(value: object) -> bool:
    """None, NaN and pandas' NA (nullable columns such as an Int64 ``year``)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def _field_text(value: object, max_chars: int | None) -> str:
    if _missing(value):
        return ""
    if isinstance(value, (list, tuple, np.ndarray)):
        text = ", ".join(str(v) for v in value if not _missing(v) and str(v) != "")
    else:
        text = str(value)
    text = " ".join(text.split())
    if max_chars is not None and len(text) > max_chars:
        cut = text[:max_chars]
        # cut at a word boundary where one is close, so words are not chopped in half
        space = cut.rfind(" ")
        text = (cut[:space] if space > max_chars * 0.6 else cut).rstrip(" ,.;:") + "…"
    return text


@dataclass(frozen=True)
class ItemTextTemplate:
    """Renders one string per item from the item table.

    Parameters
    ----------
    template
        A format string such as ``"Title: {title}. Genres: {genres}."``.
    max_chars
        Longest text kept for any single field (long descriptions are cut at a word).
    """

    template: str = DEFAULT_TEMPLATE
    max_chars: int | None = 400

    @property
    def fields(self) -> list[str]:
        try:
            parsed = list(string.Formatter().parse(self.template))
        except ValueError as exc:
            raise ConfigError(f"item text template {self.template!r} is not valid: {exc}") from exc
        return [name for _, name, _, _ in parsed if name]

    def validate(self, columns: Sequence[str]) -> None:
        missing = [f for f in self.fields if f not in columns]
        if missing:
            raise ConfigError(
                f"item text template {self.template!r} names field(s) {missing} that the item "
                f"table does not have; available fields: {sorted(columns)}"
            )

    def render(self, items: pd.DataFrame) -> list[str]:
        """Render the template for every row of ``items`` (in row order)."""
        self.validate(list(items.columns))
        fields = self.fields
        pieces = _split_sentences(self.template)
        columns = {f: items[f].tolist() for f in fields}
        texts: list[str] = []
        for row in range(len(items)):
            values = {f: _field_text(columns[f][row], self.max_chars) for f in fields}
            out = []
            for piece, piece_fields in pieces:
                if piece_fields and all(values[f] == "" for f in piece_fields):
                    continue
                out.append(piece.format(**values))
            texts.append(" ".join("".join(out).split()))
        return texts


_SENTENCE_END = re.compile(r"(?<=[.;!?\n])\s+")


def _split_sentences(template: str) -> list[tuple[str, list[str]]]:
    """Cut a template into sentence-like pieces, each with the fields it uses."""
    parts = _SENTENCE_END.split(template)
    out = []
    for i, part in enumerate(parts):
        text = part + (" " if i < len(parts) - 1 else "")
        names = [n for _, n, _, _ in string.Formatter().parse(part) if n]
        out.append((text, names))
    return out
