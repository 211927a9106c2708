"""Errors that RecArena raises for problems a user can fix.

Every error here carries a message written for the person who runs RecArena: it names the
file, the line or field, and what was expected. The CLI prints these without a traceback;
any other exception is a bug in RecArena and is shown with its traceback.
"""

from __future__ import annotations

from os import PathLike


class RecArenaError(Exception):
    """Base class of the errors a user can act on."""


class DataError(RecArenaError):
    """Input data that cannot be read as expected.

    Parameters
    ----------
    message
        What is wrong and what was expected.
    path
        The file that holds the problem, when there is one.
    line
        1-based line number in that file, when known.
    column
        The column or field name, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | PathLike[str] | None = None,
        line: int | None = None,
        column: str | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.line = line
        self.column = column
        self.reason = message
        where = []
        if self.path is not None:
            where.append(self.path + (f":{line}" if line is not None else ""))
        elif line is not None:
            where.append(f"line {line}")
        if column is not None:
            where.append(f"column {column!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class ConfigError(RecArenaError):
    """An experiment configuration that is invalid (unknown key, bad value, missing field)."""


class ModelNotAvailableError(RecArenaError):
    """A model (pretrained weights or package) that is not installed here, with how to get it."""


class ArtifactError(RecArenaError):
    """A run directory whose saved artifacts are missing, damaged or from another setup."""


class DamagedArtifactError(ArtifactError):
    """A run artifact that is damaged: cut short, altered, or not readable as its type.

    Parameters
    ----------
    message
        The file, what is wrong with it and how to repair it.
    path
        The damaged file.
    reason
        What is wrong, without the path (``its sha256 differs from ...``).
    """

    def __init__(self, message: str, *, path: str | PathLike[str], reason: str) -> None:
        super().__init__(message)
        self.path = str(path)
        self.reason = reason


class RunDirectoryError(RecArenaError):
    """A run directory that cannot be used: a file where a folder was expected, not writable."""


class RunLockedError(RunDirectoryError):
    """A run directory that another live process holds (a run in progress there).

    Parameters
    ----------
    message
        Which folder, who holds it (pid, host, start time) and what to do.
    path
        The run directory.
    holder
        The holder its lock file names (`recarena._rundir.LockHolder`), when it names one.
    """

    def __init__(self, message: str, *, path: str | PathLike[str], holder: object = None) -> None:
        super().__init__(message)
        self.path = str(path)
        self.holder = holder
