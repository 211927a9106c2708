"""Atomic writes and small helpers for run artifacts.

A run that is killed must never leave a half-written file that a later run would trust:
everything is written to a temporary file in the same folder and renamed into place.
The temporary files are named ``.NAME.XXXXXXXX.tmp`` (`TEMPORARY_FILE_PATTERN`), so what a
killed writer leaves behind can be recognised and removed (`remove_stale_temporaries`).
A file renamed into place gets the mode of any newly created file (``0o666`` less the
umask), not the ``0o600`` of its temporary file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from recarena import _faults

#: the names `atomic_path` gives its temporary files: ``.`` + the target's name + ``.`` +
#: `tempfile.mkstemp`'s 8 random characters + ``.tmp``
TEMPORARY_FILE_PATTERN = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def _umask() -> int:
    """The process's umask, read without changing it where the system tells (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(*, directory: bool = False) -> int:
    """The mode ``open`` or ``mkdir`` would give a new file or folder under the umask."""
    return (0o777 if directory else 0o666) & ~_umask()


def publish_mode(path: str | os.PathLike[str]) -> None:
    """Give a temporary file or folder the default mode before it is renamed into place.

    `tempfile.mkstemp` creates files ``0o600`` and `tempfile.mkdtemp` folders ``0o700``;
    renamed into place they would keep that, and nobody else could read a report.
    """
    os.chmod(path, default_mode(directory=Path(path).is_dir()))


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files a killed `atomic_path` left anywhere under ``folder``.

    Only regular files named like `TEMPORARY_FILE_PATTERN` are removed; every other file
    and every folder is left alone. Call it only where no other process is writing: in a
    run folder, with its lock held (`recarena._rundir.RunLock`).

    Returns
    -------
    list of Path
        The files removed.
    """
    removed = []
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            path = Path(dirpath) / name
            if TEMPORARY_FILE_PATTERN.match(name) and path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed.append(path)
    return sorted(removed)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    The file renamed into place has the default mode (``0o666`` less the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _faults.point(f"write:{path.name}")  # the new content is written, not yet in place
        publish_mode(tmp_path)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; it replaces ``path`` only when the block succeeds."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON, atomically (NumPy scalars and arrays allowed)."""
    with atomic_open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, default=_json_default, allow_nan=True)
        fh.write("\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def save_npz(path: str | os.PathLike[str], **arrays: np.ndarray) -> None:
    """``np.savez_compressed``, atomically."""
    with atomic_open(path, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def jsonable(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with NumPy scalars as Python numbers and paths as strings, for JSON."""
    out = {}
    for key, value in params.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, Path):
            value = str(value)
        out[key] = value
    return out
