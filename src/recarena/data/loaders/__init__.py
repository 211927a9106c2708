"""Loaders for real file formats, and the registry that maps a format name to its loader.

Every loader reads raw files into a `Dataset` through `Dataset.from_raw` (raw ids kept in
their natural type, items indexed by raw item id) and records in ``dataset.info`` the
format, the source folder and the sha256 of every file it read.

The registry `FORMATS` maps the ``format`` of an experiment's ``[data]`` table to a
function ``(path, config) -> Dataset``. A new domain (Amazon reviews, MIND, Last.fm) is one
new module with such a function and one entry here, or a call to `register_format`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from recarena.config import DataConfig
from recarena.data.dataset import Dataset
from recarena.data.loaders.amazon import amazon_format, load_amazon
from recarena.data.loaders.lastfm import (
    lastfm_hetrec_format,
    lfm_format,
    load_lastfm_hetrec,
    load_lfm,
)
from recarena.data.loaders.mind import load_mind, mind_format
from recarena.data.loaders.movielens import (
    MOVIE_TEXT_TEMPLATE,
    load_movielens_1m,
    load_movielens_100k,
    load_movielens_latest,
)
from recarena.data.loaders.recbole import load_recbole, read_atomic_file
from recarena.data.loaders.recbole_seq import load_recbole_sequences, recbole_seq_format
from recarena.data.loaders.tabular import TableFormat, load_tabular
from recarena.errors import DataError

log = logging.getLogger(__name__)

#: A loader as the registry calls it: the resolved path and the whole data configuration.
FormatLoader = Callable[[Path, DataConfig], Dataset]


def _explicit(config: DataConfig, key: str) -> bool:
    """Whether ``key`` was written in the configuration rather than left at its default."""
    return key in config.model_fields_set


def _warn_unused(config: DataConfig, format_name: str, keys: tuple[str, ...]) -> None:
    unused = [key for key in keys if _explicit(config, key)]
    if unused:
        log.warning("data.%s not used by format %r", ", data.".join(unused), format_name)


_TABLE_SETTINGS = (
    "items_path", "users_path", "columns", "item_columns", "user_columns", "list_columns",
    "list_separator", "separator", "timestamp_unit",
)  # fmt: skip


def _movielens_100k(path: Path, config: DataConfig) -> Dataset:
    _warn_unused(config, "movielens-100k", _TABLE_SETTINGS)
    encoding = config.encoding if _explicit(config, "encoding") else None
    return load_movielens_100k(path, encoding=encoding)


def _movielens_1m(path: Path, config: DataConfig) -> Dataset:
    _warn_unused(config, "movielens-1m", _TABLE_SETTINGS)
    encoding = config.encoding if _explicit(config, "encoding") else None
    return load_movielens_1m(path, encoding=encoding)


def _movielens_latest(path: Path, config: DataConfig) -> Dataset:
    _warn_unused(config, "movielens-latest", _TABLE_SETTINGS)
    return load_movielens_latest(path, encoding=config.encoding)


def _recbole(path: Path, config: DataConfig) -> Dataset:
    _warn_unused(config, "recbole", ("items_path", "users_path", "list_columns", "separator"))
    return load_recbole(
        path,
        columns=config.columns,
        item_columns=config.item_columns,
        user_columns=config.user_columns,
        encoding=config.encoding,
        timestamp_unit=config.timestamp_unit,
        # RecBole separates tokens with spaces; list_separator overrides only when written
        seq_separator=config.list_separator if _explicit(config, "list_separator") else " ",
    )


def _table_loader(file_format: TableFormat) -> FormatLoader:
    def load(path: Path, config: DataConfig) -> Dataset:
        return load_tabular(
            path,
            file_format=file_format,
            items_path=config.items_path,
            users_path=config.users_path,
            columns=config.columns,
            item_columns=config.item_columns,
            user_columns=config.user_columns,
            list_columns=config.list_columns,
            list_separator=config.list_separator,
            separator=config.separator,
            encoding=config.encoding,
            timestamp_unit=config.timestamp_unit,
        )

    load.__name__ = f"_load_{file_format}"
    return load


#: Format name -> loader. Add a domain by adding one entry (or call `register_format`).
FORMATS: dict[str, FormatLoader] = {
    "movielens-100k": _movielens_100k,
    "movielens-1m": _movielens_1m,
    "movielens-latest": _movielens_latest,
    "recbole": _recbole,
    "csv": _table_loader("csv"),
    "tsv": _table_loader("tsv"),
    "parquet": _table_loader("parquet"),
    "amazon": amazon_format,
    "mind": mind_format,
    "lastfm-hetrec": lastfm_hetrec_format,
    "lfm": lfm_format,
    "recbole-seq": recbole_seq_format,
}


def register_format(name: str, loader: FormatLoader, *, replace: bool = False) -> None:
    """Add a loader for ``format = name``; an existing name needs ``replace=True``."""
    if name in FORMATS and not replace:
        raise ValueError(f"format {name!r} is already registered; pass replace=True to override")
    FORMATS[name] = loader


def get_format_loader(name: str) -> FormatLoader:
    """The loader of a format name; an unknown name raises a `DataError` listing the formats."""
    try:
        return FORMATS[name]
    except KeyError:
        raise DataError(
            f"unknown data format {name!r}; formats: {', '.join(sorted(FORMATS))}"
        ) from None


__all__ = [
    "FORMATS",
    "MOVIE_TEXT_TEMPLATE",
    "FormatLoader",
    "get_format_loader",
    "load_amazon",
    "load_lastfm_hetrec",
    "load_lfm",
    "load_mind",
    "load_movielens_100k",
    "load_movielens_1m",
    "load_movielens_latest",
    "load_recbole",
    "load_recbole_sequences",
    "load_tabular",
    "read_atomic_file",
    "register_format",
]
