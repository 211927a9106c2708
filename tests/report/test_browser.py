"""The report opened in a real headless Chromium.

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package. Without
them the test fails and says what to install; set ``RECARENA_SKIP_BROWSER_TESTS=1`` to
skip it on a machine without a browser (CI must not set it). Screenshots are written to
``test-artifacts/report/`` in the repository root (git-ignored).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from recarena.report import build_report, fmt_ci, fmt_metric
from tests.report.browser import browser_or_skip, full_page_screenshot, headless_chromium

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "report"

COLLECT_CELLS = """
const out = [];
for (const td of document.querySelectorAll('td[data-metric][data-protocol]')) {
  const v = td.querySelector('.v'), ci = td.querySelector('.ci');
  out.push([td.dataset.model, td.dataset.protocol, td.dataset.segment || 'all',
            td.dataset.metric, v ? v.textContent : '', ci ? ci.textContent : '']);
}
return out;
"""

MEASURE_PLOTS = """
return Array.from(document.querySelectorAll('figure.plot')).map(f => {
  const g = f.querySelector('svg, img');
  if (!g) return [f.dataset.plot, 0, 0, 0];
  const r = g.getBoundingClientRect();
  const n = g.tagName.toLowerCase() === 'svg' ? g.querySelectorAll('path, text, use').length
            : (g.complete ? g.naturalWidth : 0);
  return [f.dataset.plot, r.width, r.height, n];
});
"""


@pytest.fixture(scope="module")
def merged_report(main_run: Path, second_run: Path, tmp_path_factory) -> Path:
    browser_or_skip()
    return build_report([main_run, second_run], tmp_path_factory.mktemp("merged") / "merged.html")


def _open(driver, page: Path) -> list[dict]:
    driver.get(page.resolve().as_uri())
    assert driver.execute_script("return document.readyState") == "complete"
    return driver.get_log("browser")


def test_report_renders_in_chromium(main_run: Path):
    browser_or_skip()
    page = build_report([main_run])
    summary = pd.read_csv(main_run / "summary.csv")
    with headless_chromium() as driver:
        logs = _open(driver, page)
        errors = [e for e in logs if e.get("level") in ("SEVERE", "ERROR")]
        assert not errors, f"console errors: {errors}"
        assert driver.title.startswith("RecArena report")

        # every plot is drawn with a real size
        plots = driver.execute_script(MEASURE_PLOTS)
        expected = page.read_text(encoding="utf-8").count('<figure class="plot"')
        assert len(plots) == expected >= 7
        kinds = {p[0].rsplit("-", 1)[0] if p[0] != "training" else p[0] for p in plots}
        assert {"quality-cost", "metric-k", "segments", "popularity", "training"} <= kinds
        for key, width, height, elements in plots:
            assert width > 100 and height > 100, (key, width, height)
            assert elements > 10, key

        # the tables show the summary's numbers, formatted as the report formats them
        cells = driver.execute_script(COLLECT_CELLS)
        assert len(cells) > 40
        index = summary.set_index(["model", "protocol", "segment", "metric"])
        checked = 0
        for model, proto, segment, metric, value, ci in cells:
            key = (model, proto, segment, metric)
            assert key in index.index, key
            row = index.loc[key]
            assert value == fmt_metric(row["mean"]), (key, value)
            assert ci == fmt_ci(row["ci_low"], row["ci_high"]), (key, ci)
            checked += 1
        leaderboard = {(m, p, x) for m, p, s, x, _, _ in cells if s == "all" and x == "ndcg@10"}
        for model in ("ease", "most_popular", "random", "tfidf", "sasrec"):
            assert (model, "full", "ndcg@10") in leaderboard
            assert (model, "sampled-9", "ndcg@10") in leaderboard
        assert checked == len(cells)

        # failed models are listed with their error
        failed = driver.execute_script(
            "return Array.from(document.querySelectorAll('tr.failed')).map(r => r.textContent)"
        )
        assert failed and all("broken" in t and "no_such_parameter" in t for t in failed)

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "report-top.png"))
        shots = full_page_screenshot(driver, ARTIFACTS / "report-full.png")
    assert shots and all(p.stat().st_size > 20_000 for p in shots)


def test_merged_report_renders_in_chromium(merged_report: Path):
    with headless_chromium() as driver:
        logs = _open(driver, merged_report)
        assert not [e for e in logs if e.get("level") in ("SEVERE", "ERROR")]
        models = driver.execute_script(
            "return Array.from(document.querySelectorAll("
            "'#t-leaderboard_full td.model')).map(td => td.dataset.model)"
        )
        assert "ease (main)" in models and "ease (second)" in models and "itemknn" in models
        full_page_screenshot(driver, ARTIFACTS / "report-merged-full.png")
