"""Loader for Amazon product reviews (McAuley lab releases 2014, 2018 and 2023).

Each category comes as two JSON-lines files, plain or compressed (``.json``, ``.jsonl``,
``.json.gz``, ``.jsonl.gz``; ``.bz2`` and ``.xz`` work too):

reviews (2018: ``All_Beauty_5.json.gz``; 2023: ``All_Beauty.jsonl``)
    One review per line. 2018 and 2014: ``reviewerID``, ``asin``, ``overall`` (1-5),
    ``unixReviewTime`` (seconds; ``reviewTime`` "09 13, 2009" when it is missing),
    ``reviewText``, ``summary``, ``verified``... 2023: ``user_id``, ``parent_asin`` (the
    product; ``asin`` is one of its variants), ``rating``, ``timestamp`` in *milliseconds*,
    ``text``, ``title``... The release is recognised from the first review's fields.
metadata (``meta_All_Beauty.json.gz``, ``meta_All_Beauty.jsonl``)
    One product per line. 2018: ``asin``, ``title``, ``brand``, ``category`` (list),
    ``description`` (list of strings), ``feature`` (list), ``main_cat``. 2023:
    ``parent_asin``, ``title``, ``store``, ``categories``, ``description``, ``features``,
    ``main_category``, ``details``. The 2014 metadata (and a few 2018 files) hold Python
    dict literals rather than JSON; those lines are read with `ast.literal_eval` (safe: it
    evaluates literals only). A line that is neither gives a `DataError` naming the line.

Reading streams: the reviews file is parsed line by line and only four compact columns are
kept (user and item as integer codes into one table of distinct ids, rating as float32,
timestamp as int64), with the rating threshold and the earliest date applied while reading;
the metadata file is then read in a second pass keeping only the products that occur in the
kept reviews. Memory grows with the result, not with the files: review texts are never kept.

Each review is checked as it is read, and a problem is a `DataError` naming its line: user
and product ids are text (an integer id is read as its text, so ``5`` and ``"5"`` are one
id; a missing id, ``null``, a list or a mapping is an error), ratings are finite numbers,
and review times are plausible dates (from 1971 to a year from now: a 2023 time in seconds
read as milliseconds, or a time in the year 50000, is refused).

Items get ``title``, ``brand`` (the 2023 ``store``), ``categories`` (list), ``description``,
``features`` (list) and ``main_category``; HTML tags and entities are removed and long
fields cut at a word (``max_text_chars``). Products with reviews but no metadata line keep
empty fields: ``info["text_coverage"]`` is the share of items that have metadata.
"""

from __future__ import annotations

import html
import logging
import math
import os
import re
import time
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from recarena.config import DataConfig
from recarena.data.dataset import Dataset
from recarena.data.loaders._reading import (
    EARLIEST_TIMESTAMP,
    FUTURE_MARGIN_SECONDS,
    MISSING_MARKERS,
    build_info,
)
from recarena.data.loaders._streaming import (
    COMPRESSED_SUFFIXES,
    JSON_ERRORS,
    JSON_PARSER,
    StreamedFile,
    json_loads,
    loader_options,
    parse_json_line,
    warn_unused,
)
from recarena.errors import DataError

log = logging.getLogger(__name__)

AmazonRelease = Literal["2018", "2023"]

#: The item text an experiment uses unless it sets ``data.text_template``.
AMAZON_TEXT_TEMPLATE = (
    "Title: {title}. Brand: {brand}. Categories: {categories}. Description: {description}."
)

#: Review fields of each release: user, item, rating, timestamp, timestamp unit divisor.
_REVIEW_FIELDS: dict[str, tuple[str, str, str, str, int]] = {
    "2018": ("reviewerID", "asin", "overall", "unixReviewTime", 1),
    "2023": ("user_id", "parent_asin", "rating", "timestamp", 1000),
}
_JSON_SUFFIXES = (".json", ".jsonl")
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")
# where a metadata line names its product: "asin": "X" / 'asin': 'X' (2014 literals)
_META_ID = re.compile(rb"""["'](?:parent_asin|asin)["']\s*:\s*["']([^"']+)["']""")
_MAX_LIST = 20

#: The item fields, and the list-valued ones (empty lists for products without metadata).
ITEM_FIELDS = ("title", "brand", "categories", "description", "features", "main_category")
_LIST_FIELDS = ("categories", "features")


@dataclass
class AmazonReviews:
    """What the streaming pass over a reviews file keeps.

    ``user_codes``/``item_codes`` index ``user_ids``/``item_ids`` (raw ids in order of first
    appearance); ``ratings`` and ``timestamps`` (seconds) are aligned with them.
    """

    release: AmazonRelease
    user_ids: list[str]
    item_ids: list[str]
    user_codes: np.ndarray
    item_codes: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray
    sha256: str
    lines: int
    skipped: dict[str, int] = field(default_factory=dict)

    def interactions(self) -> pd.DataFrame:
        """Raw-id interactions; ids as categoricals so the frame stays compact."""
        return pd.DataFrame(
            {
                "user": pd.Categorical.from_codes(
                    self.user_codes, categories=pd.Index(self.user_ids, dtype=object)
                ),
                "item": pd.Categorical.from_codes(
                    self.item_codes, categories=pd.Index(self.item_ids, dtype=object)
                ),
                "timestamp": self.timestamps,
                "rating": self.ratings,
            }
        )


def read_amazon_reviews(
    path: str | os.PathLike[str],
    *,
    min_rating: float | None = None,
    min_timestamp: int | None = None,
    release: AmazonRelease | None = None,
) -> AmazonReviews:
    """Stream a reviews file into compact columns (see the module docstring).

    Parameters
    ----------
    min_rating
        Skip reviews rated below this while reading.
    min_timestamp
        Skip reviews older than this (seconds since the epoch).
    release
        ``"2018"`` (also the 2014 layout) or ``"2023"``; None recognises it from the first
        review.
    """
    source = StreamedFile(Path(path).expanduser())
    users: dict[str, int] = {}
    items: dict[str, int] = {}
    user_codes, item_codes = array("i"), array("i")
    ratings, times = array("f"), array("q")
    skipped = {"below_min_rating": 0, "before_min_timestamp": 0, "blank_lines": 0}
    keys: tuple[str, str, str, str, int] | None = None
    user_key = item_key = rating_key = time_key = ""
    divisor = 1
    if release is not None:
        keys = _REVIEW_FIELDS[release]
        user_key, item_key, rating_key, time_key, divisor = keys
    lines = 0
    latest = time.time() + FUTURE_MARGIN_SECONDS
    loads = json_loads
    add_user, add_item = user_codes.append, item_codes.append
    add_rating, add_time = ratings.append, times.append
    for number, line in source.lines():
        lines = number
        if not line or line.isspace():
            skipped["blank_lines"] += 1
            continue
        try:
            record = loads(line)
        except JSON_ERRORS:
            record = None
        if type(record) is not dict:
            record = parse_json_line(line, source.path, number)  # explains the problem
        if keys is None:
            release = _release_of(record, source.path, number)
            keys = _REVIEW_FIELDS[release]
            user_key, item_key, rating_key, time_key, divisor = keys
        try:
            user = record[user_key]
            item = record.get(item_key)
            if item is None:  # a 2023 review without parent_asin: the product is its asin
                item = record["asin"]
            rating = float(_plain_number(record[rating_key]))
            raw_time = record.get(time_key)
            stamp = (
                int(_plain_number(raw_time)) // divisor
                if raw_time is not None
                else _review_time(record, source.path, number)
            )
        except KeyError as exc:
            raise DataError(
                f"the review has no {exc.args[0]!r} field; Amazon {release} reviews have "
                f"{user_key!r}, {item_key!r}, {rating_key!r} and {time_key!r}",
                path=source.path,
                line=number,
                column=str(exc.args[0]),
            ) from None
        except (TypeError, ValueError, OverflowError) as exc:
            raise DataError(
                f"cannot read the rating or time of the review: {exc}",
                path=source.path,
                line=number,
            ) from None
        if not math.isfinite(rating):
            raise DataError(
                f"cannot read {record[rating_key]!r} as the rating: expected a finite number",
                path=source.path,
                line=number,
                column=rating_key,
            )
        if not EARLIEST_TIMESTAMP <= stamp <= latest:
            raise _implausible_time(raw_time, stamp, divisor, source.path, number, time_key)
        if type(user) is not str:
            user = _review_id(user, user_key, source.path, number)
        if type(item) is not str:
            item = _review_id(item, item_key, source.path, number)
        if min_rating is not None and rating < min_rating:
            skipped["below_min_rating"] += 1
            continue
        if min_timestamp is not None and stamp < min_timestamp:
            skipped["before_min_timestamp"] += 1
            continue
        code = users.get(user)
        if code is None:  # a new id: checked once, not on every review
            user = _review_id(user, user_key, source.path, number)
            code = users.get(user)
            if code is None:
                code = users[user] = len(users)
        add_user(code)
        code = items.get(item)
        if code is None:
            item = _review_id(item, item_key, source.path, number)
            code = items.get(item)
            if code is None:
                code = items[item] = len(items)
        add_item(code)
        add_rating(rating)
        add_time(stamp)
    if keys is None:
        raise DataError("no reviews: the file is empty", path=source.path)
    assert release is not None and source.sha256 is not None
    return AmazonReviews(
        release=release,
        user_ids=[str(u) for u in users],
        item_ids=[str(i) for i in items],
        user_codes=np.frombuffer(user_codes, dtype=np.int32),
        item_codes=np.frombuffer(item_codes, dtype=np.int32),
        ratings=np.frombuffer(ratings, dtype=np.float32),
        timestamps=np.frombuffer(times, dtype=np.int64),
        sha256=source.sha256,
        lines=lines,
        skipped={k: v for k, v in skipped.items() if v},
    )


def read_amazon_metadata(
    path: str | os.PathLike[str],
    wanted: Mapping[str, Any] | set[str],
    *,
    max_text_chars: int = 1000,
) -> tuple[pd.DataFrame, str]:
    """Read the products of ``wanted`` from a metadata file (2014, 2018 or 2023 layout).

    Returns the item table (indexed by the raw product id, one row per product found; the
    first line of a product that appears twice wins) and the file's sha256.
    """
    source = StreamedFile(Path(path).expanduser())
    rows: dict[str, dict[str, Any]] = {}
    for number, line in source.lines():
        if not line or line.isspace():
            continue
        named = _META_ID.findall(line)
        if named and not any(n.decode("utf-8", "replace") in wanted for n in named):
            continue  # cheap skip: no product of interest is named on this line
        record = parse_json_line(line, source.path, number, python_literals=True)
        product = record.get("parent_asin") or record.get("asin")
        if product is None:
            raise DataError(
                "the metadata line has no 'parent_asin' (2023) or 'asin' (2014, 2018) field",
                path=source.path,
                line=number,
            )
        product = str(product)
        if product in wanted and product not in rows:
            rows[product] = _item_fields(record, max_text_chars)
    assert source.sha256 is not None
    table = pd.DataFrame.from_dict(rows, orient="index", columns=list(ITEM_FIELDS))
    table.index = pd.Index(table.index, dtype=object, name="item")
    return table, source.sha256


def load_amazon(
    path: str | os.PathLike[str],
    meta_path: str | os.PathLike[str] | None = None,
    *,
    name: str | None = None,
    min_rating: float | None = None,
    min_timestamp: int | None = None,
    max_text_chars: int = 1000,
    release: AmazonRelease | None = None,
) -> Dataset:
    """Load one Amazon category: reviews as interactions, metadata as item text.

    Parameters
    ----------
    path
        The reviews file, or a folder holding exactly one reviews file (a JSON-lines file
        whose name does not start with ``meta_``). Relative paths are relative to the
        current directory.
    meta_path
        The metadata file. None looks next to the reviews for ``meta_<Category>`` with any
        JSON-lines suffix (``All_Beauty_5.json.gz`` goes with ``meta_All_Beauty.json.gz``);
        without one, items have no text (a warning says so).
    name
        The data set's name (default: the reviews file's name without suffixes).
    min_rating
        Keep reviews rated at least this, applied while reading (the same result as the
        ``rating_threshold`` preprocessing step, with less memory).
    min_timestamp
        Keep reviews from this time on (seconds since the epoch), applied while reading.
    max_text_chars
        Longest text kept per item field (cut at a word boundary).
    release
        ``"2018"`` (2014 and 2018 field names) or ``"2023"``; None recognises it.

    Returns
    -------
    Dataset
        Interactions with ``timestamp`` (seconds) and ``rating``; items with ``title``,
        ``brand``, ``categories``, ``description``, ``features`` and ``main_category``.
        ``info`` records the release, the files' sha256, what was skipped while reading,
        ``text_coverage`` and ``items_without_metadata``.
    """
    reviews_path = _reviews_file(Path(path).expanduser())
    reviews = read_amazon_reviews(
        reviews_path, min_rating=min_rating, min_timestamp=min_timestamp, release=release
    )
    if len(reviews.user_codes) == 0:
        raise DataError(
            f"no reviews left after reading ({reviews.skipped or 'the file holds none'}); "
            "loosen min_rating / min_timestamp",
            path=reviews_path,
        )
    files = {reviews_path.name: reviews.sha256}
    meta = Path(meta_path).expanduser() if meta_path is not None else _meta_file(reviews_path)
    items: pd.DataFrame | None = None
    if meta is not None:
        items, digest = read_amazon_metadata(
            meta, set(reviews.item_ids), max_text_chars=max_text_chars
        )
        files[meta.name] = digest
    else:
        log.warning(
            "%s: no metadata file meta_<Category>.json(l)[.gz] next to it, so items have no "
            "text; give data.items_path",
            reviews_path,
        )
    n_items = len(reviews.item_ids)
    with_meta = 0 if items is None else len(items)
    if items is not None and with_meta < n_items:
        items = _with_empty_rows(items, reviews.item_ids)
    info = build_info(
        format_name="amazon",
        source=reviews_path.resolve(),
        files=files,
        default_text_template=AMAZON_TEXT_TEMPLATE,
        release=reviews.release,
        json_parser=JSON_PARSER,
        review_lines=reviews.lines,
        skipped_while_reading=reviews.skipped,
        filters_while_reading={
            k: v
            for k, v in (("min_rating", min_rating), ("min_timestamp", min_timestamp))
            if v is not None
        },
        text_coverage=with_meta / n_items if n_items else 0.0,
        items_without_metadata=n_items - with_meta,
    )
    if reviews.release == "2023":
        info["item_id"] = "parent_asin (a product; its variants' asin are merged)"
    dataset_name = name or _stem(reviews_path)
    log.info(
        "%s: %d reviews kept of %d lines; %d of %d items have metadata",
        dataset_name,
        len(reviews.user_codes),
        reviews.lines,
        with_meta,
        n_items,
    )
    return Dataset.from_raw(
        dataset_name, reviews.interactions(), items, None, info, source=reviews_path
    )


def amazon_format(path: Path, config: DataConfig) -> Dataset:
    """The ``format = "amazon"`` loader: ``data.path`` reviews, ``data.items_path`` metadata.

    ``data.preprocess.min_rating`` is applied while streaming (the preprocessing step then
    keeps everything and is still recorded).
    """
    warn_unused(
        config,
        "amazon",
        (
            "users_path", "columns", "item_columns", "user_columns", "list_columns",
            "list_separator", "separator", "encoding", "timestamp_unit",
        ),
    )  # fmt: skip
    return load_amazon(
        path,
        config.items_path,
        min_rating=config.preprocess.min_rating,
        max_text_chars=max(config.text_max_chars, 1000),
        **loader_options(config, "amazon", ("min_timestamp",)),
    )


# ---------------------------------------------------------------------------- helpers
def _with_empty_rows(items: pd.DataFrame, item_ids: list[str]) -> pd.DataFrame:
    """``items`` plus a row of empty fields (no text, empty lists) per product it lacks."""
    missing = pd.Index(item_ids, dtype=object).difference(items.index)
    empty = pd.DataFrame(
        {c: [[] for _ in missing] if c in _LIST_FIELDS else None for c in ITEM_FIELDS},
        index=missing,
    )
    return pd.concat([items, empty.astype(items.dtypes.to_dict())])


def _release_of(record: Mapping[str, Any], path: Path, number: int) -> AmazonRelease:
    if "reviewerID" in record:
        return "2018"
    if "user_id" in record and ("parent_asin" in record or "asin" in record):
        return "2023"
    raise DataError(
        f"not an Amazon review: fields {sorted(record)[:8]}; 2014/2018 reviews have "
        "'reviewerID', 'asin', 'overall', 'unixReviewTime', 2023 reviews 'user_id', "
        "'parent_asin', 'rating', 'timestamp' (is this the metadata file?)",
        path=path,
        line=number,
    )


def _plain_number(value: Any) -> Any:
    """``value``, unless it is text that only Python reads as a number ("1_000", non-ASCII
    digits): float() and int() accept those, JSON and every other reader do not."""
    if type(value) is str and ("_" in value or not value.isascii()):
        raise ValueError(f"{value!r} is not a number")
    return value


def _review_id(value: object, key: str, path: Path, number: int) -> str:
    """A review's user or product id as text; a missing id or one of another type is an error.

    Amazon ids are text ("A2SUAM1J3GNN3B", "B00YQ6X8EO"); an integer is read as its text,
    so ``5`` and ``"5"`` are one id. Surrounding spaces are dropped, as in every loader.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        shown = "null" if value is None else f"{value!r} ({type(value).__name__})"
        raise DataError(
            f"cannot read {shown} as the {key}: expected the id as text",
            path=path,
            line=number,
            column=key,
        )
    text = str(value).strip()
    if not text or text.lower() in MISSING_MARKERS:
        raise DataError(
            f"missing {key}: {value!r} is not an id; every review needs a {key}",
            path=path,
            line=number,
            column=key,
        )
    return text


def _implausible_time(
    raw: object, stamp: int, divisor: int, path: Path, number: int, key: str | None
) -> DataError:
    """The error for a review time before 1971 or more than a year from now."""
    unit = "milliseconds" if divisor == 1000 else "seconds"
    if stamp < 0:
        when = "before 1970"
    elif stamp < EARLIEST_TIMESTAMP:
        when = f"{datetime.fromtimestamp(stamp, UTC):%Y-%m-%d}, before 1971"
    elif stamp <= _LATEST_DATE:
        when = f"{datetime.fromtimestamp(stamp, UTC):%Y-%m-%d}, more than a year from now"
    else:
        when = "after the year 9999"
    return DataError(
        f"timestamp {raw!r} would be {when}; Amazon reviews give the review time in {unit} "
        "since 1970-01-01",
        path=path,
        line=number,
        column=key,
    )


_LATEST_DATE = 253_402_300_799  # 9999-12-31T23:59:59Z


def _review_time(record: Mapping[str, Any], path: Path, number: int) -> int:
    """Seconds from the 2014/2018 ``reviewTime`` ("09 13, 2009") when ``unixReviewTime`` lacks."""
    text = record.get("reviewTime")
    if not isinstance(text, str):
        raise KeyError("unixReviewTime")
    try:
        moment = datetime.strptime(" ".join(text.replace(",", " ").split()), "%m %d %Y")
    except ValueError:
        raise DataError(
            f"cannot read reviewTime {text!r} (expected 'MM DD, YYYY')",
            path=path,
            line=number,
            column="reviewTime",
        ) from None
    return int(moment.replace(tzinfo=UTC).timestamp())


def _item_fields(record: Mapping[str, Any], max_chars: int) -> dict[str, Any]:
    categories = record.get("categories", record.get("category"))
    if categories and isinstance(categories, list) and isinstance(categories[0], list):
        categories = [c for path in categories for c in path]  # 2014: a list of paths
    brand = record.get("brand") or record.get("store")
    brand_text = clean_text(brand, 200)
    if brand_text and brand_text.lower().startswith("by "):
        brand_text = brand_text[3:].strip() or None  # 2018 pages: "by\n  Brand"
    return {
        "title": clean_text(record.get("title"), max_chars),
        "brand": brand_text,
        "categories": clean_list(categories),
        "description": clean_text(record.get("description"), max_chars),
        "features": clean_list(record.get("features", record.get("feature")), max_chars),
        "main_category": clean_text(record.get("main_category", record.get("main_cat")), 200),
    }


def clean_text(value: object, max_chars: int) -> str | None:
    """Plain text from an Amazon field: lists joined, HTML removed, cut at a word.

    Amazon fields hold HTML fragments (``<br>``, ``&amp;``) and, in the 2018 metadata, some
    titles and categories that are page mark-up rather than text; tags and entities are
    removed, white space collapsed, and the text cut to ``max_chars`` at a word boundary.
    """
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        value = " ".join(str(v) for v in value if v is not None)
    elif not isinstance(value, str):
        value = str(value)
    text = _TAG.sub(" ", html.unescape(_TAG.sub(" ", value)))
    text = _SPACE.sub(" ", text).strip()
    if not text:
        return None
    if len(text) > max_chars:
        cut = text[:max_chars]
        space = cut.rfind(" ")
        text = (cut[:space] if space > max_chars * 0.6 else cut).rstrip(" ,.;:") + "…"
    return text


def clean_list(value: object, max_chars: int = 200) -> list[str]:
    """A list field (categories, features) as distinct non-empty cleaned strings, at most 20."""
    if value is None:
        return []
    values = value if isinstance(value, (list, tuple)) else [value]
    out: list[str] = []
    for entry in values:
        text = clean_text(entry, max_chars)
        if text and text not in out:
            out.append(text)
        if len(out) >= _MAX_LIST:
            break
    return out


def _strip_suffixes(name: str) -> str:
    lowered = name.lower()
    for suffix in COMPRESSED_SUFFIXES:
        if lowered.endswith(suffix):
            name, lowered = name[: -len(suffix)], lowered[: -len(suffix)]
            break
    for suffix in _JSON_SUFFIXES:
        if lowered.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _is_json_lines(path: Path) -> bool:
    return _strip_suffixes(path.name) != path.name


def _stem(path: Path) -> str:
    """``All_Beauty_5.json.gz`` -> ``All_Beauty_5``."""
    return _strip_suffixes(path.name)


def _reviews_file(path: Path) -> Path:
    if path.is_file():
        return path
    if not path.exists():
        raise DataError("file or folder not found; expected an Amazon reviews file", path=path)
    candidates = sorted(
        p
        for p in path.iterdir()
        if p.is_file()
        and _is_json_lines(p)
        and not p.name.lower().startswith("meta_")
        and p.name != "manifest.json"  # the catalog's record of a cached copy
    )
    if len(candidates) == 1:
        return candidates[0]
    found = sorted(p.name for p in path.iterdir())
    if not candidates:
        raise DataError(
            "no Amazon reviews file here: expected one JSON-lines file such as "
            f"All_Beauty_5.json.gz (2018) or All_Beauty.jsonl (2023); found {found}",
            path=path,
        )
    raise DataError(
        f"several reviews files here ({[p.name for p in candidates]}); name one in data.path",
        path=path,
    )


def _meta_file(reviews: Path) -> Path | None:
    """``meta_<Category>`` next to the reviews file, with any JSON-lines suffix."""
    stem = _stem(reviews)
    category = stem[:-2] if stem.endswith("_5") else stem
    for base in dict.fromkeys((category, stem)):
        for json_suffix in (".json", ".jsonl"):
            for suffix in ("", *COMPRESSED_SUFFIXES):
                candidate = reviews.parent / f"meta_{base}{json_suffix}{suffix}"
                if candidate.is_file():
                    return candidate
    return None


__all__ = [
    "AMAZON_TEXT_TEMPLATE",
    "AmazonReviews",
    "amazon_format",
    "clean_list",
    "clean_text",
    "load_amazon",
    "read_amazon_metadata",
    "read_amazon_reviews",
]
