"""Benchmark: streaming an Amazon-2018-sized reviews file into a `Dataset`.

Generates (once, cached in ``--folder``) a reviews file of ``--lines`` JSON lines in the 2018
layout with realistic field sizes (``reviewText`` of a few hundred characters, ``summary``,
``reviewerName``, ``style``, ``vote``...), popularity-skewed users and products, and a
metadata file with one line per product (title, brand, categories, an HTML description; a
few products without metadata). Both are gzipped like the official files (``--plain``
writes plain ``.json``).

Then, in a fresh child process (so its peak memory is the load's alone), it runs
`recarena.data.loaders.amazon.load_amazon` on them and prints the wall time, the peak
resident memory (``getrusage`` maximum RSS, and the maximum of ``/proc/self/statm`` sampled
every 20 ms) next to the raw file sizes, plus the memory the imports alone take.

Run: ``python benchmarks/bench_amazon_stream.py`` (5 million lines; about 3 GB uncompressed,
generated in a few minutes on 2 cores; ``--lines 200000`` for a quick run).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

WORDS = (
    "the", "this", "product", "works", "great", "quality", "price", "love", "bought", "my",
    "daughter", "easy", "use", "would", "recommend", "again", "size", "fits", "well", "color",
    "looks", "nice", "after", "months", "still", "good", "value", "money", "perfect", "gift",
    "arrived", "quickly", "broke", "returned", "disappointed", "smell", "skin", "hair", "soft",
    "cheap", "sturdy", "small", "large", "battery", "screen", "sound", "comfortable", "fast",
    "shipping", "exactly", "described", "not", "worth", "it", "five", "stars", "excellent",
)  # fmt: skip


def _texts(rng: np.random.Generator, n: int, mean_words: float) -> list[str]:
    lengths = np.maximum(1, rng.lognormal(np.log(mean_words), 0.8, size=n).astype(int))
    words = np.array(WORDS, dtype=object)
    return [" ".join(words[rng.integers(0, len(words), size=k)]) for k in lengths]


def _ids(rng: np.random.Generator, n: int, prefix: str, width: int) -> np.ndarray:
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
    chars = alphabet[rng.integers(0, len(alphabet), size=(n, width))]
    return np.array([prefix + "".join(row) for row in chars], dtype=object)


def generate(folder: Path, lines: int, users: int, items: int, plain: bool, seed: int) -> dict:
    """Write the reviews and metadata files; return their sizes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".json" if plain else ".json.gz"
    reviews_path = folder / f"Bench_5{suffix}"
    meta_path = folder / f"meta_Bench{suffix}"
    user_ids = _ids(rng, users, "A", 13)
    item_ids = _ids(rng, items, "B0", 8)
    pool = _texts(rng, 20_000, 60)  # review texts: about 350 characters on average
    summaries = _texts(rng, 5_000, 4)
    names = _texts(rng, 5_000, 2)

    def opener(path: Path):
        return open(path, "wb") if plain else gzip.open(path, "wb", compresslevel=1)

    # long-tailed activity and popularity, every user and item with some weight
    user_weight = rng.lognormal(0.0, 1.0, users)
    user_weight /= user_weight.sum()
    item_weight = rng.lognormal(0.0, 1.6, items)
    item_weight /= item_weight.sum()
    raw_bytes = 0
    chunk = 200_000
    started = time.perf_counter()
    with opener(reviews_path) as out:
        for start in range(0, lines, chunk):
            n = min(chunk, lines - start)
            u = rng.choice(users, size=n, p=user_weight)
            i = rng.choice(items, size=n, p=item_weight)
            stars = rng.choice([1.0, 2.0, 3.0, 4.0, 5.0], n, p=[0.07, 0.05, 0.09, 0.19, 0.6])
            times = rng.integers(946_684_800, 1_538_352_000, n)
            texts = rng.integers(0, len(pool), n)
            rows = []
            for k in range(n):
                t = int(times[k])
                day = time.gmtime(t)
                record = {
                    "overall": float(stars[k]),
                    "vote": str(int(rng.integers(2, 40))) if k % 7 == 0 else None,
                    "verified": bool(k % 3),
                    "reviewTime": f"{day.tm_mon:02d} {day.tm_mday}, {day.tm_year}",
                    "reviewerID": user_ids[u[k]],
                    "asin": item_ids[i[k]],
                    "style": {"Size:": " Large", "Color:": " Black"} if k % 4 == 0 else None,
                    "reviewerName": names[k % len(names)],
                    "reviewText": pool[texts[k]],
                    "summary": summaries[k % len(summaries)],
                    "unixReviewTime": t,
                }
                rows.append(json.dumps({key: v for key, v in record.items() if v is not None}))
            data = ("\n".join(rows) + "\n").encode()
            raw_bytes += len(data)
            out.write(data)
    meta_raw = 0
    descriptions = _texts(rng, 5_000, 80)
    with opener(meta_path) as out:
        rows = []
        for k, asin in enumerate(item_ids):
            if k % 30 == 0:
                continue  # about 3% of the products have no metadata line
            record = {
                "category": ["Bench", "Tools &amp; Things", f"Group {k % 50}"],
                "description": [f"<p>{descriptions[k % len(descriptions)]}</p>", "<br>More."],
                "title": f"Product {k} {names[k % len(names)]}",
                "brand": f"Brand{k % 997}",
                "feature": ["durable", "light"],
                "main_cat": "Bench",
                "also_buy": list(item_ids[(k + 1) % items : (k + 4) % items]),
                "asin": asin,
            }
            rows.append(json.dumps(record))
            if len(rows) == 50_000:
                data = ("\n".join(rows) + "\n").encode()
                meta_raw += len(data)
                out.write(data)
                rows = []
        if rows:
            data = ("\n".join(rows) + "\n").encode()
            meta_raw += len(data)
            out.write(data)
    return {
        "reviews": str(reviews_path),
        "meta": str(meta_path),
        "lines": lines,
        "reviews_bytes_on_disk": reviews_path.stat().st_size,
        "reviews_bytes_uncompressed": raw_bytes,
        "meta_bytes_on_disk": meta_path.stat().st_size,
        "meta_bytes_uncompressed": meta_raw,
        "generate_s": round(time.perf_counter() - started, 1),
        "params": {"users": users, "items": items, "plain": plain, "seed": seed},
    }


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _high_water_mark() -> int:
    """The kernel's peak resident set (VmHWM) of this process, in bytes."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def load_only(reviews: str, meta: str, min_rating: float | None) -> None:
    """Runs in the child: load once, print one JSON line of measurements."""
    import pandas  # noqa: F401 - imported before measuring, as any run has it

    from recarena.data.loaders.amazon import load_amazon

    baseline = _rss_bytes()
    peak = [baseline]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started, cpu_started = time.perf_counter(), time.process_time()
    ds = load_amazon(reviews, meta, min_rating=min_rating)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    stop.set()
    sampler.join()
    peak[0] = max(peak[0], _rss_bytes())
    frame_bytes = int(ds.interactions.memory_usage(deep=True).sum())
    print(
        json.dumps(
            {
                "wall_s": round(wall, 2),
                "cpu_s": round(cpu, 2),
                "load_average": os.getloadavg()[0],
                "peak_rss_statm": peak[0],
                "peak_rss_hwm": _high_water_mark(),
                "peak_rss_getrusage": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "rss_after_imports": baseline,
                "rss_after_load": _rss_bytes(),
                "interactions": ds.n_interactions,
                "users": ds.n_users,
                "items": ds.n_items,
                "interactions_frame_bytes": frame_bytes,
                "text_coverage": ds.info["text_coverage"],
            }
        )
    )


def _mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=5_000_000)
    parser.add_argument("--users", type=int, default=1_200_000)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/recarena-bench-amazon"))
    parser.add_argument("--plain", action="store_true", help="plain .json instead of .json.gz")
    parser.add_argument("--min-rating", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--load-only", nargs=2, metavar=("REVIEWS", "META"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_only:
        load_only(*args.load_only, args.min_rating)
        return

    record_path = args.folder / f"files-{args.lines}{'-plain' if args.plain else ''}.json"
    params = {"users": args.users, "items": args.items, "plain": args.plain, "seed": args.seed}
    files = json.loads(record_path.read_text()) if record_path.is_file() else None
    if files is None or files["params"] != params or not Path(files["reviews"]).is_file():
        print(f"generating {args.lines:,} review lines in {args.folder} ...", flush=True)
        files = generate(args.folder, args.lines, args.users, args.items, args.plain, args.seed)
        record_path.write_text(json.dumps(files))
    command = [sys.executable, __file__, "--load-only", files["reviews"], files["meta"]]
    if args.min_rating is not None:
        command += ["--min-rating", str(args.min_rating)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(result.stderr)
    m = json.loads(result.stdout.strip().splitlines()[-1])
    cpu = platform.processor() or platform.machine()
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs ({cpu})")
    print(
        f"reviews: {files['lines']:,} lines, {_mb(files['reviews_bytes_on_disk'])} on disk, "
        f"{_mb(files['reviews_bytes_uncompressed'])} uncompressed; metadata "
        f"{_mb(files['meta_bytes_on_disk'])} on disk, {_mb(files['meta_bytes_uncompressed'])} "
        "uncompressed"
    )
    print(
        f"loaded: {m['interactions']:,} interactions, {m['users']:,} users, {m['items']:,} "
        f"items, text coverage {m['text_coverage']:.1%}"
    )
    print(
        f"wall time: {m['wall_s']:.1f} s ({files['lines'] / m['wall_s']:,.0f} lines/s); CPU "
        f"time {m['cpu_s']:.1f} s ({files['lines'] / m['cpu_s']:,.0f} lines/s); machine load "
        f"average {m['load_average']:.1f} on {os.cpu_count()} CPUs"
    )
    print(
        f"peak RSS: {_mb(m['peak_rss_hwm'])} (VmHWM; {_mb(m['peak_rss_statm'])} sampled every "
        f"20 ms); after imports {_mb(m['rss_after_imports'])}, after the load "
        f"{_mb(m['rss_after_load'])}; interactions frame {_mb(m['interactions_frame_bytes'])}"
    )
    ratio = m["peak_rss_hwm"] / files["reviews_bytes_uncompressed"]
    print(f"peak RSS / uncompressed reviews: {ratio:.2f}")


if __name__ == "__main__":
    main()
