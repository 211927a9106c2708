from __future__ import annotations

import pandas as pd
import pytest

from recarena.data.loaders import load_recbole, read_atomic_file
from recarena.errors import DataError
from tests.data.conftest import RECBOLE_INTER, write_lines


def _item(ds, raw_id):
    return ds.items.iloc[int(ds.item_index([raw_id])[0])]


def test_recbole_interactions_items_users(tmp_path, movielens_files):
    ds = load_recbole(movielens_files.recbole(tmp_path / "ml-100k"))
    assert ds.name == "ml-100k"
    assert list(ds.user_ids) == [22, 186, 196]  # natural type: ints, sorted numerically
    assert list(ds.item_ids) == [242, 302, 377]
    assert ds.n_interactions == 4
    assert ds.has_timestamps and ds.has_ratings
    user_196 = ds.interactions[ds.interactions["user"] == ds.user_index([196])[0]]
    assert ds.item_ids[user_196["item"]].tolist() == [242, 302]
    assert user_196["timestamp"].tolist() == [881250949, 881251000]
    assert user_196["rating"].tolist() == [3.0, 5.0]

    # RecBole's MovieLens fields become the standard movie fields
    assert list(ds.items.columns) == ["title", "year", "genres"]
    confidential = _item(ds, 302)
    assert confidential["title"] == "L.A. Confidential (1997)"
    assert confidential["year"] == 1997
    assert confidential["genres"] == ["Crime", "Film-Noir", "Mystery", "Thriller"]
    unknown = _item(ds, 377)  # RecBole's copy spells it "unkonwn"
    assert unknown["title"] == "unknown" and pd.isna(unknown["year"])
    assert unknown["genres"] == ["unknown"]

    users = ds.users
    assert users is not None and list(users.columns) == ["age", "gender", "occupation", "zip_code"]
    row = users.iloc[int(ds.user_index([186])[0])]
    assert row["zip_code"] == "00000" and row["occupation"] == "executive"
    assert ds.info["format"] == "recbole"
    assert set(ds.info["files"]) == {"ml-100k.inter", "ml-100k.item", "ml-100k.user"}
    assert ds.info["default_text_template"] == "Title: {title}. Genres: {genres}."


def test_recbole_token_seq_and_float_seq_fields(tmp_path, movielens_files):
    items = [
        "item_id:token\tname:token\ttags:token_seq\tprice:float\tembedding:float_seq",
        "a1\tRed shoe\tred shoe  summer\t19.5\t0.1 0.2",
        "b2\t\t\t\t",
    ]
    inter = ["user_id:token\titem_id:token", "u1\ta1", "u2\tb2"]
    folder = movielens_files.recbole(tmp_path / "shop", inter=inter, items=items, users=None)
    ds = load_recbole(folder)
    assert ds.users is None and not ds.has_timestamps and not ds.has_ratings
    assert list(ds.item_ids) == ["a1", "b2"]
    a1, b2 = ds.items.iloc[0], ds.items.iloc[1]
    assert a1["name"] == "Red shoe"  # token: one value, spaces kept
    assert a1["tags"] == ["red", "shoe", "summer"]
    assert a1["price"] == 19.5 and a1["embedding"] == [0.1, 0.2]
    assert (
        pd.isna(b2["name"]) and b2["tags"] == [] and pd.isna(b2["price"]) and b2["embedding"] == []
    )
    assert ds.info["default_text_template"] == "{name}"


def test_recbole_column_mapping(tmp_path, movielens_files):
    inter = ["uid:token\tiid:token\tscore:float\tts:float", "1\t7\t2.5\t100", "1\t8\t4\t50"]
    items = [
        "iid:token\tmovie_title:token_seq\tgenre:token_seq",
        "7\tAlien\tHorror Sci-Fi",
        "8\tHeat\tCrime",
    ]
    folder = movielens_files.recbole(tmp_path / "x", inter=inter, items=items, users=None)
    ds = load_recbole(
        folder,
        columns={"user": "uid", "item": "iid", "rating": "score", "timestamp": "ts"},
        item_columns={"title": "movie_title", "genres": "genre"},
    )
    # explicit item_columns: kept as named, token_seq stays a list
    assert list(ds.items.columns) == ["title", "genres"]
    assert ds.items["title"].tolist() == [["Alien"], ["Heat"]]
    assert ds.interactions["timestamp"].tolist() == [50, 100]
    assert ds.interactions["rating"].tolist() == [4.0, 2.5]


def test_recbole_windows_line_endings_and_bom(tmp_path, movielens_files):
    reference = load_recbole(movielens_files.recbole(tmp_path / "a" / "ml"))
    windows = load_recbole(movielens_files.recbole(tmp_path / "b" / "ml", newline="\r\n", bom=True))
    pd.testing.assert_frame_equal(reference.interactions, windows.interactions)
    pd.testing.assert_frame_equal(reference.items, windows.items)
    pd.testing.assert_frame_equal(reference.users, windows.users)
    assert windows.users.iloc[0]["zip_code"] == "40206"  # no "\r" left on the last field


def test_recbole_inter_file_path_and_single_inter_in_folder(tmp_path, movielens_files):
    folder = movielens_files.recbole(tmp_path / "data", name="ml-100k")
    by_folder = load_recbole(folder)  # folder name differs: the only .inter file is used
    by_file = load_recbole(folder / "ml-100k.inter")
    assert by_folder.name == by_file.name == "ml-100k"
    assert by_folder.n_interactions == by_file.n_interactions == 4


def test_recbole_missing_inter_lists_expected(tmp_path):
    folder = tmp_path / "ml-100k"
    write_lines(folder / "ml-100k.item", ["item_id:token", "1"])
    with pytest.raises(DataError) as err:
        load_recbole(folder)
    message = str(err.value)
    assert "missing ml-100k.inter" in message and "NAME.item" in message
    assert "found ['ml-100k.item']" in message


def test_recbole_several_inter_files(tmp_path, movielens_files):
    folder = movielens_files.recbole(tmp_path / "data", name="a")
    movielens_files.recbole(folder, name="b")
    with pytest.raises(DataError, match=r"several \.inter files \(\['a.inter', 'b.inter'\]\)"):
        load_recbole(folder)


def test_recbole_header_without_types(tmp_path, movielens_files):
    inter = ["user_id\titem_id", "1\t2"]
    folder = movielens_files.recbole(tmp_path / "x", inter=inter, items=None, users=None)
    with pytest.raises(DataError, match="'field:type'.*found 'user_id'") as err:
        load_recbole(folder)
    assert err.value.line == 1 and err.value.column == "user_id"


def test_recbole_unknown_type(tmp_path, movielens_files):
    inter = ["user_id:token\titem_id:int", "1\t2"]
    folder = movielens_files.recbole(tmp_path / "x", inter=inter, items=None, users=None)
    with pytest.raises(DataError, match="unknown RecBole field type 'int' for field 'item_id'"):
        load_recbole(folder)


def test_recbole_comma_separated_file(tmp_path, movielens_files):
    inter = ["user_id:token,item_id:token", "1,2"]
    folder = movielens_files.recbole(tmp_path / "x", inter=inter, items=None, users=None)
    with pytest.raises(DataError, match="looks separated by ','.*tab-separated"):
        load_recbole(folder)


def test_recbole_misnamed_user_field_lists_fields(tmp_path, movielens_files):
    inter = ["user:token\titem_id:token", "1\t2"]
    folder = movielens_files.recbole(tmp_path / "x", inter=inter, items=None, users=None)
    with pytest.raises(DataError) as err:
        load_recbole(folder)
    message = str(err.value)
    assert "no column 'user_id' for the user id (set columns.user)" in message
    assert "columns found: ['user', 'item_id']" in message


def test_recbole_explicitly_mapped_missing_rating(tmp_path, movielens_files):
    inter = ["user_id:token\titem_id:token", "1\t2"]
    folder = movielens_files.recbole(tmp_path / "x", inter=inter, items=None, users=None)
    with pytest.raises(DataError, match="no column 'stars' for the rating"):
        load_recbole(folder, columns={"rating": "stars"})


def test_recbole_bad_float_names_line(tmp_path, movielens_files):
    inter = list(RECBOLE_INTER)
    inter[3] = "196\t302\tfive\t881251000"
    folder = movielens_files.recbole(tmp_path / "x", inter=inter, items=None, users=None)
    with pytest.raises(DataError, match="cannot read 'five'") as err:
        load_recbole(folder)
    assert err.value.line == 4 and err.value.column == "rating"


def test_recbole_missing_user_id(tmp_path, movielens_files):
    inter = list(RECBOLE_INTER)
    inter[2] = "\t302\t3\t891717742"
    folder = movielens_files.recbole(tmp_path / "x", inter=inter, items=None, users=None)
    with pytest.raises(DataError, match="missing user id") as err:
        load_recbole(folder)
    assert err.value.line == 3


def test_recbole_header_only(tmp_path, movielens_files):
    folder = movielens_files.recbole(
        tmp_path / "x", inter=RECBOLE_INTER[:1], items=None, users=None
    )
    with pytest.raises(DataError, match="only its header"):
        load_recbole(folder)


def test_read_atomic_file_types(tmp_path):
    path = write_lines(
        tmp_path / "a.item",
        ["item_id:token\tscore:float\twords:token_seq", "x\t1.5\ta b", "y\t\t"],
    )
    frame, source = read_atomic_file(path)
    assert frame.attrs["recbole_types"] == {
        "item_id": "token",
        "score": "float",
        "words": "token_seq",
    }
    assert frame["item_id"].tolist() == ["x", "y"]
    assert frame["score"].iloc[0] == 1.5 and pd.isna(frame["score"].iloc[1])
    assert frame["words"].tolist() == [["a", "b"], []]
    assert len(source.sha256) == 64


def test_recbole_missing_rating(tmp_path, movielens_files):
    inter = list(RECBOLE_INTER)
    inter[2] = "186\t302\t\t891717742"
    folder = movielens_files.recbole(tmp_path / "x", inter=inter, items=None, users=None)
    with pytest.raises(DataError, match="missing rating$") as err:
        load_recbole(folder)
    assert err.value.line == 3
