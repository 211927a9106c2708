from __future__ import annotations

import numpy as np
import pytest

from recarena.config import DataConfig
from recarena.data import load_dataset
from recarena.data.loaders.recbole_seq import load_recbole_sequences
from recarena.errors import DataError
from recarena.splits import predefined_split
from tests.domains.formats import SEQ_HEADER, unisrec_files, write_lines

# index ids as UniSRec writes them; user 0's sequence is longer than the history window
SEQUENCES = {
    "0": ["1", "2", "3", "4", "5", "6", "7", "8", "9"],
    "1": ["2", "9"],  # one train item less than needed for a train row: none is written
    "2": ["3", "3", "1", "3"],  # a repeated item
    "3": ["5", "6", "7"],
}
ASINS = {str(i): f"B{i:09d}" for i in range(1, 10)}


def _write(folder, window=3, *, maps=True, text=True):
    rows = unisrec_files(folder, "Scientific", SEQUENCES, window=window)
    if maps:
        write_lines(folder / "Scientific.item2index", [f"{a}\t{i}" for i, a in ASINS.items()])
        write_lines(folder / "Scientific.user2index", [f"A{u}USER\t{u}" for u in SEQUENCES])
    if text:
        lines = ["item_id:token\ttext:token_seq"]
        lines += [f"{ASINS[str(i)]}\tProduct {i}. Brand {i}." for i in range(1, 9)]
        lines.append(f"{ASINS['9']}\t")  # an item with an empty text
        write_lines(folder / "Scientific.text", lines)
    return rows


def _sequences(ds):
    out = {}
    inter = ds.interactions
    for user, item, part in zip(inter["user"], inter["item"], inter["part"], strict=True):
        items, parts = out.setdefault(ds.user_ids[user], ([], []))
        items.append(ds.item_ids[item])
        parts.append(int(part))
    return out


def test_unisrec_prefix_rows_rebuild_each_sequence_once(tmp_path):
    rows = _write(tmp_path)
    assert len(rows["train"]) - 1 == 6 + 0 + 1 + 0  # one row per prefix: 7 train rows
    ds = load_recbole_sequences(tmp_path)
    assert ds.name == "Scientific"
    assert not ds.has_timestamps and list(ds.interactions.columns) == ["user", "item", "part"]
    seqs = _sequences(ds)
    for user, seq in SEQUENCES.items():
        items, parts = seqs[f"A{user}USER"]
        assert items == [ASINS[i] for i in seq]  # every interaction once, in order
        assert parts == [0] * (len(seq) - 2) + [1, 2]  # leave-one-out parts as given
    info = ds.info
    assert info["layout"].startswith("one row per prefix")
    assert info["rows_read"] == {"train": 7, "valid": 4, "test": 4}
    assert info["max_history"] == 3 and info["duplicate_rows"] == 0
    assert info["history_only_interactions"] == 3  # each sequence's first train item
    assert "no timestamps" in info["order"] and info["ids"].startswith("original ids")
    text = ds.items.iloc[int(ds.item_index([ASINS["1"]])[0])]["text"]
    assert text == "Product 1. Brand 1."
    assert ds.info["default_text_template"] == "{text}" and ds.info["text_coverage"] == 8 / 9


def test_predefined_split_uses_the_files_parts(tmp_path):
    _write(tmp_path, window=50)
    ds = load_recbole_sequences(tmp_path / "Scientific.test.inter")
    split = predefined_split(ds)
    assert (len(split.train), len(split.valid), len(split.test)) == (10, 4, 4)
    assert split.notes[0].startswith("predefined split of Scientific")
    assert split.valid.groupby("user").size().eq(1).all()


def test_repeated_rows_are_read_once(tmp_path):
    rows = _write(tmp_path)
    train = rows["train"]
    write_lines(tmp_path / "Scientific.train.inter", [*train, *train[1:3]])  # rows again
    ds = load_recbole_sequences(tmp_path)
    assert ds.info["duplicate_rows"] == 2
    assert _sequences(ds)["A0USER"][0] == [ASINS[i] for i in SEQUENCES["0"]]


def test_without_index_maps_the_ids_are_the_files_and_info_warns(tmp_path):
    _write(tmp_path, maps=False, text=False)
    ds = load_recbole_sequences(tmp_path)
    assert list(ds.user_ids) == [0, 1, 2, 3] and ds.item_ids[0] == 1
    assert "carry order information" in ds.info["ids"]
    assert ds.items.shape[1] == 0


def test_one_row_per_user_layout(tmp_path):
    write_lines(tmp_path / "d.train.inter", [SEQ_HEADER, "u1\ta b\tc", "u2\t\tx"])
    write_lines(tmp_path / "d.test.inter", [SEQ_HEADER, "u1\ta b c\td", "u2\tx\ty"])
    ds = load_recbole_sequences(tmp_path)
    seqs = _sequences(ds)
    assert seqs["u1"] == (["a", "b", "c", "d"], [0, 0, 0, 2])
    assert seqs["u2"] == (["x", "y"], [0, 2])
    assert ds.info["layout"] == "one row per user"


def test_rows_that_do_not_chain_are_errors(tmp_path):
    write_lines(tmp_path / "d.train.inter", [SEQ_HEADER, "u1\ta b\tc", "u1\ta\tz"])
    write_lines(tmp_path / "d.test.inter", [SEQ_HEADER, "u1\ta b c\td"])
    with pytest.raises(DataError, match="does not continue the user's sequence") as err:
        load_recbole_sequences(tmp_path)
    # the row that does not fit what the shorter histories built
    assert err.value.path == str(tmp_path / "d.train.inter") and err.value.line == 2


def test_file_errors(tmp_path):
    write_lines(tmp_path / "d.train.inter", [SEQ_HEADER, "u1\ta b\tc"])
    with pytest.raises(DataError, match="missing d.test.inter"):
        load_recbole_sequences(tmp_path)
    write_lines(tmp_path / "d.test.inter", [SEQ_HEADER, "u1\ta b c\td\textra"])
    with pytest.raises(DataError) as err:
        load_recbole_sequences(tmp_path)
    assert err.value.line == 2 and "expected 3 fields" in str(err.value)
    write_lines(tmp_path / "d.test.inter", ["user_id:token\titem_id:token", "u1\td"])
    with pytest.raises(DataError, match="one history field"):
        load_recbole_sequences(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no DATASET.train.inter here"):
        load_recbole_sequences(tmp_path / "empty")


def test_format_recbole_seq_through_load_dataset(tmp_path):
    _write(tmp_path)
    ds = load_dataset(DataConfig(format="recbole-seq", path=str(tmp_path)))
    # de-duplication keeps the latest of user 2's repeated item 3
    assert ds.info["preprocessing"][0]["interactions_after"] == ds.n_interactions
    assert np.isin(ds.interactions["part"], [0, 1, 2]).all()
