"""Reading, merging and refusing runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from recarena.errors import ArtifactError
from recarena.report import build_report, load_report_data, load_run, merge_runs


def _as_run_wrote(run: Path, changed: str) -> None:
    """Record the checksum of a file a test edited, as a run that wrote it so would have."""
    from recarena._io import sha256_file

    stage, name = changed.split("/")
    stamp_path = run / stage / "stage.json"
    stamp = json.loads(stamp_path.read_text())
    stamp["files"][name] = sha256_file(run / changed)
    stamp_path.write_text(json.dumps(stamp))


def _with_setup(run: Path, config_text: str) -> None:
    """Give ``run`` the config ``config_text``, as a run of that config would have."""
    from recarena.config import load_config
    from recarena.runner import setup_hash

    (run / "config.toml").write_text(config_text)
    config = load_config(run / "config.toml")
    dump = config.model_dump(mode="json")
    for name in ("run.json", "split/stage.json"):
        record = json.loads((run / name).read_text())
        record["setup_hash" if name == "run.json" else "config_hash"] = setup_hash(config)
        if name != "run.json":
            record["settings"] = {k: dump[k] for k in ("data", "split", "evaluation", "seed")}
        (run / name).write_text(json.dumps(record))


def _copy_run(run: Path, dest: Path) -> Path:
    target = dest / run.name
    shutil.copytree(run, target)
    for stale in target.glob("report*"):
        if stale.is_dir():
            shutil.rmtree(stale)
        else:
            stale.unlink()
    return target


def test_load_run_reads_done_and_failed_models(main_run):
    run = load_run(main_run)
    status = {m.label: m.status for m in run.models}
    assert status["ease"] == "done"
    assert status["broken"] == "failed"
    broken = next(m for m in run.models if m.label == "broken")
    assert "no_such_parameter" in broken.error
    assert broken.family == "classical"  # from the registry: FAILED.json has no family
    sasrec = next(m for m in run.models if m.label == "sasrec")
    assert sasrec.user_sample and sasrec.evaluated_users == 40
    assert sasrec.training_log and "loss" in sasrec.training_log[0]
    assert set(run.protocols) == {"full", "sampled-9"}


def test_load_run_refuses_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(ArtifactError, match="not a run directory"):
        load_run(tmp_path)


def test_merge_distinguishes_shared_labels(main_run, second_run):
    data = load_report_data([main_run, second_run])
    labels = [m.label for m in data.models]
    assert "ease (main)" in labels and "ease (second)" in labels
    assert "itemknn" in labels and "random" in labels  # unique labels stay as they are
    assert "ease" not in set(data.summary["model"])
    assert {"ease (main)", "ease (second)"} <= set(data.summary["model"])
    # the relabelled rows carry the numbers of their own run
    own = pd.read_csv(second_run / "summary.csv")
    mine = data.summary[(data.summary["model"] == "ease (second)")]
    a = own[(own["model"] == "ease") & (own["metric"] == "ndcg@10") & (own["segment"] == "all")]
    b = mine[(mine["metric"] == "ndcg@10") & (mine["segment"] == "all")]
    assert sorted(a["mean"]) == sorted(b["mean"])


def test_merged_report_default_path(main_run, second_run, tmp_path):
    out = build_report([main_run, second_run])
    assert out == main_run / "report-merged.html"
    html = out.read_text(encoding="utf-8")
    assert "ease (main)" in html and "ease (second)" in html
    assert (main_run / "report-merged_tables" / "leaderboard_full.csv").exists()
    custom = build_report([main_run, second_run], tmp_path / "cmp.html")
    assert custom == tmp_path / "cmp.html"
    assert (tmp_path / "cmp_tables" / "report.md").exists()


def test_refuses_runs_with_another_split(main_run, other_split_run):
    with pytest.raises(ArtifactError, match=r"different splits: split method \('leave_one_out'"):
        build_report([main_run, other_split_run])


def test_refuses_runs_with_other_candidates(main_run, other_seed_run):
    with pytest.raises(ArtifactError, match="'sampled-9' has different test candidates"):
        load_report_data([main_run, other_seed_run])


def test_refuses_runs_with_another_data_set(main_run, tmp_path):
    copy = _copy_run(main_run, tmp_path)
    meta_path = copy / "dataset" / "dataset.json"
    meta = json.loads(meta_path.read_text())
    meta["info"]["stats"]["interactions"] += 1
    meta_path.write_text(json.dumps(meta))
    _as_run_wrote(copy, "dataset/dataset.json")
    with pytest.raises(ArtifactError, match=r"different data sets: stats\.interactions"):
        merge_runs([load_run(main_run), load_run(copy)])


def test_refuses_runs_with_other_segments(main_run, tmp_path):
    copy = _copy_run(main_run, tmp_path)
    config = (copy / "config.toml").read_text()
    _with_setup(copy, config.replace("cold_user_max = 5", "cold_user_max = 3"))
    with pytest.raises(ArtifactError, match=r"evaluation\.cold_user_max \(5 vs 3\)"):
        load_report_data([main_run, copy])


def test_same_files_in_another_folder_merge(main_run, tmp_path):
    copy = _copy_run(main_run, tmp_path)
    meta_path = copy / "dataset" / "dataset.json"
    meta = json.loads(meta_path.read_text())
    meta["info"]["source"] = "/elsewhere/interactions.csv"  # same file hashes, other place
    meta_path.write_text(json.dumps(meta))
    _as_run_wrote(copy, "dataset/dataset.json")
    data = load_report_data([main_run, copy])
    assert "ease (run1)" in {m.label for m in data.models}  # both folders are named "main"


def test_missing_summary_is_rebuilt(main_run, tmp_path):
    copy = _copy_run(main_run, tmp_path)
    (copy / "summary.csv").unlink()
    out = build_report([copy])
    assert "summary.csv was missing" in out.read_text(encoding="utf-8")


def test_a_model_that_never_started_is_listed(main_run, tmp_path):
    copy = _copy_run(main_run, tmp_path)
    shutil.rmtree(copy / "models" / "tfidf")
    run = load_run(copy)
    tfidf = next(m for m in run.models if m.label == "tfidf")
    assert tfidf.status == "failed" and "stopped before" in tfidf.error
