"""The membership audit: non-members held out of training, the rank-percentile attack, its
AUC with an interval, and a model that memorises its users found out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recarena.models.base import Recommender, TrainingData
from recarena.models.classical.baselines import MostPopular
from recarena.privacy.membership import (
    attack_auc,
    audit_model,
    choose_non_members,
    rank_percentiles,
    without_users,
)


def _data(n_users=120, n_items=60, per_user=8, seed=0) -> TrainingData:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        items = rng.choice(n_items, size=per_user, replace=False)
        rows += [(u, int(i), t) for t, i in enumerate(items)]
    frame = pd.DataFrame(rows, columns=["user", "item", "timestamp"])
    return TrainingData(frame, n_users, n_items)


class Memoriser(Recommender):
    """Scores a user's items by how often that (user, item) pair was trained on: a model
    that has memorised its training users and knows nothing else."""

    history_use = "interactions"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def _fit(self, data, valid):
        self.trained_ = data.csr().toarray()

    def _score(self, users, items):
        noise = np.random.default_rng(self.seed).random((len(users), self.n_items_)) * 1e-3
        return self._gather(self.trained_[users] + noise, items)


def test_non_members_are_a_seeded_share_and_leave_training():
    data = _data()
    nm = choose_non_members(data, 0.25, seed=3)
    assert len(nm) == 30 and np.array_equal(nm, choose_non_members(data, 0.25, seed=3))
    assert not np.array_equal(nm, choose_non_members(data, 0.25, seed=4))
    reduced = without_users(data, nm)
    assert not reduced.interactions["user"].isin(nm).any()
    assert (
        reduced.n_users == data.n_users
        and len(reduced.interactions) == len(data.interactions) - 8 * 30
    )
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        choose_non_members(data, 1.0, seed=0)


def test_a_memorising_model_is_found_and_a_popularity_model_is_not():
    data = _data()
    leaky = audit_model(Memoriser, data, fraction=0.25, seed=1, n_boot=200)
    assert leaky.auc > 0.95 and leaky.ci_low > 0.9
    assert leaky.n_members == 90 and leaky.n_non_members == 30
    assert leaky.member_mean > leaky.non_member_mean
    # MostPopular reads no user: its ranks do not depend on membership beyond chance
    pop = audit_model(lambda: MostPopular(), data, fraction=0.25, seed=1, n_boot=200)
    assert pop.ci_low < 0.5 < pop.ci_high or abs(pop.auc - 0.5) < 0.15


def test_rank_percentiles_rank_the_hidden_last_item():
    data = _data(n_users=3, n_items=10, per_user=3)
    model = Memoriser().fit(data)
    stats = rank_percentiles(model, data, np.arange(3))
    # the hidden item was trained on: it comes first among the 8 items not shown
    assert np.allclose(stats, 1.0)


def test_attack_auc_and_its_interval():
    rng = np.random.default_rng(0)
    same = attack_auc(rng.random(300), rng.random(300), n_boot=300)
    assert same[1] < 0.5 < same[2]
    apart = attack_auc(rng.random(300) + 0.5, rng.random(300), n_boot=300)
    assert apart[0] > 0.7 and apart[1] > 0.65
    assert np.isnan(attack_auc(np.array([]), rng.random(3))[0])


def test_a_model_that_cannot_read_new_histories_is_not_audited():
    class Trained(Memoriser):
        history_use = "trained"

    with pytest.raises(NotImplementedError, match="cannot score users it was not trained on"):
        audit_model(Trained, _data(), fraction=0.2)


def test_a_re_ranker_is_not_audited():
    class ReRanker(Memoriser):
        scores_full_catalog = False

    with pytest.raises(NotImplementedError, match="re-ranks candidates"):
        audit_model(ReRanker, _data(), fraction=0.2)
