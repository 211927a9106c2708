"""Pack what a GPU machine without network needs for `benchmarks/bench_gpu.py` into one folder.

The lent GPU machines of this project reach no registry and no model hub, and a call carries
at most 64 MiB (the working tree included). minilm-l6's float32 weights alone are 91 MB, so
the bundle carries them as float16 (every weight rounded once; the loader casts them back to
the dtype it asks for) and measures what that costs: the encoder's pooled vectors of the data
set's item texts, float32 weights against float16-stored ones, both computed in float32
(cosine and the largest rounding error go into ``manifest.json``, and `bench_gpu.py` prints
them beside its numbers).

The bundle (default ``.device/``, ignored by git) holds:

``cache/datasets/<name>/``
    The data set as RecArena's cache keeps it (its checksums travel with it).
``minilm-l6/``
    The encoder's folder with float16 weights, its tokenizer and its sentence-transformers
    pooling files (so the default pooling stays the checkpoint's mean pooling).
``wheels/``
    The packages the GPU machine's image lacks (pydantic and what it needs), for CPython
    3.12 on x86-64 Linux, installed there with ``pip install --no-index --target``.
``manifest.json``
    What was packed, with sha256s, sizes and the float16 check.

It refuses to finish when the bundle and the working tree together exceed the carry limit.

Usage::

    python scripts/device_bundle.py                        # ML-100k + minilm-l6 into .device/
    python scripts/device_bundle.py --out /tmp/bundle --cache-dir /tmp/rc

Then, with a device machine lent to the session, one call with ``carry = [".device"]``::

    python3 benchmarks/bench_gpu.py --bundle .device --out "$OUT"
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recarena._io import sha256_file

if TYPE_CHECKING:
    from recarena.data.dataset import Dataset

#: the carry limit of a device call: working tree + carried paths
CARRY_LIMIT = 64 * 2**20
#: packages the GPU machine's image lacks, pinned to what this project is tested with
WHEELS = [
    "pydantic==2.14.4",
    "pydantic-core==2.50.5",
    "annotated-types==0.7.0",
    "typing-inspection==0.4.2",
]
#: where pip looks for them: CPython 3.12 on x86-64 Linux (the GPU machine's Python)
PLATFORMS = [
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
]
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def working_tree_size(repo: Path, exclude: list[Path]) -> int:
    """Bytes of the tracked files and the untracked ones git does not ignore (but ``exclude``)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    total = 0
    for name in filter(None, listed):
        path = repo / os.fsdecode(name)
        parents = path.resolve().parents
        if path.is_file() and not any(folder in parents for folder in exclude):
            total += path.stat().st_size
    return total


def pack_dataset(dataset: Dataset, cache_dir: Path, bundle: Path) -> dict[str, Any]:
    """Copy the cache's folder of ``dataset`` (a catalog data set loaded from ``cache_dir``)."""
    name = dataset.name
    source = cache_dir / "datasets"
    target = bundle / "cache" / "datasets"
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for entry in source.iterdir():
        # the data set's folder (and its wheel, where it was fetched from PyPI), not others
        if entry.name.startswith(name) or entry.name.startswith(f".{name}"):
            if entry.is_dir():
                shutil.copytree(entry, target / entry.name, dirs_exist_ok=True)
            else:
                shutil.copy2(entry, target / entry.name)
            copied.append(entry.name)
    if not copied:
        raise SystemExit(f"{source}: no folder of {name} after fetching it")
    return {
        "name": name,
        "files": sorted(copied),
        "bytes": folder_size(target),
        "items": int(dataset.n_items),
    }


def pack_encoder(model: str, cache_dir: Path, bundle: Path, texts: list[str]) -> dict[str, Any]:
    """Copy the encoder's folder with float16 weights, and measure what the rounding costs."""
    import torch
    from safetensors.torch import load_file, save_file

    from recarena.lm.zoo import ZOO, get_model

    source = get_model(model, cache_dir, progress=False) if model in ZOO else Path(model)
    if not source.is_dir():
        raise SystemExit(f"{source}: not a transformers folder (the bundle packs those only)")
    target = bundle / Path(model).name
    if target.exists():
        shutil.rmtree(target)
    weights = next((source / f for f in WEIGHT_FILES if (source / f).exists()), None)
    if weights is None:
        raise SystemExit(f"{source}: no {' or '.join(WEIGHT_FILES)}")
    shutil.copytree(
        source,
        target,
        ignore=shutil.ignore_patterns(*WEIGHT_FILES, "*.onnx", "onnx", "openvino", "*.h5"),
    )
    if weights.suffix == ".safetensors":
        state = load_file(str(weights))
    else:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    half = {
        k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous()
        for k, v in state.items()
    }
    largest = max(float(v.abs().max()) for v in state.values() if v.is_floating_point())
    if largest >= float(torch.finfo(torch.float16).max):
        raise SystemExit(f"{weights}: a weight of {largest:g} does not fit in float16")
    error = max(
        float((half[k].float() - v.float()).abs().max())
        for k, v in state.items()
        if v.is_floating_point()
    )
    save_file(half, str(target / "model.safetensors"), metadata={"format": "pt"})
    check = _cosines(source, target, texts)
    return {
        "model": model,
        "source": str(source),
        "source_sha256": sha256_file(weights),
        "sha256": sha256_file(target / "model.safetensors"),
        "bytes": folder_size(target),
        "weights_dtype": "float16",
        "max_abs_rounding_error": error,
        "float16_check": check,
    }


def _cosines(source: Path, target: Path, texts: list[str]) -> dict[str, Any]:
    """The pooled vectors of ``texts`` from both folders, both computed in float32."""
    import numpy as np

    from recarena.lm.encoder import ItemTextEncoder

    def encode(folder: Path) -> np.ndarray:
        encoder = ItemTextEncoder(folder, device="cpu", dtype="float32", progress=False)
        return np.asarray(encoder.encode(texts), dtype=np.float64)

    a, b = encode(source), encode(target)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {
        "texts": len(texts),
        "pooled_cosine_min": float(cos.min()),
        "pooled_cosine_mean": float(cos.mean()),
    }


def pack_wheels(bundle: Path) -> list[dict[str, Any]]:
    target = bundle / "wheels"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--python-version", "3.12", "--implementation", "cp", "-d", str(target)]
    for platform_tag in PLATFORMS:
        command += ["--platform", platform_tag]
    subprocess.run([*command, *WHEELS], check=True, capture_output=True)
    return [
        {"file": w.name, "sha256": sha256_file(w), "bytes": w.stat().st_size}
        for w in sorted(target.glob("*.whl"))
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=".device", help="the bundle folder (replaced)")
    parser.add_argument("--cache-dir", default=None, help="RecArena cache (default: the usual)")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--model", default="minilm-l6", help="a zoo encoder or a local folder")
    args = parser.parse_args()
    from recarena.cache import resolve_cache_dir
    from recarena.data.catalog import load_catalog_dataset

    cache_dir = resolve_cache_dir(args.cache_dir)
    dataset = load_catalog_dataset(args.dataset, cache_dir, progress=False)  # fetched once
    repo = Path(__file__).resolve().parents[1]
    out = Path(args.out).resolve()
    staging = Path(tempfile.mkdtemp(prefix=".bundle-", dir=out.parent))
    try:
        manifest: dict[str, Any] = {"carry_limit_bytes": CARRY_LIMIT}
        manifest["dataset"] = pack_dataset(dataset, cache_dir, staging)
        texts = dataset.item_text("{title}. Genres: {genres}.")  # bench_cross_encoder's template
        manifest["encoder"] = pack_encoder(args.model, cache_dir, staging, texts)
        manifest["wheels"] = pack_wheels(staging)
        bundle_bytes = folder_size(staging)
        tree_bytes = working_tree_size(repo, [out, staging])
        manifest["bundle_bytes"] = bundle_bytes
        manifest["working_tree_bytes"] = tree_bytes
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        total = bundle_bytes + tree_bytes
        if total > CARRY_LIMIT:
            raise SystemExit(
                f"bundle {bundle_bytes / 2**20:.1f} MiB + working tree {tree_bytes / 2**20:.1f} "
                f"MiB = {total / 2**20:.1f} MiB, over the {CARRY_LIMIT / 2**20:.0f} MiB a device "
                "call carries"
            )
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    check = manifest["encoder"]["float16_check"]
    print(
        f"{out}: {bundle_bytes / 2**20:.1f} MiB (+ working tree {tree_bytes / 2**20:.1f} MiB; "
        f"limit {CARRY_LIMIT / 2**20:.0f} MiB). {args.model} as float16: largest rounding "
        f"error {manifest['encoder']['max_abs_rounding_error']:.2e}, pooled cosine against "
        f"float32 min {check['pooled_cosine_min']:.6f}, mean {check['pooled_cosine_mean']:.6f} "
        f"over {check['texts']} item texts"
    )


if __name__ == "__main__":
    main()
