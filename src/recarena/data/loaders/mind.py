"""Loader for MIND, the Microsoft News Dataset (MINDsmall and MINDlarge releases).

A release is a pair (or triple) of folders, ``MINDsmall_train/`` and ``MINDsmall_dev/``
(``MINDlarge_test/`` too), each holding two tab-separated files without a header:

``behaviors.tsv``
    One impression per line: impression id, user id, time (``11/15/2019 8:55:22 AM``, read
    as UTC), the user's click history before it (space-separated news ids, possibly
    empty), and the impression itself: the news shown with their click labels,
    ``N12345-1 N23456-0 ...``. The official test set (MINDlarge_test) has no labels
    (``N12345 N23456``): it is scored by the MIND leaderboard, so it is skipped here with a
    note in ``info``; a labelled file with one token lacking its ``-label`` is an error
    naming the line.
``news.tsv``
    One article per line: news id, category, subcategory, title, abstract, URL, title
    entities and abstract entities (JSON).

How the release becomes a `Dataset`:

- Items are *all* articles of the ``news.tsv`` files (built with ``keep_items=True``): most
  articles shown in the test impressions were published after training and have no click
  in it, the extreme cold-item case. Text fields: ``title``, ``abstract``, ``category``,
  ``subcategory``. ``info["test_impression_items_unseen_in_training"]`` counts the
  distinct items shown in test impressions that never occur in the training interactions.
- Interactions (implicit clicks) are the clicked impression items, at the impression's
  time, plus the history clicks of every labelled behaviours file (de-duplicated per
  user). History clicks have no time in MIND: a user's k-th of n distinct history clicks
  (in the order listed, which is time order) gets ``t_first - (n - k)`` seconds, with
  ``t_first`` the user's first impression, so every history click comes just before the
  user's first impression and in its own order.
- The ``part`` column follows the release: the train folder is training (part 0) except its
  last ``valid_days`` days of impressions, which are validation (part 1); the dev folder is
  the test (part 2), as the MIND papers report dev results. With a labelled test folder,
  dev is validation and test is test. History clicks are always training. Use split method
  ``"predefined"``.
- `Dataset.impressions` holds every shown item of every labelled impression with its
  label, time and part. ``impression`` ids are unique in the data set: the file's
  impression id plus an offset per file (``info["impression_files"]`` lists the offsets).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recarena.config import DataConfig
from recarena.data.dataset import PART_TEST, PART_TRAIN, PART_VALID, Dataset
from recarena.data.loaders._reading import Column, DelimitedFile, build_info
from recarena.data.loaders._streaming import loader_options, warn_unused
from recarena.errors import DataError

log = logging.getLogger(__name__)

#: The item text an experiment uses unless it sets ``data.text_template``.
MIND_TEXT_TEMPLATE = "Title: {title}. Category: {category}, {subcategory}. Abstract: {abstract}."
BEHAVIORS_EXAMPLE = "1\tU13740\t11/11/2019 9:05:58 AM\tN55189 N42782\tN55689-1 N35729-0"
NEWS_EXAMPLE = (
    "N55528\tlifestyle\tlifestyleroyals\tThe Brands Queen Elizabeth...\tShop the notebooks..."
    "\thttps://assets.msn.com/...\t[]\t[]"
)
_TIME_FORMAT = "%m/%d/%Y %I:%M:%S %p"
_ROLE_SUFFIXES = {"train": ("train",), "dev": ("dev", "valid", "val"), "test": ("test",)}
_DAY_S = 86_400


@dataclass
class Behaviors:
    """One ``behaviors.tsv``, parsed.

    ``rows`` has one row per impression (``impression`` raw id, ``user``, ``time`` in
    seconds); ``shown`` one row per shown item (``row`` into ``rows``, ``item``, ``label``,
    -1 when the file has no labels); ``history`` one row per history click of each distinct
    (user, history) pair (``row`` of its first impression, ``item``, ``position``).
    """

    path: Path
    rows: pd.DataFrame
    shown: pd.DataFrame
    history: pd.DataFrame
    labelled: bool
    sha256: str


def read_behaviors(path: str | os.PathLike[str]) -> Behaviors:
    """Parse a MIND ``behaviors.tsv`` (see the module docstring)."""
    path = Path(path).expanduser()
    source = DelimitedFile.open(
        path, separator="\t", encoding="utf-8", has_header=False, quoted=False
    )
    frame = source.read(
        [
            Column("impression", "int", "impression id"),
            Column("user", "str", "user id"),
            Column("time", "str", "time"),
            Column("history", "str", "click history", required=False),
            Column("impressions", "str", "impression list"),
        ],
        format_label="MIND behaviors.tsv",
        example=BEHAVIORS_EXAMPLE,
    )
    times = pd.to_datetime(frame["time"].str.strip(), format=_TIME_FORMAT, errors="coerce")
    bad = times.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"cannot read the time {frame['time'].iloc[row]!r}; MIND times read "
            "'11/15/2019 8:55:22 AM'",
            path=path,
            line=source.line_of_record(row),
            column="time",
        )
    duplicated = frame["impression"].duplicated().to_numpy()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated)[0])
        raise DataError(
            f"impression id {frame['impression'].iloc[row]} appears twice",
            path=path,
            line=source.line_of_record(row),
            column="impression",
        )
    seconds = (times - pd.Timestamp(0)) // pd.Timedelta(1, "s")
    rows = pd.DataFrame(
        {
            "impression": frame["impression"].to_numpy(np.int64),
            "user": frame["user"].str.strip().to_numpy(object),
            "time": seconds.to_numpy(np.int64),
        }
    )
    shown, labelled = _shown_items(frame["impressions"], path, source)
    # a user's history is repeated on each of their impressions: split each distinct one once
    text = frame["history"].fillna("").str.strip()
    distinct = ~pd.DataFrame({"user": rows["user"], "text": text.to_numpy(object)}).duplicated()
    history = _tokens(text.loc[distinct.to_numpy() & (text != "").to_numpy()])
    history = pd.DataFrame(
        {
            "row": history.index.to_numpy(np.int64),
            "item": history.to_numpy(object),
            "position": history.groupby(level=0).cumcount().to_numpy(np.int64),
        }
    )
    return Behaviors(path, rows, shown, history, labelled, source.sha256)


def read_news(path: str | os.PathLike[str]) -> tuple[pd.DataFrame, str]:
    """Parse a MIND ``news.tsv``: the item table (indexed by news id) and the file's sha256."""
    path = Path(path).expanduser()
    source = DelimitedFile.open(
        path, separator="\t", encoding="utf-8", has_header=False, quoted=False
    )
    frame = source.read(
        [
            Column("item", "str", "news id"),
            Column("category", "str", "category", required=False),
            Column("subcategory", "str", "subcategory", required=False),
            Column("title", "str", "title", required=False),
            Column("abstract", "str", "abstract", required=False),
            None,  # URL
            None,  # title entities
            None,  # abstract entities
        ],
        format_label="MIND news.tsv",
        example=NEWS_EXAMPLE,
    )
    table = pd.DataFrame(
        {
            field: frame[field].map(_clean).to_numpy(object)
            for field in ("title", "abstract", "category", "subcategory")
        },
        index=pd.Index(frame["item"].str.strip().to_numpy(object), name="item"),
    )
    return table[~table.index.duplicated(keep="first")], source.sha256


def load_mind(
    path: str | os.PathLike[str], *, name: str | None = None, valid_days: float = 1.0
) -> Dataset:
    """Load a MIND release: the train and dev folders (and a labelled test folder if any).

    Parameters
    ----------
    path
        The folder holding ``MINDsmall_train/`` and ``MINDsmall_dev/`` (any names ending in
        ``train`` and ``dev``, ``valid`` or ``test``), each with ``behaviors.tsv`` and
        ``news.tsv``. A relative path is relative to the current directory.
    name
        The data set's name (default: the release, e.g. ``MINDsmall``).
    valid_days
        The last days of the train folder's impressions that become validation (part 1);
        0 keeps them all in training (models are then not tuned). Ignored when a labelled
        test folder makes dev the validation.

    Returns
    -------
    Dataset
        Clicks as interactions with ``timestamp`` and ``part``, every article as an item,
        and `Dataset.impressions`; see the module docstring.
    """
    folders, release = _release_folders(Path(path).expanduser())
    files: dict[str, str] = {}
    behaviors: dict[str, Behaviors] = {}
    news_tables = []
    skipped: list[str] = []
    for role, folder in folders.items():
        for file_name in ("behaviors.tsv", "news.tsv"):
            if not (folder / file_name).is_file():
                raise DataError(
                    f"missing {file_name}: a MIND folder holds behaviors.tsv and news.tsv",
                    path=folder,
                )
        table, digest = read_news(folder / "news.tsv")
        news_tables.append(table)
        files[f"{folder.name}/news.tsv"] = digest
        parsed = read_behaviors(folder / "behaviors.tsv")
        files[f"{folder.name}/behaviors.tsv"] = parsed.sha256
        if parsed.labelled:
            behaviors[role] = parsed
        else:
            skipped.append(
                f"{folder.name}/behaviors.tsv has no click labels (the official test set is "
                "scored by the MIND leaderboard) and is not used; its articles are items"
            )
            log.info("%s", skipped[-1])
    if "train" not in behaviors or ("dev" not in behaviors and "test" not in behaviors):
        raise DataError(
            "MIND needs labelled train and dev behaviours (folders such as MINDsmall_train/ "
            f"and MINDsmall_dev/); labelled here: {sorted(behaviors) or 'none'}",
            path=path,
        )

    parts = _parts(behaviors, valid_days)
    notes = _split_notes(behaviors, parts, valid_days)
    impressions, clicks, first_seen, offsets = _impressions_and_clicks(behaviors, parts)
    history = _history_clicks(behaviors, first_seen)
    interactions = pd.concat([history, clicks], ignore_index=True)
    items = pd.concat(news_tables)
    items = items[~items.index.duplicated(keep="first")]

    info = build_info(
        format_name="mind",
        source=Path(path).expanduser().resolve(),
        files=files,
        default_text_template=MIND_TEXT_TEMPLATE,
        release=release,
        split_source="MIND release folders",
        split_notes=[*notes, *skipped],
        impression_files=offsets,
        history_timestamps=(
            "MIND history clicks have no time: a user's k-th of n history clicks is given "
            "t_first - (n - k) seconds, t_first the user's first impression time"
        ),
        history_clicks=len(history),
        impression_clicks=len(clicks),
    )
    if skipped:
        info["unlabelled_files"] = skipped
    dataset = Dataset.from_raw(
        name or release,
        interactions,
        items,
        None,
        info,
        source=path,
        keep_items=True,
        impressions=impressions,
    )
    _record_cold_items(dataset)
    log.info("%s: %r", dataset.name, dataset)
    return dataset


def mind_format(path: Path, config: DataConfig) -> Dataset:
    """The ``format = "mind"`` loader: ``data.path`` is the release folder."""
    warn_unused(
        config,
        "mind",
        (
            "items_path", "users_path", "columns", "item_columns", "user_columns",
            "list_columns", "list_separator", "separator", "encoding", "timestamp_unit",
        ),
    )  # fmt: skip
    return load_mind(path, **loader_options(config, "mind", ("valid_days",)))


# ---------------------------------------------------------------------------- parsing
def _tokens(values: pd.Series) -> pd.Series:
    """Space-separated tokens, one per row, indexed by the row they come from."""
    tokens = values.str.split().explode()
    return tokens[tokens.notna()].astype(object)


def _shown_items(values: pd.Series, path: Path, source: DelimitedFile) -> tuple[pd.DataFrame, bool]:
    """The impression lists as rows (row, item, label); whether the file has labels."""
    tokens = _tokens(values.fillna(""))
    rows = tokens.index.to_numpy(np.int64)
    # split the distinct tokens ("N123-1"), a few per article, not every shown item
    codes, uniques = pd.factorize(tokens)
    del tokens
    pieces = pd.Series(uniques, dtype=object).str.rpartition("-")
    token = pd.Series(uniques, dtype=object).to_numpy()[codes]
    item = pieces[0].to_numpy(object)[codes]
    label = pieces[2].to_numpy(object)[codes]
    has_label = (pieces[1] == "-").to_numpy()[codes]
    if not has_label.any():
        return pd.DataFrame({"row": rows, "item": token, "label": -1}), False
    if not has_label.all():
        at = int(np.flatnonzero(~has_label)[0])
        raise DataError(
            f"impression item {token[at]!r} has no click label: the other impressions "
            "of this file read 'N12345-1' (clicked) or 'N12345-0' (not clicked)",
            path=path,
            line=source.line_of_record(int(rows[at])),
            column="impressions",
        )
    valid = np.isin(label, ["0", "1"])
    if not valid.all():
        at = int(np.flatnonzero(~valid)[0])
        raise DataError(
            f"impression item {token[at]!r}: the label after '-' must be 1 (clicked) or "
            "0 (not clicked)",
            path=path,
            line=source.line_of_record(int(rows[at])),
            column="impressions",
        )
    frame = pd.DataFrame({"row": rows, "item": item, "label": (label == "1").astype(np.int8)})
    return frame, True


def _clean(value: object) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = " ".join(str(value).split())
    return text or None


# ---------------------------------------------------------------------------- assembly
def _release_folders(path: Path) -> tuple[dict[str, Path], str]:
    """The train / dev / test folders under ``path`` and the release name ("MINDsmall")."""
    if not path.is_dir():
        raise DataError("folder not found; expected a MIND release folder", path=path)
    if (path / "behaviors.tsv").is_file():
        raise DataError(
            "this is one MIND folder; point data.path at the folder that holds the release's "
            "train and dev folders (e.g. the parent of MINDsmall_train/ and MINDsmall_dev/)",
            path=path,
        )
    found: dict[str, dict[str, Path]] = {}
    for sub in sorted(p for p in path.iterdir() if p.is_dir()):
        if not (sub / "behaviors.tsv").is_file():
            continue
        lowered = sub.name.lower()
        for role, suffixes in _ROLE_SUFFIXES.items():
            suffix = next((s for s in suffixes if lowered.endswith(s)), None)
            if suffix is not None:
                prefix = sub.name[: len(sub.name) - len(suffix)].rstrip("_-") or "MIND"
                found.setdefault(prefix, {})[role] = sub
                break
    complete = {p: roles for p, roles in found.items() if "train" in roles}
    if not complete:
        subs = sorted(p.name for p in path.iterdir())
        raise DataError(
            "no MIND release here: expected folders such as MINDsmall_train/ and "
            f"MINDsmall_dev/, each with behaviors.tsv and news.tsv; found {subs}",
            path=path,
        )
    if len(complete) > 1:
        raise DataError(
            f"several MIND releases here ({sorted(complete)}); point data.path at a folder "
            "holding one release",
            path=path,
        )
    release, roles = next(iter(complete.items()))
    order = [role for role in ("train", "dev", "test") if role in roles]
    return {role: roles[role] for role in order}, release


def _parts(behaviors: dict[str, Behaviors], valid_days: float) -> dict[str, np.ndarray]:
    """The part of every impression, per role."""
    out: dict[str, np.ndarray] = {}
    has_test = "test" in behaviors
    for role, parsed in behaviors.items():
        n = len(parsed.rows)
        if role == "train":
            part = np.full(n, PART_TRAIN, dtype=np.int8)
            if not has_test and valid_days > 0 and "dev" in behaviors:
                times = parsed.rows["time"].to_numpy()
                cut = int(times.max()) - int(round(valid_days * _DAY_S))
                part[times > cut] = PART_VALID
        elif role == "dev":
            part = np.full(n, PART_VALID if has_test else PART_TEST, dtype=np.int8)
        else:
            part = np.full(n, PART_TEST, dtype=np.int8)
        out[role] = part
    return out


def _split_notes(
    behaviors: dict[str, Behaviors], parts: dict[str, np.ndarray], valid_days: float
) -> list[str]:
    names = {role: b.path.parent.name for role, b in behaviors.items()}
    if "test" in behaviors:
        notes = [
            f"MIND: {names['train']} is training, {names.get('dev', '-')} validation and "
            f"{names['test']} test (as the release gives them)"
        ]
    else:
        n_valid = int(np.count_nonzero(parts["train"] == PART_VALID))
        test = names.get("dev", "-")
        notes = [
            f"MIND: {test} impressions are the test; {names['train']} impressions are "
            f"training"
            + (
                f", except its last {valid_days:g} day(s) ({n_valid} impressions): validation"
                if n_valid
                else " (no validation)"
            )
        ]
    notes.append(
        "MIND history clicks are training interactions, timed just before each user's first "
        "impression"
    )
    return notes


def _impressions_and_clicks(
    behaviors: dict[str, Behaviors], parts: dict[str, np.ndarray]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, list[dict[str, Any]]]:
    """The impressions table (raw ids), the clicks, each user's first impression time."""
    tables, offsets = [], []
    offset = 0
    for role, parsed in behaviors.items():
        rows, shown = parsed.rows, parsed.shown
        row = shown["row"].to_numpy()
        tables.append(
            pd.DataFrame(
                {
                    "impression": offset + rows["impression"].to_numpy()[row],
                    "user": rows["user"].to_numpy()[row],
                    "item": shown["item"].to_numpy(),
                    "label": shown["label"].to_numpy(np.int8),
                    "timestamp": rows["time"].to_numpy()[row],
                    "part": parts[role][row],
                }
            )
        )
        offsets.append(
            {
                "file": f"{parsed.path.parent.name}/behaviors.tsv",
                "role": role,
                "offset": offset,
                "impressions": len(rows),
                "meaning": "impression = offset + the impression id of the file",
            }
        )
        offset += int(rows["impression"].max()) + 1 if len(rows) else 0
    impressions = pd.concat(tables, ignore_index=True)
    clicked = impressions.loc[impressions["label"] == 1]
    clicks = pd.DataFrame(
        {
            "user": clicked["user"].to_numpy(),
            "item": clicked["item"].to_numpy(),
            "timestamp": clicked["timestamp"].to_numpy(np.int64),
            "part": clicked["part"].to_numpy(np.int8),
        }
    )
    first_seen = impressions.groupby("user", sort=False)["timestamp"].min()
    return impressions, clicks, first_seen, offsets


def _history_clicks(behaviors: dict[str, Behaviors], first_seen: pd.Series) -> pd.DataFrame:
    """Each user's distinct history clicks, in history order, timed before their first impression."""
    frames = []
    for order, parsed in enumerate(behaviors.values()):
        hist, rows = parsed.history, parsed.rows
        row = hist["row"].to_numpy()
        frames.append(
            pd.DataFrame(
                {
                    "user": rows["user"].to_numpy()[row],
                    "item": hist["item"].to_numpy(),
                    "file": order,
                    "time": rows["time"].to_numpy()[row],
                    "row": row,
                    "position": hist["position"].to_numpy(),
                }
            )
        )
    history = pd.concat(frames, ignore_index=True)
    if len(history) == 0:
        empty = {"timestamp": np.empty(0, np.int64), "part": np.empty(0, np.int8)}
        return pd.DataFrame({"user": [], "item": [], **empty})
    # the first history that lists an item decides its place: files in release order,
    # impressions in time order, items in the order listed
    history = history.sort_values(["file", "time", "row", "position"], kind="stable")
    history = history.drop_duplicates(["user", "item"], keep="first")
    k = history.groupby("user", sort=False).cumcount().to_numpy()
    n = history.groupby("user", sort=False)["item"].transform("size").to_numpy()
    start = history["user"].map(first_seen).to_numpy(np.int64)
    return pd.DataFrame(
        {
            "user": history["user"].to_numpy(),
            "item": history["item"].to_numpy(),
            "timestamp": start - (n - k),
            "part": np.full(len(history), PART_TRAIN, dtype=np.int8),
        }
    )


def _record_cold_items(dataset: Dataset) -> None:
    """Count the test impression items that never occur in the training interactions."""
    imp, inter = dataset.impressions, dataset.interactions
    assert imp is not None
    fit_items = np.unique(inter.loc[inter["part"] != PART_TEST, "item"].to_numpy())
    test = imp.loc[imp["part"] == PART_TEST]
    shown = np.unique(test["item"].to_numpy())
    unseen = np.setdiff1d(shown, fit_items)
    clicked = test.loc[test["label"] == 1, "item"].to_numpy()
    info = dataset.info
    info["test_impression_items"] = len(shown)
    info["test_impression_items_unseen_in_training"] = len(unseen)
    info["test_impression_rows_unseen_in_training"] = (
        float(np.isin(test["item"].to_numpy(), unseen).mean()) if len(test) else 0.0
    )
    info["test_clicks_on_items_unseen_in_training"] = (
        float(np.isin(clicked, unseen).mean()) if len(clicked) else 0.0
    )


__all__ = [
    "MIND_TEXT_TEMPLATE",
    "Behaviors",
    "load_mind",
    "mind_format",
    "read_behaviors",
    "read_news",
]
