from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recarena.data.dataset import Dataset
from recarena.errors import DataError


def _small():
    inter = pd.DataFrame(
        {
            "user": [20, 10, 10, 20],
            "item": ["b", "a", "b", "c"],
            "timestamp": [5, 9, 3, 1],
            "rating": [4.0, 3.0, 5.0, 1.0],
        }
    )
    items = pd.DataFrame(
        {
            "title": ["Alpha", "Beta", "Unused"],
            "year": pd.array([1990, None, 2000], dtype="Int64"),
            "genres": [["x", "y"], [], ["z"]],
        },
        index=["a", "b", "zzz"],
    )
    users = pd.DataFrame({"age": [30, 40]}, index=[10, 20])
    return Dataset.from_raw("small", inter, items, users, {"format": "test"})


def test_from_raw_dense_ids_and_order():
    ds = _small()
    assert list(ds.user_ids) == [10, 20] and list(ds.item_ids) == ["a", "b", "c"]
    inter = ds.interactions
    assert inter["user"].tolist() == [0, 0, 1, 1]
    assert inter["timestamp"].tolist() == [3, 9, 1, 5]  # each user's history in time order
    assert inter.dtypes.to_dict() == {
        "user": np.int32, "item": np.int32, "timestamp": np.int64, "rating": np.float32,
    }  # fmt: skip
    assert ds.items["title"].tolist()[:2] == ["Alpha", "Beta"]
    assert pd.isna(ds.items["title"].iloc[2])  # item "c" has no row: empty fields
    assert ds.users["age"].tolist() == [30, 40]


def test_from_raw_needs_user_and_item():
    with pytest.raises(DataError, match=r"need a 'user' column; found \['u', 'item'\]"):
        Dataset.from_raw("x", pd.DataFrame({"u": [1], "item": [2]}))


def test_save_load_round_trip(tmp_path):
    ds = _small()
    ds.save(tmp_path / "ds")
    back = Dataset.load(tmp_path / "ds")
    assert back.name == "small" and back.info == {"format": "test"}
    pd.testing.assert_frame_equal(back.interactions, ds.interactions)
    assert list(back.user_ids) == [10, 20] and all(type(u) is int for u in back.user_ids)
    assert list(back.item_ids) == ["a", "b", "c"]
    assert back.items["genres"].tolist() == [["x", "y"], [], []]
    assert back.items["year"].tolist()[:1] == [1990] and str(back.items["year"].dtype) == "Int64"
    assert back.users["age"].tolist() == [30, 40]
    assert back.item_index(["b"]).tolist() == [1] and back.user_index([20]).tolist() == [1]
    assert (back.csr() != ds.csr()).nnz == 0


def test_round_trip_list_field_whose_first_row_is_missing(tmp_path):
    inter = pd.DataFrame({"user": [1, 1], "item": [1, 2]})
    items = pd.DataFrame({"genres": [["x"]]}, index=[2])
    ds = Dataset.from_raw("t", inter, items)
    ds.save(tmp_path / "d")
    assert Dataset.load(tmp_path / "d").items["genres"].tolist() == [[], ["x"]]


def test_round_trip_without_user_table(tmp_path):
    ds = Dataset.from_raw("t", pd.DataFrame({"user": ["u"], "item": ["i"]}))
    ds.save(tmp_path / "d")
    back = Dataset.load(tmp_path / "d")
    assert back.users is None and list(back.user_ids) == ["u"] and not back.has_timestamps


def test_csr_weights():
    ds = Dataset.from_raw(
        "t",
        pd.DataFrame(
            {
                "user": [1, 1, 1],
                "item": [1, 1, 2],
                "timestamp": [1, 2, 3],
                "rating": [2.0, 4.0, 3.0],
            }
        ),
    )
    assert ds.csr("binary").toarray().tolist() == [[1.0, 1.0]]
    assert ds.csr("count").toarray().tolist() == [[2.0, 1.0]]
    assert ds.csr("rating").toarray().tolist() == [[4.0, 3.0]]  # the last rating of a pair


def test_stats_and_unknown_ids():
    ds = _small()
    stats = ds.stats()
    assert (stats["users"], stats["items"], stats["interactions"]) == (2, 3, 4)
    assert stats["text_coverage"]["title"] == pytest.approx(2 / 3)
    with pytest.raises(KeyError, match="unknown item id 'nope'"):
        ds.item_index(["nope"])
