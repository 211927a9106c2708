"""Loaders for Last.fm music data: HetRec 2011 play counts and LFM-1b / LFM-2b listening events.

HetRec 2011 (``hetrec2011-lastfm-2k``; tab-separated files with a header line)
    ``user_artists.dat`` (``userID artistID weight``: how often the user played the
    artist), ``artists.dat`` (``id name url pictureURL``), ``tags.dat`` (``tagID
    tagValue``), ``user_taggedartists.dat`` (``userID artistID tagID day month year``) and
    ``user_taggedartists-timestamps.dat``. Play counts are implicit feedback: interactions
    carry the count as ``rating`` (keep all, or set ``min_rating`` to keep artists played at
    least that often). There are *no listening times*: the data set has no ``timestamp``
    column, so a temporal split falls back to a random one (the runner says so) and
    leave-one-out would follow file order; use split method ``"random"``. Items are artists
    with ``name`` and ``tags`` (their ``top_tags`` most often assigned tags, most used
    first). The files mix UTF-8 and latin-1 (artist names such as "Mot\\xf6rhead" in latin-1
    bytes): each line is decoded as UTF-8, or as latin-1 when it is not valid UTF-8.
LFM-1b (``LFM-1b_LEs.txt``) and LFM-2b (``listening_events.tsv``)
    One listening event per line. LFM-1b: no header, ``user-id artist-id album-id track-id
    timestamp`` (seconds), with ``LFM-1b_artists.txt`` (``artist-id artist-name``) and
    ``LFM-1b_tracks.txt`` (``track-id track-name artist-id``) for names. LFM-2b: a header
    naming ``user_id``, ``track_id`` (``album_id``) and ``timestamp`` (seconds or
    "2020-02-20 10:00:00", read as UTC), with ``tracks.tsv`` (track id, artist name, track
    name) for names. Events become interactions with timestamps; the item is the track
    (default) or the artist. The event files are streamed in chunks: memory grows with the
    kept events, not the file.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from recarena.config import DataConfig
from recarena.data.dataset import Dataset
from recarena.data.loaders._reading import build_info, check_plausible_times
from recarena.data.loaders._streaming import (
    StreamedFile,
    decode_line,
    find_file,
    loader_options,
    split_fields,
    warn_unused,
)
from recarena.errors import DataError

log = logging.getLogger(__name__)

#: The item text an experiment uses unless it sets ``data.text_template``.
LASTFM_TEXT_TEMPLATE = "Artist: {name}. Tags: {tags}."
LFM_TRACK_TEMPLATE = "Track: {title}. Artist: {artist}."
LFM_ARTIST_TEMPLATE = "Artist: {name}."
HETREC_REQUIRED = ("user_artists.dat",)
HETREC_OPTIONAL = (
    "artists.dat",
    "tags.dat",
    "user_taggedartists.dat",
    "user_taggedartists-timestamps.dat",
)
ItemLevel = Literal["track", "artist"]

_LFM1B_COLUMNS = ("user_id", "artist_id", "album_id", "track_id", "timestamp")
_PANDAS_LINE = re.compile(r"line (\d+)")
_INTEGER = re.compile(r"[-+]?[0-9]+")
_CHUNK_ROWS = 2_000_000


# ------------------------------------------------------------------------ HetRec 2011
def read_dat(
    path: Path,
    header: Sequence[str],
    *,
    ints: Sequence[str] = (),
    min_fields: int | None = None,
    example: str = "",
) -> tuple[dict[str, list[Any]], str]:
    """Read one HetRec ``.dat`` file: a header line, then tab-separated lines.

    Every line is decoded on its own (UTF-8, else latin-1). Returns the columns by header
    name and the file's sha256. Lines with fewer than ``min_fields`` or more than
    ``len(header)`` fields, a wrong header or a non-integer in an ``ints`` column raise a
    `DataError` naming the line.
    """
    source = StreamedFile(path)
    columns: dict[str, list[Any]] = {name: [] for name in header}
    names = list(header)
    required = len(header) if min_fields is None else min_fields
    label = f"Last.fm {path.name}"
    int_positions = [names.index(name) for name in ints]
    for number, line in source.lines():
        text = decode_line(line, path, number)
        if not text.strip():
            continue
        if number == 1:
            found = [f.strip() for f in text.split("\t")]
            if [f.lower() for f in found] != [n.lower() for n in names]:
                raise DataError(
                    f"expected the header {chr(9).join(names)!r} ({len(names)} tab-separated "
                    f"names), found {text[:80]!r}; is this {path.name} of "
                    "hetrec2011-lastfm-2k?",
                    path=path,
                    line=1,
                )
            continue
        fields = text.split("\t")
        if not required <= len(fields) <= len(names):
            split_fields(text, "\t", len(names), path, number, format_label=label, example=example)
        fields += [""] * (len(names) - len(fields))
        for position in int_positions:
            value = fields[position].strip()
            # int() also reads "1_000" and non-ASCII digits, and any number of digits
            if not _INTEGER.fullmatch(value) or not -(2**63) <= int(value) < 2**63:
                raise DataError(
                    f"cannot read {value!r} as the {names[position]} (an integer of at most "
                    "19 digits)",
                    path=path,
                    line=number,
                    column=names[position],
                )
            fields[position] = int(value)
        for name, value in zip(names, fields, strict=True):
            columns[name].append(value)
    assert source.sha256 is not None
    return columns, source.sha256


def load_lastfm_hetrec(
    folder: str | os.PathLike[str],
    *,
    name: str = "lastfm-hetrec",
    top_tags: int = 10,
    min_plays: int | None = None,
) -> Dataset:
    """Load the HetRec 2011 Last.fm folder (``hetrec2011-lastfm-2k``).

    Parameters
    ----------
    folder
        The unzipped folder holding ``user_artists.dat`` (and ``artists.dat``, ``tags.dat``,
        ``user_taggedartists.dat`` for names and tags), or a file inside it.
    name
        The data set's name.
    top_tags
        How many of an artist's most often assigned tags its ``tags`` field keeps.
    min_plays
        Keep user-artist pairs played at least this often (None: all; the
        ``min_rating`` preprocessing step does the same on ``rating``).

    Returns
    -------
    Dataset
        Interactions with ``rating`` = play count and no timestamps; items (artists) with
        ``name``, ``tags`` (list) and ``url``.
    """
    path = Path(folder).expanduser()
    if path.is_file():
        path = path.parent
    _require(path, HETREC_REQUIRED, "Last.fm HetRec 2011 (hetrec2011-lastfm-2k)")
    files: dict[str, str] = {}
    plays, files["user_artists.dat"] = read_dat(
        path / "user_artists.dat",
        ("userID", "artistID", "weight"),
        ints=("userID", "artistID", "weight"),
        example="2\t51\t13883",
    )
    interactions = pd.DataFrame(
        {
            "user": np.asarray(plays["userID"], dtype=np.int64),
            "item": np.asarray(plays["artistID"], dtype=np.int64),
            "rating": np.asarray(plays["weight"], dtype=np.float32),
        }
    )
    if min_plays is not None:
        interactions = interactions.loc[interactions["rating"] >= min_plays]
    items = pd.DataFrame(index=pd.Index(np.unique(interactions["item"]), name="item"))
    if (path / "artists.dat").is_file():
        artists, files["artists.dat"] = read_dat(
            path / "artists.dat",
            ("id", "name", "url", "pictureURL"),
            ints=("id",),
            min_fields=2,
            example="1\tMALICE MIZER\thttp://www.last.fm/music/MALICE+MIZER\thttp://...",
        )
        table = pd.DataFrame(
            {
                "name": [_text(v) for v in artists["name"]],
                "url": [_text(v) for v in artists["url"]],
            },
            index=pd.Index(artists["id"], name="item"),
        )
        items = items.join(table[~table.index.duplicated(keep="first")], how="left")
    else:
        log.warning("%s: no artists.dat, so artists have no names", path)
    tags_by_artist: dict[int, list[str]] = {}
    if (path / "user_taggedartists.dat").is_file() and (path / "tags.dat").is_file():
        tags_by_artist = _top_tags(path, files, top_tags)
    items["tags"] = [tags_by_artist.get(int(a), []) for a in items.index]
    n_named = int(items["name"].notna().sum()) if "name" in items else 0
    info = build_info(
        format_name="lastfm-hetrec",
        source=path.resolve(),
        files=files,
        default_text_template=LASTFM_TEXT_TEMPLATE,
        feedback="implicit: rating is the play count of the user-artist pair",
        timestamps=(
            "none: HetRec 2011 has no listening times, so split method 'random' is the "
            "default (a temporal split falls back to random)"
        ),
        top_tags=top_tags,
        text_coverage=n_named / len(items) if len(items) else 0.0,
        artists_without_name=len(items) - n_named,
    )
    if min_plays is not None:
        info["filters_while_reading"] = {"min_plays": min_plays}
    return Dataset.from_raw(name, interactions, items, None, info, source=path)


def _top_tags(path: Path, files: dict[str, str], top_n: int) -> dict[int, list[str]]:
    """Each artist's ``top_n`` most often assigned tags (ties: the lower tag id first)."""
    tags, files["tags.dat"] = read_dat(
        path / "tags.dat", ("tagID", "tagValue"), ints=("tagID",), example="1\tmetal"
    )
    names = dict(zip(tags["tagID"], (_text(v) for v in tags["tagValue"]), strict=True))
    assigned, files["user_taggedartists.dat"] = read_dat(
        path / "user_taggedartists.dat",
        ("userID", "artistID", "tagID", "day", "month", "year"),
        ints=("userID", "artistID", "tagID"),
        example="2\t52\t13\t1\t4\t2009",
    )
    frame = pd.DataFrame({"artist": assigned["artistID"], "tag": assigned["tagID"]})
    counts = frame.groupby(["artist", "tag"]).size().rename("n").reset_index()
    counts = counts.sort_values(["artist", "n", "tag"], ascending=[True, False, True])
    out: dict[int, list[str]] = {}
    for artist, tag in zip(counts["artist"].to_numpy(), counts["tag"].to_numpy(), strict=True):
        chosen = out.setdefault(int(artist), [])
        label = names.get(int(tag))
        if label and len(chosen) < top_n and label not in chosen:
            chosen.append(label)
    return out


def lastfm_hetrec_format(path: Path, config: DataConfig) -> Dataset:
    """The ``format = "lastfm-hetrec"`` loader: ``data.path`` is the unzipped folder."""
    warn_unused(
        config,
        "lastfm-hetrec",
        (
            "items_path", "users_path", "columns", "item_columns", "user_columns",
            "list_columns", "list_separator", "separator", "encoding", "timestamp_unit",
        ),
    )  # fmt: skip
    options = loader_options(config, "lastfm-hetrec", ("top_tags", "min_plays"))
    return load_lastfm_hetrec(path, name=_folder_name(path), **options)


# ------------------------------------------------------------------------- LFM-1b / 2b
def load_lfm(
    path: str | os.PathLike[str],
    *,
    item: ItemLevel = "track",
    name: str | None = None,
    min_timestamp: int | None = None,
    chunk_rows: int = _CHUNK_ROWS,
) -> Dataset:
    """Load LFM-1b or LFM-2b listening events (see the module docstring).

    Parameters
    ----------
    path
        The folder holding ``LFM-1b_LEs.txt`` or ``listening_events.tsv`` (either may be
        ``.bz2``/``.gz``), or the events file itself.
    item
        ``"track"`` (default) or ``"artist"``: what an interaction is with. LFM-2b events
        name tracks only, so the artist level needs ``tracks.tsv`` (its artist names become
        the item ids).
    min_timestamp
        Keep events from this time on (seconds since the epoch), applied while reading.
    chunk_rows
        Events parsed per chunk.

    Returns
    -------
    Dataset
        Interactions with ``timestamp`` (one row per listening event; de-duplication
        happens in preprocessing); items with ``title`` and ``artist`` (tracks) or ``name``
        (artists) where the names files are present.
    """
    if item not in ("track", "artist"):
        raise DataError(f"item must be 'track' or 'artist', not {item!r}")
    events_path, release = _events_file(Path(path).expanduser())
    folder = events_path.parent
    files: dict[str, str] = {}
    if release == "LFM-1b":
        frame, files[events_path.name], n_events = _read_lfm1b_events(
            events_path, item, min_timestamp, chunk_rows
        )
        items = _lfm1b_items(folder, item, set(np.unique(frame["item"]).tolist()), files)
    else:
        frame, files[events_path.name], n_events = _read_lfm2b_events(
            events_path, min_timestamp, chunk_rows
        )
        frame, items = _lfm2b_items(folder, item, frame, files)
    if len(frame) == 0:
        raise DataError("no listening events left after reading", path=events_path)
    template = LFM_TRACK_TEMPLATE if item == "track" else LFM_ARTIST_TEMPLATE
    n_items = int(frame["item"].nunique())
    named = 0 if items is None else len(items)
    info = build_info(
        format_name=release.lower(),
        source=folder.resolve(),
        files=files,
        default_text_template=template,
        release=release,
        item_level=item,
        events_read=n_events,
        text_coverage=min(1.0, named / n_items) if n_items else 0.0,
    )
    if min_timestamp is not None:
        info["filters_while_reading"] = {"min_timestamp": min_timestamp}
    return Dataset.from_raw(
        name or f"{release}-{item}s", frame, items, None, info, source=events_path
    )


def lfm_format(path: Path, config: DataConfig) -> Dataset:
    """The ``format = "lfm"`` loader (LFM-1b or LFM-2b, recognised from the file names).

    ``data.columns.item`` picks the item level: ``"track"``/``"track_id"`` (default) or
    ``"artist"``/``"artist_id"``.
    """
    warn_unused(
        config,
        "lfm",
        (
            "items_path", "users_path", "item_columns", "user_columns", "list_columns",
            "list_separator", "separator", "encoding", "timestamp_unit",
        ),
    )  # fmt: skip
    level = config.columns.get("item", "track").removesuffix("_id").removesuffix("-id")
    if level not in ("track", "artist"):
        raise DataError(
            f"data.columns.item = {config.columns['item']!r}: the LFM item is 'track' or 'artist'"
        )
    options = loader_options(config, "lfm", ("min_timestamp",))
    return load_lfm(path, item=level, **options)  # type: ignore[arg-type]


def _events_file(path: Path) -> tuple[Path, str]:
    if path.is_dir():
        found = find_file(path, ("LFM-1b_LEs.txt",))
        if found is not None:
            return found, "LFM-1b"
        found = find_file(path, ("listening_events.tsv", "listening-events.tsv"))
        if found is not None:
            return found, "LFM-2b"
        raise DataError(
            "no listening events here: expected LFM-1b_LEs.txt (LFM-1b) or "
            f"listening_events.tsv (LFM-2b); found {sorted(p.name for p in path.iterdir())}",
            path=path,
        )
    if not path.is_file():
        raise DataError("file or folder not found; expected LFM listening events", path=path)
    return path, ("LFM-1b" if path.name.startswith("LFM-1b") else "LFM-2b")


def _read_lfm1b_events(
    path: Path, item: ItemLevel, min_timestamp: int | None, chunk_rows: int
) -> tuple[pd.DataFrame, str, int]:
    item_column = f"{item}_id"
    source = StreamedFile(path)
    pieces: list[pd.DataFrame] = []
    n_events = 0
    with source.open() as stream:
        try:  # pandas reads the first chunk when the reader is made: that can fail too
            reader = pd.read_csv(
                stream,
                sep="\t",
                header=None,
                names=list(_LFM1B_COLUMNS),
                # no usecols: it would silently accept lines with extra fields
                dtype=np.int64,
                chunksize=chunk_rows,
                engine="c",
            )
            for chunk in reader:
                _check_times(chunk["timestamp"], path, n_events)
                n_events += len(chunk)
                if min_timestamp is not None:
                    chunk = chunk.loc[chunk["timestamp"] >= min_timestamp]
                pieces.append(
                    pd.DataFrame(
                        {
                            "user": chunk["user_id"].to_numpy(np.int64),
                            "item": chunk[item_column].to_numpy(np.int64),
                            "timestamp": chunk["timestamp"].to_numpy(np.int64),
                        }
                    )
                )
        except (ValueError, pd.errors.ParserError) as exc:
            raise _event_error(path, exc, len(_LFM1B_COLUMNS), header=False) from None
    assert source.sha256 is not None
    frame = pd.concat(pieces, ignore_index=True) if pieces else _empty_events()
    return frame, source.sha256, n_events


def _read_lfm2b_events(
    path: Path, min_timestamp: int | None, chunk_rows: int
) -> tuple[pd.DataFrame, str, int]:
    source = StreamedFile(path)
    pieces: list[pd.DataFrame] = []
    n_events = 0
    with source.open() as stream:
        try:  # pandas reads the header when the reader is made: that can fail too
            reader = pd.read_csv(
                stream, sep="\t", header=0, dtype=str, chunksize=chunk_rows, engine="c"
            )
            for chunk in reader:
                missing = [c for c in ("user_id", "track_id", "timestamp") if c not in chunk]
                if missing:
                    raise DataError(
                        f"missing column(s) {missing}: LFM-2b events need user_id, track_id "
                        f"and timestamp; columns found: {list(chunk.columns)}",
                        path=path,
                        line=1,
                    )
                stamps = _seconds(chunk["timestamp"], path, n_events)
                _check_times(pd.Series(stamps), path, n_events)
                keep = np.ones(len(chunk), dtype=bool)
                if min_timestamp is not None:
                    keep = stamps >= min_timestamp
                pieces.append(
                    pd.DataFrame(
                        {
                            "user": chunk["user_id"].to_numpy(object)[keep],
                            "item": chunk["track_id"].to_numpy(object)[keep],
                            "timestamp": stamps[keep],
                        }
                    )
                )
                n_events += len(chunk)
        except (ValueError, pd.errors.ParserError) as exc:
            raise _event_error(path, exc, None, header=True) from None
    assert source.sha256 is not None
    frame = pd.concat(pieces, ignore_index=True) if pieces else _empty_events()
    for column in ("user", "item"):
        missing = frame[column].isna().to_numpy()
        if missing.any():
            raise DataError(
                f"missing {column} id in event {int(np.flatnonzero(missing)[0]) + 1}", path=path
            )
        frame[column] = _natural(frame[column])
    return frame, source.sha256, n_events


def _seconds(values: pd.Series, path: Path, before: int) -> np.ndarray:
    numbers = pd.to_numeric(values, errors="coerce")
    if not numbers.isna().any():
        return numbers.to_numpy().astype(np.int64)
    parsed = pd.to_datetime(values, format="ISO8601", utc=True, errors="coerce")
    bad = parsed.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"cannot read the timestamp {values.iloc[row]!r} (seconds, or a date-time such as "
            "'2020-02-20 10:00:00')",
            path=path,
            line=before + row + 2,
            column="timestamp",
        )
    return ((parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "s")).to_numpy(np.int64)


def _check_times(seconds: pd.Series, path: Path, before: int) -> None:
    """Listening times must be plausible dates (`check_plausible_times`): a negative time or
    one more than a year ahead is an error naming the event (``before`` events precede)."""

    def fail(row: int, message: str) -> DataError:
        return DataError(f"{message} (event {before + row + 1})", path=path, column="timestamp")

    check_plausible_times(seconds.to_numpy(np.float64), seconds.reset_index(drop=True), "s", fail)


def _event_error(path: Path, exc: Exception, n_fields: int | None, *, header: bool) -> DataError:
    """A `DataError` naming the first line of an events file that does not parse."""
    message = str(exc)
    match = _PANDAS_LINE.search(message)
    if match and "Expected" in message:
        return DataError(
            f"wrong number of tab-separated fields ({message.split('C error: ')[-1]})",
            path=path,
            line=int(match.group(1)),
        )
    bad = _first_bad_line(path, n_fields, header=header)
    if bad is not None:
        return bad
    return DataError(f"cannot read the listening events: {message}", path=path)


def _first_bad_line(path: Path, n_fields: int | None, *, header: bool) -> DataError | None:
    """Scan the file for the first line whose fields are not integers (slow; errors only)."""
    for number, line in StreamedFile(path).lines():
        if header and number == 1:
            n_fields = n_fields or len(line.split(b"\t"))
            continue
        if not line.strip():
            continue
        fields = line.split(b"\t")
        if n_fields is not None and len(fields) != n_fields:
            return DataError(
                f"expected {n_fields} tab-separated fields, found {len(fields)}",
                path=path,
                line=number,
            )
        if not header:
            for value in fields:
                if not value.strip().lstrip(b"-").isdigit():
                    return DataError(
                        f"cannot read {value.decode('utf-8', 'replace')!r} as an integer id "
                        "or timestamp",
                        path=path,
                        line=number,
                    )
    return None


def _lfm1b_items(
    folder: Path, item: ItemLevel, wanted: set[int], files: dict[str, str]
) -> pd.DataFrame | None:
    """Names of the wanted tracks (with their artist's name) or artists, from the LFM-1b files."""
    artists_path = find_file(folder, ("LFM-1b_artists.txt",))
    tracks_path = find_file(folder, ("LFM-1b_tracks.txt",))
    artist_wanted: set[int] = set(wanted) if item == "artist" else set()
    tracks: dict[int, tuple[str | None, int | None]] = {}
    if item == "track" and tracks_path is not None:
        for number, fields in _id_lines(tracks_path, 3, files):
            track = _int(fields[0], tracks_path, number)
            if track in wanted:
                artist = _int(fields[2], tracks_path, number) if fields[2].strip() else None
                tracks[track] = (_text(fields[1]), artist)
                if artist is not None:
                    artist_wanted.add(artist)
    artist_names: dict[int, str | None] = {}
    if artists_path is not None and artist_wanted:
        for number, fields in _id_lines(artists_path, 2, files):
            artist = _int(fields[0], artists_path, number)
            if artist in artist_wanted:
                artist_names[artist] = _text(fields[1])
    if item == "artist":
        if not artist_names:
            return None
        return pd.DataFrame(
            {"name": list(artist_names.values())}, index=pd.Index(list(artist_names), name="item")
        )
    if not tracks:
        return None
    return pd.DataFrame(
        {
            "title": [t for t, _ in tracks.values()],
            "artist": [artist_names.get(a) if a is not None else None for _, a in tracks.values()],
        },
        index=pd.Index(list(tracks), name="item"),
    )


def _lfm2b_items(
    folder: Path, item: ItemLevel, frame: pd.DataFrame, files: dict[str, str]
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Track names from ``tracks.tsv``; at the artist level, events re-keyed by artist name."""
    tracks_path = find_file(folder, ("tracks.tsv",))
    if tracks_path is None:
        if item == "artist":
            raise DataError(
                "LFM-2b events name tracks only: the artist level needs tracks.tsv (track id, "
                "artist, track name) next to the events",
                path=folder,
            )
        return frame, None
    wanted = {str(v) for v in np.unique(frame["item"].astype(str))}
    rows: dict[str, tuple[str | None, str | None]] = {}
    header: list[str] | None = None
    id_at = artist_at = title_at = 0
    source = StreamedFile(tracks_path)
    for number, line in source.lines():
        text = decode_line(line, tracks_path, number)
        if not text.strip():
            continue
        fields = text.split("\t")
        if header is None:
            header = [f.strip().lower() for f in fields]
            id_at = _position(header, ("track_id", "id"), tracks_path)
            artist_at = _position(header, ("artist", "artist_name", "artist-name"), tracks_path)
            title_at = _position(header, ("track", "track_name", "title", "name"), tracks_path)
            continue
        if len(fields) != len(header):
            split_fields(
                text, "\t", len(header), tracks_path, number, format_label="LFM-2b tracks.tsv"
            )
        if fields[id_at].strip() in wanted:
            rows[fields[id_at].strip()] = (_text(fields[title_at]), _text(fields[artist_at]))
    assert source.sha256 is not None
    files[tracks_path.name] = source.sha256
    if item == "track":
        table = pd.DataFrame(
            {"title": [t for t, _ in rows.values()], "artist": [a for _, a in rows.values()]},
            index=pd.Index(list(rows), name="item"),
        )
        return frame, table
    artist_of = {track: artist for track, (_, artist) in rows.items() if artist}
    keyed = frame["item"].astype(str).map(artist_of)
    dropped = int(keyed.isna().sum())
    if dropped:
        log.warning(
            "%s: %d events name tracks without an artist in tracks.tsv; dropped", folder, dropped
        )
    out = frame.loc[keyed.notna()].copy()
    out["item"] = keyed[keyed.notna()].to_numpy(object)
    names = sorted(set(out["item"]))
    return out, pd.DataFrame({"name": names}, index=pd.Index(names, name="item"))


# ------------------------------------------------------------------------- helpers
def _id_lines(path: Path, n_fields: int, files: dict[str, str]) -> Iterator[tuple[int, list[str]]]:
    source = StreamedFile(path)
    for number, line in source.lines():
        text = decode_line(line, path, number)
        if not text.strip():
            continue
        fields = text.split("\t")
        if len(fields) < n_fields:
            split_fields(text, "\t", n_fields, path, number, format_label=f"LFM-1b {path.name}")
        yield number, fields
    assert source.sha256 is not None
    files[path.name] = source.sha256


def _position(header: list[str], names: Sequence[str], path: Path) -> int:
    for name in names:
        if name in header:
            return header.index(name)
    raise DataError(
        f"no column {names[0]!r} (or {list(names[1:])}) in the header {header}", path=path, line=1
    )


def _int(value: str, path: Path, number: int) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise DataError(f"cannot read {value!r} as an integer id", path=path, line=number) from None


def _natural(values: pd.Series) -> pd.Series:
    """Integer ids as int64 when every id is one, else the text."""
    from recarena.data.loaders._reading import natural_ids

    return natural_ids(values.astype(object))


def _empty_events() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user": np.empty(0, np.int64),
            "item": np.empty(0, np.int64),
            "timestamp": np.empty(0, np.int64),
        }
    )


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text or None


def _require(folder: Path, names: Sequence[str], label: str) -> None:
    if not folder.is_dir():
        raise DataError(f"folder not found; expected a {label} folder", path=folder)
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        found = sorted(p.name for p in folder.iterdir())
        raise DataError(
            f"missing {', '.join(missing)}: a {label} folder holds {', '.join(names)} "
            f"(optional: {', '.join(HETREC_OPTIONAL)}); found {found}",
            path=folder,
        )


def _folder_name(path: Path) -> str:
    path = path.expanduser()
    return (path.parent if path.is_file() else path).resolve().name or "lastfm-hetrec"


__all__ = [
    "LASTFM_TEXT_TEMPLATE",
    "LFM_ARTIST_TEMPLATE",
    "LFM_TRACK_TEMPLATE",
    "lastfm_hetrec_format",
    "lfm_format",
    "load_lastfm_hetrec",
    "load_lfm",
    "read_dat",
]
