"""The experiment runner end to end on small local data: artifacts, resume, failures, protocols."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recarena.config import parse_config
from recarena.errors import ArtifactError
from recarena.models.base import Recommender
from recarena.runner import run_experiment
from tests.conftest import make_planted_dataset


def _write_planted_csv(folder: Path) -> tuple[Path, Path]:
    ds = make_planted_dataset(users_per_cluster=20, history=8)
    inter = ds.interactions.assign(
        user=ds.user_ids[ds.interactions["user"]], item=ds.item_ids[ds.interactions["item"]]
    )
    inter_path = folder / "interactions.csv"
    inter.to_csv(inter_path, index=False)
    items = ds.items.assign(item=ds.item_ids, genres=ds.items["genres"].map("|".join))
    items_path = folder / "items.csv"
    items.to_csv(items_path, index=False)
    return inter_path, items_path


def _config(folder: Path, models: list[dict], **evaluation) -> dict:
    inter, items = _write_planted_csv(folder)
    return {
        "name": "t",
        "output_dir": str(folder / "runs"),
        "data": {
            "format": "csv",
            "path": str(inter),
            "items_path": str(items),
            "item_columns": {"item": "item", "title": "title", "genres": "genres"},
            "list_columns": ["genres"],
            "text_template": "{title}. Genres: {genres}.",
        },
        "evaluation": {"bootstrap": 50, "latency_users": 3, **evaluation},
        "models": models,
    }


class Exploding(Recommender):
    """A model that fails, to check one failure does not lose the others' results."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def _fit(self, data, valid):
        raise RuntimeError("boom")

    def _score(self, users, items):  # pragma: no cover - never fitted
        raise AssertionError


def test_run_writes_artifacts_resumes_and_records_failures(tmp_path):
    cfg = parse_config(
        _config(
            tmp_path,
            [
                {"name": "most_popular", "grid": {}},
                {"name": "ease", "grid": {"l2": [1.0, 10.0]}},
                {"name": "tests.core.test_runner:Exploding", "label": "exploding"},
            ],
        )
    )
    events: list[str] = []
    result = run_experiment(cfg, cache_dir=tmp_path / "cache", on_event=events.append)
    run = result.run_dir
    assert result.failed.keys() == {"exploding"} and "boom" in result.failed["exploding"]
    assert (run / "models" / "exploding" / "FAILED.json").exists()
    for name in ("config.toml", "environment.json", "run.json", "summary.csv", "summary.md"):
        assert (run / name).exists(), name
    ease = run / "models" / "ease"
    tuning = json.loads((ease / "tuning.json").read_text())["trials"]
    assert [t["params"]["l2"] for t in tuning] == [1.0, 10.0]
    per_user = pd.read_parquet(ease / "full" / "per_user.parquet")
    assert set(per_user["segment"]) >= {"all"}
    assert per_user.loc[per_user["segment"] == "all", "user"].nunique() == 60
    summary = pd.read_csv(run / "summary.csv")
    row = summary.query("model == 'ease' and metric == 'ndcg@10' and segment == 'all'").iloc[0]
    assert row["ci_low"] <= row["mean"] <= row["ci_high"] and row["n_users"] == 60
    assert row["mean"] == pytest.approx(
        per_user.loc[per_user["segment"] == "all", "ndcg@10"].mean()
    )
    # planted clusters: EASE is far above popularity
    pop = summary.query("model == 'most_popular' and metric == 'ndcg@10' and segment == 'all'")
    assert row["mean"] > pop["mean"].iloc[0] + 0.1
    cost = json.loads((ease / "cost.json").read_text())
    assert cost["parameters_total"] > 0 and cost["latency_ms_p50"] > 0
    assert "failed" in (run / "summary.md").read_text().lower()

    # the same command again: finished models are reused, the failed one is retried
    events.clear()
    again = run_experiment(cfg, cache_dir=tmp_path / "cache", on_event=events.append)
    assert any("ease: done earlier" in e for e in events)
    assert not any("ease: validation" in e for e in events)
    assert again.failed.keys() == {"exploding"}


def test_a_finished_model_measured_before_a_new_parameter_is_reused_with_a_notice(tmp_path):
    """A parameter added to a model since it finished (a new default behaviour) is the one
    change its unchanged [[models]] entry cannot show: the resume names it and the folder."""
    cfg = parse_config(_config(tmp_path, [{"name": "ease", "grid": {}}]))
    run = run_experiment(cfg, cache_dir=tmp_path / "cache").run_dir
    done = run / "models" / "ease" / "DONE.json"
    record = json.loads(done.read_text())
    # as if written by a version before EASE had `l2`
    default_l2 = record["params"].pop("l2")
    done.write_text(json.dumps(record))
    before = (run / "models" / "ease" / "full" / "metrics.json").read_bytes()

    events: list[str] = []
    run_experiment(cfg, cache_dir=tmp_path / "cache", on_event=events.append)
    notice = [e for e in events if e.startswith("ease: done earlier")]
    assert len(notice) == 1
    assert f"the parameter(s) l2={default_l2!r} existed" in notice[0]
    assert str(run / "models" / "ease") in notice[0]
    assert (run / "models" / "ease" / "full" / "metrics.json").read_bytes() == before

    # an up-to-date record gets the plain message
    record["params"]["l2"] = default_l2
    done.write_text(json.dumps(record))
    events.clear()
    run_experiment(cfg, cache_dir=tmp_path / "cache", on_event=events.append)
    assert "ease: done earlier, reusing its results" in events

    # a default changed since: the entry resolved to another value when it was measured
    assert record["entry_params"]["l2"] == default_l2
    record["entry_params"]["l2"] = default_l2 * 2
    done.write_text(json.dumps(record))
    events.clear()
    run_experiment(cfg, cache_dir=tmp_path / "cache", on_event=events.append)
    notice = [e for e in events if e.startswith("ease: done earlier")]
    assert len(notice) == 1
    assert f"the default(s) changed: l2={default_l2 * 2!r} (now {default_l2!r})" in notice[0]
    assert (run / "models" / "ease" / "full" / "metrics.json").read_bytes() == before
    record["entry_params"]["l2"] = default_l2

    # so does one from before an option that is off at its value (EASE.neutral_params:
    # no differential privacy, float64 as before `dtype` existed, the solver chosen
    # automatically as before `solver` existed): nothing changed
    for name in ("dp_epsilon", "dp_max_items", "dtype", "solver"):
        record["params"].pop(name)
    done.write_text(json.dumps(record))
    events.clear()
    run_experiment(cfg, cache_dir=tmp_path / "cache", on_event=events.append)
    assert "ease: done earlier, reusing its results" in events


def test_a_saved_trial_of_other_resolved_defaults_is_measured_again(tmp_path, monkeypatch):
    """A validation trial carries the parameters as the model resolved them: after a
    default changes (a new version of the model), a resumed run measures the trial again
    instead of reusing a number the current model would not give."""
    from recarena.models.classical.ease import EASE

    cfg = parse_config(_config(tmp_path, [{"name": "ease", "grid": {"l2": [1.0, 10.0]}}]))
    run = run_experiment(cfg, cache_dir=tmp_path / "cache").run_dir
    done = run / "models" / "ease" / "DONE.json"

    done.unlink()  # stopped before the model finished: its trials are saved
    events: list[str] = []
    run_experiment(cfg, cache_dir=tmp_path / "cache", on_event=events.append)
    assert not any(e.startswith("ease: validation") for e in events)  # both reused

    done.unlink()
    # max_items' default changes; every other default stays (whatever EASE's signature)
    names = EASE.__init__.__code__.co_varnames[1 : EASE.__init__.__code__.co_argcount]
    defaults = dict(zip(names, EASE.__init__.__defaults__, strict=True))
    defaults["max_items"] = 1_000
    monkeypatch.setattr(EASE.__init__, "__defaults__", tuple(defaults.values()))
    events.clear()
    run_experiment(cfg, cache_dir=tmp_path / "cache", on_event=events.append)
    assert sum(e.startswith("ease: validation") for e in events) == 2
    trials = json.loads((run / "models" / "ease" / "tuning.json").read_text())["trials"]
    assert len(trials) == 2


def test_a_changed_setup_is_refused(tmp_path):
    raw = _config(tmp_path, [{"name": "most_popular"}])
    run_experiment(parse_config(raw), cache_dir=tmp_path / "cache")
    raw["split"] = {"method": "random"}
    with pytest.raises(ArtifactError, match="different data/split/evaluation setup"):
        run_experiment(parse_config(raw), cache_dir=tmp_path / "cache")


def test_candidate_protocols_and_pointwise(tmp_path):
    cfg = parse_config(
        _config(
            tmp_path,
            [{"name": "ease", "grid": {}}, {"name": "bm25", "grid": {}}],
            protocols=[
                {"kind": "full"},
                {"kind": "sampled", "n_negatives": 9},
                {"kind": "first_stage", "first_stage": "ease", "top_n": 15},
            ],
        )
    )
    result = run_experiment(cfg, cache_dir=tmp_path / "cache")
    run = result.run_dir
    assert not result.failed
    metrics = json.loads((run / "models" / "bm25" / "sampled-9" / "metrics.json").read_text())
    assert set(metrics["pointwise"]) >= {"accuracy", "precision", "recall", "f1", "auc"}
    assert metrics["sampled_candidates"] is True
    lists = np.load(run / "models" / "bm25" / "first-stage-ease-15" / "lists.npz")
    cands = np.load(run / "split" / "first_stage__first-stage-ease-15__test.npz")
    for row, user in enumerate(lists["users"]):
        got = set(lists["items"][row][lists["items"][row] >= 0].tolist())
        allowed = set(cands["items"][np.flatnonzero(cands["users"] == user)[0]].tolist())
        assert got <= allowed
    # ease is the first stage of that protocol, so it is not evaluated on it
    done = json.loads((run / "models" / "ease" / "DONE.json").read_text())
    assert "first-stage-ease-15" in done["skipped_protocols"]


class HistoryProbe(Recommender):
    """Scores by popularity in whatever history it holds; records fits and history updates."""

    calls: list[tuple[str, int, bool]] = []

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def _fit(self, data, valid):
        HistoryProbe.calls.append(("fit", len(data.interactions), valid is not None))
        self.counts_ = np.asarray(data.csr().sum(axis=0)).ravel()

    def update_history(self, data):
        HistoryProbe.calls.append(("update_history", len(data.interactions), False))
        return self

    def _score(self, users, items):
        scores = np.tile(self.counts_.astype(np.float32), (len(users), 1))
        return scores if items is None else np.take_along_axis(scores, items, axis=1)


def test_refit_can_be_turned_off_for_one_model(tmp_path):
    from recarena.config import ModelConfig
    from recarena.runner import _hash, model_hash

    HistoryProbe.calls.clear()
    cfg = parse_config(
        _config(
            tmp_path,
            [
                {"name": "most_popular", "grid": {}},
                {"name": "tests.core.test_runner:HistoryProbe", "label": "probe", "refit": False},
            ],
        )
    )
    result = run_experiment(cfg, cache_dir=tmp_path / "cache")
    models = result.run_dir / "models"
    assert json.loads((models / "most_popular" / "DONE.json").read_text())["refit"] is True
    probe = json.loads((models / "probe" / "DONE.json").read_text())
    assert probe["refit"] is False
    # one fit, on train only with validation; then each user's history grows by the one
    # validation interaction leave-one-out holds out
    (fit, n_train, with_valid), (update, n_test_history, _) = HistoryProbe.calls
    assert (fit, update, with_valid) == ("fit", "update_history", True)
    assert n_test_history - n_train == probe["all_test_users"] > 0

    from recarena.report import build_report

    page = build_report(result.run_dir).read_text()
    assert "Not refit on train + validation" in page and "probe" in page
    # configurations from before the option keep their hash, so old runs still resume
    plain = ModelConfig(name="ease")
    later = ("refit", "seeds")  # the fields added since, unset
    before = {k: v for k, v in plain.model_dump(mode="json").items() if k not in later}
    assert model_hash(plain) == _hash(before)
    assert model_hash(plain) != model_hash(ModelConfig(name="ease", refit=False))


def test_a_first_stage_that_is_not_refit_draws_validation_lists_before_its_history_grows(
    tmp_path, monkeypatch
):
    """Validation candidates come from train-only histories; only the test sees valid items."""
    from recarena.runner import ExperimentRunner

    HistoryProbe.calls.clear()
    save = ExperimentRunner._save_first_stage_candidates

    def recorded(self, label, stage, lists):
        HistoryProbe.calls.append(("candidates", stage))
        return save(self, label, stage, lists)

    monkeypatch.setattr(ExperimentRunner, "_save_first_stage_candidates", recorded)
    probe = {"name": "tests.core.test_runner:HistoryProbe", "label": "probe", "refit": False}
    cfg = parse_config(
        _config(
            tmp_path,
            [probe],
            protocols=[{"kind": "first_stage", "first_stage": "probe", "top_n": 5}],
        )
    )
    run_experiment(cfg, cache_dir=tmp_path / "cache")
    steps = [c[0] if c[0] != "candidates" else f"candidates:{c[1]}" for c in HistoryProbe.calls]
    assert steps == ["fit", "candidates:valid", "update_history", "candidates:test"]


def test_an_interrupted_training_resumes_on_the_next_run(tmp_path, monkeypatch):
    from recarena.models.classical.sasrec import SASRec
    from tests.models.conformance import SASREC_TINY

    params = {**SASREC_TINY, "epochs": 4, "patience": 10}
    cfg = parse_config(_config(tmp_path, [{"name": "sasrec", "grid": {}, "params": params}]))
    train_epoch, calls = SASRec._train_epoch, []

    def counted(self, *args):
        calls.append(1)
        if len(calls) == 3:  # killed in the third epoch of the validation fit
            raise KeyboardInterrupt
        return train_epoch(self, *args)

    monkeypatch.setattr(SASRec, "_train_epoch", counted)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, cache_dir=tmp_path / "cache")
    saved = list((tmp_path / "runs").rglob("sasrec-checkpoint.pt"))
    assert len(saved) == 1 and saved[0].parent.parent.name == "checkpoints"

    calls.clear()
    monkeypatch.setattr(
        SASRec, "_train_epoch", lambda self, *a: calls.append(1) or train_epoch(self, *a)
    )
    run = run_experiment(cfg, cache_dir=tmp_path / "cache").run_dir
    best = json.loads((run / "models" / "sasrec" / "DONE.json").read_text())["params"]["epochs"]
    # validation resumed at epoch 3 (2 epochs left), then the refit trained best-epoch epochs
    assert len(calls) == 2 + best
    log = json.loads((run / "models" / "sasrec" / "training_log.json").read_text())
    assert [r["epoch"] for r in log] == list(range(1, best + 1))
    assert not (run / "models" / "sasrec" / "checkpoints").exists()


def test_budgeted_model_is_evaluated_on_a_seeded_user_sample(tmp_path):
    cfg = parse_config(
        _config(tmp_path, [{"name": "most_popular", "grid": {}, "max_eval_users": 25}])
    )
    run = run_experiment(cfg, cache_dir=tmp_path / "cache").run_dir
    done = json.loads((run / "models" / "most_popular" / "DONE.json").read_text())
    assert done["user_sample"] is True and done["evaluated_users"] == 25
    assert "*" in (run / "summary.md").read_text()


def test_a_models_own_user_budget_applies_to_its_validation_too(tmp_path, monkeypatch):
    """A budget set in one ``[[models]]`` entry samples its validation users like its test
    users (the experiment-wide budget did so already); the trials it saves carry the budget
    in their key, so trials scored on every user are not reused for it, and a model without
    a budget of its own keeps its earlier trial keys."""
    from recarena.experiment.runner import ExperimentRunner
    from recarena.experiment.tuning import trial_key

    scored: dict[tuple[str, str], int] = {}
    lists = ExperimentRunner._lists

    def spy(self, model, proto, stage, users, exclude, k):
        key = (type(model).__name__, stage)  # the largest call: latency ranks one user
        scored[key] = max(scored.get(key, 0), len(users))
        return lists(self, model, proto, stage, users, exclude, k)

    monkeypatch.setattr(ExperimentRunner, "_lists", spy)
    models = [
        {"name": "ease", "grid": {"l2": [1.0, 10.0]}, "max_eval_users": 25},
        {"name": "most_popular", "grid": {}, "refit": False},
    ]
    raw = _config(tmp_path, models)
    cfg = parse_config(raw)
    run = run_experiment(cfg, cache_dir=tmp_path / "cache").run_dir
    every_user = scored[("MostPopular", "valid")]
    assert every_user > 25
    assert scored[("EASE", "valid")] == 25 and scored[("EASE", "test")] == 25

    trials = json.loads((run / "models" / "ease" / "tuning.json").read_text())["trials"]
    ease, popular = cfg.models
    for t in trials:
        assert t["key"] == trial_key(cfg, ease, t["params"], cfg.evaluation.protocols[0], 25)
        assert t["key"] != trial_key(cfg, ease, t["params"], cfg.evaluation.protocols[0])
    [t] = json.loads((run / "models" / "most_popular" / "tuning.json").read_text())["trials"]
    assert t["key"] == trial_key(cfg, popular, t["params"], cfg.evaluation.protocols[0])


def _write_mind(root: Path, n_users: int = 40, seed: int = 0) -> Path:
    """A MIND-shaped release: users click the news of their own topic."""
    rng = np.random.default_rng(seed)
    topics = ["space rocket galaxy", "football goal league", "cooking recipe kitchen"]
    news = [(f"N{t}{i}", t, f"{topics[t]} story {i}") for t in range(3) for i in range(12)]
    lines = [
        f"{nid}\tcat{t}\tsub{t}\t{title}\tabstract about {title}\thttps://x/{nid}\t[]\t[]"
        for nid, t, title in news
    ]
    by_topic = {t: [n for n in news if n[1] == t] for t in range(3)}
    start = datetime(2019, 11, 9, 8, 0, 0)
    behaviours = {"train": [], "dev": []}
    for part, day0 in (("train", 0), ("dev", 6)):
        imp_id = 0
        for u in range(n_users):
            t = u % 3
            for day in range(2 if part == "train" else 1):
                imp_id += 1
                when = start + timedelta(days=day0 + day * 2, hours=u % 10)
                mine = rng.choice(len(by_topic[t]), 3, replace=False)
                other = [n for n in news if n[1] != t]
                others = rng.choice(len(other), 4, replace=False)
                shown = [
                    f"{by_topic[t][m][0]}-1" if k == 0 else f"{by_topic[t][m][0]}-0"
                    for k, m in enumerate(mine)
                ] + [f"{other[o][0]}-0" for o in others]
                rng.shuffle(shown)
                history = " ".join(by_topic[t][m][0] for m in rng.choice(12, 2, replace=False))
                stamp = when.strftime("%m/%d/%Y %I:%M:%S %p").lstrip("0").replace("/0", "/")
                behaviours[part].append(f"{imp_id}\tU{u}\t{stamp}\t{history}\t{' '.join(shown)}")
    for part in ("train", "dev"):
        folder = root / f"MINDsmall_{part}"
        folder.mkdir(parents=True)
        (folder / "news.tsv").write_text("\n".join(lines) + "\n")
        (folder / "behaviors.tsv").write_text("\n".join(behaviours[part]) + "\n")
    return root


def test_impression_protocol_on_mind_logs(tmp_path):
    root = _write_mind(tmp_path / "mind")
    cfg = parse_config(
        {
            "name": "mind",
            "output_dir": str(tmp_path / "runs"),
            "data": {"format": "mind", "path": str(root), "text_template": "{title}. {abstract}"},
            "split": {"method": "predefined"},
            "evaluation": {
                "bootstrap": 50,
                "latency_users": 0,
                "tune_metric": "ndcg@10",
                "protocols": [{"kind": "impressions"}, {"kind": "full"}],
            },
            "models": [
                {"name": "most_popular", "grid": {}},
                {"name": "tfidf", "grid": {}},
                {"name": "random", "grid": {}},
            ],
        }
    )
    result = run_experiment(cfg, cache_dir=tmp_path / "cache")
    assert not result.failed
    run = result.run_dir
    table = pd.read_parquet(run / "models" / "tfidf" / "impressions" / "per_user.parquet")
    assert {"impression", "user", "auc", "mrr", "ndcg@5", "ndcg@10"} <= set(table.columns)
    assert table.loc[table["segment"] == "all", "impression"].nunique() == 40
    summary = pd.read_csv(run / "summary.csv").query(
        "protocol == 'impressions' and segment == 'all'"
    )
    auc = summary.set_index(["model", "metric"])["mean"]
    # text matches topic: tf-idf separates clicked from shown-not-clicked; random does not
    assert auc[("tfidf", "auc")] > 0.8
    assert 0.3 < auc[("random", "auc")] < 0.7
    metrics = json.loads((run / "models" / "tfidf" / "impressions" / "metrics.json").read_text())
    assert metrics["unit"] == "impressions" and "f1" in metrics["pointwise"]


def test_first_stage_without_full_protocol(tmp_path):
    cfg = parse_config(
        _config(
            tmp_path,
            [{"name": "ease", "grid": {}}, {"name": "bm25", "grid": {}}],
            protocols=[{"kind": "first_stage", "first_stage": "ease", "top_n": 10}],
        )
    )
    result = run_experiment(cfg, cache_dir=tmp_path / "cache")
    assert not result.failed
    assert (result.run_dir / "models" / "bm25" / "first-stage-ease-10" / "lists.npz").exists()


def test_missing_language_model_stops_the_run_before_any_work(tmp_path):
    from recarena.errors import ModelNotAvailableError

    pytest.importorskip("transformers")
    models = [
        {"name": "most_popular", "grid": {}},
        {"name": "lm-frozen", "params": {"model": "minilm-l6"}, "grid": {}},
        {"name": "lm-generative", "label": "gen", "grid": {"model": ["/no/such/folder"]}},
    ]
    # a re-ranker needs a candidate protocol (without one the config itself is wrong, and
    # that is reported first)
    protocols = [{"kind": "full"}, {"kind": "sampled", "n_negatives": 9}]
    cfg = parse_config(_config(tmp_path, models, protocols=protocols))
    with pytest.raises(ModelNotAvailableError) as err:
        run_experiment(cfg, cache_dir=tmp_path / "empty-cache")
    message = str(err.value)
    assert "nothing was run" in message
    assert "'lm-frozen'" in message and "recarena models get minilm-l6" in message
    assert "'gen'" in message and "/no/such/folder" in message
    # stopped before the data was even read: no model directory was created
    assert not (tmp_path / "runs" / "t" / "models").exists()


def test_progress_false_turns_every_progress_bar_off_for_the_models(tmp_path, monkeypatch):
    """``run_experiment(progress=False)`` reaches the models: they run with RecArena's bars
    off (`recarena._progress.bars_enabled`), and with them on by default."""
    from recarena._progress import bars_enabled
    from recarena.models.classical.baselines import MostPopular

    seen: list[bool] = []
    fit = MostPopular._fit

    def spy(self, data, valid):
        seen.append(bars_enabled())
        return fit(self, data, valid)

    monkeypatch.setattr(MostPopular, "_fit", spy)
    cfg = parse_config(_config(tmp_path, [{"name": "most_popular", "grid": {}}]))
    run_experiment(cfg, cache_dir=tmp_path / "cache", progress=False)
    assert seen and not any(seen)
    seen.clear()
    run_experiment(cfg, cache_dir=tmp_path / "cache", output_dir=tmp_path / "again")
    assert seen and all(seen)
    assert bars_enabled()
