from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from recarena.config import DataConfig, PreprocessConfig
from recarena.data import load_dataset
from recarena.data.loaders.amazon import (
    AMAZON_TEXT_TEMPLATE,
    clean_text,
    load_amazon,
    read_amazon_reviews,
)
from recarena.errors import DataError
from tests.domains.formats import (
    META_2018,
    META_2023,
    REVIEWS_2018,
    REVIEWS_2023,
    write_json_lines,
)


def _rows(ds):
    inter = ds.interactions
    return [
        (ds.user_ids[u], ds.item_ids[i], int(t), float(r))
        for u, i, t, r in zip(
            inter["user"], inter["item"], inter["timestamp"], inter["rating"], strict=True
        )
    ]


def _item(ds, raw):
    return ds.items.iloc[int(ds.item_index([raw])[0])]


def test_amazon_2018_gzipped_with_windows_line_ends(tmp_path):
    write_json_lines(tmp_path / "Books_5.json.gz", REVIEWS_2018, newline="\r\n")
    write_json_lines(tmp_path / "meta_Books.json.gz", META_2018)
    ds = load_amazon(tmp_path)  # the folder: reviews and meta_ found by name
    assert ds.name == "Books_5"
    assert list(ds.user_ids) == ["A1BLUE", "A2SUAM1J3GNN3B"]
    assert list(ds.item_ids) == ["0000013714", "B00NO0META"]  # leading zeros kept
    assert _rows(ds) == [
        ("A1BLUE", "0000013714", 1386028800, 2.0),
        ("A1BLUE", "B00NO0META", 1396396800, 3.0),  # from reviewTime "04 2, 2014" (UTC)
        ("A2SUAM1J3GNN3B", "0000013714", 1252800000, 5.0),
        ("A2SUAM1J3GNN3B", "B00NO0META", 1393632000, 4.0),
    ]
    assert ds.interactions.dtypes.to_dict() == {
        "user": np.int32, "item": np.int32, "timestamp": np.int64, "rating": np.float32,
    }  # fmt: skip

    hymns = _item(ds, "0000013714")
    assert hymns["title"] == "Heavenly Highway Hymns: Shaped-Note Hymnal"
    assert hymns["brand"] == "Stamps-Baxter"  # "by\n   Stamps-Baxter" cleaned
    assert hymns["categories"] == ["Books", "Christian Books & Bibles"]  # entity decoded
    assert hymns["description"] == "Hymns for every Sunday. Large print."  # tags removed
    assert hymns["features"] == [] and hymns["main_category"] == "Books"
    # reviewed, but no metadata line: empty fields, counted in the text coverage
    missing = _item(ds, "B00NO0META")
    assert pd.isna(missing["title"]) and missing["categories"] == []
    assert "B0UNUSED00" not in set(ds.item_ids)  # metadata of unreviewed products is skipped

    info = ds.info
    assert info["format"] == "amazon" and info["release"] == "2018"
    assert set(info["files"]) == {"Books_5.json.gz", "meta_Books.json.gz"}
    assert info["text_coverage"] == 0.5 and info["items_without_metadata"] == 1
    assert info["default_text_template"] == AMAZON_TEXT_TEMPLATE
    text = ds.item_text(AMAZON_TEXT_TEMPLATE)
    assert text[0].startswith("Title: Heavenly Highway Hymns") and "Brand: Stamps-Baxter" in text[0]
    assert ds.stats()["text_coverage"]["title"] == 0.5


def test_amazon_2023_parent_asin_and_millisecond_times(tmp_path):
    reviews = write_json_lines(tmp_path / "All_Beauty.jsonl", REVIEWS_2023)
    write_json_lines(tmp_path / "meta_All_Beauty.jsonl", META_2023)
    ds = load_amazon(reviews)
    assert ds.info["release"] == "2023"
    assert list(ds.item_ids) == ["B00YQ6X8EO", "B07PNNCSP9"]  # variants merged into parents
    assert sorted(ds.interactions["timestamp"].tolist()) == [1588687728, 1589665266, 1600000000]
    product = _item(ds, "B00YQ6X8EO")
    assert product["brand"] == "Howard Products"  # the store
    assert product["features"] == ["Made in USA", "8 oz"]
    assert product["description"] == "Leather conditioner & restorer."
    assert product["main_category"] == "All Beauty"


def test_min_rating_and_min_timestamp_apply_while_streaming(tmp_path):
    path = write_json_lines(tmp_path / "Books_5.json", REVIEWS_2018)
    reviews = read_amazon_reviews(path, min_rating=3.0, min_timestamp=1300000000)
    assert len(reviews.user_codes) == 2
    assert reviews.skipped == {"below_min_rating": 1, "before_min_timestamp": 1}
    ds = load_amazon(path, min_rating=4.0)
    assert ds.n_interactions == 2 and ds.info["filters_while_reading"] == {"min_rating": 4.0}
    assert ds.info["skipped_while_reading"] == {"below_min_rating": 2}


def test_loose_python_literal_metadata_is_read(tmp_path):
    write_json_lines(tmp_path / "Books_5.json.gz", REVIEWS_2018)
    write_json_lines(tmp_path / "meta_Books.json.gz", META_2018, literal=True)
    ds = load_amazon(tmp_path)
    assert _item(ds, "0000013714")["title"].startswith("Heavenly Highway Hymns")


def test_truncated_json_line_names_file_and_line(tmp_path):
    lines = [json.dumps(r) for r in REVIEWS_2018]
    lines[2] = lines[2][:40]  # line 3 cut short
    path = tmp_path / "Books_5.json.gz"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    with pytest.raises(DataError, match="not valid JSON") as err:
        load_amazon(path)
    assert err.value.path == str(path) and err.value.line == 3
    assert str(err.value).startswith(f"{path}:3: ")


def test_truncated_metadata_line_is_an_error_too(tmp_path):
    write_json_lines(tmp_path / "Books_5.json", REVIEWS_2018)
    meta = tmp_path / "meta_Books.json"
    meta.write_text(json.dumps(META_2018[0]) + '\n{"asin": "B00NO0META", "title": "cut\n')
    with pytest.raises(DataError) as err:
        load_amazon(tmp_path / "Books_5.json")
    assert err.value.path == str(meta) and err.value.line == 2


def test_cut_gzip_stream_is_reported(tmp_path):
    data = gzip.compress(("\n".join(json.dumps(r) for r in REVIEWS_2018 * 50) + "\n").encode())
    path = tmp_path / "Books_5.json.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="damaged or cut short") as err:
        load_amazon(path)
    assert err.value.path == str(path) and err.value.line is not None


def test_missing_field_and_wrong_file(tmp_path):
    bad = [dict(REVIEWS_2018[0]), {k: v for k, v in REVIEWS_2018[1].items() if k != "overall"}]
    path = write_json_lines(tmp_path / "x.json", bad)
    with pytest.raises(DataError, match="no 'overall' field") as err:
        load_amazon(path)
    assert err.value.line == 2
    meta_only = write_json_lines(tmp_path / "m" / "reviews.json", META_2018)
    with pytest.raises(DataError, match="not an Amazon review.*metadata file"):
        load_amazon(meta_only)
    (tmp_path / "two").mkdir()
    write_json_lines(tmp_path / "two" / "a.json", REVIEWS_2018)
    write_json_lines(tmp_path / "two" / "b.jsonl", REVIEWS_2023)
    with pytest.raises(DataError, match="several reviews files"):
        load_amazon(tmp_path / "two")


def test_no_metadata_file_leaves_items_without_text(tmp_path, caplog):
    path = write_json_lines(tmp_path / "Books_5.json", REVIEWS_2018)
    ds = load_amazon(path)
    assert ds.items.shape[1] == 0 and ds.info["text_coverage"] == 0.0
    assert "no metadata file" in caplog.text


def test_format_amazon_through_load_dataset(tmp_path):
    write_json_lines(tmp_path / "Books_5.json.gz", REVIEWS_2018)
    write_json_lines(tmp_path / "meta.jsonl", META_2018)
    config = DataConfig(
        format="amazon",
        path=str(tmp_path / "Books_5.json.gz"),
        items_path=str(tmp_path / "meta.jsonl"),
        preprocess=PreprocessConfig(min_rating=3.0),
    )
    ds = load_dataset(config)
    assert ds.n_interactions == 3 and ds.info["text_coverage"] == 0.5
    step = ds.info["preprocessing"][0]
    assert step["step"] == "rating_threshold" and step["interactions_after"] == 3


def test_clean_text_cuts_at_a_word():
    text = clean_text(["<p>alpha beta gamma delta</p>", "epsilon &amp; zeta"], 20)
    assert text == "alpha beta gamma…"
    assert clean_text("  <br/> ", 10) is None
