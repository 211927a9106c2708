"""An empirical leakage audit: does a trained recommender tell its training users apart?

Membership inference (Shokri et al., S&P 2017) asks whether an attacker who sees a model's
output can tell if a user's data was used to train it. A model that memorises its training
users gives their own training interactions higher scores than it gives the interactions of
users it never saw. The attack here is shadow-free and score-based, in the spirit of Yeom
et al.'s loss threshold (CSF 2018): for each audited user, the model is shown the user's
training history without its last item and ranks that item among every item the user has
not interacted with; the attack statistic is that item's rank percentile (1: ranked first).
For a member the item was a training target; for a non-member it was never seen.

- **Non-members** are users held out of training entirely: a seeded share of the training
  users (``fraction``) whose training interactions are removed before the audited model is
  fit (the data set's other users and items keep their ids). **Members** are the others.
  Both are audited the same way: the model reads their histories through
  `Recommender.update_history` (a model that cannot read new histories without training,
  ``history_use = "trained"``, cannot score users it never saw, so it is not audited, and
  the audit says so).
- The **attack AUC** is the probability that a random member's statistic exceeds a random
  non-member's (ties count half): .5 is chance, 1 a perfect attack. Its interval is a
  percentile bootstrap that resamples members and non-members separately.

The audited model is a second fit of the same model and parameters on the reduced data, so
the audit says how much *this recipe* leaks, not the exact weights the experiment measured.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from recarena.models.base import Recommender, TrainingData

#: fewest training interactions of an audited user: one shown, one to rank
MIN_AUDIT_ITEMS = 2


@dataclass
class MembershipAudit:
    """The attack's result on one model."""

    auc: float
    ci_low: float
    ci_high: float
    n_members: int
    n_non_members: int
    member_mean: float
    non_member_mean: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "attack_auc": self.auc,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "n_members": self.n_members,
            "n_non_members": self.n_non_members,
            "member_percentile_mean": self.member_mean,
            "non_member_percentile_mean": self.non_member_mean,
            "attack": "rank percentile of the last training item given the rest of the history",
        }


def choose_non_members(data: TrainingData, fraction: float, seed: int) -> np.ndarray:
    """A seeded ``fraction`` of the users with at least `MIN_AUDIT_ITEMS` training
    interactions, sorted."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    counts = data.user_activity
    eligible = np.flatnonzero(counts >= MIN_AUDIT_ITEMS)
    n = max(1, round(fraction * len(eligible)))
    rng = np.random.default_rng([seed, 271828])
    return np.sort(rng.choice(eligible, size=min(n, len(eligible)), replace=False))


def without_users(data: TrainingData, users: np.ndarray) -> TrainingData:
    """``data`` without the interactions of ``users`` (ids and side information kept)."""
    keep = ~data.interactions["user"].isin(users)
    return _with_interactions(data, data.interactions[keep].reset_index(drop=True))


def _with_interactions(data: TrainingData, interactions: pd.DataFrame) -> TrainingData:
    """``data`` with other interactions: ids and side information kept, nothing derived
    from the old interactions (a fresh object), no checkpoints."""
    return dataclasses.replace(data, interactions=interactions, checkpoint_dir=None)


def _shown_and_hidden(data: TrainingData) -> tuple[TrainingData, np.ndarray]:
    """Every user's history without its last item, and that item per user (-1: none)."""
    frame = data.interactions
    last = frame.groupby("user", sort=False).tail(1)
    hidden = np.full(data.n_users, -1, dtype=np.int64)
    hidden[last["user"].to_numpy()] = last["item"].to_numpy()
    shown = frame.drop(index=last.index).reset_index(drop=True)
    return _with_interactions(data, shown), hidden


def rank_percentiles(
    model: Recommender, data: TrainingData, users: np.ndarray, batch: int = 256
) -> np.ndarray:
    """Each user's hidden (last) training item's rank percentile among the items the user
    has not interacted with, given the rest of the history (1: ranked first; ties half)."""
    shown, hidden = _shown_and_hidden(data)
    model.update_history(shown)
    seen = shown.csr()
    out = np.empty(len(users), dtype=np.float64)
    for start in range(0, len(users), batch):
        chunk = users[start : start + batch]
        scores = model.score(chunk, None).astype(np.float64)
        rows = seen[chunk]
        for r, user in enumerate(chunk):
            s = scores[r]
            s[rows.indices[rows.indptr[r] : rows.indptr[r + 1]]] = np.nan
            target = s[hidden[user]]
            others = s[~np.isnan(s)]
            n = len(others) - 1
            if n <= 0 or np.isnan(target):
                out[start + r] = np.nan
                continue
            above = float((others > target).sum())
            ties = float((others == target).sum()) - 1
            out[start + r] = 1.0 - (above + ties / 2) / n
    return out


def attack_auc(
    members: np.ndarray, non_members: np.ndarray, *, n_boot: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """AUC of the statistic separating members from non-members (ties half), with a
    95% percentile bootstrap interval (each group resampled on its own)."""
    from recarena.metrics.pointwise import roc_auc

    a = members[~np.isnan(members)]
    b = non_members[~np.isnan(non_members)]
    if not len(a) or not len(b):
        return float("nan"), float("nan"), float("nan")

    def auc(x: np.ndarray, y: np.ndarray) -> float:
        labels = np.concatenate([np.ones(len(x)), np.zeros(len(y))])
        return roc_auc(labels, np.concatenate([x, y]))

    value = auc(a, b)
    rng = np.random.default_rng([seed, 31])
    boot = np.array([auc(rng.choice(a, len(a)), rng.choice(b, len(b))) for _ in range(n_boot)])
    low, high = np.percentile(boot, [2.5, 97.5]) if n_boot else (np.nan, np.nan)
    return value, float(low), float(high)


def audit_model(
    make_model: Callable[[], Recommender],
    data: TrainingData,
    *,
    fraction: float = 0.1,
    seed: int = 0,
    n_boot: int = 1000,
    valid: pd.DataFrame | None = None,
) -> MembershipAudit:
    """Fit ``make_model()`` without the non-members' interactions and attack it.

    Raises
    ------
    NotImplementedError
        The model cannot read histories it was not trained on (``history_use``), or cannot
        score the whole catalog (a re-ranker).
    """
    model = make_model()
    if not type(model).scores_full_catalog:
        raise NotImplementedError(
            f"{type(model).__name__} re-ranks candidates and cannot score the whole catalog, "
            "which the attack ranks: no membership audit"
        )
    if not type(model).updates_history():
        raise NotImplementedError(
            f"{type(model).__name__} cannot score users it was not trained on "
            f"(history_use = {type(model).history_use!r}): no membership audit"
        )
    non_members = choose_non_members(data, fraction, seed)
    if valid is not None:  # early stopping must not read the non-members either
        valid = valid[~valid["user"].isin(non_members)].reset_index(drop=True)
    model.fit(without_users(data, non_members), valid)
    eligible = np.flatnonzero(data.user_activity >= MIN_AUDIT_ITEMS)
    members = np.setdiff1d(eligible, non_members)
    users = np.concatenate([members, non_members])
    stats = rank_percentiles(model, data, users)
    m, nm = stats[: len(members)], stats[len(members) :]
    auc, low, high = attack_auc(m, nm, n_boot=n_boot, seed=seed)
    return MembershipAudit(
        auc=auc,
        ci_low=low,
        ci_high=high,
        n_members=int((~np.isnan(m)).sum()),
        n_non_members=int((~np.isnan(nm)).sum()),
        member_mean=float(np.nanmean(m)),
        non_member_mean=float(np.nanmean(nm)),
    )
