"""Calls on the decoder (a transformers causal LM, with or without a LoRA adapter): a
prompt's key-value cache shared by every candidate, per-token log-probabilities, the
generative loss. The decoder is imported when a ranker loads it, so importing this module
needs no torch."""

from __future__ import annotations

import copy
import inspect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def generative_loss(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy of the positive title's tokens (labels mask the prompt)."""
    return model(**batch).loss


def expand_cache(prefix: Any, batch: int) -> Any:
    """A cache for ``batch`` continuations of one cached prompt, sharing its tensors.

    The returned cache is a new object whose layers hold the prompt's keys and values
    expanded along the batch dimension (a stride-0 view, no copy). The forward pass
    concatenates new keys onto them into fresh tensors (``DynamicLayer.update``), so
    ``prefix`` is never modified and can serve every batch. Layer kinds that might write in
    place get a deep copy repeated along the batch (``batch_repeat_interleave``) instead.
    """
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    out = copy.copy(prefix)
    layers = []
    for layer in prefix.layers:
        if type(layer) in (DynamicLayer, DynamicSlidingWindowLayer) and layer.is_initialized:
            twin = copy.copy(layer)
            twin.keys = layer.keys.expand(batch, *layer.keys.shape[1:])
            twin.values = layer.values.expand(batch, *layer.values.shape[1:])
        else:
            twin = copy.deepcopy(layer)
            if getattr(twin, "is_initialized", False):
                twin.batch_repeat_interleave(batch)
        layers.append(twin)
    out.layers = layers
    return out


def select_cache(prefix: Any, index: torch.Tensor) -> Any:
    """A cache whose batch row ``i`` is row ``index[i]`` of ``prefix`` (differentiable).

    The layers' tensors are gathered into new ones (``batch_select_indices`` reassigns
    them), so ``prefix`` is never modified and gradients flow back to it.
    """
    out = copy.copy(prefix)
    layers = []
    for layer in prefix.layers:
        twin = copy.copy(layer)
        if getattr(twin, "is_initialized", True):
            twin.batch_select_indices(index)
        layers.append(twin)
    out.layers = layers
    return out


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) at each position: the target's logit minus the log-sum-exp, in float32."""
    logits = logits.float()
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - logits.logsumexp(-1)


def output_cache(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def cache_kwarg(lm: Any) -> str:
    """transformers >= 5.x names the cache argument ``cache``; before, ``past_key_values``."""
    base = getattr(lm, "module", lm)  # a DistributedDataParallel wrapper holds the model
    base = base.get_base_model() if hasattr(base, "get_base_model") else base
    params = inspect.signature(base.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def model_device(lm: Any) -> torch.device:
    return next(lm.parameters()).device


def count_lora(model: Any) -> int:
    return int(sum(p.numel() for n, p in model.named_parameters() if "lora_" in n))
