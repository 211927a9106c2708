from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recarena.data.dataset import Dataset
from recarena.errors import DataError
from recarena.splits import (
    Split,
    cold_item_split,
    leave_one_out_split,
    random_split,
    temporal_split,
)
from tests.conftest import make_planted_dataset


def _toy() -> Dataset:
    # user a: 4 interactions, user b: 3, user c: 2 (too few for leave-one-out)
    rows = [
        ("a", "x", 10),
        ("a", "y", 30),
        ("a", "z", 20),
        ("a", "w", 40),
        ("b", "x", 5),
        ("b", "w", 50),
        ("b", "y", 15),
        ("c", "z", 1),
        ("c", "y", 2),
    ]
    frame = pd.DataFrame(rows, columns=["user", "item", "timestamp"])
    return Dataset.from_raw("toy", frame)


def _raw(ds: Dataset, frame: pd.DataFrame) -> set[tuple[str, str]]:
    return {
        (ds.user_ids[u], ds.item_ids[i]) for u, i in zip(frame["user"], frame["item"], strict=True)
    }


def test_leave_one_out_takes_latest_by_time():
    ds = _toy()
    split = leave_one_out_split(ds)
    assert _raw(ds, split.test) == {("a", "w"), ("b", "w")}
    assert _raw(ds, split.valid) == {("a", "y"), ("b", "y")}
    assert _raw(ds, split.train) == {("a", "x"), ("a", "z"), ("b", "x"), ("c", "z"), ("c", "y")}
    assert any("fewer than 3" in n for n in split.notes)
    # fit data for the test stage is train + valid
    assert len(split.fit_interactions("test")) == len(split.train) + len(split.valid)


def test_temporal_split_never_trains_on_the_future():
    ds = make_planted_dataset()
    split = temporal_split(ds, valid_ratio=0.1, test_ratio=0.2)
    assert split.train["timestamp"].max() <= split.valid["timestamp"].min()
    assert split.valid["timestamp"].max() <= split.test["timestamp"].min()
    assert len(split.test) == round(ds.n_interactions * 0.2)


def test_temporal_split_needs_timestamps():
    frame = pd.DataFrame({"user": [1, 1, 2], "item": [1, 2, 3]})
    with pytest.raises(DataError, match="no timestamps"):
        temporal_split(Dataset.from_raw("t", frame))


def test_random_split_is_seeded_and_keeps_training_for_everyone():
    ds = make_planted_dataset()
    a = random_split(ds, seed=1)
    b = random_split(ds, seed=1)
    c = random_split(ds, seed=2)
    pd.testing.assert_frame_equal(a.test, b.test)
    assert not a.test.equals(c.test)
    assert set(a.train["user"]) == set(range(ds.n_users))
    total = len(a.train) + len(a.valid) + len(a.test)
    assert total == ds.n_interactions


def test_cold_item_split_holds_items_out_of_training():
    ds = make_planted_dataset()
    split = cold_item_split(ds, test_ratio=0.2, valid_ratio=0.1, seed=0)
    assert not set(split.train["item"]) & set(split.test["item"])
    assert not set(split.train["item"]) & set(split.valid["item"])
    assert set(split.test["item"]) <= set(split.cold_items.tolist())
    np.testing.assert_array_equal(split.item_pool["test"], split.cold_items)


def test_candidates_are_frozen_shuffled_and_exclude_known_items(tmp_path):
    ds = make_planted_dataset()
    split = leave_one_out_split(ds)
    split.draw_candidates(19, seed=5)
    cand = split.candidates["test"]
    truth = split.test.set_index("user")["item"]
    known = ds.csr()
    first_positions = []
    for row, user in enumerate(cand.users):
        items = cand.items[row]
        assert len(set(items.tolist())) == 20
        target = truth[user]
        assert target in items
        first_positions.append(int(np.flatnonzero(items == target)[0]))
        negatives = [i for i in items if i != target]
        assert not set(negatives) & set(known.indices[known.indptr[user] : known.indptr[user + 1]])
    # the positive is not always first: positions spread over the list
    assert len(set(first_positions)) > 5
    split.save(tmp_path / "s")
    again = Split.load(tmp_path / "s")
    np.testing.assert_array_equal(again.candidates["test"].items, cand.items)
    # drawing again with the same seed gives the same candidates
    twin = leave_one_out_split(ds)
    twin.draw_candidates(19, seed=5)
    np.testing.assert_array_equal(twin.candidates["test"].items, cand.items)


def test_split_save_load_roundtrip(tmp_path):
    ds = make_planted_dataset()
    split = cold_item_split(ds, seed=3)
    split.draw_candidates(9, seed=1, name="sampled-9")
    split.save(tmp_path / "s")
    again = Split.load(tmp_path / "s")
    pd.testing.assert_frame_equal(again.train, split.train)
    np.testing.assert_array_equal(again.cold_items, split.cold_items)
    np.testing.assert_array_equal(again.item_pool["test"], split.item_pool["test"])
    assert set(again.candidates) == {"sampled-9:valid", "sampled-9:test"}
    assert again.method == "cold_item" and again.params == split.params
