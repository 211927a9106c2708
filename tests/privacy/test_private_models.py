"""Which models have a private variant, and what a user who asks another one for privacy
is told: a config never runs a model without the privacy it asked for."""

from __future__ import annotations

import pytest

from recarena.errors import ConfigError
from recarena.models.registry import create_model, get_model_class, private_models


def test_the_private_models_are_the_ones_that_take_dp_epsilon():
    names = private_models()
    assert {"ease", "sasrec"} <= set(names)
    for name in names:
        assert "dp_epsilon" in get_model_class(name)._param_names()
    assert "itemknn" not in names and "most_popular" not in names


@pytest.mark.parametrize("name", ["itemknn", "als", "most_popular"])
def test_a_model_without_a_private_variant_says_so_and_names_those_with_one(name):
    with pytest.raises(ConfigError) as caught:
        create_model(name, {"dp_epsilon": 8.0, "dp_delta": 1e-5})
    message = str(caught.value)
    assert f"model {name!r} has no differentially private variant" in message
    assert "dp_delta, dp_epsilon given" in message
    assert "ease" in message and "sasrec" in message


def test_other_unknown_parameters_keep_the_list_of_parameters():
    with pytest.raises(ConfigError, match=r"its parameters are \['feature_weighting'"):
        create_model("itemknn", {"neighbours": 10})
