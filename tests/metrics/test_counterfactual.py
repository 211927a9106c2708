"""The counterfactual attribute probe on a model whose answer to each attribute is known."""

from __future__ import annotations

import numpy as np
import pytest

from recarena.metrics.counterfactual import counterfactual_probe


class _ReadsGender:
    """Scores candidate ``i`` as ``i`` for "M" and "F" users and ``-i`` for "X" users."""

    def __init__(self, genders: list[str]) -> None:
        self.user_attributes_ = {"gender": list(genders)}

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        sign = np.array([-1.0 if self.user_attributes_["gender"][u] == "X" else 1.0 for u in users])
        return sign[:, None] * items.astype(np.float64)


def test_each_direction_of_the_swap_is_measured_on_its_own_users():
    genders = ["M", "M", "F", "F", "F", "M"]
    model = _ReadsGender(genders)
    users = np.arange(6)
    candidates = np.tile(np.arange(10), (6, 1))
    positive = np.full(6, 9)  # the held-out item is candidate 9: first for M and F
    probe = counterfactual_probe(
        model,
        users,
        candidates,
        "gender",
        {"M": "X", "F": "M"},  # M users' lists reverse; F users' lists do not move
        k=3,
        positive=positive,
        item_groups={"high": np.arange(10) >= 7},
        n_boot=200,
    )
    m, f = probe["by_value"]["M"], probe["by_value"]["F"]
    assert (m["to"], f["to"]) == ("X", "M")
    assert m["n_users"] == 3 and f["n_users"] == 3
    assert m["overlap_at_k"]["mean"] == 0.0 and f["overlap_at_k"]["mean"] == 1.0
    assert m["changed_users"]["mean"] == 1.0 and f["changed_users"]["mean"] == 0.0
    assert m["ndcg@3_change"]["mean"] == pytest.approx(-1.0)  # from rank 1 to rank 10
    assert f["ndcg@3_change"]["mean"] == 0.0
    assert m["exposure"][0]["share_before"] == 1.0 and m["exposure"][0]["share_after"] == 0.0
    assert f["exposure"][0]["change_mean"] == 0.0
    # pooled, the two directions average out to half a move
    assert probe["overlap_at_k"]["mean"] == pytest.approx(0.5)
    assert probe["ndcg@3_change"]["mean"] == pytest.approx(-0.5)
    assert probe["exposure"][0]["change_mean"] == pytest.approx(-0.5)
    # the model reads its attributes back unchanged
    assert model.user_attributes_["gender"] == genders


def test_users_whose_value_the_swap_does_not_change_are_left_out():
    model = _ReadsGender(["M", "F", "M"])
    probe = counterfactual_probe(
        model, np.arange(3), np.tile(np.arange(5), (3, 1)), "gender", {"M": "X"}, k=2, n_boot=50
    )
    assert probe["n_users"] == 2 and set(probe["by_value"]) == {"M"}


def test_a_model_that_does_not_read_the_attribute_is_invariant():
    class Plain:
        def score(self, users, items):  # pragma: no cover - never called
            raise AssertionError

    out = counterfactual_probe(Plain(), np.arange(2), np.zeros((2, 3), int), "gender", {"M": "F"})
    assert out["invariant"] and "does not read" in out["reason"]
