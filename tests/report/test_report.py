"""The report's content, checked on the HTML text and the table files (no browser)."""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path

import pandas as pd
import pytest

from recarena.report import build_report, fmt_ci, fmt_metric

DESCRIPTION = "held-out item(s) + 9 uniformly sampled negatives (10 candidates)"


@pytest.fixture(scope="module")
def report(main_run: Path) -> Path:
    return build_report([main_run])


@pytest.fixture(scope="module")
def html(report: Path) -> str:
    return report.read_text(encoding="utf-8")


def test_default_path_and_table_files(main_run, report):
    assert report == main_run / "report.html"
    tables = main_run / "report_tables"
    for key in (
        "leaderboard_full",
        "leaderboard_sampled-9",
        "significance_full",
        "segments_full",
        "popularity_full",
        "failed",
        "dataset",
        "split",
        "environment",
    ):
        assert (tables / f"{key}.md").exists(), key
        assert (tables / f"{key}.csv").exists(), key
    md = (tables / "report.md").read_text(encoding="utf-8")
    assert "## Verdict" in md and "| model |" in md


def test_page_is_self_contained(html):
    assert "<script" not in html.lower()
    assert "<link" not in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "@import" not in html and "url(http" not in html
    assert html.count("<svg") >= 6


def test_every_model_is_listed_and_failures_explained(html):
    for label in ("ease", "most_popular", "random", "tfidf", "sasrec", "broken"):
        assert f'data-model="{label}"' in html, label
    assert "no_such_parameter" in html
    assert "sasrec *" in html  # evaluated on a sample of users
    assert "40 of 80" in unescape(html)


def test_leaderboard_csv_holds_the_summary_numbers(main_run, report):
    summary = pd.read_csv(main_run / "summary.csv")
    for proto in ("full", "sampled-9"):
        board = pd.read_csv(main_run / "report_tables" / f"leaderboard_{proto}.csv")
        done = board[board["status"] == "done"].set_index("model")
        for model, row in done.iterrows():
            for metric in ("ndcg@10", "hr@10", "recall@10", "mrr@10"):
                ref = summary[
                    (summary["model"] == model)
                    & (summary["protocol"] == proto)
                    & (summary["segment"] == "all")
                    & (summary["metric"] == metric)
                ].iloc[0]
                assert row[metric] == ref["mean"]
                assert row[f"{metric}_ci_low"] == ref["ci_low"]
        assert board.loc[board["model"] == "broken", "status"].item() == "failed"


def test_leaderboard_markdown_matches_the_page_format(main_run, report):
    summary = pd.read_csv(main_run / "summary.csv")
    ref = summary[
        (summary["model"] == "ease")
        & (summary["protocol"] == "full")
        & (summary["segment"] == "all")
        & (summary["metric"] == "ndcg@10")
    ].iloc[0]
    md = (main_run / "report_tables" / "leaderboard_full.md").read_text(encoding="utf-8")
    assert f"{fmt_metric(ref['mean'])} {fmt_ci(ref['ci_low'], ref['ci_high'])}" in md


def test_sampled_protocol_always_carries_its_candidates(html):
    text = unescape(html)
    shown = re.findall(r"<(?:caption|h2|text)[^>]*>([^<]*sampled-9[^<]*)<", text)
    assert shown, "the sampled protocol is never named"
    for fragment in shown:
        assert f"sampled-9 ({DESCRIPTION})" in fragment, fragment


def test_significance_and_verdict(main_run, report, html):
    sig = pd.read_csv(main_run / "report_tables" / "significance_full.csv")
    assert set(sig["model_b"]) <= {"ease", "most_popular", "random", "sasrec", "tfidf"}
    assert sig["p_holm"].ge(sig["p_value"] - 1e-12).all()
    assert "Holm" in html and "sign-flip randomization test" in html
    verdict = re.search(r'<section class="verdict".*?</section>', html, re.S).group(0)
    assert "ranks best" in verdict
    assert (
        "Cheapest model" in verdict or "within the best model" in verdict or "No other" in verdict
    )
    assert "seeded sample of users" in verdict


def test_setup_section(html):
    text = unescape(html)
    for needle in ("leave_one_out", "Title: {title}. Genres: {genres}.", "deduplicate", "seed"):
        assert needle in text, needle
    assert 'href="config.toml"' in html and 'href="summary.csv"' in html
    assert 'href="models/ease/"' in html


def _copy(run: Path, dest: Path) -> Path:
    import shutil

    target = dest / run.name
    shutil.copytree(run, target, ignore=shutil.ignore_patterns("report*"))
    return target


def test_a_run_whose_models_all_failed_still_reports(main_run, tmp_path):
    import json

    copy = _copy(main_run, tmp_path)
    for done in (copy / "models").glob("*/DONE.json"):
        done.unlink()
        (done.parent / "FAILED.json").write_text(json.dumps({"error": "boom"}))
    out = build_report([copy])
    html = out.read_text(encoding="utf-8")
    assert "No model finished" in html
    assert html.count('class="failed"') >= 6


def test_a_single_model_run_has_no_tests_but_a_verdict(main_run, tmp_path):
    import shutil

    copy = _copy(main_run, tmp_path)
    for mdir in (copy / "models").iterdir():
        if mdir.name != "ease":
            shutil.rmtree(mdir)
    config = (copy / "config.toml").read_text()
    blocks = config.split("[[models]]")
    keep = [b for b in blocks[1:] if 'name = "ease"' in b]
    (copy / "config.toml").write_text(blocks[0] + "[[models]]" + keep[0])
    summary = pd.read_csv(copy / "summary.csv")
    summary[summary["model"] == "ease"].to_csv(copy / "summary.csv", index=False)
    out = build_report([copy])
    html = out.read_text(encoding="utf-8")
    assert "ease" in html and "Paired tests" not in html
    assert "ranks best" in html


def test_impression_protocol_pairs_impressions(main_run, tmp_path):
    """A protocol scored per impression (MIND-like) pairs models by impression, not user."""
    import json

    import numpy as np

    copy = _copy(main_run, tmp_path)
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(30), 2)  # two impressions per user
    rows = []
    for label in ("ease", "most_popular"):
        base = 0.6 if label == "ease" else 0.3
        frame = pd.DataFrame(
            {
                "impression": np.arange(60),
                "user": users,
                "auc": np.clip(base + rng.normal(0, 0.1, 60), 0, 1),
                "mrr": np.clip(base / 2 + rng.normal(0, 0.1, 60), 0, 1),
                "ndcg@10": np.clip(base / 2 + rng.normal(0, 0.1, 60), 0, 1),
            }
        ).assign(segment="all")
        pdir = copy / "models" / label / "impressions"
        pdir.mkdir()
        frame.to_parquet(pdir / "per_user.parquet", index=False)
        (pdir / "metrics.json").write_text(
            json.dumps({"global": {}, "segment_users": {"all": 60}, "unit": "impressions"})
        )
        done = json.loads((copy / "models" / label / "DONE.json").read_text())
        done["protocols"].append("impressions")
        (copy / "models" / label / "DONE.json").write_text(json.dumps(done))
        for metric in ("auc", "mrr", "ndcg@10"):
            rows.append(
                {
                    "model": label,
                    "family": "classical",
                    "fusion": "none",
                    "protocol": "impressions",
                    "segment": "all",
                    "metric": metric,
                    "mean": frame[metric].mean(),
                    "ci_low": frame[metric].mean() - 0.01,
                    "ci_high": frame[metric].mean() + 0.01,
                    "n_users": 60,
                    "user_sample": False,
                }
            )
    summary = pd.concat([pd.read_csv(copy / "summary.csv"), pd.DataFrame(rows)])
    summary.to_csv(copy / "summary.csv", index=False)
    state = json.loads((copy / "run.json").read_text())
    state["protocols"]["impressions"] = "per impression: the items shown, clicked vs not"
    (copy / "run.json").write_text(json.dumps(state))

    build_report([copy])
    sig = pd.read_csv(copy / "report_tables" / "significance_impressions.csv")
    assert sig["n_users"].tolist() == [60]  # 60 impressions paired, not 30 users
    board = pd.read_csv(copy / "report_tables" / "leaderboard_impressions.csv")
    assert {"auc", "mrr", "ndcg@10"} <= set(board.columns)
