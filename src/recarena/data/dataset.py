"""The `Dataset`: interactions with dense ids, an item table with text, an optional user table.

Stability: **frozen** (v0.1). Column names, dtypes and methods below are relied on by every
loader, splitter and model; additions are allowed, changes are not.

Interactions are a :class:`pandas.DataFrame` with columns

``user`` (int32), ``item`` (int32)
    Dense ids in ``[0, n_users)`` and ``[0, n_items)``.
``timestamp`` (int64, seconds since the epoch), optional
    Present when the source has times; ``Dataset.has_timestamps`` says so.
``rating`` (float32), optional
    Explicit rating or play count when the source has one.

Rows are sorted by user, then timestamp, so a user's rows read as their history in order.
Equal timestamps (several ratings in one second, reviews dated by the day) are ordered by
a fixed tie key, a hash of the raw user and item ids (`tie_order_keys`), then by item,
rating and part, never by file order: the same data in any row order gives the same rows
in the same order, hence the same split, and an exact duplicate sits next to its original.
Without timestamps the file order is the only order there is and is kept. A data set built
with ``ties="file"`` (``[data] ties = "file"``, recorded as ``info["ties"]``) orders equal
timestamps by the order its loader read the rows in instead, as the stable sort of the
SASRec and BERT4Rec preprocessing does: for reproducing splits published that way. Dense ids are
assigned by sorting the raw ids, so they carry no information about time or popularity.
``user_ids[u]`` and ``item_ids[i]`` give the raw ids back. The item table ``items`` has one
row per dense item id (a ``RangeIndex``); text columns are strings and multi-valued columns
(genres, categories, tags) are lists of strings.

Additions (v0.2; optional, absent unless a loader sets them):

``part`` (int8) interactions column
    The train / validation / test assignment that pre-split data comes with: 0 train,
    1 validation, 2 test. Loaders of pre-split files (MIND, RecBole/UniSRec sequence files)
    set it; `recarena.splits.predefined_split` turns it into a `Split`.
``impressions`` (a :class:`pandas.DataFrame`, or None)
    What was shown to users, clicked or not (MIND). One row per shown item, with columns
    ``impression`` (int64, an id unique in the data set), ``user`` and ``item`` (int32,
    the same dense ids as the interactions), ``label`` (int8: 1 clicked, 0 shown but not
    clicked), ``timestamp`` (int64 seconds, optional) and ``part`` (int8, as above). Rows are
    sorted by impression, then the order the items were shown in. The users and items of the
    impressions are part of the id space (``user_ids``, ``item_ids``) even when they have no
    interaction.
``keep_items``
    `Dataset.from_raw` normally keeps only items with interactions; with ``keep_items=True``
    every item of the item table stays in the catalog (news articles that were only shown,
    never clicked). ``info["keep_items"]`` records it, and `Dataset.subset` keeps honouring it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recarena.data.text import ItemTextTemplate
from recarena.errors import DataError

INTERACTION_COLUMNS = ("user", "item", "timestamp", "rating", "part")

#: Values of the ``part`` column.
PART_TRAIN, PART_VALID, PART_TEST = 0, 1, 2

IMPRESSION_COLUMNS = ("impression", "user", "item", "label", "timestamp", "part")


def interactions_csr(
    interactions: pd.DataFrame,
    n_users: int,
    n_items: int,
    weights: Literal["binary", "rating", "count"] = "binary",
) -> sp.csr_matrix:
    """A user x item CSR matrix from an interactions frame.

    ``binary`` puts 1 where a user interacted with an item (repeats count once), ``count``
    the number of interactions, ``rating`` the last rating (needs a ``rating`` column).
    """
    users = interactions["user"].to_numpy(np.int64)
    items = interactions["item"].to_numpy(np.int64)
    if weights == "rating":
        if "rating" not in interactions:
            raise DataError("rating weights asked for, but the interactions have no ratings")
        # keep the last rating of a repeated pair: sum would add them up
        frame = pd.DataFrame({"u": users, "i": items, "r": interactions["rating"].to_numpy()})
        frame = frame.drop_duplicates(["u", "i"], keep="last")
        users, items = frame["u"].to_numpy(), frame["i"].to_numpy()
        values = frame["r"].to_numpy(np.float32)
    else:
        values = np.ones(len(users), dtype=np.float32)
    mat = sp.csr_matrix((values, (users, items)), shape=(n_users, n_items), dtype=np.float32)
    mat.sum_duplicates()
    if weights == "binary":
        mat.data[:] = 1.0
    mat.sort_indices()
    return mat


@dataclass(eq=False)
class Dataset:
    """Interaction data with dense ids, item text and optional user attributes.

    Build one with :meth:`from_raw` (loaders do this) rather than by hand.
    """

    name: str
    interactions: pd.DataFrame
    user_ids: np.ndarray
    item_ids: np.ndarray
    items: pd.DataFrame
    users: pd.DataFrame | None = None
    info: dict[str, Any] = field(default_factory=dict)
    impressions: pd.DataFrame | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_raw(
        cls,
        name: str,
        interactions: pd.DataFrame,
        items: pd.DataFrame | None = None,
        users: pd.DataFrame | None = None,
        info: dict[str, Any] | None = None,
        *,
        source: str | os.PathLike[str] | None = None,
        keep_items: bool = False,
        impressions: pd.DataFrame | None = None,
        ties: TieOrder | None = None,
    ) -> Dataset:
        """Build a dataset from raw ids.

        Parameters
        ----------
        interactions
            Columns ``user`` and ``item`` (raw ids, any hashable type), optional
            ``timestamp`` (int seconds), ``rating`` and ``part`` (0 train, 1 validation,
            2 test, for pre-split data). Equal timestamps are ordered by the tie key (see
            the module docstring), not by row order; without timestamps row order is kept.
        items
            Item attributes indexed by raw item id (text fields such as ``title``). Items
            with interactions but no row here get empty fields; rows for items that never
            occur in the interactions are dropped unless ``keep_items`` is true.
        users
            User attributes indexed by raw user id.
        source
            Named in errors.
        keep_items
            Keep every item of ``items`` in the catalog, also those without interactions
            (news articles that were shown but never clicked). Recorded as
            ``info["keep_items"]``, so `subset` keeps them too.
        impressions
            What was shown, with raw ids: columns ``impression`` (int), ``user``, ``item``,
            ``label`` (1 clicked, 0 not clicked), optional ``timestamp`` (int seconds) and
            ``part``. Its users and items join the id space. Stored, with dense ids, as
            `Dataset.impressions` (see the module docstring).
        ties
            How equal timestamps of a user are ordered: ``"hash"`` (the tie key) or
            ``"file"`` (the order of the rows given); None: ``info["ties"]`` when it is
            there, else the setting of an enclosing `tie_order` block, else ``"hash"``.
            ``"file"`` is recorded as ``info["ties"]``, so `subset` keeps it.
        """
        info = dict(info or {})
        ties = ties or info.get("ties") or _TIES.get()
        if ties not in TIE_ORDERS:
            raise ValueError(f"ties must be one of {', '.join(TIE_ORDERS)}, not {ties!r}")
        for col in ("user", "item"):
            if col not in interactions.columns:
                raise DataError(
                    f"interactions need a {col!r} column; found {list(interactions.columns)}",
                    path=source,
                    column=col,
                )
        if len(interactions) == 0:
            raise DataError("no interactions left to build a dataset from", path=source)
        imp = _check_impressions(impressions, source) if impressions is not None else None
        extra_users = [imp["user"]] if imp is not None else []
        extra_items = []
        if keep_items and items is not None and len(items):
            extra_items.append(pd.Series(items.index, dtype=items.index.dtype))
        if imp is not None:
            extra_items.append(imp["item"])
        user_codes, user_ids, user_extra = _factorize_union(interactions["user"], extra_users)
        item_codes, item_ids, item_extra = _factorize_union(interactions["item"], extra_items)

        frame = pd.DataFrame(index=pd.RangeIndex(len(interactions)))
        frame["user"] = user_codes.astype(np.int32)
        frame["item"] = item_codes.astype(np.int32)
        if "timestamp" in interactions.columns:
            ts = interactions["timestamp"]
            if ts.isna().any():
                bad = int(np.flatnonzero(ts.isna().to_numpy())[0])
                raise DataError(
                    f"missing timestamp in interaction row {bad + 1}",
                    path=source,
                    column="timestamp",
                )
            frame["timestamp"] = ts.to_numpy().astype(np.int64)
        if "rating" in interactions.columns:
            frame["rating"] = interactions["rating"].to_numpy().astype(np.float32)
        if "part" in interactions.columns:
            frame["part"] = _part_column(interactions["part"], source, "interaction")
        frame = _history_order(frame, user_ids, item_ids, ties)

        if ties == "file":
            info["ties"] = "file"
        if keep_items:
            info["keep_items"] = True
        item_table = _align_table(items, item_ids, "item")
        user_table = _align_table(users, user_ids, "user") if users is not None else None
        impression_table = None
        if imp is not None:
            impression_table = _dense_impressions(imp, user_extra[0], item_extra[-1])
        return cls(
            name=name,
            interactions=frame,
            user_ids=user_ids,
            item_ids=item_ids,
            items=item_table,
            users=user_table,
            info=info,
            impressions=impression_table,
        )

    def subset(self, mask: np.ndarray, step: dict[str, Any] | None = None) -> Dataset:
        """Keep the interactions where ``mask`` is true; users and items re-densified.

        ``step`` (a description of the preprocessing step) is appended to
        ``info["preprocessing"]``. A user (an item) leaves the data set when the step removes
        all its interactions; its impression rows go with it. Items stay when the data set
        was built with ``keep_items``.
        """
        mask = np.asarray(mask, dtype=bool)
        kept = self.interactions.loc[mask]
        if len(kept) == 0:
            what = f" after {step['step']}" if step else ""
            raise DataError(f"no interactions left in {self.name!r}{what}; loosen the filter")
        info = dict(self.info)
        info["preprocessing"] = [*self.info.get("preprocessing", []), *([step] if step else [])]
        keep_items = bool(self.info.get("keep_items", False))
        if self._same_ids_after(kept, keep_items):
            # nobody loses all their interactions: the sorted raw ids, hence the dense ids,
            # stay as they are, so rebuilding them (costly with impressions) changes nothing
            return Dataset(
                name=self.name,
                interactions=kept.reset_index(drop=True),
                user_ids=self.user_ids,
                item_ids=self.item_ids,
                items=self.items.copy(),
                users=None if self.users is None else self.users.copy(),
                info=info,
                impressions=None if self.impressions is None else self.impressions.copy(),
            )
        raw = kept.copy()
        raw["user"] = self.user_ids[kept["user"].to_numpy()]
        raw["item"] = self.item_ids[kept["item"].to_numpy()]
        items = self.items.copy()
        items.index = pd.Index(self.item_ids, name="item")
        users = None
        if self.users is not None:
            users = self.users.copy()
            users.index = pd.Index(self.user_ids, name="user")
        impressions = None
        if self.impressions is not None:
            impressions = self._impressions_after(kept, keep_items)
        out = Dataset.from_raw(
            self.name,
            raw.reset_index(drop=True),
            items,
            users,
            info,
            keep_items=keep_items,
            impressions=impressions,
        )
        return out

    def _same_ids_after(self, kept: pd.DataFrame, keep_items: bool) -> bool:
        """Whether rebuilding the data set from ``kept`` would give the same ids.

        True when no user or item loses all its interactions and every id is one a rebuild
        keeps (it has interactions, is shown in an impression, or is an item kept by
        ``keep_items``).
        """
        inter, shown = self.interactions, self.impressions

        def present(frame: pd.DataFrame | None, column: str, n: int) -> np.ndarray:
            if frame is None:
                return np.zeros(n, dtype=bool)
            return np.bincount(frame[column].to_numpy(), minlength=n)[:n] > 0

        users_before = present(inter, "user", self.n_users)
        if np.any(users_before & ~present(kept, "user", self.n_users)):
            return False
        if not np.all(users_before | present(shown, "user", self.n_users)):
            return False
        if keep_items:
            return True  # every item id is a row of the item table, which a rebuild keeps
        items_before = present(inter, "item", self.n_items)
        if np.any(items_before & ~present(kept, "item", self.n_items)):
            return False
        return bool(np.all(items_before | present(shown, "item", self.n_items)))

    def _impressions_after(self, kept: pd.DataFrame, keep_items: bool) -> pd.DataFrame:
        """Impression rows (raw ids) whose user and item survive a `subset` to ``kept``."""
        imp = self.impressions
        assert imp is not None
        inter = self.interactions
        gone_users = np.setdiff1d(inter["user"].to_numpy(), kept["user"].to_numpy())
        drop = np.isin(imp["user"].to_numpy(), gone_users)
        if not keep_items:
            gone_items = np.setdiff1d(inter["item"].to_numpy(), kept["item"].to_numpy())
            drop |= np.isin(imp["item"].to_numpy(), gone_items)
        rows = imp.loc[~drop]
        raw = rows.copy()
        raw["user"] = self.user_ids[rows["user"].to_numpy()]
        raw["item"] = self.item_ids[rows["item"].to_numpy()]
        return raw.reset_index(drop=True)

    # ------------------------------------------------------------------ sizes and views
    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_interactions(self) -> int:
        return len(self.interactions)

    @property
    def has_timestamps(self) -> bool:
        return "timestamp" in self.interactions.columns

    @property
    def has_ratings(self) -> bool:
        return "rating" in self.interactions.columns

    def csr(self, weights: Literal["binary", "rating", "count"] = "binary") -> sp.csr_matrix:
        """User x item matrix of all interactions."""
        return interactions_csr(self.interactions, self.n_users, self.n_items, weights)

    def item_text(self, template: ItemTextTemplate | str) -> list[str]:
        """One text per dense item id, rendered from the item table."""
        if isinstance(template, str):
            template = ItemTextTemplate(template)
        return template.render(self.items)

    def item_index(self, raw_ids: Sequence[Any]) -> np.ndarray:
        """Dense ids of raw item ids (raises `KeyError` naming the unknown id)."""
        return _lookup(self._item_lookup, raw_ids, "item")

    def user_index(self, raw_ids: Sequence[Any]) -> np.ndarray:
        """Dense ids of raw user ids (raises `KeyError` naming the unknown id)."""
        return _lookup(self._user_lookup, raw_ids, "user")

    @cached_property
    def _item_lookup(self) -> dict[str, int]:
        return {str(v): i for i, v in enumerate(self.item_ids)}

    @cached_property
    def _user_lookup(self) -> dict[str, int]:
        return {str(v): i for i, v in enumerate(self.user_ids)}

    def stats(self) -> dict[str, Any]:
        """Sizes, density, text coverage and time range, as shown by ``recarena data info``."""
        per_user = np.bincount(self.interactions["user"].to_numpy(), minlength=self.n_users)
        per_item = np.bincount(self.interactions["item"].to_numpy(), minlength=self.n_items)
        out: dict[str, Any] = {
            "users": self.n_users,
            "items": self.n_items,
            "interactions": self.n_interactions,
            "density": self.n_interactions / max(1, self.n_users * self.n_items),
            "interactions_per_user_median": float(np.median(per_user)),
            "interactions_per_user_min": int(per_user.min()),
            "interactions_per_item_median": float(np.median(per_item)),
            "has_timestamps": self.has_timestamps,
            "has_ratings": self.has_ratings,
            "item_fields": list(self.items.columns),
        }
        text_cols = [
            c for c in self.items.columns if not pd.api.types.is_numeric_dtype(self.items[c])
        ]
        if text_cols:
            out["text_coverage"] = {
                c: float(self.items[c].map(lambda v: _field_present(v)).mean()) for c in text_cols
            }
        if self.has_timestamps:
            ts = self.interactions["timestamp"]
            out["time_min"] = pd.to_datetime(int(ts.min()), unit="s").isoformat()
            out["time_max"] = pd.to_datetime(int(ts.max()), unit="s").isoformat()
        if self.has_ratings:
            out["rating_min"] = float(self.interactions["rating"].min())
            out["rating_max"] = float(self.interactions["rating"].max())
        without = int(np.count_nonzero(per_item == 0))
        if without:
            out["items_without_interactions"] = without
        if "part" in self.interactions.columns:
            counts = np.bincount(self.interactions["part"].to_numpy(np.int64), minlength=3)
            out["interactions_by_part"] = {
                "train": int(counts[PART_TRAIN]),
                "valid": int(counts[PART_VALID]),
                "test": int(counts[PART_TEST]),
            }
        if self.impressions is not None:
            out.update(self._impression_stats())
        return out

    def _impression_stats(self) -> dict[str, Any]:
        imp = self.impressions
        assert imp is not None
        out: dict[str, Any] = {
            "impressions": int(imp["impression"].nunique()),
            "impression_rows": len(imp),
            "impression_clicks": int(imp["label"].sum()),
        }
        if "part" in imp.columns and "part" in self.interactions.columns:
            inter = self.interactions
            fit_items = np.unique(inter.loc[inter["part"] != PART_TEST, "item"].to_numpy())
            shown = np.unique(imp.loc[imp["part"] == PART_TEST, "item"].to_numpy())
            if len(shown):
                unseen = np.setdiff1d(shown, fit_items)
                out["test_impression_items"] = len(shown)
                out["test_impression_items_unseen_in_training"] = len(unseen)
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | os.PathLike[str]) -> None:
        """Write the dataset as Parquet files plus JSON (atomically, file by file)."""
        from recarena._io import atomic_path, write_json

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / "interactions.parquet") as tmp:
            self.interactions.to_parquet(tmp, index=False)
        with atomic_path(folder / "items.parquet") as tmp:
            frame = self.items.copy()
            frame.insert(0, "raw_item_id", _raw_id_column(self.item_ids))
            frame.to_parquet(tmp, index=False)
        with atomic_path(folder / "users.parquet") as tmp:
            frame = (
                self.users.copy()
                if self.users is not None
                else pd.DataFrame(index=range(self.n_users))
            )
            frame.insert(0, "raw_user_id", _raw_id_column(self.user_ids))
            frame.to_parquet(tmp, index=False)
        if self.impressions is not None:
            with atomic_path(folder / "impressions.parquet") as tmp:
                self.impressions.to_parquet(tmp, index=False)
        write_json(
            folder / "dataset.json",
            {
                "name": self.name,
                "has_user_table": self.users is not None,
                "has_impressions": self.impressions is not None,
                "info": self.info,
            },
        )

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> Dataset:
        from recarena._io import read_json

        folder = Path(folder)
        meta = read_json(folder / "dataset.json")
        inter = pd.read_parquet(folder / "interactions.parquet")
        items = pd.read_parquet(folder / "items.parquet")
        users = pd.read_parquet(folder / "users.parquet")
        item_ids = _raw_ids_from_column(items.pop("raw_item_id"))
        user_ids = _raw_ids_from_column(users.pop("raw_user_id"))
        for col in items.columns:
            # Parquet gives list fields back as arrays; any row may be the first non-missing one
            if items[col].map(lambda v: isinstance(v, np.ndarray)).any():
                items[col] = items[col].map(lambda v: list(v) if isinstance(v, np.ndarray) else [])
        impressions = None
        if meta.get("has_impressions"):
            impressions = pd.read_parquet(folder / "impressions.parquet")
        return cls(
            name=meta["name"],
            interactions=inter,
            user_ids=user_ids,
            item_ids=item_ids,
            items=items.reset_index(drop=True),
            users=users if meta.get("has_user_table") else None,
            info=meta.get("info", {}),
            impressions=impressions,
        )

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, users={self.n_users}, items={self.n_items}, "
            f"interactions={self.n_interactions}, timestamps={self.has_timestamps})"
        )


#: how equal timestamps of a user are ordered (`Dataset.from_raw`'s ``ties``)
TieOrder = Literal["hash", "file"]
TIE_ORDERS: tuple[str, ...] = ("hash", "file")
_TIES: ContextVar[str] = ContextVar("recarena_dataset_ties", default="hash")


@contextmanager
def tie_order(ties: TieOrder) -> Iterator[None]:
    """Within the block, `Dataset.from_raw` orders equal timestamps by ``ties`` unless told
    otherwise: how `recarena.data.load_dataset` hands ``[data] ties`` to every loader."""
    if ties not in TIE_ORDERS:
        raise ValueError(f"ties must be one of {', '.join(TIE_ORDERS)}, not {ties!r}")
    token = _TIES.set(ties)
    try:
        yield
    finally:
        _TIES.reset(token)


def tie_order_keys(
    interactions: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray
) -> np.ndarray:
    """A fixed pseudo-random key (uint64) per interaction, from its raw user and item ids.

    Equal timestamps are ordered by this key. It depends only on the text of the raw ids
    (``22`` and ``"22"`` hash alike), never on row order or on which other users and items
    the data holds, so filtering other users out (a k-core) or shuffling the file leaves
    it unchanged; and being a hash, it favours no item (ordering ties by item id would
    always hold out the highest id). The ids' text is hashed with pandas' fixed-key
    SipHash (`pandas.util.hash_array`), the pair is mixed with SplitMix64's finaliser.
    """
    user_hash = _id_hashes(user_ids)[interactions["user"].to_numpy()]
    item_hash = _id_hashes(item_ids)[interactions["item"].to_numpy()]
    return _mix64(user_hash ^ _mix64(item_hash + np.uint64(0x9E3779B97F4A7C15)))


def _id_hashes(ids: np.ndarray) -> np.ndarray:
    texts = np.array([str(v) for v in ids], dtype=object)
    return pd.util.hash_array(texts, categorize=False).astype(np.uint64)


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: every input bit moves every output bit (wraps on purpose)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _history_order(
    frame: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray, ties: str = "hash"
) -> pd.DataFrame:
    """Rows by user, then time, then the tie key (or, with ``ties="file"``, the row
    order), item, rating and part (module docstring)."""
    if "timestamp" not in frame.columns:
        return frame.sort_values(["user"], kind="stable").reset_index(drop=True)
    keys = [frame["user"].to_numpy(), frame["timestamp"].to_numpy()]
    if ties == "file":
        keys.append(np.arange(len(frame)))
    else:
        keys.append(tie_order_keys(frame, user_ids, item_ids))
    keys.append(frame["item"].to_numpy())
    keys.extend(frame[c].to_numpy() for c in ("rating", "part") if c in frame.columns)
    order = np.lexsort(keys[::-1])  # lexsort sorts by its last key first
    return frame.iloc[order].reset_index(drop=True)


def _field_present(value: object) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return False
    if isinstance(value, float):
        return not np.isnan(value)
    if isinstance(value, (list, tuple, np.ndarray)):
        return len(value) > 0
    return str(value).strip() != ""


def _raw_id_column(ids: np.ndarray) -> np.ndarray:
    """Raw ids as Parquet stores them: int64 when every id is an integer, else strings.

    Keeping integer ids as integers lets `Dataset.load` give back ids of the type the loader
    read (MovieLens ids are ints), not their text.
    """
    if len(ids) and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in ids):
        return np.asarray(ids, dtype=np.int64)
    return np.array([str(v) for v in ids], dtype=object)


def _raw_ids_from_column(column: pd.Series) -> np.ndarray:
    if pd.api.types.is_integer_dtype(column.dtype):
        return np.array([int(v) for v in column], dtype=object)
    return column.to_numpy(object)


def _factorize_sorted(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Dense codes with ids sorted (numbers numerically, strings lexically)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return _factorize_categorical(values)
    codes, uniques = pd.factorize(values, sort=True)
    if (codes < 0).any():
        bad = int(np.flatnonzero(codes < 0)[0])
        raise DataError(f"missing id in interaction row {bad + 1}", column=str(values.name))
    return codes, np.asarray(uniques, dtype=object)


def _factorize_union(
    primary: pd.Series, extras: Sequence[pd.Series]
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Dense codes over the ids of ``primary`` and ``extras`` together, ids sorted.

    Returns the codes of ``primary``, the sorted distinct ids, and the codes of each extra.
    Without extras this is `_factorize_sorted`. Extra ids are brought to the type of the
    primary ids first (an item table may hold "7" where the interactions hold 7).
    """
    if not extras:
        codes, uniques = _factorize_sorted(primary)
        return codes, uniques, []
    parts = [primary.reset_index(drop=True)]
    for extra in extras:
        extra = extra.reset_index(drop=True)
        if extra.isna().any():
            bad = int(np.flatnonzero(extra.isna().to_numpy())[0])
            raise DataError(f"missing id in row {bad + 1} of the impressions or item table")
        parts.append(_like(extra, primary))
    combined = pd.concat(parts, ignore_index=True)
    try:
        codes, uniques = _factorize_sorted(combined)
    except TypeError:  # ids of several types that do not sort together: sort their text
        codes, uniques = _factorize_sorted(combined.map(str).astype(object))
    bounds = np.cumsum([0, *(len(p) for p in parts)])
    pieces = [codes[bounds[k] : bounds[k + 1]] for k in range(len(parts))]
    return pieces[0], uniques, pieces[1:]


def _like(values: pd.Series, reference: pd.Series) -> pd.Series:
    """``values`` as integers when ``reference`` holds integers and they all are; as text when
    ``reference`` holds text."""
    if pd.api.types.is_integer_dtype(reference.dtype) and not pd.api.types.is_integer_dtype(
        values.dtype
    ):
        numbers = pd.to_numeric(values, errors="coerce")
        if not numbers.isna().any() and np.all(numbers == np.floor(numbers)):
            return numbers.astype(np.int64)
        return values
    if not pd.api.types.is_numeric_dtype(reference.dtype) and pd.api.types.is_numeric_dtype(
        values.dtype
    ):
        return values.map(str).astype(object)
    return values


def _part_column(values: pd.Series, source: object, what: str) -> np.ndarray:
    """The ``part`` column as int8, every value 0, 1 or 2."""
    numbers = pd.to_numeric(values, errors="coerce")
    bad = (numbers.isna() | ~numbers.isin([PART_TRAIN, PART_VALID, PART_TEST])).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{what} row {row + 1}: part must be 0 (train), 1 (validation) or 2 (test), "
            f"found {_plain(values.iloc[row])!r}",
            path=source,  # type: ignore[arg-type]
            column="part",
        )
    return numbers.to_numpy().astype(np.int8)


def _plain(value: object) -> object:
    """A NumPy scalar as the Python value it holds (for messages)."""
    return value.item() if isinstance(value, np.generic) else value


def _check_impressions(impressions: pd.DataFrame, source: object) -> pd.DataFrame:
    missing = [c for c in ("impression", "user", "item", "label") if c not in impressions]
    if missing:
        raise DataError(
            f"impressions need columns {missing}; found {list(impressions.columns)}",
            path=source,  # type: ignore[arg-type]
        )
    labels = pd.to_numeric(impressions["label"], errors="coerce")
    bad = (labels.isna() | ~labels.isin([0, 1])).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"impression row {row + 1}: label must be 1 (clicked) or 0 (shown, not clicked), "
            f"found {_plain(impressions['label'].iloc[row])!r}",
            path=source,  # type: ignore[arg-type]
            column="label",
        )
    return impressions.reset_index(drop=True)


def _dense_impressions(imp: pd.DataFrame, users: np.ndarray, items: np.ndarray) -> pd.DataFrame:
    """The impressions table with dense ids, sorted by impression then shown order."""
    out = pd.DataFrame(
        {
            "impression": imp["impression"].to_numpy().astype(np.int64),
            "user": users.astype(np.int32),
            "item": items.astype(np.int32),
            "label": pd.to_numeric(imp["label"]).to_numpy().astype(np.int8),
        }
    )
    if "timestamp" in imp.columns:
        out["timestamp"] = imp["timestamp"].to_numpy().astype(np.int64)
    if "part" in imp.columns:
        out["part"] = _part_column(imp["part"], None, "impression")
    return out.sort_values("impression", kind="stable").reset_index(drop=True)


def _factorize_categorical(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """`_factorize_sorted` of a categorical column: by the ids' own order, not the categories'.

    ``pd.factorize(..., sort=True)`` orders a categorical by its categories, which loaders
    that build categories on the fly list in order of first appearance; ids must not carry
    that order. Unused categories are dropped.
    """
    raw_codes = values.cat.codes.to_numpy().astype(np.int64)
    if (raw_codes < 0).any():
        bad = int(np.flatnonzero(raw_codes < 0)[0])
        raise DataError(f"missing id in interaction row {bad + 1}", column=str(values.name))
    categories = values.cat.categories
    used = np.unique(raw_codes)
    used = used[categories[used].argsort()]
    lookup = np.full(len(categories), -1, dtype=np.int64)
    lookup[used] = np.arange(len(used))
    return lookup[raw_codes], np.asarray(categories[used], dtype=object)


def _align_table(table: pd.DataFrame | None, ids: np.ndarray, what: str) -> pd.DataFrame:
    """One row per dense id, in dense-id order; ids missing from ``table`` get empty rows.

    Rows are matched on the string form of the id, since one file may hold ids as numbers
    and another as text.
    """
    if table is None or len(table.columns) == 0:
        return pd.DataFrame(index=pd.RangeIndex(len(ids)))
    table = table.set_axis(table.index.map(str))
    table = table[~table.index.duplicated(keep="first")]
    return table.reindex([str(v) for v in ids]).reset_index(drop=True)


def _lookup(table: dict[str, int], raw_ids: Sequence[Any], what: str) -> np.ndarray:
    out = np.empty(len(raw_ids), dtype=np.int64)
    for n, raw in enumerate(raw_ids):
        try:
            out[n] = table[str(raw)]
        except KeyError:
            raise KeyError(f"unknown {what} id {raw!r}") from None
    return out
