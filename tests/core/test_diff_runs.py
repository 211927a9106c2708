"""scripts/diff_runs.py: two runs of one experiment hold the same numbers, times aside."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd

from recarena.config import parse_config
from recarena.runner import run_experiment
from tests.core.test_runner import _config

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "diff_runs.py"
_spec = importlib.util.spec_from_file_location("diff_runs", SCRIPT)
diff_runs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(diff_runs)


def _two_runs(tmp_path: Path) -> tuple[Path, Path]:
    raw = _config(
        tmp_path, [{"name": "most_popular"}, {"name": "ease", "grid": {"l2": [1.0, 10.0]}}]
    )
    cfg = parse_config(raw)
    first = run_experiment(cfg, output_dir=tmp_path / "a", cache_dir=tmp_path / "cache").run_dir
    second = run_experiment(cfg, output_dir=tmp_path / "b", cache_dir=tmp_path / "cache").run_dir
    return first, second


def test_two_runs_of_one_experiment_differ_in_times_only(tmp_path):
    before, after = _two_runs(tmp_path)
    differences, compared, _ = diff_runs.diff_runs(before, after)
    assert differences == [] and compared > 20

    # a changed metric value, a changed list, a missing file: each named
    per_user = after / "models" / "ease" / "full" / "per_user.parquet"
    frame = pd.read_parquet(per_user)
    frame.loc[3, "ndcg@10"] += 0.5
    frame.to_parquet(per_user, index=False)
    metrics = after / "models" / "ease" / "full" / "metrics.json"
    content = json.loads(metrics.read_text())
    content["fit_seconds"] = 123.0  # a time: not a difference
    metrics.write_text(json.dumps(content))
    (after / "models" / "most_popular" / "tuning.json").unlink()

    differences, _, _ = diff_runs.diff_runs(before, after)
    assert len(differences) == 2, differences
    assert differences[0].startswith("models/most_popular/tuning.json: only in")
    assert differences[1].startswith("models/ease/full/per_user.parquet: column 'ndcg@10', row 3")


def test_a_class_path_through_an_old_import_path_is_the_same_class(tmp_path):
    before, after = _two_runs(tmp_path)
    done = after / "models" / "ease" / "DONE.json"
    record = json.loads(done.read_text())
    assert record["class"] == "recarena.models.classical.ease:EASE"
    record["class"] = "recarena.models.ease:EASE"  # as a run from before the move wrote it
    done.write_text(json.dumps(record))
    assert diff_runs.diff_runs(before, after)[0] == []
    record["class"] = "recarena.models.classical.baselines:MostPopular"
    done.write_text(json.dumps(record))
    (difference,) = diff_runs.diff_runs(before, after)[0]
    assert difference.startswith("models/ease/DONE.json: /class:")
