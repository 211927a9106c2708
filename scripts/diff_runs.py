"""Compare two run folders of the same experiment: every number but the times.

For a refactor that must leave behaviour alone: run the same config before and after the
change into two folders, then::

    python scripts/diff_runs.py runs-before/quickstart-ml100k runs-after/quickstart-ml100k

Every file the two folders hold is compared by what it holds: JSON after removing what
records time, speed or memory (``fit_seconds``, ``users_per_second``, ``latency_ms_p50``,
``peak_memory_mib``, ``finished``, the training log's ``seconds``...) and the checksums
of files that hold times; Parquet and CSV tables by value (columns of times dropped);
NumPy archives array by array; other files byte for byte. A recorded class path
(``"class"`` in ``DONE.json``, ``model.json``) that names the same class as before, through a
module's old import path, is not a difference. The HTML report, the Markdown
tables and ``environment.json`` (times and versions) are listed but not compared. A file
in one folder only is a difference. Exit status 0 when nothing differs, 1 otherwise, with
one line per difference (the first differing value of each file).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: keys (JSON) and columns (tables) that record time, speed or memory, or checksums
VOLATILE = re.compile(
    r"(seconds|per_second|latency|memory|_mib|finished|created|started|^time$|timestamp_run|"
    r"^artifacts$|^files$|^pid$|^host$|load_average)",
    re.IGNORECASE,
)
#: files whose content is times, versions or rendered text
SKIPPED_NAMES = {"environment.json", "environment.csv", "run.lock"}
SKIPPED_SUFFIXES = {".html", ".md", ".png", ".svg", ".log"}


def _files(root: Path) -> dict[str, Path]:
    return {
        p.relative_to(root).as_posix(): p
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not VOLATILE.search(str(k))}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _same_class(a: Any, b: Any) -> bool:
    """Whether two recorded class paths (``"module:Class"``) name one class: a model that
    moved to another module (its old path kept as an alias) is the same model."""
    if not (isinstance(a, str) and isinstance(b, str) and ":" in a and ":" in b):
        return False
    from recarena._classes import resolve_class

    try:
        return resolve_class(a) is resolve_class(b)
    except Exception:  # noqa: BLE001 - a path that does not import is a difference
        return False


def _first_difference(a: Any, b: Any, where: str = "") -> str | None:
    if where.endswith("/class") and a != b and _same_class(a, b):
        return None
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                return f"{where}/{key}: only in {'after' if key not in a else 'before'}"
            found = _first_difference(a[key], b[key], f"{where}/{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where}: {len(a)} entries before, {len(b)} after"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = _first_difference(x, y, f"{where}[{i}]")
            if found:
                return found
        return None
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return None
    return None if a == b else f"{where or '/'}: {a!r} before, {b!r} after"


def _tables(a: pd.DataFrame, b: pd.DataFrame) -> str | None:
    a = a[[c for c in a.columns if not VOLATILE.search(str(c))]]
    b = b[[c for c in b.columns if not VOLATILE.search(str(c))]]
    if list(a.columns) != list(b.columns):
        return f"columns {list(a.columns)} before, {list(b.columns)} after"
    if len(a) != len(b):
        return f"{len(a)} rows before, {len(b)} after"
    for column in a.columns:
        x, y = a[column].to_numpy(), b[column].to_numpy()
        if x.dtype != object and y.dtype != object:
            same = (x == y) | (pd.isna(x) & pd.isna(y))
        else:  # lists, arrays or mixed values in one column: value by value
            same = np.array([_same_value(u, v) for u, v in zip(x, y, strict=True)], bool)
        if not bool(same.all()):
            row = int(np.flatnonzero(~same)[0])
            return f"column {column!r}, row {row}: {x[row]!r} before, {y[row]!r} after"
    return None


def _same_value(u: Any, v: Any) -> bool:
    if isinstance(u, (list, tuple, np.ndarray)) or isinstance(v, (list, tuple, np.ndarray)):
        return np.array_equal(np.asarray(u, dtype=object), np.asarray(v, dtype=object))
    if u is None or v is None:
        return u is v
    if isinstance(u, float) and isinstance(v, float) and math.isnan(u) and math.isnan(v):
        return True
    return bool(u == v)


def compare_file(rel: str, before: Path, after: Path) -> str | None:
    """The first difference between two versions of one run file, or None."""
    suffix = before.suffix
    if suffix == ".json":
        return _first_difference(
            _strip(json.loads(before.read_text())), _strip(json.loads(after.read_text()))
        )
    if suffix == ".parquet":
        return _tables(pd.read_parquet(before), pd.read_parquet(after))
    if suffix == ".csv":
        return _tables(pd.read_csv(before), pd.read_csv(after))
    if suffix == ".npz":
        with np.load(before, allow_pickle=False) as x, np.load(after, allow_pickle=False) as y:
            if sorted(x.files) != sorted(y.files):
                return f"arrays {sorted(x.files)} before, {sorted(y.files)} after"
            for name in x.files:
                if not np.array_equal(x[name], y[name], equal_nan=x[name].dtype.kind == "f"):
                    return f"array {name!r} differs"
        return None
    return None if before.read_bytes() == after.read_bytes() else "bytes differ"


def diff_runs(before: Path, after: Path) -> tuple[list[str], int, int]:
    """(differences, files compared, files skipped) between two run folders."""
    a, b = _files(before), _files(after)
    out = [f"{rel}: only in {before}" for rel in sorted(a.keys() - b.keys())]
    out += [f"{rel}: only in {after}" for rel in sorted(b.keys() - a.keys())]
    compared = skipped = 0
    for rel in sorted(a.keys() & b.keys()):
        path = a[rel]
        if path.name in SKIPPED_NAMES or path.suffix in SKIPPED_SUFFIXES:
            skipped += 1
            continue
        compared += 1
        found = compare_file(rel, path, b[rel])
        if found:
            out.append(f"{rel}: {found}")
    return out, compared, skipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    for folder in (args.before, args.after):
        if not (folder / "run.json").is_file():
            parser.error(f"{folder} is not a run folder (no run.json)")
    differences, compared, skipped = diff_runs(args.before, args.after)
    for line in differences:
        print(line)
    print(
        f"{compared} files compared, {skipped} not compared (report, tables as text, "
        f"environment): {len(differences)} difference(s)"
    )
    sys.exit(1 if differences else 0)


if __name__ == "__main__":
    main()
