"""Nothing silently wrong (issue 11): grids that are honoured, resumes that notice change,
run folders that are readable and cleaned of what a killed writer left."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recarena._io import (
    atomic_path,
    publish_mode,
    remove_stale_temporaries,
    save_npz,
    write_json,
    write_text,
)
from recarena.config import parse_config
from recarena.errors import ConfigError
from recarena.experiment import runner as runner_module
from recarena.runner import ExperimentRunner, run_experiment
from tests.core.test_runner import _config


def _done(run: Path, label: str) -> dict:
    return json.loads((run / "models" / label / "DONE.json").read_text())


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


# ------------------------------------------------------------------ one-value grids (item 1)
def test_a_one_value_grid_is_the_models_parameter(tmp_path):
    cfg = parse_config(_config(tmp_path, [{"name": "ease", "grid": {"l2": [5000.0]}}]))
    events: list[str] = []
    run = run_experiment(cfg, cache_dir=tmp_path / "cache", on_event=events.append).run_dir
    done = _done(run, "ease")
    assert done["params"]["l2"] == 5000.0
    assert done["chosen_on_validation"] is False
    assert not (run / "models" / "ease" / "tuning.json").exists()
    assert any("ease: one grid point, not tuned" in e and "5000" in e for e in events)


def test_a_one_point_grid_with_params_keeps_both(tmp_path):
    models = [{"name": "itemknn", "params": {"shrink": 0.0}, "grid": {"k": [7]}}]
    run = run_experiment(
        parse_config(_config(tmp_path, models)), cache_dir=tmp_path / "cache"
    ).run_dir
    params = _done(run, "itemknn")["params"]
    assert params["k"] == 7 and params["shrink"] == 0.0


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ({"name": "ease", "grid": {"l2": [-100.0]}}, ["'ease'", "l2", "-100.0", "positive"]),
        ({"name": "ease", "grid": {"l2": [100.0, 0.0]}}, ["'ease'", "l2", "0.0"]),
        ({"name": "als", "label": "mf", "grid": {"factors": [0]}}, ["'mf'", "factors", "got 0"]),
        ({"name": "bpr", "grid": {"learning_rate": [-0.1]}}, ["'bpr'", "learning_rate"]),
        ({"name": "itemknn", "grid": {"k": [0]}}, ["'itemknn'", "parameter k must be"]),
        ({"name": "ease", "params": {"l2": -1.0}, "grid": {}}, ["'ease'", "params", "l2"]),
        ({"name": "ease", "grid": {"lambda": [1.0]}}, ["'ease'", "'lambda'", "parameters are"]),
        # the sequence and language models check theirs before any data or weights load
        (
            {"name": "sasrec", "grid": {"hidden": [64, 30]}, "params": {"n_heads": 4}},
            ["'sasrec'", "hidden must be divisible by n_heads (4)", "got 30"],
        ),
        ({"name": "sasrec", "params": {"dropout": 1.5}}, ["'sasrec'", "dropout", "[0, 1)"]),
        ({"name": "lm-text-sasrec", "grid": {"adaptor": ["mlp"]}}, ["adaptor", "'mlp'"]),
        ({"name": "lm-text-sasrec-joint", "params": {"tuning": "bitfit"}}, ["tuning", "bitfit"]),
        ({"name": "lm-cross-encoder", "grid": {"lr": [0.0]}}, ["lm-cross-encoder", "lr"]),
        ({"name": "lm-generative", "params": {"length_norm": "max"}}, ["length_norm", "max"]),
        ({"name": "lm-two-tower", "grid": {"temperature": [-1.0]}}, ["temperature"]),
    ],
)
def test_invalid_parameter_values_stop_the_run_before_any_work(tmp_path, model, expected):
    models = [{"name": "most_popular", "grid": {}}, model]
    cfg = parse_config(_config(tmp_path, models))
    with pytest.raises(ConfigError) as err:
        run_experiment(cfg, cache_dir=tmp_path / "cache")
    message = str(err.value)
    assert "nothing was run" in message
    for part in expected:
        assert part in message
    # checked before the data was read
    assert not (tmp_path / "runs" / "t" / "dataset").exists()


def test_models_check_their_parameters():
    from recarena.models.classical.ease import EASE
    from recarena.models.classical.implicit_mf import ALS

    with pytest.raises(ValueError, match="EASE parameter l2 must be a positive number"):
        EASE(l2=-100.0).check_params()
    with pytest.raises(ValueError, match="ALS parameter factors must be a positive integer"):
        ALS(factors=0).check_params()
    EASE(l2=5000).check_params()  # an int from TOML is a number


# ------------------------------------------------------------------ resumed tuning (item 2)
def _kill_at_validation(monkeypatch, after: int) -> None:
    """Make the validation scoring raise KeyboardInterrupt once ``after`` trials are done."""
    score = ExperimentRunner.validation_score
    calls: list[int] = []

    def killed(self, model, proto, max_users=None):
        if len(calls) == after:
            raise KeyboardInterrupt
        calls.append(1)
        return score(self, model, proto, max_users)

    monkeypatch.setattr(ExperimentRunner, "validation_score", killed)


def test_resumed_tuning_ignores_trials_of_another_grid(tmp_path, monkeypatch):
    raw = _config(tmp_path, [{"name": "ease", "grid": {"l2": [50.0, 100.0, 250.0]}}])
    _kill_at_validation(monkeypatch, after=2)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(parse_config(raw), cache_dir=tmp_path / "cache")
    monkeypatch.undo()
    tuning = tmp_path / "runs" / "t" / "models" / "ease" / "tuning.json"
    saved = json.loads(tuning.read_text())["trials"]
    assert [t["params"]["l2"] for t in saved] == [50.0, 100.0]
    # whatever the old trials scored, they belong to another grid
    for trial in saved:
        trial["value"] = 1.0
    tuning.write_text(json.dumps({"trials": saved}))

    raw["models"] = [{"name": "ease", "grid": {"l2": [2000.0, 5000.0]}}]
    events: list[str] = []
    run = run_experiment(
        parse_config(raw), cache_dir=tmp_path / "cache", on_event=events.append
    ).run_dir
    assert _done(run, "ease")["params"]["l2"] in (2000.0, 5000.0)
    trials = json.loads(tuning.read_text())["trials"]
    assert [t["params"]["l2"] for t in trials] == [2000.0, 5000.0]
    assert all(t["value"] < 1.0 for t in trials)
    assert any("dropped 2 saved validation trial(s)" in e for e in events)
    assert json.loads((run / "models" / "ease" / "cost.json").read_text())["tuning_trials"] == 2


def test_resumed_tuning_reuses_the_trials_of_the_current_grid(tmp_path, monkeypatch):
    raw = _config(tmp_path, [{"name": "ease", "grid": {"l2": [50.0, 100.0, 250.0]}}])
    _kill_at_validation(monkeypatch, after=2)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(parse_config(raw), cache_dir=tmp_path / "cache")
    monkeypatch.undo()

    raw["models"] = [{"name": "ease", "grid": {"l2": [100.0, 2000.0]}}]
    events: list[str] = []
    run = run_experiment(
        parse_config(raw), cache_dir=tmp_path / "cache", on_event=events.append
    ).run_dir
    validations = [e for e in events if "ease: validation" in e]
    assert len(validations) == 1 and "2000" in validations[0]  # l2 = 100 was reused
    assert any("dropped 1 saved validation trial(s)" in e for e in events)
    trials = json.loads((run / "models" / "ease" / "tuning.json").read_text())["trials"]
    assert sorted(t["params"]["l2"] for t in trials) == [100.0, 2000.0]
    assert all(t["key"] for t in trials)


def test_trials_without_a_key_are_recomputed(tmp_path, monkeypatch):
    raw = _config(tmp_path, [{"name": "ease", "grid": {"l2": [50.0, 100.0, 250.0]}}])
    _kill_at_validation(monkeypatch, after=2)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(parse_config(raw), cache_dir=tmp_path / "cache")
    monkeypatch.undo()
    tuning = tmp_path / "runs" / "t" / "models" / "ease" / "tuning.json"
    saved = json.loads(tuning.read_text())["trials"]
    for trial in saved:
        del trial["key"]
    tuning.write_text(json.dumps({"trials": saved}))
    events: list[str] = []
    run_experiment(parse_config(raw), cache_dir=tmp_path / "cache", on_event=events.append)
    assert sum("ease: validation" in e for e in events) == 3


# ------------------------------------------------------------------ resumed data and split (item 2)
def _ratings_below_four(raw: dict) -> None:
    """Give every third interaction of the planted CSV the rating 2 (a filter drops them)."""
    path = Path(raw["data"]["path"])
    frame = pd.read_csv(path)
    frame.loc[frame.index % 3 == 0, "rating"] = 2.0
    frame.to_csv(path, index=False)


def _interactions(run: Path) -> int:
    return len(pd.read_parquet(run / "dataset" / "interactions.parquet"))


def test_a_dataset_saved_before_run_json_is_recomputed_for_new_filters(tmp_path, monkeypatch):
    raw = _config(tmp_path, [{"name": "most_popular", "grid": {}}])
    _ratings_below_four(raw)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner_module, "build_split", killed)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(parse_config(raw), cache_dir=tmp_path / "cache")
    monkeypatch.undo()
    run = tmp_path / "runs" / "t"
    assert (run / "dataset" / "dataset.json").exists() and not (run / "run.json").exists()
    unfiltered = _interactions(run)

    raw["data"] = {**raw["data"], "preprocess": {"min_rating": 4, "user_core": 5}}
    events: list[str] = []
    run_experiment(parse_config(raw), cache_dir=tmp_path / "cache", on_event=events.append)
    assert any("was made by another data configuration: recomputing" in e for e in events)
    fresh = run_experiment(
        parse_config({**raw, "output_dir": str(tmp_path / "fresh")}), cache_dir=tmp_path / "cache"
    ).run_dir
    assert _interactions(run) == _interactions(fresh) < unfiltered
    for part in ("train", "valid", "test"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(run / "split" / f"{part}.parquet"),
            pd.read_parquet(fresh / "split" / f"{part}.parquet"),
        )
    stamp = json.loads((run / "dataset" / "stage.json").read_text())
    assert stamp["settings"]["data"]["preprocess"]["min_rating"] == 4


def test_a_split_saved_before_run_json_is_recomputed_for_a_new_split(tmp_path, monkeypatch):
    raw = _config(tmp_path, [{"name": "most_popular", "grid": {}}])

    def killed(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(ExperimentRunner, "_item_features", killed)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(parse_config(raw), cache_dir=tmp_path / "cache")
    monkeypatch.undo()
    run = tmp_path / "runs" / "t"
    assert (run / "split" / "split.json").exists() and not (run / "run.json").exists()

    raw["split"] = {"method": "random"}
    events: list[str] = []
    run_experiment(parse_config(raw), cache_dir=tmp_path / "cache", on_event=events.append)
    assert any("data: reusing" in e for e in events)
    assert any("was made by another split configuration: recomputing" in e for e in events)
    assert json.loads((run / "split" / "split.json").read_text())["method"] == "random"


def test_a_finished_run_without_stage_stamps_still_resumes(tmp_path):
    # run folders written before stage.json existed: run.json vouches for the data and split
    cfg = parse_config(_config(tmp_path, [{"name": "most_popular", "grid": {}}]))
    run = run_experiment(cfg, cache_dir=tmp_path / "cache").run_dir
    (run / "dataset" / "stage.json").unlink()
    (run / "split" / "stage.json").unlink()
    events: list[str] = []
    run_experiment(cfg, cache_dir=tmp_path / "cache", on_event=events.append)
    assert any("data: reusing" in e for e in events)
    assert not any("recomputing" in e for e in events)
    assert (run / "dataset" / "stage.json").exists() and (run / "split" / "stage.json").exists()


# ------------------------------------------------------------------ file modes (item 10)
def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_writers_give_files_the_umask_mode(tmp_path, umask_022):
    write_json(tmp_path / "a.json", {"x": 1})
    write_text(tmp_path / "report.html", "<html></html>")
    save_npz(tmp_path / "lists.npz", users=np.arange(3))
    with atomic_path(tmp_path / "summary.csv") as tmp:
        pd.DataFrame({"a": [1]}).to_csv(tmp, index=False)
    with atomic_path(tmp_path / "per_user.parquet") as tmp:
        pd.DataFrame({"a": [1]}).to_parquet(tmp, index=False)
    for name in ("a.json", "report.html", "lists.npz", "summary.csv", "per_user.parquet"):
        assert _mode(tmp_path / name) == 0o644, name
    os.umask(0o077)
    write_json(tmp_path / "private.json", {})
    assert _mode(tmp_path / "private.json") == 0o600


def test_published_temporary_folders_get_the_umask_mode(tmp_path, umask_022):
    import tempfile

    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    publish_mode(folder)
    assert _mode(folder) == 0o755


def test_every_run_artifact_is_readable_by_others(tmp_path, umask_022):
    cfg = parse_config(_config(tmp_path, [{"name": "ease", "grid": {"l2": [10.0, 100.0]}}]))
    run = run_experiment(cfg, cache_dir=tmp_path / "cache").run_dir
    files = [p for p in run.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"summary.csv", "per_user.parquet", "lists.npz"}
    assert {str(p.relative_to(run)): oct(_mode(p)) for p in files if _mode(p) != 0o644} == {}


# ------------------------------------------------------------------ leftovers (item 11)
def test_stale_temporaries_are_recognised_by_name_only(tmp_path):
    ours = [
        tmp_path / ".lists.npz.k3j4h5g6.tmp",
        tmp_path / "sub" / ".DONE.json.a_b1c2d3.tmp",
    ]
    others = [
        tmp_path / "lists.npz",
        tmp_path / "notes.tmp",
        tmp_path / ".lists.npz.tmp",
        tmp_path / ".lists.npz.TOOLONG123.tmp",
        tmp_path / ".hidden",
    ]
    for path in ours + others:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    folder = tmp_path / ".weights.abcdefgh.tmp"
    folder.mkdir()
    assert remove_stale_temporaries(tmp_path) == sorted(ours)
    assert not any(p.exists() for p in ours)
    assert all(p.exists() for p in others) and folder.is_dir()


def test_a_run_removes_what_a_killed_writer_left(tmp_path):
    cfg = parse_config(_config(tmp_path, [{"name": "most_popular", "grid": {}}]))
    run = run_experiment(cfg, cache_dir=tmp_path / "cache").run_dir
    leftover = run / "models" / "most_popular" / "full" / ".lists.npz.x7y8z9w0.tmp"
    leftover.write_bytes(b"half a file")
    mine = run / "my-notes.tmp"
    mine.write_text("keep me")
    events: list[str] = []
    run_experiment(cfg, cache_dir=tmp_path / "cache", on_event=events.append)
    assert not leftover.exists() and mine.exists()
    assert any("removed 1 temporary file(s)" in e and ".lists.npz" in e for e in events)
