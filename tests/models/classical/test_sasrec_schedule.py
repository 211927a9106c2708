"""SASRec's learning-rate schedule: the factor at every point, the rates the optimizer
actually gets, a refit that retraces the validation fit, a resume in the middle of the
schedule, and a constant rate left exactly as it was (same checkpoint key, no rate set)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recarena.models.classical.sasrec import SASRec
from recarena.models.classical.sasrec import training as sasrec_training
from recarena.models.classical.sasrec.training import LRScheduleSpec, checkpoint_key
from recarena.splits import leave_one_out_split
from tests.conftest import make_planted_dataset
from tests.models.conformance import SASREC_TINY, _training_data


@pytest.fixture(scope="module")
def planted():
    dataset = make_planted_dataset()
    return dataset, leave_one_out_split(dataset)


def tiny(**params) -> SASRec:
    return SASRec(**{**SASREC_TINY, **params})


def test_the_factor_warms_up_then_falls_to_zero_at_decay_epochs():
    cosine = LRScheduleSpec("cosine", warmup_epochs=2, decay_epochs=10)
    assert cosine.factor(0.5) == pytest.approx(0.25)
    assert cosine.factor(2.0) == pytest.approx(1.0)
    assert cosine.factor(6.0) == pytest.approx(0.5)  # half-way down the cosine
    assert cosine.factor(10.0) == pytest.approx(0.0)
    assert cosine.factor(12.0) == pytest.approx(0.0)
    linear = LRScheduleSpec("linear", warmup_epochs=0, decay_epochs=4)
    assert [linear.factor(t) for t in (0, 1, 2, 3, 4)] == pytest.approx([1, 0.75, 0.5, 0.25, 0])
    assert LRScheduleSpec("constant", 0, 10).moves() is False
    assert LRScheduleSpec("constant", 3, 10).factor(1.5) == pytest.approx(0.5)
    assert LRScheduleSpec("constant", 3, 10).factor(7.0) == 1.0
    assert cosine.last_epoch(200) == 10 and LRScheduleSpec("constant", 0, 10).last_epoch(200) == 200


def test_each_step_gets_the_scheduled_rate_and_training_ends_at_decay_epochs(planted, monkeypatch):
    dataset, split = planted
    data = _training_data(dataset, split.fit_interactions("valid"))
    seen: list[float] = []
    step = torch.optim.Adam.step

    def record(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", record)
    model = tiny(
        epochs=50, patience=50, lr=1e-2, lr_schedule="cosine", warmup_epochs=1, decay_epochs=4
    )
    model.fit(data, valid=split.valid)
    assert [r["epoch"] for r in model.training_log_] == [1, 2, 3, 4]  # not 50
    per_epoch = len(seen) // 4
    assert len(seen) == 4 * per_epoch and per_epoch >= 2
    spec = LRScheduleSpec("cosine", 1, 4)
    expected = [
        1e-2 * spec.factor(e + (s + 1) / per_epoch) for e in range(4) for s in range(per_epoch)
    ]
    np.testing.assert_allclose(seen, expected, rtol=1e-12)
    assert seen[0] < seen[per_epoch - 1] == pytest.approx(1e-2)  # the warm-up rises
    assert seen[-1] == pytest.approx(0.0, abs=1e-12)
    assert model.refit_params() == {"epochs": model.best_epoch_, "decay_epochs": 4}


def test_a_constant_rate_is_never_set_and_keeps_its_checkpoint_key(planted, monkeypatch):
    dataset, split = planted
    data = _training_data(dataset, split.fit_interactions("valid"))
    calls = {"n": 0}
    original = sasrec_training.LRSetter.__call__
    monkeypatch.setattr(
        sasrec_training.LRSetter,
        "__call__",
        lambda self, *a: calls.__setitem__("n", calls["n"] + 1) or original(self, *a),
    )
    model = tiny(epochs=2).fit(data, valid=split.valid)
    assert calls["n"] == 0 and model.refit_params() == {"epochs": model.best_epoch_}
    params = tiny().get_params()
    before = {k: v for k, v in params.items() if k not in sasrec_training.SCHEDULE_PARAMS}
    assert checkpoint_key(SASRec, params, data, split.valid) == checkpoint_key(
        SASRec, before, data, split.valid
    )
    cosine = {**params, "lr_schedule": "cosine"}
    assert checkpoint_key(SASRec, cosine, data, split.valid) != checkpoint_key(
        SASRec, params, data, split.valid
    )
    tiny(epochs=1, lr_schedule="constant", warmup_epochs=1).fit(data)
    assert calls["n"] > 0  # a warm-up does set the rate


def test_the_refit_retraces_the_validation_fit(planted):
    """Trained without validation for refit_params(), a scheduled SASRec gets the very
    weights the validation fit had at its best epoch (same data, same draws)."""
    dataset, split = planted
    data = _training_data(dataset, split.fit_interactions("valid"))
    params = dict(epochs=30, patience=30, lr=1e-2, lr_schedule="linear", decay_epochs=5)
    validated = tiny(**params).fit(data, valid=split.valid)
    again = tiny(**{**params, **validated.refit_params()}).fit(data, valid=None)
    assert again.best_epoch_ == validated.best_epoch_
    for a, b in zip(again.training_log_, validated.training_log_, strict=False):
        assert a["loss"] == b["loss"]
    users = np.arange(data.n_users)
    np.testing.assert_array_equal(again.score(users), validated.score(users))


def test_a_fit_stopped_mid_schedule_resumes_as_an_unbroken_one(planted, tmp_path, monkeypatch):
    dataset, split = planted
    data = _training_data(dataset, split.fit_interactions("valid"))
    params = dict(epochs=5, patience=10, lr=2e-2, lr_schedule="cosine", warmup_epochs=1)
    whole = tiny(**params).fit(data, valid=split.valid)
    data.checkpoint_dir = tmp_path
    calls = {"n": 0}
    train_epoch = SASRec._train_epoch

    def killed_in_epoch_3(self, *args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return train_epoch(self, *args)

    monkeypatch.setattr(SASRec, "_train_epoch", killed_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        tiny(**params).fit(data, valid=split.valid)
    monkeypatch.setattr(SASRec, "_train_epoch", train_epoch)
    resumed = tiny(**params).fit(data, valid=split.valid)
    for a, b in zip(resumed.training_log_, whole.training_log_, strict=True):
        assert (a["loss"], a["valid_ndcg@10"]) == (b["loss"], b["valid_ndcg@10"])
    users = np.arange(data.n_users)
    np.testing.assert_array_equal(resumed.score(users), whole.score(users))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"lr_schedule": "step"}, "'constant', 'cosine' or 'linear'"),
        ({"warmup_epochs": -1}, "an integer >= 0"),
        ({"warmup_epochs": 3, "decay_epochs": 3}, r"above warmup_epochs \(3\)"),
    ],
)
def test_bad_schedules_are_named(params, message):
    with pytest.raises(ValueError, match=message):
        tiny(**params).check_params()


def test_a_model_saved_before_schedules_existed_refits_at_a_constant_rate():
    model = tiny()
    for name in sasrec_training.SCHEDULE_PARAMS:
        delattr(model, name)
    model.best_epoch_ = 3
    assert model.refit_params() == {"epochs": 3}
    assert not model._lr_schedule().moves() and math.isfinite(model._lr_schedule().factor(1))
