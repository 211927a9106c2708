"""The run folder's records on hand-built folders, without an experiment: a model folder's
``DONE.json`` check (`ModelFolders`), a set-up stage's stamp and its reuse (`RunFolder`),
the fitted model saved before its lists, and the cost record (`recarena.experiment.cost`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recarena.config import ModelConfig, ProtocolConfig
from recarena.cost import PeakMemory
from recarena.errors import ArtifactError, DamagedArtifactError
from recarena.experiment.artifacts import (
    STAGE_FILE,
    ModelFolders,
    RunFolder,
    first_stage_path,
    model_hash,
)
from recarena.experiment.cost import cost_record, latency_ms
from recarena.experiment.protocols import first_stage_top_n, rank_lists
from recarena.experiment.stages import Fitted, Measured, ModelJob, Tuning
from recarena.models.registry import create_model
from recarena.ranking import RankedLists
from recarena.splits import CandidateSet

EASE = ModelConfig(name="ease", params={"l2": 10.0})
FIRST_STAGE = ProtocolConfig(kind="first_stage", first_stage="ease", top_n=3)


def _folders(run_dir: Path, protocols=(), runs=None) -> tuple[ModelFolders, list[str]]:
    events: list[str] = []
    return ModelFolders(run_dir, list(protocols), runs or {}, events.append), events


def _finished_model(run_dir: Path, mc: ModelConfig = EASE, **record: Any) -> Path:
    """A model folder as a finished run leaves it: two files, then DONE.json."""
    mdir = run_dir / "models" / mc.display_name
    (mdir / "full").mkdir(parents=True)
    (mdir / "cost.json").write_text('{"fit_seconds": 1.0}')
    (mdir / "full" / "metrics.json").write_text('{"global": {}}')
    folders, _ = _folders(run_dir)
    done = {
        "label": mc.display_name,
        "model_hash": model_hash(mc),
        "artifacts": folders.model_artifacts(mc.display_name, mdir),
        **record,
    }
    (mdir / "DONE.json").write_text(json.dumps(done))
    return mdir


# ---------------------------------------------------------------------- DONE.json
def test_a_finished_model_is_done_and_records_every_file(tmp_path):
    mdir = _finished_model(tmp_path)
    folders, _ = _folders(tmp_path)
    assert folders.folder("ease") == mdir
    assert folders.done_status(EASE) == ("done", [])
    assert folders.finished(EASE)
    recorded = json.loads((mdir / "DONE.json").read_text())["artifacts"]
    assert sorted(recorded) == ["models/ease/cost.json", "models/ease/full/metrics.json"]


def test_a_model_without_done_json_is_absent(tmp_path):
    folders, _ = _folders(tmp_path)
    assert folders.done_status(EASE) == ("absent", [])
    (tmp_path / "models" / "ease").mkdir(parents=True)
    assert folders.done_status(EASE) == ("absent", []) and not folders.finished(EASE)


def test_an_altered_file_is_named_as_damaged(tmp_path):
    mdir = _finished_model(tmp_path)
    (mdir / "full" / "metrics.json").write_text('{"global": {"ndcg@10": 1.0}}')
    status, damaged = _folders(tmp_path)[0].done_status(EASE)
    assert status == "damaged"
    assert damaged == [
        (
            "models/ease/full/metrics.json",
            "its sha256 differs from the one models/ease/DONE.json records",
        )
    ]


def test_a_missing_file_is_named_as_missing(tmp_path):
    mdir = _finished_model(tmp_path)
    (mdir / "cost.json").unlink()
    status, damaged = _folders(tmp_path)[0].done_status(EASE)
    assert status == "damaged"
    assert [rel for rel, _ in damaged] == ["models/ease/cost.json"]
    assert damaged[0][1].startswith("missing")


def test_a_damaged_done_json_is_named(tmp_path):
    mdir = _finished_model(tmp_path)
    (mdir / "DONE.json").write_text('{"label": "ea')
    status, damaged = _folders(tmp_path)[0].done_status(EASE)
    assert status == "damaged" and [rel for rel, _ in damaged] == ["models/ease/DONE.json"]


def test_another_configuration_of_the_model_is_changed(tmp_path):
    _finished_model(tmp_path)
    other = EASE.model_copy(update={"params": {"l2": 1.0}})
    assert _folders(tmp_path)[0].done_status(other) == ("changed", [])


def test_a_done_json_without_checksums_is_trusted_when_its_files_read(tmp_path):
    mdir = _finished_model(tmp_path)
    record = json.loads((mdir / "DONE.json").read_text())
    del record["artifacts"]
    (mdir / "DONE.json").write_text(json.dumps(record))
    assert _folders(tmp_path)[0].done_status(EASE) == ("done", [])
    (mdir / "full" / "metrics.json").write_text('{"glo')  # cut short
    status, damaged = _folders(tmp_path)[0].done_status(EASE)
    assert status == "damaged" and damaged[0][0] == "models/ease/full/metrics.json"


def test_the_check_is_made_once_per_done_json_until_forgotten(tmp_path):
    mdir = _finished_model(tmp_path)
    folders, _ = _folders(tmp_path)
    assert folders.done_status(EASE)[0] == "done"
    (mdir / "cost.json").unlink()
    assert folders.done_status(EASE)[0] == "done"  # DONE.json unchanged: not checked again
    folders.forget("ease")
    assert folders.done_status(EASE)[0] == "damaged"


def test_a_first_stage_needs_its_test_candidates(tmp_path):
    """A DONE.json written before checksums: a recomputed split dropped the candidates."""
    mdir = _finished_model(tmp_path)
    record = json.loads((mdir / "DONE.json").read_text())
    del record["artifacts"]
    (mdir / "DONE.json").write_text(json.dumps(record))
    folders, _ = _folders(tmp_path, protocols=[FIRST_STAGE])
    status, damaged = folders.done_status(EASE)
    test_file = first_stage_path(tmp_path, FIRST_STAGE, "test")
    assert status == "damaged"
    assert damaged == [(test_file.relative_to(tmp_path).as_posix(), "missing")]
    assert folders.first_stage_files("ease") == []
    assert folders.first_stage_files("ease", required=("test",)) == [test_file]


def test_discarding_a_damaged_model_keeps_intact_trials(tmp_path):
    mdir = _finished_model(tmp_path)
    (mdir / "tuning.json").write_text('{"trials": []}')
    (mdir / "checkpoints").mkdir()
    folders, _ = _folders(tmp_path)
    folders.discard_damaged(mdir, [("models/ease/cost.json", "missing")])
    assert sorted(p.name for p in mdir.iterdir()) == ["tuning.json"]
    folders.discard_damaged(mdir, [("models/ease/tuning.json", "missing")])
    assert list(mdir.iterdir()) == []


# ---------------------------------------------------------------------- first stages
def test_first_stage_candidates_are_saved_per_protocol_and_recorded(tmp_path):
    other = ProtocolConfig(kind="first_stage", first_stage="ease", top_n=2)
    folders, _ = _folders(tmp_path, protocols=[ProtocolConfig(), FIRST_STAGE, other])
    (tmp_path / "split").mkdir()
    lists = RankedLists(
        np.array([0, 1]), np.array([[5, 6, 7, 8], [1, 2, 3, 4]]), np.zeros((2, 4), np.float32)
    )
    folders.save_first_stage("ease", "test", lists)
    saved = np.load(first_stage_path(tmp_path, other, "test"))
    np.testing.assert_array_equal(saved["items"], [[5, 6], [1, 2]])
    assert len(folders.first_stage_files("ease")) == 2
    mdir = tmp_path / "models" / "ease"
    mdir.mkdir(parents=True)
    assert sorted(folders.model_artifacts("ease", mdir)) == sorted(
        first_stage_path(tmp_path, p, "test").relative_to(tmp_path).as_posix()
        for p in (FIRST_STAGE, other)
    )


# ---------------------------------------------------------------------- the fitted model
class Saved:
    """What `save_fitted` and `load_fitted` ask of a model: ``save`` and ``load``."""

    fail = False

    def __init__(self, value: int = 0) -> None:
        self.value = value

    def save(self, folder: Path) -> None:
        if self.fail:
            raise OSError("disk full")
        folder.mkdir(parents=True)
        (folder / "value.txt").write_text(str(self.value))

    @classmethod
    def load(cls, folder: Path) -> Saved:
        return cls(int((folder / "value.txt").read_text()))


def test_a_saved_fitted_model_is_reused_only_under_its_key(tmp_path):
    folders, events = _folders(tmp_path)
    folder = tmp_path / "checkpoints" / "fitted"
    folders.save_fitted("m", Saved(7), folder, "key1", 12.5, True, 2**20)
    assert not folder.with_name(".fitted.tmp").exists()
    model, record = folders.load_fitted("m", Saved(), folder, "key1")
    assert model.value == 7
    assert record == {
        "key": "key1",
        "fit_seconds": 12.5,
        "history_refreshed": True,
        "peak_bytes": 2**20,
    }
    assert events == ["m: reusing the model fitted before the run stopped"]
    assert folders.load_fitted("m", Saved(), folder, "key2") is None
    assert not folder.exists()  # fitted under other parameters: gone
    assert folders.load_fitted("m", Saved(), folder, "key1") is None


def test_a_model_that_cannot_be_saved_is_said_and_leaves_nothing(tmp_path):
    folders, events = _folders(tmp_path)
    folder = tmp_path / "checkpoints" / "fitted"
    failing = Saved(1)
    failing.fail = True
    folders.save_fitted("m", failing, folder, "key", 40.0, None, 0)
    assert events == [
        "m: could not save the fitted model (OSError: disk full); a stopped run fits it again"
    ]
    assert not folder.exists() and not folder.with_name(".fitted.tmp").exists()


# ---------------------------------------------------------------------- the last records
def test_record_done_writes_cost_then_done_json_and_removes_checkpoints(tmp_path):
    mc = ModelConfig(name="most_popular", label="pop", grid={})
    mdir = tmp_path / "models" / "pop"
    (mdir / "checkpoints").mkdir(parents=True)
    (mdir / "full").mkdir()
    (mdir / "full" / "metrics.json").write_text("{}")
    model = create_model("most_popular", {})
    job = ModelJob(
        mc=mc,
        label="pop",
        mdir=mdir,
        template=model,
        protocols=[ProtocolConfig()],
        skipped={},
        budget_users=2,
        first_stage=False,
        has_valid=True,
        refit=True,
        tune_proto=ProtocolConfig(),
    )
    tuning = Tuning(needs_validation=False, trials=[], seconds=0.0)
    fitted = Fitted(model, None, refitted=True, fit_seconds=0.5, history_refreshed=None)  # type: ignore[arg-type]
    measured = Measured(test_users=np.array([3, 4]), results={"full": {}})
    folders, _ = _folders(tmp_path)
    record = folders.record_done(job, tuning, fitted, measured, {"fit_seconds": 0.5}, 5)
    assert json.loads((mdir / "DONE.json").read_text()) == record
    assert json.loads((mdir / "cost.json").read_text()) == {"fit_seconds": 0.5}
    assert not (mdir / "checkpoints").exists()
    assert record["model_hash"] == model_hash(mc) and record["protocols"] == ["full"]
    assert record["evaluated_users"] == 2 and record["all_test_users"] == 5
    assert record["user_sample"] and "training_seeds" not in record
    assert list(record)[-2:] == ["finished", "artifacts"]
    assert sorted(record["artifacts"]) == ["models/pop/cost.json", "models/pop/full/metrics.json"]
    assert folders.done_status(mc) == ("done", [])


# ---------------------------------------------------------------------- set-up stages
def _stage(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "train.parquet").write_bytes(b"rows")
    (folder / "split.json").write_text('{"method": "leave_one_out"}')
    # a first stage's candidates: its model's DONE.json records them, not the stamp
    (folder / "first_stage__x__test.npz").write_bytes(b"candidates")


def test_a_stamped_stage_is_reused_then_refused_after_a_config_change(tmp_path):
    events: list[str] = []
    run = RunFolder(tmp_path, events.append)
    split = tmp_path / "split"
    _stage(split)
    run.stamp_stage(split, "split", "hash-1", {"seed": 1}, reused=False)
    stamp = json.loads((split / STAGE_FILE).read_text())
    assert stamp["config_hash"] == "hash-1" and stamp["settings"] == {"seed": 1}
    assert sorted(stamp["files"]) == ["split.json", "train.parquet"]

    again = RunFolder(tmp_path, events.append)
    assert again.reusable_stage(split, "split.json", "split", "hash-1", vouched=False)
    assert again.stage_checksums[split] == stamp["files"]
    # reused: the stamp keeps the checksums verified, without reading the files again
    again.stamp_stage(split, "split", "hash-1", {"seed": 1}, reused=True)
    assert json.loads((split / STAGE_FILE).read_text()) == stamp
    assert events == []

    assert not again.reusable_stage(split, "split.json", "split", "hash-2", vouched=True)
    assert not split.exists()
    assert events == [f"split: {split} was made by another split configuration: recomputing it"]


def test_a_stage_with_a_damaged_file_is_recomputed_naming_it(tmp_path):
    events: list[str] = []
    run = RunFolder(tmp_path, events.append)
    split = tmp_path / "split"
    _stage(split)
    run.stamp_stage(split, "split", "h", {}, reused=False)
    (split / "train.parquet").write_bytes(b"other rows")
    assert not run.reusable_stage(split, "split.json", "split", "h", vouched=True)
    assert events == [
        f"split: {split / 'train.parquet'} is damaged (its sha256 differs from the one "
        "split/stage.json records): recomputing it"
    ]
    assert not split.exists()


def test_an_unstamped_stage_is_trusted_only_when_run_json_vouches(tmp_path):
    events: list[str] = []
    run = RunFolder(tmp_path, events.append)
    data = tmp_path / "dataset"
    _stage(data)
    assert run.reusable_stage(data, "split.json", "data", "h", vouched=True)
    assert run.stage_checksums[data] is None
    assert not run.reusable_stage(data, "split.json", "data", "h", vouched=False)
    assert "has no record of the configuration that made it" in events[0]
    assert not run.reusable_stage(data, "split.json", "data", "h", vouched=True)  # gone


def test_a_stage_that_cannot_be_loaded_is_deleted_naming_an_unreadable_file(tmp_path):
    events: list[str] = []
    run = RunFolder(tmp_path, events.append)
    data = tmp_path / "dataset"
    data.mkdir()
    (data / "dataset.json").write_text("{}")

    def load(folder: Path) -> None:
        raise ValueError("bad bytes")

    assert run.load_stage(data, "data", load) is None
    assert not data.exists()
    assert events == [f"data: {data} cannot be read (ValueError: bad bytes): recomputing it"]
    _stage(data)  # its parquet and npz files are not what their names say
    assert run.load_stage(data, "data", load) is None
    assert events[-1].startswith(f"data: {data / 'first_stage__x__test.npz'} is damaged (")
    _stage(data)
    assert run.load_stage(data, "data", lambda folder: "loaded") == "loaded"


def test_a_damaged_run_json_is_recovered_only_from_a_matching_split_stamp(tmp_path):
    events: list[str] = []
    run = RunFolder(tmp_path, events.append)
    state = tmp_path / "run.json"
    with pytest.raises(DamagedArtifactError, match="cannot be resumed"):
        run.recover_run_state(state, "not JSON", "h")
    _stage(tmp_path / "split")
    run.stamp_stage(tmp_path / "split", "split", "h", {}, reused=False)
    with pytest.raises(DamagedArtifactError):
        run.recover_run_state(state, "not JSON", "other")
    run.recover_run_state(state, "not JSON", "h")
    assert events[-1].endswith("records this setup: rewriting it")


def test_leftovers_are_removed_and_clear_keeps_the_lock(tmp_path):
    events: list[str] = []
    run = RunFolder(tmp_path, events.append)
    (tmp_path / "models" / ".ease.incoming").mkdir(parents=True)
    (tmp_path / ".run.json.abcd1234.tmp").write_text("half")
    (tmp_path / "run.json").write_text("{}")
    run.remove_leftovers()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["models", "run.json"]
    assert events == [
        "removed 2 temporary file(s) an interrupted run left: .run.json.abcd1234.tmp, "
        "models/.ease.incoming"
    ]
    (tmp_path / "run.lock").write_text("pid")
    run.clear(keep="run.lock")
    assert [p.name for p in tmp_path.iterdir()] == ["run.lock"]


# ---------------------------------------------------------------------- protocols, cost
class Catalog:
    """A stand-in model: ``recommend`` returns the candidates it was given (or the catalog)."""

    def recommend(self, users, k, *, candidates=None, exclude=None, item_pool=None, seed=0):
        items = candidates if candidates is not None else np.tile(np.arange(k), (len(users), 1))
        return RankedLists(users, items[:, :k], np.zeros(items[:, :k].shape, np.float32))


def test_rank_lists_takes_each_users_candidates_and_needs_them_all():
    sampled = ProtocolConfig(kind="sampled", n_negatives=2)
    cand = CandidateSet(np.array([1, 4]), np.array([[7, 8, 9], [1, 2, 3]]), "sampled", "")
    lists = rank_lists(
        Catalog(), sampled, "test", np.array([4]), None, 2, item_pool=None, candidates=cand, seed=0
    )
    np.testing.assert_array_equal(lists.items, [[1, 2]])
    with pytest.raises(ArtifactError, match="do not cover every test user"):
        rank_lists(
            Catalog(),
            sampled,
            "test",
            np.array([2]),
            None,
            2,
            item_pool=None,
            candidates=cand,
            seed=0,
        )
    with pytest.raises(ArtifactError, match="no sampled-2 candidates for stage 'valid'"):
        rank_lists(
            Catalog(),
            sampled,
            "valid",
            np.array([1]),
            None,
            2,
            item_pool=None,
            candidates=None,
            seed=0,
        )


def test_first_stage_top_n_is_the_most_any_protocol_takes():
    from recarena.config import parse_config

    config = parse_config(
        {
            "name": "t",
            "data": {"name": "ml-100k"},
            "evaluation": {
                "protocols": [
                    {"kind": "first_stage", "first_stage": "ease", "top_n": 20},
                    {"kind": "first_stage", "first_stage": "ease", "top_n": 50},
                ]
            },
            "models": [{"name": "ease"}],
        }
    )
    assert first_stage_top_n(config, "ease") == 50


def test_latency_times_one_user_at_a_time_on_a_seeded_sample():
    ranked: list[np.ndarray] = []
    users = np.arange(100)
    p50, p95 = latency_ms(ranked.append, users, 5, seed=42)
    assert len(ranked) == 5 and all(u.shape == (1,) for u in ranked)
    assert 0 <= p50 <= p95
    again: list[np.ndarray] = []
    latency_ms(again.append, users, 5, seed=42)
    assert [int(u[0]) for u in again] == [int(u[0]) for u in ranked]
    assert latency_ms(ranked.append, users, 0, seed=42) is None
    assert latency_ms(ranked.append, users[:0], 5, seed=42) is None


class Sized:
    def n_parameters(self) -> tuple[int, int]:
        return 10, 4

    def cost_record(self) -> dict[str, Any]:
        return {"device": "cpu"}


def test_the_cost_record_from_the_stages_results():
    tuning = Tuning(needs_validation=True, trials=[{}, {}], seconds=3.0)
    fitted = Fitted(Sized(), None, True, 2.0, None)  # type: ignore[arg-type]
    measured = Measured(test_users=np.arange(3), throughput=100.0, latency=(1.0, 2.0))
    mem = PeakMemory()
    mem.peak_bytes = 2**21
    record = cost_record(tuning, fitted, measured, mem)
    assert record == {
        "parameters_total": 10,
        "parameters_trainable": 4,
        "fit_seconds": 2.0,
        "tuning_seconds": 3.0,
        "tuning_trials": 2,
        "users_per_second": 100.0,
        "latency_ms_p50": 1.0,
        "latency_ms_p95": 2.0,
        "peak_memory_mib": mem.peak_mib,
        "gpu_peak_memory_mib": None if mem.gpu_peak_bytes is None else mem.gpu_peak_bytes / 2**20,
        "device": "cpu",
    }
    measured.latency = None
    assert cost_record(tuning, fitted, measured, mem)["latency_ms_p95"] is None
