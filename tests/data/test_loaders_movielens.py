from __future__ import annotations

import re
import time

import numpy as np
import pandas as pd
import pytest

from recarena.data.loaders import load_movielens_1m, load_movielens_100k, load_movielens_latest
from recarena.errors import DataError
from tests.data.conftest import LATEST_RATINGS, ML1M_RATINGS, ML100K_RATINGS, write_lines


def _item(ds, raw_id):
    return ds.items.iloc[int(ds.item_index([raw_id])[0])]


def _user(ds, raw_id):
    return ds.users.iloc[int(ds.user_index([raw_id])[0])]


# ---------------------------------------------------------------------------------- 100k
def test_ml100k_fields(tmp_path, movielens_files):
    ds = load_movielens_100k(movielens_files.ml100k(tmp_path / "ml-100k"))
    assert ds.name == "ml-100k"
    assert list(ds.user_ids) == [1, 2, 3] and all(type(u) is int for u in ds.user_ids)
    assert list(ds.item_ids) == [10, 20, 30, 40]
    assert ds.n_interactions == 6
    inter = ds.interactions
    assert inter["user"].dtype == np.int32 and inter["timestamp"].dtype == np.int64
    assert inter["rating"].dtype == np.float32
    assert ds.user_ids[inter["user"].iloc[0]] == 1 and ds.item_ids[inter["item"].iloc[0]] == 10
    assert inter["rating"].iloc[0] == 4.0 and inter["timestamp"].iloc[0] == 881250949

    toy = _item(ds, 10)
    assert toy["title"] == "Toy Story (1995)"
    assert toy["year"] == 1995
    assert toy["genres"] == ["Animation", "Children's", "Comedy"]
    assert toy["release_date"] == "1995-01-01"
    assert toy["imdb_url"].startswith("http://us.imdb.com/")
    miserables = _item(ds, 20)  # latin-1 "é"
    assert miserables["title"] == "Misérables, Les (1995)"
    assert miserables["genres"] == ["Drama", "Musical"]
    assert miserables["release_date"] == "1995-12-15"
    unknown = _item(ds, 30)
    assert unknown["title"] == "unknown" and pd.isna(unknown["year"])
    assert unknown["genres"] == ["unknown"] and pd.isna(unknown["release_date"])
    # the year is the last "(yyyy)" of the title, not the "(V)" after it
    assert _item(ds, 40)["year"] == 1995
    assert str(ds.items["year"].dtype) == "Int64"

    assert ds.users is not None
    assert _user(ds, 2).to_dict() == {
        "age": 53,
        "gender": "F",
        "occupation": "other",
        "zip_code": "94043",
    }
    assert ds.info["format"] == "movielens-100k"
    assert set(ds.info["files"]) == {"u.data", "u.item", "u.user"}
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in ds.info["files"].values())
    assert ds.item_text(ds.info["default_text_template"])[0] == (
        "Title: Toy Story (1995). Genres: Animation, Children's, Comedy."
    )


def test_ml100k_without_user_file_and_file_path(tmp_path, movielens_files):
    folder = movielens_files.ml100k(tmp_path / "ml-100k", users=None)
    ds = load_movielens_100k(folder / "u.data")  # a file inside the folder names the folder
    assert ds.users is None and ds.n_users == 3


def test_ml100k_missing_file_lists_expected_and_found(tmp_path, movielens_files):
    folder = movielens_files.ml100k(tmp_path / "ml-100k")
    (folder / "u.item").unlink()
    with pytest.raises(DataError) as err:
        load_movielens_100k(folder)
    message = str(err.value)
    assert "missing u.item" in message and "u.data, u.item" in message
    assert "u.user" in message and "found ['u.data', 'u.user']" in message
    assert err.value.path == str(folder)


def test_ml100k_points_to_the_subfolder_after_unzipping(tmp_path, movielens_files):
    movielens_files.ml100k(tmp_path / "downloads" / "ml-100k")
    with pytest.raises(DataError, match=r"the files are in .*ml-100k: point the path there"):
        load_movielens_100k(tmp_path / "downloads")


def test_ml100k_missing_folder(tmp_path):
    with pytest.raises(DataError, match="folder not found"):
        load_movielens_100k(tmp_path / "nowhere")


def test_ml100k_bad_rating_names_line_value_and_column(tmp_path, movielens_files):
    lines = [f"{u}\t{10 + u}\t3\t88125{u:04d}" for u in range(1, 21)]
    lines[16] = "17\t27\tabc\t881250017"
    folder = movielens_files.ml100k(tmp_path / "ml-100k", ratings=lines)
    with pytest.raises(DataError) as err:
        load_movielens_100k(folder)
    assert err.value.line == 17
    assert err.value.column == "rating"
    assert err.value.path.endswith("u.data")
    assert "'abc'" in str(err.value) and "u.data:17" in str(err.value)


def test_ml100k_wrong_separator(tmp_path, movielens_files):
    lines = [line.replace("\t", ",") for line in ML100K_RATINGS]
    folder = movielens_files.ml100k(tmp_path / "ml-100k", ratings=lines)
    with pytest.raises(DataError) as err:
        load_movielens_100k(folder)
    message = str(err.value)
    assert err.value.line == 1
    assert "expected 4 fields separated by '\\t' on line 1, found 1" in message
    assert "looks separated by ','" in message and "is this the right format?" in message


def test_ml100k_header_line_is_explained(tmp_path, movielens_files):
    lines = ["user_id\titem_id\trating\ttimestamp", *ML100K_RATINGS]
    folder = movielens_files.ml100k(tmp_path / "ml-100k", ratings=lines)
    with pytest.raises(DataError, match="no header line") as err:
        load_movielens_100k(folder)
    assert err.value.line == 1


def test_ml100k_extra_field_on_a_later_line(tmp_path, movielens_files):
    lines = list(ML100K_RATINGS)
    lines[2] = lines[2] + "\t99"
    folder = movielens_files.ml100k(tmp_path / "ml-100k", ratings=lines)
    with pytest.raises(DataError, match="expected 4 fields") as err:
        load_movielens_100k(folder)
    assert err.value.line == 3


def test_ml100k_missing_value(tmp_path, movielens_files):
    lines = list(ML100K_RATINGS)
    lines[3] = "2\t30\t\t881251001"
    folder = movielens_files.ml100k(tmp_path / "ml-100k", ratings=lines)
    with pytest.raises(DataError, match="missing rating") as err:
        load_movielens_100k(folder)
    assert err.value.line == 4


def test_ml100k_item_file_with_wrong_field_count(tmp_path, movielens_files):
    items = ["10|Toy Story (1995)|01-Jan-1995|Animation"]
    folder = movielens_files.ml100k(tmp_path / "ml-100k", items=items)
    with pytest.raises(
        DataError, match=r"expected 24 fields separated by '\|' on line 1, found 4"
    ) as err:
        load_movielens_100k(folder)
    assert err.value.path.endswith("u.item") and err.value.line == 1


def test_ml100k_windows_line_endings_and_utf8_copy(tmp_path, movielens_files):
    reference = load_movielens_100k(movielens_files.ml100k(tmp_path / "a"))
    crlf = load_movielens_100k(
        movielens_files.ml100k(tmp_path / "b", newline="\r\n", encoding="utf-8")
    )
    pd.testing.assert_frame_equal(reference.interactions, crlf.interactions)
    pd.testing.assert_frame_equal(reference.items, crlf.items)
    assert _item(crlf, 20)["title"] == "Misérables, Les (1995)"


def test_ml100k_blank_trailing_lines_are_ignored(tmp_path, movielens_files):
    folder = movielens_files.ml100k(tmp_path / "ml-100k", ratings=[*ML100K_RATINGS, "", ""])
    assert load_movielens_100k(folder).n_interactions == len(ML100K_RATINGS)


def test_ml100k_empty_ratings_file(tmp_path, movielens_files):
    folder = movielens_files.ml100k(tmp_path / "ml-100k", ratings=[])
    with pytest.raises(DataError, match="the file is empty"):
        load_movielens_100k(folder)


# ------------------------------------------------------------------------------------ 1M
def test_ml1m_fields(tmp_path, movielens_files):
    ds = load_movielens_1m(movielens_files.ml1m(tmp_path / "ml-1m"))
    assert ds.name == "ml-1m"
    assert list(ds.user_ids) == [1, 2, 3]
    assert list(ds.item_ids) == [661, 1193, 3408]
    assert ds.n_interactions == 5
    peach = _item(ds, 661)
    assert peach["title"] == "James and the Giant Peach (1996)"
    assert peach["year"] == 1996
    assert peach["genres"] == ["Animation", "Children's", "Musical"]
    assert _item(ds, 3408)["title"] == "Misérables, Les (1998)"
    user = _user(ds, 1).to_dict()
    assert user == {"gender": "F", "age": 1, "occupation": "K-12 student", "zip_code": "48067"}
    assert _user(ds, 2)["occupation"] == "self-employed"
    assert ds.info["format"] == "movielens-1m"
    assert set(ds.info["files"]) == {"ratings.dat", "movies.dat", "users.dat"}


def test_ml1m_utf8_copy_is_detected(tmp_path, movielens_files):
    ds = load_movielens_1m(movielens_files.ml1m(tmp_path / "ml-1m", encoding="utf-8"))
    assert _item(ds, 3408)["title"] == "Misérables, Les (1998)"


def test_ml1m_crlf(tmp_path, movielens_files):
    ds = load_movielens_1m(movielens_files.ml1m(tmp_path / "ml-1m", newline="\r\n"))
    assert _item(ds, 1193)["genres"] == ["Drama"]
    assert _user(ds, 3)["zip_code"] == "55117"


def test_ml1m_wrong_separator(tmp_path, movielens_files):
    lines = [line.replace("::", "\t") for line in ML1M_RATINGS]
    folder = movielens_files.ml1m(tmp_path / "ml-1m", ratings=lines)
    with pytest.raises(DataError) as err:
        load_movielens_1m(folder)
    message = str(err.value)
    assert "ratings.dat:1" in message
    assert "expected 4 fields separated by '::' on line 1, found 1" in message
    assert "looks separated by '\\t'" in message
    assert "is this the right format?" in message
    assert "MovieLens 1M ratings.dat lines read '1::1193::5::978300760'" in message


def test_ml1m_bad_timestamp(tmp_path, movielens_files):
    lines = list(ML1M_RATINGS)
    lines[4] = "3::661::1::yesterday"
    folder = movielens_files.ml1m(tmp_path / "ml-1m", ratings=lines)
    with pytest.raises(DataError, match="'yesterday'") as err:
        load_movielens_1m(folder)
    assert err.value.line == 5 and err.value.column == "timestamp"


def test_ml1m_missing_movies(tmp_path, movielens_files):
    folder = movielens_files.ml1m(tmp_path / "ml-1m")
    (folder / "movies.dat").unlink()
    with pytest.raises(
        DataError, match="missing movies.dat: a MovieLens 1M folder holds ratings.dat, movies.dat"
    ):
        load_movielens_1m(folder)


@pytest.mark.slow
def test_ml1m_million_ratings_load_fast(tmp_path, movielens_files):
    rng = np.random.default_rng(0)
    n = 1_000_209
    frame = pd.DataFrame(
        {
            "u": rng.integers(1, 6041, n),
            "i": rng.choice([661, 1193, 3408], n),
            "r": rng.integers(1, 6, n),
            "t": rng.integers(956703932, 1046454590, n),
        }
    )
    folder = tmp_path / "ml-1m"
    movielens_files.ml1m(folder)
    frame.to_csv(folder / "ratings.tsv", sep="\t", header=False, index=False)
    (folder / "ratings.dat").write_bytes(
        (folder / "ratings.tsv").read_bytes().replace(b"\t", b"::")
    )
    start = time.perf_counter()
    ds = load_movielens_1m(folder)
    elapsed = time.perf_counter() - start
    assert ds.n_interactions == n
    # generous bound for slow CI machines; the measured figure is well under a second
    assert elapsed < 10


# -------------------------------------------------------------------------------- latest
def test_latest_fields(tmp_path, movielens_files):
    ds = load_movielens_latest(movielens_files.latest(tmp_path / "ml-latest-small"))
    assert ds.name == "ml-latest-small"
    assert list(ds.item_ids) == [1, 3, 193609]
    # user 1's ratings in time order: movie 3 (964981247), then movie 1 (964982703)
    assert ds.interactions["rating"].tolist()[:2] == [4.5, 4.0]
    president = _item(ds, 3)
    assert president["title"] == "American President, The (1995)"
    assert president["genres"] == ["Comedy", "Drama", "Romance"]
    assert _item(ds, 193609)["genres"] == []
    assert _item(ds, 193609)["year"] == 1991
    # most used first, case-insensitive: "pixar" twice, "fun" once
    assert _item(ds, 1)["tags"] == ["pixar", "fun"]
    assert _item(ds, 193609)["tags"] == []
    assert ds.users is None
    assert set(ds.info["files"]) == {"ratings.csv", "movies.csv", "tags.csv"}


def test_latest_bom_and_crlf(tmp_path, movielens_files):
    ds = load_movielens_latest(movielens_files.latest(tmp_path / "m", newline="\r\n", bom=True))
    assert ds.n_interactions == 5
    assert _item(ds, 1)["title"] == "Toy Story (1995)"


def test_latest_misnamed_column_lists_columns_found(tmp_path, movielens_files):
    ratings = ["user,movieId,rating,timestamp", "1,1,4.0,964982703"]
    folder = movielens_files.latest(tmp_path / "m", ratings=ratings)
    with pytest.raises(DataError) as err:
        load_movielens_latest(folder)
    message = str(err.value)
    assert "missing column(s) ['userId']" in message
    assert "columns found: ['user', 'movieId', 'rating', 'timestamp']" in message
    assert err.value.line == 1 and err.value.column == "userId"


def test_latest_semicolon_file_gets_a_separator_hint(tmp_path, movielens_files):
    ratings = [
        line.replace(",", ";") for line in ["userId,movieId,rating,timestamp", "1,1,4.0,964982703"]
    ]
    folder = movielens_files.latest(tmp_path / "m", ratings=ratings)
    with pytest.raises(DataError, match="looks separated by ';'"):
        load_movielens_latest(folder)


def test_latest_bad_rating_line_counts_the_header(tmp_path, movielens_files):
    ratings = ["userId,movieId,rating,timestamp", *[f"{u},1,4.0,964982703" for u in range(1, 20)]]
    ratings[16] = "16,1,four,964982703"
    folder = movielens_files.latest(tmp_path / "m", ratings=ratings)
    with pytest.raises(DataError, match="cannot read 'four' as the rating") as err:
        load_movielens_latest(folder)
    assert err.value.line == 17


def test_latest_invalid_utf8_gets_an_encoding_hint(tmp_path, movielens_files):
    folder = movielens_files.latest(tmp_path / "m")
    movies = ["movieId,title,genres", "1,Toy Story (1995),Animation", "2,Misérables (1998),Drama"]
    write_lines(folder / "movies.csv", movies, encoding="latin-1")
    with pytest.raises(DataError, match="not valid utf-8.*set the encoding to 'latin-1'") as err:
        load_movielens_latest(folder)
    assert err.value.line == 3
    ds = load_movielens_latest(folder, encoding="latin-1")
    assert _item(ds, 1)["title"] == "Toy Story (1995)"


def test_utf16_file_is_explained(tmp_path, movielens_files):
    folder = movielens_files.latest(tmp_path / "m")
    (folder / "ratings.csv").write_bytes("\n".join(LATEST_RATINGS).encode("utf-16"))
    with pytest.raises(DataError, match="UTF-16"):
        load_movielens_latest(folder)
