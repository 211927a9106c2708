from __future__ import annotations

import bz2

import numpy as np
import pandas as pd
import pytest

from recarena.config import DataConfig, PreprocessConfig
from recarena.data import load_dataset
from recarena.data.loaders.lastfm import (
    LASTFM_TEXT_TEMPLATE,
    load_lastfm_hetrec,
    load_lfm,
)
from recarena.errors import DataError
from tests.domains.formats import write_hetrec, write_lines


def _artist(ds, raw):
    return ds.items.iloc[int(ds.item_index([raw])[0])]


def test_hetrec_play_counts_names_and_tags(tmp_path):
    ds = load_lastfm_hetrec(write_hetrec(tmp_path / "hetrec2011-lastfm-2k"))
    assert list(ds.user_ids) == [2, 3] and list(ds.item_ids) == [51, 52, 99]
    assert not ds.has_timestamps and ds.has_ratings
    inter = ds.interactions
    assert list(inter.columns) == ["user", "item", "rating"]
    assert inter["rating"].tolist() == [13883.0, 11690.0, 5.0, 7.0]  # play counts
    assert _artist(ds, 51)["name"] == "Duran Duran"
    assert _artist(ds, 52)["name"] == "Motörhead"  # a latin-1 line among UTF-8 ones
    # most assigned first (new wave twice), then by tag id; latin-1 tag decoded
    assert _artist(ds, 51)["tags"] == ["new wave", "synthpop", "café music"]
    assert _artist(ds, 52)["tags"] == ["metal"]
    unknown = _artist(ds, 99)  # listened to, but not in artists.dat
    assert pd.isna(unknown["name"]) and unknown["tags"] == []
    info = ds.info
    assert info["format"] == "lastfm-hetrec" and "no listening times" in info["timestamps"]
    assert set(info["files"]) == {
        "user_artists.dat", "artists.dat", "tags.dat", "user_taggedartists.dat",
    }  # fmt: skip
    assert info["artists_without_name"] == 1
    assert ds.item_text(LASTFM_TEXT_TEMPLATE)[0] == (
        "Artist: Duran Duran. Tags: new wave, synthpop, café music."
    )


def test_hetrec_top_tags_and_min_plays(tmp_path):
    folder = write_hetrec(tmp_path / "h")
    ds = load_lastfm_hetrec(folder, top_tags=1, min_plays=10)
    assert _artist(ds, 51)["tags"] == ["new wave"]
    assert ds.n_interactions == 2 and list(ds.item_ids) == [51, 52]


def test_hetrec_through_load_dataset_with_min_rating(tmp_path):
    folder = write_hetrec(tmp_path / "h")
    config = DataConfig(
        format="lastfm-hetrec", path=str(folder), preprocess=PreprocessConfig(min_rating=6)
    )
    ds = load_dataset(config)
    assert ds.n_interactions == 3 and ds.name == "h"


def test_hetrec_wrong_field_count_and_bad_number(tmp_path):
    folder = write_hetrec(tmp_path / "h")
    (folder / "user_artists.dat").write_bytes(b"userID\tartistID\tweight\n2\t51\t10\n2\t52\n")
    with pytest.raises(DataError, match="expected 3 fields separated by") as err:
        load_lastfm_hetrec(folder)
    assert err.value.path == str(folder / "user_artists.dat") and err.value.line == 3
    (folder / "user_artists.dat").write_bytes(b"userID\tartistID\tweight\n2\t51\tmany\n")
    with pytest.raises(DataError, match="'many' as the weight") as err:
        load_lastfm_hetrec(folder)
    assert err.value.line == 2
    (folder / "user_artists.dat").write_bytes(b"user,artist,plays\n2,51,10\n")
    with pytest.raises(DataError, match="expected the header"):
        load_lastfm_hetrec(folder)
    (folder / "user_artists.dat").unlink()
    with pytest.raises(DataError, match="missing user_artists.dat"):
        load_lastfm_hetrec(folder)


# ---------------------------------------------------------------------------- LFM-1b
LFM1B_EVENTS = [
    "31435741\t2\t4\t4\t1385212958",
    "31435741\t2\t4\t4\t1385212651",
    "31435741\t21\t31\t50\t1385212340",
    "41234\t21\t31\t51\t1385200000",
]


def _lfm1b(folder, events=LFM1B_EVENTS):
    write_lines(folder / "LFM-1b_LEs.txt", events)
    write_lines(folder / "LFM-1b_artists.txt", ["2\tHelene Fischer", "21\tMotörhead", "7\tX"])
    write_lines(
        folder / "LFM-1b_tracks.txt",
        ["4\tAtemlos durch die Nacht\t2", "50\tAce of Spades\t21", "99\tUnused\t7"],
    )
    return folder


def test_lfm1b_tracks_with_names(tmp_path):
    ds = load_lfm(_lfm1b(tmp_path / "lfm"))
    assert ds.info["release"] == "LFM-1b" and ds.info["item_level"] == "track"
    assert list(ds.item_ids) == [4, 50, 51]
    inter = ds.interactions
    first = inter[inter["user"] == ds.user_index([31435741])[0]]
    assert first["timestamp"].tolist() == [1385212340, 1385212651, 1385212958]  # time order
    track = ds.items.iloc[0]
    assert track["title"] == "Atemlos durch die Nacht" and track["artist"] == "Helene Fischer"
    assert pd.isna(ds.items.iloc[2]["title"])  # track 51 has no line in the tracks file
    assert ds.info["events_read"] == 4


def test_lfm1b_artist_level_and_min_timestamp_compressed(tmp_path):
    folder = _lfm1b(tmp_path / "lfm")
    data = (folder / "LFM-1b_LEs.txt").read_bytes()
    (folder / "LFM-1b_LEs.txt").unlink()
    (folder / "LFM-1b_LEs.txt.bz2").write_bytes(bz2.compress(data))
    ds = load_lfm(folder, item="artist", min_timestamp=1385212500, chunk_rows=1)
    assert list(ds.item_ids) == [2] and ds.n_interactions == 2
    assert ds.items.iloc[0]["name"] == "Helene Fischer"
    assert ds.info["files"]["LFM-1b_LEs.txt.bz2"]


def test_lfm1b_bad_lines_are_named(tmp_path):
    folder = _lfm1b(tmp_path / "a", [*LFM1B_EVENTS[:2], "31435741\t2\t4\t4\t13852\t7"])
    with pytest.raises(DataError, match="wrong number of tab-separated fields") as err:
        load_lfm(folder)
    assert err.value.line == 3
    folder = _lfm1b(tmp_path / "b", [*LFM1B_EVENTS[:2], "31435741\t2\t4\tfour\t1385212958"])
    with pytest.raises(DataError, match="'four' as an integer") as err:
        load_lfm(folder)
    assert err.value.path == str(folder / "LFM-1b_LEs.txt") and err.value.line == 3


# ---------------------------------------------------------------------------- LFM-2b
def _lfm2b(folder):
    write_lines(
        folder / "listening_events.tsv",
        [
            "user_id\ttrack_id\talbum_id\ttimestamp",
            "7\t100\t5\t2020-02-20 10:00:00",
            "7\t101\t5\t2020-02-20 10:04:00",
            "8\t100\t5\t2020-02-21 08:00:00",
        ],
    )
    write_lines(
        folder / "tracks.tsv",
        ["track_id\tartist\ttrack", "100\tDaft Punk\tOne More Time", "101\tDaft Punk\tAerodynamic"],
    )
    return folder


def test_lfm2b_datetime_events_and_artist_level(tmp_path):
    folder = _lfm2b(tmp_path / "lfm2b")
    ds = load_lfm(folder)
    assert ds.info["release"] == "LFM-2b" and list(ds.item_ids) == [100, 101]
    assert ds.interactions["timestamp"].tolist()[:2] == [1582192800, 1582193040]
    assert ds.items.iloc[0]["title"] == "One More Time"
    artists = load_lfm(folder / "listening_events.tsv", item="artist")
    assert list(artists.item_ids) == ["Daft Punk"] and artists.n_interactions == 3
    config = DataConfig(format="lfm", path=str(folder), columns={"item": "artist_id"})
    assert load_dataset(config).n_items == 1


def test_lfm2b_artist_level_needs_tracks_file(tmp_path):
    folder = _lfm2b(tmp_path / "lfm2b")
    (folder / "tracks.tsv").unlink()
    with pytest.raises(DataError, match="needs tracks.tsv"):
        load_lfm(folder, item="artist")
    with pytest.raises(DataError, match="no listening events here"):
        load_lfm(tmp_path)


def test_lfm_events_keep_every_listen_until_deduplicated(tmp_path):
    ds = load_dataset(DataConfig(format="lfm", path=str(_lfm1b(tmp_path / "lfm"))))
    step = ds.info["preprocessing"][0]
    assert step["step"] == "deduplicate" and step["interactions_before"] == 4
    assert ds.n_interactions == 3 and np.all(np.diff(ds.interactions["user"]) >= 0)
