"""Helpers shared by the language-model recommenders: the trainable part of an encoder
(LoRA adapters or the top layers' weights), saving and loading a tuned encoder, and the
item pool of a cold-item validation."""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from recarena._io import publish_mode

logger = logging.getLogger(__name__)


#: linear-layer names that hold attention queries and values, tried in this order when
#: peft has no default LoRA targets for an architecture
_LORA_TARGET_PAIRS = (("query", "value"), ("q", "v"), ("q_proj", "v_proj"), ("q_lin", "v_lin"))


def cold_validation_pool(truth: Any, trained_items: np.ndarray) -> np.ndarray | None:
    """Items to rank for early stopping: those never trained on, when validation is cold.

    A cold-item split holds whole items out of training and ranks the held-out ones among
    the new items only (the runner's item pool). ``fit`` is not told that pool, but it shows:
    no validation item (a column of ``truth``) has a training interaction. Then the items
    without training interactions are returned, so early stopping measures the ranking the
    split asks for rather than how new items fare against trained ones (which only gets
    worse as the trained items' ID embeddings grow). Otherwise None: the full catalog.
    """
    held_out = np.unique(truth.tocoo().col)
    if len(held_out) == 0 or trained_items[held_out].any():
        return None
    return np.flatnonzero(~trained_items)


def trainable_encoder(
    lm: nn.Module,
    tuning: str,
    n_top: int,
    *,
    lora_r: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.1,
    lora_targets: list[str] | None = None,
) -> nn.Module:
    """``lm`` with its top ``n_top`` layers trainable: LoRA adapters (peft) or their weights.

    ``"lora"``: adapters on the attention queries and values of the top layers (or
    ``lora_targets``), everything else frozen; ``"full"``: the weights of the top layers,
    everything else (embeddings, lower layers, the pooler) frozen.
    """
    n_layers = int(getattr(lm.config, "num_hidden_layers", 0) or 0)
    top = list(range(n_layers - n_top, n_layers))
    if tuning == "full":
        for name, p in lm.named_parameters():
            # the pooler is never used (mean pooling) and the embeddings' output is
            # cached: a trainable unused weight would stall distributed training
            p.requires_grad_(layer_index(name) in top)
        return lm
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=lora_targets or default_lora_targets(lm),
        layers_to_transform=top if n_top < n_layers else None,
        bias="none",
    )
    return get_peft_model(lm, config)


def layer_index(name: str) -> int | None:
    """Transformer layer of a parameter name (``encoder.layer.3.attention...`` -> 3)."""
    match = re.search(r"\.(?:layer|layers|h|block)\.(\d+)\.", f".{name}")
    return int(match.group(1)) if match else None


def default_lora_targets(lm: nn.Module) -> list[str] | None:
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as known

    model_type = getattr(lm.config, "model_type", "")
    if model_type in known:
        return None  # peft knows the architecture
    leaves = {name.rsplit(".", 1)[-1] for name, m in lm.named_modules() if isinstance(m, nn.Linear)}
    for pair in _LORA_TARGET_PAIRS:
        if set(pair) <= leaves:
            return list(pair)
    raise ValueError(
        f"no LoRA target layers known for {model_type!r}; name them with lora_targets "
        f"(linear layers: {sorted(leaves)})"
    )


def save_pretrained_atomically(lm: Any, tokenizer: Any, target: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        lm.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        publish_mode(tmp)  # mkdtemp made it 0o700
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_saved_lm(folder: Path, tuning: str, base: str) -> tuple[Any, Any]:
    """The saved encoder (LoRA: the adapter on its base model) and tokenizer, on the CPU."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from recarena.lm.loading import dtype_kwarg

    if not folder.is_dir():
        return None, None
    tokenizer = AutoTokenizer.from_pretrained(folder)
    as_float32 = dtype_kwarg(torch.float32)  # as trained, whatever the base was stored in
    if tuning == "full":
        return AutoModel.from_pretrained(folder, **as_float32).eval(), tokenizer
    from peft import PeftModel

    try:
        base_model = AutoModel.from_pretrained(base, **as_float32)
    except OSError as exc:
        logger.warning(
            "the base encoder %s of this LoRA adapter is not available (%s): scores work, "
            "encode_texts does not",
            base,
            exc,
        )
        return None, tokenizer
    return PeftModel.from_pretrained(base_model, folder).eval(), tokenizer
