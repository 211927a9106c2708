"""The models of an experiment as Ray tasks: the same results as in process, on a real
two-node local cluster, with a worker killed mid-task; and the pieces without a cluster."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recarena.config import parse_config, with_execution
from recarena.errors import ConfigError
from recarena.experiment.distributed import (
    run_task,
    run_trial_task,
    save_trials,
    setup_files,
    task_options,
    write_task_files,
)
from recarena.experiment.runner import ExperimentRunner
from recarena.models.base import Recommender
from recarena.runner import run_experiment
from tests.core.test_runner import _config

REPO = Path(__file__).resolve().parents[2]
MODELS = [
    {"name": "most_popular", "grid": {}},
    {"name": "ease", "grid": {"l2": [1.0, 10.0]}},
    {"name": "bpr", "grid": {}, "params": {"factors": 8, "iterations": 5, "num_threads": 1}},
]


class Sleepy(Recommender):
    """Popularity, but the first attempt to fit writes its process id to ``marker`` and
    waits to be killed (a worker lost mid-task); a later attempt fits at once."""

    def __init__(self, marker: str = "", seed: int = 0) -> None:
        self.marker = marker
        self.seed = seed

    def _fit(self, data, valid):
        marker = Path(self.marker)
        if self.marker and not marker.exists():
            marker.write_text(str(os.getpid()))
            time.sleep(120)
        self.pop_ = np.asarray(data.csr().sum(axis=0)).ravel().astype(np.float64)

    def _score(self, users, items):
        scores = np.tile(self.pop_, (len(users), 1))
        return scores if items is None else np.take_along_axis(scores, items, axis=1)


def _files_of(run: Path) -> dict[str, bytes]:
    """Every model's measured files (what must be identical, wherever it ran)."""
    out = {}
    for path in sorted((run / "models").rglob("*")):
        if path.is_file() and path.name in ("per_user.parquet", "metrics.json"):
            out[path.relative_to(run).as_posix()] = path.read_bytes()
    return out


# ------------------------------------------------------------------ without a cluster
def test_a_task_run_here_writes_what_a_local_run_writes(tmp_path):
    raw = _config(tmp_path, MODELS)
    raw["seeds"] = [1, 2]
    local = run_experiment(parse_config(raw), cache_dir=tmp_path / "cache", progress=False)
    # a second folder: the set-up prepared, then each model as a task, its files written back
    raw2 = {**raw, "output_dir": str(tmp_path / "tasks")}
    cfg = parse_config(raw2)
    runner = ExperimentRunner(cfg, tmp_path / "tasks" / "t", tmp_path / "cache", progress=False)
    runner.prepare()
    setup = setup_files(runner.run_dir)
    assert "run.json" in setup and any(k.startswith("split/") for k in setup)
    config = cfg.model_dump(mode="json")
    for label, run in runner.runs.items():
        # a grid's trials as tasks of their own, saved by the driver in grid order ...
        pending = runner.pending_trials(run.config)
        assert len(pending) == (2 if label == "ease" else 0)
        trials = [run_trial_task(config, setup, label, i, {}, None, 1) for i in pending]
        assert all(t["status"] == "done" for t in trials), trials
        if trials:
            save_trials(runner.run_dir, label, [t["trial"] for t in trials])
            assert runner.pending_trials(run.config) == []
        # ... then the run task, which finds them saved
        mdir = runner.run_dir / "models" / label
        folder = {
            p.relative_to(runner.run_dir).as_posix(): p.read_bytes()
            for p in mdir.rglob("*")
            if p.is_file()
        }
        result = run_task(config, setup, label, folder, None, 1)
        assert result["status"] == "done", result.get("traceback")
        # (the trials are not fit again)
        assert not any(f"{label}: validation " in e for e in result["events"])
        assert f"models/{label}/DONE.json" in result["files"]
        assert not any("/checkpoints/" in k for k in result["files"])
        write_task_files(runner.run_dir, label, result["files"])
    assert _files_of(runner.run_dir) == _files_of(local.run_dir)
    # the folder is a run folder like any other: a run there reuses every model
    events: list[str] = []
    run_experiment(cfg, cache_dir=tmp_path / "cache", progress=False, on_event=events.append)
    assert sum("done earlier" in e for e in events) == len(runner.runs)
    assert not list((runner.run_dir / "models").glob(".*"))


def test_a_failing_task_returns_its_error_and_saved_trials(tmp_path):
    raw = _config(tmp_path, [{"name": "tests.core.test_runner:Exploding", "label": "boom"}])
    cfg = parse_config(raw)
    runner = ExperimentRunner(cfg, tmp_path / "runs" / "t", tmp_path / "cache", progress=False)
    runner.prepare()
    result = run_task(cfg.model_dump(mode="json"), setup_files(runner.run_dir), "boom", {}, None, 1)
    assert result["status"] == "failed"
    assert result["error"] == "RuntimeError: boom" and "raise RuntimeError" in result["traceback"]


def test_task_resources_come_from_the_model_or_the_experiment(tmp_path):
    raw = _config(
        tmp_path,
        [
            {"name": "ease", "grid": {}},
            {"name": "sasrec", "grid": {}, "params": {"num_threads": 2}},
            {"name": "bpr", "grid": {}},
        ],
    )
    raw["seeds"] = [1, 2]
    raw["execution"] = {
        "executor": "ray",
        "max_retries": 5,
        "resources": {"bpr": {"num_cpus": 3, "memory": 2e9}},
    }
    cfg = parse_config(raw)
    runner = ExperimentRunner(cfg, tmp_path / "r", tmp_path / "cache", progress=False)
    by_label = {mc.display_name: mc for mc in runner.model_configs()}
    ease = task_options(runner, by_label["ease"], has_gpu=False)
    assert ease["num_cpus"] == 1 and "num_gpus" not in ease and ease["max_retries"] == 5
    sasrec = task_options(runner, by_label["sasrec@seed1"], has_gpu=True)
    assert sasrec["num_cpus"] == 2 and sasrec["num_gpus"] == 0.25
    assert "num_gpus" not in task_options(runner, by_label["sasrec@seed1"], has_gpu=False)
    # an entry's resources cover each of its seeds
    bpr = task_options(runner, by_label["bpr@seed2"], has_gpu=False)
    assert bpr["num_cpus"] == 3 and bpr["memory"] == 2_000_000_000


def test_execution_options_and_their_errors():
    raw = {"data": {"name": "ml-100k"}, "models": [{"name": "ease"}]}
    cfg = parse_config(raw)
    assert cfg.execution.executor == "local" and cfg.execution.max_retries == 2
    ray = with_execution(cfg, address="127.0.0.2:6390", node_ip_address="127.0.0.2")
    assert ray.execution.executor == "ray" and ray.execution.address == "127.0.0.2:6390"
    assert with_execution(cfg) is cfg
    with pytest.raises(ConfigError, match="needs --executor ray"):
        with_execution(cfg, executor="local", address="127.0.0.2:6390")
    with pytest.raises(ConfigError, match="executor"):
        with_execution(cfg, executor="slurm")
    with pytest.raises(ConfigError, match=r"name \['gpus'\]"):
        parse_config({**raw, "execution": {"resources": {"ease": {"gpus": 1}}}})


# ------------------------------------------------------------------ a real cluster
HEAD = "127.0.0.2"


@pytest.fixture
def cluster(tmp_path):
    """Two Ray nodes on this machine, one CPU each, on loopback addresses of their own."""
    pytest.importorskip("ray")
    from recarena.experiment.local_cluster import local_cluster

    # the workers import this test module's model
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    with local_cluster(tmp_path / "ray", nodes=2, env={"PYTHONPATH": path}, timeout=90) as c:
        assert c.node_addresses == [HEAD, "127.0.0.3"]
        yield c.address


@pytest.mark.slow
def test_a_two_node_cluster_gives_the_in_process_results_and_survives_a_killed_worker(
    tmp_path, cluster
):
    marker = tmp_path / "sleepy.pid"
    models = [*MODELS, {"name": "tests.core.test_distributed:Sleepy", "label": "sleepy"}]
    models[-1]["params"] = {"marker": str(marker)}
    raw = _config(tmp_path, models)
    raw["seeds"] = [1, 2]
    raw["execution"] = {"executor": "ray", "address": cluster, "node_ip_address": HEAD}

    killed: list[int] = []

    def kill_when_sleeping() -> None:
        deadline = time.monotonic() + 120
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)
        if marker.exists():
            pid = int(marker.read_text())
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    watcher = threading.Thread(target=kill_when_sleeping, daemon=True)
    watcher.start()
    events: list[str] = []
    result = run_experiment(
        parse_config(raw), cache_dir=tmp_path / "cache", progress=False, on_event=events.append
    )
    watcher.join(timeout=5)
    assert killed, events  # a worker died mid-task ...
    assert result.failed == {}, result.failed  # ... and Ray ran its task again
    labels = ["most_popular", "ease", "bpr@seed1", "bpr@seed2", "sleepy@seed1", "sleepy@seed2"]
    for label in labels:
        assert (result.run_dir / "models" / label / "DONE.json").exists(), events
    for label in labels:
        assert sum(e.startswith(f"ray: {label} done on 127.") for e in events) == 1, events
    # EASE's two grid points ran as trial tasks of their own
    assert sum(e.startswith("ray: ease trial ") and " done on 127." in e for e in events) == 2
    # the same experiment in process (the marker is there: nothing sleeps) gives the same
    raw_local = {**raw, "execution": {}, "output_dir": str(tmp_path / "local")}
    local = run_experiment(parse_config(raw_local), cache_dir=tmp_path / "cache", progress=False)
    assert _files_of(result.run_dir) == _files_of(local.run_dir)
    ray_summary = pd.read_csv(result.run_dir / "summary_seeds.csv")
    pd.testing.assert_frame_equal(ray_summary, pd.read_csv(local.run_dir / "summary_seeds.csv"))
    done = json.loads((result.run_dir / "models" / "bpr@seed2" / "DONE.json").read_text())
    assert done["training_seeds"]["seed"] == 2
