from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recarena.config import DataConfig
from recarena.data import load_dataset
from recarena.data.dataset import Dataset
from recarena.data.loaders.mind import MIND_TEXT_TEMPLATE, load_mind, read_behaviors
from recarena.errors import DataError
from recarena.splits import SPLITTERS, predefined_split
from tests.domains.formats import (
    MIND_BEHAVIORS_DEV,
    MIND_BEHAVIORS_TRAIN,
    MIND_NEWS_DEV,
    write_lines,
    write_mind,
)

T = {  # the impression times of the files, in seconds (UTC)
    "train1": 1573289722,  # 11/9/2019 8:55:22 AM
    "train2": 1573419600,  # 11/10/2019 9:00:00 PM
    "train3": 1573725600,  # 11/14/2019 10:00:00 AM
    "dev1": 1573804800,  # 11/15/2019 8:00:00 AM
    "dev2": 1573810200,  # 11/15/2019 9:30:00 AM
}


def _interactions(ds: Dataset) -> list[tuple]:
    inter = ds.interactions
    return [
        (ds.user_ids[u], ds.item_ids[i], int(t), int(p))
        for u, i, t, p in zip(
            inter["user"], inter["item"], inter["timestamp"], inter["part"], strict=True
        )
    ]


def _impressions(ds: Dataset) -> list[tuple]:
    imp = ds.impressions
    return [
        (int(n), ds.user_ids[u], ds.item_ids[i], int(label), int(t), int(p))
        for n, u, i, label, t, p in zip(
            imp["impression"], imp["user"], imp["item"], imp["label"], imp["timestamp"],
            imp["part"], strict=True,
        )
    ]  # fmt: skip


def test_mind_release_to_dataset(tmp_path):
    ds = load_mind(write_mind(tmp_path))
    assert ds.name == "MINDsmall"
    # every article of both news.tsv files is an item, clicked or not (keep_items)
    assert list(ds.item_ids) == ["N1", "N2", "N3", "N4", "N5", "N6", "N7", "N8"]
    assert ds.info["keep_items"] is True
    assert list(ds.user_ids) == ["U1", "U2", "U3"]
    assert _interactions(ds) == [
        # U1's history "N1 N2" (train) then N4 (first listed in dev), timed just before U1's
        # first impression, in the order listed
        ("U1", "N1", T["train1"] - 3, 0),
        ("U1", "N2", T["train1"] - 2, 0),
        ("U1", "N4", T["train1"] - 1, 0),
        ("U1", "N3", T["train1"], 0),  # clicked in impression 1
        ("U1", "N5", T["train3"], 1),  # clicked on the last train day: validation
        ("U1", "N6", T["dev1"], 2),  # dev clicks: the test
        ("U2", "N4", T["train2"], 0),  # U2 has an empty history
        ("U3", "N2", T["dev2"] - 1, 0),  # a dev user's history is training too
        ("U3", "N7", T["dev2"], 2),
    ]
    assert ds.interactions.dtypes["part"] == np.int8

    imp = ds.impressions
    assert list(imp.columns) == ["impression", "user", "item", "label", "timestamp", "part"]
    assert imp.dtypes.to_dict() == {
        "impression": np.int64, "user": np.int32, "item": np.int32, "label": np.int8,
        "timestamp": np.int64, "part": np.int8,
    }  # fmt: skip
    assert _impressions(ds) == [
        (1, "U1", "N3", 1, T["train1"], 0),
        (1, "U1", "N4", 0, T["train1"], 0),
        (1, "U1", "N5", 0, T["train1"], 0),
        (2, "U2", "N3", 0, T["train2"], 0),
        (2, "U2", "N4", 1, T["train2"], 0),
        (3, "U1", "N5", 1, T["train3"], 1),
        (3, "U1", "N3", 0, T["train3"], 1),
        # dev impression ids 1 and 2, offset by the train file's largest id + 1
        (5, "U1", "N6", 1, T["dev1"], 2),
        (5, "U1", "N7", 0, T["dev1"], 2),
        (5, "U1", "N3", 0, T["dev1"], 2),
        (6, "U3", "N7", 1, T["dev2"], 2),
        (6, "U3", "N6", 0, T["dev2"], 2),
    ]
    assert [f["offset"] for f in ds.info["impression_files"]] == [0, 4]

    n2 = ds.items.iloc[int(ds.item_index(["N2"])[0])]
    assert n2["title"] == "Second title" and pd.isna(n2["abstract"])
    assert n2["category"] == "sports" and n2["subcategory"] == "football_nfl"
    assert ds.info["default_text_template"] == MIND_TEXT_TEMPLATE
    # the extreme cold-item case: N6, N7 shown in test never occur in training
    assert ds.info["test_impression_items"] == 3
    assert ds.info["test_impression_items_unseen_in_training"] == 2
    assert ds.info["test_clicks_on_items_unseen_in_training"] == 1.0
    stats = ds.stats()
    assert stats["impressions"] == 5 and stats["impression_rows"] == 12
    assert stats["impression_clicks"] == 5 and stats["items_without_interactions"] == 1
    assert stats["interactions_by_part"] == {"train": 6, "valid": 1, "test": 2}
    assert stats["test_impression_items_unseen_in_training"] == 2


def test_predefined_split_of_mind(tmp_path):
    ds = load_mind(write_mind(tmp_path))
    split = SPLITTERS["predefined"](ds)
    assert split.method == "predefined"
    assert (len(split.train), len(split.valid), len(split.test)) == (6, 1, 2)
    assert split.notes[0].startswith("MIND: MINDsmall_dev impressions are the test")
    assert "validation" in split.notes[0]
    assert any("cold items" in note for note in split.notes)
    assert split.params["source"] == "MIND release folders"


def test_unlabelled_test_folder_is_skipped_with_a_note(tmp_path):
    ds = load_mind(write_mind(tmp_path, release="MINDlarge", test=True))
    assert ds.name == "MINDlarge"
    assert "U9" not in set(ds.user_ids)
    assert any(
        "MINDlarge_test/behaviors.tsv has no click labels" in n for n in ds.info["split_notes"]
    )
    assert "MINDlarge_test/news.tsv" in ds.info["files"]
    behaviors = read_behaviors(tmp_path / "MINDlarge_test" / "behaviors.tsv")
    assert not behaviors.labelled and behaviors.shown["label"].tolist() == [-1, -1]


def test_labelled_test_folder_makes_dev_the_validation(tmp_path):
    write_mind(tmp_path)
    write_lines(
        tmp_path / "MINDsmall_test" / "behaviors.tsv",
        ["7\tU1\t11/16/2019 8:00:00 AM\tN1\tN8-1 N7-0"],
    )
    write_lines(tmp_path / "MINDsmall_test" / "news.tsv", MIND_NEWS_DEV[-1:])
    ds = load_mind(tmp_path)
    parts = ds.interactions["part"].to_numpy()
    assert np.bincount(parts, minlength=3).tolist() == [7, 2, 1]  # no last-day validation


def test_valid_days_zero_keeps_train_whole(tmp_path):
    ds = load_mind(write_mind(tmp_path), valid_days=0)
    assert (ds.interactions["part"] != 1).all()


def test_token_without_label_in_a_labelled_file(tmp_path):
    write_mind(tmp_path)
    lines = [*MIND_BEHAVIORS_DEV, "3\tU2\t11/15/2019 10:00:00 AM\tN4\tN6-0 N7 N3-1"]
    path = write_lines(tmp_path / "MINDsmall_dev" / "behaviors.tsv", lines)
    with pytest.raises(DataError, match="'N7' has no click label") as err:
        load_mind(tmp_path)
    assert err.value.path == str(path) and err.value.line == 3


def test_bad_label_and_wrong_field_count(tmp_path):
    write_mind(tmp_path)
    path = tmp_path / "MINDsmall_train" / "behaviors.tsv"
    write_lines(path, [MIND_BEHAVIORS_TRAIN[0], "2\tU2\t11/10/2019 9:00:00 PM\t\tN3-2"])
    with pytest.raises(DataError, match="must be 1 \\(clicked\\) or 0") as err:
        load_mind(tmp_path)
    assert err.value.line == 2
    write_lines(path, [MIND_BEHAVIORS_TRAIN[0], "2\tU2\t11/10/2019 9:00:00 PM\tN3-0"])
    with pytest.raises(DataError, match="expected 5 fields") as err:
        load_mind(tmp_path)
    assert err.value.path == str(path) and err.value.line == 2
    write_lines(path, [MIND_BEHAVIORS_TRAIN[0], "2\tU2\t2019-11-10 21:00\t\tN3-0"])
    with pytest.raises(DataError, match="cannot read the time") as err:
        load_mind(tmp_path)
    assert err.value.line == 2


def test_release_folder_errors(tmp_path):
    write_mind(tmp_path)
    with pytest.raises(DataError, match="this is one MIND folder"):
        load_mind(tmp_path / "MINDsmall_train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no MIND release here"):
        load_mind(tmp_path / "empty")
    (tmp_path / "MINDsmall_dev" / "behaviors.tsv").unlink()
    with pytest.raises(DataError, match="needs labelled train and dev"):
        load_mind(tmp_path)


def test_preprocessing_keeps_items_and_impressions(tmp_path):
    write_mind(tmp_path / "r")
    ds = load_dataset(DataConfig(format="mind", path=str(tmp_path / "r")))
    assert ds.info["preprocessing"][0]["step"] == "deduplicate"  # the default step ran
    assert ds.n_items == 8 and ds.impressions is not None and len(ds.impressions) == 12
    # a user whose every interaction a step removes leaves, with their impressions
    mask = ds.interactions["user"].to_numpy() != ds.user_index(["U3"])[0]
    smaller = ds.subset(mask, {"step": "test"})
    assert list(smaller.user_ids) == ["U1", "U2"] and smaller.n_items == 8
    assert len(smaller.impressions) == 10
    assert set(smaller.user_ids[smaller.impressions["user"]]) == {"U1", "U2"}


def test_save_and_load_round_trip(tmp_path):
    ds = load_mind(write_mind(tmp_path / "r"))
    ds.save(tmp_path / "saved")
    back = Dataset.load(tmp_path / "saved")
    pd.testing.assert_frame_equal(back.interactions, ds.interactions)
    pd.testing.assert_frame_equal(back.impressions, ds.impressions)
    assert list(back.item_ids) == list(ds.item_ids) and back.info["keep_items"] is True
    split = predefined_split(back)
    assert len(split.test) == 2
