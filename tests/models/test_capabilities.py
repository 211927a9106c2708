"""What a model can do is declared on its class, and the runner asks nothing else.

`Recommender` gives every model defaults for what the runner needs to know (whether it
uses validation data, how it reads histories, which parameters name a language model, its
part of ``cost.json``, its learning curve); a model overrides them. These tests check the
declarations against the models of the registry, the defaults on small fits, and that the
runner probes no model with ``hasattr``/``getattr`` or reads a constructor's signature.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import recarena.experiment.runner
from recarena.models.base import Recommender
from recarena.models.classical.ease import EASE
from recarena.models.classical.sasrec import SASRec
from recarena.models.registry import get_model_class, model_entries
from tests.conftest import make_planted_dataset
from tests.models.conformance import SASREC_TINY, _training_data


def _registry_classes() -> list[tuple[str, type[Recommender]]]:
    out = []
    for entry in model_entries():
        try:
            out.append((entry.name, get_model_class(entry.name)))
        except Exception:  # noqa: BLE001 - an optional extra not installed here
            continue
    return out


CLASSES = _registry_classes()


@pytest.mark.parametrize(("name", "cls"), CLASSES, ids=[n for n, _ in CLASSES])
def test_language_model_parameters_are_declared(name, cls):
    params = cls._param_names()
    assert set(cls.language_model_params) <= set(params), name
    # every model of the registry that takes a `model` names a language model with it
    assert ("model" in params) == ("model" in cls.language_model_params), name
    for param in cls.language_model_params:
        default = cls.param_default(param)
        assert isinstance(default, str) and default, (name, param)


def test_the_language_models_of_the_registry_declare_it():
    declared = {name for name, cls in CLASSES if cls.language_model_params}
    assert {"lm-frozen", "lm-text-sasrec", "lm-cross-encoder", "lm-generative"} <= declared
    assert not declared & {"ease", "sasrec", "most_popular", "bm25"}


def test_param_default():
    assert EASE.param_default("l2") == inspect.signature(EASE.__init__).parameters["l2"].default
    assert SASRec.param_default("patience_steps") == 250
    with pytest.raises(KeyError):
        EASE.param_default("no_such_parameter")


def test_cost_record_and_training_log_defaults():
    dataset = make_planted_dataset()
    data = _training_data(dataset, dataset.interactions)
    ease = EASE().fit(data)
    # EASE names the solver it used; nothing else beyond the device
    assert ease.cost_record() == {"device": "cpu", "solver": "cholesky"}
    assert ease.training_log() == []

    sasrec = SASRec(**{**SASREC_TINY, "epochs": 2}).fit(data)
    record = sasrec.cost_record()
    assert list(record) == ["device", "best_epoch"]
    assert record == {"device": "cpu", "best_epoch": 2}
    log = sasrec.training_log()
    assert [row["epoch"] for row in log] == [1, 2]
    assert log == sasrec.training_log_ and log is not sasrec.training_log_


def test_cost_record_follows_the_declared_order():
    class Reporting(EASE):
        cost_attributes = ("train_seconds_", "best_epoch_")

    dataset = make_planted_dataset()
    model = Reporting().fit(_training_data(dataset, dataset.interactions))
    model.best_epoch_, model.train_seconds_, model.device_ = 3, 1.5, "cuda:0"
    model.encode_seconds_ = 9.0  # not declared by this class: not reported
    assert model.cost_record() == {"device": "cuda:0", "train_seconds": 1.5, "best_epoch": 3}
    assert list(model.cost_record()) == ["device", "train_seconds", "best_epoch"]


def test_the_runner_probes_no_model():
    """No ``hasattr``, ``getattr`` or ``inspect.signature`` in the experiment package: it
    reads the declarations of `Recommender` only."""
    folder = Path(recarena.experiment.runner.__file__).parent
    probes = [
        f"{path.name} line {node.lineno}: {ast.unparse(node)[:80]}"
        for path in sorted(folder.glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Name) and node.func.id in ("hasattr", "getattr"))
            or (isinstance(node.func, ast.Attribute) and node.func.attr == "signature")
        )
    ]
    assert not probes, "\n".join(probes)
