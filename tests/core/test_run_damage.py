"""Damaged run folders and reports that check what they find (issue 11, items 5 and 6).

Every artifact type a run writes is cut short in turn; `recarena report` must then name
the file in a clear error and write nothing, and `recarena run` must say which file is
damaged, recompute what it belongs to (nothing else) and end as an undamaged run did.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from rich.console import Console

from recarena._rundir import check_run_folder
from recarena.config import dump_config, parse_config
from recarena.errors import ArtifactError, DamagedArtifactError
from recarena.models.classical.baselines import MostPopular
from recarena.runner import run_experiment
from tests.core.test_runner import _config

FIRST_STAGE = "first-stage-most_popular-10"
PROTOCOLS = [
    {"kind": "full"},
    {"kind": "sampled", "n_negatives": 9},
    {"kind": "first_stage", "first_stage": "most_popular", "top_n": 10},
]
MODELS = [
    # the first stage of a protocol: validation lists, tuning.json, candidate files in split/
    {"name": "most_popular", "grid": {}},
    {"name": "tests.core.test_run_damage:Logged", "label": "logged"},
    {"name": "tests.core.test_runner:Exploding", "label": "exploding"},
]


class Logged(MostPopular):
    """Most popular, with a training log (``training_log.json``), as trained models have."""

    def _fit(self, data, valid):
        super()._fit(data, valid)
        self.training_log_ = [{"epoch": 1, "loss": 0.5}]


# ------------------------------------------------------------------ the reference run
@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[dict, Path]:
    """One undamaged run (the config and its run folder); tests work on copies of it."""
    folder = tmp_path_factory.mktemp("reference")
    raw = _config(folder, MODELS, protocols=PROTOCOLS)
    result = run_experiment(parse_config(raw), cache_dir=folder / "cache")
    assert result.failed.keys() == {"exploding"}
    return raw, result.run_dir


@pytest.fixture
def copy(reference, tmp_path) -> tuple[dict, Path]:
    raw, run = reference
    target = tmp_path / "runs" / run.name
    shutil.copytree(run, target)
    # the config stays the reference's (config.toml holds its output_dir); see `_run`
    return raw, target


def _files(run: Path) -> dict[str, bytes]:
    return {
        p.relative_to(run).as_posix(): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()
    }


def truncate(path: Path) -> None:
    """Cut a file to half its length, as a full disk or a copy stopped part-way would."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def report(run: Path, monkeypatch, capsys) -> tuple[int, str]:
    """``recarena report RUN`` as the command line runs it: exit code and what it printed."""
    from recarena import cli

    monkeypatch.setattr(cli, "console", Console(stderr=True, width=2000))
    monkeypatch.setattr(sys, "argv", ["recarena", "report", str(run)])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    return int(exit_.value.code or 0), capsys.readouterr().err


def _cache(raw: dict) -> Path:
    return Path(raw["data"]["path"]).parent / "cache"


def _run(raw: dict, run: Path, **kwargs):
    """Run the experiment of ``raw`` into the run folder ``run`` (a copy of the reference)."""
    return run_experiment(parse_config(raw), output_dir=run.parent, cache_dir=_cache(raw), **kwargs)


def rerun(raw: dict, run: Path) -> tuple[list[str], set[str]]:
    """Run the experiment again: its messages and the models it fitted (recomputed)."""
    events: list[str] = []
    result = _run(raw, run, on_event=events.append)
    assert result.failed.keys() == {"exploding"}
    fitted = {
        e.split(":")[0]
        for e in events
        if e.endswith(": fitting on train + valid") or ": validation " in e
    }
    return events, fitted - {"exploding"}


# what differs between two runs of one experiment: times, and what records them; and what
# folders written before checksums lack (the files the checksums cover are compared)
_VOLATILE_KEYS = {"finished", "created", "cost", "fit_seconds", "tuning_seconds"}
_VOLATILE_KEYS |= {"artifacts", "files", "model_config"}
_VOLATILE_FILES = {"cost.json", "summary.md", "run.json", "environment.json"}


def _normalised(rel: str, data: bytes) -> object:
    if Path(rel).name in _VOLATILE_FILES:
        return None
    if not rel.endswith(".json"):
        return data

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in _VOLATILE_KEYS}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(json.loads(data))


def assert_same_run(run: Path, expected: dict[str, bytes]) -> None:
    """``run`` holds what ``expected`` held, byte for byte but for times (and the report)."""
    got = {k: v for k, v in _files(run).items() if not k.startswith("report")}
    assert sorted(got) == sorted(expected)
    for rel, data in expected.items():
        assert _normalised(rel, got[rel]) == _normalised(rel, data), rel


# ------------------------------------------------------------------ every artifact type
#: one file of every artifact type a run writes (a model's files once, not per protocol),
#: with the models a run must recompute when it is damaged
ARTIFACTS: dict[str, set[str]] = {
    "config.toml": set(),
    "environment.json": set(),
    "run.json": set(),
    "summary.csv": set(),
    "summary.json": set(),
    "summary.md": set(),
    "fairness_users.csv": set(),
    "fairness_gaps.csv": set(),
    "fairness_items.csv": set(),
    # a recomputed data set means a recomputed split, which holds the first stage's lists
    "dataset/dataset.json": {"most_popular"},
    "dataset/interactions.parquet": {"most_popular"},
    "dataset/items.parquet": {"most_popular"},
    "dataset/users.parquet": {"most_popular"},
    "dataset/stage.json": {"most_popular"},
    "split/arrays.npz": {"most_popular"},
    "split/split.json": {"most_popular"},
    "split/stage.json": {"most_popular"},
    "split/train.parquet": {"most_popular"},
    "split/valid.parquet": {"most_popular"},
    "split/test.parquet": {"most_popular"},
    "split/candidates_sampled-9__test.npz": {"most_popular"},
    "split/candidates_sampled-9__valid.npz": {"most_popular"},
    f"split/first_stage__{FIRST_STAGE}__test.npz": {"most_popular"},
    f"split/first_stage__{FIRST_STAGE}__valid.npz": {"most_popular"},
    "models/most_popular/tuning.json": {"most_popular"},
    "models/logged/DONE.json": {"logged"},
    "models/logged/cost.json": {"logged"},
    "models/logged/training_log.json": {"logged"},
    "models/logged/full/lists.npz": {"logged"},
    "models/logged/full/per_user.parquet": {"logged"},
    "models/logged/full/metrics.json": {"logged"},
    "models/logged/sampled-9/lists.npz": {"logged"},
    f"models/logged/{FIRST_STAGE}/per_user.parquet": {"logged"},
    "models/exploding/FAILED.json": set(),
}
#: files that `recarena report` writes itself, so it repairs them
REPORT_WRITES = {
    "summary.csv",
    "summary.json",
    "summary.md",
    "fairness_users.csv",
    "fairness_gaps.csv",
    "fairness_items.csv",
}


def _artifact_type(rel: str) -> str:
    parts = rel.split("/")
    if parts[0] == "models":  # a model's files are one type whatever the model or protocol
        return "models/" + ("PROTOCOL/" if len(parts) > 3 else "") + parts[-1]
    if parts[0] == "split" and "__" in parts[-1]:
        return "split/" + parts[-1].split("__")[0]
    return rel


def test_every_artifact_type_a_run_writes_is_damaged_in_a_test(reference):
    _, run = reference
    written = {_artifact_type(rel) for rel in _files(run)}
    assert written == {_artifact_type(rel) for rel in ARTIFACTS}


@pytest.mark.parametrize("artifact", sorted(ARTIFACTS))
def test_a_damaged_artifact_is_named_by_report_and_recomputed_by_run(
    copy, reference, artifact, monkeypatch, capsys
):
    raw, run = copy
    expected = _files(reference[1])
    truncate(run / artifact)
    before = _files(run)

    code, err = report(run, monkeypatch, capsys)
    assert "Traceback" not in err
    if artifact in REPORT_WRITES:
        assert code == 0, err
        assert (run / artifact).read_bytes() == expected[artifact]
    else:
        assert code == 2, err
        if artifact == "config.toml":
            assert f"{run / artifact}" in err
        else:
            assert f"{run / artifact} is damaged (" in err
        assert _files(run) == before  # nothing written

    events, recomputed = rerun(raw, run)
    assert recomputed == ARTIFACTS[artifact], events
    if ARTIFACTS[artifact] or artifact == "run.json":
        assert any(f"{run / artifact} is damaged (" in e for e in events), events
    assert_same_run(run, expected)
    check_run_folder(run)  # what the report checks passes again


def test_a_rerun_of_an_undamaged_folder_recomputes_nothing(copy):
    raw, run = copy
    before = _files(run)
    events, recomputed = rerun(raw, run)
    assert recomputed == set()
    assert not any("recomputing" in e or " is damaged" in e for e in events)
    after = _files(run)
    changed = {rel for rel in before if after[rel] != before[rel]}
    assert changed <= {"run.json", "environment.json"}, changed  # run.json: its date


def test_report_names_a_damaged_file_from_python_too(copy):
    from recarena.report import build_report

    _, run = copy
    truncate(run / "models" / "logged" / "full" / "per_user.parquet")
    with pytest.raises(DamagedArtifactError, match="per_user.parquet is damaged") as err:
        build_report(run)
    assert err.value.path == str(run / "models" / "logged" / "full" / "per_user.parquet")
    assert "sha256 differs" in err.value.reason
    assert not (run / "report.html").exists()


def test_a_damaged_run_json_without_a_split_stamp_is_a_clear_error(copy):
    raw, run = copy
    truncate(run / "run.json")
    (run / "split" / "stage.json").unlink()
    with pytest.raises(DamagedArtifactError, match=r"run.json is damaged \(not valid JSON") as err:
        _run(raw, run)
    assert "cannot be resumed; start over (--overwrite)" in str(err.value)


def test_report_checks_every_folder_before_it_writes_into_any(
    reference, copy, tmp_path, monkeypatch, capsys
):
    _, good = copy
    bad = tmp_path / "other" / good.name
    shutil.copytree(reference[1], bad)
    truncate(bad / "models" / "logged" / "full" / "metrics.json")
    stamps = {p: p.stat().st_mtime_ns for p in good.rglob("*")}
    from recarena import cli

    monkeypatch.setattr(cli, "console", Console(stderr=True, width=2000))
    monkeypatch.setattr(sys, "argv", ["recarena", "report", str(good), str(bad)])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2
    assert (
        f"{bad / 'models' / 'logged' / 'full' / 'metrics.json'} is damaged"
        in capsys.readouterr().err
    )
    assert {p: p.stat().st_mtime_ns for p in good.rglob("*")} == stamps  # not even rewritten


def test_damaged_validation_trials_are_recomputed(copy):
    raw, run = copy
    done = run / "models" / "most_popular" / "DONE.json"
    done.unlink()  # killed after its tuning, before it was done
    truncate(run / "models" / "most_popular" / "tuning.json")
    events, recomputed = rerun(raw, run)
    assert recomputed == {"most_popular"}
    assert any("tuning.json is damaged" in e and "trials are recomputed" in e for e in events)


# ------------------------------------------------------------------ folders from before checksums
def _without_checksums(run: Path) -> None:
    """Make ``run`` a folder written before DONE.json and stage.json recorded checksums."""
    for path in [*run.glob("models/*/DONE.json"), *run.glob("*/stage.json")]:
        record = json.loads(path.read_text())
        record.pop("artifacts", None)
        record.pop("files", None)
        record.pop("model_config", None)
        path.write_text(json.dumps(record, indent=2))


def test_a_folder_written_before_checksums_still_loads_and_resumes(copy, monkeypatch, capsys):
    raw, run = copy
    _without_checksums(run)
    events, recomputed = rerun(raw, run)
    assert recomputed == set()
    assert not any("recomputing" in e or " is damaged" in e for e in events)
    assert "artifacts" not in json.loads((run / "models" / "logged" / "DONE.json").read_text())
    # the stages are stamped again, now with checksums
    assert "files" in json.loads((run / "split" / "stage.json").read_text())
    assert report(run, monkeypatch, capsys)[0] == 0


@pytest.mark.parametrize(
    "artifact",
    [
        "models/logged/full/per_user.parquet",
        "models/logged/sampled-9/lists.npz",
        "models/logged/DONE.json",
        "dataset/interactions.parquet",
        "split/arrays.npz",
    ],
)
def test_a_folder_written_before_checksums_has_its_unreadable_files_named(
    copy, reference, artifact, monkeypatch, capsys
):
    raw, run = copy
    expected = _files(run)
    _without_checksums(run)
    truncate(run / artifact)
    code, err = report(run, monkeypatch, capsys)
    assert code == 2 and f"{run / artifact} is damaged" in err and "Traceback" not in err
    events, recomputed = rerun(raw, run)
    assert recomputed == ARTIFACTS[artifact]
    assert any(artifact.split("/")[-1] in e for e in events if "recomputing" in e), events
    assert_same_run(run, expected)
    # what was recomputed records checksums from now on
    for label in recomputed:
        assert "artifacts" in json.loads((run / "models" / label / "DONE.json").read_text())


# ------------------------------------------------------------------ config.toml (item 5)
def _write_config(run: Path, raw: dict) -> None:
    (run / "config.toml").write_text(dump_config(parse_config(raw)))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        # another experiment's config.toml (same data, another split)
        (
            lambda raw: {**raw, "name": "other", "split": {"method": "random"}},
            'split.method: "leave_one_out" when the run was made, "random" in config.toml',
        ),
        # ks edited: the report would rank by another cut-off
        (
            lambda raw: {**raw, "evaluation": {**raw["evaluation"], "ks": [20]}},
            "evaluation.ks: [5, 10, 20] when the run was made, [20] in config.toml",
        ),
    ],
)
def test_report_refuses_a_config_that_does_not_describe_the_run(
    copy, change, expected, monkeypatch, capsys
):
    raw, run = copy
    _write_config(run, change(raw))
    before = _files(run)
    code, err = report(run, monkeypatch, capsys)
    assert code == 2 and "Traceback" not in err
    assert f"{run / 'config.toml'} does not describe the run in {run}" in err
    assert "setup differs from the one run.json records" in err and expected in err
    assert _files(run) == before  # nothing written, summary.csv kept its intervals


def test_report_refuses_a_config_whose_model_differs_from_its_results(copy, monkeypatch, capsys):
    raw, run = copy
    models = [dict(m) for m in MODELS]
    models[1]["max_eval_users"] = 5
    _write_config(run, {**raw, "models": models})
    before = _files(run)
    code, err = report(run, monkeypatch, capsys)
    assert code == 2
    assert f"{run / 'models' / 'logged' / 'DONE.json'} holds the results of another " in err
    assert "configuration of model 'logged'" in err
    assert "max_eval_users: unset when the run was made, 5 in config.toml" in err
    assert _files(run) == before


def test_build_report_checks_the_config_too(copy):
    from recarena.report import build_report

    raw, run = copy
    _write_config(run, {**raw, "seed": 7})
    with pytest.raises(ArtifactError, match="seed: 42 when the run was made, 7 in config.toml"):
        build_report(run)
    assert not (run / "report.html").exists()
