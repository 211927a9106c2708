"""Kill -9 at every stage boundary and inside every writer, then resume (issue 11).

A forked copy of the run sends itself SIGKILL at a named point (`recarena._faults`: a test
hook, not timing luck): after each stage, after each validation trial, after the final
fit, after each protocol's measurement, after DONE.json, after the summaries, and inside
every atomic writer (new content written, not yet renamed into place). The run is then
started again in this process and must end with the files of a run that was never stopped,
byte for byte but for times, without fitting again what was finished (a model killed while
its lists were written comes back from the fitted model saved before them).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from recarena import _faults
from recarena.config import parse_config
from recarena.runner import run_experiment
from tests.core.test_run_damage import PROTOCOLS, _files, _run, assert_same_run
from tests.core.test_runner import _config

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

MODELS = [
    {"name": "most_popular", "grid": {}},  # the first stage of a protocol
    {"name": "tests.core.test_run_damage:Logged", "label": "logged"},  # a training log
    {"name": "ease", "grid": {"l2": [1.0, 10.0]}},  # tuned: two validation trials
    {"name": "tests.core.test_runner:Exploding", "label": "exploding"},  # FAILED.json
]

#: the stage boundaries of a run, in the order a run passes them
STAGES = [
    "data:saved",
    "split:saved",
    "run:prepared",
    "model:trial",
    "model:fitted",
    "model:measured",
    "model:done",
    "run:summarised",
]
#: every file an atomic writer writes in this run (killed inside its first write)
WRITES = [
    "DONE.json",
    "FAILED.json",
    "arrays.npz",
    "candidates_sampled-9__test.npz",
    "candidates_sampled-9__valid.npz",
    "config.toml",
    "cost.json",
    "dataset.json",
    "environment.json",
    "fairness_gaps.csv",
    "fairness_items.csv",
    "fairness_users.csv",
    "first_stage__first-stage-most_popular-10__test.npz",
    "first_stage__first-stage-most_popular-10__valid.npz",
    "fitted.json",
    "interactions.parquet",
    "items.parquet",
    "lists.npz",
    "metrics.json",
    "model.json",
    "per_user.parquet",
    "run.json",
    "split.json",
    "stage.json",
    "state.pkl",
    "summary.csv",
    "summary.json",
    "summary.md",
    "test.parquet",
    "train.parquet",
    "training_log.json",
    "tuning.json",
    "users.parquet",
    "valid.parquet",
]
#: points passed more than once, killed at a later arrival too (the second model's fit
#: and lists, the second validation trial, the last stage.json)
LATER = ["model:trial#2", "model:fitted#2", "write:lists.npz#4", "write:stage.json#2"]


@pytest.fixture(autouse=True, scope="module")
def save_every_fitted_model():
    """The runner saves only fits of 30 s or more; these take milliseconds (the forked runs
    inherit the setting)."""
    from recarena.runner import ExperimentRunner

    saved = ExperimentRunner.fitted_save_min_seconds
    ExperimentRunner.fitted_save_min_seconds = 0.0
    yield
    ExperimentRunner.fitted_save_min_seconds = saved


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[dict, Path, dict[str, bytes], list[str]]:
    """A run never stopped: its config, folder, files, and the kill points it passed."""
    folder = tmp_path_factory.mktemp("faults")
    raw = _config(folder, MODELS, protocols=PROTOCOLS)
    log = folder / "points.log"
    os.environ[_faults.KILL_LOG] = str(log)
    _faults.reset()
    try:
        result = run_experiment(parse_config(raw), cache_dir=folder / "cache", progress=False)
    finally:
        del os.environ[_faults.KILL_LOG]
        _faults.reset()
    assert result.failed.keys() == {"exploding"}
    run = result.run_dir
    files = {k: v for k, v in _files(run).items() if not k.startswith("report")}
    return raw, run, files, log.read_text().split()


def kill_at(raw: dict, run: Path, at: str) -> None:
    """Run the experiment into ``run`` in a forked process that is killed at ``at``."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 3  # the run ended without reaching the point
        try:
            os.environ[_faults.KILL_AT] = at
            _faults.reset()
            _run(raw, run, progress=False)
        except BaseException:  # noqa: BLE001 - any exit but the kill fails the test
            code = 4
        os._exit(code)
    deadline = time.monotonic() + 300
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"the run killed at {at} hung")
        time.sleep(0.02)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
        f"never reached {at}: exit status {status}"
    )


def resume(raw: dict, run: Path) -> list[str]:
    events: list[str] = []
    result = _run(raw, run, progress=False, on_event=events.append)
    assert result.failed.keys() == {"exploding"}
    return events


def test_the_suite_kills_at_every_point_a_run_passes(reference):
    # a new stage boundary or writer fails here until it is added to the suite
    passed = {arrival.split("#")[0] for arrival in reference[3]}
    listed = set(STAGES) | {f"write:{name}" for name in WRITES}
    assert passed == listed
    arrivals = set(reference[3])
    assert all(point in arrivals for point in LATER)


@pytest.mark.parametrize(
    "at", STAGES + [f"write:{name}" for name in WRITES] + LATER, ids=lambda at: at
)
def test_killed_at_a_point_the_rerun_ends_as_an_unbroken_run(reference, tmp_path, at):
    raw, ref_run, expected, _ = reference
    run = tmp_path / "runs" / ref_run.name
    kill_at(raw, run, at)
    events = resume(raw, run)
    assert_same_run(run, expected)
    refitted = {e.split(":")[0] for e in events if e.endswith(": fitting on train + valid")}
    if at == "model:done":  # most_popular finished: it is not fitted again
        assert "most_popular" not in refitted
    if at in ("model:fitted#2", "write:lists.npz#4"):  # `logged` was fitted, not measured
        assert "logged: reusing the model fitted before the run stopped" in events
        assert "logged" not in refitted


def test_a_model_killed_while_its_lists_are_written_is_not_fitted_again(reference, tmp_path):
    raw, ref_run, expected, _ = reference
    run = tmp_path / "runs" / ref_run.name
    # ease: validation trials, then the refit, then its lists for each protocol
    kill_at(raw, run, "write:lists.npz#7")
    assert (run / "models" / "ease" / "checkpoints" / "fitted" / "fitted.json").exists()
    events = resume(raw, run)
    assert "ease: reusing the model fitted before the run stopped" in events
    assert not any(
        e.startswith("ease: validation") or e == "ease: fitting on train + valid" for e in events
    )
    assert_same_run(run, expected)
    assert not (run / "models" / "ease" / "checkpoints").exists()


def test_a_fitted_model_of_other_parameters_is_not_reused(reference, tmp_path):
    raw, ref_run, _, _ = reference
    run = tmp_path / "runs" / ref_run.name
    kill_at(raw, run, "write:lists.npz#7")
    changed = {
        **raw,
        "models": [*raw["models"][:2], {"name": "ease", "grid": {"l2": [3.0]}}, raw["models"][3]],
    }
    events = resume(changed, run)
    assert "ease: fitting on train + valid" in events
    assert not any("reusing the model fitted" in e for e in events)


def test_quick_fits_and_huge_models_are_not_saved_before_their_lists(tmp_path, monkeypatch):
    from recarena.runner import ExperimentRunner

    raw = _config(tmp_path, [{"name": "ease", "grid": {}}])
    saved: list[str] = []
    monkeypatch.setattr(
        ExperimentRunner, "_save_fitted", lambda self, label, *a: saved.append(label)
    )
    monkeypatch.setattr(ExperimentRunner, "fitted_save_min_seconds", 30.0)
    run_experiment(parse_config(raw), cache_dir=tmp_path / "cache", progress=False)
    assert saved == []  # EASE fits these 60 items in milliseconds
    monkeypatch.setattr(ExperimentRunner, "fitted_save_min_seconds", 0.0)
    monkeypatch.setattr(ExperimentRunner, "fitted_save_max_parameters", 100)
    run_experiment(parse_config(raw), cache_dir=tmp_path / "cache", progress=False, overwrite=True)
    assert saved == []  # 3,600 parameters: over the cap
    monkeypatch.setattr(ExperimentRunner, "fitted_save_max_parameters", 10_000)
    run_experiment(parse_config(raw), cache_dir=tmp_path / "cache", progress=False, overwrite=True)
    assert saved == ["ease"]


def test_saving_the_fitted_model_silences_the_libraries_progress_bars():
    # save_pretrained draws "Writing model shards" bars into the run's log otherwise
    hf_logging = pytest.importorskip("transformers.utils.logging")
    from recarena.runner import _quiet_library_progress

    assert hf_logging.is_progress_bar_enabled()
    with _quiet_library_progress():
        assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.is_progress_bar_enabled()
