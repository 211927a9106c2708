"""Reading large files once, line by line: compressed streams, checksums, per-line errors.

The domain loaders (Amazon reviews, Last.fm listening events) read files of many gigabytes,
so they never hold a file's text in memory: `StreamedFile` decompresses ``.gz``, ``.bz2``
and ``.xz`` on the fly, hands out one line at a time with its 1-based number, and computes
the sha256 of the file's bytes on the way (what `recarena.data.loaders` records for every
file read). Every problem becomes a `DataError` naming the file and the line.
"""

from __future__ import annotations

import ast
import bz2
import contextlib
import gzip
import hashlib
import io
import logging
import lzma
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from recarena.config import DataConfig
from recarena.data.loaders._reading import MAX_LINE_BYTES, line_too_long
from recarena.errors import DataError

log = logging.getLogger(__name__)

try:  # orjson parses JSON several times faster; the standard library is the fallback
    import orjson

    json_loads = orjson.loads
    JSON_ERRORS: tuple[type[Exception], ...] = (orjson.JSONDecodeError, ValueError)
    JSON_PARSER = "orjson"
except ImportError:  # pragma: no cover - depends on the environment
    import json

    json_loads = json.loads
    JSON_ERRORS = (ValueError,)
    JSON_PARSER = "json"

#: Suffixes of the compressed files `StreamedFile` opens.
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz")

_READ_CHUNK = 1 << 20
_LINE_BLOCK = 1 << 22
_DECOMPRESSORS: dict[str, Any] = {
    ".gz": lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
    ".bz2": lambda raw: bz2.BZ2File(raw, mode="rb"),
    ".xz": lambda raw: lzma.LZMAFile(raw, mode="rb"),  # noqa: SIM115 - closed in open()
}


class _HashingReader(io.RawIOBase):
    """A raw reader that feeds every byte it reads into a sha256 digest."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._raw.readinto(buffer)  # type: ignore[attr-defined]
        if n:
            self.digest.update(memoryview(buffer)[:n])
        return n or 0

    def drain(self) -> None:
        """Read what is left, so the digest covers the whole file."""
        while chunk := self._raw.read(_READ_CHUNK):
            self.digest.update(chunk)


class StreamedFile:
    """One text file (plain or compressed) read once, line by line.

    Parameters
    ----------
    path
        The file; ``.gz``, ``.bz2`` and ``.xz`` files are decompressed while reading.

    After `lines` has run to the end, `sha256` is the checksum of the file's bytes as stored
    (compressed ones included) and `n_lines` the number of lines read.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.sha256: str | None = None
        self.n_lines = 0
        if not self.path.exists():
            raise DataError("file not found", path=self.path)
        if self.path.is_dir():
            raise DataError("expected a file, found a folder", path=self.path)

    @contextlib.contextmanager
    def open(self) -> Iterator[BinaryIO]:
        """The decompressed bytes as a binary stream (for `pandas.read_csv` in chunks).

        On a normal exit the rest of the file is read for the checksum and `sha256` is set.
        """
        opener = _DECOMPRESSORS.get(self.path.suffix.lower())
        with open(self.path, "rb") as raw:
            hashing = _HashingReader(raw)
            buffered = io.BufferedReader(hashing, buffer_size=_READ_CHUNK)
            stream: BinaryIO = opener(buffered) if opener else buffered  # type: ignore[assignment]
            try:
                yield stream
            finally:
                stream.close()
            hashing.drain()
            self.sha256 = hashing.digest.hexdigest()

    def lines(self) -> Iterator[tuple[int, bytes]]:
        """(line number, line bytes without the line end) of every line, blank ones included.

        A UTF-8 byte-order mark at the start is dropped; Windows line ends are accepted.
        """
        suffix = self.path.suffix.lower()
        number = 0
        with self.open() as stream:
            rest = b""
            try:
                # whole blocks split at once: far faster than readline() on a compressed stream
                while block := stream.read(_LINE_BLOCK):
                    if number == 0 and not rest and block.startswith(b"\xef\xbb\xbf"):
                        block = block[3:]  # a UTF-8 byte-order mark
                    lines = (rest + block).split(b"\n")
                    rest = lines.pop()
                    for line in lines:
                        number += 1
                        if len(line) > MAX_LINE_BYTES:
                            raise line_too_long(self.path, number, len(line))
                        yield number, (line[:-1] if line.endswith(b"\r") else line)
                    if len(rest) > MAX_LINE_BYTES:  # stop before the line fills memory
                        raise line_too_long(self.path, number + 1, None)
            except (EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
                raise DataError(
                    f"cannot read the {suffix or 'file'} stream after line {number} "
                    f"(the file is damaged or cut short): {exc}",
                    path=self.path,
                    line=number + 1,
                ) from None
            if rest:
                number += 1
                yield number, (rest[:-1] if rest.endswith(b"\r") else rest)
        self.n_lines = number


def decode_line(line: bytes, path: Path, number: int, *, fallback: str | None = "latin-1") -> str:
    """The text of one line: UTF-8, or ``fallback`` when the line is not valid UTF-8.

    Files such as Last.fm's ``artists.dat`` mix UTF-8 lines with latin-1 ones, so the
    decision is taken line by line. With ``fallback=None`` invalid UTF-8 is an error.
    """
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        if fallback is None:
            raise DataError(
                f"not valid UTF-8 text (bytes {line[exc.start : exc.start + 4]!r})",
                path=path,
                line=number,
            ) from None
        return line.decode(fallback)


def parse_json_line(
    line: bytes, path: Path, number: int, *, python_literals: bool = False
) -> dict[str, Any]:
    """The JSON object on one line of a JSON-lines file.

    Parameters
    ----------
    python_literals
        Also accept a Python dict literal (``{'asin': '0001', 'title': 'x'}``), read safely
        with `ast.literal_eval` (never evaluated as code): the Amazon 2014 metadata and a
        few 2018 metadata files are written that way.
    """
    try:
        value = json_loads(line)
    except JSON_ERRORS as exc:
        value = _python_literal(line) if python_literals else None
        if value is None:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            shown = line[:60].decode("utf-8", "replace") + ("…" if len(line) > 60 else "")
            raise DataError(
                f"not valid JSON ({reason}): {shown!r}; each line of a JSON-lines file holds "
                "one complete JSON object (is the line cut short?)",
                path=path,
                line=number,
            ) from None
    if not isinstance(value, dict):
        raise DataError(
            f"expected a JSON object ({{...}}) on the line, found {type(value).__name__}",
            path=path,
            line=number,
        )
    return value


def _python_literal(line: bytes) -> dict[str, Any] | None:
    text = line.decode("utf-8", "replace").strip()
    if not text.startswith("{"):
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def split_fields(
    text: str,
    separator: str,
    expected: int,
    path: Path,
    number: int,
    *,
    format_label: str,
    example: str = "",
) -> list[str]:
    """``text`` split on ``separator`` into exactly ``expected`` fields, else a `DataError`."""
    fields = text.split(separator)
    if len(fields) != expected:
        shape = f"; {format_label} lines read {example!r}" if example else ""
        clipped = text if len(text) <= 80 else text[:79] + "…"
        raise DataError(
            f"expected {expected} fields separated by {separator!r}, found {len(fields)}: "
            f"{clipped!r}{shape}",
            path=path,
            line=number,
        )
    return fields


def find_file(folder: Path, names: Sequence[str]) -> Path | None:
    """The first of ``names`` present in ``folder``, also as ``.gz``, ``.bz2`` or ``.xz``."""
    for name in names:
        for suffix in ("", *COMPRESSED_SUFFIXES):
            candidate = folder / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def warn_unused(config: DataConfig, format_name: str, keys: Sequence[str]) -> None:
    """Log the data settings written in the configuration that ``format_name`` ignores."""
    unused = [key for key in keys if key in config.model_fields_set]
    if unused:
        log.warning("data.%s not used by format %r", ", data.".join(unused), format_name)


def loader_options(config: DataConfig, format_name: str, allowed: Sequence[str]) -> dict:
    """``data.options`` for ``format_name``; an option it does not know is an error."""
    from recarena.errors import ConfigError

    unknown = sorted(set(config.options) - set(allowed))
    if unknown:
        known = ", ".join(allowed) if allowed else "none"
        raise ConfigError(
            f"data.options {unknown} are not options of format {format_name!r} (its options: {known})"
        )
    return dict(config.options)


__all__ = [
    "loader_options",
    "COMPRESSED_SUFFIXES",
    "JSON_ERRORS",
    "JSON_PARSER",
    "StreamedFile",
    "decode_line",
    "find_file",
    "json_loads",
    "parse_json_line",
    "split_fields",
    "warn_unused",
]
