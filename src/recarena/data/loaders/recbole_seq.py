"""Loader for pre-split sequence files of text-based sequential recommenders (UniSRec style).

UniSRec (RUCAIBox/UniSRec, ``dataset/preprocessing/process_amazon.py``) and RecBole's
sequential benchmark files ship a data set already split, as three RecBole atomic files::

    DATASET.train.inter    user_id:token  item_id_list:token_seq  item_id:token
    DATASET.valid.inter
    DATASET.test.inter

plus item text, ``DATASET.text`` (``item_id:token  text:token_seq``) or a RecBole
``DATASET.item`` file, and the maps back to the original ids, ``DATASET.item2index`` and
``DATASET.user2index`` (``raw<TAB>index`` lines, no header).

How the rows are laid out (UniSRec's ``convert_to_atomic_files``): each user's sequence
``s`` is cut leave-one-out into train ``s[:-2]``, valid ``s[-2]`` and test ``s[-1]``.
``.train.inter`` holds **one row per prefix**: for every position ``p`` from the last train
item down to 1, history ``s[:p][-50:]`` and target ``s[p]`` (so ``s[0]`` appears only in
histories, and a user with one train item has no train row at all). ``.valid.inter`` holds
one row per user (history: the train items, last 50; target: the valid item) and
``.test.inter`` one (history: train items and the valid item; target: the test item). The
``.inter`` files use integer indexes, assigned in order of first appearance, while ``.text``
is keyed by the original ids (``item2index`` maps them).

Reading them right means undoing the prefix expansion: every row says "this history is
followed by this target". This loader rebuilds each user's one sequence by chaining the rows
(rows whose history is shorter than the longest one found sit at position
``len(history)``; longer sequences continue where the previous window plus its target
ends), so every interaction appears once, however many rows repeat it. Items seen only in
histories (the first item, items before a truncated window) are training interactions. Each
interaction gets the ``part`` of the file whose row targets it (0 train, 1 valid, 2 test):
use split method ``"predefined"``, never a re-split. A row that does not continue its user's
sequence is a `DataError` naming its line.

There are no timestamps in these files: the interactions have no ``timestamp`` column, and
each user's rows are in sequence order (the order index is the row order; ``info["order"]``
says so). Item and user ids are the original ids when ``item2index``/``user2index`` are
present, so the ids carry no order; otherwise they are the files' indexes, which do follow
first appearance (``info`` warns).
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recarena.config import DataConfig
from recarena.data.dataset import PART_TEST, PART_TRAIN, PART_VALID, Dataset
from recarena.data.loaders._reading import build_info
from recarena.data.loaders._streaming import StreamedFile, decode_line, split_fields, warn_unused
from recarena.data.loaders.recbole import read_atomic_file
from recarena.errors import DataError

log = logging.getLogger(__name__)

SEQ_TEXT_TEMPLATE = "{text}"
_PARTS = (("train", PART_TRAIN), ("valid", PART_VALID), ("test", PART_TEST))


@dataclass(frozen=True)
class _Row:
    history: tuple[str, ...]
    target: str
    part: int
    path: Path
    line: int


def load_recbole_sequences(path: str | os.PathLike[str], *, name: str | None = None) -> Dataset:
    """Load ``DATASET.{train,valid,test}.inter`` sequence files with their item text.

    Parameters
    ----------
    path
        The folder holding the files (it must hold one ``*.train.inter``), or one of the
        ``.inter`` files. A relative path is relative to the current directory.
    name
        The data set's name (default: ``DATASET``).

    Returns
    -------
    Dataset
        Interactions with ``part`` and no timestamps, each user's rows in sequence order;
        items with ``text`` (from ``.text``) or the ``.item`` fields.
    """
    folder, stem = _locate(Path(path).expanduser())
    files: dict[str, str] = {}
    rows: dict[str, list[_Row]] = defaultdict(list)
    counts: dict[str, int] = {}
    for label, part in _PARTS:
        inter_path = folder / f"{stem}.{label}.inter"
        if not inter_path.is_file():
            if label == "valid":
                continue
            raise DataError(
                f"missing {inter_path.name}: pre-split sequence data has {stem}.train.inter, "
                f"{stem}.valid.inter (optional) and {stem}.test.inter",
                path=folder,
            )
        counts[label] = 0
        for user, row in _read_sequence_file(inter_path, part, files):
            rows[user].append(row)
            counts[label] += 1
    window = max((len(r.history) for user_rows in rows.values() for r in user_rows), default=0)
    sequences: list[tuple[str, list[str], list[int]]] = []
    duplicates = out_of_order = 0
    for user, user_rows in rows.items():
        items, parts, dup = _rebuild(user, user_rows, max(window, 1))
        duplicates += dup
        if any(b < a for a, b in zip(parts, parts[1:], strict=False)):
            out_of_order += 1
        sequences.append((user, items, parts))

    item_map = _index_map(folder / f"{stem}.item2index", files)
    user_map = _index_map(folder / f"{stem}.user2index", files)
    interactions = pd.DataFrame(
        {
            "user": [user_map.get(u, u) for u, items, _ in sequences for _ in items],
            "item": [item_map.get(i, i) for _, items, _ in sequences for i in items],
            "part": np.array([p for _, _, parts in sequences for p in parts], dtype=np.int8),
        }
    )
    for column in ("user", "item"):
        interactions[column] = _natural(interactions[column])
    items, text_source = _item_table(folder, stem, files, item_map)
    n_history_only = int(
        sum(len(items_) for _, items_, _ in sequences) - sum(counts.values()) + duplicates
    )
    layout = (
        "one row per user"
        if counts.get("train", 0) <= len({u for u, r in rows.items() if r})
        else "one row per prefix (UniSRec / RecBole augmented); repeated prefixes read once"
    )
    n_items = int(interactions["item"].nunique())
    covered = 0
    if items is not None:
        with_text = items.notna().any(axis=1).to_numpy()
        covered = int((items.index.isin(interactions["item"]) & with_text).sum())
    info = build_info(
        format_name="recbole-seq",
        source=folder.resolve(),
        files=files,
        default_text_template=_template(items),
        split_source=f"{stem}.train/.valid/.test.inter as given",
        split_notes=[
            f"predefined split of {stem}: train, valid and test rows of the sequence files "
            "as given (targets of each file; items only in histories are training)"
        ],
        layout=layout,
        rows_read=counts,
        duplicate_rows=duplicates,
        history_only_interactions=n_history_only,
        max_history=window,
        order=(
            "no timestamps in the files: each user's sequence order is rebuilt from the "
            "history/target rows and kept as the row order of the interactions (a synthesized "
            "order index, not a time)"
        ),
        ids=(
            "original ids (item2index/user2index)"
            if item_map
            else "the files' integer indexes, assigned in order of first appearance: they "
            "carry order information (item2index was not found)"
        ),
        text_file=text_source,
        text_coverage=covered / n_items if n_items else 0.0,
    )
    if out_of_order:
        info["users_with_parts_out_of_order"] = out_of_order
        log.warning(
            "%s: %d users have train/valid/test targets out of sequence order", stem, out_of_order
        )
    return Dataset.from_raw(name or stem, interactions, items, None, info, source=folder)


def recbole_seq_format(path: Path, config: DataConfig) -> Dataset:
    """The ``format = "recbole-seq"`` loader: ``data.path`` is the folder or an ``.inter`` file."""
    warn_unused(
        config,
        "recbole-seq",
        (
            "items_path", "users_path", "columns", "item_columns", "user_columns",
            "list_columns", "list_separator", "separator", "encoding", "timestamp_unit",
        ),
    )  # fmt: skip
    return load_recbole_sequences(path)


# ------------------------------------------------------------------------ sequences
def _rebuild(user: str, rows: list[_Row], window: int) -> tuple[list[str], list[int], int]:
    """The user's sequence (items, parts) from their rows; also the duplicate rows counted.

    Rows whose history is shorter than ``window`` were not truncated, so their target sits
    at position ``len(history)``. Longer sequences are continued by chaining: the row whose
    history equals the last ``window`` items so far adds its target.
    """
    seq: list[str] = []
    parts: list[int] = []
    duplicates = 0
    short = sorted((r for r in rows if len(r.history) < window), key=lambda r: len(r.history))
    for row in short:
        p = len(row.history)
        if len(seq) < p:
            if tuple(seq) != row.history[: len(seq)]:
                raise _conflict(user, row)
            parts += [PART_TRAIN] * (p - len(seq))
            seq = list(row.history)
        elif tuple(seq[:p]) != row.history:
            raise _conflict(user, row)
        if len(seq) == p:
            seq.append(row.target)
            parts.append(row.part)
        elif seq[p] != row.target:
            raise _conflict(user, row)
        else:
            duplicates += 1
    long_rows = [r for r in rows if len(r.history) >= window]
    if not long_rows:
        return seq, parts, duplicates
    waiting: dict[tuple[str, ...], deque[_Row]] = defaultdict(deque)
    for row in long_rows:
        waiting[row.history[-window:]].append(row)
    if not seq:
        follows = {(*r.history, r.target)[-window:] for r in long_rows}
        start = next((r for r in long_rows if r.history[-window:] not in follows), long_rows[0])
        seq = list(start.history)
        parts = [PART_TRAIN] * len(seq)
    consumed: set[tuple[tuple[str, ...], str]] = set()
    while True:
        queue = waiting.get(tuple(seq[-window:]))
        if not queue:
            break
        row = queue.popleft()
        consumed.add((row.history[-window:], row.target))
        seq.append(row.target)
        parts.append(row.part)
    for queue in waiting.values():
        for row in queue:
            if (row.history[-window:], row.target) in consumed:
                duplicates += 1
            else:
                raise _conflict(user, row)
    return seq, parts, duplicates


def _conflict(user: str, row: _Row) -> DataError:
    shown = " ".join(row.history[-5:])
    return DataError(
        f"the row of user {user!r} (history ending {shown!r}, target {row.target!r}) does not "
        "continue the user's sequence built from the other rows; sequence files hold, per "
        "user, prefixes of one sequence (history followed by its next item)",
        path=row.path,
        line=row.line,
    )


# ------------------------------------------------------------------------ files
def _locate(path: Path) -> tuple[Path, str]:
    """The folder and the ``DATASET`` stem of the sequence files."""
    if path.is_file():
        for label, _ in _PARTS:
            suffix = f".{label}.inter"
            if path.name.endswith(suffix):
                return path.parent, path.name[: -len(suffix)]
        raise DataError(
            "expected DATASET.train.inter, DATASET.valid.inter or DATASET.test.inter",
            path=path,
        )
    if not path.is_dir():
        raise DataError("file or folder not found; expected sequence .inter files", path=path)
    stems = sorted(p.name[: -len(".train.inter")] for p in path.glob("*.train.inter"))
    if len(stems) == 1:
        return path, stems[0]
    found = sorted(p.name for p in path.iterdir())
    if not stems:
        raise DataError(
            "no DATASET.train.inter here: pre-split sequence data (UniSRec, RecBole benchmark "
            f"files) has DATASET.train.inter, .valid.inter and .test.inter; found {found}",
            path=path,
        )
    raise DataError(f"several data sets here ({stems}); name one .train.inter file", path=path)


def _read_sequence_file(path: Path, part: int, files: dict[str, str]) -> Iterator[tuple[str, _Row]]:
    """(user, row) of every line of a sequence ``.inter`` file, read line by line."""
    source = StreamedFile(path)
    positions: tuple[int, int, int] | None = None
    n_fields = 0
    for number, line in source.lines():
        text = decode_line(line, path, number, fallback=None)
        if not text.strip():
            continue
        if positions is None:
            header = [f.strip() for f in text.split("\t")]
            positions, n_fields = _fields(header, path, number), len(header)
            continue
        fields = split_fields(
            text,
            "\t",
            n_fields,
            path,
            number,
            format_label="sequence .inter",
            example="1\t4 8 15\t16",
        )
        user, history, target = (fields[k].strip() for k in positions)
        if not user or not target:
            raise DataError("missing user or target item", path=path, line=number)
        yield user, _Row(tuple(history.split()), target, part, path, number)
    if positions is None:
        raise DataError("the file is empty; expected a header line", path=path, line=1)
    assert source.sha256 is not None
    files[path.name] = source.sha256


def _fields(header: list[str], path: Path, line: int) -> tuple[int, int, int]:
    """Positions of the user, history and target fields in a sequence ``.inter`` header."""
    types = dict(field.rpartition(":")[::2] for field in header)
    names = [field.rpartition(":")[0] for field in header]
    sequences = [k for k, n in enumerate(names) if types[n] == "token_seq"]
    user = next(
        (k for k, n in enumerate(names) if types[n] == "token" and n.startswith("user")), None
    )
    target = next(
        (k for k, n in enumerate(names) if types[n] == "token" and n.startswith("item")), None
    )
    if len(sequences) != 1 or user is None or target is None:
        raise DataError(
            "a sequence .inter file has a user field, one history field and a target item "
            "field: 'user_id:token<TAB>item_id_list:token_seq<TAB>item_id:token'; found "
            f"{header}",
            path=path,
            line=line,
        )
    return user, sequences[0], target


def _index_map(path: Path, files: dict[str, str]) -> dict[str, str]:
    """``index -> original id`` from a UniSRec ``item2index``/``user2index`` file."""
    if not path.is_file():
        return {}
    source = StreamedFile(path)
    out: dict[str, str] = {}
    for number, line in source.lines():
        text = decode_line(line, path, number, fallback=None)
        if not text.strip():
            continue
        raw, sep, index = text.rpartition("\t")
        if not sep or not raw.strip() or not index.strip():
            raise DataError(
                f"expected 'original id<TAB>index', found {text[:80]!r}", path=path, line=number
            )
        out[index.strip()] = raw.strip()
    assert source.sha256 is not None
    files[path.name] = source.sha256
    return out


def _item_table(
    folder: Path, stem: str, files: dict[str, str], item_map: dict[str, str]
) -> tuple[pd.DataFrame | None, str | None]:
    text_path, item_path = folder / f"{stem}.text", folder / f"{stem}.item"
    if text_path.is_file():
        table = _read_text_file(text_path, files)
    elif item_path.is_file():
        frame, source = read_atomic_file(item_path)
        files[item_path.name] = source.sha256
        types = frame.attrs.get("recbole_types", {})
        id_field = next(iter(types))
        table = frame.drop(columns=[id_field])
        for field, kind in types.items():
            if kind == "token_seq" and field in ("title", "name", "text", "description"):
                table[field] = table[field].map(lambda v: " ".join(v) if v else None)
        table.index = pd.Index(frame[id_field].astype(str).str.strip().to_numpy(object))
    else:
        log.warning("%s: no %s.text or %s.item, so items have no text", folder, stem, stem)
        return None, None
    table = table[~table.index.duplicated(keep="first")]
    if item_map and not table.index.isin(list(item_map.values())).any():
        # the text is keyed by the files' indexes rather than the original ids
        table.index = pd.Index([item_map.get(i, i) for i in table.index], dtype=object)
    table.index = _natural(pd.Series(table.index, dtype=object)).to_numpy()
    table.index.name = "item"
    return table, (text_path if text_path.is_file() else item_path).name


def _read_text_file(path: Path, files: dict[str, str]) -> pd.DataFrame:
    """A ``.text`` file: ``item_id:token<TAB>text:token_seq`` (a line without text is empty)."""
    source = StreamedFile(path)
    ids: list[str] = []
    texts: list[str | None] = []
    for number, line in source.lines():
        text = decode_line(line, path, number)
        if not text.strip():
            continue
        item, _, value = text.partition("\t")
        if number == 1:
            if ":" not in item:
                raise DataError(
                    f"expected the header 'item_id:token<TAB>text:token_seq', found {text[:80]!r}",
                    path=path,
                    line=1,
                )
            continue
        ids.append(item.strip())
        texts.append(" ".join(value.split()) or None)
    assert source.sha256 is not None
    files[path.name] = source.sha256
    return pd.DataFrame({"text": texts}, index=pd.Index(ids, dtype=object))


def _template(items: pd.DataFrame | None) -> str | None:
    if items is None:
        return None
    for field in ("text", "title", "name"):
        if field in items.columns:
            return f"{{{field}}}"
    return None


def _natural(values: pd.Series) -> pd.Series:
    from recarena.data.loaders._reading import natural_ids

    return natural_ids(values.astype(object))


__all__ = ["SEQ_TEXT_TEMPLATE", "load_recbole_sequences", "recbole_seq_format"]
