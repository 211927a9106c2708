"""Every entrant on equal terms: histories when a model is not refit, one pointwise threshold
rule, and one user sample per re-ranker table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recarena.config import parse_config
from recarena.metrics.pointwise import POINTWISE_THRESHOLD_RULE
from recarena.models.base import Recommender
from recarena.runner import run_experiment
from recarena.summary import COMMON_USERS_SEGMENT, common_users_by_protocol, find_common_users
from tests.core.test_runner import _config
from tests.models.conformance import SASREC_TINY


class Undeclared(Recommender):
    """A model of a user's own that says nothing about how it reads histories."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def _fit(self, data, valid):
        self.profile_ = (data.csr() @ data.csr().T @ data.csr()).astype(np.float32)

    def _score(self, users, items):
        return self._gather(self.profile_[users].toarray(), items)


def _done(run: Path, label: str) -> dict:
    return json.loads((run / "models" / label / "DONE.json").read_text())


# ---------------------------------------------------------------------- refit = false
MODELS = [
    {"name": "random", "grid": {}},
    {"name": "most_popular", "grid": {}},
    {"name": "ease", "grid": {}, "params": {"l2": 10.0}},
    {"name": "itemknn", "grid": {}},
    {"name": "als", "grid": {}, "params": {"factors": 8, "iterations": 5}},
    {"name": "bpr", "grid": {}, "params": {"factors": 8, "iterations": 5}},
    {"name": "tfidf", "grid": {}},
    {"name": "bm25", "grid": {}},
    {"name": "sasrec", "grid": {}, "params": {**SASREC_TINY, "epochs": 3}},
    {"name": "tests.core.test_equal_terms:Undeclared", "label": "mine"},
    # the same model refit, to compare with: TF-IDF learns nothing from interactions
    {"name": "tfidf", "label": "tfidf-refit", "grid": {}, "refit": True},
]


@pytest.fixture(scope="module")
def no_refit_run(tmp_path_factory) -> tuple[Path, list[tuple[str, int]]]:
    folder = tmp_path_factory.mktemp("no-refit")
    calls: list[tuple[str, int]] = []
    original = Recommender.update_history

    def spy(self, data):
        calls.append((type(self).__name__, len(data.interactions)))
        return original(self, data)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Recommender, "update_history", spy)
        cfg = parse_config(
            _config(
                folder,
                MODELS,
                refit=False,
                protocols=[{"kind": "full"}, {"kind": "sampled", "n_negatives": 9}],
            )
        )
        result = run_experiment(cfg, cache_dir=folder / "cache")
    assert not result.failed
    return result.run_dir, calls


def test_with_refit_off_every_model_reads_the_validation_interactions_or_is_named(no_refit_run):
    run, calls = no_refit_run
    from recarena.splits import Split

    split = Split.load(run / "split")
    n_test_history = len(split.fit_interactions("test"))
    refreshed = {"random", "most_popular", "ease", "itemknn", "als", "tfidf", "bm25", "sasrec"}
    for label in refreshed:
        done = _done(run, label)
        assert done["refit"] is False and done["history_refreshed"] is True, label
    for label, use in (("bpr", "trained"), ("mine", "undeclared")):
        done = _done(run, label)
        assert done["refit"] is False and done["history_refreshed"] is False, label
        assert done["history_use"] == use
    refit = _done(run, "tfidf-refit")
    assert refit["refit"] is True and refit["history_refreshed"] is None
    # each refreshed model was given the train + validation histories, once
    names = {
        "random": "RandomRecommender",
        "most_popular": "MostPopular",
        "ease": "EASE",
        "itemknn": "ItemKNN",
        "als": "ALS",
        "tfidf": "TfidfRecommender",
        "bm25": "BM25Recommender",
        "sasrec": "SASRec",
    }
    assert sorted(calls) == sorted((names[x], n_test_history) for x in refreshed)

    # TF-IDF learns nothing from interactions: not refit with new histories == refit
    for proto in ("full", "sampled-9"):
        kept = pd.read_parquet(run / "models" / "tfidf" / proto / "per_user.parquet")
        again = pd.read_parquet(run / "models" / "tfidf-refit" / proto / "per_user.parquet")
        pd.testing.assert_frame_equal(kept, again)

    # the stale ones are named, in the summary and under the report's caveats
    summary_md = (run / "summary.md").read_text()
    assert "## Stale histories" in summary_md
    assert "**bpr** was not refit" in summary_md and "**mine** was not refit" in summary_md
    from recarena.report import build_report

    report = (build_report(run).parent / "report_tables" / "report.md").read_text()
    caveats = report.split("Caveats:")[1].split("**Leaderboard")[0]
    stale = [line for line in caveats.splitlines() if line.startswith("- Stale histories")]
    assert len(stale) == 1
    assert "**bpr** (its per-user weights are learned" in stale[0]
    assert "**mine** (it does not declare how it reads" in stale[0]
    assert "**ease**" not in stale[0] and "**sasrec**" not in stale[0]


def test_a_run_written_before_the_history_record_still_loads_and_resumes(tmp_path):
    """DONE.json without the history fields, metrics.json without the threshold rule and a
    summary without common-user rows: reused as they are, and the report says what it
    cannot know."""
    models = [
        {"name": "ease", "grid": {}, "params": {"l2": 10.0}},
        {"name": "bpr", "grid": {}, "params": {"factors": 8, "iterations": 5}},
        {"name": "most_popular", "grid": {}, "max_eval_users": 20},
    ]
    raw = _config(tmp_path, models, refit=False, protocols=[{"kind": "sampled", "n_negatives": 9}])
    run = run_experiment(parse_config(raw), cache_dir=tmp_path / "cache").run_dir
    for label in ("ease", "bpr", "most_popular"):
        path = run / "models" / label / "DONE.json"
        record = json.loads(path.read_text())
        del record["history_use"], record["history_refreshed"]
        record.pop("artifacts")  # came later still: the checksums of the files edited below
        path.write_text(json.dumps(record))
        path = run / "models" / label / "sampled-9" / "metrics.json"
        metrics = json.loads(path.read_text())
        del metrics["pointwise"]["threshold_rule"]
        if label == "ease":  # as the earlier rule cut probabilities
            metrics["pointwise"]["threshold"] = "0.5 (calibrated probability)"
        path.write_text(json.dumps(metrics))
    summary = pd.read_csv(run / "summary.csv")
    summary[summary["segment"] != COMMON_USERS_SEGMENT].to_csv(run / "summary.csv", index=False)

    events: list[str] = []
    again = run_experiment(parse_config(raw), cache_dir=tmp_path / "cache", on_event=events.append)
    assert not again.failed
    for label in ("ease", "bpr", "most_popular"):
        assert any(e == f"{label}: done earlier, reusing its results" for e in events), label
        assert "history_refreshed" not in _done(run, label)
    # the rewritten summary has the common-user rows again, from the saved per-user files
    assert (again.summary["segment"] == COMMON_USERS_SEGMENT).any()

    from recarena.report import build_report, load_run

    loaded = load_run(run)
    assert all(not m.history_recorded and m.history_refreshed is None for m in loaded.models)
    report = (build_report(run).parent / "report_tables" / "report.md").read_text()
    assert "- Not recorded: **bpr**, **ease**, **most_popular** ran before" in report
    assert "Stale histories" not in report
    assert "ease: pointwise metrics thresholded otherwise (0.5 (calibrated probability))" in report


# ---------------------------------------------------------------------- pointwise rule
class FixedScores(Recommender):
    """Scores in (0, 1) that depend only on the user and the item, and favour the user's
    own cluster of the planted data (items and users numbered cluster by cluster)."""

    history_use = "none"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def _fit(self, data, valid):
        self.cluster_of_item_ = np.arange(data.n_items) * 3 // data.n_items
        self.cluster_of_user_ = np.arange(data.n_users) * 3 // data.n_users

    def _score(self, users, items):
        noise = np.random.default_rng([self.seed, 5]).random((self.n_users_, self.n_items_))
        same = self.cluster_of_user_[users][:, None] == self.cluster_of_item_[None, :]
        full = (0.2 + 0.3 * same + 0.5 * noise[users]).astype(np.float32)
        return self._gather(full, items)


class CalibratedFixedScores(FixedScores):
    """The same scores, declared as probabilities."""

    calibrated_scores = True


def test_pointwise_metrics_apply_one_rule_whatever_calibrated_scores_says(tmp_path):
    models = [
        {"name": "tests.core.test_equal_terms:FixedScores", "label": "plain", "grid": {}},
        {"name": "tests.core.test_equal_terms:CalibratedFixedScores", "label": "prob", "grid": {}},
    ]
    raw = _config(tmp_path, models, protocols=[{"kind": "sampled", "n_negatives": 9}])
    run = run_experiment(parse_config(raw), cache_dir=tmp_path / "cache").run_dir
    plain, prob = (
        json.loads((run / "models" / x / "sampled-9" / "metrics.json").read_text())["pointwise"]
        for x in ("plain", "prob")
    )
    assert plain == prob
    assert plain["threshold_rule"] == POINTWISE_THRESHOLD_RULE
    assert plain["threshold"].startswith("F1-optimal, 2-fold cross-fitted")
    # the scores are not cut at 0.5: precision and recall are those of the tuned cut
    assert 0 < plain["f1"] < 1 and 0.5 < plain["auc"] <= 1
    assert (
        f"Pointwise accuracy and F1: {POINTWISE_THRESHOLD_RULE}."
        in (run / "summary.md").read_text()
    )
    from recarena.report import build_report

    report = (build_report(run).parent / "report_tables" / "report.md").read_text()
    assert f"Pointwise accuracy and F1: {POINTWISE_THRESHOLD_RULE}." in report


# ---------------------------------------------------------------------- one user sample
def test_find_common_users_says_whether_samples_agree():
    assert find_common_users({"a": np.arange(5), "b": np.arange(5)}, {"a": True}) is None
    same = find_common_users(
        {"a": np.arange(10), "s1": np.array([1, 4, 7]), "s2": np.array([7, 1, 4])},
        {"a": False, "s1": True, "s2": True},
    )
    assert same is not None and same.same_sample and same.users.tolist() == [1, 4, 7]
    assert "the same users for every sampled model" in same.describe()
    differ = find_common_users(
        {"a": np.arange(10), "s1": np.array([1, 4, 7]), "s2": np.array([2, 4, 7, 9])},
        {"a": False, "s1": True, "s2": True},
    )
    assert differ is not None and not differ.same_sample
    assert differ.users.tolist() == [4, 7] and differ.samples == {"s1": 3, "s2": 4}
    assert "different users (s1: 3; s2: 4; a different budget" in differ.describe()
    assert differ.title() == "on the 2 users every model was measured on"


def _users(run: Path, label: str, proto: str) -> np.ndarray:
    table = pd.read_parquet(run / "models" / label / proto / "per_user.parquet")
    return np.unique(table.loc[table["segment"] == "all", "user"])


def test_a_protocol_with_a_sampled_model_compares_every_model_on_its_users(tmp_path):
    models = [
        {"name": "ease", "grid": {}, "params": {"l2": 10.0}},
        {"name": "random", "label": "r25", "grid": {}, "max_eval_users": 25},
        {"name": "most_popular", "label": "p25", "grid": {}, "max_eval_users": 25},
        {"name": "tfidf", "label": "t40", "grid": {}, "max_eval_users": 40},
    ]
    protocols = [{"kind": "full"}, {"kind": "sampled", "n_negatives": 9}]
    raw = _config(tmp_path, models, protocols=protocols)
    raw["evaluation"]["bootstrap"] = 200
    result = run_experiment(parse_config(raw), cache_dir=tmp_path / "cache")
    run, summary = result.run_dir, result.summary
    # one seed, one budget: one sample; another budget: another sample
    np.testing.assert_array_equal(_users(run, "r25", "full"), _users(run, "p25", "full"))
    common = np.intersect1d(_users(run, "p25", "full"), _users(run, "t40", "full"))
    assert 0 < len(common) < 25 and len(_users(run, "ease", "full")) == 60

    found = common_users_by_protocol(run)
    assert set(found) == {"full", "sampled-9"}
    assert found["full"].users.tolist() == common.tolist() and not found["full"].same_sample
    rows = summary[summary["segment"] == COMMON_USERS_SEGMENT]
    assert set(rows["model"]) == {"ease", "r25", "p25", "t40"}
    ndcg = rows[(rows["metric"] == "ndcg@10") & (rows["protocol"] == "full")].set_index("model")
    assert (ndcg["n_users"] == len(common)).all()
    per_user = pd.read_parquet(run / "models" / "ease" / "full" / "per_user.parquet")
    mine = per_user[(per_user["segment"] == "all") & per_user["user"].isin(common)]
    assert ndcg.loc["ease", "mean"] == pytest.approx(mine["ndcg@10"].mean())
    assert ndcg.loc["ease", "ci_low"] <= ndcg.loc["ease", "mean"] <= ndcg.loc["ease", "ci_high"]
    # the all-users numbers stay as they were
    everyone = summary.query("segment == 'all' and metric == 'ndcg@10' and protocol == 'full'")
    assert everyone.set_index("model").loc["ease", "n_users"] == 60
    # the pointwise and global metrics are not restricted: no such rows
    assert not rows["metric"].str.startswith(("pointwise_", "coverage", "gini")).any()

    text = (run / "summary.md").read_text()
    assert f"### `full` on the {len(common)} users every model was measured on" in text
    assert "measured on different users (p25, r25: 25 (one sample); t40: 40; a" in text
    from recarena.report import build_report

    report = (build_report(run).parent / "report_tables" / "report.md").read_text()
    assert f"Leaderboard on the {len(common)} users every model was measured on" in report
    # the report's table over the common users carries the summary's numbers
    table = pd.read_csv(run / "report_tables" / "common_users_full.csv").set_index("model")
    assert table.loc["ease", "ndcg@10"] == pytest.approx(ndcg.loc["ease", "mean"])
    assert table.loc["ease", "ndcg@10_ci_low"] == pytest.approx(ndcg.loc["ease", "ci_low"])


def test_one_sample_for_every_sampled_model_is_said_to_be_one(tmp_path):
    models = [
        {"name": "ease", "grid": {}, "params": {"l2": 10.0}},
        {"name": "random", "grid": {}, "max_eval_users": 30},
        {"name": "most_popular", "grid": {}, "max_eval_users": 30},
    ]
    run = run_experiment(
        parse_config(_config(tmp_path, models)), cache_dir=tmp_path / "cache"
    ).run_dir
    found = common_users_by_protocol(run)["full"]
    assert found.same_sample and found.n_users == 30
    assert (
        "the seeded sample of most_popular, random (the same users"
        in (run / "summary.md").read_text()
    )
