"""Shared reading helpers for the loaders: decoding, delimited parsing, ids and times.

Every loader reads people's real files, so every helper here turns a problem into a
`DataError` that names the file, the 1-based line (counting the header where there is one)
or the column, and what was expected. Parsing itself goes through pandas' C engine on bytes
(fast: one million MovieLens ratings in well under a second); only when that fails does a
slow line-by-line pass run to find the exact line and value to report.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import datetime
import decimal
import difflib
import gzip
import hashlib
import io
import logging
import lzma
import math
import re
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from recarena.errors import ConfigError, DataError

log = logging.getLogger(__name__)

ColumnKind = Literal["int", "float", "str"]
TimestampUnit = Literal["s", "ms", "us", "ns", "iso"]

#: Separators tried when guessing how a line that does not split as expected is separated.
CANDIDATE_SEPARATORS = ("::", "\t", ",", ";", "|")

_UTF8_BOM = codecs.BOM_UTF8
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# a control character that text files do not hold; multi-character separators such as
# MovieLens' "::" are replaced by it so that pandas' fast C engine can split the lines
_PLACEHOLDER_SEPARATOR = "\x1f"
_CANONICAL_INT = re.compile(r"-?(?:0|[1-9][0-9]{0,17})")
_LEADING_ZERO = re.compile(r"-?0[0-9]")
_YEAR_IN_PARENS = re.compile(r"\((\d{4})(?:[-\u2013]\d{0,4})?\)")
_TIMESTAMP_FACTORS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
# an integer id written as a decimal ("22.0", as a float column exported to text reads)
_DECIMAL_INT = re.compile(r"(-?(?:0|[1-9][0-9]{0,17}))\.0+")
# texts that spreadsheets and pandas write for a missing value; never an id
MISSING_MARKERS = frozenset(
    {"nan", "-nan", "nat", "na", "n/a", "#n/a", "<na>", "null", "none", "#null!"}
)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_LINE_ENDS = re.compile(r"\r\n|\r|\n")
# an ISO 8601 date starts with its four-digit year
_ISO_START = re.compile(r"\s*\d{4}")

#: The longest line a delimited file may hold, in bytes. Interaction and item files have
#: lines of a few hundred bytes; a longer one is almost always a quote left open or a file
#: that is not what it claims, and reading it whole costs several times its size in memory.
MAX_LINE_BYTES = 16 * 1024 * 1024

#: Numeric timestamps earlier than this (1971-01-01, in seconds) are not taken for dates when
#: read in milliseconds or finer, or when the same column also holds real dates: seconds read
#: as milliseconds land in January 1970. Columns in seconds where every value is this small
#: are order positions (1, 2, 3, ...) and are accepted.
EARLIEST_TIMESTAMP = 31_536_000
#: How far past the current time a timestamp may lie (clock skew, time zones).
FUTURE_MARGIN_SECONDS = 366 * 86_400
_LATEST_DATETIME = 253_402_300_799  # 9999-12-31T23:59:59Z


@dataclass(frozen=True)
class Column:
    """One column a loader expects in a delimited file.

    Parameters
    ----------
    name
        The name in the file's header, or the loader's own name when the file has none.
    kind
        ``int``, ``float`` or ``str``; numbers are checked while parsing.
    meaning
        What the value is, as shown in error messages ("rating", "movie id").
    required
        Whether an empty value is an error (otherwise it reads as missing).
    """

    name: str
    kind: ColumnKind = "str"
    meaning: str = ""
    required: bool = True

    @property
    def described(self) -> str:
        what = self.meaning or self.name
        return {"int": f"{what} (an integer)", "float": f"{what} (a number)"}.get(self.kind, what)


@dataclass
class RawTables:
    """What a loader read, before dense ids are assigned by `Dataset.from_raw`.

    ``interactions`` has columns ``user``, ``item`` (raw ids) and optionally ``timestamp``
    (int64 seconds) and ``rating``; ``items`` and ``users`` are indexed by raw id.
    ``files`` maps each file read to its sha256.
    """

    interactions: pd.DataFrame
    items: pd.DataFrame | None = None
    users: pd.DataFrame | None = None
    files: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------- files
def require_files(
    folder: Path,
    required: Sequence[str],
    optional: Sequence[str] = (),
    *,
    format_label: str,
) -> dict[str, Path]:
    """Check that ``folder`` holds the ``required`` files; return the paths of those present.

    The error lists every file expected, the files actually found, and points at a sub-folder
    that holds the files when the user named its parent (a common slip after unzipping).
    """
    if not folder.exists():
        raise DataError(
            f"folder not found; expected a {format_label} folder holding {_names(required)}",
            path=folder,
        )
    if not folder.is_dir():
        raise DataError(
            f"expected a {format_label} folder holding {_names(required)}, found a file",
            path=folder,
        )
    missing = [name for name in required if not (folder / name).is_file()]
    if missing:
        found = sorted(p.name for p in folder.iterdir())
        hint = ""
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            if all((sub / name).is_file() for name in required):
                hint = f"; the files are in {sub}: point the path there"
                break
        if not hint:
            hint = "; is this the right format?" if found else ""
        optional_note = f" (optional: {_names(optional)})" if optional else ""
        raise DataError(
            f"missing {_names(missing)}: a {format_label} folder holds {_names(required)}"
            f"{optional_note}; found {found if found else 'an empty folder'}{hint}",
            path=folder,
        )
    names = [*required, *(name for name in optional if (folder / name).is_file())]
    return {name: folder / name for name in names}


def _names(names: Sequence[str]) -> str:
    return ", ".join(names)


def read_bytes(path: Path) -> bytes:
    """The bytes of ``path``; a missing file or a folder becomes a `DataError`."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError("file not found", path=path) from None
    except IsADirectoryError:
        raise DataError("expected a file, found a folder", path=path) from None


def decompress(data: bytes, path: Path) -> bytes:
    """The content of a ``.gz``, ``.bz2`` or ``.xz`` file (other files are returned as is).

    Data sets are often shipped compressed (``ratings.csv.gz``); reading them without
    unpacking first saves the user a step and the disk the space.
    """
    suffix = path.suffix.lower()
    unpack = _DECOMPRESSORS.get(suffix)
    if unpack is None:
        return data
    try:
        return unpack(data)
    except (OSError, EOFError, ValueError, lzma.LZMAError) as exc:  # damaged or not compressed
        raise DataError(f"cannot decompress the {suffix} file: {exc}", path=path) from None


_DECOMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    ".gz": gzip.decompress,
    ".bz2": bz2.decompress,
    ".xz": lzma.decompress,
}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def detect_encoding(data: bytes) -> str:
    """``utf-8`` when the bytes decode as UTF-8, else ``latin-1``.

    MovieLens ships its older files in latin-1, while copies re-saved by other tools are
    UTF-8; latin-1 text with accents is almost never valid UTF-8, so the check is reliable.
    """
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "latin-1"
    return "utf-8"


def prepare_text_bytes(data: bytes, path: Path, encoding: str | None) -> tuple[bytes, str]:
    """Strip a byte-order mark and check the encoding; return bytes pandas can split.

    Parameters
    ----------
    encoding
        The declared encoding, or None to detect UTF-8 versus latin-1.

    Returns
    -------
    The bytes (in an ASCII-compatible encoding, so separators can be found byte-wise) and the
    encoding to decode them with.
    """
    if data.startswith(_UTF16_BOMS) and not (encoding or "").lower().startswith("utf-16"):
        raise DataError(
            "the file is UTF-16 (it starts with a UTF-16 byte-order mark); save it as UTF-8 or "
            "set the encoding to 'utf-16'",
            path=path,
        )
    if encoding is not None and not _ascii_compatible(encoding):
        # UTF-16/32 files: re-encode once as UTF-8 so the byte-wise steps below stay valid
        text = _decode_or_explain(data, path, encoding)
        data, encoding = text.encode("utf-8"), "utf-8"
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]
    if encoding is None:
        encoding = detect_encoding(data)
    else:
        _decode_or_explain(data, path, encoding)
        if codecs.lookup(encoding).name in ("iso8859-1", "cp1252") and _is_non_ascii_utf8(data):
            log.warning(
                "%s decodes as UTF-8 but is read as %s: accented characters will read "
                "wrongly; set the encoding to 'utf-8'",
                path,
                encoding,
            )
    return data, encoding


def _ascii_compatible(encoding: str) -> bool:
    try:
        return codecs.lookup(encoding).encode("a,\t|:;\n")[0] == b"a,\t|:;\n"
    except LookupError:
        raise DataError(
            f"unknown text encoding {encoding!r}; use e.g. 'utf-8' or 'latin-1'"
        ) from None


def _is_non_ascii_utf8(data: bytes) -> bool:
    if data.isascii():
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _decode_or_explain(data: bytes, path: Path, encoding: str) -> str:
    if codecs.lookup(encoding).name == "iso8859-1":
        return data.decode(encoding)  # every byte is valid latin-1; skip the check
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start : exc.start + 4]
        hint = (
            "; older exports (MovieLens .dat files, Excel CSV) are often latin-1 or cp1252: "
            "set the encoding to 'latin-1'"
            if codecs.lookup(encoding).name == "utf-8"
            else ""
        )
        raise DataError(
            f"not valid {encoding} text (bytes {bad!r} at byte {exc.start}){hint}",
            path=path,
            line=line,
        ) from None


# ------------------------------------------------------------------------ delimited files
def guess_separator(line: str) -> str | None:
    """The candidate separator that splits ``line`` into the most fields (None if none does)."""
    best, best_count = None, 1
    for sep in CANDIDATE_SEPARATORS:
        count = len(line.split(sep))
        if count > best_count:
            best, best_count = sep, count
    return best


def first_line(data: bytes, encoding: str) -> tuple[int, str] | None:
    """The 1-based number and text of the first non-blank line, or None for an empty file."""
    start = 0
    number = 1
    while start < len(data):
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end
        text = data[start:end].decode(encoding, errors="replace").rstrip("\r")
        if text.strip():
            return number, text
        start, number = end + 1, number + 1
    return None


def check_field_count(
    line: str,
    line_number: int,
    path: Path,
    *,
    separator: str,
    expected: int,
    format_label: str,
    example: str = "",
) -> None:
    """Raise a `DataError` when ``line`` does not split into ``expected`` fields."""
    found = len(line.split(separator))
    if found == expected:
        return
    guessed = guess_separator(line)
    looks = (
        f" (the line looks separated by {guessed!r})"
        if guessed is not None and guessed != separator
        else ""
    )
    shape = f" ({format_label} lines read {example!r})" if example else ""
    raise DataError(
        f"expected {expected} fields separated by {separator!r} on line {line_number}, found "
        f"{found}{looks}: {_clip(line)!r}; is this the right format?{shape}",
        path=path,
        line=line_number,
    )


def check_line_lengths(data: bytes, path: Path, *, limit: int = MAX_LINE_BYTES) -> None:
    """Raise a `DataError` naming the first line of ``data`` longer than ``limit`` bytes.

    Jumps from the last line end of one ``limit``-sized window to the next, so a file is
    scanned once, in C, however many lines it has.
    """
    if len(data) <= limit:
        return
    start = 0
    while len(data) - start > limit:
        end = data.rfind(b"\n", start, start + limit + 1)
        if end < 0:
            line = data.count(b"\n", 0, start) + 1
            stop = data.find(b"\n", start)
            length = (len(data) if stop < 0 else stop) - start
            raise line_too_long(path, line, length, limit)
        start = end + 1


def line_too_long(
    path: Path, line: int, length: int | None, limit: int = MAX_LINE_BYTES
) -> DataError:
    """The error for a line longer than ``limit`` bytes (see `MAX_LINE_BYTES`).

    ``length`` is the line's length, or None when reading stopped before its end.
    """
    size = f"is {length:,} bytes long" if length is not None else f"is longer than {limit:,} bytes"
    return DataError(
        f"line {line} {size}; RecArena reads lines of at most {limit:,} bytes "
        f"({limit / 2**20:g} MiB): is a quote left open, or is this not the file it should be?",
        path=path,
        line=line,
    )


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class DelimitedFile:
    """A delimited text file prepared for parsing: bytes, encoding and dialect."""

    path: Path
    data: bytes
    encoding: str
    separator: str
    has_header: bool
    quoted: bool
    sha256: str

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        separator: str,
        encoding: str | None,
        has_header: bool,
        quoted: bool,
    ) -> DelimitedFile:
        raw = read_bytes(path)
        data, effective = prepare_text_bytes(decompress(raw, path), path, encoding)
        check_line_lengths(data, path)
        return cls(path, data, effective, separator, has_header, quoted, sha256_bytes(raw))

    @property
    def first_line(self) -> tuple[int, str] | None:
        return first_line(self.data, self.encoding)

    def header(self) -> tuple[int, list[str]]:
        """The header's line number and its field names (whitespace stripped)."""
        first = self.first_line
        if first is None:
            raise DataError("the file is empty; expected a header line", path=self.path, line=1)
        number, text = first
        if self.quoted and len(self.separator) == 1:
            try:
                names = next(csv.reader([text], delimiter=self.separator))
            except csv.Error as exc:  # a carriage return inside the line, for one
                raise DataError(
                    f"cannot split the header line into fields ({exc}): {_clip(text)!r}",
                    path=self.path,
                    line=number,
                ) from None
        else:
            names = text.split(self.separator)
        return number, [name.strip() for name in names]

    def records(self) -> Iterator[tuple[int, list[str]]]:
        """(line number, fields) of every non-blank line, header included; slow, for errors."""
        text = self.data.decode(self.encoding, errors="replace")
        if self.quoted and len(self.separator) == 1:
            reader = csv.reader(io.StringIO(text, newline=""), delimiter=self.separator)
            start = 1
            while True:
                try:
                    fields = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:  # a stray carriage return, a field over csv's limit
                    raise DataError(
                        f"cannot split line {start} into fields: {exc}",
                        path=self.path,
                        line=start,
                    ) from None
                if fields and any(f.strip() for f in fields):
                    yield start, fields
                start = reader.line_num + 1
        else:
            # the line ends pandas splits on; str.splitlines() would also split on \x1c, \x85...
            for number, line in enumerate(_LINE_ENDS.split(text), start=1):
                if line.strip():
                    yield number, line.split(self.separator)

    def line_of_record(self, index: int) -> int | None:
        """Line number of the ``index``-th data record (0-based, header not counted)."""
        skip = 1 if self.has_header else 0
        for n, (number, _) in enumerate(self.records()):
            if n == index + skip:
                return number
        return None

    def read(
        self,
        columns: Sequence[Column | None],
        *,
        format_label: str,
        example: str = "",
    ) -> pd.DataFrame:
        """Parse every record into the given columns (None entries are skipped fields).

        Numbers are parsed and checked here; a bad value, a missing required value or a line
        with the wrong number of fields raises a `DataError` with its line.
        """
        first = self.first_line
        if first is None:
            raise DataError(f"the file is empty; expected {format_label} lines", path=self.path)
        if not self.has_header:
            check_field_count(
                first[1],
                first[0],
                self.path,
                separator=self.separator,
                expected=len(columns),
                format_label=format_label,
                example=example,
            )
        data, separator = self.data, self.separator
        if len(separator) > 1:
            if _PLACEHOLDER_SEPARATOR.encode() in data:
                raise DataError(
                    f"the file holds the control character \\x1f; cannot split on {separator!r}",
                    path=self.path,
                )
            data = data.replace(separator.encode(self.encoding), _PLACEHOLDER_SEPARATOR.encode())
            separator = _PLACEHOLDER_SEPARATOR
        names = [c.name if c is not None else f"_skip{i}" for i, c in enumerate(columns)]
        used = [c for c in columns if c is not None]
        dtypes: dict[str, Any] = {c.name: _PANDAS_DTYPES[c.kind] for c in used}
        try:
            with warnings.catch_warnings():
                # with index_col=False pandas only warns, and drops the extra fields, when the
                # first data line has more fields than the header: an error like any other line
                warnings.simplefilter("error", pd.errors.ParserWarning)
                # NumPy warns while pandas tries to cast "inf" to int64; that value is
                # then reported with its line below
                warnings.simplefilter("ignore", RuntimeWarning)
                frame = self._parse(data, separator, names, dtypes)
        except (ValueError, OverflowError, pd.errors.ParserError, pd.errors.ParserWarning) as exc:
            raise self._locate_problem(columns, format_label) or DataError(
                f"cannot read the file as {format_label}: {exc}", path=self.path
            ) from None
        frame = frame[[c.name for c in used]]
        for column in used:
            values = frame[column.name]
            if column.kind == "float" and np.isinf(values.to_numpy(np.float64)).any():
                raise self._locate_problem(columns, format_label) or DataError(
                    f"an infinite {column.described}", path=self.path, column=column.name
                )
            if column.required and values.isna().any():
                raise self._locate_problem(columns, format_label) or DataError(
                    f"missing {column.described}", path=self.path, column=column.name
                )
        return frame

    def _parse(
        self, data: bytes, separator: str, names: list[str], dtypes: dict[str, Any]
    ) -> pd.DataFrame:
        return pd.read_csv(
            io.BytesIO(data),
            sep=separator,
            header=0 if self.has_header else None,
            names=names,
            # no usecols: it would silently accept lines with extra fields
            dtype=dtypes,
            encoding=self.encoding,
            quoting=csv.QUOTE_MINIMAL if self.quoted else csv.QUOTE_NONE,
            keep_default_na=False,
            na_values=[""],
            index_col=False,
            engine="c",
        )

    def _locate_problem(
        self, columns: Sequence[Column | None], format_label: str
    ) -> DataError | None:
        """Scan the file line by line for the first line that does not parse."""
        skip_header = self.has_header
        for number, fields in self.records():
            if skip_header:
                skip_header = False
                continue
            if len(fields) != len(columns):
                return DataError(
                    f"expected {len(columns)} fields separated by {self.separator!r} on line "
                    f"{number}, found {len(fields)}: {_clip(self.separator.join(fields))!r}",
                    path=self.path,
                    line=number,
                )
            for column, value in zip(columns, fields, strict=True):
                if column is None:
                    continue
                problem = _value_problem(value, column)
                if problem:
                    if (
                        number == 1
                        and not self.has_header
                        and all(
                            _value_problem(v, c)
                            for v, c in zip(fields, columns, strict=True)
                            if c and c.kind != "str"
                        )
                    ):
                        problem += f"; {format_label} files have no header line: remove it"
                    return DataError(problem, path=self.path, line=number, column=column.name)
        return None


def columns_from_header(
    header: Sequence[str],
    wanted: Sequence[Column],
    *,
    path: Path,
    line: int,
    separator: str,
    format_label: str,
) -> list[Column | None]:
    """Match the columns a loader wants to a file's header, by name.

    Returns one entry per header field (None for fields the loader does not use). Missing
    required columns raise a `DataError` listing the columns found, with a separator hint
    when the whole header reads as one column.
    """
    missing = [c.name for c in wanted if c.required and c.name not in header]
    if missing:
        hint = ""
        if len(header) == 1:
            guessed = guess_separator(header[0])
            if guessed is not None and guessed != separator:
                hint = (
                    f"; the header is one column when split by {separator!r} but looks "
                    f"separated by {guessed!r}: is this the right format?"
                )
        raise DataError(
            f"missing column(s) {missing}: {format_label} needs "
            f"{[c.name for c in wanted if c.required]}; columns found: {list(header)}{hint}",
            path=path,
            line=line,
            column=missing[0],
        )
    by_name = {c.name: c for c in wanted}
    return [by_name.get(name) for name in header]


_PANDAS_DTYPES: dict[str, Any] = {"int": np.int64, "float": np.float64, "str": object}


def _value_problem(value: str, column: Column) -> str | None:
    text = value.strip()
    if text == "":
        return f"missing {column.described}" if column.required else None
    if column.kind != "str" and ("_" in text or not text.isascii()):
        # Python reads "1_000" and non-ASCII digits as numbers; pandas does not
        return f"cannot read {value!r} as the {column.described}"
    try:
        if column.kind == "int":
            number = int(text)
            if not _INT64_MIN <= number <= _INT64_MAX:
                return (
                    f"{value!r} is out of range for the {column.described}: integers have at "
                    "most 19 digits"
                )
        elif column.kind == "float" and not math.isfinite(float(text)):
            return f"cannot read {value!r} as the {column.described}: expected a finite number"
    except ValueError:
        return f"cannot read {value!r} as the {column.described}"
    return None


# ------------------------------------------------------------------------- column mapping
def find_column(
    available: Sequence[str],
    wanted: str,
    *,
    path: Path | str | None,
    role: str,
    setting: str | None = None,
) -> str:
    """Return ``wanted`` if it is a column, else raise listing the columns found."""
    if wanted in available:
        return wanted
    close = difflib.get_close_matches(wanted, list(available), n=1, cutoff=0.6)
    lowered = [c for c in available if c.lower() == wanted.lower()]
    suggestion = lowered[0] if lowered else (close[0] if close else None)
    hint = f"; did you mean {suggestion!r}?" if suggestion else ""
    how = f" (set {setting})" if setting else ""
    raise DataError(
        f"no column {wanted!r} for the {role}{how}; columns found: {list(available)}{hint}",
        path=path,
        column=wanted,
    )


def check_distinct_columns(
    roles: Mapping[str, str], *, path: Path | str | None, setting: str = "data.columns"
) -> None:
    """Raise a `ConfigError` when two interaction roles read the same column.

    A user column that is also the item column makes every interaction (x, x): the data
    loads, and nothing useful can be measured on it.
    """
    seen: dict[str, str] = {}
    for role, column in roles.items():
        if column in seen:
            where = f"{path}: " if path is not None else ""
            raise ConfigError(
                f"{where}the {seen[column]} and the {role} are both read from column "
                f"{column!r}; each role needs its own column: set {setting}.{seen[column]} "
                f"and {setting}.{role} to different columns"
            )
        seen[column] = role


def guess_column(available: Sequence[str], candidates: Sequence[str]) -> str | None:
    """The first column whose name matches one of ``candidates`` (case-insensitive)."""
    lowered = {c.lower(): c for c in available}
    for name in candidates:
        if name.lower() in lowered:
            return lowered[name.lower()]
    return None


# ----------------------------------------------------------------------- values and types
def natural_ids(
    values: pd.Series,
    *,
    path: Path | str | None = None,
    column: str | None = None,
    meaning: str = "id",
    line_of_row: Any = None,
) -> pd.Series:
    """Ids in their natural type: int64 when every id is an integer, else strings.

    An integer id may be written as a plain integer (``22``) or as a whole decimal (``22.0``,
    as a float column exported to text reads); both give the int 22. Other ids such as
    ``"007"`` keep their text form (leading zeros carry meaning). Text ids are stripped of
    surrounding spaces. ``values`` must hold no missing ids (see `id_column`).

    Raises
    ------
    DataError
        When ids stay text (some are not numbers) yet two of them are the same integer
        written two ways (``22`` and ``22.0``): they would silently be two users or items.
        ``path``, ``column`` and ``line_of_row`` (row -> file line) locate it.
    """
    if pd.api.types.is_integer_dtype(values.dtype):
        return values.astype(np.int64)
    if pd.api.types.is_float_dtype(values.dtype):
        numbers = values.to_numpy(np.float64)
        if np.all(numbers == np.floor(numbers)) and np.all(np.abs(numbers) < 2.0**63):
            return values.astype(np.int64)
        return pd.Series(values.astype(str).to_numpy(object), index=values.index, dtype=object)
    # work on the distinct ids only: a million rows hold a few thousand users
    codes, uniques = pd.factorize(values)
    texts = [str(u).strip() for u in uniques]
    as_ints = [_integer_text(t) for t in texts]
    if texts and all(n is not None for n in as_ints):
        converted: np.ndarray = np.array(as_ints, dtype=np.int64)
    else:
        _check_two_spellings(texts, as_ints, codes, path, column, meaning, line_of_row)
        converted = np.array(texts, dtype=object)
    return pd.Series(converted[codes], index=values.index, dtype=converted.dtype)


def _integer_text(text: str) -> int | None:
    """The integer ``text`` spells (``"22"`` or ``"22.0"``), else None."""
    if _CANONICAL_INT.fullmatch(text):
        return int(text)
    decimal = _DECIMAL_INT.fullmatch(text)
    return int(decimal.group(1)) if decimal else None


def _check_two_spellings(
    texts: list[str],
    as_ints: list[int | None],
    codes: np.ndarray,
    path: Path | str | None,
    column: str | None,
    meaning: str,
    line_of_row: Any,
) -> None:
    canonical = {t: k for k, t in enumerate(texts) if _CANONICAL_INT.fullmatch(t)}
    for k, (text, number) in enumerate(zip(texts, as_ints, strict=True)):
        if number is None or text in canonical:
            continue
        other = canonical.get(str(number))
        if other is None:
            continue
        row = int(np.flatnonzero(codes == k)[0])
        first = int(np.flatnonzero(codes == other)[0])
        line = line_of_row(row) if line_of_row is not None else None
        other_line = line_of_row(first) if line_of_row is not None else None
        where = f"line {other_line}" if other_line is not None else f"row {first + 1}"
        raise DataError(
            f"{meaning} {text!r} and {meaning} {texts[other]!r} ({where}) are the same number "
            "written two ways, but the other ids are text, so they would count as two "
            f"different ids; write every id one way (e.g. {texts[other]!r})"
            + ("" if line is not None else f" (row {row + 1})"),
            path=path,
            line=line,
            column=column,
        )


def id_column(
    values: pd.Series,
    *,
    path: Path | str | None,
    column: str,
    meaning: str,
    line_of_row: Any = None,
) -> pd.Series:
    """Ids in their natural type (`natural_ids`).

    A missing id (an empty field, or a marker such as ``NaN``, ``NULL`` or ``N/A``) or a
    number that is not finite is a `DataError` with its line.
    """

    def fail(row: int, message: str) -> DataError:
        line = line_of_row(row) if line_of_row is not None else None
        where = "" if line is not None else f" (row {row + 1})"
        return DataError(message + where, path=path, line=line, column=column)

    odd = first_odd_value(values)
    if odd is not None:
        raise _odd_value_error(values, odd, meaning, fail)
    missing = values.isna().to_numpy()
    marker = np.zeros(len(values), dtype=bool)
    if not (pd.api.types.is_numeric_dtype(values.dtype)):
        codes, uniques = pd.factorize(values)
        blank = np.array([isinstance(u, str) and not u.strip() for u in uniques], dtype=bool)
        if blank.any():
            missing = missing | blank[codes]
        markers = np.array(
            [isinstance(u, str) and u.strip().lower() in MISSING_MARKERS for u in uniques],
            dtype=bool,
        )
        if markers.any():
            marker = markers[codes] & ~missing
    if missing.any() or marker.any():
        row = int(np.flatnonzero(missing | marker)[0])
        if marker[row]:
            raise fail(
                row,
                f"missing {meaning}: {str(values.iloc[row]).strip()!r} marks a missing value; "
                f"every interaction needs a {meaning}",
            )
        raise fail(row, f"missing {meaning}")
    if pd.api.types.is_float_dtype(values.dtype):
        infinite = ~np.isfinite(values.to_numpy(np.float64))
        if infinite.any():
            row = int(np.flatnonzero(infinite)[0])
            raise fail(row, f"cannot read {_shown(values.iloc[row])} as a {meaning}")
    return natural_ids(values, path=path, column=column, meaning=meaning, line_of_row=line_of_row)


#: What `pandas.api.types.infer_dtype` says of a column of text and numbers only.
_PLAIN_KINDS = frozenset(
    {"string", "integer", "floating", "mixed-integer-float", "decimal", "empty"}
)
_DATE_KINDS = frozenset({"datetime", "datetime64", "date"})


def first_odd_value(
    values: pd.Series, *, accept_bool: bool = False, accept_dates: bool = False
) -> int | None:
    """The row of the first value that is neither text nor a number, or None.

    Parquet and JSON columns may hold lists, mappings, bytes, dates or true/false values:
    such a column is not an id, time or rating column (a list is not even hashable), and
    reading it as one would fail inside pandas or give ids such as ``"b'x'"``. The type
    check runs in C; rows are visited only when some value is of another type.
    ``accept_bool`` and ``accept_dates`` let true/false values and dates through.
    """
    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return None if accept_bool or not len(values) else 0
    if pd.api.types.is_numeric_dtype(dtype):
        return None
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return None if accept_dates or not len(values) else 0
    sample = values.cat.categories if isinstance(dtype, pd.CategoricalDtype) else values
    kinds = _PLAIN_KINDS | (_DATE_KINDS if accept_dates else frozenset())
    if pd.api.types.infer_dtype(sample, skipna=True) in kinds | (
        {"boolean"} if accept_bool else set()
    ):
        return None
    plain: tuple[type, ...] = (str, int, float, np.integer, np.floating, decimal.Decimal)
    if accept_dates:
        plain += (datetime.date, np.datetime64)
    for row, value in enumerate(values):
        if value is None or value is pd.NA or value is pd.NaT:
            continue
        if isinstance(value, (bool, np.bool_)):
            if not accept_bool:
                return row
        elif not isinstance(value, plain):
            return row
    return None


def _odd_value_error(values: pd.Series, row: int, meaning: str, fail: Any) -> DataError:
    value = values.iloc[row]
    return fail(
        row,
        f"cannot read {_clip(_shown(value))} ({type(value).__name__}) as a {meaning}: "
        "expected text or a number; is this the right column?",
    )


def year_from_title(title: object) -> int | None:
    """The release year in a MovieLens-style title ("Toy Story (1995)" gives 1995).

    The last "(yyyy)" group counts, so "Land Before Time III (1995) (V)" gives 1995.
    """
    if not isinstance(title, str):
        return None
    found = _YEAR_IN_PARENS.findall(title)
    return int(found[-1]) if found else None


def split_list(value: object, separator: str | None, drop: Sequence[str] = ()) -> list[str]:
    """Split a multi-valued text field into a list of non-empty strings.

    ``separator=None`` splits on any whitespace. Lists and arrays (from Parquet) are kept;
    missing values give an empty list.
    """
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return []
    if isinstance(value, (list, tuple, np.ndarray)):
        parts = [str(v).strip() for v in value if v is not None]
    else:
        parts = [p.strip() for p in str(value).split(separator)]
    return [p for p in parts if p and p not in drop]


def to_epoch_seconds(
    values: pd.Series,
    unit: TimestampUnit,
    *,
    path: Path | str | None,
    column: str,
    line_of_row: Any = None,
) -> np.ndarray:
    """Timestamps as int64 seconds since the epoch, checked to be plausible dates.

    Parameters
    ----------
    values
        Numbers in ``unit`` (``s``, ``ms``, ``us``, ``ns``; fractions are floored) or, for
        ``unit="iso"``, ISO 8601 date or date-time strings (times without an offset are
        read as UTC).
    line_of_row
        Callable giving the file line of a 0-based row, for error messages; when None the
        row number is reported instead.

    Raises
    ------
    DataError
        Naming the line and the value, for a missing or unreadable timestamp, and for times
        that are not plausible dates (see `check_plausible_times`): before 1970, more than a
        year in the future (``99999999999999999999999``, or milliseconds read as seconds),
        before 1971 in milliseconds or finer (seconds read as milliseconds), or a column
        that mixes units.
    """

    def fail(row: int, message: str) -> DataError:
        line = line_of_row(row) if line_of_row is not None else None
        where = "" if line is not None else f" (row {row + 1})"
        return DataError(message + where, path=path, line=line, column=column)

    odd = first_odd_value(values, accept_dates=True)
    if odd is not None:
        raise _odd_value_error(values, odd, "timestamp", fail)
    missing = values.isna().to_numpy()
    if missing.any():
        raise fail(int(np.flatnonzero(missing)[0]), "missing timestamp")
    if unit == "iso":
        if pd.api.types.is_datetime64_any_dtype(values.dtype):
            parsed = pd.to_datetime(values, utc=True)
        else:
            texts = values.astype(str)
            parsed = pd.to_datetime(texts, utc=True, format="ISO8601", errors="coerce")
            # pandas reads "now" and "today" as the current time, even as ISO 8601
            parsed[~texts.str.match(_ISO_START).to_numpy(dtype=bool)] = pd.NaT
        bad = parsed.isna().to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise fail(row, f"cannot read {values.iloc[row]!r} as an ISO 8601 date or date-time")
        # whole seconds in whichever resolution pandas chose (years after 2262 need seconds)
        naive = parsed.dt.tz_convert(None).to_numpy()
        seconds = naive.astype("datetime64[s]").astype(np.int64)
        check_plausible_times(seconds.astype(np.float64), values, "iso", fail)
        return seconds
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        # Parquet date-time columns carry their own unit
        return to_epoch_seconds(values, "iso", path=path, column=column, line_of_row=line_of_row)
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna().to_numpy() | ~np.isfinite(numbers.to_numpy(np.float64))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        value = values.iloc[row]
        hint = ""
        if isinstance(value, str) and not pd.isna(
            pd.to_datetime(value, errors="coerce", format="ISO8601")
        ):
            hint = "; it looks like a date: set the timestamp unit to 'iso'"
        raise fail(row, f"cannot read {value!r} as a timestamp in {_UNIT_NAMES[unit]}{hint}")
    factor = _TIMESTAMP_FACTORS[unit]
    # checked in floating point first: a value beyond int64 must not wrap around
    approximate = numbers.to_numpy(np.float64) / factor
    check_plausible_times(approximate, values, unit, fail)
    if pd.api.types.is_integer_dtype(numbers.dtype):
        return numbers.to_numpy(np.int64) // factor
    return np.floor(approximate).astype(np.int64)


_UNIT_NAMES = {
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "iso": "ISO 8601 dates",
}


def check_plausible_times(
    seconds: np.ndarray,
    values: pd.Series,
    unit: TimestampUnit,
    fail: Callable[[int, str], DataError],
    *,
    now: float | None = None,
) -> None:
    """Raise ``fail(row, message)`` unless every time is a plausible date.

    A timestamp read in the wrong unit does not fail to parse: it gives a wrong date, and
    a split by time then holds out the wrong interactions. So, after conversion to seconds
    (``seconds``, floating point so that no value wraps around):

    - a time before 1970-01-01 is an error;
    - a time more than a year past ``now`` (default: the current time) is an error
      (milliseconds read as seconds land tens of thousands of years ahead);
    - a time before 1971-01-01 (`EARLIEST_TIMESTAMP`) is an error in milliseconds or finer
      units (seconds read as milliseconds land in January 1970) and, in seconds, when
      other values of the column are real dates (a column that mixes units, or holds
      placeholders such as 0). A column in seconds whose every value is that small holds
      order positions (1, 2, 3, ...) and is accepted.

    The message names the value, how many rows share the problem, the dates the other rows
    hold, and the unit the value would fit.
    """
    if len(seconds) == 0:
        return
    name = _UNIT_NAMES[unit]
    negative = seconds < 0
    if negative.any():
        row = int(np.flatnonzero(negative)[0])
        count = int(negative.sum())
        others = f" ({count:,} rows are)" if count > 1 else ""
        raise fail(
            row,
            f"timestamp {_shown(values.iloc[row])} in {name} is before 1970-01-01{others}; "
            f"expected {name} since 1970-01-01 (earlier times are not accepted)",
        )
    latest = (time.time() if now is None else now) + FUTURE_MARGIN_SECONDS
    future = seconds > latest
    early = seconds < EARLIEST_TIMESTAMP
    if unit == "iso" or (unit == "s" and early.all()):
        early = np.zeros_like(early)
    bad = future | early
    if not bad.any():
        return
    row = int(np.flatnonzero(bad)[0])
    count, total = int(bad.sum()), len(seconds)
    value = values.iloc[row]
    when = _as_date(seconds[row])
    if not future[row]:
        when += ", before 1971"
    elif seconds[row] <= _LATEST_DATETIME:
        when += ", more than a year from now"
    read_as = "" if unit == "iso" else f" in {name}"
    message = f"timestamp {_shown(value)}{read_as} would be {when}"
    good = ~bad
    if count > 1:
        message += f"; {count:,} of {total:,} rows have such times"
    if good.any():
        first = _as_date(seconds[good].min(), day=True)
        last = _as_date(seconds[good].max(), day=True)
        span = first if first == last else f"from {first} to {last}"
        others = (
            "the other row holds a date"
            if good.sum() == 1
            else f"the other {int(good.sum()):,} rows hold dates"
        )
        message += f", while {others} ({span})"
        if unit != "iso":
            message += (
                ": the column mixes units (or holds placeholders or typos); every timestamp "
                "must be in the same unit"
            )
    fits = _unit_that_fits(seconds[row], unit, latest)
    if fits is not None:
        message += f"; the value looks like {_UNIT_NAMES[fits]}"
        if not good.any():
            message += f": set the timestamp unit to {fits!r}"
    elif unit != "iso":
        message += f"; expected {name} since 1970-01-01"
    else:
        message += f"; expected dates up to {_as_date(latest, day=True)} (a year from now)"
    raise fail(row, message)


def _unit_that_fits(seconds: float, unit: TimestampUnit, latest: float) -> str | None:
    """The numeric unit in which the value that gave ``seconds`` would be a plausible date."""
    if unit == "iso":
        return None
    raw = seconds * _TIMESTAMP_FACTORS[unit]
    for other, factor in _TIMESTAMP_FACTORS.items():
        if other != unit and EARLIEST_TIMESTAMP <= raw / factor <= latest:
            return other
    return None


def _shown(value: object) -> str:
    """A value for a message: numbers as written, text quoted."""
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value) if isinstance(value, str) else str(value)


def _as_date(seconds: float, *, day: bool = False) -> str:
    if seconds > _LATEST_DATETIME:
        return "after the year 9999"
    moment = pd.Timestamp(int(seconds), unit="s")
    return moment.strftime("%Y-%m-%d" if day else "%Y-%m-%d %H:%M:%S")


def numeric_column(
    values: pd.Series,
    *,
    path: Path | str | None,
    column: str,
    meaning: str,
    line_of_row: Any = None,
) -> np.ndarray:
    """Parse a column of numbers (ratings, counts), reporting the first unreadable value.

    Missing values, numbers that are not finite (``inf``, ``NaN``) and values that are not
    numbers or text (lists, dates) are errors; true/false count as 1 and 0.
    """
    odd = first_odd_value(values, accept_bool=True)
    if odd is not None:
        line = line_of_row(odd) if line_of_row is not None else None
        value = values.iloc[odd]
        raise DataError(
            f"cannot read {_clip(_shown(value))} ({type(value).__name__}) as the {meaning}: "
            "expected a number" + ("" if line is not None else f" (row {odd + 1})"),
            path=path,
            line=line,
            column=column,
        )
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna().to_numpy() | ~np.isfinite(numbers.to_numpy(np.float64))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        line = line_of_row(row) if line_of_row is not None else None
        value = values.iloc[row]
        if pd.isna(value):
            what = "missing " + meaning
        elif pd.isna(numbers.iloc[row]) and not _is_nan_text(value):
            what = f"cannot read {value!r} as the {meaning} (a number)"
        else:
            what = f"cannot read {_shown(value)} as the {meaning}: expected a finite number"
        where = "" if line is not None else f" (row {row + 1})"
        raise DataError(what + where, path=path, line=line, column=column)
    return numbers.to_numpy(np.float64)


def _is_nan_text(value: object) -> bool:
    return isinstance(value, str) and value.strip().lower() in ("nan", "-nan", "+nan")


def infer_field_type(values: pd.Series) -> pd.Series:
    """Text columns that hold only numbers become numbers (Int64 for integers); others stay."""
    if not (
        pd.api.types.is_object_dtype(values.dtype) or pd.api.types.is_string_dtype(values.dtype)
    ):
        return values
    present = values.dropna()
    if len(present) == 0 or not all(isinstance(v, str) for v in present.head(1000)):
        return values
    numbers = pd.to_numeric(present, errors="coerce")
    if numbers.isna().any():
        return values
    if all(_CANONICAL_INT.fullmatch(v.strip()) for v in present):
        return pd.to_numeric(values).astype("Int64")
    if any(_LEADING_ZERO.match(v.strip()) for v in present):
        return values  # codes such as "007": the zeros carry meaning
    return pd.to_numeric(values).astype(np.float64)


def build_info(
    *,
    format_name: str,
    source: Path | str,
    files: Mapping[str, str],
    default_text_template: str | None,
    **extra: Any,
) -> dict[str, Any]:
    """The ``Dataset.info`` every loader records: format, source, files with sha256."""
    info: dict[str, Any] = {
        "format": format_name,
        "source": str(source),
        "files": dict(files),
    }
    if default_text_template:
        info["default_text_template"] = default_text_template
    info.update(extra)
    return info
