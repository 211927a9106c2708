"""`recarena audit`: every finished model of a run refit without the non-members and
attacked; models that cannot score unseen users listed with the reason; results reused."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from recarena.cli import app
from recarena.config import parse_config
from recarena.runner import run_experiment
from tests.core.test_runner import _config


def test_audit_of_a_run(tmp_path):
    raw = _config(
        tmp_path,
        [
            {"name": "most_popular", "grid": {}},
            {"name": "ease", "grid": {}},
            {"name": "bpr", "grid": {}, "params": {"factors": 8, "iterations": 5}},
        ],
        bootstrap=20,
    )
    result = run_experiment(parse_config(raw), cache_dir=tmp_path / "cache", progress=False)
    before = {p: p.read_bytes() for p in (result.run_dir / "models").rglob("*") if p.is_file()}
    out = CliRunner().invoke(
        app, ["audit", str(result.run_dir), "--fraction", "0.2", "--cache-dir", str(tmp_path)]
    )
    assert out.exit_code == 0, out.output
    table = pd.read_csv(result.run_dir / "membership.csv").set_index("model")
    assert table.loc["ease", "status"] == "audited"
    assert 0 <= table.loc["ease", "attack_auc"] <= 1
    assert (
        table.loc["ease", "ci_low"]
        <= table.loc["ease", "attack_auc"]
        <= table.loc["ease", "ci_high"]
    )
    assert table.loc["most_popular", "status"] == "audited"
    assert table.loc["bpr", "status"].startswith("not audited: BPR cannot score users")
    saved = json.loads((result.run_dir / "models" / "ease" / "membership.json").read_text())
    assert saved["settings"]["fraction"] == 0.2 and saved["n_non_members"] > 0
    # nothing the run wrote changed
    for path, data in before.items():
        assert path.read_bytes() == data, path
    # a second audit reuses the results
    again = CliRunner().invoke(
        app, ["audit", str(result.run_dir), "--fraction", "0.2", "--cache-dir", str(tmp_path)]
    )
    assert again.exit_code == 0 and "audited earlier" in again.output


def test_a_private_model_records_its_epsilon_in_the_run_and_the_audit(tmp_path):
    sasrec = {"max_len": 10, "hidden": 16, "epochs": 2, "patience": 1, "num_threads": 1}
    raw = _config(
        tmp_path,
        [
            {"name": "sasrec", "grid": {}, "params": sasrec},
            {
                "name": "sasrec",
                "label": "private",
                "grid": {},
                "params": {**sasrec, "dp_noise_multiplier": 1.0},
            },
        ],
        bootstrap=20,
    )
    result = run_experiment(parse_config(raw), cache_dir=tmp_path / "cache", progress=False)
    cost = json.loads((result.run_dir / "models" / "private" / "cost.json").read_text())
    dp = cost["dp"]
    assert dp["noise_multiplier"] == 1.0 and dp["epsilon_spent"] > 0 and dp["steps"] > 0
    log = json.loads((result.run_dir / "models" / "private" / "training_log.json").read_text())
    assert all("epsilon" in row for row in log)
    table = audit_run_table(result.run_dir, tmp_path)
    assert table.loc["private", "dp_epsilon"] == dp["epsilon_spent"]
    assert pd.isna(table.loc["sasrec", "dp_epsilon"])
    # the report: quality, epsilon and attack AUC side by side, and the curve
    from recarena.report import build_report

    html = build_report([result.run_dir], result.run_dir / "r.html").read_text()
    assert "Privacy — " in html and "∞ (not private)" in html
    assert "against epsilon" in html
    raw = pd.read_csv(result.run_dir / "r_tables" / "privacy_full.csv").set_index("model")
    assert raw.loc["private", "epsilon_spent"] == pytest.approx(dp["epsilon_spent"])
    assert raw.loc["sasrec", "attack_auc"] == pytest.approx(table.loc["sasrec", "attack_auc"])


def audit_run_table(run_dir, cache):
    from recarena.privacy.audit import audit_run

    return audit_run(run_dir, fraction=0.2, cache_dir=cache, n_boot=50).set_index("model")
