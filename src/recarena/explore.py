"""Looking inside a finished run: a user's recommendations with item titles."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recarena._artifacts import load_npz_artifact, read_json_artifact, read_parquet_artifact
from recarena.errors import ArtifactError, RecArenaError
from recarena.ranking import RankedLists


def _item_label(items: pd.DataFrame, template: str | None, item: int) -> str:
    row = items.iloc[item]
    if "title" in items.columns and isinstance(row["title"], str) and row["title"]:
        return row["title"]
    for col in items.columns:
        if isinstance(row[col], str) and row[col]:
            return row[col]
    return ""


def recommendations_for_user(
    run_dir: str | os.PathLike[str], model: str, user: str, *, k: int = 10, protocol: str = "full"
) -> dict[str, Any]:
    """Top-``k`` saved recommendations of ``model`` for the raw user id ``user``.

    Returns a dict with ``recommendations`` (rank, raw item id, title, score, whether the item
    is one of the user's held-out test items) and the user's most recent ``history`` titles.
    Only users evaluated in the run have saved lists.
    """
    run_dir = Path(run_dir)
    ds_dir = run_dir / "dataset"
    if not (ds_dir / "dataset.json").exists():
        raise ArtifactError(f"{run_dir}: not a run directory (dataset/ is missing)")
    mdir = run_dir / "models" / model
    if not mdir.exists():
        models = (
            sorted(p.name for p in (run_dir / "models").iterdir())
            if (run_dir / "models").exists()
            else []
        )
        raise RecArenaError(f"{run_dir}: no model {model!r}; models in this run: {models}")
    lists_path = mdir / protocol / "lists.npz"
    if not lists_path.exists():
        protos = sorted(p.name for p in mdir.iterdir() if (p / "lists.npz").exists())
        raise RecArenaError(
            f"model {model!r} has no lists for protocol {protocol!r}; it has {protos}"
        )
    # a damaged file raises DamagedArtifactError naming it
    items = read_parquet_artifact(ds_dir / "items.parquet")
    users = read_parquet_artifact(ds_dir / "users.parquet", columns=["raw_user_id"])
    lookup = {str(v): i for i, v in enumerate(users["raw_user_id"])}
    if str(user) not in lookup:
        raise RecArenaError(f"user {user!r} is not in this run's data set")
    uid = lookup[str(user)]
    z = load_npz_artifact(lists_path)
    lists = RankedLists(z["users"], z["items"], z["scores"])
    try:
        ids, scores = lists.for_user(uid)
    except KeyError:
        raise RecArenaError(
            f"user {user!r} has no saved list: only the {len(lists.users)} evaluated test users have one"
        ) from None
    state = read_json_artifact(run_dir / "run.json") if (run_dir / "run.json").exists() else {}
    template = state.get("item_text_template")
    test = read_parquet_artifact(run_dir / "split" / "test.parquet")
    held = set(test.loc[test["user"] == uid, "item"].tolist())
    raw_items = items["raw_item_id"].tolist()
    table = items.drop(columns=["raw_item_id"])
    recs = [
        {
            "rank": r + 1,
            "item": raw_items[i],
            "text": _item_label(table, template, i),
            "score": float(s),
            "held_out": int(i) in held,
        }
        for r, (i, s) in enumerate(zip(ids[:k].tolist(), scores[:k].tolist(), strict=True))
    ]
    history_frame = pd.concat(
        [read_parquet_artifact(run_dir / "split" / f"{n}.parquet") for n in ("train", "valid")]
    )
    hist = history_frame.loc[history_frame["user"] == uid]
    if "timestamp" in hist:
        hist = hist.sort_values("timestamp", kind="stable")
    history = [_item_label(table, template, int(i)) for i in hist["item"].to_numpy()[-5:]]
    return {
        "user": user,
        "model": model,
        "protocol": protocol,
        "recommendations": recs,
        "history": history,
        "n_items_in_list": int(np.sum(ids >= 0)),
    }
