"""`load_dataset`: dispatch on catalog name or format, preprocessing, the format registry."""

from __future__ import annotations

import pytest

from recarena.config import DataConfig
from recarena.data import FORMATS, load_dataset, register_format
from recarena.data.dataset import Dataset
from recarena.errors import ConfigError, DataError
from tests.data.conftest import write_lines


def test_every_documented_format_is_registered():
    assert {
        "movielens-100k", "movielens-1m", "movielens-latest", "recbole", "csv", "tsv", "parquet",
    } <= set(FORMATS)  # fmt: skip


@pytest.mark.parametrize(
    ("file_format", "writer", "expected"),
    [
        ("movielens-100k", "ml100k", 6),
        ("movielens-1m", "ml1m", 5),
        ("movielens-latest", "latest", 5),
        ("recbole", "recbole", 4),
    ],
)
def test_dispatch_on_format(tmp_path, movielens_files, file_format, writer, expected):
    folder = getattr(movielens_files, writer)(tmp_path / "data")
    ds = load_dataset(DataConfig(format=file_format, path=str(folder)))
    assert ds.n_interactions == expected
    assert ds.info["format"] == file_format
    assert [s["step"] for s in ds.info["preprocessing"]] == ["deduplicate"]


def test_relative_paths_are_relative_to_the_current_directory(tmp_path, monkeypatch):
    write_lines(tmp_path / "sub" / "r.csv", ["user,item", "1,2"])
    write_lines(tmp_path / "sub" / "i.csv", ["item,title", "2,Two"])
    monkeypatch.chdir(tmp_path)
    ds = load_dataset(DataConfig(format="csv", path="sub/r.csv", items_path="sub/i.csv"))
    assert ds.items["title"].tolist() == ["Two"]
    assert ds.info["source"] == str(tmp_path / "sub" / "r.csv")


def test_unknown_format_lists_formats(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset(DataConfig(format="amazon-jsonl", path=str(tmp_path)))
    message = str(err.value)
    assert "unknown data format 'amazon-jsonl'" in message
    assert (
        "amazon, csv, lastfm-hetrec, lfm, mind, movielens-100k, movielens-1m, movielens-latest, "
        "parquet, recbole, recbole-seq, tsv" in message
    )


def test_preprocessing_order_and_records(tmp_path):
    lines = ["user,item,rating,timestamp"]
    # user a: items 1 and 2 twice each; user b: item 1 only; ratings 1 are dropped first
    lines += [
        "a,1,5,1",
        "a,1,4,2",
        "a,2,5,3",
        "a,2,5,4",
        "a,3,1,5",
        "b,1,5,6",
        "c,1,5,7",
        "c,2,4,8",
    ]
    path = write_lines(tmp_path / "r.csv", lines)
    config = DataConfig(
        format="csv",
        path=str(path),
        preprocess={"min_rating": 2, "dedup": "latest", "user_core": 2, "item_core": 2},
    )
    ds = load_dataset(config)
    steps = ds.info["preprocessing"]
    assert [s["step"] for s in steps] == ["rating_threshold", "deduplicate", "k_core"]
    assert [s["interactions_after"] for s in steps] == [7, 5, 4]
    assert sorted(ds.user_ids) == ["a", "c"] and sorted(ds.item_ids) == [1, 2]
    # dedup kept the latest rating of (a, 1)
    a_rows = ds.interactions[ds.interactions["user"] == ds.user_index(["a"])[0]]
    assert a_rows["rating"].tolist()[0] == 4.0


def test_dedup_none_keeps_repeats(tmp_path):
    path = write_lines(tmp_path / "r.csv", ["user,item", "1,2", "1,2"])
    ds = load_dataset(DataConfig(format="csv", path=str(path), preprocess={"dedup": "none"}))
    assert ds.n_interactions == 2 and "preprocessing" not in ds.info


def test_filter_that_leaves_nothing_is_an_error(tmp_path):
    path = write_lines(tmp_path / "r.csv", ["user,item,rating", "1,2,3"])
    with pytest.raises(
        DataError, match="no interactions left .* after rating_threshold; loosen the filter"
    ):
        load_dataset(DataConfig(format="csv", path=str(path), preprocess={"min_rating": 4}))


def test_text_template_is_checked_against_item_fields(tmp_path, movielens_files):
    folder = movielens_files.ml1m(tmp_path / "ml-1m")
    config = DataConfig(format="movielens-1m", path=str(folder), text_template="{title}: {plot}")
    with pytest.raises(ConfigError, match="plot"):
        load_dataset(config)
    ok = load_dataset(DataConfig(format="movielens-1m", path=str(folder), text_template="{title}"))
    assert ok.info["text_template"] == "{title}"


def test_explicit_encoding_is_honoured_for_movielens(tmp_path, movielens_files):
    folder = movielens_files.ml1m(tmp_path / "ml-1m", encoding="latin-1")
    with pytest.raises(DataError, match="not valid utf-8"):
        load_dataset(DataConfig(format="movielens-1m", path=str(folder), encoding="utf-8"))
    assert load_dataset(DataConfig(format="movielens-1m", path=str(folder))).n_items == 3


def test_register_format(tmp_path, monkeypatch):
    monkeypatch.setattr("recarena.data.loaders.FORMATS", dict(FORMATS))
    from recarena.data import loaders

    def load_lines(path, config):
        import pandas as pd

        rows = [line.split() for line in path.read_text().splitlines()]
        return Dataset.from_raw(
            "lines", pd.DataFrame(rows, columns=["user", "item"]), info={"format": "lines"}
        )

    loaders.register_format("lines", load_lines)
    with pytest.raises(ValueError, match="already registered"):
        loaders.register_format("lines", load_lines)
    path = tmp_path / "x.txt"
    path.write_text("u1 i1\nu2 i1\n")
    assert load_dataset(DataConfig(format="lines", path=str(path))).n_users == 2
    assert register_format is loaders.register_format
