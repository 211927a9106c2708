"""Loader for any CSV, TSV or Parquet interaction file, with a column mapping.

The interactions file needs a user and an item column; a timestamp and a rating column are
optional. Columns are found by the mapping given (``columns = {user = "customer", ...}``)
or, when a role is not mapped, by the usual names (case-insensitive):

===========  ==========================================
role         names tried
===========  ==========================================
user         user, user_id, userid
item         item, item_id, itemid, movieid, movie_id
timestamp    timestamp
rating       rating
===========  ==========================================

Item text comes from a separate item file (``items_path``) or, for one denormalized file
that repeats the item's fields on every row, from the interactions file itself (name the
fields in ``item_columns``). The same holds for user attributes.

Timestamps are stored as int seconds: ``timestamp_unit`` says whether the column holds
seconds, milliseconds, microseconds, nanoseconds or ISO 8601 strings ("2021-03-04" or
"2021-03-04T10:00:00+01:00"; times without an offset are UTC).
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from recarena.data.dataset import Dataset
from recarena.data.loaders._reading import (
    Column,
    DelimitedFile,
    RawTables,
    TimestampUnit,
    build_info,
    check_distinct_columns,
    find_column,
    guess_column,
    guess_separator,
    id_column,
    infer_field_type,
    numeric_column,
    read_bytes,
    sha256_bytes,
    split_list,
    to_epoch_seconds,
)
from recarena.data.loaders.movielens import MOVIE_TEXT_TEMPLATE
from recarena.errors import DataError

log = logging.getLogger(__name__)

TableFormat = Literal["csv", "tsv", "parquet"]

#: Column names tried, case-insensitively, for an interaction role that is not mapped.
GUESSED_COLUMNS: dict[str, tuple[str, ...]] = {
    "user": ("user", "user_id", "userid"),
    "item": ("item", "item_id", "itemid", "movieid", "movie_id"),
    "timestamp": ("timestamp",),
    "rating": ("rating",),
}

_DEFAULT_SEPARATORS = {"csv": ",", "tsv": "\t"}


@dataclass
class _Table:
    """One file read with every column kept, plus how to name a row's line in errors."""

    path: Path
    frame: pd.DataFrame
    sha256: str
    line_of_row: Callable[[int], int | None] | None


def read_tabular(
    path: str | os.PathLike[str],
    *,
    file_format: TableFormat = "csv",
    items_path: str | os.PathLike[str] | None = None,
    users_path: str | os.PathLike[str] | None = None,
    columns: Mapping[str, str] | None = None,
    item_columns: Mapping[str, str] | None = None,
    user_columns: Mapping[str, str] | None = None,
    list_columns: Sequence[str] = (),
    list_separator: str = "|",
    separator: str | None = None,
    encoding: str | None = "utf-8",
    timestamp_unit: TimestampUnit = "s",
) -> RawTables:
    """Read interaction, item and user files into raw tables (see `load_tabular`)."""
    if file_format not in ("csv", "tsv", "parquet"):
        raise DataError(f"unknown table format {file_format!r}; expected csv, tsv or parquet")
    columns = dict(columns or {})
    unknown_roles = sorted(set(columns) - set(GUESSED_COLUMNS))
    if unknown_roles:
        raise DataError(
            f"unknown interaction role(s) {unknown_roles} in data.columns; roles: "
            f"{list(GUESSED_COLUMNS)} (item text goes in data.item_columns)"
        )
    sep = separator or _DEFAULT_SEPARATORS.get(file_format, ",")
    inter = _read_table(Path(path).expanduser(), file_format, sep, encoding, min_columns=2)
    files = {inter.path.name: inter.sha256}
    frame = inter.frame
    found = list(frame.columns)
    if len(frame) == 0:
        raise DataError("no interactions: the file holds only its header", path=inter.path)

    resolved: dict[str, str] = {}
    for role, candidates in GUESSED_COLUMNS.items():
        if role in columns:
            resolved[role] = find_column(
                found, columns[role], path=inter.path, role=role, setting=f"data.columns.{role}"
            )
            continue
        guessed = guess_column(found, candidates)
        if guessed is not None:
            resolved[role] = guessed
        elif role in ("user", "item"):
            raise DataError(
                f"no {role} column: name it with data.columns.{role} (tried "
                f"{list(candidates)}); columns found: {found}",
                path=inter.path,
            )
    check_distinct_columns(resolved, path=inter.path)
    log.info("%s: columns used %s", inter.path, resolved)

    interactions = pd.DataFrame(index=pd.RangeIndex(len(frame)))
    for role in ("user", "item"):
        interactions[role] = id_column(
            frame[resolved[role]],
            path=inter.path,
            column=resolved[role],
            meaning=f"{role} id",
            line_of_row=inter.line_of_row,
        )
    if "timestamp" in resolved:
        interactions["timestamp"] = to_epoch_seconds(
            frame[resolved["timestamp"]],
            timestamp_unit,
            path=inter.path,
            column=resolved["timestamp"],
            line_of_row=inter.line_of_row,
        )
    if "rating" in resolved:
        interactions["rating"] = numeric_column(
            frame[resolved["rating"]],
            path=inter.path,
            column=resolved["rating"],
            meaning="rating",
            line_of_row=inter.line_of_row,
        ).astype(np.float32)

    items = _attributes(
        "item",
        explicit_path=items_path,
        mapping=dict(item_columns or {}),
        interactions=inter,
        id_in_interactions=resolved["item"],
        file_format=file_format,
        separator=sep,
        encoding=encoding,
        list_columns=list_columns,
        list_separator=list_separator,
        files=files,
    )
    users = _attributes(
        "user",
        explicit_path=users_path,
        mapping=dict(user_columns or {}),
        interactions=inter,
        id_in_interactions=resolved["user"],
        file_format=file_format,
        separator=sep,
        encoding=encoding,
        list_columns=(),
        list_separator=list_separator,
        files=files,
    )
    if items is None:
        log.warning("%s: no item file or item fields given, so items have no text", inter.path)
    return RawTables(interactions, items, users, files)


def load_tabular(
    path: str | os.PathLike[str],
    *,
    file_format: TableFormat = "csv",
    name: str | None = None,
    items_path: str | os.PathLike[str] | None = None,
    users_path: str | os.PathLike[str] | None = None,
    columns: Mapping[str, str] | None = None,
    item_columns: Mapping[str, str] | None = None,
    user_columns: Mapping[str, str] | None = None,
    list_columns: Sequence[str] = (),
    list_separator: str = "|",
    separator: str | None = None,
    encoding: str | None = "utf-8",
    timestamp_unit: TimestampUnit = "s",
) -> Dataset:
    """Load interactions (and optional item and user tables) from CSV, TSV or Parquet files.

    Parameters
    ----------
    path
        The interactions file. Relative paths (here and below) are relative to the current
        directory.
    file_format
        ``csv``, ``tsv`` or ``parquet``; item and user files share it.
    name
        The data set's name (default: the file's name without its suffix).
    items_path, users_path
        Item and user attribute files, one row per id.
    columns
        Interaction roles (``user``, ``item``, ``timestamp``, ``rating``) to column names;
        unmapped roles are found by their usual names (see the module's docstring).
    item_columns
        ``"item"`` to the item file's id column (default: the interactions' item column
        name, or a usual item name), other keys to the columns kept as fields under that
        name, e.g. ``{"title": "product_name"}``. When it names fields only those are kept;
        otherwise every column of the item file is kept under its own name. Without
        ``items_path``, named fields are read from the interactions file (first row of each
        item).
    user_columns
        The same for users.
    list_columns
        Item fields that hold several values (genres, categories), split on
        ``list_separator``. Parquet list columns are lists already.
    separator
        Field separator of CSV/TSV files (default ``,`` for csv and a tab for tsv); several
        characters such as ``::`` are allowed.
    encoding
        Text encoding of CSV/TSV files (None: UTF-8 when valid, else latin-1).
    timestamp_unit
        ``s``, ``ms``, ``us``, ``ns`` or ``iso``; stored as int seconds.
    """
    tables = read_tabular(
        path,
        file_format=file_format,
        items_path=items_path,
        users_path=users_path,
        columns=columns,
        item_columns=item_columns,
        user_columns=user_columns,
        list_columns=list_columns,
        list_separator=list_separator,
        separator=separator,
        encoding=encoding,
        timestamp_unit=timestamp_unit,
    )
    source = Path(path).expanduser()
    info = build_info(
        format_name=file_format,
        source=source.resolve(),
        files=tables.files,
        default_text_template=_default_template(tables.items),
    )
    return Dataset.from_raw(
        name or source.name.split(".")[0],
        tables.interactions,
        tables.items,
        tables.users,
        info,
        source=source,
    )


def _read_table(
    path: Path, file_format: str, separator: str, encoding: str | None, *, min_columns: int
) -> _Table:
    if file_format == "parquet":
        raw = read_bytes(path)
        try:
            frame = pd.read_parquet(io.BytesIO(raw))
        except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
            raise DataError(f"cannot read the file as Parquet: {exc}", path=path) from None
        frame.columns = [str(c) for c in frame.columns]
        if len(frame.columns) < min_columns:
            raise DataError(
                f"expected at least {min_columns} columns, found {list(frame.columns)}", path=path
            )
        return _Table(path, frame.reset_index(drop=True), sha256_bytes(raw), None)

    source = DelimitedFile.open(
        path, separator=separator, encoding=encoding, has_header=True, quoted=True
    )
    line, header = source.header()
    if len(header) < min_columns:
        guessed = guess_separator(header[0]) if header else None
        hint = f"; the line looks separated by {guessed!r}: set data.separator" if guessed else ""
        raise DataError(
            f"expected at least {min_columns} columns separated by {separator!r}, found "
            f"{len(header)}: {header[0]!r}{hint}; is this the right format?",
            path=path,
            line=line,
        )
    names = [name or f"_column{n}" for n, name in enumerate(header)]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataError(
            f"column name(s) {duplicates} appear more than once in the header", path=path, line=line
        )
    frame = source.read(
        [Column(name, "str", name, required=False) for name in names],
        format_label=f"a {'TSV' if separator == chr(9) else 'CSV'} file with a header",
    )
    return _Table(path, frame, source.sha256, source.line_of_record)


def _attributes(
    role: str,
    *,
    explicit_path: str | os.PathLike[str] | None,
    mapping: dict[str, str],
    interactions: _Table,
    id_in_interactions: str,
    file_format: str,
    separator: str,
    encoding: str | None,
    list_columns: Sequence[str],
    list_separator: str,
    files: dict[str, str],
) -> pd.DataFrame | None:
    """The item or user table indexed by raw id, or None when none is given."""
    fields = {key: value for key, value in mapping.items() if key != role}
    setting = f"data.{role}_columns"
    if explicit_path is not None:
        table = _read_table(
            Path(explicit_path).expanduser(), file_format, separator, encoding, min_columns=1
        )
        files[table.path.name] = table.sha256
    elif fields:
        table = interactions
    else:
        if list_columns:
            raise DataError(
                f"list_columns {list(list_columns)} name item fields, but no item file "
                "(data.items_path) or item fields (data.item_columns) are given"
            )
        return None
    found = list(table.frame.columns)
    if role in mapping:
        id_name = find_column(
            found, mapping[role], path=table.path, role=f"{role} id", setting=f"{setting}.{role}"
        )
    else:
        id_name = (
            id_in_interactions
            if id_in_interactions in found
            else guess_column(found, GUESSED_COLUMNS[role])
        )
        if id_name is None:
            raise DataError(
                f"no {role} id column: name it with {setting}.{role}; columns found: {found}",
                path=table.path,
            )
    ids = id_column(
        table.frame[id_name],
        path=table.path,
        column=id_name,
        meaning=f"{role} id",
        line_of_row=table.line_of_row,
    )
    if fields:
        for key, column in fields.items():
            find_column(
                found,
                column,
                path=table.path,
                role=f"{role} field {key!r}",
                setting=f"{setting}.{key}",
            )
        out = pd.DataFrame({key: table.frame[column].to_numpy() for key, column in fields.items()})
    else:
        out = table.frame.drop(columns=[id_name]).reset_index(drop=True)
    out.index = pd.Index(ids.to_numpy(), name=role)
    out = out[~out.index.duplicated(keep="first")]
    missing_lists = [c for c in list_columns if c not in out.columns]
    if missing_lists:
        raise DataError(
            f"list_columns names field(s) {missing_lists} that the {role} table does not "
            f"have; fields: {list(out.columns)}",
            path=table.path,
        )
    for column in out.columns:
        values = out[column]
        if column in list_columns:
            out[column] = values.map(lambda v: split_list(v, list_separator))
        elif values.map(lambda v: isinstance(v, (list, tuple, np.ndarray))).any():
            out[column] = values.map(lambda v: split_list(v, None))
        else:
            out[column] = infer_field_type(values)
    return out


def _default_template(items: pd.DataFrame | None) -> str | None:
    if items is None:
        return None
    fields = set(items.columns)
    if {"title", "genres"} <= fields:
        return MOVIE_TEXT_TEMPLATE
    for field in ("title", "name", "item_name", "product_name"):
        if field in fields:
            return f"{{{field}}}"
    return None
