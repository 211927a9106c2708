"""Resampled splits: one run folder per split seed, summaries across splits (a two-stage
bootstrap over splits and users), resume per split, and refusals that keep one-split runs
and split folders apart."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from recarena.config import dump_config, load_config, parse_config
from recarena.errors import ConfigError, RunDirectoryError
from recarena.experiment.split_seeds import SplitRunResult, split_folder
from recarena.metrics import bootstrap_ci, clustered_bootstrap_ci
from recarena.runner import run_experiment
from tests.core.test_runner import _config

BPR = {"name": "bpr", "grid": {}, "params": {"factors": 8, "iterations": 5}}


def _minimal(**top) -> dict:
    return {"data": {"name": "ml-100k"}, "models": [{"name": "ease"}], **top}


# ------------------------------------------------------------------ configuration
def test_split_seeds_replace_seed_and_round_trip(tmp_path):
    cfg = parse_config(_minimal(split_seeds=[1, 2], split={"method": "random"}))
    assert cfg.split_seeds == [1, 2]
    path = tmp_path / "c.toml"
    path.write_text(dump_config(cfg))
    assert "split_seeds = [1, 2]" in path.read_text()
    assert "\nseed =" not in path.read_text()  # the split seeds replace it
    assert load_config(path).split_seeds == [1, 2]


@pytest.mark.parametrize(
    ("top", "message"),
    [
        ({"split_seeds": [1, 2], "seed": 3}, "give `split_seeds` alone"),
        ({"split_seeds": [1, 1]}, r"repeat \[1\]"),
        ({"split_seeds": []}, "at least one seed"),
        (
            {"split_seeds": [1, 2], "split": {"method": "predefined"}},
            "reads the split from the data",
        ),
    ],
)
def test_bad_split_seeds_are_refused(top, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(_minimal(**top))


# ------------------------------------------------------------------ the bootstrap
def test_clustered_bootstrap_without_user_variation_resamples_the_groups():
    """With every user of a group alike, the resamples are means of drawn group means:
    the interval is that of the groups alone, drawn as the docstring says."""
    means = np.array([0.1, 0.3, 0.2, 0.6])
    groups = [np.full(n, m) for n, m in zip((5, 9, 3, 7), means, strict=True)]
    mean, low, high, sd = clustered_bootstrap_ci(groups, n_boot=500, seed=4)
    picks = np.random.default_rng([4, 5]).integers(0, 4, size=(500, 4))
    expected = np.percentile(means[picks].mean(axis=1), [2.5, 97.5])
    assert mean[0] == pytest.approx(means.mean()) and sd[0] == pytest.approx(means.std(ddof=1))
    assert (low[0], high[0]) == pytest.approx(tuple(expected))


def test_clustered_bootstrap_covers_users_and_groups():
    rng = np.random.default_rng(0)
    same = [rng.normal(0.5, 0.2, size=(300, 2)) for _ in range(3)]
    shifted = [g + d for g, d in zip(same, (-0.1, 0.0, 0.1), strict=True)]
    _, low1, high1, _ = clustered_bootstrap_ci(same, n_boot=400, seed=1)
    _, low2, high2, sd2 = clustered_bootstrap_ci(shifted, n_boot=400, seed=1)
    # groups that differ widen the interval beyond the users' own
    assert ((high2 - low2) > 1.5 * (high1 - low1)).all()
    assert sd2 == pytest.approx([0.1, 0.1], abs=0.02)
    # one group: the users alone, about as wide as the one-level bootstrap
    _, lo, hi, sd = clustered_bootstrap_ci(same[:1], n_boot=400, seed=1)
    _, blo, bhi = bootstrap_ci(same[0], n_boot=400, seed=1)
    assert np.isnan(sd).all()
    assert (hi - lo) == pytest.approx(bhi - blo, rel=0.25)
    # deterministic under its seed, NaN-ignoring, NaN bounds without resamples
    again = clustered_bootstrap_ci(same, n_boot=400, seed=1)
    assert np.array_equal(again[1], low1) and np.array_equal(again[2], high1)
    holes = [g.copy() for g in same]
    holes[0][:10, 0] = np.nan
    assert np.isfinite(clustered_bootstrap_ci(holes, n_boot=50)[1]).all()
    assert np.isnan(clustered_bootstrap_ci(same, n_boot=0)[1]).all()
    with pytest.raises(ValueError, match="same metrics"):
        clustered_bootstrap_ci([np.zeros((3, 2)), np.zeros((3, 1))])
    with pytest.raises(ValueError, match="at least one group"):
        clustered_bootstrap_ci([])


# ------------------------------------------------------------------ a run over split seeds
@pytest.fixture(scope="module")
def split_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("splits")
    raw = _config(folder, [{"name": "most_popular", "grid": {}}, BPR], bootstrap=200)
    raw["split"] = {"method": "random"}
    raw["split_seeds"] = [5, 6]
    raw["seeds"] = [1, 2]
    cfg = parse_config(raw)
    events: list[str] = []
    result = run_experiment(cfg, cache_dir=folder / "cache", progress=False, on_event=events.append)
    return cfg, result, events


def _user_means(run_dir, label, column="ndcg@10"):
    table = pd.read_parquet(run_dir / "models" / label / "full" / "per_user.parquet")
    return table[table["segment"] == "all"].set_index("user")[column].sort_index()


def test_each_split_seed_is_a_run_folder_of_its_own(split_run):
    _, result, _ = split_run
    assert isinstance(result, SplitRunResult) and not result.failed
    parent = result.run_dir
    record = json.loads((parent / "split_seeds.json").read_text())
    assert record["split_seeds"] == [5, 6] and record["split_depends_on_seed"] is True
    assert record["runs"] == {"5": split_folder(5), "6": split_folder(6)}
    tests = []
    for seed in (5, 6):
        run = parent / split_folder(seed)
        assert load_config(run / "config.toml").seed == seed
        assert load_config(run / "config.toml").split_seeds is None
        assert (run / "summary.csv").exists()
        assert sorted(p.name for p in (run / "models").iterdir()) == [
            "bpr@seed1",
            "bpr@seed2",
            "most_popular",
        ]
        tests.append(pd.read_parquet(run / "split" / "test.parquet"))
    # the split was drawn again
    assert not tests[0].equals(tests[1])
    assert load_config(parent / "config.toml").split_seeds == [5, 6]


def test_split_summary_is_over_splits_and_users(split_run):
    cfg, result, _ = split_run
    parent = result.run_dir
    table = pd.read_csv(parent / "summary_splits.csv")
    row = table[
        (table["model"] == "bpr") & (table["segment"] == "all") & (table["metric"] == "ndcg@10")
    ].iloc[0]
    # within a split, each user's mean over the training seeds; across splits, their means
    per_split = []
    for seed in (5, 6):
        run = parent / split_folder(seed)
        both = pd.concat([_user_means(run, f"bpr@seed{s}") for s in (1, 2)], axis=1)
        per_split.append(both.mean(axis=1).to_numpy())
    means = np.array([v.mean() for v in per_split])
    assert row["n_splits"] == 2 and row["split_seeds"] == "5,6" and row["training_seeds"] == 2
    assert row["mean"] == pytest.approx(means.mean())
    assert row["split_sd"] == pytest.approx(np.std(means, ddof=1))
    _, low, high, _ = clustered_bootstrap_ci(per_split, n_boot=200, seed=0)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((low[0], high[0]))
    assert row["n_users_min"] == min(len(v) for v in per_split)
    comps = pd.read_csv(parent / "comparisons_splits.csv")
    assert len(comps) == 1 and comps["metric"].iloc[0] == cfg.evaluation.tune_metric
    c = comps.iloc[0]
    excludes_zero = c["ci_low"] > 0 or c["ci_high"] < 0
    assert bool(c["better"]) == (excludes_zero and bool(c["consistent"]))
    text = (parent / "summary_splits.md").read_text()
    assert "# Across split seeds" in text and "| bpr | 2 |" in text


def test_resume_is_per_split_and_the_summary_is_the_same(split_run, tmp_path):
    cfg, result, _ = split_run
    parent = tmp_path / "copy"
    shutil.copytree(result.run_dir, parent)
    before = pd.read_csv(parent / "summary_splits.csv")
    shutil.rmtree(parent / split_folder(6) / "models" / "bpr@seed2")
    events: list[str] = []
    cfg2 = cfg.model_copy(update={"output_dir": str(tmp_path), "name": "copy"})
    run_experiment(cfg2, cache_dir=tmp_path / "cache", progress=False, on_event=events.append)
    reused = [e.split(":")[0] for e in events if "done earlier" in e]
    assert sorted(reused) == sorted(
        ["most_popular", "bpr@seed1", "bpr@seed2", "most_popular", "bpr@seed1"]
    )
    pd.testing.assert_frame_equal(pd.read_csv(parent / "summary_splits.csv"), before)


def test_one_split_runs_and_split_folders_are_kept_apart(split_run, tmp_path):
    cfg, result, _ = split_run
    # a config without split seeds into a folder of split folders
    plain = cfg.model_copy(update={"split_seeds": None, "seed": 5})
    with pytest.raises(RunDirectoryError, match="one run folder per split seed"):
        run_experiment(
            plain,
            output_dir=result.run_dir.parent,
            cache_dir=tmp_path / "cache",
            progress=False,
        )
    # split seeds into the folder of a one-split run
    one = tmp_path / "runs" / "t"
    one.mkdir(parents=True)
    (one / "run.json").write_text("{}")
    with pytest.raises(RunDirectoryError, match="holds a run of one split"):
        run_experiment(cfg, output_dir=tmp_path / "runs", cache_dir=tmp_path / "c", progress=False)


def test_a_timestamp_split_says_the_seeds_leave_it_alone(tmp_path):
    raw = _config(tmp_path, [{"name": "most_popular", "grid": {}}], bootstrap=20)
    raw["split_seeds"] = [1, 2]
    events: list[str] = []
    result = run_experiment(
        parse_config(raw), cache_dir=tmp_path / "cache", progress=False, on_event=events.append
    )
    assert any("the same at every split seed" in e for e in events)
    record = json.loads((result.run_dir / "split_seeds.json").read_text())
    assert record["split_depends_on_seed"] is False


def test_the_command_line_reports_a_folder_of_splits(split_run):
    from typer.testing import CliRunner

    from recarena.cli import app

    _, result, _ = split_run
    (result.run_dir / "summary_splits.md").unlink()
    out = CliRunner().invoke(app, ["report", str(result.run_dir)])
    assert out.exit_code == 0, out.output
    assert "across split seeds" in out.output and "split seed 5" in out.output
    assert (result.run_dir / "summary_splits.md").exists()
    assert (result.run_dir / split_folder(5) / "report.html").exists()


def test_the_command_line_runs_split_seeds(tmp_path):
    from typer.testing import CliRunner

    from recarena.cli import app

    raw = _config(tmp_path, [{"name": "most_popular", "grid": {}}], bootstrap=20)
    raw["split"] = {"method": "random"}
    raw["split_seeds"] = [1, 2]
    path = tmp_path / "exp.toml"
    path.write_text(dump_config(parse_config(raw)))
    out = CliRunner().invoke(app, ["run", str(path), "--cache-dir", str(tmp_path / "cache")])
    assert out.exit_code == 0, out.output
    assert "full: across split seeds" in out.output and "split seed 2 (2/2)" in out.output
    assert (tmp_path / "runs" / "t" / split_folder(2) / "report.html").exists()
