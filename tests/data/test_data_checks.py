"""Values that used to load silently wrong (issue 11, items 3 and 4): each is now an error
naming the file, the line and the column, or a documented normalisation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recarena.config import parse_config
from recarena.data.loaders import load_movielens_100k, load_recbole, load_tabular
from recarena.data.loaders._reading import (
    EARLIEST_TIMESTAMP,
    MAX_LINE_BYTES,
    check_plausible_times,
)
from recarena.data.loaders._streaming import StreamedFile
from recarena.errors import ConfigError, DataError, RecArenaError
from tests.data.conftest import ML100K_RATINGS, RECBOLE_INTER, write_lines

SECONDS = 978_300_760  # 2000-12-31, a MovieLens 1M time


def _csv(tmp_path, lines, name="r.csv"):
    return write_lines(tmp_path / name, lines)


# ----------------------------------------------------------------------------- timestamps
def test_a_timestamp_beyond_int64_is_an_error_not_the_oldest_time(tmp_path):
    # it used to wrap to INT64_MIN: the newest interaction became the oldest
    path = _csv(tmp_path, ["user,item,timestamp", f"1,2,{SECONDS}", "1,3,99999999999999999999999"])
    with pytest.raises(DataError, match="would be after the year 9999") as err:
        load_tabular(path)
    assert err.value.path == str(path) and err.value.line == 3
    assert err.value.column == "timestamp"
    assert "'99999999999999999999999'" in str(err.value)


def test_an_int64_overflow_in_a_movielens_file_names_its_line(tmp_path, movielens_files):
    ratings = [*ML100K_RATINGS[:3], "3\t40\t4\t99999999999999999999999"]
    folder = movielens_files.ml100k(tmp_path / "ml-100k", ratings=ratings)
    with pytest.raises(DataError, match="out of range") as err:
        load_movielens_100k(folder)
    assert err.value.line == 4 and err.value.column == "timestamp"


def test_mixed_units_are_an_error_naming_how_many_rows_and_an_example_line(tmp_path):
    rows = [f"{u},{i},{SECONDS + 60 * (4 * u + i)}" for u in range(2) for i in range(4)]
    rows[5] = f"1,1,{(SECONDS + 300) * 1000}"  # 2 of 10 rows in milliseconds
    rows.append(f"2,0,{(SECONDS + 900) * 1000}")
    rows.append(f"2,1,{SECONDS + 960}")
    path = _csv(tmp_path, ["user,item,timestamp", *rows])
    with pytest.raises(DataError) as err:
        load_tabular(path)
    message = str(err.value)
    assert err.value.line == 7 and err.value.column == "timestamp"
    assert "2 of 10 rows" in message and "the other 8 rows hold dates" in message
    assert "mixes units" in message and "looks like milliseconds" in message


def test_negative_timestamps_are_an_error(tmp_path):
    path = _csv(tmp_path, ["user,item,timestamp", f"1,2,{SECONDS}", "1,3,-60"])
    with pytest.raises(DataError, match="before 1970-01-01") as err:
        load_tabular(path)
    assert err.value.line == 3


def test_a_millisecond_unit_on_data_in_seconds_is_an_error(tmp_path):
    path = _csv(tmp_path, ["user,item,timestamp", f"1,2,{SECONDS}", f"1,3,{SECONDS + 1}"])
    with pytest.raises(DataError) as err:
        load_tabular(path, timestamp_unit="ms")
    message = str(err.value)
    assert err.value.line == 2
    assert f"timestamp '{SECONDS}' in milliseconds would be 1970-01-12" in message
    assert "set the timestamp unit to 's'" in message
    assert load_tabular(path).interactions["timestamp"].tolist() == [SECONDS, SECONDS + 1]


def test_microseconds_on_data_in_milliseconds_is_an_error(tmp_path):
    path = _csv(tmp_path, ["user,item,timestamp", f"1,2,{SECONDS * 1000}"])
    with pytest.raises(DataError, match="set the timestamp unit to 'ms'"):
        load_tabular(path, timestamp_unit="us")


def test_a_placeholder_zero_among_real_times_is_an_error(tmp_path):
    path = _csv(tmp_path, ["user,item,timestamp", f"1,2,{SECONDS}", "1,3,0", "2,3,0"])
    with pytest.raises(DataError, match="2 of 3 rows.*placeholders") as err:
        load_tabular(path)
    assert err.value.line == 3


def test_order_positions_in_seconds_still_load(tmp_path):
    # a column whose every value is small holds positions, a documented and accepted use
    path = _csv(tmp_path, ["user,item,timestamp", "1,2,1", "1,3,2", "2,3,0"])
    assert load_tabular(path).interactions["timestamp"].tolist() == [1, 2, 0]


def test_iso_dates_far_ahead_are_an_error_not_a_crash(tmp_path):
    # 2999 used to raise pandas' OutOfBoundsDatetime
    path = _csv(tmp_path, ["user,item,timestamp", "1,2,2021-01-01", "1,3,2999-01-01"])
    with pytest.raises(DataError, match="more than a year from now") as err:
        load_tabular(path, timestamp_unit="iso")
    assert err.value.line == 3


def test_recbole_timestamps_are_checked_too(tmp_path, movielens_files):
    inter = [*RECBOLE_INTER, "22\t242\t1\t-1"]
    folder = movielens_files.recbole(tmp_path / "ml", inter=inter, items=None, users=None)
    with pytest.raises(DataError, match="before 1970-01-01") as err:
        load_recbole(folder)
    assert err.value.line == 6 and err.value.column == "timestamp"


def test_plausibility_uses_the_time_given():
    values = pd.Series([SECONDS, SECONDS + 1])
    seconds = values.to_numpy(np.float64)

    def fail(row, message):
        return DataError(message)

    check_plausible_times(seconds, values, "s", fail, now=float(SECONDS))
    with pytest.raises(DataError, match="more than a year from now"):
        check_plausible_times(seconds, values, "s", fail, now=float(SECONDS - 400 * 86_400))
    assert EARLIEST_TIMESTAMP == 365 * 86_400


# ------------------------------------------------------------------------------------ ids
def test_integer_ids_written_as_decimals_are_the_same_user(tmp_path):
    path = _csv(tmp_path, ["user,item", "22,1", "22.0,2", "23,1", "23.00,3"])
    ds = load_tabular(path)
    assert list(ds.user_ids) == [22, 23] and list(ds.item_ids) == [1, 2, 3]
    assert ds.interactions["user"].tolist() == [0, 0, 1, 1]


def test_two_spellings_of_one_number_among_text_ids_are_an_error(tmp_path):
    path = _csv(tmp_path, ["user,item", "22,1", "abc,1", "22.0,2"])
    with pytest.raises(DataError, match=r"'22\.0' and user id '22' \(line 2\)") as err:
        load_tabular(path)
    assert err.value.line == 4 and err.value.column == "user"


def test_leading_zero_ids_keep_their_text(tmp_path):
    path = _csv(tmp_path, ["user,item", "007,1", "7,2"])
    assert sorted(load_tabular(path).user_ids) == ["007", "7"]


@pytest.mark.parametrize("marker", ["NaN", "nan", "NULL", "None", "N/A"])
def test_missing_value_markers_are_not_ids(tmp_path, marker):
    path = _csv(tmp_path, ["user,item", "1,2", f"{marker},3"])
    with pytest.raises(DataError, match=f"missing user id: '{marker}' marks a missing") as err:
        load_tabular(path)
    assert err.value.path == str(path) and err.value.line == 3 and err.value.column == "user"


def test_infinite_float_ids_in_parquet_are_an_error(tmp_path):
    frame = pd.DataFrame({"user": [1.0, np.inf], "item": [2, 3]})
    frame.to_parquet(tmp_path / "r.parquet")
    with pytest.raises(DataError, match="cannot read inf as a user id") as err:
        load_tabular(tmp_path / "r.parquet", file_format="parquet")
    assert err.value.column == "user"


# -------------------------------------------------------------------------------- ratings
@pytest.mark.parametrize("value", ["inf", "-inf", "NaN"])
def test_ratings_that_are_not_finite_are_an_error(tmp_path, value):
    path = _csv(tmp_path, ["user,item,rating", "1,2,4", f"1,3,{value}"])
    with pytest.raises(DataError, match="expected a finite number") as err:
        load_tabular(path)
    assert err.value.line == 3 and err.value.column == "rating"


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_movielens_ratings_that_are_not_finite_are_an_error(tmp_path, movielens_files, value):
    ratings = [*ML100K_RATINGS[:4], f"3\t20\t{value}\t881251002"]
    folder = movielens_files.ml100k(tmp_path / "ml-100k", ratings=ratings)
    with pytest.raises(DataError, match="expected a finite number") as err:
        load_movielens_100k(folder)
    assert err.value.line == 5 and err.value.column == "rating"


# ---------------------------------------------------------------------------- the columns
def test_user_and_item_from_one_column_is_a_config_error(tmp_path):
    path = _csv(tmp_path, ["id,other", "1,2", "2,3"])
    with pytest.raises(ConfigError, match="the user and the item are both read from column 'id'"):
        load_tabular(path, columns={"user": "id", "item": "id"})
    # a guessed column counts too
    path = _csv(tmp_path, ["item,rating", "1,2"], name="g.csv")
    with pytest.raises(ConfigError, match="data.columns.user and data.columns.item"):
        load_tabular(path, columns={"user": "item"})


def test_recbole_user_and_item_from_one_field_is_a_config_error(tmp_path, movielens_files):
    folder = movielens_files.recbole(tmp_path / "ml", items=None, users=None)
    with pytest.raises(ConfigError, match="'user_id'"):
        load_recbole(folder, columns={"item": "user_id"})


def test_the_config_refuses_one_column_for_two_roles():
    data = {"format": "csv", "path": "r.csv", "columns": {"user": "id", "item": "id"}}
    with pytest.raises(ConfigError, match="both the user and the item from column 'id'"):
        parse_config({"name": "t", "data": data, "models": [{"name": "popularity"}]})


# ---------------------------------------------------------------------------- line length
def test_a_line_longer_than_the_limit_is_an_error_before_parsing(tmp_path):
    path = tmp_path / "r.csv"
    field = b"x" * (MAX_LINE_BYTES + 10)
    path.write_bytes(b"user,item,note\n1,2,ok\n1,3," + field + b"\n2,3,ok\n")
    with pytest.raises(DataError, match="line 3 is 16,777,230 bytes long") as err:
        load_tabular(path)
    assert err.value.line == 3 and isinstance(err.value, RecArenaError)


def test_a_streamed_line_longer_than_the_limit_stops_reading(tmp_path):
    path = tmp_path / "reviews.json"
    # read in blocks: the error comes once the unfinished line passes the limit
    path.write_bytes(b'{"a": 1}\n{"a": "' + b"x" * (MAX_LINE_BYTES + 2**23) + b'"}\n')
    with pytest.raises(DataError, match="line 2 is longer than 16,777,216 bytes") as err:
        for _ in StreamedFile(path).lines():
            pass
    assert err.value.line == 2
