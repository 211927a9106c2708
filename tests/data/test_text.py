from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recarena.data.text import ItemTextTemplate
from recarena.errors import ConfigError


def test_lists_are_joined_and_sentences_kept():
    items = pd.DataFrame({"title": ["Heat (1995)"], "genres": [["Action", "Crime"]]})
    assert ItemTextTemplate("Title: {title}. Genres: {genres}.").render(items) == [
        "Title: Heat (1995). Genres: Action, Crime."
    ]


def test_missing_fields_drop_their_sentence():
    items = pd.DataFrame(
        {
            "title": ["A", "B", None],
            "genres": [[], ["Drama"], np.nan],
            "year": pd.array([None, 1999, None], dtype="Int64"),
        }
    )
    template = ItemTextTemplate("Title: {title}. Genres: {genres}. Year: {year}.")
    assert template.render(items) == ["Title: A.", "Title: B. Genres: Drama. Year: 1999.", ""]


def test_empty_list_entries_and_nan_in_lists_are_skipped():
    items = pd.DataFrame({"tags": [["x", "", None, float("nan"), "y"]]})
    assert ItemTextTemplate("Tags: {tags}.").render(items) == ["Tags: x, y."]


def test_long_fields_are_cut_at_a_word():
    text = "word " * 50
    items = pd.DataFrame({"description": [text.strip()]})
    rendered = ItemTextTemplate("{description}", max_chars=23).render(items)[0]
    assert rendered == "word word word word…"
    assert len(rendered) <= 24


def test_whitespace_is_collapsed():
    items = pd.DataFrame({"title": ["  Many\n\tspaces  here "]})
    assert ItemTextTemplate("{title}").render(items) == ["Many spaces here"]


def test_unknown_field_is_a_config_error_listing_fields():
    items = pd.DataFrame({"title": ["A"]})
    with pytest.raises(ConfigError, match=r"\['plot'\].*available fields: \['title'\]"):
        ItemTextTemplate("{title}: {plot}").render(items)


def test_invalid_template():
    with pytest.raises(ConfigError, match="not valid"):
        _ = ItemTextTemplate("{title").fields
