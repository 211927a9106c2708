"""The conformance suite every `Recommender` passes.

A model's test class inherits `RecommenderConformance` and defines ``make_model(seed)``::

    class TestEASE(RecommenderConformance):
        def make_model(self, seed=0):
            return EASE(l2=10.0)

Checks: a planted preference structure is recovered, fitting is deterministic under a seed,
users without history and items without interactions get finite scores, out-of-range users
raise, seen items are never recommended, candidates are respected, save/load keeps the
scores (also when ``model.json`` names the class by its import path from before the models
moved into folders, and the pickled state names no class of a model's own files), the model
declares how it reads histories (``history_use``), and new histories given to a fitted model
(`Recommender.update_history`) move the scores of the users whose history changed and of no
one else.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pandas as pd
import pytest

from recarena.data.dataset import Dataset, interactions_csr
from recarena.metrics.ranking import ranking_metrics
from recarena.models._moved import MOVED_MODULES, first_released_module
from recarena.models.base import UPDATABLE_HISTORY_USES, HistoryUse, Recommender, TrainingData
from recarena.splits import leave_one_out_split
from tests.conftest import make_planted_dataset


def _training_data(dataset: Dataset, interactions=None) -> TrainingData:
    return TrainingData(
        interactions=dataset.interactions if interactions is None else interactions,
        n_users=dataset.n_users,
        n_items=dataset.n_items,
        items=dataset.items,
        item_text=dataset.item_text("{title}. Genres: {genres}."),
        dataset_name=dataset.name,
    )


#: SASRec settings small enough that a fit on the planted data takes well under a second; one
#: thread, since torch's thread pool only adds waiting on tensors this small. Shared by every
#: SASRec-based model's tests.
SASREC_TINY: dict[str, Any] = dict(
    max_len=12,
    hidden=32,
    n_blocks=2,
    n_heads=2,
    dropout=0.1,
    lr=5e-3,
    batch_size=32,
    epochs=40,
    patience=3,
    # the planted data is one step an epoch: the step floor would keep every fit going
    # for 250 epochs (test_patience_steps_* test the floor itself)
    patience_steps=0,
    num_threads=1,
)


def check_cold_validation(make_model: Callable[[], Recommender]) -> None:
    """A model that early-stops on validation items it never trained on must rank them among
    the untrained items only: its logged best NDCG@10 is that ranking's."""
    dataset = make_planted_dataset()
    cold = dataset.item_index(["i0_0", "i0_1"])
    inter = dataset.interactions
    held_out = inter["item"].isin(cold)
    data = _training_data(dataset, inter[~held_out])
    valid = inter[held_out]
    model = make_model().fit(data, valid=valid)
    users = np.unique(valid["user"].to_numpy())
    lists = model.recommend(users, 10, item_pool=cold, seed=model.seed)
    truth = interactions_csr(valid, data.n_users, data.n_items)
    expected = ranking_metrics(lists, truth, [10], ["ndcg"])["ndcg@10"].mean()
    assert model.best_valid_ndcg_ == pytest.approx(expected)
    assert model.best_valid_ndcg_ >= 1 / np.log2(3)  # every held-out item ranks 1st or 2nd


class RecommenderConformance:
    #: share of top-5 items that must come from the user's own cluster
    planted_precision: float = 0.8
    #: False for models that by design ignore the user (Random, MostPopular)
    personalised: bool = True
    #: True where a fitted model given new histories scores exactly as the same model fit
    #: on the new data (what it learns does not depend on the interactions)
    history_update_matches_refit: bool = False

    def make_model(self, seed: int = 0) -> Recommender:
        raise NotImplementedError

    # -------------------------------------------------------------- fixtures
    @pytest.fixture(scope="class")
    @classmethod
    def planted(cls):
        dataset = make_planted_dataset()
        split = leave_one_out_split(dataset)
        return dataset, split

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, planted):
        dataset, split = planted
        data = _training_data(dataset, split.fit_interactions("valid"))
        return cls().make_model(seed=0).fit(data, valid=split.valid), data

    # -------------------------------------------------------------- checks
    def test_fit_returns_self(self, planted):
        dataset, split = planted
        model = self.make_model()
        data = _training_data(dataset, split.fit_interactions("valid"))
        assert model.fit(data, valid=split.valid) is model

    def test_score_shapes(self, fitted):
        model, data = fitted
        users = np.array([0, 5, 7])
        if model.scores_full_catalog:
            full = model.score(users)
            assert full.shape == (3, data.n_items) and full.dtype == np.float32
            assert np.isfinite(full).all()
        cand = np.array([[0, 1, 2, -1], [3, 4, 5, 6], [7, 8, -1, -1]])
        part = model.score(users, cand)
        assert part.shape == cand.shape
        assert np.isneginf(part[cand < 0]).all() and np.isfinite(part[cand >= 0]).all()
        if model.scores_full_catalog:
            np.testing.assert_allclose(part[1], full[1, cand[1]], rtol=1e-5, atol=1e-6)

    def test_recovers_planted_structure(self, fitted, planted):
        model, data = fitted
        dataset, split = planted
        users = split.eval_users("valid")
        cluster_of_item = np.array([int(str(r)[1:].split("_")[0]) for r in dataset.item_ids])
        cluster_of_user = np.array([int(str(r)[1:].split("_")[0]) for r in dataset.user_ids])
        if model.scores_full_catalog:
            lists = model.recommend(users, 5, seed=1)
        else:
            lists = model.recommend(
                users, 5, candidates=np.tile(np.arange(data.n_items), (len(users), 1)), seed=1
            )
        same = cluster_of_item[lists.items] == cluster_of_user[lists.users][:, None]
        precision = same[lists.items >= 0].mean()
        if self.personalised:
            assert precision >= self.planted_precision, f"planted precision {precision:.2f}"
        else:
            n_clusters = cluster_of_item.max() + 1
            assert precision < 1.0 / n_clusters + 0.35

    def test_deterministic_under_seed(self, planted):
        dataset, split = planted
        data = _training_data(dataset, split.fit_interactions("valid"))
        users = np.arange(0, data.n_users, 7)
        a = self._any_scores(self.make_model(seed=3).fit(data, valid=split.valid), users, data)
        b = self._any_scores(self.make_model(seed=3).fit(data, valid=split.valid), users, data)
        np.testing.assert_array_equal(a, b)

    def test_user_without_history_and_cold_items(self, planted):
        dataset, split = planted
        train = split.fit_interactions("valid")
        # user 0 loses all history, item 0 loses all interactions
        train = train[(train["user"] != 0) & (train["item"] != 0)]
        data = _training_data(dataset, train)
        model = self.make_model().fit(data)
        scores = self._any_scores(model, np.array([0, 1]), data)
        assert np.isfinite(scores).all()

    def test_out_of_range_user_raises(self, fitted):
        model, data = fitted
        with pytest.raises(ValueError, match="outside"):
            model.recommend(np.array([data.n_users + 3]), 5, candidates=np.array([[0, 1]]))

    def test_seen_items_never_recommended(self, fitted):
        model, data = fitted
        users = np.arange(data.n_users)
        if not model.scores_full_catalog:
            pytest.skip("re-ranker: seen exclusion is checked on candidates below")
        lists = model.recommend(users, 10)
        seen = data.csr()
        for row, user in enumerate(lists.users):
            got = lists.items[row][lists.items[row] >= 0]
            assert not set(got) & set(seen.indices[seen.indptr[user] : seen.indptr[user + 1]])
            assert len(got) == 10

    def test_candidates_respected(self, fitted):
        model, data = fitted
        users = np.array([1, 2])
        cand = np.array([[10, 11, 12, 13, 14, 15], [20, 21, 22, -1, -1, -1]])
        lists = model.recommend(users, 4, candidates=cand, exclude_seen=False)
        assert set(lists.items[0][lists.items[0] >= 0]) <= set(cand[0])
        assert set(lists.items[1][lists.items[1] >= 0]) <= {20, 21, 22}
        assert (lists.items[1] >= 0).sum() == 3

    def test_save_load_roundtrip(self, fitted, tmp_path: Path):
        model, data = fitted
        model.save(tmp_path / "m")
        loaded = Recommender.load(tmp_path / "m")
        users = np.array([0, 3, 9])
        np.testing.assert_allclose(
            self._any_scores(loaded, users, data), self._any_scores(model, users, data), rtol=1e-5
        )
        # the pickled state names no class of a model's own files, so moving those files
        # never breaks a saved model
        assert not [g for g in _pickled_globals(tmp_path / "m" / "state.pkl") if _movable(g)]

    def test_a_model_saved_under_its_first_import_path_loads(self, fitted, tmp_path: Path):
        """``model.json`` of a model saved before the models moved into folders names the
        class by its old module (``recarena.models.sasrec:SASRec``): it still loads."""
        model, data = fitted
        model.save(tmp_path / "m")
        meta_path = tmp_path / "m" / "model.json"
        meta = json.loads(meta_path.read_text())
        klass = type(model)
        meta["class"] = f"{first_released_module(klass.__module__)}:{klass.__qualname__}"
        meta_path.write_text(json.dumps(meta))
        loaded = Recommender.load(tmp_path / "m")
        assert type(loaded) is klass
        users = np.array([0, 3, 9])
        np.testing.assert_allclose(
            self._any_scores(loaded, users, data), self._any_scores(model, users, data), rtol=1e-5
        )

    def test_history_use_is_declared(self):
        cls = type(self.make_model())
        assert cls.history_use in get_args(HistoryUse)
        assert cls.history_use != "undeclared", f"{cls.__name__} must declare history_use"
        assert cls.updates_history() == (cls.history_use in UPDATABLE_HISTORY_USES)
        if cls.history_use in ("rebuilt", "fold-in"):
            assert cls._update_history is not Recommender._update_history

    def test_update_history(self, fitted, planted, tmp_path: Path):
        """Half the validation users gain their validation item: only their scores move."""
        model, data = fitted
        dataset, split = planted
        valid_users = np.unique(split.valid["user"].to_numpy())
        gaining, staying = valid_users[::2], valid_users[1::2]
        gained = split.valid[split.valid["user"].isin(gaining)]
        frame = pd.concat([data.interactions, gained], ignore_index=True)
        frame = frame.sort_values(["user", "timestamp"], kind="stable").reset_index(drop=True)
        new = _training_data(dataset, frame)
        # a copy through save/load: the fitted fixture stays as it is for the other checks
        model.save(tmp_path / "m")
        moved = Recommender.load(tmp_path / "m")
        if not type(moved).updates_history():
            with pytest.raises(NotImplementedError, match="without training"):
                moved.update_history(new)
            return
        # scored in separate calls, so that one group's batch never holds the other's users
        gaining_before = self._any_scores(moved, gaining, data)
        staying_before = self._any_scores(moved, staying, data)
        assert moved.update_history(new) is moved
        gaining_after = self._any_scores(moved, gaining, data)
        np.testing.assert_allclose(
            self._any_scores(moved, staying, data), staying_before, rtol=1e-5, atol=1e-6
        )
        moved_rows = (gaining_after != gaining_before).any(axis=1)
        if moved.history_use == "none":
            assert not moved_rows.any()
        else:
            assert moved_rows.all(), f"{(~moved_rows).sum()} users' scores ignored their new item"
        assert (moved.seen_ != new.csr()).nnz == 0
        lists = moved.recommend(
            gained["user"].to_numpy(),
            5,
            candidates=np.stack([gained["item"].to_numpy(), (gained["item"].to_numpy() + 1) % 5]).T,
        )
        assert not (lists.items == gained["item"].to_numpy()[:, None]).any()  # now seen
        if self.history_update_matches_refit:
            refit = self.make_model().fit(new, valid=split.valid)
            users = np.arange(data.n_users)
            np.testing.assert_allclose(
                self._any_scores(moved, users, data),
                self._any_scores(refit, users, data),
                rtol=1e-5,
                atol=1e-6,
            )
        with pytest.raises(ValueError, match="users"):
            moved.update_history(_training_data(make_planted_dataset(users_per_cluster=5)))

    def test_clone_is_unfitted_with_same_params(self, fitted):
        model, _ = fitted
        twin = model.clone()
        assert twin.get_params() == model.get_params()
        assert not hasattr(twin, "n_items_")

    # -------------------------------------------------------------- helpers
    @staticmethod
    def _any_scores(model: Recommender, users: np.ndarray, data: TrainingData) -> np.ndarray:
        if model.scores_full_catalog:
            return model.score(users)
        cand = np.tile(np.arange(min(data.n_items, 30)), (len(users), 1))
        return model.score(users, cand)


def _pickled_globals(path: Path) -> set[str]:
    """``module:name`` of every class or function a pickle file refers to."""
    seen: set[str] = set()

    class Recorder(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            seen.add(f"{module}:{name}")
            return super().find_class(module, name)

    with open(path, "rb") as fh:
        Recorder(fh).load()
    return seen


def _movable(reference: str) -> bool:
    """Whether a pickled reference points into a model's own files (which may move)."""
    module = reference.partition(":")[0]
    homes = (*MOVED_MODULES, *MOVED_MODULES.values())
    return any(module == home or module.startswith(f"{home}.") for home in homes)
