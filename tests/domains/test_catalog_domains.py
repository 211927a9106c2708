"""Catalog entries of the domains: names, fetching (faked downloads), offline placement."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import zipfile
from pathlib import Path

import pytest

from recarena._io import read_json
from recarena.config import DataConfig
from recarena.data import catalog, load_dataset
from recarena.data.catalog import (
    dataset_info,
    fetch_dataset,
    get_entry,
    list_catalog,
    load_catalog_dataset,
)
from recarena.errors import DataError
from tests.domains.formats import (
    META_2018,
    MIND_BEHAVIORS_DEV,
    MIND_BEHAVIORS_TRAIN,
    MIND_NEWS_DEV,
    MIND_NEWS_TRAIN,
    REVIEWS_2018,
    write_hetrec,
)


def _gz_lines(records) -> bytes:
    return gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode())


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _text(lines) -> bytes:
    return "".join(line + "\n" for line in lines).encode()


class Downloads:
    """Serves bytes at URLs in place of the network; records the URLs asked for."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.served: dict[str, bytes] = {}
        self.asked: list[str] = []
        monkeypatch.setattr(catalog, "download_file", self._download)

    def _download(self, url: str, dest: Path, *, progress: bool, timeout: float):
        self.asked.append(url)
        if url not in self.served:
            raise catalog._SourceFailed("cannot download (no network in tests)")
        data = self.served[url]
        dest.write_bytes(data)
        return hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()


@pytest.fixture
def downloads(monkeypatch) -> Downloads:
    return Downloads(monkeypatch)


def _mind_archives() -> tuple[bytes, bytes]:
    train = _zip(
        {
            "behaviors.tsv": _text(MIND_BEHAVIORS_TRAIN),
            "news.tsv": _text(MIND_NEWS_TRAIN),
            "entity_embedding.vec": b"Q1\t0.1\n",
        }
    )
    dev = _zip(
        {
            "MINDsmall_dev/behaviors.tsv": _text(MIND_BEHAVIORS_DEV),  # in a folder: found too
            "MINDsmall_dev/news.tsv": _text(MIND_NEWS_DEV),
        }
    )
    return train, dev


def test_names_and_urls():
    beauty = get_entry("amazon2018:All_Beauty")
    assert [s.urls[0] for s in beauty.sources] == [
        "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2/categoryFilesSmall/"
        "All_Beauty_5.json.gz",
        "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2/metaFiles2/"
        "meta_All_Beauty.json.gz",
    ]
    assert beauty.folder_name == "amazon2018-All_Beauty" and beauty.format == "amazon"
    beauty23 = get_entry("amazon2023:All_Beauty")
    assert [s.urls[0] for s in beauty23.sources] == [
        "https://huggingface.co/datasets/McAuley-Lab/Amazon-Reviews-2023/resolve/main/raw/"
        "review_categories/All_Beauty.jsonl",
        "https://huggingface.co/datasets/McAuley-Lab/Amazon-Reviews-2023/resolve/main/raw/"
        "meta_categories/meta_All_Beauty.jsonl",
    ]
    mind = get_entry("mind-small")
    assert [s.urls[0] for s in mind.sources] == [
        "https://mind201910small.blob.core.windows.net/release/MINDsmall_train.zip",
        "https://mind201910small.blob.core.windows.net/release/MINDsmall_dev.zip",
    ]
    assert get_entry("lastfm-hetrec").sources[0].urls == (
        "https://files.grouplens.org/datasets/hetrec2011/hetrec2011-lastfm-2k.zip",
    )
    for entry in (beauty, beauty23, mind, get_entry("lastfm-hetrec")):
        assert "Never commit the files" in entry.terms and entry.default_text_template
        assert "no published checksum" in entry.summary()["official"]["checksum"]


def test_category_names_are_checked(caplog):
    with pytest.raises(DataError, match="'All Beauty' is not a category name"):
        get_entry("amazon2018:All Beauty")
    with caplog.at_level(logging.WARNING):
        entry = get_entry("amazon2018:All_Beuty")
    assert entry.name == "amazon2018:All_Beuty" and "did you mean 'All_Beauty'" in caplog.text
    with pytest.raises(DataError, match=r"amazon2018:<Category>, amazon2023:<Category>, "):
        get_entry("amazon:Books")


def test_list_catalog_with_domains():
    assert [e.name for e in list_catalog()] == ["ml-100k", "ml-1m", "ml-latest-small"]
    names = [e.name for e in list_catalog(domains=True)]
    assert names == [
        "amazon2018:All_Beauty", "amazon2023:All_Beauty", "lastfm-hetrec", "mind-small",
        "ml-100k", "ml-1m", "ml-latest-small",
    ]  # fmt: skip


def test_amazon_is_fetched_checked_and_cached(tmp_path, downloads):
    entry = get_entry("amazon2018:Books")
    reviews, meta = _gz_lines(REVIEWS_2018), _gz_lines(META_2018)
    downloads.served[entry.sources[0].urls[0]] = reviews
    downloads.served[entry.sources[1].urls[0]] = meta
    folder = fetch_dataset("amazon2018:Books", tmp_path, progress=False)
    assert folder == tmp_path / "datasets" / "amazon2018-Books"
    manifest = read_json(folder / "manifest.json")
    assert manifest["format"] == "amazon" and manifest["source_kind"] == "official"
    assert manifest["files"] == {
        "Books_5.json.gz": hashlib.sha256(reviews).hexdigest(),
        "meta_Books.json.gz": hashlib.sha256(meta).hexdigest(),
    }
    record = manifest["sources"]["Books_5.json.gz"]
    assert record["sha256"] == hashlib.sha256(reviews).hexdigest()
    assert record["url"] == entry.sources[0].urls[0] and record["from"] == "official"
    # a second call finds the cache
    fetch_dataset("amazon2018:Books", tmp_path, progress=False)
    assert len(downloads.asked) == 2

    ds = load_catalog_dataset("amazon2018:Books", tmp_path)
    assert ds.name == "amazon2018:Books" and ds.n_interactions == 4
    assert ds.info["catalog_name"] == "amazon2018:Books" and ds.info["format"] == "amazon"
    assert "McAuley" in ds.info["terms"] and ds.info["text_coverage"] == 0.5
    assert dataset_info(ds)["catalog"]["name"] == "amazon2018:Books"
    by_name = dataset_info("amazon2018:Books", tmp_path)
    assert by_name["cached"]["files"] == manifest["files"]


def test_a_source_that_changed_is_reported(tmp_path, downloads, caplog):
    entry = get_entry("amazon2018:Books")
    downloads.served[entry.sources[0].urls[0]] = _gz_lines(REVIEWS_2018)
    downloads.served[entry.sources[1].urls[0]] = _gz_lines(META_2018)
    folder = fetch_dataset("amazon2018:Books", tmp_path, progress=False)
    (folder / "Books_5.json.gz").unlink()
    downloads.served[entry.sources[0].urls[0]] = _gz_lines(REVIEWS_2018[:2])
    with caplog.at_level(logging.WARNING):
        fetch_dataset("amazon2018:Books", tmp_path, progress=False)
    assert "the file changed at the source" in caplog.text
    record = read_json(folder / "manifest.json")["sources"]["Books_5.json.gz"]
    assert record["sha256_at_first_fetch"] != record["sha256"]
    assert downloads.asked.count(entry.sources[1].urls[0]) == 1  # the rest was kept


def test_mind_archives_with_mirror_fallback(tmp_path, downloads):
    entry = get_entry("mind-small")
    train, dev = _mind_archives()
    downloads.served[entry.sources[0].urls[0]] = train
    downloads.served[entry.sources[1].urls[1]] = dev  # the official URL fails: the mirror
    folder = fetch_dataset("mind-small", tmp_path, progress=False)
    assert sorted(read_json(folder / "manifest.json")["files"]) == [
        "MINDsmall_dev/behaviors.tsv", "MINDsmall_dev/news.tsv",
        "MINDsmall_train/behaviors.tsv", "MINDsmall_train/news.tsv",
    ]  # fmt: skip
    assert not (folder / "MINDsmall_train" / "entity_embedding.vec").exists()
    manifest = read_json(folder / "manifest.json")
    assert manifest["sources"]["MINDsmall_dev.zip"]["from"] == "mirror"
    ds = load_dataset(DataConfig(name="mind-small"), tmp_path)
    assert ds.name == "mind-small" and ds.impressions is not None
    assert ds.info["test_impression_items_unseen_in_training"] == 2


def test_offline_message_says_where_to_put_the_files(tmp_path, downloads):
    with pytest.raises(DataError) as err:
        fetch_dataset("mind-small", tmp_path, allow_network=False)
    message = str(err.value)
    target = tmp_path / "datasets" / "mind-small"
    assert "cannot fetch 'mind-small'" in message and "network not allowed" in message
    assert f"create {target}/" in message
    assert "MINDsmall_train/behaviors.tsv, MINDsmall_train/news.tsv" in message
    assert "or the archive MINDsmall_train.zip itself" in message
    assert downloads.asked == []
    with pytest.raises(DataError) as err:
        fetch_dataset("amazon2023:Books", tmp_path)  # downloads fail
    message = str(err.value)
    assert "no network in tests" in message
    assert f"{tmp_path / 'datasets' / 'amazon2023-Books'}/" in message
    assert "Books.jsonl (or Books.jsonl.gz), from https://huggingface.co/" in message
    assert "meta_Books.jsonl (or meta_Books.jsonl.gz)" in message


def test_files_and_archives_placed_by_hand_are_picked_up(tmp_path, downloads):
    # Amazon: the two data files
    target = tmp_path / "datasets" / "amazon2018-Books"
    target.mkdir(parents=True)
    (target / "Books_5.json.gz").write_bytes(_gz_lines(REVIEWS_2018))
    (target / "meta_Books.json.gz").write_bytes(_gz_lines(META_2018))
    ds = load_catalog_dataset("amazon2018:Books", tmp_path, allow_network=False)
    assert ds.n_interactions == 4
    manifest = read_json(target / "manifest.json")
    assert manifest["source_kind"] == "manual" and set(manifest["files"]) == {
        "Books_5.json.gz", "meta_Books.json.gz",
    }  # fmt: skip
    # MIND: the archives themselves
    train, dev = _mind_archives()
    target = tmp_path / "datasets" / "mind-small"
    target.mkdir(parents=True)
    (target / "MINDsmall_train.zip").write_bytes(train)
    (target / "MINDsmall_dev.zip").write_bytes(dev)
    folder = fetch_dataset("mind-small", tmp_path, allow_network=False)
    assert (folder / "MINDsmall_dev" / "news.tsv").is_file()
    sources = read_json(folder / "manifest.json")["sources"]
    assert sources["MINDsmall_dev.zip"]["from"] == "archive placed by hand"
    # Last.fm: the unzipped files
    write_hetrec(tmp_path / "datasets" / "lastfm-hetrec")
    ds = load_catalog_dataset("lastfm-hetrec", tmp_path, allow_network=False)
    assert ds.name == "lastfm-hetrec" and ds.n_items == 3 and not ds.has_timestamps
    assert downloads.asked == []


def test_lastfm_zip_with_files_at_its_root(tmp_path, downloads):
    source = write_hetrec(tmp_path / "src")
    archive = _zip({p.name: p.read_bytes() for p in source.iterdir()} | {"readme.txt": b"hi"})
    downloads.served[get_entry("lastfm-hetrec").sources[0].urls[0]] = archive
    folder = fetch_dataset("lastfm-hetrec", tmp_path, progress=False)
    files = read_json(folder / "manifest.json")["files"]
    assert "user_friends.dat" not in files and "readme.txt" in files
    assert "user_taggedartists-timestamps.dat" in files
    broken = _zip({"user_artists.dat": b"userID\tartistID\tweight\n"})
    downloads.served[get_entry("lastfm-hetrec").sources[0].urls[0]] = broken
    with pytest.raises(DataError, match="hetrec2011-lastfm-2k.zip has no artists.dat"):
        fetch_dataset("lastfm-hetrec", tmp_path / "other", progress=False)
