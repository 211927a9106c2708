"""The default experiment files of the domains (configs/) stay valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from recarena.config import load_config
from recarena.data.catalog import DomainEntry, get_entry
from recarena.data.text import ItemTextTemplate
from recarena.models.registry import model_entries

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize(
    ("file_name", "split"),
    [
        ("amazon-reviews.toml", "leave_one_out"),
        ("mind-small.toml", "predefined"),
        ("lastfm-hetrec.toml", "random"),
    ],
)
def test_domain_config_is_valid(file_name, split):
    config = load_config(CONFIGS / file_name)
    assert config.split.method == split
    entry = get_entry(config.data.name)
    assert isinstance(entry, DomainEntry)
    assert config.data.text_template == entry.default_text_template
    assert ItemTextTemplate(config.data.text_template).fields
    known = {e.name for e in model_entries()}
    assert {m.name for m in config.models} <= known


def test_mind_config_evaluates_per_impression():
    config = load_config(CONFIGS / "mind-small.toml")
    assert [p.kind for p in config.evaluation.protocols] == ["impressions"]
    assert "ease" not in {m.name for m in config.models}


def test_lastfm_config_explains_the_random_split():
    text = (CONFIGS / "lastfm-hetrec.toml").read_text()
    assert "no listening times" in text and 'method = "random"' in text


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_every_config_file_is_valid_and_names_known_models(path):
    config = load_config(path)
    known = {e.name for e in model_entries()}
    assert {m.name for m in config.models} <= known
    get_entry(config.data.name)  # a catalog data set: `recarena data get` can fetch it
    labels = [p.label for p in config.evaluation.protocols]
    for model in config.models:
        assert set(model.protocols or []) <= set(labels)
