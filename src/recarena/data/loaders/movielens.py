"""Loaders for the MovieLens folders as GroupLens distributes them.

Three layouts, each read from the folder you get by unzipping the official archive:

``movielens-100k`` (ml-100k.zip)
    ``u.data`` (tab: user, item, rating, timestamp), ``u.item`` (``|``, 24 fields: id, title,
    release date, video release date, IMDb URL, 19 genre flags) and optional ``u.user``
    (``|``: id, age, gender, occupation, zip code).
``movielens-1m`` (ml-1m.zip)
    ``ratings.dat`` (UserID::MovieID::Rating::Timestamp), ``movies.dat``
    (MovieID::Title::Genres, genres ``|``-separated) and optional ``users.dat``
    (UserID::Gender::Age::Occupation::Zip-code).
``movielens-latest`` (ml-latest-small.zip, ml-latest.zip, ml-20m/25m/32m.zip)
    ``ratings.csv`` (userId,movieId,rating,timestamp), ``movies.csv`` (movieId,title,genres;
    quoted CSV) and optional ``tags.csv`` (userId,movieId,tag,timestamp).

Raw ids are the MovieLens integers. Every loader gives the same item fields: ``title``, the
full title with its year as MovieLens writes it ("Toy Story (1995)"); ``year`` (nullable
integer, from the title, else from the release date); ``genres`` (list of strings). The
100k and 1M files are latin-1; copies re-saved as UTF-8 are detected and read as UTF-8.
Rating times are checked as in every format (`to_epoch_seconds`): a negative time, one more
than a year ahead, or a column that mixes units is an error naming its line.

GroupLens terms: research use, cite the data set, no redistribution. Never commit the files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from recarena.data.dataset import Dataset
from recarena.data.loaders._reading import (
    Column,
    DelimitedFile,
    RawTables,
    build_info,
    columns_from_header,
    require_files,
    split_list,
    to_epoch_seconds,
    year_from_title,
)

log = logging.getLogger(__name__)

#: Item text for movies, used when an experiment names no template.
MOVIE_TEXT_TEMPLATE = "Title: {title}. Genres: {genres}."

#: The 19 genre flags of ``u.item``, in file order.
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip

#: Occupation codes of ML-1M ``users.dat`` (from the data set's README).
ML1M_OCCUPATIONS = {
    0: "other", 1: "academic/educator", 2: "artist", 3: "clerical/admin",
    4: "college/grad student", 5: "customer service", 6: "doctor/health care",
    7: "executive/managerial", 8: "farmer", 9: "homemaker", 10: "K-12 student", 11: "lawyer",
    12: "programmer", 13: "retired", 14: "sales/marketing", 15: "scientist",
    16: "self-employed", 17: "technician/engineer", 18: "tradesman/craftsman",
    19: "unemployed", 20: "writer",
}  # fmt: skip

#: Age groups of ML-1M ``users.dat``: the ``age`` field holds the group's code.
ML1M_AGE_GROUPS = {
    1: "under 18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55", 56: "56+",
}  # fmt: skip

NO_GENRES = "(no genres listed)"

ML100K_FILES = ("u.data", "u.item")
ML1M_FILES = ("ratings.dat", "movies.dat")
LATEST_FILES = ("ratings.csv", "movies.csv")


# ------------------------------------------------------------------------------ 100k
def read_movielens_100k(
    folder: str | os.PathLike[str], *, encoding: str | None = None
) -> RawTables:
    """Read an ``ml-100k`` folder into raw tables (see `load_movielens_100k`)."""
    folder = _as_folder(folder, (*ML100K_FILES, "u.user"))
    paths = require_files(folder, ML100K_FILES, ("u.user",), format_label="MovieLens 100k")
    files: dict[str, str] = {}

    ratings = _read_headerless(
        paths["u.data"], "\t", _rating_columns("item id"), encoding=encoding, files=files,
        format_label="MovieLens 100k u.data", example="196\t242\t3\t881250949",
    )  # fmt: skip

    flag_columns = [
        Column(f"genre_{n}", "int", f"{genre} flag (0 or 1)")
        for n, genre in enumerate(ML100K_GENRES)
    ]
    raw_items = _read_headerless(
        paths["u.item"],
        "|",
        [
            Column("item", "int", "movie id"),
            Column("title", "str", "title", required=False),
            Column("release_date", "str", "release date", required=False),
            None,  # video release date: empty in every row of the official file
            Column("imdb_url", "str", "IMDb URL", required=False),
            *flag_columns,
        ],
        encoding=encoding,
        files=files,
        format_label="MovieLens 100k u.item",
        example="1|Toy Story (1995)|01-Jan-1995||http://...|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0",
    )
    flags = raw_items[[c.name for c in flag_columns]].to_numpy() > 0
    genre_names = np.array(ML100K_GENRES, dtype=object)
    release = pd.to_datetime(raw_items["release_date"], format="%d-%b-%Y", errors="coerce")
    titles = raw_items["title"].map(_clean_text)
    years = [
        year_from_title(title) if year_from_title(title) is not None else _year_of(date)
        for title, date in zip(titles, release, strict=True)
    ]
    # plain lists and arrays: Series here would be aligned on their RangeIndex, not by row
    items = pd.DataFrame(
        {
            "title": titles.tolist(),
            "year": pd.array(years, dtype="Int64"),
            "genres": [list(genre_names[row]) for row in flags],
            "release_date": [None if pd.isna(d) else d.strftime("%Y-%m-%d") for d in release],
            "imdb_url": raw_items["imdb_url"].map(_clean_text).tolist(),
        },
        index=pd.Index(raw_items["item"].to_numpy(np.int64), name="item"),
    )

    users = None
    if "u.user" in paths:
        raw_users = _read_headerless(
            paths["u.user"],
            "|",
            [
                Column("user", "int", "user id"),
                Column("age", "int", "age", required=False),
                Column("gender", "str", "gender", required=False),
                Column("occupation", "str", "occupation", required=False),
                Column("zip_code", "str", "zip code", required=False),
            ],
            encoding=encoding,
            files=files,
            format_label="MovieLens 100k u.user",
            example="1|24|M|technician|85711",
        )
        users = raw_users.set_index("user")
        users["age"] = users["age"].astype("Int64")

    return RawTables(_interactions(ratings), items, users, files)


def load_movielens_100k(
    folder: str | os.PathLike[str], *, name: str = "ml-100k", encoding: str | None = None
) -> Dataset:
    """Load the MovieLens 100k folder (``u.data``, ``u.item``, optional ``u.user``).

    Parameters
    ----------
    folder
        The unzipped ``ml-100k`` folder (or a file inside it). A relative path is relative
        to the current directory.
    name
        The data set's name.
    encoding
        Text encoding; None reads UTF-8 when the bytes are valid UTF-8, else latin-1 (the
        encoding of the official files).

    Returns
    -------
    Dataset
        Interactions with ``rating`` and ``timestamp``; items with ``title``, ``year``,
        ``genres``, ``release_date`` (ISO date) and ``imdb_url``; users with ``age``,
        ``gender``, ``occupation`` and ``zip_code``.
    """
    tables = read_movielens_100k(folder, encoding=encoding)
    return _build(name, tables, "movielens-100k", folder)


# -------------------------------------------------------------------------------- 1M
def read_movielens_1m(folder: str | os.PathLike[str], *, encoding: str | None = None) -> RawTables:
    """Read an ``ml-1m`` folder into raw tables (see `load_movielens_1m`)."""
    folder = _as_folder(folder, (*ML1M_FILES, "users.dat"))
    paths = require_files(folder, ML1M_FILES, ("users.dat",), format_label="MovieLens 1M")
    files: dict[str, str] = {}

    ratings = _read_headerless(
        paths["ratings.dat"], "::", _rating_columns("movie id"), encoding=encoding, files=files,
        format_label="MovieLens 1M ratings.dat", example="1::1193::5::978300760",
    )  # fmt: skip
    movies = _read_headerless(
        paths["movies.dat"],
        "::",
        [
            Column("item", "int", "movie id"),
            Column("title", "str", "title", required=False),
            Column("genres", "str", "genres", required=False),
        ],
        encoding=encoding,
        files=files,
        format_label="MovieLens 1M movies.dat",
        example="1::Toy Story (1995)::Animation|Children's|Comedy",
    )
    items = movie_table(movies["item"], movies["title"], movies["genres"], genre_separator="|")

    users = None
    if "users.dat" in paths:
        raw_users = _read_headerless(
            paths["users.dat"],
            "::",
            [
                Column("user", "int", "user id"),
                Column("gender", "str", "gender", required=False),
                Column("age", "int", "age group", required=False),
                Column("occupation", "int", "occupation code", required=False),
                Column("zip_code", "str", "zip code", required=False),
            ],
            encoding=encoding,
            files=files,
            format_label="MovieLens 1M users.dat",
            example="1::F::1::10::48067",
        )
        users = ml1m_user_table(
            raw_users["user"],
            raw_users["gender"],
            raw_users["age"],
            raw_users["occupation"],
            raw_users["zip_code"],
        )

    return RawTables(_interactions(ratings), items, users, files)


def load_movielens_1m(
    folder: str | os.PathLike[str], *, name: str = "ml-1m", encoding: str | None = None
) -> Dataset:
    """Load the MovieLens 1M folder (``ratings.dat``, ``movies.dat``, optional ``users.dat``).

    Parameters
    ----------
    folder
        The unzipped ``ml-1m`` folder (or a file inside it). A relative path is relative to
        the current directory.
    name
        The data set's name.
    encoding
        Text encoding; None reads UTF-8 when the bytes are valid UTF-8, else latin-1 (the
        encoding of the official files).

    Returns
    -------
    Dataset
        Interactions with ``rating`` and ``timestamp``; items with ``title``, ``year`` and
        ``genres``; users with ``gender``, ``age`` (the age-group code of the README: 1 is
        under 18, 18 is 18-24, ..., 56 is 56+), ``occupation`` (the README's label, e.g.
        "programmer") and ``zip_code``.
    """
    tables = read_movielens_1m(folder, encoding=encoding)
    return _build(name, tables, "movielens-1m", folder)


def ml1m_user_table(
    user: pd.Series,
    gender: pd.Series,
    age: pd.Series,
    occupation: pd.Series,
    zip_code: pd.Series,
) -> pd.DataFrame:
    """ML-1M user attributes with occupation codes turned into their README labels."""
    codes = pd.to_numeric(occupation, errors="coerce").astype("Int64")
    return pd.DataFrame(
        {
            "gender": gender.to_numpy(object),
            "age": pd.to_numeric(age, errors="coerce").astype("Int64").array,
            "occupation": [
                None if pd.isna(c) else ML1M_OCCUPATIONS.get(int(c), str(c)) for c in codes
            ],
            "zip_code": zip_code.to_numpy(object),
        },
        index=pd.Index(user.to_numpy(), name="user"),
    )


# ---------------------------------------------------------------------------- latest
def read_movielens_latest(
    folder: str | os.PathLike[str], *, encoding: str | None = "utf-8", include_tags: bool = True
) -> RawTables:
    """Read an ``ml-latest`` style folder into raw tables (see `load_movielens_latest`)."""
    folder = _as_folder(folder, (*LATEST_FILES, "tags.csv"))
    paths = require_files(folder, LATEST_FILES, ("tags.csv",), format_label="MovieLens latest")
    files: dict[str, str] = {}

    ratings = _read_headed_csv(
        paths["ratings.csv"],
        [
            Column("userId", "int", "user id"),
            Column("movieId", "int", "movie id"),
            Column("rating", "float", "rating"),
            Column("timestamp", "int", "timestamp (seconds)"),
        ],
        encoding=encoding,
        format_label="MovieLens latest ratings.csv",
        files=files,
    ).rename(columns={"userId": "user", "movieId": "item"})

    movies = _read_headed_csv(
        paths["movies.csv"],
        [
            Column("movieId", "int", "movie id"),
            Column("title", "str", "title", required=False),
            Column("genres", "str", "genres", required=False),
        ],
        encoding=encoding,
        format_label="MovieLens latest movies.csv",
        files=files,
    )
    items = movie_table(movies["movieId"], movies["title"], movies["genres"], genre_separator="|")

    if include_tags and "tags.csv" in paths:
        tags = _read_headed_csv(
            paths["tags.csv"],
            [
                Column("userId", "int", "user id"),
                Column("movieId", "int", "movie id"),
                Column("tag", "str", "tag", required=False),
            ],
            encoding=encoding,
            format_label="MovieLens latest tags.csv",
            files=files,
        )
        tag_lists = _tags_by_movie(tags["movieId"], tags["tag"])
        items["tags"] = [tag_lists.get(movie, []) for movie in items.index]
    return RawTables(_interactions(ratings), items, None, files)


def load_movielens_latest(
    folder: str | os.PathLike[str],
    *,
    name: str | None = None,
    encoding: str | None = "utf-8",
    include_tags: bool = True,
) -> Dataset:
    """Load a MovieLens "latest" folder (ml-latest-small, ml-latest, ml-20m, ml-25m, ml-32m).

    Parameters
    ----------
    folder
        The unzipped folder holding ``ratings.csv`` and ``movies.csv`` (or a file inside it).
        A relative path is relative to the current directory.
    name
        The data set's name (default: the folder's name).
    encoding
        Text encoding of the CSV files (UTF-8 for every release).
    include_tags
        Read ``tags.csv`` when present into an item field ``tags``: each movie's distinct
        tags, most used first.

    Returns
    -------
    Dataset
        Interactions with ``rating`` and ``timestamp``; items with ``title``, ``year``,
        ``genres`` ("(no genres listed)" gives an empty list) and optionally ``tags``.
    """
    tables = read_movielens_latest(folder, encoding=encoding, include_tags=include_tags)
    return _build(name or _folder_name(folder), tables, "movielens-latest", folder)


# ---------------------------------------------------------------------------- shared
def movie_table(
    movie_ids: pd.Series | Sequence[object],
    titles: pd.Series | Sequence[object],
    genres: pd.Series | Sequence[object],
    *,
    genre_separator: str | None,
    years: Sequence[object] | None = None,
) -> pd.DataFrame:
    """The standard movie item table: ``title``, ``year`` (Int64) and ``genres`` (lists).

    ``years`` overrides the year read from the title (sources that store it apart).
    """
    clean_titles = [_clean_text(t) for t in titles]
    if years is None:
        found_years: list[int | None] = [year_from_title(t) for t in clean_titles]
    else:
        found_years = [
            _as_year(y) if _as_year(y) is not None else year_from_title(t)
            for y, t in zip(years, clean_titles, strict=True)
        ]
    return pd.DataFrame(
        {
            "title": clean_titles,
            "year": pd.array(found_years, dtype="Int64"),
            "genres": [split_list(g, genre_separator, drop=(NO_GENRES,)) for g in genres],
        },
        index=pd.Index(list(movie_ids), name="item"),
    )


def _rating_columns(item_description: str) -> list[Column | None]:
    """The four columns of a headerless MovieLens ratings file: user, item, rating, time."""
    return [
        Column("user", "int", "user id"),
        Column("item", "int", item_description),
        Column("rating", "float", "rating"),
        Column("timestamp", "int", "timestamp (seconds)"),
    ]


def _read_headerless(
    path: Path,
    separator: str,
    columns: list[Column | None],
    *,
    encoding: str | None,
    files: dict[str, str],
    format_label: str,
    example: str,
) -> pd.DataFrame:
    """Read one headerless, unquoted MovieLens file; record its sha256 in ``files``."""
    source = DelimitedFile.open(
        path, separator=separator, encoding=encoding, has_header=False, quoted=False
    )
    frame = source.read(columns, format_label=format_label, example=example)
    files[path.name] = source.sha256
    return _checked_times(frame, source)


def _read_headed_csv(
    path: Path,
    wanted: list[Column],
    *,
    encoding: str | None,
    format_label: str,
    files: dict[str, str],
) -> pd.DataFrame:
    source = DelimitedFile.open(
        path, separator=",", encoding=encoding, has_header=True, quoted=True
    )
    line, header = source.header()
    columns = columns_from_header(
        header, wanted, path=path, line=line, separator=",", format_label=format_label
    )
    frame = source.read(columns, format_label=format_label)
    files[path.name] = source.sha256
    return _checked_times(frame, source)


def _checked_times(frame: pd.DataFrame, source: DelimitedFile) -> pd.DataFrame:
    """Check a ratings file's times (seconds) are plausible dates (`to_epoch_seconds`).

    A negative time, one far in the future or a column that mixes units is an error naming
    its line, as in every other format; MovieLens times are seconds since 1970.
    """
    if "timestamp" in frame.columns:
        frame["timestamp"] = to_epoch_seconds(
            frame["timestamp"],
            "s",
            path=source.path,
            column="timestamp",
            line_of_row=source.line_of_record,
        )
    return frame


def _tags_by_movie(movies: pd.Series, tags: pd.Series) -> dict[int, list[str]]:
    """Each movie's distinct tags (case-insensitive), most used first, then first used first."""
    frame = pd.DataFrame({"movie": movies.to_numpy(), "tag": tags.map(_clean_text).to_numpy()})
    frame = frame.dropna(subset=["tag"])
    frame["key"] = frame["tag"].str.lower()
    frame["order"] = np.arange(len(frame))
    grouped = (
        frame.groupby(["movie", "key"], sort=False)
        .agg(tag=("tag", "first"), count=("tag", "size"), first=("order", "min"))
        .reset_index()
        .sort_values(["movie", "count", "first"], ascending=[True, False, True])
    )
    return {int(movie): list(group["tag"]) for movie, group in grouped.groupby("movie", sort=False)}


def _interactions(ratings: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user": ratings["user"].to_numpy(np.int64),
            "item": ratings["item"].to_numpy(np.int64),
            "timestamp": ratings["timestamp"].to_numpy(np.int64),
            "rating": ratings["rating"].to_numpy(np.float32),
        }
    )


def _build(
    name: str, tables: RawTables, format_name: str, folder: str | os.PathLike[str]
) -> Dataset:
    info = build_info(
        format_name=format_name,
        source=Path(folder).resolve(),
        files=tables.files,
        default_text_template=MOVIE_TEXT_TEMPLATE,
    )
    log.info("%s: %d ratings read from %s", name, len(tables.interactions), folder)
    return Dataset.from_raw(
        name, tables.interactions, tables.items, tables.users, info, source=folder
    )


def _as_folder(path: str | os.PathLike[str], known_files: Sequence[str]) -> Path:
    """The folder to read: ``path`` itself, or its parent when it names one of the files."""
    path = Path(path).expanduser()
    if path.is_file() and path.name in known_files:
        return path.parent
    return path


def _folder_name(path: str | os.PathLike[str]) -> str:
    path = Path(path).expanduser()
    return (path.parent if path.is_file() else path).resolve().name


def _clean_text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    text = str(value).strip()
    return text or None


def _as_year(value: object) -> int | None:
    try:
        year = int(float(str(value).strip()))
    except (TypeError, ValueError):
        return None
    return year if 1000 <= year <= 9999 else None


def _year_of(date: pd.Timestamp) -> int | None:
    return None if pd.isna(date) else int(date.year)
