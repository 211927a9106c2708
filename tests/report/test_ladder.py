"""The sanity ladder in the report: a trained re-ranker beside its history-free twin."""

from __future__ import annotations

from pathlib import Path

import pytest

from recarena.models.language.cross_encoder.recommender import DEFAULT_PRIOR_PASSES
from recarena.report import build_report
from recarena.report.analysis import LADDER_TOLERANCE, analyse_protocol, prior_passes
from recarena.report.loading import load_report_data
from recarena.report.verdict import ladder_caveats
from tests.report.conftest import _run, experiment


@pytest.fixture(scope="module")
def ladder_run(report_data_dir: Path, runs_dir: Path, tmp_path_factory) -> Path:
    """MostPopular and the cross-encoder with and without history, barely trained."""
    from tests.lm.conftest import build_tiny_bert

    bert = build_tiny_bert(tmp_path_factory.mktemp("ladder-bert"))
    cross = {
        "model": str(bert),
        "max_steps": 2,
        "max_length": 32,
        "max_valid_users": 10,
        "device": "cpu",
        "num_threads": 1,
        "progress": False,
    }
    models = [
        {"name": "most_popular"},
        {"name": "ease", "grid": {}},
        {
            "name": "lm-cross-encoder",
            "label": "ce",
            "grid": {},
            "params": {**cross, "history_len": 3},
        },
        {
            "name": "lm-cross-encoder",
            "label": "ce-no-history",
            "grid": {},
            "params": {**cross, "history_len": 0},
        },
        {
            "name": "lm-cross-encoder",
            "label": "ce-other",
            "grid": {},
            "params": {**cross, "history_len": 3, "n_negatives": 2},
        },
    ]
    config = experiment(
        "ladder", report_data_dir, models, protocols=[{"kind": "sampled", "n_negatives": 9}]
    )
    return _run(config, runs_dir, tmp_path_factory.mktemp("ladder-cache"))


def test_twin_and_reference_are_found(ladder_run: Path):
    data = load_report_data([ladder_run])
    pa = analyse_protocol(data, "sampled-9")
    # only the model whose parameters equal the twin's but for the history gets a ladder
    assert [(c.model, c.twin, c.reference) for c in pa.ladders] == [
        ("ce", "ce-no-history", "most_popular")
    ]
    check = pa.ladders[0]
    auc = data.summary.query("metric == 'pointwise_auc' and segment == 'all'")
    by_model = dict(zip(auc["model"], auc["mean"], strict=True))
    assert check.model_auc == by_model["ce"] and check.twin_auc == by_model["ce-no-history"]
    assert check.reference_auc == by_model["most_popular"]


def test_rungs_decide_the_caveats(ladder_run: Path):
    data = load_report_data([ladder_run])
    summary = data.summary
    auc = (summary["metric"] == "pointwise_auc") & (summary["segment"] == "all")

    def with_auc(model: float, twin: float, reference: float):
        values = {"ce": model, "ce-no-history": twin, "most_popular": reference}
        for label, value in values.items():
            data.summary.loc[auc & (summary["model"] == label), "mean"] = value
        pa = analyse_protocol(data, "sampled-9")
        return pa.ladders[0], ladder_caveats({"sampled-9": pa})

    check, caveats = with_auc(0.85, 0.79, 0.80)  # both rungs reached
    assert check.learns_popularity and check.learns_from_history and caveats == []
    check, caveats = with_auc(0.85, 0.80 - LADDER_TOLERANCE - 0.01, 0.80)
    assert not check.learns_popularity
    assert len(caveats) == 1 and "Set-up check failed" in caveats[0] and "**ce**" in caveats[0]
    check, caveats = with_auc(0.78, 0.79, 0.80)
    assert check.learns_popularity and not check.learns_from_history
    assert len(caveats) == 1 and "nothing from users' histories" in caveats[0]


def test_report_shows_the_ladder(ladder_run: Path, tmp_path: Path):
    out = build_report([ladder_run], tmp_path / "report.html")
    html = out.read_text()
    assert "Sanity ladder" in html and 'id="t-ladder-sampled-9"' in html
    assert (tmp_path / "report_tables" / "ladder-sampled-9.csv").is_file()
    # the barely trained twin cannot have learned popularity: the verdict says so
    data = load_report_data([ladder_run])
    check = analyse_protocol(data, "sampled-9").ladders[0]
    if not check.learns_popularity:
        assert "Set-up check failed" in html
    # training curves of the LM loop are drawn against optimizer steps
    assert "Training curves (every few optimizer steps)" in html


def test_a_popularity_prior_is_named_beside_the_twin(ladder_run: Path):
    """Where model and twin were both given the cross-encoder's popularity prior, the
    ladder says so: rung 1 then checks what pair training kept, and a failure names it."""
    from recarena.report.sections import ladder_table

    data = load_report_data([ladder_run])
    for m in data.done_models:
        if m.label in ("ce", "ce-no-history"):
            # at the default (None: auto) the fit records the passes it made
            assert m.params["prior_passes"] is None
            assert m.cost["prior_passes"] == DEFAULT_PRIOR_PASSES
            m.cost["prior_passes"] = 4
    summary = data.summary
    twin = (
        (summary["metric"] == "pointwise_auc")
        & (summary["segment"] == "all")
        & (summary["model"] == "ce-no-history")
    )
    summary.loc[twin, "mean"] = 0.5
    pa = analyse_protocol(data, "sampled-9")
    (check,) = pa.ladders
    assert check.prior_passes == 4 and not check.learns_popularity
    (caveat,) = ladder_caveats({"sampled-9": pa})
    assert "after a popularity prior of 4 passes" in caveat
    table = ladder_table(data, pa)
    assert table.raw["prior_passes"].tolist() == [4]
    assert "popularity prior of 4 passes" in table.rows[0][2].sub
    # a run from before the fit recorded its passes: the parameter says, else none
    ce = data.done_models[[m.label for m in data.done_models].index("ce")]
    del ce.cost["prior_passes"]
    assert prior_passes(ce) == 0
    ce.params["prior_passes"] = 3
    assert prior_passes(ce) == 3
    # a twin without the prior is not the twin of a model with it
    data.done_models[[m.label for m in data.done_models].index("ce-no-history")].params[
        "prior_passes"
    ] = 0
    assert analyse_protocol(data, "sampled-9").ladders == []
