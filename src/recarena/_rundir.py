"""The run folder: created with clear errors, and held by one process at a time.

A run folder is written by one ``recarena run`` at a time. Two runs of the same experiment
at once would compute everything twice, overwrite each other's files and share the
checkpoint folders of long trainings, which either may delete while the other saves. So a
run holds the folder's lock file, `LOCK_FILE`, from before it writes anything (even before
it removes the temporary files a killed writer left, so it can never remove a live run's)
until it ends, normally or by an exception. The file names its holder: process id, host
name, start time and what it is doing (``run`` or ``report``).

Where the system has ``fcntl`` (Linux, macOS) the lock is an exclusive ``flock`` on that
file, which the kernel releases when the holder dies, however it dies: a lock file whose
``flock`` is free was left by a process that is gone, and is taken over with a message.
Elsewhere, or on a file system without ``flock``, the file is created with ``O_CREAT |
O_EXCL``; a file left there names a process id, and is taken over only when that process
is no longer running on this host (a lock of another host is never taken over: the message
says to remove the file once no run is in progress).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from recarena.errors import ArtifactError, RunDirectoryError, RunLockedError

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: the O_EXCL fallback
    fcntl = None  # type: ignore[assignment]

#: the lock file in every run folder while a process holds it
LOCK_FILE = "run.lock"
#: a lock file left empty this many seconds (a holder killed between creating and writing
#: it, without ``flock``) is stale
EMPTY_LOCK_GRACE_S = 60.0


def ensure_run_directory(run_dir: str | os.PathLike[str]) -> Path:
    """Create ``run_dir`` and its parents, or say clearly why it cannot be a run folder.

    Raises
    ------
    recarena.errors.RunDirectoryError
        ``run_dir`` or a folder above it is a file, or the nearest folder that exists is
        not writable; the message names the path and what was expected.
    """
    run_dir = Path(run_dir)
    existing = next((p for p in (run_dir, *run_dir.parents) if p.exists()), None)
    if existing is not None:
        if not existing.is_dir():
            if existing == run_dir:
                raise RunDirectoryError(
                    f"run folder {run_dir} is a file, expected a folder: move the file away "
                    "or choose another output folder (--output-dir)"
                )
            raise RunDirectoryError(
                f"output folder {existing} is a file, expected a folder to hold the run "
                f"folder {run_dir}: choose another output folder (--output-dir)"
            )
        if not _writable(existing):
            expected = (
                "a folder RecArena can write to"
                if existing == run_dir
                else f"a folder RecArena can create the run folder {run_dir} in"
            )
            raise RunDirectoryError(
                f"{'run folder' if existing == run_dir else 'folder'} {existing} is not "
                f"writable by this user, expected {expected}: choose another output folder "
                "(--output-dir) or change its permissions"
            )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirectoryError(
            f"cannot create run folder {run_dir}: {exc.strerror or exc}; expected a folder "
            "RecArena can write to (choose another output folder with --output-dir)"
        ) from None
    return run_dir


def _writable(folder: Path) -> bool:
    """This process may create files in ``folder`` (always true for root)."""
    return os.access(folder, os.W_OK | os.X_OK)


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or held) a run folder's lock, as its lock file says."""

    pid: int
    host: str
    started: str
    purpose: str = "run"

    @classmethod
    def me(cls, purpose: str) -> LockHolder:
        return cls(os.getpid(), socket.gethostname(), time.strftime("%Y-%m-%dT%H:%M:%S"), purpose)

    @classmethod
    def parse(cls, text: str) -> LockHolder | None:
        """The holder a lock file's text names, or None when it names none (empty, damaged)."""
        try:
            data = json.loads(text)
            return cls(
                int(data["pid"]),
                str(data["host"]),
                str(data.get("started", "?")),
                str(data.get("purpose", "run")),
            )
        except (ValueError, TypeError, KeyError):
            return None

    def describe(self) -> str:
        """``pid 1234 on host NAME (a run started 2026-01-01T10:00:00)``."""
        if self.pid <= 0:
            return "another process (its lock file does not say which)"
        return f"pid {self.pid} on host {self.host} (a {self.purpose} started {self.started})"

    def is_alive(self) -> bool | None:
        """Whether the holder is running: None when it cannot be told (another host)."""
        if self.host != socket.gethostname():
            return None
        return pid_is_alive(self.pid)


#: the holder of a lock whose file does not name it (its holder has not written it yet)
UNKNOWN_HOLDER = LockHolder(0, "?", "?")


def pid_is_alive(pid: int) -> bool | None:
    """Whether a process ``pid`` runs on this host; None where it cannot be told."""
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return None
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _locked_error(folder: Path, path: Path, holder: LockHolder | None) -> RunLockedError:
    who = (holder or UNKNOWN_HOLDER).describe()
    return RunLockedError(
        f"run folder {folder} is in use by {who}: wait for it to end, or use another output "
        f"folder (--output-dir). If no run is in progress there, remove the lock file {path}",
        path=folder,
        holder=holder,
    )


class RunLock:
    """The lock of one run folder, held from `acquire` until `release`.

    Use it as a context manager: the lock is released when the block ends, normally or by
    an exception (and by the kernel when the process dies, where ``flock`` exists).

    Parameters
    ----------
    folder
        The run folder; it is created (`ensure_run_directory`) when it does not exist.
    purpose
        What the holder does (``run``, ``report``), written into the lock file.
    on_event
        Receives the message that a stale lock was taken over.

    Raises
    ------
    recarena.errors.RunLockedError
        From `acquire`: a live process holds the folder (the message names the folder and
        the holder's pid, host and start time).
    recarena.errors.RunDirectoryError
        From `acquire`: the folder cannot be created or written.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        purpose: str = "run",
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.purpose = purpose
        self.on_event = on_event or (lambda msg: None)
        self.holder: LockHolder | None = None
        self._fd: int | None = None
        self._flocked = False

    # ---------------------------------------------------------------- acquiring
    def acquire(self) -> RunLock:
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this RunLock")
        ensure_run_directory(self.folder)
        me = LockHolder.me(self.purpose)
        fd = self._acquire_flock() if fcntl is not None else None
        self._flocked = fd is not None
        if fd is None:
            fd = self._acquire_exclusive()
        self._fd = fd
        try:
            payload = json.dumps(asdict(me)).encode() + b"\n"
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, payload)
            os.fsync(fd)
        except BaseException:
            self.release()
            raise
        self.holder = me
        return self

    def _open(self, flags: int) -> int:
        try:
            return os.open(self.path, flags, 0o666)
        except FileExistsError:
            raise
        except OSError as exc:
            raise RunDirectoryError(
                f"cannot create the lock file {self.path}: {exc.strerror or exc}; expected a "
                "run folder RecArena can write to (choose another output folder with "
                "--output-dir)"
            ) from None

    def _acquire_flock(self) -> int | None:
        """An ``flock``-ed descriptor of the lock file, or None where ``flock`` fails."""
        assert fcntl is not None
        while True:
            fd = self._open(os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = LockHolder.parse(_read(fd))
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise _locked_error(self.folder, self.path, holder) from None
                # a file system without flock (ENOLCK, EOPNOTSUPP): create the file instead
                return None
            # the holder may have released (and removed) the file between our open and our
            # flock: then we hold a removed file, and must try the new one
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            previous = LockHolder.parse(_read(fd))
            if previous is not None:
                self.on_event(
                    f"run folder {self.folder}: taking over the lock of {previous.describe()}, "
                    "which ended without releasing it"
                )
            return fd

    def _acquire_exclusive(self) -> int:
        """The descriptor of a lock file this process created (``O_CREAT | O_EXCL``)."""
        for _ in range(5):
            try:
                return self._open(os.O_RDWR | os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                pass
            try:
                text = self.path.read_text(encoding="utf-8", errors="replace")
                age = time.time() - self.path.stat().st_mtime
            except FileNotFoundError:
                continue  # released meanwhile: try again
            holder = LockHolder.parse(text)
            if holder is None:
                if age < EMPTY_LOCK_GRACE_S:  # being written by its creator, most likely
                    raise _locked_error(self.folder, self.path, None)
                stale = "a lock file that names no process"
            elif holder.is_alive() is False:
                stale = f"the lock of {holder.describe()}, which is no longer running"
            else:
                raise _locked_error(self.folder, self.path, holder)
            self.on_event(f"run folder {self.folder}: taking over {stale}")
            with contextlib.suppress(FileNotFoundError):
                # only the stale file: another process may have taken it over meanwhile
                # (without flock a small window remains, where both would remove it)
                if self.path.read_text(encoding="utf-8", errors="replace") == text:
                    self.path.unlink()
        raise _locked_error(self.folder, self.path, None)

    # ---------------------------------------------------------------- releasing
    def release(self) -> None:
        """Remove the lock file and let the folder go; doing it twice does nothing."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        self.holder = None
        try:
            ours = os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            ours = False
        if self._flocked:
            # removed while still held, so whoever opens the path next creates a new file;
            # a process that opened this one meanwhile notices (samestat) and tries again
            try:
                if ours:
                    self.path.unlink(missing_ok=True)
            finally:
                os.close(fd)
        else:
            os.close(fd)  # first: an open file cannot be removed on Windows
            if ours:
                self.path.unlink(missing_ok=True)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc_info: Any) -> None:
        self.release()


def _read(fd: int) -> str:
    """The lock file's text (what fits in 4 KiB; a holder writes about 100 bytes)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 4096).decode("utf-8", errors="replace")
    except OSError:
        return ""


def lock_holder(folder: str | os.PathLike[str]) -> LockHolder | None:
    """Who holds ``folder``'s lock now (None when nobody does, or nobody alive does).

    Reads only: nothing is created, taken over or removed.
    """
    path = Path(folder) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        holder = LockHolder.parse(_read(fd))
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return holder or UNKNOWN_HOLDER
            else:
                return None  # nobody holds it: a stale file
        return holder if holder is not None and holder.is_alive() is not False else None
    finally:
        os.close(fd)


def require_finished_setup(run_dir: str | os.PathLike[str]) -> Path:
    """Raise unless ``run_dir`` is a run folder whose data and split were saved (``run.json``).

    A run writes ``config.toml`` first and ``run.json`` once its data set and split are
    saved; a folder without ``run.json`` holds no results to report. The message says
    whether a run is still in progress there (`lock_holder`) or stopped early.

    Raises
    ------
    recarena.errors.ArtifactError
        ``run_dir`` is not a run folder, or holds no finished setup yet.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").is_file():
        raise ArtifactError(f"{run_dir}: not a run directory (config.toml is missing)")
    if (run_dir / "run.json").is_file():
        return run_dir
    holder = lock_holder(run_dir)
    if holder is not None:
        raise ArtifactError(
            f"no finished setup in {run_dir} yet: the run in progress there "
            f"({holder.describe()}) has not saved its data and split; try again later"
        )
    raise ArtifactError(
        f"no finished setup in {run_dir} (run.json is missing: its run stopped before the "
        "data and the split were saved): run `recarena run CONFIG` with the experiment's "
        f"config first (the config it was started with is {run_dir / 'config.toml'})"
    )


def check_run_folder(run_dir: str | os.PathLike[str]) -> Any:
    """Check a run folder before a report reads it or writes anything into it.

    The folder must hold a finished setup (`require_finished_setup`), and what it holds
    must be what its ``config.toml`` describes, undamaged:

    - ``config.toml`` is a valid experiment whose data/split/evaluation/seed setup hash is
      the one ``run.json`` records (another experiment's config, or one edited since, would
      relabel the saved results: the message names the first setting that differs, read
      from the split's ``stage.json``), and the data set's and the split's ``stage.json``
      carry that configuration's hashes;
    - every file whose sha256 the data set's or the split's ``stage.json`` or a model's
      ``DONE.json`` records still has it; a folder written before they recorded checksums
      has its files checked for being readable (`recarena._artifacts.unreadable`);
    - every ``DONE.json`` of a model that ``config.toml`` names was made by that model's
      configuration, and every ``DONE.json``, ``FAILED.json``, ``run.json`` and
      ``environment.json`` is valid JSON.

    Reads only; nothing is written.

    Returns
    -------
    recarena.config.ExperimentConfig
        The experiment of ``config.toml``.

    Raises
    ------
    recarena.errors.ConfigError
        ``config.toml`` is not a valid experiment (the message names it).
    recarena.errors.DamagedArtifactError
        A file is damaged: the message names it and what is wrong.
    recarena.errors.ArtifactError
        The folder is not a finished run folder, or ``config.toml`` does not describe it:
        the message names the file and what differs.
    """
    from recarena._artifacts import (
        damaged_error,
        find_damage,
        folder_files,
        read_json_artifact,
        unreadable,
    )
    from recarena.config import load_config
    from recarena.experiment.artifacts import (
        FIRST_STAGE_PREFIX,
        MODEL_FOLDER_EXCLUDE,
        STAGE_FILE,
        data_hash,
        model_hash,
        setup_hash,
    )
    from recarena.experiment.seeds import model_runs

    run_dir = require_finished_setup(run_dir)
    config_path = run_dir / "config.toml"
    config = load_config(config_path)
    dump = config.model_dump(mode="json")
    state = read_json_artifact(run_dir / "run.json")
    if not isinstance(state, dict):
        raise damaged_error(run_dir / "run.json", "not a JSON object")
    stamps: dict[str, Any] = {}
    for stage in ("dataset", "split"):
        path = run_dir / stage / STAGE_FILE
        stamps[stage] = read_json_artifact(path) if path.exists() else None
        if stamps[stage] is not None and not isinstance(stamps[stage], dict):
            raise damaged_error(path, "not a JSON object")
    redo = "run the experiment again with its own config (`recarena run CONFIG`)"

    setup = setup_hash(config)
    if state.get("setup_hash") != setup:
        settings = (stamps["split"] or {}).get("settings")
        current = {k: dump[k] for k in ("data", "split", "evaluation", "seed")}
        diff = _first_difference(settings, current) if isinstance(settings, dict) else None
        raise ArtifactError(
            f"{config_path} does not describe the run in {run_dir}: its data/split/evaluation "
            "setup differs from the one run.json records"
            + (f" ({diff})" if diff else "")
            + "; the saved results would be reported under the wrong settings. Put back the "
            f"config the run was made with, or {redo}"
        )
    for stage, digest in (("dataset", data_hash(config)), ("split", setup)):
        stamp = stamps[stage]
        if stamp is not None and stamp.get("config_hash") != digest:
            raise ArtifactError(
                f"{run_dir / stage / STAGE_FILE} records another configuration than "
                f"{config_path}: the {stage} was not made by this experiment; {redo}"
            )
    if (run_dir / "environment.json").exists():
        read_json_artifact(run_dir / "environment.json")

    def verify(base: Path, recorded: Any, recorded_in: str, paths: list[Path]) -> None:
        """``recorded``: ``{path relative to base: sha256}``, or None for a folder written
        before checksums were recorded: then each of ``paths`` must be readable at least."""
        if isinstance(recorded, dict):
            damaged = find_damage(base, recorded, recorded_in)
            if damaged:
                rel, why = damaged[0]
                raise damaged_error(base / rel, why)
            return
        for path in paths:
            why = unreadable(path)
            if why is not None:
                raise damaged_error(path, why)

    for stage in ("dataset", "split"):
        folder = run_dir / stage
        verify(
            folder,
            (stamps[stage] or {}).get("files"),
            f"{stage}/{STAGE_FILE}",
            folder_files(folder, exclude=(STAGE_FILE,)),
        )

    models = {mc.display_name: mc for mc in model_runs(config)}
    running = lock_holder(run_dir)
    models_dir = run_dir / "models"
    folders = sorted(p for p in models_dir.iterdir() if p.is_dir()) if models_dir.is_dir() else []
    for mdir in folders:
        done, failed = mdir / "DONE.json", mdir / "FAILED.json"
        if not done.exists():
            if failed.exists():
                read_json_artifact(failed)
            continue
        record = read_json_artifact(done)
        if not isinstance(record, dict):
            raise damaged_error(done, "not a JSON object")
        mc = models.get(mdir.name)
        if mc is not None and record.get("model_hash") not in (None, model_hash(mc)):
            saved = record.get("model_config")
            diff = (
                _first_difference(saved, mc.model_dump(mode="json", exclude_none=True))
                if isinstance(saved, dict)
                else None
            )
            hint = (
                f" (the run in progress there, {running.describe()}, has not recomputed it yet)"
                if running is not None and running.purpose == "run"
                else ""
            )
            raise ArtifactError(
                f"{done} holds the results of another configuration of model {mdir.name!r} "
                f"than {config_path} gives"
                + (f" ({diff})" if diff else "")
                + hint
                + f"; {redo} to recompute it"
            )
        first_stage = [
            p
            for p in (run_dir / "split").glob(f"{FIRST_STAGE_PREFIX}*.npz")
            if any(
                p.name.startswith(f"{FIRST_STAGE_PREFIX}{proto.label}__")
                for proto in config.evaluation.protocols
                if proto.kind == "first_stage" and proto.first_stage == mdir.name
            )
        ]
        verify(
            run_dir,  # a model's checksums are keyed by the path from the run folder
            record.get("artifacts"),
            done.relative_to(run_dir).as_posix(),
            folder_files(mdir, exclude=MODEL_FOLDER_EXCLUDE, recursive=True) + first_stage,
        )
    return config


#: what `first_difference` gives for a key one side does not have
MISSING = object()


def first_difference(
    a: Any, b: Any, path: str = "", *, close: Any = None
) -> tuple[str, Any, Any] | None:
    """The first key path where two JSON-like values differ, and the value on each side.

    Dict keys are walked in sorted order; a key one side lacks gives `MISSING` there.
    ``close(x, y)``, when given, decides whether two floats count as equal.
    """
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in a or key not in b:
                return sub, a.get(key, MISSING), b.get(key, MISSING)
            found = first_difference(a[key], b[key], sub, close=close)
            if found:
                return found
        return None
    if close is not None and isinstance(a, float) and isinstance(b, float) and close(a, b):
        return None
    return None if a == b else (path or "value", a, b)


def _first_difference(recorded: Any, current: Any) -> str | None:
    """The first setting where the run's record and config.toml differ, with both values."""
    found = first_difference(recorded, current)
    if found is None:
        return None
    path, before, now = found
    if now is MISSING:
        return f"{path}: {_short(before)} when the run was made, unset in config.toml"
    if before is MISSING:
        return f"{path}: unset when the run was made, {_short(now)} in config.toml"
    return f"{path}: {_short(before)} when the run was made, {_short(now)} in config.toml"


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"
