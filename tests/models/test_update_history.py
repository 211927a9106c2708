"""`Recommender.update_history` and the declarations behind it (``history_use``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recarena.models._history import History, KeepsHistory
from recarena.models.base import Recommender, TrainingData
from recarena.models.registry import get_model_class, model_entries


def _data(rows: list[tuple[int, int]], n_users: int = 3, n_items: int = 6) -> TrainingData:
    frame = pd.DataFrame(rows, columns=["user", "item"]).astype(np.int32)
    frame["timestamp"] = np.arange(len(frame), dtype=np.int64)
    frame = frame.sort_values(["user", "timestamp"], kind="stable").reset_index(drop=True)
    return TrainingData(frame, n_users=n_users, n_items=n_items)


class _Popular(Recommender):
    """Declares nothing: a model written without knowing about history_use."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def _fit(self, data, valid):
        self.counts_ = np.asarray(data.csr().sum(axis=0)).ravel().astype(np.float32)

    def _score(self, users, items):
        return self._gather(np.tile(self.counts_, (len(users), 1)), items)


class _OwnUpdate(_Popular):
    """Written against the earlier contract: its own update_history, nothing declared."""

    def update_history(self, data):
        self.updated_ = True
        return self


class _ClaimsRebuilt(_Popular):
    history_use = "rebuilt"  # declared, but no _update_history


class _LastItems(KeepsHistory, Recommender):
    """Scores each item by how often it is among the user's last ``n_last`` items (shifted)."""

    history_length_param = "n_last"
    history_shift = 1
    history_dtype = np.int32

    def __init__(self, n_last: int = 2) -> None:
        self.n_last = n_last

    def _fit(self, data, valid):
        self._keep_history(data)

    def _score(self, users, items):
        padded = self._kept_history().left_padded(users, pad=0)
        out = np.zeros((len(users), self.n_items_ + 1), dtype=np.float32)
        np.add.at(out, (np.repeat(np.arange(len(users)), padded.shape[1]), padded.ravel()), 1.0)
        return self._gather(out[:, 1:], items)


TRAIN = [(0, 0), (0, 1), (0, 2), (1, 3)]
GROWN = [*TRAIN, (0, 5), (2, 4)]


def test_a_model_that_declares_nothing_refuses_new_histories():
    model = _Popular().fit(_data(TRAIN))
    assert model.history_use == "undeclared" and not model.updates_history()
    with pytest.raises(NotImplementedError, match="does not declare how it reads"):
        model.update_history(_data(GROWN))


def test_an_own_update_history_of_the_earlier_contract_is_trusted():
    assert _OwnUpdate.updates_history()
    model = _OwnUpdate().fit(_data(TRAIN))
    assert model.update_history(_data(GROWN)) is model and model.updated_


def test_a_declared_refresh_without_its_hook_is_an_error():
    model = _ClaimsRebuilt().fit(_data(TRAIN))
    with pytest.raises(NotImplementedError, match="does not implement _update_history"):
        model.update_history(_data(GROWN))


def test_fit_and_refresh_keep_the_history_through_one_declaration():
    model = _LastItems(n_last=2).fit(_data(TRAIN))
    expected = History.from_sequences(_data(TRAIN).sequences, 2, shift=1, dtype=np.int32)
    np.testing.assert_array_equal(model.history_items_, expected.items)
    assert model.history_items_.dtype == np.int32
    grown = _data(GROWN)
    model.update_history(grown)
    refit = _LastItems(n_last=2).fit(grown)
    np.testing.assert_array_equal(model.history_items_, refit.history_items_)
    np.testing.assert_array_equal(model.history_indptr_, refit.history_indptr_)
    np.testing.assert_array_equal(model.score(np.arange(3)), refit.score(np.arange(3)))
    # user 0's last two items are now 2 and 5; user 2 has a history at all
    np.testing.assert_array_equal(model.score(np.array([0, 2])).nonzero()[1], [2, 5, 4])
    assert (model.seen_ != grown.csr()).nnz == 0


def test_other_users_or_items_are_refused():
    model = _LastItems().fit(_data(TRAIN))
    with pytest.raises(ValueError, match="4 users and 6 items"):
        model.update_history(_data(TRAIN, n_users=4))


def test_every_registered_model_declares_how_it_reads_histories():
    """The runner refreshes what it can and names the rest: nothing left undeclared."""
    pytest.importorskip("torch")
    declared = {}
    for entry in model_entries():
        cls = get_model_class(entry.name)
        declared[entry.name] = cls.history_use
        assert cls.history_use != "undeclared", entry.name
    assert declared["bpr"] == "trained"
    assert declared["als"] == "fold-in"
    assert {declared[n] for n in ("ease", "itemknn")} == {"interactions"}
    assert {declared[n] for n in ("random", "most_popular")} == {"none"}
    rebuilt = ("sasrec", "tfidf", "bm25", "lm-frozen", "lm-text-sasrec", "lm-cross-encoder")
    rebuilt += ("lm-generative", "lm-two-tower")
    assert {declared[n] for n in rebuilt} == {"rebuilt"}
