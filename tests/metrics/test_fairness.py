"""Quality per group of users: the groupings, group means with intervals, gaps, and the
paired difference of two models' gaps; and the run folder's tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recarena.metrics.fairness import (
    attribute_groups,
    behaviour_groups,
    exposure_shares,
    gap_difference,
    group_quality,
    item_groups,
)


def test_behaviour_groups_follow_activity_and_popularity():
    # items 0-2 popular (every heavy user has them), items 6-8 rare
    rows, cols = [], []
    for user in range(9):
        n = 1 + user  # user 8 is the most active
        items = list(range(n)) if user < 6 else [6, 7, 8][: min(3, n)]
        rows += [user] * len(items)
        cols += items
    train = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(10, 9))
    groups = behaviour_groups(train)
    assert 9 not in groups.index  # no training interactions: no group
    assert groups.loc[0, "activity"] == "low" and groups.loc[5, "activity"] == "high"
    # users 0-2 watch the most popular items only; users 6-8 only rare ones
    assert set(groups.loc[[0, 1], "mainstreamness"]) == {"mainstream"}
    assert set(groups.loc[[6, 7, 8], "mainstreamness"]) == {"niche"}


def test_attribute_groups_band_many_valued_columns_and_skip_identifiers():
    rng = np.random.default_rng(0)
    users = pd.DataFrame(
        {
            "age": rng.integers(10, 70, 200),
            "gender": rng.choice(["F", "M"], 200),
            "zip_code": [f"{z:05d}" for z in rng.integers(0, 99999, 200)],
        }
    )
    groups = attribute_groups(users)
    assert list(groups.columns) == ["gender", "age"]  # the zip code is no grouping
    assert set(groups["age"]) <= {"< 18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"}
    assert groups.loc[users["age"] == 30, "age"].eq("25-34").all()
    assert groups.loc[users["age"] == 56, "age"].eq("56+").all()
    # named, a text column is kept whatever its values; a missing one is an error
    assert "zip_code" in attribute_groups(users, ["zip_code"]).columns
    with pytest.raises(KeyError, match=r"\['country'\] not in the user table"):
        attribute_groups(users, ["country"])


def _planted(n: int = 100, seed: int = 0) -> tuple[pd.Series, pd.Series]:
    rng = np.random.default_rng(seed)
    groups = pd.Series(np.repeat(["a", "b"], n // 2))
    values = pd.Series(np.where(groups == "a", rng.normal(0.8, 0.05, n), rng.normal(0.2, 0.05, n)))
    return values, groups


def test_group_quality_names_the_worst_group_and_the_gap():
    values, groups = _planted()
    # three users in a group of their own, scoring nothing: listed, not named worst
    values = pd.concat([values, pd.Series([0.0, 0.0, 0.0], index=[100, 101, 102])])
    groups = pd.concat([groups, pd.Series(["c"] * 3, index=[100, 101, 102])])
    table, gap = group_quality(values, groups, n_boot=500, seed=1)
    assert list(table.index) == ["a", "b", "c"] and list(table["n_users"]) == [50, 50, 3]
    a = values[groups == "a"]
    assert table.loc["a", "mean"] == pytest.approx(a.mean())
    assert table.loc["a", "ci_low"] < a.mean() < table.loc["a", "ci_high"]
    assert (gap.best, gap.worst) == ("a", "b")
    expected = a.mean() - values[groups == "b"].mean()
    assert gap.gap == pytest.approx(expected)
    assert 0 < gap.ci_low < expected < gap.ci_high
    assert gap.ratio == pytest.approx(values[groups == "b"].mean() / a.mean())
    _, none = group_quality(values[groups == "a"], groups[groups == "a"], n_boot=100)
    assert none is None  # one group: no gap
    _, unsure = group_quality(values, groups, n_boot=0)
    assert np.isnan(unsure.ci_low) and unsure.gap == pytest.approx(expected)


def test_the_difference_of_two_gaps_is_paired():
    values, groups = _planted()
    flat = pd.Series(np.full(len(values), 0.5))  # no gap at all
    _, gap_a = group_quality(values, groups, n_boot=300, seed=2)
    _, gap_flat = group_quality(flat + 1e-9 * (groups == "a"), groups, n_boot=300, seed=2)
    diff, lo, hi = gap_difference(values, flat, groups, gap_a, gap_flat, n_boot=300, seed=2)
    assert diff == pytest.approx(gap_a.gap - gap_flat.gap)
    assert 0 < lo < diff < hi
    # a model against itself: the same resamples, so exactly no difference
    same = gap_difference(values, values, groups, gap_a, gap_a, n_boot=300, seed=2)
    assert same == (0.0, 0.0, 0.0)


def test_item_groups_and_their_exposure():
    items = pd.DataFrame(
        {
            "genres": [["Drama"], ["Drama", "Comedy"], ["Comedy"], []],
            "year": pd.array([1995, 1987, None, 2001], dtype="Int64"),
            "isbn": ["a", "b", "c", "d"],
        }
    )
    popularity = np.array([10, 3, 7, 0])
    groups = item_groups(items, popularity, head_share=0.25)
    assert list(groups) == ["popularity", "genres", "year"]
    assert groups["popularity"] == [["head"], ["tail"], ["tail"], ["tail"]]
    assert groups["genres"][1] == ["Drama", "Comedy"] and groups["genres"][3] == []
    assert groups["year"] == [["1990s"], ["1980s"], [], ["2000s"]]
    # lists: item 1 (two genres) twice, item 0 once, an empty slot (-1) left out
    shares = exposure_shares(np.array([[1, 0], [1, -1]]), groups["genres"])
    assert shares == pytest.approx({"Comedy": 2 / 5, "Drama": 3 / 5})
    catalog = exposure_shares(np.empty(0), groups["genres"], np.ones(4))
    assert catalog == pytest.approx({"Comedy": 2 / 4, "Drama": 2 / 4})
    with pytest.raises(KeyError, match=r"\['studio'\] not in the item table"):
        item_groups(items, popularity, 0.25, ["studio"])


def test_a_run_folder_gets_the_group_tables(tmp_path):
    from recarena.config import parse_config
    from recarena.runner import run_experiment
    from tests.core.test_runner import _config

    raw = _config(tmp_path, [{"name": "most_popular", "grid": {}}, {"name": "ease", "grid": {}}])
    raw["fairness"] = {"min_group_users": 5}
    result = run_experiment(parse_config(raw), cache_dir=tmp_path / "cache", progress=False)
    run = result.run_dir
    groups = pd.read_csv(run / "fairness_users.csv")
    # the planted data has no user table: the behaviour groups alone
    assert set(groups["grouping"]) == {"activity", "mainstreamness"}
    assert set(groups["model"]) == {"most_popular", "ease"}
    per_user = pd.read_parquet(run / "models" / "ease" / "full" / "per_user.parquet")
    per_user = per_user[per_user["segment"] == "all"]
    row = groups[(groups["model"] == "ease") & (groups["grouping"] == "activity")]
    assert row["n_users"].sum() == per_user["ndcg@10"].notna().sum()
    gaps = pd.read_csv(run / "fairness_gaps.csv")
    assert set(gaps["reference"].dropna()) <= {"ease", "most_popular"}
    assert "## Quality by user group" in (run / "summary.md").read_text()
    items = pd.read_csv(run / "fairness_items.csv")
    assert set(items["grouping"]) == {"popularity", "genres"}
    for _, sub in items.groupby(["model", "grouping"]):
        assert sub["exposure"].sum() == pytest.approx(1.0)
        assert sub["catalog_share"].sum() == pytest.approx(1.0)
    pop = items[(items["model"] == "most_popular") & (items["grouping"] == "popularity")]
    # MostPopular's top 10 are head items (the head is 20% of the 60 planted items)
    assert pop.set_index("group").loc["head", "exposure"] > 0.9
    from recarena.report import build_report

    page = build_report([run], run / "r.html").read_text()
    assert "Quality by user group" in page
    table = (run / "r_tables" / "fairness_full.md").read_text()
    # every planted user has the same number of interactions: one activity group, no gap
    assert "mainstreamness" in table and "| activity |" not in table


def test_the_fairness_settings_reach_the_tables_and_are_checked_before_any_model(tmp_path):
    from recarena.config import parse_config
    from recarena.errors import ConfigError
    from recarena.runner import run_experiment
    from tests.core.test_runner import _config

    raw = _config(tmp_path, [{"name": "most_popular", "grid": {}}])
    # a named item column is grouped whatever its number of values; groups of fewer users
    # than min_group_users are never named: none is, at 10,000
    raw["fairness"] = {"item_columns": ["title"], "min_group_users": 10_000}
    run = run_experiment(parse_config(raw), cache_dir=tmp_path / "cache", progress=False).run_dir
    assert set(pd.read_csv(run / "fairness_items.csv")["grouping"]) == {"popularity", "title"}
    assert pd.read_csv(run / "fairness_gaps.csv").empty
    assert not pd.read_csv(run / "fairness_users.csv").empty
    for fairness, message in (
        (
            {"user_columns": ["gender"]},
            r"user_columns \['gender'\]: the data set has no user table",
        ),
        ({"item_columns": ["studio"]}, r"item_columns: item column\(s\) \['studio'\] not in"),
    ):
        bad = {**raw, "fairness": fairness, "output_dir": str(tmp_path / "bad")}
        with pytest.raises(ConfigError, match=message):
            run_experiment(parse_config(bad), cache_dir=tmp_path / "cache", progress=False)
        assert not list((tmp_path / "bad").rglob("DONE.json"))  # before any model ran
