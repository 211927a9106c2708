"""Splits: train / validation / test interactions and the frozen candidate lists.

Stability: **frozen** (v0.1) for `Split`, `CandidateSet` and the four splitters' signatures;
`predefined_split` (v0.2) adds a fifth, for data that comes split (a ``part`` column).

Every splitter returns a `Split` over the dataset's dense ids. Candidate lists for re-ranking
protocols are drawn once, from the split's seed, and saved with the split, so every model
(and every re-run) sees the same candidates.

Evaluation stages:

``valid``
    Models are fit on ``train`` and measured on ``valid`` (tuning, early stopping).
``test``
    Models are fit on ``train`` + ``valid`` (with the settings chosen on validation) and
    measured on ``test``. Items a user has in the fit data are excluded from their ranking.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recarena._io import atomic_path, read_json, save_npz, write_json
from recarena.data.dataset import Dataset, interactions_csr, tie_order_keys
from recarena.errors import ArtifactError, DataError

Stage = Literal["valid", "test"]


@dataclass(eq=False)
class CandidateSet:
    """Frozen candidate items per evaluated user.

    ``items[r]`` holds user ``users[r]``'s candidates in a seeded random order (held-out items
    are not first), padded with -1 where users have fewer candidates.
    """

    users: np.ndarray
    items: np.ndarray
    kind: Literal["sampled", "first_stage"]
    description: str

    @property
    def size(self) -> int:
        return int(self.items.shape[1])

    def save(self, path: str | os.PathLike[str]) -> None:
        save_npz(
            path,
            users=self.users,
            items=self.items,
            kind=np.array(self.kind),
            description=np.array(self.description),
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CandidateSet:
        with np.load(path, allow_pickle=False) as z:
            return cls(z["users"], z["items"], str(z["kind"]), str(z["description"]))


@dataclass(eq=False)
class Split:
    """Train / validation / test interactions over one dataset's dense ids."""

    method: str
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    n_users: int
    n_items: int
    params: dict[str, Any] = field(default_factory=dict)
    cold_items: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    item_pool: dict[str, np.ndarray] = field(default_factory=dict)
    candidates: dict[str, CandidateSet] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def fit_interactions(self, stage: Stage) -> pd.DataFrame:
        """What a model is fit on before it is measured on ``stage``."""
        if stage == "valid":
            return self.train
        if stage == "test":
            frame = pd.concat([self.train, self.valid], ignore_index=True)
            order = ["user", "timestamp"] if "timestamp" in frame else ["user"]
            return frame.sort_values(order, kind="stable").reset_index(drop=True)
        raise ValueError(f"unknown stage {stage!r}; expected 'valid' or 'test'")

    def held_out(self, stage: Stage) -> pd.DataFrame:
        if stage not in ("valid", "test"):
            raise ValueError(f"unknown stage {stage!r}; expected 'valid' or 'test'")
        return self.valid if stage == "valid" else self.test

    def eval_users(self, stage: Stage) -> np.ndarray:
        """Users with at least one held-out interaction in ``stage`` (sorted)."""
        return np.unique(self.held_out(stage)["user"].to_numpy()).astype(np.int64)

    def seen_csr(self, stage: Stage) -> sp.csr_matrix:
        """Items each user has in the fit data of ``stage`` (excluded from their ranking)."""
        return interactions_csr(self.fit_interactions(stage), self.n_users, self.n_items)

    def truth_csr(self, stage: Stage) -> sp.csr_matrix:
        return interactions_csr(self.held_out(stage), self.n_users, self.n_items)

    def stats(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "params": self.params,
            "train": len(self.train),
            "valid": len(self.valid),
            "test": len(self.test),
            "valid_users": int(self.valid["user"].nunique()),
            "test_users": int(self.test["user"].nunique()),
            "cold_items": len(self.cold_items),
            "candidates": {k: c.description for k, c in self.candidates.items()},
            "notes": self.notes,
        }

    # ------------------------------------------------------------------ candidates
    def draw_candidates(
        self,
        n_negatives: int,
        seed: int,
        *,
        stages: tuple[Stage, ...] = ("valid", "test"),
        all_interactions: pd.DataFrame | None = None,
        popularity_weighted: bool = False,
        name: str | None = None,
    ) -> None:
        """Draw ``n_negatives`` negatives per evaluated user, once, and keep them.

        Negatives are items the user never interacted with anywhere in the data set
        (``all_interactions``, by default train + valid + test), drawn uniformly (or in
        proportion to training popularity). Held-out items are added and the list is
        shuffled, so a position never tells which item is the positive. The sets are kept in
        ``candidates[stage]``, or ``candidates[f"{name}:{stage}"]`` when ``name`` is given.
        """
        if all_interactions is None:
            all_interactions = pd.concat([self.train, self.valid, self.test], ignore_index=True)
        known = interactions_csr(all_interactions, self.n_users, self.n_items)
        pool = self.item_pool
        weights = None
        if popularity_weighted:
            weights = np.bincount(self.train["item"].to_numpy(), minlength=self.n_items) + 1.0
        for s, stage in enumerate(stages):
            rng = np.random.default_rng([seed, 7919, s])
            users = self.eval_users(stage)
            truth = self.truth_csr(stage)
            n_pos = np.diff(truth.indptr)[users]
            width = int(n_pos.max(initial=0)) + n_negatives
            out = np.full((len(users), width), -1, dtype=np.int64)
            allowed = pool.get(stage)
            for r, u in enumerate(users):
                pos = truth.indices[truth.indptr[u] : truth.indptr[u + 1]]
                negs = _sample_negatives(
                    rng,
                    self.n_items,
                    known.indices[known.indptr[u] : known.indptr[u + 1]],
                    n_negatives,
                    allowed,
                    weights,
                )
                row = np.concatenate([pos, negs])
                rng.shuffle(row)
                out[r, : len(row)] = row
            desc = f"{n_negatives} sampled negatives + held-out"
            key = stage if name is None else f"{name}:{stage}"
            self.candidates[key] = CandidateSet(users, out, "sampled", desc)

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | os.PathLike[str]) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("train", "valid", "test"):
            with atomic_path(folder / f"{name}.parquet") as tmp:
                getattr(self, name).to_parquet(tmp, index=False)
        arrays = {"cold_items": self.cold_items}
        arrays.update({f"pool_{k}": v for k, v in self.item_pool.items()})
        save_npz(folder / "arrays.npz", **arrays)
        for key, cand in self.candidates.items():
            cand.save(folder / _candidate_file(key))
        write_json(
            folder / "split.json",
            {
                "method": self.method,
                "n_users": self.n_users,
                "n_items": self.n_items,
                "params": self.params,
                "notes": self.notes,
                "candidates": sorted(self.candidates),
                "stats": self.stats(),
            },
        )

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> Split:
        folder = Path(folder)
        if not (folder / "split.json").exists():
            raise ArtifactError(f"{folder}: no saved split here (split.json is missing)")
        meta = read_json(folder / "split.json")
        frames = {n: pd.read_parquet(folder / f"{n}.parquet") for n in ("train", "valid", "test")}
        with np.load(folder / "arrays.npz", allow_pickle=False) as z:
            cold = z["cold_items"]
            pools = {k[5:]: z[k] for k in z.files if k.startswith("pool_")}
        cands = {k: CandidateSet.load(folder / _candidate_file(k)) for k in meta["candidates"]}
        return cls(
            method=meta["method"],
            train=frames["train"],
            valid=frames["valid"],
            test=frames["test"],
            n_users=meta["n_users"],
            n_items=meta["n_items"],
            params=meta["params"],
            cold_items=cold,
            item_pool=pools,
            candidates=cands,
            notes=meta["notes"],
        )


def _candidate_file(key: str) -> str:
    return "candidates_" + key.replace(":", "__") + ".npz"


def _sample_negatives(
    rng: np.random.Generator,
    n_items: int,
    known: np.ndarray,
    n: int,
    allowed: np.ndarray | None,
    weights: np.ndarray | None,
) -> np.ndarray:
    universe = np.arange(n_items) if allowed is None else np.asarray(allowed)
    choices = np.setdiff1d(universe, known, assume_unique=False)
    if len(choices) == 0:
        return np.empty(0, dtype=np.int64)
    take = min(n, len(choices))
    p = None
    if weights is not None:
        p = weights[choices] / weights[choices].sum()
    return rng.choice(choices, size=take, replace=False, p=p).astype(np.int64)


# ---------------------------------------------------------------------- splitters
def _frame(dataset: Dataset) -> pd.DataFrame:
    return dataset.interactions


def leave_one_out_split(dataset: Dataset, *, min_history: int = 1) -> Split:
    """Each user's last interaction (by time) to test, the one before to validation.

    Users need ``min_history`` training interactions plus the two held out; users with fewer
    stay wholly in training and are not evaluated (their number is in ``notes``). Without
    timestamps, file order is used, and a note says so. Equal timestamps are in the data
    set's order: its fixed tie key, not file order, unless it was built with ``ties="file"``
    (see `recarena.data.dataset`); a note says for how many users a tie decided the held-out
    item, and by which order.

    Raises
    ------
    DataError
        When no user has enough interactions, so nobody could be evaluated.
    """
    frame = _frame(dataset)
    notes = []
    if not dataset.has_timestamps:
        notes.append("no timestamps in the data: leave-one-out used each user's file order")
    # rows are sorted by user then time: position from the end within each user
    from_end = frame.groupby("user", sort=False).cumcount(ascending=False).to_numpy()
    count = frame.groupby("user", sort=False)["item"].transform("size").to_numpy()
    eligible = count >= min_history + 2
    if not eligible.any():
        raise DataError(
            f"data set {dataset.name!r}: no user has at least {min_history + 2} interactions"
            f"{_after_preprocessing(dataset)} (the most any user has is "
            f"{int(count.max(initial=0))}), so leave-one-out has no test users: it holds out "
            f"two interactions per user and keeps min_history={min_history} for training; "
            "lower split.min_history or loosen the filters"
        )
    test_mask = eligible & (from_end == 0)
    valid_mask = eligible & (from_end == 1)
    train_mask = ~(test_mask | valid_mask)
    n_skipped = int(frame.loc[~eligible, "user"].nunique())
    if n_skipped:
        notes.append(
            f"{n_skipped} users with fewer than {min_history + 2} interactions are "
            "kept in training only and not evaluated"
        )
    if dataset.has_timestamps:
        notes.extend(_tie_notes(frame, test_mask, valid_mask, dataset.info.get("ties", "hash")))
    return Split(
        method="leave_one_out",
        train=frame.loc[train_mask].reset_index(drop=True),
        valid=frame.loc[valid_mask].reset_index(drop=True),
        test=frame.loc[test_mask].reset_index(drop=True),
        n_users=dataset.n_users,
        n_items=dataset.n_items,
        params={"min_history": min_history, "order": "time" if dataset.has_timestamps else "file"},
        notes=notes,
    )


def _after_preprocessing(dataset: Dataset) -> str:
    steps = [str(step.get("step")) for step in dataset.info.get("preprocessing", [])]
    return f" after preprocessing ({', '.join(steps)})" if steps else ""


def _tie_notes(
    frame: pd.DataFrame, test_mask: np.ndarray, valid_mask: np.ndarray, ties: str = "hash"
) -> list[str]:
    """How many users' held-out item shares its timestamp with another of their items.

    For those users the tie order, not time, decided which item was held out.
    """
    items_at_time = (
        frame.groupby(["user", "timestamp"], sort=False)["item"].transform("nunique").to_numpy()
    )
    tied = items_at_time > 1
    n_test, n_valid = int(np.count_nonzero(test_mask)), int(np.count_nonzero(valid_mask))
    tied_test = int(np.count_nonzero(test_mask & tied))
    tied_valid = int(np.count_nonzero(valid_mask & tied))
    if not (tied_test or tied_valid):
        return []
    return [
        f"ties decided the held-out item of {tied_test} of {n_test} test users and "
        f"{tied_valid} of {n_valid} validation users (it shares its timestamp with another "
        "of the user's items); "
        + (
            "equal timestamps are ordered as the rows were read (data.ties = 'file'), so "
            "the file's row order decided these users' held-out items"
            if ties == "file"
            else "equal timestamps are ordered by a fixed hash of the user and item ids, never "
            "by file order"
        )
    ]


def temporal_split(dataset: Dataset, *, valid_ratio: float = 0.1, test_ratio: float = 0.1) -> Split:
    """Global temporal split: the latest ``test_ratio`` of interactions (by time) to test.

    No training interaction is later than any validation or test interaction, so no model
    sees the future (Ji et al., TOIS 2023). Users and items first seen after the cut are
    kept: they are the cold users and cold items of this protocol.
    """
    if not dataset.has_timestamps:
        raise DataError(
            f"data set {dataset.name!r} has no timestamps, so a temporal split is impossible; "
            "use split method 'random' or 'leave_one_out' (file order)"
        )
    _check_ratios(valid_ratio, test_ratio)
    frame = _frame(dataset)
    ts = frame["timestamp"].to_numpy()
    # equal timestamps at a cut: the fixed tie key decides the side, never the row order
    order = np.lexsort((tie_order_keys(frame, dataset.user_ids, dataset.item_ids), ts))
    n = len(frame)
    n_test = int(round(n * test_ratio))
    n_valid = int(round(n * valid_ratio))
    part = np.zeros(n, dtype=np.int8)
    part[order[n - n_test :]] = 2
    part[order[n - n_test - n_valid : n - n_test]] = 1
    params = {
        "valid_ratio": valid_ratio,
        "test_ratio": test_ratio,
        "valid_from": int(ts[order[n - n_test - n_valid]]) if n_valid else None,
        "test_from": int(ts[order[n - n_test]]) if n_test else None,
    }
    split = _split_from_parts(dataset, "temporal", part, params)
    for stage, cut in (("validation", params["valid_from"]), ("test", params["test_from"])):
        if cut is None:
            continue
        at_cut = ts == cut
        sides = np.unique(part[at_cut])
        if len(sides) > 1:
            users = int(np.unique(frame["user"].to_numpy()[at_cut]).size)
            split.notes.append(
                f"ties at the {stage} cut: {int(at_cut.sum())} interactions of {users} users "
                f"share its timestamp ({cut}) and fall on both sides of it; a fixed hash of "
                "the user and item ids, never file order, decided their side"
            )
    return split


def random_split(
    dataset: Dataset, *, valid_ratio: float = 0.1, test_ratio: float = 0.1, seed: int = 0
) -> Split:
    """Per-user random split: each user's interactions are shuffled and cut by the ratios.

    Every user with at least 3 interactions keeps at least one in training and, where
    rounding allows, one in validation and one in test.
    """
    _check_ratios(valid_ratio, test_ratio)
    frame = _frame(dataset)
    rng = np.random.default_rng([seed, 104729])
    users = frame["user"].to_numpy()
    key = rng.random(len(frame))
    order = np.lexsort((key, users))
    counts = np.bincount(users, minlength=dataset.n_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(frame), dtype=np.int64)
    rank[order] = np.arange(len(frame)) - starts[users[order]]
    n_u = counts[users]
    n_test = np.where(n_u >= 3, np.maximum(1, np.round(n_u * test_ratio)), 0)
    n_valid = np.where(n_u >= 3, np.maximum(1, np.round(n_u * valid_ratio)), 0)
    if test_ratio == 0:
        n_test[:] = 0
    if valid_ratio == 0:
        n_valid[:] = 0
    part = np.zeros(len(frame), dtype=np.int8)
    part[rank < n_test] = 2
    part[(rank >= n_test) & (rank < n_test + n_valid)] = 1
    params = {"valid_ratio": valid_ratio, "test_ratio": test_ratio, "seed": seed}
    return _split_from_parts(dataset, "random", part, params)


def cold_item_split(
    dataset: Dataset,
    *,
    valid_ratio: float = 0.1,
    test_ratio: float = 0.1,
    seed: int = 0,
    rank_among: Literal["cold", "all"] = "cold",
) -> Split:
    """Hold whole items out of training: the new-item question text models answer.

    A random ``test_ratio`` of items (and ``valid_ratio`` more for validation) lose all their
    interactions from training; those interactions become the held-out set. With
    ``rank_among="cold"`` (default) each user's ranking is over the held-out new items only
    (the "new arrivals" shelf); with ``"all"`` it is over the whole catalog.
    """
    _check_ratios(valid_ratio, test_ratio)
    rng = np.random.default_rng([seed, 15485863])
    perm = rng.permutation(dataset.n_items)
    n_test = max(1, int(round(dataset.n_items * test_ratio)))
    n_valid = int(round(dataset.n_items * valid_ratio))
    test_items = np.sort(perm[:n_test])
    valid_items = np.sort(perm[n_test : n_test + n_valid])
    item_part = np.zeros(dataset.n_items, dtype=np.int8)
    item_part[test_items] = 2
    item_part[valid_items] = 1
    part = item_part[_frame(dataset)["item"].to_numpy()]
    params = {
        "valid_ratio": valid_ratio,
        "test_ratio": test_ratio,
        "seed": seed,
        "rank_among": rank_among,
    }
    split = _split_from_parts(dataset, "cold_item", part, params)
    split.cold_items = test_items.astype(np.int64)
    if rank_among == "cold":
        split.item_pool = {
            "valid": valid_items.astype(np.int64),
            "test": test_items.astype(np.int64),
        }
    return split


def predefined_split(dataset: Dataset) -> Split:
    """The train / validation / test assignment the data files come with.

    Loaders of pre-split data (MIND's train and dev folders, RecBole/UniSRec sequence files
    ``.train.inter``/``.valid.inter``/``.test.inter``) set the interactions column ``part``
    (0 train, 1 validation, 2 test); this splitter uses it as given and never re-splits.
    Notes the loader left in ``dataset.info["split_notes"]`` (how the parts were made) are
    carried into ``Split.notes``, ahead of the cold-user and cold-item counts.

    Raises
    ------
    DataError
        When the data set has no ``part`` column (its source is not pre-split), or when no
        interaction is marked as test.
    """
    frame = _frame(dataset)
    if "part" not in frame.columns:
        fmt = dataset.info.get("format")
        source = f" (format {fmt!r})" if fmt else ""
        raise DataError(
            f"data set {dataset.name!r}{source} comes without a predefined train/valid/test "
            "assignment (no 'part' column), so split method 'predefined' cannot be used; "
            "choose 'leave_one_out', 'temporal', 'random' or 'cold_item'"
        )
    part = frame["part"].to_numpy()
    if not np.any(part == 2):
        raise DataError(
            f"data set {dataset.name!r}: the predefined split has no test interactions "
            "(no row with part 2)"
        )
    params: dict[str, Any] = {"source": dataset.info.get("split_source", "the data files")}
    notes = [str(note) for note in dataset.info.get("split_notes", [])]
    split = _split_from_parts(dataset, "predefined", part, params)
    split.notes[:0] = notes
    return split


def _check_ratios(valid_ratio: float, test_ratio: float) -> None:
    if not (0 <= valid_ratio < 1 and 0 < test_ratio < 1 and valid_ratio + test_ratio < 1):
        raise DataError(
            f"split ratios valid={valid_ratio}, test={test_ratio} must be in [0, 1) with "
            "test > 0 and valid + test < 1"
        )


def _split_from_parts(dataset: Dataset, method: str, part: np.ndarray, params: dict) -> Split:
    frame = _frame(dataset)
    split = Split(
        method=method,
        train=frame.loc[part == 0].reset_index(drop=True),
        valid=frame.loc[part == 1].reset_index(drop=True),
        test=frame.loc[part == 2].reset_index(drop=True),
        n_users=dataset.n_users,
        n_items=dataset.n_items,
        params=params,
    )
    if len(split.test) == 0:
        if method == "random":
            raise DataError(
                f"data set {dataset.name!r}: no user has at least 3 interactions"
                f"{_after_preprocessing(dataset)}, so the random split has no test users: "
                "each user keeps one interaction for training and gives one to validation "
                "and one to test; loosen the filters"
            )
        raise DataError(f"the {method} split left no test interactions; check the ratios")
    train_users = set(np.unique(split.train["user"].to_numpy()).tolist())
    cold_users = len(set(np.unique(split.test["user"].to_numpy()).tolist()) - train_users)
    if cold_users:
        split.notes.append(f"{cold_users} test users have no training interactions (cold users)")
    train_items = np.unique(split.train["item"].to_numpy())
    unseen = np.setdiff1d(np.unique(split.test["item"].to_numpy()), train_items)
    if len(unseen) and method != "cold_item":
        split.notes.append(f"{len(unseen)} test items never occur in training (cold items)")
    if method != "cold_item":
        split.cold_items = unseen.astype(np.int64)
    return split


SPLITTERS = {
    "leave_one_out": leave_one_out_split,
    "temporal": temporal_split,
    "random": random_split,
    "cold_item": cold_item_split,
    "predefined": predefined_split,
}
