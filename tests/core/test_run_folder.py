"""Runs that guard their folder (issue 11, items 7, 8, 9): one run per folder at a time,
clear errors for folders that cannot be used, and the whole experiment checked first."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from recarena import _rundir
from recarena._rundir import LOCK_FILE, RunLock, lock_holder
from recarena.config import parse_config
from recarena.errors import ArtifactError, ConfigError, RunDirectoryError, RunLockedError
from recarena.models.base import Recommender
from recarena.runner import ExperimentRunner, run_experiment
from tests.core.test_runner import _config

HOST = socket.gethostname()
MODELS = [{"name": "most_popular", "grid": {}}]


@pytest.fixture(params=["flock", "exclusive-create"])
def mechanism(request, monkeypatch):
    """Each lock test runs with ``flock`` and with the ``O_EXCL`` fallback."""
    if request.param == "exclusive-create":
        monkeypatch.setattr(_rundir, "fcntl", None)
    elif _rundir.fcntl is None:  # pragma: no cover - Windows
        pytest.skip("no fcntl here")
    return request.param


def _python(code: str, *args: str) -> subprocess.Popen:
    """A separate Python process that imports this checkout's RecArena."""
    src = str(Path(_rundir.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )


@contextlib.contextmanager
def held_by_another_process(folder: Path, purpose: str = "run") -> Iterator[int]:
    """A separate Python process holds ``folder``'s lock until the block ends; yields its pid."""
    code = (
        "import sys\n"
        "from recarena._rundir import RunLock\n"
        "with RunLock(sys.argv[1], purpose=sys.argv[2]):\n"
        "    print('held', flush=True)\n"
        "    sys.stdin.read()\n"
    )
    proc = _python(code, str(folder), purpose)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield proc.pid
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
    assert not (folder / LOCK_FILE).exists()  # released on its normal exit


def dead_pid() -> int:
    """The pid of a process that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_lock(folder: Path, pid: int, host: str = HOST) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    path.write_text(
        json.dumps({"pid": pid, "host": host, "started": "2026-01-01T00:00:00", "purpose": "run"})
    )
    return path


# ------------------------------------------------------------------ the lock (item 9)
PAUSED_RUN = """
import json, sys
from recarena.config import parse_config
from recarena.runner import run_experiment

paused = []

def event(msg):
    if msg.startswith(sys.argv[3]) and not paused:
        paused.append(msg)
        print("paused", flush=True)
        sys.stdin.readline()

run_experiment(parse_config(json.loads(sys.argv[1])), cache_dir=sys.argv[2], on_event=event)
"""


def test_two_runs_of_one_folder_one_fails_at_once(tmp_path):
    raw = _config(tmp_path, MODELS)
    run = tmp_path / "runs" / "t"
    # the first run, in another process, pauses before it reads the data
    first = _python(PAUSED_RUN, json.dumps(raw), str(tmp_path / "cache"), "data: loading")
    try:
        assert first.stdout is not None and first.stdout.readline().strip() == "paused"
        holder = lock_holder(run)
        assert holder is not None and (holder.pid, holder.host) == (first.pid, HOST)
        with pytest.raises(RunLockedError) as err:
            run_experiment(parse_config(raw), cache_dir=tmp_path / "cache")
        message = str(err.value)
        assert str(run) in message and f"pid {first.pid}" in message and HOST in message
        assert err.value.holder.pid == first.pid
        # the second run wrote nothing: the first is still before its data
        assert {p.name for p in run.iterdir()} == {LOCK_FILE, "config.toml", "environment.json"}
        # `recarena report` says a run is in progress and has no results yet
        with pytest.raises(ArtifactError, match=f"run in progress there .*pid {first.pid}"):
            _report(run)
    finally:
        assert first.stdin is not None
        first.stdin.close()
        assert first.wait(timeout=120) == 0
    assert not (run / LOCK_FILE).exists()
    events: list[str] = []
    run_experiment(parse_config(raw), cache_dir=tmp_path / "cache", on_event=events.append)
    assert any("most_popular: done earlier" in e for e in events)


def test_a_run_refuses_a_folder_another_process_holds(tmp_path, mechanism):
    raw = _config(tmp_path, MODELS)
    run = run_experiment(parse_config(raw), cache_dir=tmp_path / "cache").run_dir
    # a temporary file a live writer of the holder is writing
    live_temporary = run / "models" / "most_popular" / ".lists.npz.abcd1234.tmp"
    live_temporary.write_bytes(b"being written")
    with held_by_another_process(run) as pid:
        for overwrite in (False, True):
            with pytest.raises(RunLockedError, match=f"pid {pid} on host {HOST}"):
                run_experiment(parse_config(raw), cache_dir=tmp_path / "cache", overwrite=overwrite)
        # neither the removal of stale temporaries nor --overwrite touched the folder
        assert live_temporary.exists()
        assert (run / "run.json").exists() and (
            run / "models" / "most_popular" / "DONE.json"
        ).exists()


def test_a_stale_lock_is_taken_over_with_a_message(tmp_path, mechanism):
    raw = _config(tmp_path, MODELS)
    run = tmp_path / "runs" / "t"
    pid = dead_pid()
    write_lock(run, pid)
    events: list[str] = []
    result = run_experiment(parse_config(raw), cache_dir=tmp_path / "cache", on_event=events.append)
    assert not result.failed
    assert any(f"taking over the lock of pid {pid} on host {HOST}" in e for e in events)
    assert not (run / LOCK_FILE).exists()


def test_the_fallback_never_takes_over_a_live_or_foreign_lock(tmp_path, monkeypatch):
    monkeypatch.setattr(_rundir, "fcntl", None)
    folder = tmp_path / "run"
    write_lock(folder, os.getpid())
    with pytest.raises(RunLockedError, match=f"pid {os.getpid()} on host {HOST}"):
        RunLock(folder).acquire()
    write_lock(folder, dead_pid(), host="another-host")
    with pytest.raises(RunLockedError, match="on host another-host.*remove the lock file"):
        RunLock(folder).acquire()
    assert (folder / LOCK_FILE).exists()


def test_one_folder_one_holder(tmp_path, mechanism):
    folder = tmp_path / "run"
    with RunLock(folder, purpose="report") as lock:
        text = json.loads((folder / LOCK_FILE).read_text())
        assert text["pid"] == os.getpid() and text["host"] == HOST and text["purpose"] == "report"
        assert lock.held and lock_holder(folder) == lock.holder
        with pytest.raises(RunLockedError, match=f"a report started {text['started']}"):
            RunLock(folder).acquire()
    assert not (folder / LOCK_FILE).exists() and lock_holder(folder) is None
    with RunLock(folder):  # free again
        pass


@pytest.mark.parametrize("exception", [RuntimeError("boom"), KeyboardInterrupt()])
def test_the_lock_is_released_when_a_run_raises(tmp_path, monkeypatch, exception):
    def fail(self):
        raise exception

    monkeypatch.setattr(ExperimentRunner, "_item_features", fail)
    raw = _config(tmp_path, MODELS)
    with pytest.raises(type(exception)):
        run_experiment(parse_config(raw), cache_dir=tmp_path / "cache")
    run = tmp_path / "runs" / "t"
    assert (run / "dataset").exists() and not (run / LOCK_FILE).exists()
    monkeypatch.undo()
    assert not run_experiment(parse_config(raw), cache_dir=tmp_path / "cache").failed


def _report(run: Path) -> None:
    from recarena import cli

    cli.report([run], None)


def test_report_on_a_run_in_progress_reports_what_is_finished(tmp_path, capsys):
    raw = _config(tmp_path, MODELS)
    run = run_experiment(parse_config(raw), cache_dir=tmp_path / "cache").run_dir
    with held_by_another_process(run) as pid:
        _report(run)
        err = capsys.readouterr().err
        assert "a run is in progress there" in " ".join(err.split())
        assert f"pid {pid}" in " ".join(err.split())
        assert (run / "report.html").exists() or (run / "summary.md").exists()


# ------------------------------------------------------------------ folders (item 7)
def test_an_output_folder_that_is_a_file_is_named(tmp_path):
    raw = _config(tmp_path, MODELS)
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    with pytest.raises(
        RunDirectoryError, match=f"output folder {a_file} is a file, expected a folder"
    ):
        run_experiment(parse_config(raw), output_dir=a_file, cache_dir=tmp_path / "cache")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "t").write_text("x")
    with pytest.raises(RunDirectoryError, match=f"run folder {tmp_path / 'out' / 't'} is a file"):
        run_experiment(parse_config(raw), output_dir=tmp_path / "out", cache_dir=tmp_path / "cache")


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere"
)
def test_an_output_folder_that_is_not_writable_is_named(tmp_path):
    raw = _config(tmp_path, MODELS)
    out = tmp_path / "read-only"
    out.mkdir()
    out.chmod(0o555)
    try:
        with pytest.raises(RunDirectoryError, match=f"folder {out} is not writable"):
            run_experiment(parse_config(raw), output_dir=out, cache_dir=tmp_path / "cache")
    finally:
        out.chmod(0o755)


def test_an_unwritable_folder_is_named_whoever_runs(tmp_path, monkeypatch):
    """The same as above, simulated, so that it runs as root too."""
    raw = _config(tmp_path, MODELS)
    out = tmp_path / "read-only"
    out.mkdir()
    monkeypatch.setattr(_rundir, "_writable", lambda folder: folder != out)
    with pytest.raises(RunDirectoryError, match=f"folder {out} is not writable by this user"):
        run_experiment(parse_config(raw), output_dir=out, cache_dir=tmp_path / "cache")
    monkeypatch.undo()

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(
        RunDirectoryError, match=f"cannot create run folder {out / 't'}: Permission"
    ):
        _rundir.ensure_run_directory(out / "t")


def test_report_on_a_run_killed_before_its_setup_says_what_to_do(tmp_path, monkeypatch, capsys):
    from recarena import cli
    from recarena.report import build_report

    def killed(msg: str) -> None:
        if msg.startswith("data: loading"):
            raise KeyboardInterrupt

    raw = _config(tmp_path, MODELS)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(parse_config(raw), cache_dir=tmp_path / "cache", on_event=killed)
    run = tmp_path / "runs" / "t"
    assert (run / "config.toml").exists() and not (run / "run.json").exists()
    with pytest.raises(ArtifactError, match=f"no finished setup in {run}.*recarena run CONFIG"):
        build_report(run)
    monkeypatch.setattr(sys, "argv", ["recarena", "report", str(run)])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"no finished setup in {run}" in err and "Traceback" not in err
    assert not (run / "summary.csv").exists()  # nothing was written


# ------------------------------------------------------------------ checked first (item 8)
class Reranker(Recommender):
    """A model that only re-ranks candidates."""

    scores_full_catalog = False

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def _fit(self, data, valid):  # pragma: no cover - never run here
        return self

    def _score(self, users, items):  # pragma: no cover - never run here
        raise AssertionError


def test_the_whole_experiment_is_checked_before_any_work(tmp_path, monkeypatch):
    import recarena.data

    def no_loading(*args, **kwargs):
        raise AssertionError("the data was loaded")

    monkeypatch.setattr(recarena.data, "load_dataset", no_loading)
    raw = _config(
        tmp_path,
        [
            {"name": "most_popular", "grid": {}},
            {"name": "no-such-model"},
            {"name": "tests.core.no_such_module:Model", "label": "mine"},
            {"name": "tests.core.test_runner:NoSuchClass"},
            {"name": "tests.core.test_run_folder:held_by_another_process"},
            {"name": "tests.core.test_run_folder:Reranker", "label": "rr", "protocols": ["full"]},
            {"name": "tests.core.test_run_folder:Reranker", "label": "first"},
            {"name": "ease", "grid": {"l2": [-1.0]}},
        ],
        protocols=[
            {"kind": "full"},
            {"kind": "full"},
            {"kind": "first_stage", "first_stage": "first", "top_n": 20},
        ],
    )
    raw["split"] = {"method": "random", "valid_ratio": 0.3, "test_ratio": 0.7}
    with pytest.raises(ConfigError) as err:
        run_experiment(parse_config(raw), cache_dir=tmp_path / "cache")
    message = str(err.value)
    assert "nothing was run" in message
    for expected in (
        "unknown model 'no-such-model'; known models:",
        "model 'mine': model path 'tests.core.no_such_module:Model': there is no module",
        "module 'tests.core.test_runner' has no 'NoSuchClass'",
        "'tests.core.test_run_folder:held_by_another_process' does not name a recarena Recommender",
        "valid_ratio 0.3 + test_ratio 0.7 = 1 leaves nothing to train on",
        "protocol 'full' is given 2 times",
        "model 'rr' fits none of the experiment's protocols (full: re-ranker",
        "model 'first' cannot score the full catalog, so it cannot be the first stage of "
        "protocol 'first-stage-first-20'",
        "model 'ease' (grid point {\"l2\": -1.0})",
    ):
        assert expected in message, expected
    assert len(message.splitlines()) == 10  # the header and one line per problem
    assert not (tmp_path / "runs").exists()  # nothing written


def test_ratios_a_split_does_not_use_are_not_checked(tmp_path):
    raw = _config(tmp_path, MODELS)
    raw["split"] = {"method": "leave_one_out", "valid_ratio": 0.5, "test_ratio": 0.5}
    assert not run_experiment(parse_config(raw), cache_dir=tmp_path / "cache").failed
