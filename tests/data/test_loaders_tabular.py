from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recarena.data.loaders import load_tabular
from recarena.errors import DataError
from tests.data.conftest import write_lines

INTERACTIONS = [
    "customer,product,stars,when",
    "c1,p1,5,2021-03-04T10:00:00Z",
    "c1,p2,3,2021-03-05",
    "c2,p1,4,2021-03-04 12:30:00+02:00",
]
PRODUCTS = [
    "product_id,product_name,categories,price,code",
    'p1,"Shoe, red",Shoes|Summer,19.5,007',
    "p2,Hat,,5,010",
    "p3,Unused,Misc,1,011",
]


def _iso(text: str) -> int:
    return int(pd.Timestamp(text).timestamp())


def test_csv_with_mapping_items_and_iso_dates(tmp_path):
    inter = write_lines(tmp_path / "events.csv", INTERACTIONS)
    products = write_lines(tmp_path / "products.csv", PRODUCTS)
    ds = load_tabular(
        inter,
        items_path=products,
        columns={"user": "customer", "item": "product", "rating": "stars", "timestamp": "when"},
        item_columns={
            "item": "product_id",
            "title": "product_name",
            "categories": "categories",
            "code": "code",
        },
        list_columns=["categories"],
        timestamp_unit="iso",
    )
    assert ds.name == "events"
    assert list(ds.user_ids) == ["c1", "c2"] and list(ds.item_ids) == ["p1", "p2"]
    inter_rows = ds.interactions
    assert inter_rows["timestamp"].tolist() == [
        _iso("2021-03-04T10:00:00Z"),
        _iso("2021-03-05T00:00:00Z"),
        _iso("2021-03-04T10:30:00Z"),
    ]
    assert inter_rows["rating"].tolist() == [5.0, 3.0, 4.0]
    assert list(ds.items.columns) == ["title", "categories", "code"]
    shoe, hat = ds.items.iloc[0], ds.items.iloc[1]
    assert shoe["title"] == "Shoe, red" and shoe["categories"] == ["Shoes", "Summer"]
    assert hat["categories"] == []
    assert shoe["code"] == "007"  # leading zeros keep the text
    assert ds.info["format"] == "csv" and set(ds.info["files"]) == {"events.csv", "products.csv"}
    assert ds.info["default_text_template"] == "{title}"


def test_tsv_with_usual_names_and_all_item_columns(tmp_path):
    inter = write_lines(
        tmp_path / "ratings.tsv",
        ["userId\tmovieId\trating\ttimestamp", "1\t10\t4\t100", "2\t10\t5\t90"],
    )
    items = write_lines(
        tmp_path / "movies.tsv",
        ["movieId\ttitle\tgenres\tyear", "10\tHeat (1995)\tCrime|Drama\t1995"],
    )
    ds = load_tabular(inter, file_format="tsv", items_path=items, list_columns=["genres"])
    assert list(ds.user_ids) == [1, 2] and list(ds.item_ids) == [10]
    assert ds.items.iloc[0]["genres"] == ["Crime", "Drama"]
    assert ds.items.iloc[0]["year"] == 1995 and str(ds.items["year"].dtype) == "Int64"
    assert ds.info["default_text_template"] == "Title: {title}. Genres: {genres}."


def test_denormalized_file_gives_item_and_user_fields(tmp_path):
    inter = write_lines(
        tmp_path / "all.csv",
        ["user,item,title,age", "u1,i1,First,30", "u2,i1,First,41", "u2,i2,Second,41"],
    )
    ds = load_tabular(inter, item_columns={"title": "title"}, user_columns={"age": "age"})
    assert ds.items["title"].tolist() == ["First", "Second"]
    assert ds.users["age"].tolist() == [30, 41]


def test_parquet_with_lists_and_millisecond_times(tmp_path):
    frame = pd.DataFrame(
        {
            "user_id": np.array([5, 5, 6], dtype=np.int64),
            "item_id": ["a", "b", "a"],
            "timestamp": np.array([1_600_000_000_123, 1_600_000_001_999, 1_600_000_002_000]),
        }
    )
    frame.to_parquet(tmp_path / "inter.parquet")
    items = pd.DataFrame({"item_id": ["a", "b"], "title": ["A", "B"], "tags": [["x", "y"], []]})
    items.to_parquet(tmp_path / "items.parquet")
    ds = load_tabular(
        tmp_path / "inter.parquet",
        file_format="parquet",
        items_path=tmp_path / "items.parquet",
        timestamp_unit="ms",
    )
    assert list(ds.user_ids) == [5, 6]
    assert ds.interactions["timestamp"].tolist() == [1_600_000_000, 1_600_000_001, 1_600_000_002]
    assert ds.items["tags"].tolist() == [["x", "y"], []]


def test_parquet_datetime_column(tmp_path):
    frame = pd.DataFrame(
        {"user": [1, 2], "item": [3, 3], "timestamp": pd.to_datetime(["2020-01-01", "2020-01-02"])}
    )
    frame.to_parquet(tmp_path / "x.parquet")
    ds = load_tabular(tmp_path / "x.parquet", file_format="parquet", timestamp_unit="iso")
    assert ds.interactions["timestamp"].tolist() == [_iso("2020-01-01"), _iso("2020-01-02")]


def test_not_a_parquet_file(tmp_path):
    path = write_lines(tmp_path / "x.parquet", ["user,item", "1,2"])
    with pytest.raises(DataError, match="cannot read the file as Parquet"):
        load_tabular(path, file_format="parquet")


def test_multi_character_separator(tmp_path):
    path = write_lines(tmp_path / "r.dat", ["user::item::rating", "1::2::3", "1::3::4"])
    ds = load_tabular(path, separator="::")
    assert ds.n_interactions == 2 and ds.has_ratings


def test_missing_column_lists_columns_found(tmp_path):
    path = write_lines(tmp_path / "r.csv", ["usr,item", "1,2"])
    with pytest.raises(DataError) as err:
        load_tabular(path)
    message = str(err.value)
    assert "no user column: name it with data.columns.user" in message
    assert "columns found: ['usr', 'item']" in message


def test_misnamed_mapped_column_suggests_the_close_one(tmp_path):
    path = write_lines(tmp_path / "r.csv", ["userId,itemId,Rating", "1,2,3"])
    with pytest.raises(DataError, match=r"no column 'rating'.*did you mean 'Rating'\?"):
        load_tabular(path, columns={"user": "userId", "item": "itemId", "rating": "rating"})


def test_unknown_role(tmp_path):
    path = write_lines(tmp_path / "r.csv", ["user,item", "1,2"])
    with pytest.raises(DataError, match=r"unknown interaction role\(s\) \['title'\]"):
        load_tabular(path, columns={"title": "name"})


def test_wrong_separator_is_explained(tmp_path):
    path = write_lines(tmp_path / "r.csv", ["user\titem\trating", "1\t2\t3"])
    with pytest.raises(DataError) as err:
        load_tabular(path)
    assert err.value.line == 1
    assert "looks separated by '\\t'" in str(err.value)
    assert "is this the right format?" in str(err.value)


def test_unparsable_rating_names_line_and_value(tmp_path):
    lines = ["user,item,rating", *[f"u{n},i{n},4" for n in range(2, 21)]]
    lines[16] = "u17,i17,abc"
    path = write_lines(tmp_path / "r.csv", lines)
    with pytest.raises(DataError) as err:
        load_tabular(path)
    assert err.value.line == 17 and err.value.column == "rating"
    assert "cannot read 'abc' as the rating" in str(err.value)


def test_line_numbers_count_blank_lines_and_quoted_newlines(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text('user,item,note,rating\n1,2,"two\nlines",4\n\n3,4,x,bad\n')
    with pytest.raises(DataError) as err:
        load_tabular(path)
    assert err.value.line == 5


def test_iso_unit_with_bad_date(tmp_path):
    path = write_lines(
        tmp_path / "r.csv", ["user,item,timestamp", "1,2,2021-01-01", "1,3,not a date"]
    )
    with pytest.raises(DataError, match="cannot read 'not a date' as an ISO 8601") as err:
        load_tabular(path, timestamp_unit="iso")
    assert err.value.line == 3


def test_dates_with_seconds_unit_get_a_hint(tmp_path):
    path = write_lines(tmp_path / "r.csv", ["user,item,timestamp", "1,2,2021-01-01"])
    with pytest.raises(DataError, match="set the timestamp unit to 'iso'"):
        load_tabular(path)


def test_millisecond_values_read_as_seconds_fail(tmp_path):
    # a warning used to be all: the data loaded with dates tens of thousands of years ahead
    path = write_lines(tmp_path / "r.csv", ["user,item,timestamp", "1,2,1600000000123"])
    with pytest.raises(DataError, match="looks like milliseconds: set the timestamp unit to 'ms'"):
        load_tabular(path)


def test_missing_item_id(tmp_path):
    path = write_lines(tmp_path / "r.csv", ["user,item", "1,2", "1,"])
    with pytest.raises(DataError, match="missing item id") as err:
        load_tabular(path)
    assert err.value.line == 3


def test_wrong_encoding_hint(tmp_path):
    path = write_lines(tmp_path / "r.csv", ["user,item,title", "1,2,Amélie"], encoding="latin-1")
    with pytest.raises(DataError, match="not valid utf-8.*'latin-1'") as err:
        load_tabular(path, item_columns={"title": "title"})
    assert err.value.line == 2
    ds = load_tabular(path, item_columns={"title": "title"}, encoding="latin-1")
    assert ds.items["title"].tolist() == ["Amélie"]


def test_bom_and_windows_line_endings(tmp_path):
    path = write_lines(
        tmp_path / "r.csv", ["user,item,rating", "1,2,3", "1,3,4"], newline="\r\n", bom=True
    )
    ds = load_tabular(path)
    assert ds.n_interactions == 2 and ds.interactions["rating"].tolist() == [3.0, 4.0]


def test_header_only_file(tmp_path):
    path = write_lines(tmp_path / "r.csv", ["user,item"])
    with pytest.raises(DataError, match="only its header"):
        load_tabular(path)


def test_list_columns_without_item_table(tmp_path):
    path = write_lines(tmp_path / "r.csv", ["user,item", "1,2"])
    with pytest.raises(DataError, match="list_columns"):
        load_tabular(path, list_columns=["genres"])


def test_list_column_not_in_items(tmp_path):
    inter = write_lines(tmp_path / "r.csv", ["user,item", "1,2"])
    items = write_lines(tmp_path / "i.csv", ["item,title", "2,T"])
    with pytest.raises(
        DataError, match=r"list_columns names field\(s\) \['genres'\].*fields: \['title'\]"
    ):
        load_tabular(inter, items_path=items, list_columns=["genres"])


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_tabular(tmp_path / "nope.csv")


def test_compressed_csv(tmp_path):
    import gzip

    path = tmp_path / "r.csv.gz"
    path.write_bytes(gzip.compress(b"user,item,rating\n1,2,3\n"))
    ds = load_tabular(path)
    assert ds.name == "r" and ds.n_interactions == 1 and ds.info["files"]["r.csv.gz"]


def test_damaged_gzip(tmp_path):
    path = tmp_path / "r.csv.gz"
    path.write_bytes(b"user,item\n1,2\n")
    with pytest.raises(DataError, match="cannot decompress the .gz file"):
        load_tabular(path)
