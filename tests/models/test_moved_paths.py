"""Models moved into ``classical/``, ``content/`` and ``language/``: the import paths from
before the move keep working, so run folders written before it load and resume.

Saved runs name a model's class by import path (``model.json``, ``DONE.json``); SASRec's
checkpoint key and the generative ranker's adapter key hash the class's path. The
conformance suite loads every model from a ``model.json`` naming its old path; here: the
old modules, the keys, and a run folder whose records name the old paths, resumed.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pandas as pd
import pytest

from recarena.config import parse_config
from recarena.models._moved import MOVED_MODULES, first_released_module, stable_class_path
from recarena.models.registry import get_model_class, model_entries
from recarena.runner import ExperimentRunner, run_experiment
from recarena.splits import leave_one_out_split
from tests.conftest import make_planted_dataset
from tests.core.test_runner import _config
from tests.models.conformance import SASREC_TINY, _training_data


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_an_old_module_path_is_the_new_module(old):
    assert importlib.import_module(old) is importlib.import_module(MOVED_MODULES[old])


def test_every_registry_class_loads_from_its_first_import_path():
    for entry in model_entries():
        klass = get_model_class(entry.name)
        assert not entry.target.startswith(tuple(f"{m}:" for m in MOVED_MODULES)), entry
        old = first_released_module(klass.__module__)
        assert getattr(importlib.import_module(old), klass.__qualname__) is klass, entry.name


def test_from_old_import_works_as_user_code_writes_it():
    from recarena.models.lm_text_sasrec import JointTextSASRec
    from recarena.models.sasrec import SASRec, SASRecNetwork

    assert JointTextSASRec.__module__ == "recarena.models.language.text_sasrec.joint"
    assert SASRec.__module__ == "recarena.models.classical.sasrec.recommender"
    assert SASRecNetwork.__module__ == "recarena.models.classical.sasrec.network"


def test_training_keys_hash_the_first_import_path():
    from recarena.models.classical.sasrec import SASRec
    from recarena.models.language.generative import GenerativeRanker
    from recarena.models.language.text_sasrec import JointTextSASRec, TextSASRec

    assert stable_class_path(SASRec) == "recarena.models.sasrec.SASRec"
    assert stable_class_path(TextSASRec) == "recarena.models.lm_text_sasrec.TextSASRec"
    assert stable_class_path(JointTextSASRec) == "recarena.models.lm_text_sasrec.JointTextSASRec"
    assert stable_class_path(GenerativeRanker) == "recarena.models.lm_generative.GenerativeRanker"
    # a class of one's own keeps its own path
    assert stable_class_path(ExperimentRunner) == "recarena.experiment.runner.ExperimentRunner"


def test_a_sasrec_checkpoint_key_is_the_one_written_before_the_move():
    """The key the code before the move gave this model on this data (computed with it):
    a SASRec training killed before the move resumes after it. A new SASRec parameter
    changes every key (checkpoints of other parameters are not resumed): update it then."""
    from recarena.models.classical.sasrec import SASRec

    dataset = make_planted_dataset()
    split = leave_one_out_split(dataset)
    key = SASRec(**SASREC_TINY)._checkpoint_key(_training_data(dataset, split.train), split.valid)
    assert key == "f453c415e8ff8f47"


def _to_old_paths(run: Path) -> int:
    """Rewrite every class path recorded in ``run`` to the module it had before the move."""
    changed = 0
    for path in [*run.rglob("model.json"), *run.rglob("DONE.json")]:
        record = json.loads(path.read_text())
        module, _, name = record["class"].partition(":")
        old = first_released_module(module)
        if old != module:
            record["class"] = f"{old}:{name}"
            path.write_text(json.dumps(record))
            changed += 1
    return changed


def test_a_run_folder_that_names_the_old_paths_resumes(tmp_path, monkeypatch):
    """EASE finished and SASRec stopped after its final fit, their records rewritten to the
    old paths: the resumed run reuses EASE, loads SASRec's fitted model (``model.json``
    naming ``recarena.models.sasrec:SASRec``) and measures what an unbroken run measures."""
    monkeypatch.setattr(ExperimentRunner, "fitted_save_min_seconds", 0.0)
    models = [
        {"name": "ease", "grid": {}},
        {"name": "sasrec", "grid": {}, "params": {**SASREC_TINY, "epochs": 3}},
    ]
    (tmp_path / "unbroken").mkdir()
    unbroken = run_experiment(
        parse_config(_config(tmp_path / "unbroken", models)),
        cache_dir=tmp_path / "cache",
        progress=False,
    ).run_dir

    cfg = parse_config(_config(tmp_path, models))
    measure = ExperimentRunner._measure_protocols

    def stopped(self, job, fitted):
        if job.label == "sasrec":
            raise KeyboardInterrupt  # killed after the final fit was saved
        return measure(self, job, fitted)

    monkeypatch.setattr(ExperimentRunner, "_measure_protocols", stopped)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, cache_dir=tmp_path / "cache", progress=False)
    monkeypatch.setattr(ExperimentRunner, "_measure_protocols", measure)
    run = tmp_path / "runs" / "t"
    fitted = run / "models" / "sasrec" / "checkpoints" / "fitted"
    assert _to_old_paths(run) == 2  # EASE's DONE.json, SASRec's model.json
    assert json.loads((fitted / "model.json").read_text())["class"] == (
        "recarena.models.sasrec:SASRec"
    )

    events: list[str] = []
    resumed = run_experiment(
        cfg, cache_dir=tmp_path / "cache", progress=False, on_event=events.append
    )
    assert resumed.failed == {}
    assert "ease: done earlier, reusing its results" in events
    assert "sasrec: reusing the model fitted before the run stopped" in events
    for model in ("ease", "sasrec"):
        got = pd.read_parquet(run / "models" / model / "full" / "per_user.parquet")
        want = pd.read_parquet(unbroken / "models" / model / "full" / "per_user.parquet")
        pd.testing.assert_frame_equal(got, want)
