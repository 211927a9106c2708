"""Small files in the real formats of the domain data sets, written by the tests themselves.

The contents are tiny and made up, but the layouts, separators, encodings, compression and
quirks (Windows line ends, latin-1 bytes, Python-literal metadata, unlabelled impressions,
UniSRec's one-row-per-prefix files) are those of the real releases.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path

# ---------------------------------------------------------------------------- Amazon
REVIEWS_2018 = [
    {
        "overall": 5.0,
        "verified": True,
        "reviewTime": "09 13, 2009",
        "reviewerID": "A2SUAM1J3GNN3B",
        "asin": "0000013714",
        "reviewerName": "J. McDonald",
        "reviewText": "I bought this for my husband who plays the piano.",
        "summary": "Heavenly Highway Hymns",
        "unixReviewTime": 1252800000,
    },
    {
        "overall": 2.0,
        "verified": False,
        "reviewTime": "12 3, 2013",
        "reviewerID": "A1BLUE",
        "asin": "0000013714",
        "reviewText": "Not what I expected.",
        "summary": "meh",
        "unixReviewTime": 1386028800,
    },
    {
        "overall": 4.0,
        "reviewTime": "03 1, 2014",
        "reviewerID": "A2SUAM1J3GNN3B",
        "asin": "B00NO0META",
        "reviewText": "Fine.",
        "summary": "ok",
        "unixReviewTime": 1393632000,
    },
    {
        # no unixReviewTime: the date is read from reviewTime
        "overall": 3.0,
        "reviewTime": "04 2, 2014",
        "reviewerID": "A1BLUE",
        "asin": "B00NO0META",
        "vote": "2",
    },
]
META_2018 = [
    {
        "category": ["Books", "Christian Books &amp; Bibles"],
        "description": ["<b>Hymns</b> for every Sunday.<br>Large print."],
        "title": "Heavenly Highway Hymns: Shaped-Note Hymnal",
        "brand": "by\n    \n    Stamps-Baxter",
        "feature": [],
        "main_cat": "Books",
        "asin": "0000013714",
    },
    {"title": "Never reviewed", "asin": "B0UNUSED00"},
]
REVIEWS_2023 = [
    {
        "rating": 5.0,
        "title": "Such a lovely scent",
        "text": "This spray is really nice.",
        "images": [],
        "asin": "B00YQ6X8EO",
        "parent_asin": "B00YQ6X8EO",
        "user_id": "AGKHLEW2SOWHNMFQIJGBECAF7INQ",
        "timestamp": 1588687728923,
        "helpful_vote": 0,
        "verified_purchase": True,
    },
    {
        "rating": 4.0,
        "title": "Works",
        "text": "Good.",
        "images": [],
        "asin": "B081TJ8YS3",
        "parent_asin": "B00YQ6X8EO",  # a variant of the same product
        "user_id": "AE74DYR3QUGVPZJ3P7RFWBGIX7XQ",
        "timestamp": 1589665266052,
        "helpful_vote": 1,
        "verified_purchase": True,
    },
    {
        "rating": 1.0,
        "title": "No",
        "text": "Broke.",
        "asin": "B07PNNCSP9",
        "parent_asin": "B07PNNCSP9",
        "user_id": "AGKHLEW2SOWHNMFQIJGBECAF7INQ",
        "timestamp": 1600000000000,
    },
]
META_2023 = [
    {
        "main_category": "All Beauty",
        "title": "Howard LC0008 Leather Conditioner, 8-Ounce (4-Pack)",
        "average_rating": 4.8,
        "features": ["Made in USA", "8 oz"],
        "description": ["Leather conditioner &amp; restorer."],
        "price": None,
        "store": "Howard Products",
        "categories": [],
        "details": {"Brand": "Howard"},
        "parent_asin": "B00YQ6X8EO",
    },
]


def write_json_lines(
    path: Path, records: Sequence[object], *, newline: str = "\n", literal: bool = False
) -> Path:
    """JSON lines (or Python dict literals with ``literal``), gzipped when the name ends in .gz."""
    text = "".join((repr(r) if literal else json.dumps(r)) + newline for r in records)
    data = text.encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


# ------------------------------------------------------------------------------ MIND
MIND_NEWS_TRAIN = [
    "N1\tnews\tnewsus\tFirst title\tFirst abstract\thttps://assets.msn.com/1\t[]\t[]",
    "N2\tsports\tfootball_nfl\tSecond title\t\thttps://assets.msn.com/2\t"
    '[{"Label": "NFL", "Type": "O"}]\t[]',
    "N3\tnews\tnewsworld\tThird title\tThird abstract\thttps://assets.msn.com/3\t[]\t[]",
    "N4\tlifestyle\tlifestyleroyals\tFourth title\tFourth abstract\thttps://x/4\t[]\t[]",
    "N5\tnews\tnewsus\tFifth title\tFifth abstract\thttps://x/5\t[]\t[]",
]
MIND_NEWS_DEV = [
    "N3\tnews\tnewsworld\tThird title\tThird abstract\thttps://assets.msn.com/3\t[]\t[]",
    "N6\tnews\tnewsus\tSixth title\tSixth abstract\thttps://x/6\t[]\t[]",
    "N7\tfinance\tmarkets\tSeventh title\tSeventh abstract\thttps://x/7\t[]\t[]",
    "N8\tnews\tnewsus\tNever shown\tAbstract\thttps://x/8\t[]\t[]",
]
# impression id, user, time, history, impressions
MIND_BEHAVIORS_TRAIN = [
    "1\tU1\t11/9/2019 8:55:22 AM\tN1 N2\tN3-1 N4-0 N5-0",
    "2\tU2\t11/10/2019 9:00:00 PM\t\tN3-0 N4-1",  # empty history
    "3\tU1\t11/14/2019 10:00:00 AM\tN1 N2\tN5-1 N3-0",  # the last day: validation
]
MIND_BEHAVIORS_DEV = [
    "1\tU1\t11/15/2019 8:00:00 AM\tN1 N2 N4\tN6-1 N7-0 N3-0",
    "2\tU3\t11/15/2019 9:30:00 AM\tN2\tN7-1 N6-0",  # a user new in dev
]
MIND_BEHAVIORS_TEST = [
    "1\tU9\t11/16/2019 8:00:00 AM\tN1\tN6 N7",  # the official test set: no labels
]


def write_lines(path: Path, lines: Sequence[str], *, newline: str = "\n", encoding="utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("".join(line + newline for line in lines).encode(encoding))
    return path


def write_mind(root: Path, *, release: str = "MINDsmall", test: bool = False) -> Path:
    write_lines(root / f"{release}_train" / "behaviors.tsv", MIND_BEHAVIORS_TRAIN)
    write_lines(root / f"{release}_train" / "news.tsv", MIND_NEWS_TRAIN)
    write_lines(root / f"{release}_dev" / "behaviors.tsv", MIND_BEHAVIORS_DEV, newline="\r\n")
    write_lines(root / f"{release}_dev" / "news.tsv", MIND_NEWS_DEV)
    if test:
        write_lines(root / f"{release}_test" / "behaviors.tsv", MIND_BEHAVIORS_TEST)
        write_lines(root / f"{release}_test" / "news.tsv", MIND_NEWS_DEV)
    return root


# --------------------------------------------------------------------------- Last.fm
def write_hetrec(folder: Path) -> Path:
    """A HetRec 2011 folder: CRLF ends, latin-1 and UTF-8 names mixed, tags in latin-1."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "user_artists.dat").write_bytes(
        b"userID\tartistID\tweight\r\n2\t51\t13883\r\n2\t52\t11690\r\n3\t51\t5\r\n3\t99\t7\r\n"
    )
    (folder / "artists.dat").write_bytes(
        b"id\tname\turl\tpictureURL\r\n"
        b"51\tDuran Duran\thttp://www.last.fm/music/Duran+Duran\thttp://x/1.jpg\r\n"
        + "52\tMotörhead\thttp://www.last.fm/music/Mot%C3%B6rhead\t\r\n".encode("latin-1")
        + "53\tBjörk\thttp://www.last.fm/music/Bj%C3%B6rk\thttp://x/3.jpg\r\n".encode()
    )
    (folder / "tags.dat").write_bytes(
        "tagID\ttagValue\r\n1\tmetal\r\n2\tnew wave\r\n3\tsynthpop\r\n4\tcafé music\r\n".encode(
            "latin-1"
        )
    )
    (folder / "user_taggedartists.dat").write_bytes(
        b"userID\tartistID\ttagID\tday\tmonth\tyear\r\n"
        b"2\t51\t2\t1\t4\t2009\r\n3\t51\t2\t1\t5\t2009\r\n3\t51\t3\t1\t5\t2009\r\n"
        b"2\t51\t4\t1\t5\t2009\r\n2\t52\t1\t1\t4\t2009\r\n"
    )
    (folder / "user_taggedartists-timestamps.dat").write_bytes(
        b"userID\tartistID\ttagID\ttimestamp\r\n2\t51\t2\t1238536800000\r\n"
    )
    return folder


# ------------------------------------------------------------------- UniSRec sequences
SEQ_HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token"


def unisrec_files(
    folder: Path, stem: str, sequences: dict[str, list[str]], *, window: int = 50
) -> dict[str, list[str]]:
    """Write the three .inter files exactly as UniSRec's convert_to_atomic_files lays them out:
    leave-one-out, the train file with one row per prefix (targets from the last down to the
    second item), histories cut to the last ``window`` items."""
    train, valid, test = [SEQ_HEADER], [SEQ_HEADER], [SEQ_HEADER]
    for user in sorted(sequences, key=int):
        seq = sequences[user]
        train_seq = seq[:-2]
        for target_idx in range(1, len(train_seq)):
            history = train_seq[:-target_idx][-window:]
            train.append(f"{user}\t{' '.join(history)}\t{train_seq[-target_idx]}")
        valid.append(f"{user}\t{' '.join(train_seq[-window:])}\t{seq[-2]}")
        test.append(f"{user}\t{' '.join((train_seq + [seq[-2]])[-window:])}\t{seq[-1]}")
    write_lines(folder / f"{stem}.train.inter", train)
    write_lines(folder / f"{stem}.valid.inter", valid)
    write_lines(folder / f"{stem}.test.inter", test)
    return {"train": train, "valid": valid, "test": test}
