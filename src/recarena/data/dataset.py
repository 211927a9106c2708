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

Rows are sorted by user, then timestamp, then original file order, so a user's rows read as
their history in order. Dense ids are assigned by sorting the raw ids, so they carry no
information about time or popularity. ``user_ids[u]`` and ``item_ids[i]`` give the raw ids
back. The item table ``items`` has one row per dense item id (a ``RangeIndex``); text columns
are strings and multi-valued columns (genres, categories, tags) are lists of strings.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recarena.data.text import ItemTextTemplate
from recarena.errors import DataError

INTERACTION_COLUMNS = ("user", "item", "timestamp", "rating")


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
    ) -> Dataset:
        """Build a dataset from raw ids.

        Parameters
        ----------
        interactions
            Columns ``user`` and ``item`` (raw ids, any hashable type), optional
            ``timestamp`` (int seconds) and ``rating``. Row order is kept as the tie-breaker
            among equal timestamps.
        items
            Item attributes indexed by raw item id (text fields such as ``title``). Items
            with interactions but no row here get empty fields; rows for items that never
            occur in the interactions are dropped.
        users
            User attributes indexed by raw user id.
        source
            Named in errors.
        """
        for col in ("user", "item"):
            if col not in interactions.columns:
                raise DataError(
                    f"interactions need a {col!r} column; found {list(interactions.columns)}",
                    path=source,
                    column=col,
                )
        if len(interactions) == 0:
            raise DataError("no interactions left to build a dataset from", path=source)
        frame = pd.DataFrame(index=pd.RangeIndex(len(interactions)))
        user_codes, user_ids = _factorize_sorted(interactions["user"])
        item_codes, item_ids = _factorize_sorted(interactions["item"])
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
        order_cols = ["user", "timestamp"] if "timestamp" in frame else ["user"]
        frame = frame.sort_values(order_cols, kind="stable").reset_index(drop=True)

        item_table = _align_table(items, item_ids, "item")
        user_table = _align_table(users, user_ids, "user") if users is not None else None
        return cls(
            name=name,
            interactions=frame,
            user_ids=user_ids,
            item_ids=item_ids,
            items=item_table,
            users=user_table,
            info=dict(info or {}),
        )

    def subset(self, mask: np.ndarray, step: dict[str, Any] | None = None) -> Dataset:
        """Keep the interactions where ``mask`` is true; users and items re-densified.

        ``step`` (a description of the preprocessing step) is appended to
        ``info["preprocessing"]``.
        """
        kept = self.interactions.loc[np.asarray(mask, dtype=bool)]
        if len(kept) == 0:
            what = f" after {step['step']}" if step else ""
            raise DataError(f"no interactions left in {self.name!r}{what}; loosen the filter")
        raw = kept.copy()
        raw["user"] = self.user_ids[kept["user"].to_numpy()]
        raw["item"] = self.item_ids[kept["item"].to_numpy()]
        items = self.items.copy()
        items.index = pd.Index(self.item_ids, name="item")
        users = None
        if self.users is not None:
            users = self.users.copy()
            users.index = pd.Index(self.user_ids, name="user")
        info = dict(self.info)
        info["preprocessing"] = [*self.info.get("preprocessing", []), *([step] if step else [])]
        out = Dataset.from_raw(self.name, raw.reset_index(drop=True), items, users, info)
        return out

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
        write_json(
            folder / "dataset.json",
            {"name": self.name, "has_user_table": self.users is not None, "info": self.info},
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
        return cls(
            name=meta["name"],
            interactions=inter,
            user_ids=user_ids,
            item_ids=item_ids,
            items=items.reset_index(drop=True),
            users=users if meta.get("has_user_table") else None,
            info=meta.get("info", {}),
        )

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, users={self.n_users}, items={self.n_items}, "
            f"interactions={self.n_interactions}, timestamps={self.has_timestamps})"
        )


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
    codes, uniques = pd.factorize(values, sort=True)
    if (codes < 0).any():
        bad = int(np.flatnonzero(codes < 0)[0])
        raise DataError(f"missing id in interaction row {bad + 1}", column=str(values.name))
    return codes, np.asarray(uniques, dtype=object)


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
