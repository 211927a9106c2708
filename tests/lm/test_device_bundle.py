"""scripts/device_bundle.py: an encoder packed with float16 weights loads and encodes as before."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from recarena._io import sha256_file

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "device_bundle.py"
_spec = importlib.util.spec_from_file_location("device_bundle", SCRIPT)
device_bundle = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(device_bundle)

TEXTS = [f"Movie {i} ({1950 + i}). Genres: {'Drama' if i % 2 else 'Comedy'}." for i in range(40)]


def test_the_encoder_travels_as_float16_and_the_rounding_is_measured(
    tiny_bert_dir: Path, tmp_path: Path
):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel

    from recarena.lm.encoder import ItemTextEncoder

    record = device_bundle.pack_encoder(str(tiny_bert_dir), tmp_path, tmp_path / "bundle", TEXTS)
    packed = tmp_path / "bundle" / tiny_bert_dir.name
    weights = load_file(str(packed / "model.safetensors"))
    assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.float16}
    assert {p.name for p in tiny_bert_dir.iterdir()} == {p.name for p in packed.iterdir()}
    original = AutoModel.from_pretrained(tiny_bert_dir)
    size = sum(p.numel() for p in original.parameters())
    # half the float32 bytes, and the rounding error is that of float16 on these weights
    assert (packed / "model.safetensors").stat().st_size < 0.6 * 4 * size
    largest = max(float(p.detach().abs().max()) for p in original.parameters())
    assert 0 < record["max_abs_rounding_error"] <= largest * 2**-11
    assert record["sha256"] == sha256_file(packed / "model.safetensors")
    check = record["float16_check"]
    assert check["texts"] == len(TEXTS) and check["pooled_cosine_min"] > 0.999
    # what the check measured: the packed folder encodes (in float32) as the original does
    a = ItemTextEncoder(tiny_bert_dir, device="cpu", dtype="float32", progress=False)
    b = ItemTextEncoder(packed, device="cpu", dtype="float32", progress=False)
    cosines = (a.encode(TEXTS) * b.encode(TEXTS)).sum(1)
    assert np.isclose(cosines.min(), check["pooled_cosine_min"], atol=1e-6)
    json.dumps(record)  # goes into manifest.json


def test_a_folder_without_weights_is_refused(tiny_bert_dir: Path, tmp_path: Path):
    empty = tmp_path / "no-weights"
    empty.mkdir()
    (empty / "config.json").write_text((tiny_bert_dir / "config.json").read_text())
    with pytest.raises(SystemExit, match="no model.safetensors or pytorch_model.bin"):
        device_bundle.pack_encoder(str(empty), tmp_path, tmp_path / "bundle", TEXTS)


def test_the_working_tree_counts_what_a_device_call_carries(tmp_path: Path):
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (repo / ".gitignore").write_text("/ignored/\n")
    (repo / "tracked.txt").write_bytes(b"x" * 100)
    (repo / "untracked.txt").write_bytes(b"y" * 10)
    (repo / "ignored").mkdir()
    (repo / "ignored" / "big.bin").write_bytes(b"z" * 1000)
    (repo / "staging").mkdir()
    (repo / "staging" / "part.bin").write_bytes(b"w" * 500)
    subprocess.run(["git", "add", "tracked.txt"], cwd=repo, check=True)
    gitignore = len((repo / ".gitignore").read_bytes())
    assert device_bundle.working_tree_size(repo, []) == 100 + 10 + 500 + gitignore
    assert device_bundle.working_tree_size(repo, [repo / "staging"]) == 100 + 10 + gitignore
