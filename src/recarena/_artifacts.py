"""Checksums of run artifacts, and reading them with errors that name the damaged file.

A run records the sha256 of every file a stage wrote: the data set's and the split's in
their ``stage.json`` (``files``), a model's in its ``DONE.json`` (``artifacts``). Before a
resumed run trusts a stage or a finished model, and before ``recarena report`` reads a run
folder, those checksums are verified (`find_damage`): a truncated or altered file is
named, and the run recomputes what it belongs to. Run folders written before checksums
existed carry none; their files are trusted as before, and only checked for being
readable at all (`unreadable`: a JSON file that parses, a Parquet file with its footer, an
``.npz`` with its zip directory), which is what a truncated file fails.

Reading an artifact goes through `read_json_artifact`, `read_parquet_artifact` and
`load_npz_artifact`, which turn a damaged file into a `DamagedArtifactError` naming it
instead of a ``JSONDecodeError``, ``ArrowInvalid`` or ``BadZipFile``.
"""

from __future__ import annotations

import functools
import os
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from recarena._io import TEMPORARY_FILE_PATTERN, read_json, sha256_file
from recarena.errors import DamagedArtifactError

#: what a damaged file raises when it is read, besides `DamagedArtifactError`: truncated
#: JSON, Parquet (``ArrowInvalid`` is a ``ValueError``), ``.npz`` (``BadZipFile``, a zip
#: member cut short: ``EOFError``, ``zlib.error``), a missing key or member (``KeyError``)
READ_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    OSError,
    EOFError,
    KeyError,
    zipfile.BadZipFile,
    zlib.error,
)


def read_errors() -> tuple[type[BaseException], ...]:
    """`READ_ERRORS` and every pyarrow error (``ArrowException``), where pyarrow is here."""
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover - pandas' parquet support needs it
        return READ_ERRORS
    return (*READ_ERRORS, pa.ArrowException)


#: how `find_damage` and `unreadable` begin the reason of a file that is not there
MISSING = "missing"


def describe_damage(path: str | os.PathLike[str], why: str) -> str:
    """``PATH is damaged (WHY)``, or ``PATH is missing (...)`` for a missing file."""
    if why.startswith(MISSING):
        rest = why[len(MISSING) :].lstrip(", ")
        return f"{path} is missing" + (f" ({rest})" if rest else "")
    return f"{path} is damaged ({why})"


# ---------------------------------------------------------------------- checksums
@functools.lru_cache(maxsize=4096)
def _sha256_of(path: str, mtime_ns: int, size: int, inode: int) -> str:
    return sha256_file(path)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file, computed once per version of it (path, mtime, size, inode).

    A run checks a finished model's files more than once (the config check, then the
    model itself), and ``recarena report`` checks before it reads: each file is hashed once.
    """
    st = os.stat(path)
    return _sha256_of(os.fspath(path), st.st_mtime_ns, st.st_size, st.st_ino)


def file_checksums(root: str | os.PathLike[str], paths: Iterable[Path]) -> dict[str, str]:
    """``{path relative to root (POSIX): sha256}`` of ``paths``, sorted by path."""
    root = Path(root)
    found = {p.relative_to(root).as_posix(): file_sha256(p) for p in paths}
    return dict(sorted(found.items()))


def folder_files(
    folder: Path, *, exclude: Iterable[str] = (), recursive: bool = False
) -> list[Path]:
    """The regular files of ``folder`` a stage wrote: not the temporaries a killed writer
    left, not the names in ``exclude`` (file names, or folder names when ``recursive``)."""
    skip = set(exclude)
    out = []
    if recursive:
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if d not in skip)
            out.extend(Path(dirpath) / n for n in filenames)
    else:
        out = list(folder.iterdir()) if folder.is_dir() else []
    return sorted(
        p
        for p in out
        if p.name not in skip
        and not TEMPORARY_FILE_PATTERN.match(p.name)
        and p.is_file()
        and not p.is_symlink()
    )


def find_damage(
    root: str | os.PathLike[str], recorded: Mapping[str, str], recorded_in: str
) -> list[tuple[str, str]]:
    """The files of ``recorded`` (``{relative path: sha256}``) that are missing or changed.

    Returns
    -------
    list of (str, str)
        ``(relative path, why)`` for every damaged file, in the order of ``recorded``;
        ``why`` says what is wrong, naming ``recorded_in`` (the file that holds the
        checksums); it starts with `MISSING` for a file that is not there
        (`describe_damage` words both).
    """
    root = Path(root)
    damaged = []
    for rel, digest in recorded.items():
        path = root / rel
        if not path.is_file():
            damaged.append((rel, f"{MISSING}, though {recorded_in} records it"))
        elif file_sha256(path) != digest:
            damaged.append((rel, f"its sha256 differs from the one {recorded_in} records"))
    return damaged


# ---------------------------------------------------------------------- readability
def unreadable(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot be read as the file type its name says, or None when it can.

    A cheap check for files without a recorded checksum: JSON must parse, a Parquet file
    must have its footer (schema and row groups), an ``.npz`` its zip directory. A file cut
    short fails it; a file altered in the middle may pass (a checksum finds that).
    """
    path = Path(path)
    try:
        if path.suffix == ".json":
            read_json(path)
        elif path.suffix == ".parquet":
            import pyarrow.parquet as pq

            pq.read_metadata(path)
        elif path.suffix == ".npz":
            with zipfile.ZipFile(path) as z:
                z.namelist()
        elif path.suffix == ".toml":
            import tomllib

            tomllib.loads(path.read_text(encoding="utf-8"))
        elif not path.is_file():
            raise FileNotFoundError(path)
    except FileNotFoundError:
        return MISSING
    except (*read_errors(), UnicodeDecodeError) as exc:
        return f"not a readable {path.suffix.lstrip('.') or 'file'} file: {_one_line(exc)}"
    return None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:199] + "…"


def damaged_error(path: str | os.PathLike[str], why: str) -> DamagedArtifactError:
    """The error for a damaged artifact: the file, what is wrong, how to repair it."""
    return DamagedArtifactError(
        f"{describe_damage(path, why)}; run the experiment again (`recarena run CONFIG`, "
        "which recomputes what the file belongs to)",
        path=path,
        reason=why,
    )


# ---------------------------------------------------------------------- reading
def read_json_artifact(path: str | os.PathLike[str]) -> Any:
    """A run folder's JSON file; a file that does not parse raises `DamagedArtifactError`."""
    try:
        return read_json(path)
    except (ValueError, UnicodeDecodeError) as exc:
        raise damaged_error(path, f"not valid JSON: {_one_line(exc)}") from None


def read_parquet_artifact(path: str | os.PathLike[str], **kwargs: Any) -> Any:
    """``pandas.read_parquet``; a file that cannot be read raises `DamagedArtifactError`.

    A missing file raises ``FileNotFoundError`` as before.
    """
    import pandas as pd

    try:
        return pd.read_parquet(path, **kwargs)
    except FileNotFoundError:
        raise
    except read_errors() as exc:
        raise damaged_error(path, f"not a readable parquet file: {_one_line(exc)}") from None


def load_npz_artifact(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Every array of an ``.npz`` file; a damaged file raises `DamagedArtifactError`."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            return {name: z[name] for name in z.files}
    except FileNotFoundError:
        raise
    except read_errors() as exc:
        raise damaged_error(path, f"not a readable npz file: {_one_line(exc)}") from None


def json_or_damage(path: Path) -> tuple[Any, str | None]:
    """``(content, None)``, or ``(None, why)`` when ``path`` is not valid JSON."""
    try:
        return read_json(path), None
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"not valid JSON: {_one_line(exc)}"
