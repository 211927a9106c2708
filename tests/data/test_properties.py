"""Property-based tests of the loaders and the splits (issue 11, "Done when").

Hypothesis draws small interaction tables (integer or text ids, timestamps in every unit,
ties, repeated pairs, optional ratings), writes them in each supported file format and
loads them the way the runner does (`parse_config` -> `load_dataset` -> `build_split`):

- a valid table round-trips: the same rows with the same raw ids, times in seconds and
  ratings, in the documented order (user, time, then the fixed tie key), whatever the
  file's row order; de-duplication keeps one row per pair, the latest;
- leave-one-out, temporal and random splits partition the interactions, are deterministic
  under a seed and do not depend on the file's row order;
- an invalid table (a column missing, a time that is not a time, an infinite rating, an
  empty id, a wrong separator or encoding, one column for two roles, ...) ends in a
  `RecArenaError`, and so does any damage to a file's bytes unless the file still reads.

Cases the properties found are pinned with ``@example``. Runs are derandomized so CI is
deterministic; ``max_examples`` keeps the whole file to about ten seconds (raise them,
with ``derandomize=False``, to search harder locally).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, assume, event, example, given, settings
from hypothesis import strategies as st

from recarena.config import parse_config
from recarena.data import load_dataset
from recarena.data.dataset import Dataset, tie_order_keys
from recarena.errors import DataError, RecArenaError
from recarena.runner import build_split
from tests.domains.formats import unisrec_files, write_hetrec, write_lines, write_mind

# pandas warns, and keeps going, where data is lost: a property that meets one fails
pytestmark = pytest.mark.filterwarnings("error::pandas.errors.ParserWarning")

PROPERTIES = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: The cases the properties found, kept as explicit examples and run on every test run.
FOUND = settings(PROPERTIES, phases=[Phase.explicit])

#: Interaction times drawn between 2000-01-01 and 2024-01-01 (seconds).
T_MIN, T_MAX = 946_684_800, 1_704_067_200
UNIT_FACTORS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}

#: Formats with a column mapping and a timestamp unit, and the formats with a fixed layout.
MAPPED_FORMATS = ("csv", "tsv", "parquet", "recbole")
FIXED_FORMATS = ("amazon-2018", "amazon-2023", "movielens-100k", "movielens-1m", "movielens-latest")
ALL_FORMATS = MAPPED_FORMATS + FIXED_FORMATS

_MISSING_MARKERS = {"nan", "-nan", "nat", "na", "n/a", "#n/a", "<na>", "null", "none", "#null!"}
_INTEGER_SPELLING = re.compile(r"-?(0|[1-9][0-9]*)(\.0+)?")


@pytest.fixture(autouse=True)
def _quiet_loaders(caplog):
    # "no item file" warnings on every example would flood the output
    caplog.set_level(logging.ERROR, logger="recarena")


# ------------------------------------------------------------------------------ tables
@dataclass(frozen=True)
class Table:
    """Interactions as a user writes them: raw ids, times as seconds plus nanoseconds."""

    users: tuple[Any, ...]
    items: tuple[Any, ...]
    seconds: tuple[int, ...] | None
    nanos: tuple[int, ...]  # the sub-second part that units finer than seconds write
    ratings: tuple[float, ...] | None

    def __len__(self) -> int:
        return len(self.users)

    def rows(self, order: list[int] | None = None) -> Table:
        """The same table with its rows in ``order``."""
        order = list(range(len(self))) if order is None else order

        def pick(values):
            return None if values is None else tuple(values[k] for k in order)

        return Table(
            pick(self.users),
            pick(self.items),
            pick(self.seconds),
            pick(self.nanos),
            pick(self.ratings),
        )


def _is_text_id(text: str) -> bool:
    """Text a loader keeps as a text id: no surrounding spaces, not a missing-value marker,
    not an integer spelling (those become integer ids when every id is one)."""
    return (
        text == text.strip()
        and text.lower() not in _MISSING_MARKERS
        and _INTEGER_SPELLING.fullmatch(text) is None
    )


# letters, digits, punctuation (quotes and commas included), symbols and inner spaces;
# no control characters, which are line ends or separators in these formats
TEXT_IDS = st.text(
    st.characters(categories=("L", "N", "P", "S", "Zs"), exclude_characters="\x85"),
    min_size=1,
    max_size=6,
).filter(_is_text_id)
INT_IDS = st.integers(0, 10**12)


@st.composite
def id_pools(draw, kind: str, max_size: int = 6) -> list[Any]:
    if kind == "int":
        return draw(st.lists(INT_IDS, min_size=1, max_size=max_size, unique=True))
    # text ids, some of which may spell integers: they stay text next to real text ids
    pool = draw(
        st.lists(
            st.one_of(TEXT_IDS, st.integers(0, 999).map(str)),
            min_size=1,
            max_size=max_size,
            unique=True,
        )
    )
    assume(any(_INTEGER_SPELLING.fullmatch(t) is None for t in pool))
    return pool


RATINGS = st.one_of(
    st.integers(1, 5).map(float),
    st.floats(0, 10, allow_nan=False, width=32),
)


@st.composite
def tables(
    draw,
    *,
    id_kind: str | None = None,
    timestamps: bool | None = None,
    ratings: bool | None = None,
    min_rows: int = 1,
    max_rows: int = 20,
) -> Table:
    """A valid table: repeated users, items and pairs; a few distinct times, so ties."""
    users = draw(id_pools(id_kind or draw(st.sampled_from(["int", "text"]))))
    items = draw(id_pools(id_kind or draw(st.sampled_from(["int", "text"]))))
    n = draw(st.integers(min_rows, max_rows))
    column = lambda values: draw(st.lists(values, min_size=n, max_size=n))  # noqa: E731
    seconds = None
    if timestamps if timestamps is not None else draw(st.booleans()):
        times = draw(st.lists(st.integers(T_MIN, T_MAX), min_size=1, max_size=5, unique=True))
        seconds = tuple(column(st.sampled_from(times)))
    nanos = tuple(column(st.integers(0, 999_999_999))) if seconds else (0,) * n
    rated = ratings if ratings is not None else draw(st.booleans())
    return Table(
        users=tuple(column(st.sampled_from(users))),
        items=tuple(column(st.sampled_from(items))),
        seconds=seconds,
        nanos=nanos,
        ratings=tuple(column(RATINGS)) if rated else None,
    )


# ----------------------------------------------------------------------- file layouts
@dataclass(frozen=True)
class Layout:
    """How a table is written: the format and the choices a user's file may make."""

    fmt: str
    unit: str = "s"  # s, ms, us, ns, iso; "s" may be written with a fraction
    fraction: bool = False
    naming: str = "default"  # default, upper (found case-insensitively), custom (mapped)
    order: tuple[str, ...] = ("user", "item", "timestamp", "rating")
    extra_column: bool = False
    newline: str = "\n"
    bom: bool = False
    # ids: plain; decimal ("22.0"); float (a Parquet float column); number or mixed (JSON)
    int_spelling: str = "plain"
    iso_style: str = "Z"  # Z, offset, naive, native (a Parquet date-time column)


NAMES = {
    "default": {"user": "user", "item": "item", "timestamp": "timestamp", "rating": "rating"},
    "upper": {"user": "User_ID", "item": "ItemID", "timestamp": "TIMESTAMP", "rating": "Rating"},
    "custom": {"user": "who", "item": "what", "timestamp": "when", "rating": "stars"},
}


@st.composite
def layouts(draw, fmt: str, table: Table) -> Layout:
    ints = all(isinstance(v, int) for v in table.users + table.items)
    if fmt not in MAPPED_FORMATS:
        spellings = ["plain", "number", "mixed"] if ints and fmt.startswith("amazon") else ["plain"]
        return Layout(
            fmt,
            newline=draw(st.sampled_from(["\n", "\r\n"])),
            bom=draw(st.booleans()),
            int_spelling=draw(st.sampled_from(spellings)),
        )
    return Layout(
        fmt,
        unit=draw(st.sampled_from(["s", "ms", "us", "ns", "iso"])),
        fraction=draw(st.booleans()),
        naming=draw(st.sampled_from(list(NAMES))) if fmt != "recbole" else "default",
        order=tuple(draw(st.permutations(["user", "item", "timestamp", "rating"]))),
        extra_column=draw(st.booleans()),
        newline=draw(st.sampled_from(["\n", "\r\n"])),
        bom=draw(st.booleans()) and fmt != "parquet",
        int_spelling=draw(st.sampled_from(["plain", "decimal", "float"])) if ints else "plain",
        iso_style=draw(st.sampled_from(["Z", "offset", "naive", "native"])),
    )


def _time_cells(table: Table, layout: Layout) -> list[Any]:
    """The timestamp column as the file holds it."""
    assert table.seconds is not None
    cells: list[Any] = []
    for s, ns in zip(table.seconds, table.nanos, strict=True):
        if not isinstance(s, int):
            cells.append(s)  # a corrupted cell: text, written as is
        elif layout.unit == "iso":
            cells.append(_iso(s, layout.iso_style))
        elif not T_MIN <= s <= T_MAX:  # a corrupted time (before 1970, far ahead): no fraction
            cells.append(s * UNIT_FACTORS[layout.unit])
        elif layout.unit == "s":
            cells.append(s + ns // 250_000_000 / 4 if layout.fraction else s)
        else:
            factor = UNIT_FACTORS[layout.unit]
            cells.append(s * factor + ns // (1_000_000_000 // factor))
    if layout.fmt == "parquet" and layout.unit == "iso" and layout.iso_style == "native":
        return list(pd.to_datetime(pd.Series(cells), utc=True, format="ISO8601"))
    return cells


def _iso(seconds: int, style: str) -> str | int:
    """An ISO 8601 text of ``seconds``; a time past the year 9999 is written as a number."""
    try:
        moment = datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, ValueError, OSError):
        return seconds
    if style == "offset":
        return moment.astimezone(timezone(timedelta(hours=5))).isoformat()
    if style == "naive":
        return moment.replace(tzinfo=None).isoformat()
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _id_cells(values: tuple[Any, ...], layout: Layout) -> list[Any]:
    if layout.int_spelling == "plain" or not all(isinstance(v, int) for v in values):
        return list(values)
    if layout.int_spelling == "decimal" or layout.fmt != "parquet":
        return [f"{v}.0" for v in values]
    return [float(v) for v in values]  # a float column of whole numbers


def _role_columns(table: Table, layout: Layout) -> dict[str, list[Any]]:
    """Role -> cells, in the layout's column order, for formats with named columns."""
    cells: dict[str, list[Any]] = {
        "user": _id_cells(table.users, layout),
        "item": _id_cells(table.items, layout),
    }
    if table.seconds is not None:
        cells["timestamp"] = _time_cells(table, layout)
    if table.ratings is not None:
        cells["rating"] = list(table.ratings)
    return {role: cells[role] for role in layout.order if role in cells}


def write_table(folder: Path, table: Table, layout: Layout) -> dict[str, Any]:
    """Write ``table`` under ``folder`` as ``layout`` says; return the ``[data]`` config."""
    fmt = layout.fmt
    if fmt in ("csv", "tsv", "parquet"):
        names = NAMES[layout.naming]
        frame = pd.DataFrame(
            {names[role]: values for role, values in _role_columns(table, layout).items()}
        )
        if layout.extra_column:
            frame.insert(len(frame.columns) // 2, "note", [f"n{k}" for k in range(len(table))])
        path = folder / f"inter.{fmt}"
        if fmt == "parquet":
            frame.to_parquet(path, index=False)
        else:
            text = frame.to_csv(
                index=False, sep="," if fmt == "csv" else "\t", lineterminator=layout.newline
            )
            path.write_bytes((b"\xef\xbb\xbf" if layout.bom else b"") + text.encode("utf-8"))
        config: dict[str, Any] = {"format": fmt, "path": str(path)}
        if layout.naming == "custom":
            config["columns"] = {role: names[role] for role in _role_columns(table, layout)}
    elif fmt == "recbole":
        columns = _role_columns(table, layout)
        kinds = {"user": "token", "item": "token", "rating": "float"}
        kinds["timestamp"] = "token" if layout.unit == "iso" else "float"
        header = [f"{NAMES['default'][r]}:{kinds[r]}" for r in columns]
        header = [h.replace("user:", "user_id:").replace("item:", "item_id:") for h in header]
        if layout.extra_column:
            header.append("note:token")
            columns["note"] = [f"n{k}" for k in range(len(table))]
        lines = ["\t".join(header)]
        lines += ["\t".join(_text(c[k]) for c in columns.values()) for k in range(len(table))]
        path = folder / "data" / "data.inter"
        _write_lines(path, lines, layout)
        config = {"format": "recbole", "path": str(path.parent)}
    else:
        config = _write_fixed_layout(folder, table, layout)
    if fmt in MAPPED_FORMATS:
        config["timestamp_unit"] = layout.unit
    return config


def _text(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _write_lines(path: Path, lines: list[str], layout: Layout, encoding: str = "utf-8") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(line + layout.newline for line in lines).encode(encoding)
    path.write_bytes((b"\xef\xbb\xbf" if layout.bom else b"") + data)


def _json_id(value: Any, row: int, layout: Layout) -> Any:
    """An id as JSON: text as Amazon writes it, or an integer id as a JSON number (on every
    row, or on every other row: 5 and "5" are one id); a corrupted id stays as it is."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return value
    if isinstance(value, int) and (
        layout.int_spelling == "number" or (layout.int_spelling == "mixed" and row % 2)
    ):
        return value
    return str(value)


def _variant(item: Any) -> Any:
    """The 2023 ``asin`` of a product: a variant id, or the same missing id as the product."""
    real = isinstance(item, int) or (isinstance(item, str) and item.strip() and _is_text_id(item))
    return f"v{item}" if real else item


def _write_fixed_layout(folder: Path, table: Table, layout: Layout) -> dict[str, Any]:
    """Amazon reviews (JSON lines) and the three MovieLens folders."""
    assert table.seconds is not None and table.ratings is not None
    rows = list(zip(table.users, table.items, table.ratings, table.seconds, strict=True))
    fmt = layout.fmt
    if fmt.startswith("amazon"):
        if fmt == "amazon-2018":
            records = [
                {"reviewerID": _json_id(u, k, layout), "asin": _json_id(i, k, layout),
                 "overall": r, "unixReviewTime": s}
                for k, (u, i, r, s) in enumerate(rows)
            ]  # fmt: skip
        else:
            records = [
                {"user_id": _json_id(u, k, layout), "parent_asin": _json_id(i, k, layout),
                 "asin": _variant(i), "rating": r,
                 "timestamp": s * 1000 + ns // 1_000_000 if isinstance(s, int) else s,
                 "text": "fine"}
                for k, ((u, i, r, s), ns) in enumerate(zip(rows, table.nanos, strict=True))
            ]  # fmt: skip
        path = folder / "Reviews.jsonl"
        _write_lines(path, [json.dumps(record) for record in records], layout)
        return {"format": "amazon", "path": str(path)}
    movies = sorted({m for m in table.items if isinstance(m, int)})  # not corrupted ids
    ml = folder / "ml"
    if fmt == "movielens-100k":
        _write_lines(ml / "u.data", ["\t".join(map(_text, row)) for row in rows], layout)
        flags = "|0" * 19
        items = [f"{m}|Movie {m} (1999)|01-Jan-1999||{flags}" for m in movies]
        _write_lines(ml / "u.item", items, layout)
    elif fmt == "movielens-1m":
        _write_lines(ml / "ratings.dat", ["::".join(map(_text, row)) for row in rows], layout)
        _write_lines(ml / "movies.dat", [f"{m}::Movie {m} (1999)::Drama" for m in movies], layout)
    else:
        lines = ["userId,movieId,rating,timestamp", *(",".join(map(_text, row)) for row in rows)]
        _write_lines(ml / "ratings.csv", lines, layout)
        movie_lines = ["movieId,title,genres", *(f"{m},Movie {m} (1999),Drama" for m in movies)]
        _write_lines(ml / "movies.csv", movie_lines, layout)
    return {"format": fmt, "path": str(ml)}


@st.composite
def written_tables(draw, formats: tuple[str, ...] = ALL_FORMATS, **table_options) -> tuple:
    """(table, layout, another row order) for a format; fixed layouts get the ids and
    columns they need."""
    fmt = draw(st.sampled_from(formats))
    if fmt in FIXED_FORMATS:
        table_options = {**table_options, "timestamps": True, "ratings": True}
        if fmt.startswith("movielens"):
            table_options["id_kind"] = "int"
    table = draw(tables(**table_options))
    order = draw(st.permutations(range(len(table))))
    return table, draw(layouts(fmt, table)), order


# ---------------------------------------------------------------------- the public path
@contextlib.contextmanager
def folder() -> Iterator[Path]:
    # not tmp_path: one fresh folder per Hypothesis example, not per test
    with tempfile.TemporaryDirectory(prefix="recarena-prop-") as name:
        yield Path(name)


def experiment(data: dict[str, Any], seed: int = 42, **split: Any) -> Any:
    """The experiment config a user would write around ``[data]`` (checked as the CLI does)."""
    return parse_config(
        {
            "name": "prop",
            "seed": seed,
            "data": data,
            "split": split,
            "models": [{"name": "popularity"}],
        }
    )


def load(data: dict[str, Any], dedup: str = "none") -> Dataset:
    data = {**data, "preprocess": {"dedup": dedup}}
    return load_dataset(experiment(data).data)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def loaded_rows(dataset: Dataset, frame: pd.DataFrame | None = None) -> list[tuple]:
    """Rows with raw ids, in order: (user, item, timestamp, rating), absent columns None."""
    frame = dataset.interactions if frame is None else frame
    n = len(frame)
    users = [_plain(v) for v in dataset.user_ids[frame["user"].to_numpy()]]
    items = [_plain(v) for v in dataset.item_ids[frame["item"].to_numpy()]]
    times = frame["timestamp"].tolist() if "timestamp" in frame else [None] * n
    ratings = frame["rating"].tolist() if "rating" in frame else [None] * n
    return list(zip(users, items, times, ratings, strict=True))


def _natural(ids: tuple[Any, ...]) -> list[Any]:
    """Text ids that all spell integers ("7", "12") are integer ids (`natural_ids`)."""
    if all(isinstance(v, str) and _INTEGER_SPELLING.fullmatch(v) for v in ids):
        return [int(v.split(".")[0]) for v in ids]
    return list(ids)


def expected_rows(table: Table, fmt: str) -> list[tuple]:
    """The rows a loader should give for ``table``, in the documented order.

    Raw ids keep their type (Amazon ids are always text); times are whole seconds; ratings
    float32. Rows go by user, then time, then the fixed tie key of the raw ids, then item
    and rating; without times, by user in file order.
    """
    if fmt.startswith("amazon"):
        users, items = [str(u) for u in table.users], [str(i) for i in table.items]
    else:
        users, items = _natural(table.users), _natural(table.items)
    n = len(table)
    times = list(table.seconds) if table.seconds is not None else [None] * n
    ratings = (
        [float(np.float32(r)) for r in table.ratings] if table.ratings is not None else [None] * n
    )
    user_ids, item_ids = sorted(set(users)), sorted(set(items))
    dense = pd.DataFrame(
        {
            "user": [user_ids.index(u) for u in users],
            "item": [item_ids.index(i) for i in items],
        }
    )
    if table.seconds is None:
        order = np.argsort(dense["user"].to_numpy(), kind="stable")
    else:
        keys = [dense["user"].to_numpy(), np.array(times)]
        keys.append(tie_order_keys(dense, np.array(user_ids, object), np.array(item_ids, object)))
        keys.append(dense["item"].to_numpy())
        if table.ratings is not None:
            keys.append(np.array(ratings))
        order = np.lexsort(keys[::-1])
    rows = list(zip(users, items, times, ratings, strict=True))
    return [rows[k] for k in order]


# ------------------------------------------------------------------------- round trips
#: One interaction, for the examples the properties found.
ONE = Table(users=(1,), items=(2,), seconds=(T_MIN,), nanos=(0,), ratings=(4.0,))
TWO = Table(users=(1, 1), items=(2, 3), seconds=(T_MIN,) * 2, nanos=(0, 0), ratings=(4.0, 2.0))


@pytest.mark.parametrize("fmt", ALL_FORMATS)
@settings(PROPERTIES, max_examples=8)
@given(data=st.data())
def test_a_valid_table_round_trips_in_every_format(fmt, data):
    check_round_trip(data.draw(written_tables(formats=(fmt,)), label="written"))


@FOUND
@given(written=written_tables())
# RecBole "float" times in nanoseconds just before a whole second: the next second
@example(written=(replace(ONE, nanos=(999_999_999,)), Layout("recbole", unit="ns"), [0]))
# Amazon ids 5 and "5": ValueError (categories must be unique)
@example(written=(TWO, Layout("amazon-2018", int_spelling="mixed"), [1, 0]))
# Amazon product 0 as a JSON number: read as the variant's asin ("0" or "v0")
@example(written=(replace(ONE, items=(0,)), Layout("amazon-2023", int_spelling="number"), [0]))
def test_the_valid_tables_found_round_trip(written):
    check_round_trip(written)


def check_round_trip(written: tuple[Table, Layout, list[int]]) -> None:
    table, layout, order = written
    with folder() as here:
        dataset = load(write_table(here, table, layout))
        assert loaded_rows(dataset) == expected_rows(table, layout.fmt)
        assert dataset.n_users == len(set(table.users))
        assert dataset.n_items == len(set(table.items))
        assert list(dataset.user_ids) == sorted(dataset.user_ids)
        assert list(dataset.item_ids) == sorted(dataset.item_ids)

    if table.seconds is None or len(table) < 2:
        return
    # another row order of the same file: the very same data set, row for row
    with folder() as here:
        shuffled = load(write_table(here, table.rows(order), layout))
    pd.testing.assert_frame_equal(dataset.interactions, shuffled.interactions)
    assert loaded_rows(shuffled) == loaded_rows(dataset)


@PROPERTIES
@given(written=written_tables(timestamps=True))
def test_deduplication_keeps_the_latest_row_of_each_pair(written):
    table, layout, _ = written
    with folder() as here:
        data = write_table(here, table, layout)
        everything = loaded_rows(load(data))
        kept = loaded_rows(load(data, dedup="latest"))
    pairs = {(u, i) for u, i, _, _ in everything}
    assert len(kept) == len(pairs)
    assert {(u, i) for u, i, _, _ in kept} == pairs
    for user, item, time, _ in kept:
        assert time == max(t for u, i, t, _ in everything if (u, i) == (user, item))
    # the kept rows are a subsequence of the full order: de-duplication never reorders
    position = iter(everything)
    assert all(row in position for row in kept)


# ------------------------------------------------------------------------------ splits
SPLIT_METHODS = {
    "leave_one_out": {"min_history": 1},
    "temporal": {"valid_ratio": 0.2, "test_ratio": 0.2},
    "random": {"valid_ratio": 0.2, "test_ratio": 0.2},
}


def _split_rows(dataset: Dataset, split: Any) -> dict[str, list[tuple]]:
    return {part: loaded_rows(dataset, getattr(split, part)) for part in ("train", "valid", "test")}


def split_of(table: Table, layout: Layout, method: str, seed: int) -> tuple[Dataset, Any]:
    """Load ``table`` as written in ``layout`` and split it as the runner does.

    Returns the data set and the split, or the data set and the `RecArenaError` the
    splitter raised for data too thin to split (said, not silently wrong).
    """
    with folder() as here:
        data = {**write_table(here, table, layout), "preprocess": {"dedup": "none"}}
        config = experiment(data, seed=seed, method=method, **SPLIT_METHODS[method])
        dataset = load_dataset(config.data)
    try:
        return dataset, build_split(config, dataset)
    except RecArenaError as exc:
        return dataset, exc


@pytest.mark.parametrize("method", sorted(SPLIT_METHODS))
@settings(PROPERTIES, max_examples=10)
@given(
    written=written_tables(formats=("csv", "parquet", "amazon-2023"), min_rows=3, max_rows=30),
    seed=st.integers(0, 2**31 - 1),
)
def test_splits_partition_the_data_deterministically_in_any_file_order(method, written, seed):
    table, layout, order = written
    dataset, split = split_of(table, layout, method, seed)
    event("refused: too thin" if isinstance(split, RecArenaError) else f"split {layout.fmt}")
    # without times the file order is the data's order, so only a timed table is shuffled
    shuffled = table.rows(order) if table.seconds is not None else table
    other_dataset, other_split = split_of(shuffled, layout, method, seed)
    if isinstance(split, RecArenaError):
        assert isinstance(other_split, RecArenaError)
        assert str(other_split) == str(split)
        return
    parts = _split_rows(dataset, split)
    # a partition: every interaction in exactly one part, none lost, none added
    together = parts["train"] + parts["valid"] + parts["test"]
    assert sorted(together, key=repr) == sorted(loaded_rows(dataset), key=repr)
    assert parts["test"]
    if method == "temporal" and table.seconds is not None:
        times = {part: [row[2] for row in rows] for part, rows in parts.items()}
        later = times["valid"] + times["test"]
        assert max(times["train"], default=T_MIN) <= min(later)
        assert max(times["valid"], default=T_MIN) <= min(times["test"])
    if method == "leave_one_out":
        assert len({row[0] for row in parts["test"]}) == len(parts["test"])
    # deterministic: the same split again, and the same split from the shuffled file
    assert _split_rows(dataset, split_of(table, layout, method, seed)[1]) == parts
    assert not isinstance(other_split, RecArenaError)
    assert _split_rows(other_dataset, other_split) == parts
    assert other_split.notes == split.notes


# ------------------------------------------------------------------------ invalid data
def _expect_data_error(data: dict[str, Any]) -> RecArenaError:
    with pytest.raises(RecArenaError) as caught:
        load(data)
    return caught.value


#: Damage a valid file so it must be refused: (name, formats it applies to).
CORRUPTIONS = {
    "drop user column": ALL_FORMATS,
    "drop item column": ALL_FORMATS,
    "timestamp is text": ALL_FORMATS,
    "timestamp before 1970": ALL_FORMATS,
    "timestamp far in the future": ALL_FORMATS,
    "seconds read in another unit": MAPPED_FORMATS,
    "rating not finite": ALL_FORMATS,
    "rating is text": ALL_FORMATS,
    "missing user id": ALL_FORMATS,
    "missing item id": ALL_FORMATS,
    "id of another type": ("parquet", "amazon-2018", "amazon-2023"),
    "one column for user and item": ("csv", "tsv", "parquet", "recbole"),
    "wrong separator": ("csv", "tsv", "recbole", "movielens-100k", "movielens-1m"),
    "not UTF-8": ("csv", "tsv", "recbole", "amazon-2018", "amazon-2023"),
    "UTF-16": ("csv", "tsv", "recbole", "movielens-latest"),
    "header only": ("csv", "tsv", "recbole", "movielens-latest"),
    "empty file": ALL_FORMATS,
    "line cut short": ("amazon-2018", "amazon-2023", "movielens-100k", "movielens-1m"),
    "line with an extra field": (
        "csv", "tsv", "recbole", "movielens-100k", "movielens-1m", "movielens-latest"
    ),
}  # fmt: skip
CORRUPTED_FORMATS = [(name, fmt) for name, formats in CORRUPTIONS.items() for fmt in formats]
#: Corruptions of one value or line, whose error must name the line or the column.
LOCATED = {
    "timestamp is text", "timestamp before 1970", "timestamp far in the future",
    "rating not finite", "rating is text", "missing user id", "missing item id",
    "id of another type", "line cut short", "line with an extra field",
}  # fmt: skip
SEPARATORS = {"csv": ",", "movielens-latest": ",", "movielens-1m": "::"}  # others: a tab
NON_NUMBERS = st.one_of(
    st.sampled_from(
        ["abc", "12:30", "1/2/2020", "--", "0x10", "1_000", "\u0661\u0662", "today", "now", "T"]
    ),
    st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzXYZ"), min_size=1, max_size=5),
)
NON_FINITE = st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "-Infinity"])
MISSING_IDS = st.sampled_from(["", " ", "NaN", "nan", "NULL", "N/A", "None", "<NA>", "#N/A"])


@st.composite
def corrupted(draw, name: str | None = None, fmt: str | None = None) -> tuple:
    """(corruption, table, layout, (detail, row)): one way a file is damaged, and where."""
    name = name or draw(st.sampled_from(sorted(CORRUPTIONS)))
    fmt = fmt or draw(st.sampled_from(CORRUPTIONS[name]))
    options: dict[str, Any] = {"min_rows": 1, "max_rows": 8}
    if name.startswith("timestamp") or name.startswith("seconds") or fmt in FIXED_FORMATS:
        options["timestamps"] = True
    if name.startswith("rating") or fmt in FIXED_FORMATS:
        options["ratings"] = True
    if fmt.startswith("movielens"):
        options["id_kind"] = "int"
    table = draw(tables(**options))
    layout = draw(layouts(fmt, table))
    if name == "timestamp is text":
        # the unit stays; every unit refuses these
        detail: Any = draw(NON_NUMBERS)
    elif name == "rating not finite":
        detail = draw(NON_FINITE)
    elif name == "rating is text":
        detail = draw(NON_NUMBERS.filter(lambda t: t.lower() not in ("inf", "nan")))
    elif name.startswith("missing"):
        detail = draw(MISSING_IDS)
    elif name == "id of another type":
        odd = ["list", "dict", "bool"] + (["bytes"] if fmt == "parquet" else ["float"])
        detail = draw(st.sampled_from(odd))
    elif name == "seconds read in another unit":
        layout = replace(layout, unit="s", fraction=False)
        detail = draw(st.sampled_from(["ms", "us", "ns"]))
    elif name == "timestamp far in the future":
        detail = draw(st.sampled_from([10**22, 99999999999999999999999, 2**63, 4 * 10**10]))
    else:
        detail = None
    row = draw(st.integers(0, len(table) - 1))
    return name, table, replace(layout, bom=False), (detail, row)


def write_corrupted(here: Path, name: str, table: Table, layout: Layout, how: Any) -> dict:
    """Write ``table`` damaged as ``name`` says; return the ``[data]`` config."""
    detail, row = how
    fmt = layout.fmt

    def with_cell(role: str, value: Any) -> Table:
        column = list(getattr(table, role))
        column[row] = value
        return replace(table, **{role: tuple(column)})

    if name == "timestamp is text":
        table = with_cell("seconds", detail)
    elif name == "timestamp before 1970":
        table = with_cell("seconds", -86_400 - row)
    elif name == "timestamp far in the future":
        table = with_cell("seconds", detail)
    elif name in ("rating not finite", "rating is text"):
        value = float(detail) if fmt == "parquet" and name == "rating not finite" else detail
        table = with_cell("ratings", value)
    elif name in ("missing user id", "missing item id"):
        role = "users" if "user" in name else "items"
        value = None if fmt == "parquet" and not detail.strip() else detail
        table = with_cell(role, value)
    elif name == "id of another type":
        odd = {"list": [1, 2], "dict": {"a": 1}, "bool": True, "bytes": b"x\xff", "float": 1.5}
        if fmt == "parquet":  # a whole column of that type: Parquet columns hold one type
            users = [odd[detail] if k != row else not odd[detail] for k in range(len(table))]
            table = replace(
                table, users=tuple(users) if detail == "bool" else (odd[detail],) * len(table)
            )
        else:
            table = with_cell("users", odd[detail])
    data = _write_any(here, table, layout)
    path = _main_file(data, fmt)

    if name.startswith("drop"):
        _drop_column(path, fmt, "user" if "user" in name else "item", layout)
    elif name == "seconds read in another unit":
        data["timestamp_unit"] = detail
    elif name == "one column for user and item":
        if layout.naming == "custom" and fmt != "recbole":
            data["columns"] = {**data["columns"], "item": data["columns"]["user"]}
        else:
            data["columns"] = {
                "item": "user_id" if fmt == "recbole" else NAMES[layout.naming]["user"]
            }
    elif name == "wrong separator":
        raw = path.read_bytes()
        sep = {"csv": b",", "tsv": b"\t", "recbole": b"\t", "movielens-100k": b"\t"}.get(fmt, b"::")
        path.write_bytes(raw.replace(sep, b";"))
    elif name == "not UTF-8":
        raw = path.read_bytes()
        cut = raw.index(b"\n") + 1  # after the header (or the first JSON line)
        path.write_bytes(raw[:cut] + b"\xe9t\xe9" + raw[cut:])
    elif name == "UTF-16":
        path.write_bytes(path.read_bytes().decode("utf-8").encode("utf-16"))
    elif name == "header only":
        raw = path.read_bytes()
        path.write_bytes(raw[: raw.index(b"\n") + 1])
    elif name == "empty file":
        path.write_bytes(b"")
    elif name == "line with an extra field":
        lines = path.read_bytes().split(b"\n")
        header = fmt in ("csv", "tsv", "recbole", "movielens-latest")
        line = lines[row + header]
        end = b"\r" if line.endswith(b"\r") else b""
        lines[row + header] = (
            line.removesuffix(end) + (SEPARATORS.get(fmt, "\t") + "7").encode() + end
        )
        path.write_bytes(b"\n".join(lines))
    elif name == "line cut short":  # JSON cut in half; MovieLens without its last field
        lines = path.read_bytes().split(b"\n")
        line = lines[row]
        sep = {"movielens-100k": b"\t", "movielens-1m": b"::"}.get(fmt)
        lines[row] = line[: line.rindex(sep)] if sep else line[: max(1, len(line) // 2)]
        path.write_bytes(b"\n".join(lines))
    return data


def _write_any(here: Path, table: Table, layout: Layout) -> dict[str, Any]:
    """`write_table` for tables that may hold values of any type (corrupted cells)."""
    if layout.fmt != "parquet":
        return write_table(here, table, layout)
    columns = _role_columns(table, replace(layout, unit="s", fraction=False, int_spelling="plain"))
    names = NAMES[layout.naming]
    frame = pd.DataFrame({names[role]: values for role, values in columns.items()})
    for column in frame.columns:
        # a column pyarrow cannot store as one type (5 and "abc", or 10**22) is written as text
        values = [v for v in frame[column] if v is not None]
        kinds = {type(v) for v in values}
        mixed = len(kinds) > 1 and not kinds <= {int, float}
        huge = any(isinstance(v, int) and not -(2**63) <= v < 2**63 for v in values)
        if mixed or huge:
            frame[column] = frame[column].map(lambda v: v if v is None else str(v))
    path = here / "inter.parquet"
    frame.to_parquet(path, index=False)
    data: dict[str, Any] = {"format": "parquet", "path": str(path), "timestamp_unit": "s"}
    if layout.naming == "custom":
        data["columns"] = {role: names[role] for role in columns}
    return data


def _main_file(data: dict[str, Any], fmt: str) -> Path:
    path = Path(data["path"])
    if fmt == "recbole":
        return path / "data.inter"
    if fmt == "movielens-100k":
        return path / "u.data"
    if fmt == "movielens-1m":
        return path / "ratings.dat"
    if fmt == "movielens-latest":
        return path / "ratings.csv"
    return path


def _drop_column(path: Path, fmt: str, role: str, layout: Layout) -> None:
    if fmt == "parquet":
        frame = pd.read_parquet(path)
        frame.drop(columns=[NAMES[layout.naming][role]]).to_parquet(path, index=False)
    elif fmt.startswith("amazon"):
        keys = {
            "amazon-2018": {"user": ["reviewerID"], "item": ["asin"]},
            "amazon-2023": {"user": ["user_id"], "item": ["parent_asin", "asin"]},
        }[fmt][role]
        records = [json.loads(line) for line in path.read_text().splitlines() if line]
        lines = [json.dumps({k: v for k, v in r.items() if k not in keys}) for r in records]
        path.write_text("\n".join(lines) + "\n")
    else:
        sep = SEPARATORS.get(fmt, "\t")
        if fmt == "csv":  # quoted fields may hold commas: let pandas drop the column
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            frame.drop(columns=[NAMES[layout.naming][role]]).to_csv(path, index=False)
            return
        if fmt == "tsv":
            frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
            frame.drop(columns=[NAMES[layout.naming][role]]).to_csv(path, sep="\t", index=False)
            return
        position = ["user", "item"].index(role)
        if fmt == "recbole":
            header = path.read_text().splitlines()[0].split("\t")
            position = next(k for k, h in enumerate(header) if h.startswith(f"{role}_id:"))
        lines = path.read_text().splitlines()
        kept = [
            sep.join(f for k, f in enumerate(line.split(sep)) if k != position) for line in lines
        ]
        path.write_text("\n".join(kept) + "\n")


@pytest.mark.parametrize(("name", "fmt"), CORRUPTED_FORMATS)
@settings(PROPERTIES, max_examples=2)
@given(data=st.data())
def test_an_invalid_table_is_a_recarena_error_in_every_format(name, fmt, data):
    check_refused(data.draw(corrupted(name, fmt), label="case"))


@FOUND
@given(case=corrupted())
# found by the property; each ended in another exception, or loaded without a word
@example(case=("id of another type", ONE, Layout("amazon-2023"), ("list", 0)))  # TypeError
@example(case=("id of another type", ONE, Layout("parquet"), ("list", 0)))  # TypeError
@example(case=("id of another type", ONE, Layout("parquet"), ("bool", 0)))  # ids True/False
@example(case=("id of another type", ONE, Layout("parquet"), ("bytes", 0)))  # id "b'x\\xff'"
@example(case=("timestamp far in the future", ONE, Layout("amazon-2018"), (10**22, 0)))
@example(case=("rating not finite", ONE, Layout("amazon-2023"), ("nan", 0)))  # rating NaN
@example(case=("missing user id", ONE, Layout("amazon-2018"), ("", 0)))  # user ""
@example(case=("missing user id", ONE, Layout("amazon-2023"), ("None", 0)))  # user "None"
@example(case=("timestamp before 1970", ONE, Layout("movielens-100k"), (None, 0)))
@example(case=("timestamp far in the future", ONE, Layout("movielens-1m"), (4 * 10**10, 0)))
@example(case=("timestamp is text", ONE, Layout("csv", unit="iso"), ("today", 0)))  # = now
@example(case=("timestamp is text", ONE, Layout("movielens-100k"), ("1_000", 0)))  # no line
@example(case=("line with an extra field", ONE, Layout("csv"), (None, 0)))  # field dropped
@example(case=("rating is text", ONE, Layout("amazon-2023"), ("1_000", 0)))  # rating 1000
def test_the_invalid_tables_found_stay_errors(case):
    check_refused(case)


def check_refused(case: tuple[str, Table, Layout, Any]) -> None:
    name, table, layout, how = case
    with folder() as here:
        data = write_corrupted(here, name, table, layout, how)
        error = _expect_data_error(data)
    assert str(error)  # a message, never an empty one
    if isinstance(error, DataError):
        assert error.path is not None, f"the error names no file: {error}"
    if name in LOCATED:  # one bad value or line: the error says where
        assert isinstance(error, DataError) and (error.line or error.column), str(error)


# ------------------------------------------------------------------------- damaged bytes
#: Edits of a file's bytes: (kind, where, how many bytes, bytes put in); ``where`` is taken
#: modulo the file's size.
Edit = tuple[str, int, int, bytes]
EDITS = st.lists(
    st.tuples(
        st.sampled_from(["truncate", "delete", "insert", "overwrite"]),
        st.integers(0, 4096),
        st.integers(1, 12),
        st.one_of(
            st.binary(min_size=1, max_size=8),
            st.sampled_from([b",", b"\t", b"::", b'"', b"\n", b"\r", b"\x00", b"{", b"-", b"e9"]),
        ),
    ),
    min_size=1,
    max_size=3,
)


def _damaged(raw: bytes, edits: list[Edit]) -> bytes:
    for kind, where, length, junk in edits:
        start = where % (len(raw) + 1)
        if kind == "truncate":
            raw = raw[:start]
        elif kind == "delete":
            raw = raw[:start] + raw[start + length :]
        elif kind == "insert":
            raw = raw[:start] + junk + raw[start:]
        else:
            raw = raw[:start] + junk + raw[start + len(junk) :]
    return raw


@pytest.mark.parametrize("fmt", ALL_FORMATS)
@settings(PROPERTIES, max_examples=8)
@given(data=st.data())
def test_damaged_bytes_load_or_end_in_a_recarena_error(fmt, data):
    written = data.draw(written_tables(formats=(fmt,), max_rows=8), label="written")
    check_damaged(written, data.draw(EDITS, label="edits"))


@FOUND
@given(written=written_tables(max_rows=8), edits=EDITS)
@example(written=(ONE, Layout("csv"), [0]), edits=[("insert", 0, 1, b"\r")])  # csv.Error
def test_the_damaged_files_found_load_or_end_in_a_recarena_error(written, edits):
    check_damaged(written, edits)


def load_or_recarena_error(config: dict[str, Any]) -> Dataset | None:
    """The data set of ``config``, or None when loading ended in a `RecArenaError` that
    says what is wrong (a `DataError` naming its file); any other exception propagates."""
    try:
        return load(config)
    except DataError as exc:
        assert exc.path is not None, f"the error names no file: {exc}"
    except RecArenaError as exc:
        assert str(exc)
    return None


def check_damaged(written: tuple[Table, Layout, list[int]], edits: list[Edit]) -> None:
    table, layout, _ = written
    with folder() as here:
        config = write_table(here, table, layout)
        path = _main_file(config, layout.fmt)
        path.write_bytes(_damaged(path.read_bytes(), edits))
        dataset = load_or_recarena_error(config)
    if dataset is None:
        return
    # the damage left a readable file: what it holds must still be sound
    inter = dataset.interactions
    assert len(inter) > 0
    if dataset.has_timestamps:
        assert (inter["timestamp"] >= 0).all()
    if dataset.has_ratings:
        assert np.isfinite(inter["rating"].to_numpy()).all()


#: The formats whose files come from one source each (a news site, a music service, a
#: pre-split benchmark): fixed small folders, damaged at random.
DOMAIN_FORMATS = ("mind", "lastfm-hetrec", "lfm", "recbole-seq")


def write_domain_folder(fmt: str, root: Path) -> tuple[dict[str, Any], list[Path]]:
    """A small valid folder of ``fmt`` (the layouts of tests/domains); its ``[data]`` and
    the files a damage may hit."""
    if fmt == "mind":
        folder = write_mind(root / "mind")
        files = [folder / f"MINDsmall_{part}" / name for part in ("train", "dev")
                 for name in ("behaviors.tsv", "news.tsv")]  # fmt: skip
    elif fmt == "lastfm-hetrec":
        folder = write_hetrec(root / "hetrec")
        files = sorted(folder.iterdir())
    elif fmt == "lfm":
        folder = root / "lfm"
        write_lines(
            folder / "LFM-1b_LEs.txt",
            [
                "31435741\t2\t4\t4\t1385212958",
                "31435741\t21\t31\t50\t1385212340",
                "41234\t21\t31\t51\t1385200000",
            ],
        )
        write_lines(folder / "LFM-1b_artists.txt", ["2\tHelene Fischer", "21\tMotörhead"])
        write_lines(folder / "LFM-1b_tracks.txt", ["4\tAtemlos\t2", "50\tAce of Spades\t21"])
        files = sorted(folder.iterdir())
    else:
        folder = root / "seq"
        unisrec_files(folder, "Sci", {"0": list("123456"), "1": list("3414"), "2": list("565")})
        files = sorted(folder.iterdir())
    return {"format": fmt, "path": str(folder)}, files  # fmt: skip


@pytest.mark.parametrize("fmt", DOMAIN_FORMATS)
@settings(PROPERTIES, max_examples=10)
@given(which=st.integers(0, 10), edits=EDITS)
@example(which=0, edits=[("insert", 0, 1, b'"')])  # LFM-1b: ParserError (an open quote)
@example(which=0, edits=[("insert", 16, 1, b"-")])  # LFM-1b: a time before 1970 accepted
@example(which=2, edits=[("insert", 24, 1, b"9" * 20)])  # HetRec: OverflowError (user id)
def test_damaged_domain_files_load_or_end_in_a_recarena_error(fmt, which, edits):
    with folder() as here:
        config, files = write_domain_folder(fmt, here)
        assert load(config).n_interactions > 0  # the folder as written is valid
        path = files[which % len(files)]
        path.write_bytes(_damaged(path.read_bytes(), edits))
        dataset = load_or_recarena_error(config)
    if dataset is None:
        return
    assert dataset.n_interactions > 0
    if dataset.has_timestamps:
        assert (dataset.interactions["timestamp"] >= 0).all()


#: Parquet columns of every kind pyarrow writes, for the roles' columns.
PARQUET_VALUES = st.sampled_from(
    ["int", "float", "nan", "inf", "text", "none", "bool", "list", "dict", "bytes", "datetime",
     "duration", "category", "huge", "negative"]
)  # fmt: skip


def _parquet_column(kind: str, n: int, rng: np.random.Generator) -> Any:
    ints = rng.integers(1, 4, size=n)
    if kind == "int":
        return ints
    if kind == "float":
        return ints + 0.5
    if kind == "nan":
        return np.where(ints > 1, ints, np.nan)
    if kind == "inf":
        return np.where(ints > 1, ints, np.inf)
    if kind == "text":
        return [f"t{v}" for v in ints]
    if kind == "none":
        return [None if v == 1 else f"t{v}" for v in ints]
    if kind == "bool":
        return ints > 1
    if kind == "list":
        return [[int(v)] * int(v) for v in ints]
    if kind == "dict":
        return [{"a": int(v)} for v in ints]
    if kind == "bytes":
        return [bytes([int(v), 255]) for v in ints]
    if kind == "datetime":
        return pd.to_datetime(T_MIN + ints * 86_400, unit="s")
    if kind == "duration":
        return pd.to_timedelta(ints, unit="D")
    if kind == "category":
        return pd.Categorical([f"c{v}" for v in ints])
    if kind == "huge":
        return np.full(n, 2**62, dtype=np.int64) + ints
    return -ints  # negative


@PROPERTIES
@given(
    kinds=st.fixed_dictionaries(
        {"user": PARQUET_VALUES, "item": PARQUET_VALUES},
        optional={"timestamp": PARQUET_VALUES, "rating": PARQUET_VALUES},
    ),
    unit=st.sampled_from(["s", "ms", "iso"]),
    n=st.integers(1, 6),
)
@example(kinds={"user": "int", "item": "list"}, unit="s", n=1)  # TypeError: unhashable
@example(kinds={"user": "int", "item": "int", "timestamp": "bytes"}, unit="iso", n=1)
def test_a_parquet_column_of_any_type_loads_or_ends_in_a_recarena_error(kinds, unit, n):
    rng = np.random.default_rng(n)
    frame = pd.DataFrame({role: _parquet_column(kind, n, rng) for role, kind in kinds.items()})
    with folder() as here:
        path = here / "odd.parquet"
        frame.to_parquet(path, index=False)
        try:
            dataset = load({"format": "parquet", "path": str(path), "timestamp_unit": unit})
        except RecArenaError:
            return
    # accepted: then the ids are ids (text or integers) and times and ratings are sound
    for ids in (dataset.user_ids, dataset.item_ids):
        plain = [_plain(v) for v in ids]
        assert all(isinstance(v, (int, str)) and not isinstance(v, bool) for v in plain), plain
    if dataset.has_timestamps:
        assert (dataset.interactions["timestamp"] >= 0).all()
    if dataset.has_ratings:
        assert np.isfinite(dataset.interactions["rating"].to_numpy()).all()
