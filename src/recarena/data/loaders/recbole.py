"""Loader for RecBole atomic files (``NAME.inter``, ``NAME.item``, ``NAME.user``).

RecBole's atomic files are tab-separated, with a header naming each column ``field:type``::

    user_id:token   item_id:token   rating:float    timestamp:float
    196             242             3               881250949

Types: ``token`` (one categorical value, kept as text), ``token_seq`` (space-separated
tokens, read as a list of strings), ``float`` and ``float_seq`` (space-separated numbers,
read as a list of floats). Files may use Windows line endings or start with a UTF-8 BOM.

Interactions come from ``NAME.inter``: ``user_id`` and ``item_id`` by default, with optional
``timestamp`` and ``rating`` (every name can be mapped through ``columns``). Other item
fields become item table fields. RecBole's MovieLens item files (``movie_title``,
``release_year``, ``class`` or ``genre``) are turned into the standard movie fields
``title`` ("Toy Story (1995)"), ``year`` and ``genres``, so a MovieLens copy in RecBole
format reads like the GroupLens original. Other files that RecBole uses (``.kg``,
``.link``, ``.net``) are not read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping
from pathlib import Path

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
    guess_separator,
    id_column,
    numeric_column,
    split_list,
    to_epoch_seconds,
)
from recarena.data.loaders.movielens import MOVIE_TEXT_TEMPLATE, movie_table
from recarena.errors import DataError

log = logging.getLogger(__name__)

#: RecBole field types and how each is read.
RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")

#: Interaction roles and their default RecBole field names.
DEFAULT_FIELDS = {
    "user": "user_id",
    "item": "item_id",
    "timestamp": "timestamp",
    "rating": "rating",
}

# RecBole's ml-100k item file spells the title and year of movie 267 "unkonwn"; GroupLens'
# u.item has the title "unknown" and no date
_UNKNOWN_TYPO = "unkonwn"


def read_atomic_file(
    path: str | os.PathLike[str],
    *,
    encoding: str | None = "utf-8",
    seq_separator: str = " ",
    text_fields: Collection[str] = (),
) -> tuple[pd.DataFrame, DelimitedFile]:
    """Read one atomic file into a frame whose columns are the field names (types dropped).

    ``token`` fields are strings (missing where empty), ``float`` fields float64 (NaN where
    empty), ``token_seq`` lists of strings and ``float_seq`` lists of floats. Fields named
    in ``text_fields`` are kept as text whatever their type: a timestamp in nanoseconds
    (19 digits) read through float64 would lose its last digits, and may move to the next
    second.

    Returns
    -------
    The frame and the opened file (for line numbers and the file's sha256).
    """
    path = Path(path)
    source = DelimitedFile.open(
        path, separator="\t", encoding=encoding, has_header=True, quoted=False
    )
    line, header = source.header()
    guessed = guess_separator(header[0]) if len(header) == 1 else None
    if guessed not in (None, "\t"):
        raise DataError(
            f"the header {header[0]!r} is one column when split by tabs but looks separated by "
            f"{guessed!r}; RecBole atomic files are tab-separated: is this the right format?",
            path=path,
            line=line,
        )
    columns: list[Column | None] = []
    types: dict[str, str] = {}
    for raw in header:
        field, sep, kind = raw.rpartition(":")
        if not sep or not field:
            raise DataError(
                f"RecBole atomic file headers name each column 'field:type' (types: "
                f"{', '.join(RECBOLE_TYPES)}); found {raw!r}",
                path=path,
                line=line,
                column=raw,
            )
        if kind not in RECBOLE_TYPES:
            raise DataError(
                f"unknown RecBole field type {kind!r} for field {field!r}; expected one of "
                f"{', '.join(RECBOLE_TYPES)}",
                path=path,
                line=line,
                column=field,
            )
        if field in types:
            raise DataError(
                f"field {field!r} appears twice in the header", path=path, line=line, column=field
            )
        types[field] = kind
        as_float = kind == "float" and field not in text_fields
        columns.append(Column(field, "float" if as_float else "str", field, required=False))
    frame = source.read(columns, format_label="a RecBole atomic file")
    for field, kind in types.items():
        if kind == "token_seq":
            frame[field] = frame[field].map(lambda v: split_list(v, seq_separator))
        elif kind == "float_seq":
            frame[field] = _float_lists(frame[field], field, source, seq_separator)
    frame.attrs["recbole_types"] = types
    return frame, source


def read_recbole(
    path: str | os.PathLike[str],
    *,
    columns: Mapping[str, str] | None = None,
    item_columns: Mapping[str, str] | None = None,
    user_columns: Mapping[str, str] | None = None,
    encoding: str | None = "utf-8",
    timestamp_unit: TimestampUnit = "s",
    seq_separator: str = " ",
) -> RawTables:
    """Read RecBole atomic files into raw tables (see `load_recbole` for the parameters)."""
    inter_path = _find_inter_file(Path(path).expanduser())
    stem = inter_path.name[: -len(".inter")]
    folder = inter_path.parent
    files: dict[str, str] = {}
    roles = {**DEFAULT_FIELDS, **dict(columns or {})}
    unknown_roles = sorted(set(roles) - set(DEFAULT_FIELDS))
    if unknown_roles:
        raise DataError(
            f"unknown interaction role(s) {unknown_roles} in the column mapping; roles: "
            f"{list(DEFAULT_FIELDS)}",
            path=inter_path,
        )
    check_distinct_columns(roles, path=inter_path)

    frame, source = read_atomic_file(
        inter_path,
        encoding=encoding,
        seq_separator=seq_separator,
        text_fields=(roles["timestamp"],),  # to_epoch_seconds reads integers exactly
    )
    files[inter_path.name] = source.sha256
    fields = list(frame.columns)
    header_line = source.header()[0]

    def line_of_row(row: int) -> int | None:
        return source.line_of_record(row)

    interactions = pd.DataFrame(index=pd.RangeIndex(len(frame)))
    for role in ("user", "item"):
        field = find_column(
            fields, roles[role], path=inter_path, role=f"{role} id", setting=f"columns.{role}"
        )
        interactions[role] = id_column(
            frame[field],
            path=inter_path,
            column=field,
            meaning=f"{role} id",
            line_of_row=line_of_row,
        )
    for role in ("timestamp", "rating"):
        field = roles[role]
        if field not in fields:
            if columns and role in columns:
                find_column(fields, field, path=inter_path, role=role, setting=f"columns.{role}")
            continue
        if role == "timestamp":
            interactions["timestamp"] = to_epoch_seconds(
                frame[field], timestamp_unit, path=inter_path, column=field, line_of_row=line_of_row
            )
        else:
            interactions["rating"] = numeric_column(
                frame[field],
                path=inter_path,
                column=field,
                meaning="rating",
                line_of_row=line_of_row,
            ).astype(np.float32)
    ignored = [f for f in fields if f not in {roles[r] for r in DEFAULT_FIELDS}]
    if ignored:
        log.info("%s: interaction fields %s are not used", inter_path, ignored)
    if len(interactions) == 0:
        raise DataError(
            "no interactions: the file holds only its header", path=inter_path, line=header_line
        )

    items = None
    item_path = folder / f"{stem}.item"
    if item_path.is_file():
        item_frame, item_source = read_atomic_file(
            item_path, encoding=encoding, seq_separator=seq_separator
        )
        files[item_path.name] = item_source.sha256
        items = _attribute_table(item_frame, item_source, item_columns or {}, "item", roles["item"])
        if not item_columns and "movie_title" in items.columns:
            items = standardize_movie_fields(items)
    else:
        log.warning(
            "%s: no %s.item file next to it, so items have no text fields", inter_path, stem
        )

    users = None
    user_path = folder / f"{stem}.user"
    if user_path.is_file():
        user_frame, user_source = read_atomic_file(
            user_path, encoding=encoding, seq_separator=seq_separator
        )
        files[user_path.name] = user_source.sha256
        users = _attribute_table(user_frame, user_source, user_columns or {}, "user", roles["user"])
    return RawTables(interactions, items, users, files)


def load_recbole(
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    columns: Mapping[str, str] | None = None,
    item_columns: Mapping[str, str] | None = None,
    user_columns: Mapping[str, str] | None = None,
    encoding: str | None = "utf-8",
    timestamp_unit: TimestampUnit = "s",
    seq_separator: str = " ",
) -> Dataset:
    """Load a RecBole data set: ``NAME.inter`` plus optional ``NAME.item`` and ``NAME.user``.

    Parameters
    ----------
    path
        The folder holding the atomic files (``NAME`` is the folder's name, or the only
        ``.inter`` file in it), or the ``.inter`` file itself. A relative path is relative
        to the current directory.
    name
        The data set's name (default: ``NAME``).
    columns
        Interaction roles to field names, default ``{"user": "user_id", "item": "item_id",
        "timestamp": "timestamp", "rating": "rating"}``; timestamp and rating are optional
        unless named here.
    item_columns
        ``"item"`` to the id field of ``NAME.item`` (default: the interactions' item field),
        other keys to fields kept under that name, e.g. ``{"title": "movie_title"}``. When
        it names fields, only those are kept; otherwise every field is kept under its own
        name (RecBole's MovieLens fields become ``title``, ``year`` and ``genres``).
    user_columns
        The same for ``NAME.user``.
    encoding
        Text encoding (None: UTF-8 if the bytes are valid UTF-8, else latin-1).
    timestamp_unit
        Unit of the timestamp field (``s``, ``ms``, ``us``, ``ns``, or ``iso`` for date
        strings); stored as int seconds.
    seq_separator
        Separator inside ``token_seq`` and ``float_seq`` fields (RecBole's default: a space).
    """
    tables = read_recbole(
        path,
        columns=columns,
        item_columns=item_columns,
        user_columns=user_columns,
        encoding=encoding,
        timestamp_unit=timestamp_unit,
        seq_separator=seq_separator,
    )
    inter_path = _find_inter_file(Path(path).expanduser())
    dataset_name = name or inter_path.name[: -len(".inter")]
    template = (
        MOVIE_TEXT_TEMPLATE if _has_movie_fields(tables.items) else _default_template(tables.items)
    )
    info = build_info(
        format_name="recbole",
        source=inter_path.parent.resolve(),
        files=tables.files,
        default_text_template=template,
    )
    return Dataset.from_raw(
        dataset_name, tables.interactions, tables.items, tables.users, info, source=inter_path
    )


def standardize_movie_fields(items: pd.DataFrame) -> pd.DataFrame:
    """Turn RecBole's MovieLens item fields into ``title``, ``year`` and ``genres``.

    ``movie_title`` (words, or one string) and ``release_year`` give the GroupLens title
    "Toy Story (1995)"; ``class`` (ml-100k) or ``genre`` (ml-1m, ml-20m) give ``genres``.
    Other fields are kept.
    """
    titles = [
        _title_with_year(" ".join(t) if isinstance(t, list) else t, year)
        for t, year in zip(
            items["movie_title"], items.get("release_year", [None] * len(items)), strict=True
        )
    ]
    genre_field = next((f for f in ("class", "genre", "genres") if f in items.columns), None)
    genres = items[genre_field] if genre_field else [None] * len(items)
    years = items["release_year"].tolist() if "release_year" in items.columns else None
    table = movie_table(items.index, titles, genres, genre_separator=None, years=years)
    rest = items.drop(
        columns=[c for c in ("movie_title", "release_year", genre_field) if c], errors="ignore"
    )
    for field in rest.columns:
        if field not in table.columns:
            table[field] = rest[field].to_numpy()
    return table


def _title_with_year(title: object, year: object) -> str | None:
    if title is None or (isinstance(title, float) and np.isnan(title)):
        return None
    text = str(title).strip()
    if text == _UNKNOWN_TYPO:
        text = "unknown"
    year_text = _year_text(year)
    return f"{text} ({year_text})" if year_text else text


def _year_text(year: object) -> str | None:
    if year is None or (isinstance(year, float) and np.isnan(year)):
        return None
    if isinstance(year, float) and year == int(year):
        return str(int(year))
    text = " ".join(year) if isinstance(year, list) else str(year).strip()
    return None if text in ("", _UNKNOWN_TYPO) else text


def _has_movie_fields(items: pd.DataFrame | None) -> bool:
    return items is not None and {"title", "genres"} <= set(items.columns)


def _default_template(items: pd.DataFrame | None) -> str | None:
    if items is None:
        return None
    for field in ("title", "name", "movie_title", "item_name"):
        if field in items.columns:
            return f"{{{field}}}"
    return None


def _attribute_table(
    frame: pd.DataFrame,
    source: DelimitedFile,
    mapping: Mapping[str, str],
    role: str,
    default_id_field: str,
) -> pd.DataFrame:
    """An item or user table indexed by raw id, with fields renamed as ``mapping`` says."""
    fields = list(frame.columns)
    id_field = mapping.get(role, default_id_field)
    find_column(
        fields, id_field, path=source.path, role=f"{role} id", setting=f"{role}_columns.{role}"
    )
    ids = id_column(
        frame[id_field],
        path=source.path,
        column=id_field,
        meaning=f"{role} id",
        line_of_row=source.line_of_record,
    )
    renames = {key: value for key, value in mapping.items() if key != role}
    if renames:
        for key, field in renames.items():
            find_column(
                fields,
                field,
                path=source.path,
                role=f"{role} field {key!r}",
                setting=f"{role}_columns.{key}",
            )
        table = pd.DataFrame({key: frame[field].to_numpy() for key, field in renames.items()})
    else:
        table = frame.drop(columns=[id_field]).reset_index(drop=True)
    table.index = pd.Index(ids.to_numpy(), name=role)
    duplicated = table.index.duplicated()
    if duplicated.any():
        first = table.index[np.flatnonzero(duplicated)[0]]
        log.warning(
            "%s: %s id %r appears more than once; the first row is kept", source.path, role, first
        )
    return table


def _find_inter_file(path: Path) -> Path:
    """The ``.inter`` file named by ``path``: the file itself, ``FOLDER/FOLDER.inter``, or the
    only ``.inter`` file in the folder."""
    if path.is_file():
        if path.suffix != ".inter":
            raise DataError(
                "expected a RecBole .inter file or the folder holding NAME.inter, NAME.item "
                "and NAME.user",
                path=path,
            )
        return path
    if not path.is_dir():
        raise DataError(
            "folder not found; expected a RecBole folder holding NAME.inter, NAME.item and "
            "optionally NAME.user",
            path=path,
        )
    named = path / f"{path.name}.inter"
    if named.is_file():
        return named
    candidates = sorted(path.glob("*.inter"))
    if len(candidates) == 1:
        return candidates[0]
    found = sorted(p.name for p in path.iterdir())
    if candidates:
        raise DataError(
            f"several .inter files ({[p.name for p in candidates]}); name one of them as the path",
            path=path,
        )
    raise DataError(
        f"missing {path.name}.inter: a RecBole folder holds NAME.inter (required), NAME.item "
        f"and NAME.user (optional); found {found if found else 'an empty folder'}",
        path=path,
    )


def _float_lists(
    values: pd.Series, field: str, source: DelimitedFile, separator: str
) -> list[list[float]]:
    out: list[list[float]] = []
    for row, value in enumerate(values):
        parts = split_list(value, separator)
        try:
            out.append([float(p) for p in parts])
        except ValueError:
            raise DataError(
                f"cannot read {value!r} as numbers separated by {separator!r} (float_seq)",
                path=source.path,
                line=source.line_of_record(row),
                column=field,
            ) from None
    return out
