"""DP-SGD over users: Opacus clips each user's gradient and adds the noise, its accountant
records the epsilon, and the noise found for a target epsilon spends at most that."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("opacus")

from opacus.accountants import RDPAccountant  # noqa: E402

from recarena.privacy.dp import UserLevelDPSGD, default_delta, dp_problems  # noqa: E402
from tests.privacy.accounting import assert_epsilon_is_the_accountants  # noqa: E402


def _loss(net, x, y):
    return ((net(x)[..., 0] - y) ** 2).mean()


def _trainer(net, **kw):
    opts = dict(
        n_users=40,
        batch_size=10,
        epochs=3,
        epsilon=None,
        delta=1e-3,
        noise_multiplier=1.0,
        max_grad_norm=0.5,
        seed=0,
    )
    opts.update(kw)
    return UserLevelDPSGD(net, torch.optim.SGD(net.parameters(), lr=1.0), **opts)


def test_each_users_gradient_is_clipped_then_averaged():
    """With almost no noise, one step moves the weights by minus the mean over the
    expected batch of each user's gradient clipped to max_grad_norm."""
    torch.manual_seed(0)
    net = nn.Linear(3, 1)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    x = torch.randn(10, 4, 3) * 5  # 10 users, 4 interactions each
    y = torch.randn(10, 4)
    trainer = _trainer(net, noise_multiplier=1e-9)
    trainer.step(_loss, (x, y))
    expected = {n: torch.zeros_like(p) for n, p in before.items()}
    for u in range(10):
        ref = nn.Linear(3, 1)
        ref.load_state_dict(before)
        _loss(ref, x[u : u + 1], y[u : u + 1]).backward()
        grads = {n: p.grad for n, p in ref.named_parameters()}
        norm = math.sqrt(sum(float(g.pow(2).sum()) for g in grads.values()))
        scale = min(1.0, 0.5 / (norm + 1e-6))
        for n in expected:
            expected[n] += grads[n] * scale
    for n, p in net.named_parameters():
        step = before[n] - p.detach()
        assert torch.allclose(step, expected[n] / trainer.expected_batch_size, atol=1e-6)


def test_user_by_user_gradients_step_as_the_vmapped_ones():
    """`step_each` (one user's loss differentiated at a time) clips, noises and counts
    exactly as `step` does: the same weights after a step with the same seed."""
    torch.manual_seed(0)
    x = torch.randn(10, 4, 3) * 5
    y = torch.randn(10, 4)
    start = nn.Linear(3, 1)
    nets = [nn.Linear(3, 1) for _ in range(2)]
    for net in nets:
        net.load_state_dict(start.state_dict())
    vmapped, looped = (_trainer(net, noise_multiplier=0.7) for net in nets)
    vmapped.step(_loss, (x, y))
    looped.step_each(lambda u: _loss(nets[1], x[u : u + 1], y[u : u + 1]), 10)
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert looped.steps == 1 and looped.epsilon() == vmapped.epsilon()
    assert math.isnan(looped.step_each(lambda u: _loss(nets[1], x, y), 0))  # noise alone
    assert looped.steps == 2


def test_the_recorded_epsilon_is_the_accountants_for_the_steps_taken():
    net = nn.Linear(3, 1)
    trainer = _trainer(net, noise_multiplier=1.3)
    x, y = torch.randn(40, 2, 3), torch.randn(40, 2)
    steps = 0
    for _ in range(2):
        for users in trainer.epoch_batches():
            trainer.step(_loss, (x[users], y[users]))
            steps += 1
    assert steps == 2 * trainer.steps_per_epoch == trainer.steps
    reference = RDPAccountant()
    for _ in range(steps):
        reference.step(noise_multiplier=1.3, sample_rate=10 / 40)
    record = trainer.record().as_dict()
    assert record["epsilon_spent"] == pytest.approx(reference.get_epsilon(delta=1e-3))
    assert record["steps"] == steps and record["sample_rate"] == 0.25
    assert record["privacy_unit"].startswith("user")


def test_a_target_epsilon_is_met_by_the_noise_found_for_the_budget():
    net = nn.Linear(3, 1)
    trainer = _trainer(net, epsilon=4.0, noise_multiplier=None, epochs=3)
    x, y = torch.randn(40, 2, 3), torch.randn(40, 2)
    for _ in range(3):
        for users in trainer.epoch_batches():
            trainer.step(_loss, (x[users], y[users]))
    spent = trainer.epsilon()
    assert spent <= 4.0 + 0.01 and spent > 3.5  # Opacus's tolerance is 0.01
    assert trainer.noise_multiplier > 0.5


def test_empty_batches_are_noise_alone_and_counted():
    net = nn.Linear(3, 1)
    trainer = _trainer(net, noise_multiplier=2.0)
    before = net.weight.detach().clone()
    x = torch.zeros(0, 2, 3)
    assert math.isnan(trainer.step(_loss, (x, torch.zeros(0, 2))))
    assert trainer.steps == 1 and trainer.epsilon() > 0
    assert not torch.equal(before, net.weight.detach())  # the noise moved it


def test_problems_and_the_default_delta():
    assert dp_problems(None, None, None, 1.0) == []
    assert dp_problems(8.0, None, None, 1.0) == []
    assert any("not both" in p for p in dp_problems(8.0, None, 1.0, 1.0))
    assert any("positive finite" in p for p in dp_problems(-1.0, None, None, 1.0))
    assert any("(0, 1)" in p for p in dp_problems(8.0, 2.0, None, 1.0))
    assert any("DP is off" in p for p in dp_problems(None, 1e-5, None, 1.0))
    assert default_delta(943) < 1 / 943


# ------------------------------------------------------------------ private SASRec
def _cycle_data(n_users=120, n_items=40, length=10, seed=0):
    import pandas as pd

    from recarena.models.base import TrainingData

    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        start = int(rng.integers(0, n_items))
        rows += [(u, (start + t) % n_items, t) for t in range(length)]
    frame = pd.DataFrame(rows, columns=["user", "item", "timestamp"])
    return TrainingData(frame, n_users, n_items)


def _next_item_hr(model, data, k=10):
    last = np.array([data.sequences[u][-1] for u in range(data.n_users)])
    top = np.argsort(-model.score(np.arange(data.n_users)), axis=1)[:, :k]
    return float(np.mean([(h + 1) % data.n_items in row for h, row in zip(last, top, strict=True)]))


def test_private_sasrec_spends_what_the_accountant_says_and_still_learns(tmp_path):
    from recarena.models.base import Recommender
    from recarena.models.classical.sasrec import SASRec

    data = _cycle_data()
    opts = dict(max_len=12, hidden=32, epochs=8, batch_size=24, num_threads=1, seed=3)
    model = SASRec(**opts, dp_epsilon=8.0).fit(data)
    dp = model.dp_
    assert_epsilon_is_the_accountants(dp)
    assert dp["epsilon_spent"] <= 8.0 + 0.01 and dp["sample_rate"] == pytest.approx(24 / 120)
    assert dp["steps"] == 8 * round(120 / 24) and dp["delta"] == pytest.approx(default_delta(120))
    assert [row["epsilon"] for row in model.training_log_] == sorted(
        row["epsilon"] for row in model.training_log_
    )
    assert model.cost_record()["dp"]["epsilon_spent"] == dp["epsilon_spent"]
    # the next item follows the last: chance is 10 of 39 items
    assert _next_item_hr(model, data) > 0.35
    # the record survives saving; a non-private model has none
    model.save(tmp_path / "m")
    assert Recommender.load(tmp_path / "m").dp_ == dp
    plain = SASRec(**opts).fit(data)
    assert "dp" not in plain.cost_record() and _next_item_hr(plain, data) > 0.7


def test_private_sasrec_parameters_are_checked():
    from recarena.models.classical.sasrec import SASRec

    with pytest.raises(ValueError, match="not both"):
        SASRec(dp_epsilon=8.0, dp_noise_multiplier=1.0).check_params()
    with pytest.raises(ValueError, match="'ce' for a private fit"):
        SASRec(dp_epsilon=8.0, loss="bce").check_params()
    with pytest.raises(ValueError, match=r"dp_delta must be in \(0, 1\)"):
        SASRec(dp_epsilon=8.0, dp_delta=1.5).check_params()
    SASRec(dp_noise_multiplier=1.0, dp_max_grad_norm=0.5).check_params()
