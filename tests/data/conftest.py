"""Small data files in the real formats, written by the tests themselves under tmp_path.

The contents are tiny and made up (never copies of MovieLens), but the layouts, separators,
encodings and quirks are those of the real files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

# u.item: id|title|release date|video release date|IMDb URL|19 genre flags
# genre order: unknown, Action, Adventure, Animation, Children's, Comedy, Crime, Documentary,
# Drama, Fantasy, Film-Noir, Horror, Musical, Mystery, Romance, Sci-Fi, Thriller, War, Western
ML100K_ITEMS = [
    "10|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)"
    "|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0",
    "20|Misérables, Les (1995)|15-Dec-1995||http://us.imdb.com/M/title-exact?Miserables"
    "|0|0|0|0|0|0|0|0|1|0|0|0|1|0|0|0|0|0|0",
    "30|unknown||||1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0",
    "40|Land Before Time III: The Time of the Great Giving (1995) (V)|01-Jan-1995||"
    "|0|0|0|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0|0",
]
ML100K_RATINGS = [
    "1\t10\t4\t881250949",
    "1\t20\t5\t881250950",
    "2\t10\t3\t881251000",
    "2\t30\t1\t881251001",
    "3\t20\t2\t881251002",
    "3\t40\t4\t881251003",
]
ML100K_USERS = ["1|24|M|technician|85711", "2|53|F|other|94043", "3|23|M|writer|32067"]

ML1M_RATINGS = [
    "1::1193::5::978300760",
    "1::661::3::978302109",
    "2::1193::4::978298413",
    "2::3408::2::978299000",
    "3::661::1::978297000",
]
ML1M_MOVIES = [
    "661::James and the Giant Peach (1996)::Animation|Children's|Musical",
    "1193::One Flew Over the Cuckoo's Nest (1975)::Drama",
    "3408::Misérables, Les (1998)::Drama",
]
ML1M_USERS = ["1::F::1::10::48067", "2::M::56::16::70072", "3::M::25::15::55117"]

LATEST_RATINGS = [
    "userId,movieId,rating,timestamp",
    "1,1,4.0,964982703",
    "1,3,4.5,964981247",
    "2,1,2.5,1445714835",
    "2,193609,3.0,1537109082",
    "3,3,0.5,1306463578",
]
LATEST_MOVIES = [
    "movieId,title,genres",
    "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy",
    '3,"American President, The (1995)",Comedy|Drama|Romance',
    '193609,"Andrew Dice Clay: Dice Rules (1991)",(no genres listed)',
]
LATEST_TAGS = [
    "userId,movieId,tag,timestamp",
    "1,1,pixar,1139045764",
    "2,1,fun,1139045765",
    "3,1,Pixar,1139045766",
    "2,3,politics,1139045767",
]

RECBOLE_INTER = [
    "user_id:token\titem_id:token\trating:float\ttimestamp:float",
    "196\t242\t3\t881250949",
    "186\t302\t3\t891717742",
    "196\t302\t5\t881251000",
    "22\t377\t1\t878887116",
]
RECBOLE_ITEMS = [
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq",
    "242\tKolya\t1996\tComedy",
    "302\tL.A. Confidential\t1997\tCrime Film-Noir Mystery Thriller",
    "377\tunkonwn\tunkonwn\tunknown",
]
RECBOLE_USERS = [
    "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token",
    "196\t49\tM\twriter\t55105",
    "186\t39\tF\texecutive\t00000",
    "22\t25\tM\twriter\t40206",
]


def write_lines(
    path: Path,
    lines: Sequence[str],
    *,
    encoding: str = "utf-8",
    newline: str = "\n",
    bom: bool = False,
) -> Path:
    """Write ``lines`` as a text file (each line ended by ``newline``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(line + newline for line in lines).encode(encoding)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return path


class MovieLensFiles:
    """Writers of tiny folders in each real layout; keyword arguments replace one file."""

    @staticmethod
    def ml100k(
        folder: Path,
        *,
        ratings: Sequence[str] = ML100K_RATINGS,
        items: Sequence[str] = ML100K_ITEMS,
        users: Sequence[str] | None = ML100K_USERS,
        encoding: str = "latin-1",
        newline: str = "\n",
    ) -> Path:
        write_lines(folder / "u.data", ratings, encoding=encoding, newline=newline)
        write_lines(folder / "u.item", items, encoding=encoding, newline=newline)
        if users is not None:
            write_lines(folder / "u.user", users, encoding=encoding, newline=newline)
        return folder

    @staticmethod
    def ml1m(
        folder: Path,
        *,
        ratings: Sequence[str] = ML1M_RATINGS,
        movies: Sequence[str] = ML1M_MOVIES,
        users: Sequence[str] | None = ML1M_USERS,
        encoding: str = "latin-1",
        newline: str = "\n",
    ) -> Path:
        write_lines(folder / "ratings.dat", ratings, encoding=encoding, newline=newline)
        write_lines(folder / "movies.dat", movies, encoding=encoding, newline=newline)
        if users is not None:
            write_lines(folder / "users.dat", users, encoding=encoding, newline=newline)
        return folder

    @staticmethod
    def latest(
        folder: Path,
        *,
        ratings: Sequence[str] = LATEST_RATINGS,
        movies: Sequence[str] = LATEST_MOVIES,
        tags: Sequence[str] | None = LATEST_TAGS,
        newline: str = "\n",
        bom: bool = False,
    ) -> Path:
        write_lines(folder / "ratings.csv", ratings, newline=newline, bom=bom)
        write_lines(folder / "movies.csv", movies, newline=newline, bom=bom)
        if tags is not None:
            write_lines(folder / "tags.csv", tags, newline=newline, bom=bom)
        return folder

    @staticmethod
    def recbole(
        folder: Path,
        *,
        name: str | None = None,
        inter: Sequence[str] = RECBOLE_INTER,
        items: Sequence[str] | None = RECBOLE_ITEMS,
        users: Sequence[str] | None = RECBOLE_USERS,
        newline: str = "\n",
        bom: bool = False,
    ) -> Path:
        stem = name or folder.name
        write_lines(folder / f"{stem}.inter", inter, newline=newline, bom=bom)
        if items is not None:
            write_lines(folder / f"{stem}.item", items, newline=newline, bom=bom)
        if users is not None:
            write_lines(folder / f"{stem}.user", users, newline=newline, bom=bom)
        return folder


@pytest.fixture
def movielens_files() -> type[MovieLensFiles]:
    return MovieLensFiles
