"""The core additions for the domains: keep_items, the part column, impressions, the
predefined split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recarena.config import parse_config
from recarena.data.dataset import Dataset
from recarena.data.preprocess import deduplicate, k_core
from recarena.errors import DataError
from recarena.runner import build_split
from recarena.splits import SPLITTERS, predefined_split


def _items() -> pd.DataFrame:
    return pd.DataFrame(
        {"title": ["Alpha", "Beta", "Gamma", "Never clicked"]}, index=["a", "b", "c", "z"]
    )


def _news(**kwargs) -> Dataset:
    inter = pd.DataFrame(
        {
            "user": ["u1", "u1", "u2", "u2", "u3"],
            "item": ["a", "b", "a", "c", "c"],
            "timestamp": [1, 2, 3, 4, 5],
            "part": [0, 2, 0, 1, 2],
        }
    )
    impressions = pd.DataFrame(
        {
            "impression": [11, 11, 10, 10, 12, 12],
            "user": ["u1", "u1", "u2", "u2", "u9", "u9"],  # u9 was shown items, clicked none
            "item": ["b", "z", "c", "y", "a", "b"],  # y: shown, in no table
            "label": [1, 0, 1, 0, 0, 0],
            "timestamp": [2, 2, 4, 4, 6, 6],
            "part": [2, 2, 1, 1, 2, 2],
        }
    )
    return Dataset.from_raw(
        "news", inter, _items(), None, {"format": "t"}, impressions=impressions, **kwargs
    )


def test_keep_items_keeps_every_item_of_the_table():
    inter = pd.DataFrame({"user": [1, 2], "item": ["b", "a"]})
    default = Dataset.from_raw("x", inter, _items())
    assert list(default.item_ids) == ["a", "b"] and "keep_items" not in default.info
    kept = Dataset.from_raw("x", inter, _items(), keep_items=True)
    assert list(kept.item_ids) == ["a", "b", "c", "z"] and kept.info["keep_items"] is True
    assert kept.items["title"].tolist() == ["Alpha", "Beta", "Gamma", "Never clicked"]
    assert kept.stats()["items_without_interactions"] == 2
    # a subset keeps them too (a filter removes interactions, not the catalog)
    smaller = kept.subset(np.array([True, False]))
    assert list(smaller.item_ids) == ["a", "b", "c", "z"] and smaller.n_users == 1


def test_keep_items_matches_ids_written_as_text():
    inter = pd.DataFrame({"user": [1], "item": [7]})
    items = pd.DataFrame({"name": ["seven", "eight"]}, index=["7", "8"])
    ds = Dataset.from_raw("x", inter, items, keep_items=True)
    assert list(ds.item_ids) == [7, 8] and ds.items["name"].tolist() == ["seven", "eight"]


def test_part_column_is_int8_and_checked():
    ds = _news()
    assert ds.interactions["part"].dtype == np.int8
    assert ds.stats()["interactions_by_part"] == {"train": 2, "valid": 1, "test": 2}
    bad = pd.DataFrame({"user": [1, 1], "item": [1, 2], "part": [0, 3]})
    with pytest.raises(DataError, match="interaction row 2: part must be 0 .* found 3") as err:
        Dataset.from_raw("x", bad)
    assert err.value.column == "part"


def test_impressions_join_the_id_space_with_dense_ids():
    ds = _news(keep_items=True)
    assert list(ds.user_ids) == ["u1", "u2", "u3", "u9"]
    assert list(ds.item_ids) == ["a", "b", "c", "y", "z"]
    imp = ds.impressions
    assert imp.dtypes.to_dict() == {
        "impression": np.int64, "user": np.int32, "item": np.int32, "label": np.int8,
        "timestamp": np.int64, "part": np.int8,
    }  # fmt: skip
    assert imp["impression"].tolist() == [10, 10, 11, 11, 12, 12]  # sorted, shown order kept
    assert ds.item_ids[imp["item"]].tolist() == ["c", "y", "b", "z", "a", "b"]
    assert ds.user_ids[imp["user"]].tolist() == ["u2", "u2", "u1", "u1", "u9", "u9"]
    stats = ds.stats()
    assert stats["impressions"] == 3 and stats["impression_rows"] == 6
    assert stats["impression_clicks"] == 2
    # test impressions show a, b, z; training (parts 0, 1) has a and c
    assert stats["test_impression_items"] == 3
    assert stats["test_impression_items_unseen_in_training"] == 2


def test_impressions_are_checked():
    inter = pd.DataFrame({"user": [1], "item": [1]})
    with pytest.raises(DataError, match=r"impressions need columns \['label'\]"):
        Dataset.from_raw(
            "x", inter, impressions=pd.DataFrame({"impression": [1], "user": [1], "item": [1]})
        )
    bad = pd.DataFrame({"impression": [1, 1], "user": [1, 1], "item": [1, 2], "label": [1, 2]})
    with pytest.raises(DataError, match="impression row 2: label must be 1"):
        Dataset.from_raw("x", inter, impressions=bad)


def test_subset_carries_part_and_impressions():
    ds = _news(keep_items=True)
    # drop u2's interactions: u2 leaves, with its impressions; u9 (no interactions) stays
    mask = ds.user_ids[ds.interactions["user"]] != "u2"
    out = ds.subset(mask, {"step": "drop u2"})
    assert list(out.user_ids) == ["u1", "u3", "u9"]
    assert out.interactions["part"].tolist() == [0, 2, 2]
    assert out.impressions["impression"].tolist() == [11, 11, 12, 12]
    assert out.user_ids[out.impressions["user"]].tolist() == ["u1", "u1", "u9", "u9"]
    assert list(out.item_ids) == ["a", "b", "c", "y", "z"]  # keep_items
    assert out.info["preprocessing"][-1] == {"step": "drop u2"}
    # without keep_items an item leaves with its last interaction (and its impressions)
    plain = _news()
    assert list(plain.item_ids) == ["a", "b", "c", "y", "z"]  # z, y: shown, so in the space
    mask = plain.item_ids[plain.interactions["item"]] != "b"
    out = plain.subset(mask)
    assert "b" not in set(out.item_ids)
    assert "b" not in set(out.item_ids[out.impressions["item"]])
    assert len(out.impressions) == 4


def test_preprocessing_steps_keep_the_additions():
    ds = deduplicate(_news(keep_items=True))
    ds = k_core(ds, 1, 1)
    assert ds.impressions is not None and len(ds.impressions) == 6
    assert "part" in ds.interactions and ds.info["keep_items"] is True


def test_save_and_load_keep_impressions_and_part(tmp_path):
    ds = _news(keep_items=True)
    ds.save(tmp_path / "d")
    back = Dataset.load(tmp_path / "d")
    pd.testing.assert_frame_equal(back.interactions, ds.interactions)
    pd.testing.assert_frame_equal(back.impressions, ds.impressions)
    plain = Dataset.from_raw("p", pd.DataFrame({"user": [1], "item": [2]}))
    plain.save(tmp_path / "p")
    assert Dataset.load(tmp_path / "p").impressions is None
    assert not (tmp_path / "p" / "impressions.parquet").exists()


def test_predefined_split_uses_part_and_carries_notes():
    ds = _news()
    ds.info["split_notes"] = ["test = the dev impressions"]
    ds.info["split_source"] = "release folders"
    split = SPLITTERS["predefined"](ds)
    assert split.method == "predefined" and split.params == {"source": "release folders"}
    assert (len(split.train), len(split.valid), len(split.test)) == (2, 1, 2)
    assert split.notes[0] == "test = the dev impressions"
    assert "1 test users have no training interactions (cold users)" in split.notes
    assert ds.user_ids[split.test["user"]].tolist() == ["u1", "u3"]


def test_predefined_split_without_part_is_a_clear_error():
    ds = Dataset.from_raw("ml", pd.DataFrame({"user": [1], "item": [2]}), info={"format": "csv"})
    with pytest.raises(DataError, match=r"'ml' \(format 'csv'\) comes without a predefined"):
        predefined_split(ds)
    no_test = Dataset.from_raw("x", pd.DataFrame({"user": [1, 1], "item": [1, 2], "part": [0, 1]}))
    with pytest.raises(DataError, match="no test interactions"):
        predefined_split(no_test)


def test_the_runner_builds_a_predefined_split():
    config = parse_config(
        {"data": {"name": "x"}, "split": {"method": "predefined"}, "models": [{"name": "random"}]}
    )
    split = build_split(config, _news())
    assert split.method == "predefined" and len(split.test) == 2


def test_subset_that_removes_no_id_equals_a_rebuild():
    ds = _news(keep_items=True)
    inter = pd.concat([ds.interactions, ds.interactions.iloc[:2]]).sort_values(
        ["user", "timestamp"], kind="stable"
    )
    doubled = Dataset(
        "d", inter.reset_index(drop=True), ds.user_ids, ds.item_ids, ds.items, None,
        dict(ds.info), ds.impressions,
    )  # fmt: skip
    fast = deduplicate(doubled)  # removes the copies only: every id stays
    raw = fast.interactions.copy()
    raw["user"] = fast.user_ids[raw["user"]]
    raw["item"] = fast.item_ids[raw["item"]]
    imp = ds.impressions.copy()
    imp["user"] = ds.user_ids[imp["user"]]
    imp["item"] = ds.item_ids[imp["item"]]
    items = ds.items.set_axis(pd.Index(ds.item_ids))
    rebuilt = Dataset.from_raw("d", raw, items, None, {}, keep_items=True, impressions=imp)
    pd.testing.assert_frame_equal(fast.interactions, rebuilt.interactions)
    pd.testing.assert_frame_equal(fast.impressions, rebuilt.impressions)
    pd.testing.assert_frame_equal(fast.items, rebuilt.items)
    assert list(fast.user_ids) == list(rebuilt.user_ids)
    assert fast.info["preprocessing"][-1]["interactions_after"] == 5
