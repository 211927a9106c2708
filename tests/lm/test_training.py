"""The shared Accelerate training loop (`recarena.lm.training`) on toy problems."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from recarena.lm import training as tr


def _regression(n: int = 256, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
    return x, y


def _loader(x, y, batch_size: int = 32, seed: int = 0):
    return torch.utils.data.DataLoader(
        list(zip(x, y, strict=True)),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )


def _mse(model, batch):
    x, t = batch
    return torch.nn.functional.mse_loss(model(x).squeeze(-1), t)


def test_loop_learns_and_logs_each_epoch():
    x, y = _regression()
    accelerator = tr.make_accelerator("cpu")
    with tr.seeded(0):
        model = torch.nn.Linear(4, 1)
        result = tr.train_loop(
            accelerator,
            model,
            _loader(x, y),
            _mse,
            tr.LoopConfig(
                epochs=15, lr=0.1, weight_decay=0.0, monitor="valid_mse", mode="min", progress=False
            ),
            evaluate=lambda m: {"valid_mse": float(((m(x).squeeze(-1) - y) ** 2).mean())},
        )
    assert result.steps == 15 * 8 and result.steps_per_epoch == 8 and result.epochs == 15
    assert len(result.log) == 15  # one record per epoch (evaluated at each epoch's end)
    assert [r["epoch"] for r in result.log] == list(range(1, 16))
    assert [r["step"] for r in result.log] == list(range(8, 121, 8))
    assert result.log[-1]["examples"] == 15 * 256 and result.examples == 15 * 256
    assert result.log[-1]["train_loss"] < 0.01 < result.log[0]["train_loss"]
    assert all(r["valid_mse"] is not None and r["seconds"] >= 0 for r in result.log)
    assert result.best_step == 120 and result.best_value == result.log[-1]["valid_mse"]
    np.testing.assert_allclose(
        result.model.weight.detach().numpy().ravel(), [1.0, -2.0, 0.5, 3.0], atol=0.05
    )
    assert result.examples_per_second > 0 and not result.model.training


def test_evaluation_hook_monitor_mode_max_keeps_the_best_and_restores_it():
    """Scripted validation values: the weights of the best evaluation come back."""
    x, y = _regression()
    scripted = iter([0.3, 0.9, 0.5, 0.4, 0.2, 0.1])
    snapshots: list[torch.Tensor] = []

    def evaluate(model):
        snapshots.append(model.weight.detach().clone())
        return {"valid_auc": next(scripted), "other": 1.0}

    with tr.seeded(0):
        model = torch.nn.Linear(4, 1)
        result = tr.train_loop(
            tr.make_accelerator("cpu"),
            model,
            _loader(x, y),
            _mse,
            tr.LoopConfig(epochs=10, eval_every=3, patience=3, lr=0.05, progress=False),
            evaluate=evaluate,
        )
    # evaluations at steps 3, 6, 9, 12, 15: the 2nd is best, 3 more without gain stop it
    assert [r["step"] for r in result.log if r["valid_auc"] is not None] == [3, 6, 9, 12, 15]
    assert result.best_step == 6 and result.best_value == 0.9 and result.best_epoch == 1
    assert result.stopped_early and result.steps == 15
    assert torch.equal(result.model.weight.detach(), snapshots[1])
    assert not torch.equal(snapshots[-1], snapshots[1])
    assert all("other" in r for r in result.log if r["valid_auc"] is not None)


def test_start_metrics_let_the_untrained_weights_compete_as_step_0():
    """A warm start that training only makes worse is kept as it started, and the
    evaluations below it count toward patience; without start_metrics (or when training
    beats them) the loop behaves as before."""
    x, y = _regression()

    def run(scripted, start):
        values = iter(scripted)
        with tr.seeded(0):
            model = torch.nn.Linear(4, 1)
            initial = model.weight.detach().clone()
            result = tr.train_loop(
                tr.make_accelerator("cpu"),
                model,
                _loader(x, y),
                _mse,
                tr.LoopConfig(epochs=10, eval_every=3, patience=2, lr=0.05, progress=False),
                evaluate=lambda m: {"valid_auc": next(values)},
                start_metrics=start,
            )
        return result, initial

    result, initial = run([0.7, 0.6, 0.5], {"valid_auc": 0.8})
    assert result.best_step == 0 and result.best_epoch == 0 and result.best_value == 0.8
    assert result.stopped_early and result.steps == 6  # two evaluations below step 0
    assert torch.equal(result.model.weight.detach(), initial)
    result, initial = run([0.7, 0.9, 0.5, 0.4], {"valid_auc": 0.8})
    assert result.best_step == 6 and result.best_value == 0.9 and result.steps == 12
    result, _ = run([0.7, 0.6, 0.5, 0.4, 0.3], None)
    assert result.best_step == 3 and result.steps == 9


def test_mode_min_nan_and_keep_best_no():
    x, y = _regression()
    values = iter([float("nan"), 2.0, 1.0, 3.0])
    with tr.seeded(0):
        result = tr.train_loop(
            tr.make_accelerator("cpu"),
            torch.nn.Linear(4, 1),
            _loader(x, y),
            _mse,
            tr.LoopConfig(
                epochs=4, monitor="loss", mode="min", keep_best="no", lr=0.05, progress=False
            ),
            evaluate=lambda m: {"loss": next(values)},
        )
    assert result.best_value == 1.0 and result.best_step == 24 and result.best_epoch == 3
    assert result.steps == 32  # keep_best="no": the last weights, training not cut short


def test_missing_monitor_key_raises():
    x, y = _regression(64)
    with pytest.raises(KeyError, match="valid_auc"):
        tr.train_loop(
            tr.make_accelerator("cpu"),
            torch.nn.Linear(4, 1),
            _loader(x, y),
            _mse,
            tr.LoopConfig(progress=False),
            evaluate=lambda m: {"auc": 0.5},
        )


def test_gradient_accumulation_max_steps_and_schedule():
    x, y = _regression(320)  # 10 batches of 32 per epoch
    accelerator = tr.make_accelerator("cpu", gradient_accumulation_steps=3)
    with tr.seeded(0):
        model = torch.nn.Linear(4, 1)
        optimizer = tr.adamw(model, lr=0.01)
        result = tr.train_loop(
            accelerator,
            model,
            _loader(x, y),
            _mse,
            tr.LoopConfig(epochs=3, max_steps=7, warmup_ratio=0.0, progress=False),
            optimizer=optimizer,
            scheduler=tr.linear_warmup(optimizer, 0, 7),
        )
    # 10 batches, 3 per step: 4 steps per epoch (the last one of 1 batch, at the epoch's end)
    assert result.steps_per_epoch == 4
    assert result.steps == 7 and result.epochs == 2
    assert result.log[-1]["lr"] == pytest.approx(0.0)
    assert result.examples == 10 * 32 + 3 * 3 * 32  # epoch 1 whole, then 3 steps of 3 batches
    assert [r["epoch"] for r in result.log] == [1, 2]  # no evaluation hook: a record per epoch


def test_linear_warmup_shape():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = tr.linear_warmup(optimizer, warmup_steps=3, total_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4:] == pytest.approx([6 / 7, 5 / 7, 4 / 7, 3 / 7, 2 / 7, 1 / 7])
    assert np.all(np.diff(lrs[3:]) < 0)


def test_adamw_skips_decay_on_biases_and_norms():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    model[1].register_parameter("unused", torch.nn.Parameter(torch.zeros(1), requires_grad=False))
    names = dict(model.named_parameters())
    optimizer = tr.adamw(model, lr=1e-3, weight_decay=0.1)
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(names["0.weight"])}
    counted = sum(len(g["params"]) for g in optimizer.param_groups)
    assert counted == 4  # the frozen parameter is left out


def test_seeded_is_reproducible_and_restores_global_state():
    random.seed(123)
    np.random.seed(123)  # noqa: NPY002
    torch.manual_seed(123)
    before = (random.random(), np.random.random(), torch.rand(1).item())  # noqa: NPY002
    random.seed(123)
    np.random.seed(123)  # noqa: NPY002
    torch.manual_seed(123)
    with tr.seeded(7):
        a = torch.rand(3)
    with tr.seeded(7):
        b = torch.rand(3)
    assert torch.equal(a, b)
    after = (random.random(), np.random.random(), torch.rand(1).item())  # noqa: NPY002
    assert after == before


def test_mixed_precision_resolution():
    assert tr.resolve_mixed_precision("auto", "cpu") == "no"
    assert tr.resolve_mixed_precision("bfloat16", "cpu") == "bf16"
    assert tr.resolve_mixed_precision("fp32", "cuda") == "no"
    with pytest.raises(ValueError, match="mixed_precision"):
        tr.resolve_mixed_precision("fp8x", "cpu")
    with pytest.raises(ValueError, match="device"):
        tr.make_accelerator("tpu")
    # a second accelerator with other settings in the same process is fine
    first = tr.make_accelerator("cpu", "no")
    second = tr.make_accelerator("cpu", "bf16")
    assert first.device.type == second.device.type == "cpu"
    assert second.mixed_precision == "bf16"
    assert tr.make_accelerator("cpu").mixed_precision == "no"


def test_torch_threads_restores():
    before = torch.get_num_threads()
    with tr.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with tr.torch_threads(None):
        assert torch.get_num_threads() == before


def test_best_weights_keeps_the_best_epoch_and_lets_step_0_compete():
    """`BestWeights`: only trainable weights are kept; an epoch that does not beat the best
    counts towards patience; NaN never wins; with nothing better than step 0 the untrained
    weights come back; an epoch without a value (no validation) is always kept."""
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    net[0].weight.requires_grad_(False)
    frozen = net[0].weight.detach().clone()
    start = net[1].weight.detach().clone()

    def move(to: float) -> None:
        with torch.no_grad():
            net[1].weight.fill_(to)
            net[0].weight.fill_(to)  # not trainable: never kept nor restored

    best = tr.BestWeights(net, patience=2, value=0.5, step=0)
    move(1.0)
    assert best.offer(1, 0.4, step=10) is False and best.stale == 1
    move(2.0)
    assert best.offer(2, float("nan"), step=20) is True  # patience spent
    best.restore()
    assert best.epoch == 0 and best.value == 0.5 and best.extra == {"step": 0}
    torch.testing.assert_close(net[1].weight, start)
    assert (net[0].weight == 2.0).all() and not torch.equal(net[0].weight, frozen)

    best = tr.BestWeights(net, patience=None, value=0.5, step=0)
    move(3.0)
    assert best.offer(1, 0.6, step=10) is False
    move(4.0)
    for epoch in range(2, 6):
        assert best.offer(epoch, 0.55, step=10 * epoch) is False  # never stops early
    best.restore()
    assert (best.epoch, best.value, best.extra["step"]) == (1, 0.6, 10)
    assert (net[1].weight == 3.0).all()

    unvalidated = tr.BestWeights(net, patience=1)
    for epoch, to in ((1, 5.0), (2, 6.0)):
        move(to)
        assert unvalidated.offer(epoch, None, table=epoch) is False
    move(7.0)
    unvalidated.restore()
    assert unvalidated.epoch == 2 and unvalidated.extra["table"] == 2
    assert (net[1].weight == 6.0).all()


def test_early_stopping_is_the_one_rule_of_train_loop_and_best_weights():
    """`EarlyStopping`: a gain restarts the count, NaN never gains, ``min`` reverses the
    comparison, and `BestWeights` and `train_loop` both read it."""
    stopping = tr.EarlyStopping(2)
    assert stopping.improves(0.3) and stopping.value == 0.3
    assert not stopping.improves(float("nan")) and not stopping.should_stop
    assert not stopping.improves(0.3) and stopping.should_stop  # equal is no gain
    assert stopping.improves(0.4) and stopping.stale == 0 and not stopping.should_stop
    lower = tr.EarlyStopping(None, mode="min", value=1.0)
    assert lower.improves(0.5) and not lower.improves(0.7)
    assert not any(lower.improves(2.0) or lower.should_stop for _ in range(50))
    with pytest.raises(ValueError, match="mode must be 'max' or 'min'"):
        tr.EarlyStopping(1, mode="up")  # type: ignore[arg-type]

    net = torch.nn.Linear(2, 1)
    best = tr.BestWeights(net, patience=1)
    assert best.value == -math.inf and isinstance(best.stopping, tr.EarlyStopping)
    assert not best.offer(1, 0.2) and best.value == 0.2 and best.epoch == 1
    assert best.offer(2, 0.1) and best.stale == 1 and best.epoch == 1
