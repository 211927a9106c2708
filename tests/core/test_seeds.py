"""Training seeds: one run per (model, seed), deterministic models once, summaries over
users and seeds, resume per seed, and run folders from before seeds unchanged."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from recarena.config import ModelConfig, parse_config
from recarena.errors import ConfigError
from recarena.experiment.artifacts import model_hash
from recarena.experiment.seeds import model_runs, seed_runs
from recarena.metrics import bootstrap_ci, seeded_bootstrap_ci
from recarena.runner import run_experiment
from tests.core.test_runner import _config

BPR = {"name": "bpr", "grid": {}, "params": {"factors": 8, "iterations": 5}}


def _minimal(models: list[dict], **top) -> dict:
    return {"data": {"name": "ml-100k"}, "models": models, **top}


# ------------------------------------------------------------------ configuration
@pytest.mark.parametrize(
    ("seeds", "message"),
    [([], "at least one seed"), ([1, 2, 1], r"repeat \[1\]"), ([-1], ">= 0")],
)
def test_bad_seed_lists_are_refused(seeds, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(_minimal([{"name": "bpr"}], seeds=seeds))
    with pytest.raises(ConfigError, match=message):
        parse_config(_minimal([{"name": "bpr", "seeds": seeds}]))


def test_seeds_in_two_places_are_refused():
    with pytest.raises(ConfigError, match=r"params.seed = 3 .* give the seeds in one place"):
        parse_config(_minimal([{"name": "bpr", "params": {"seed": 3}}], seeds=[1, 2]))
    with pytest.raises(ConfigError, match="leave it out of the grid"):
        parse_config(_minimal([{"name": "bpr", "grid": {"seed": [1, 2]}, "seeds": [1, 2]}]))
    with pytest.raises(ConfigError, match="'@seed'"):
        parse_config(_minimal([{"name": "bpr", "label": "bpr@seed1"}]))
    # a fixed seed without seeds asked is a parameter like any other
    parse_config(_minimal([{"name": "bpr", "params": {"seed": 3}}]))


def test_runs_per_seed_deterministic_models_once_and_overrides():
    cfg = parse_config(
        _minimal(
            [
                {"name": "bpr", "params": {"factors": 8}},
                {"name": "ease"},
                {"name": "sasrec", "seeds": [7]},
                {"name": "als", "label": "als-small", "seeds": [1, 2]},
            ],
            seeds=[42, 43, 44],
        )
    )
    runs = seed_runs(cfg)
    assert [r.label for r in runs] == [
        "bpr@seed42",
        "bpr@seed43",
        "bpr@seed44",
        "ease",
        "sasrec",
        "als-small@seed1",
        "als-small@seed2",
    ]
    assert [r.config.params.get("seed") for r in runs] == [42, 43, 44, None, 7, 1, 2]
    assert all(r.config.params.get("factors") == 8 for r in runs[:3])
    assert all(r.config.seeds is None for r in runs)
    ease = runs[3]
    assert ease.deterministic and ease.record() == {
        "group": "ease",
        "seeds": [42, 43, 44],
        "deterministic": True,
    }
    assert runs[1].record() == {"group": "bpr", "seeds": [42, 43, 44], "seed": 43}
    assert runs[4].record() == {"group": "sasrec", "seeds": [7], "seed": 7}
    # a run's hash does not depend on the other seeds asked for
    one = seed_runs(
        parse_config(_minimal([{"name": "bpr", "params": {"factors": 8}}], seeds=[43, 99]))
    )
    assert model_hash(one[0].config) == model_hash(runs[1].config)


def test_without_seeds_nothing_changes():
    """No seeds: the runs are the [[models]] entries, with the hashes of before seeds
    existed (computed with the code before: run folders made then resume)."""
    cfg = parse_config(_minimal([{"name": "sasrec", "params": {"epochs": 3}, "grid": {}}]))
    assert model_runs(cfg) == cfg.models
    assert seed_runs(cfg)[0].record() is None
    assert (
        model_hash(ModelConfig(name="sasrec", params={"epochs": 3}, grid={})) == "f5019d5dded204e2"
    )
    assert model_hash(ModelConfig(name="ease", label="e", refit=False)) == "0a0d819e375ba67b"


def test_a_first_stage_trained_per_seed_is_refused(tmp_path):
    raw = _config(tmp_path, [BPR, {"name": "most_popular", "grid": {}}])
    raw["seeds"] = [1, 2]
    raw["evaluation"]["protocols"] = [
        {"kind": "full"},
        {"kind": "first_stage", "first_stage": "bpr", "top_n": 10},
    ]
    with pytest.raises(
        ConfigError, match=r"first stage of a protocol and is trained once per seed"
    ):
        run_experiment(parse_config(raw), cache_dir=tmp_path / "cache", progress=False)
    assert not (tmp_path / "runs").exists()  # refused before anything was written


# ------------------------------------------------------------------ a run with seeds
@pytest.fixture(scope="module")
def seeded_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seeds")
    raw = _config(folder, [{"name": "most_popular", "grid": {}}, BPR], bootstrap=200)
    raw["seeds"] = [3, 4, 5]
    cfg = parse_config(raw)
    result = run_experiment(cfg, cache_dir=folder / "cache", progress=False)
    return cfg, result


def _per_user(run_dir, label, column="ndcg@10"):
    table = pd.read_parquet(run_dir / "models" / label / "full" / "per_user.parquet")
    return table[table["segment"] == "all"].set_index("user")[column].sort_index()


def test_each_seed_is_a_run_of_its_own(seeded_run):
    _, result = seeded_run
    run = result.run_dir
    assert sorted(p.name for p in (run / "models").iterdir()) == [
        "bpr@seed3",
        "bpr@seed4",
        "bpr@seed5",
        "most_popular",
    ]
    for seed in (3, 4, 5):
        done = json.loads((run / "models" / f"bpr@seed{seed}" / "DONE.json").read_text())
        assert done["params"]["seed"] == seed
        assert done["training_seeds"] == {"group": "bpr", "seeds": [3, 4, 5], "seed": seed}
    pop = json.loads((run / "models" / "most_popular" / "DONE.json").read_text())
    assert pop["training_seeds"]["deterministic"] is True
    # the seeds trained different models on the same users
    values = [_per_user(run, f"bpr@seed{s}") for s in (3, 4, 5)]
    assert all(v.index.equals(values[0].index) for v in values)
    assert not values[0].equals(values[1])


def test_seed_summary_covers_users_and_seeds(seeded_run):
    cfg, result = seeded_run
    run = result.run_dir
    table = pd.read_csv(run / "summary_seeds.csv")
    row = table[
        (table["model"] == "bpr") & (table["segment"] == "all") & (table["metric"] == "ndcg@10")
    ].iloc[0]
    values = np.stack([_per_user(run, f"bpr@seed{s}").to_numpy() for s in (3, 4, 5)])
    means = values.mean(axis=1)
    assert row["n_seeds"] == 3 and row["seeds"] == "3,4,5" and not row["deterministic"]
    assert row["mean"] == pytest.approx(means.mean())
    assert row["seed_sd"] == pytest.approx(np.std(means, ddof=1))
    mean, low, high, _ = seeded_bootstrap_ci(values, n_boot=200, confidence=0.95, seed=0)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((low[0], high[0]))
    halves = [np.diff(bootstrap_ci(v, n_boot=200, seed=0)[1:], axis=0)[0, 0] / 2 for v in values]
    assert row["user_half_width"] == pytest.approx(np.mean(halves))
    pop = table[
        (table["model"] == "most_popular")
        & (table["segment"] == "all")
        & (table["metric"] == "ndcg@10")
    ].iloc[0]
    summary = pd.read_csv(run / "summary.csv")
    plain = summary[
        (summary["model"] == "most_popular")
        & (summary["segment"] == "all")
        & (summary["metric"] == "ndcg@10")
    ].iloc[0]
    # a deterministic model is one seed: its numbers are the user-only ones
    assert pop["deterministic"] and pop["n_seeds"] == 1 and np.isnan(pop["seed_sd"])
    assert (pop["mean"], pop["ci_low"], pop["ci_high"]) == pytest.approx(
        (plain["mean"], plain["ci_low"], plain["ci_high"])
    )
    comps = pd.read_csv(run / "comparisons_seeds.csv")
    assert len(comps) == 1 and comps["metric"].iloc[0] == cfg.evaluation.tune_metric
    c = comps.iloc[0]
    best = "bpr" if row["mean"] > pop["mean"] else "most_popular"
    assert c["model_a"] == best and c["diff"] == pytest.approx(abs(row["mean"] - pop["mean"]))
    excludes_zero = c["ci_low"] > 0 or c["ci_high"] < 0
    assert bool(c["better"]) == (excludes_zero and bool(c["consistent"]))
    text = (run / "summary.md").read_text()
    assert "## Across training seeds" in text and "| bpr | 3, 4, 5 |" in text


def test_report_has_the_seeds_tables(seeded_run):
    from recarena.report import build_report

    _, result = seeded_run
    out = build_report([result.run_dir], result.run_dir / "r.html")
    html = out.read_text()
    assert "Across training seeds" in html and "Best against the others across seeds" in html
    table = (out.parent / "r_tables" / "seeds_full.md").read_text()
    assert "deterministic (ran once)" in table and "3, 4, 5" in table


def test_resume_is_per_seed(seeded_run, tmp_path):
    """A seed whose run was lost is run again; the others are reused, and the summaries
    come out the same."""
    import shutil

    cfg, result = seeded_run
    run = tmp_path / "copy"
    shutil.copytree(result.run_dir, run)
    before = pd.read_csv(run / "summary_seeds.csv")
    shutil.rmtree(run / "models" / "bpr@seed4")
    events: list[str] = []
    cfg2 = cfg.model_copy(update={"output_dir": str(tmp_path), "name": "copy"})
    run_experiment(cfg2, cache_dir=tmp_path / "cache", progress=False, on_event=events.append)
    reused = {e.split(":")[0] for e in events if "done earlier" in e}
    assert reused == {"most_popular", "bpr@seed3", "bpr@seed5"}
    pd.testing.assert_frame_equal(pd.read_csv(run / "summary_seeds.csv"), before)


def test_the_command_line_prints_the_seed_table(seeded_run):
    from recarena.cli import _print_leaderboards, console

    _, result = seeded_run
    with console.capture() as captured:
        _print_leaderboards(result.run_dir, [10])
    text = captured.get()
    assert "across training seeds" in text and "deterministic" in text and "3, 4, 5" in text
