"""Train only the top layers of a text encoder: the layers below run once per item, cached.

When only the top ``n`` transformer layers of an encoder are trained (their weights, or LoRA
adapters on them), every layer below computes the same states for an item's text at every
step. `TopLayerEncoder` computes those states once per item (the input of the first trained
layer, real tokens only), keeps them, and from then on encodes an item by running the top
layers alone: a training step, and the re-encoding of the whole catalog for validation, cost
``n / n_layers`` of a full pass (less the embeddings, which are cheap).

How the top layers run: the model's own ``forward`` is called with its layer list cut down
to the top layers, and a forward pre-hook hands the first of them the cached states in
place of the embeddings' output. The model still builds its attention mask and position
inputs itself, so nothing architecture-specific is re-implemented here; it works for any
encoder that keeps its layers in one ``nn.ModuleList`` of ``config.num_hidden_layers``
modules whose first argument is the hidden states (BERT, RoBERTa, MPNet, E5...), with or
without peft's LoRA wrapped around it. With ``n`` equal to the number of layers the cache
holds the embeddings' output, and only the embedding lookup is saved.

The cache needs ``tokens x hidden`` floats: 30,000 tokens x 384 = 46 MB for the MovieLens-100k
titles with minilm-l6.

This module imports torch at import time: import it inside the functions that train.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class _Captured(Exception):
    """Raised by the capturing pre-hook: the layers above are not run."""


def transformer_layers(lm: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """The module that holds the encoder's layer list, the attribute's name and the list.

    The list is the first ``nn.ModuleList`` of exactly ``config.num_hidden_layers`` modules
    (``encoder.layer`` in BERT, also under peft's wrappers).
    """
    config = getattr(lm, "config", None)
    n_layers = int(getattr(config, "num_hidden_layers", 0) or 0)
    for module in lm.modules():
        for name, child in module.named_children():
            if isinstance(child, nn.ModuleList) and n_layers and len(child) == n_layers:
                return module, name, child
    raise ValueError(
        f"no list of {n_layers} transformer layers found in {type(lm).__name__}: only the "
        "top layers of BERT-style encoders can be trained over cached states"
    )


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L2-normalised mean of the real tokens' hidden states (float32)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    return F.normalize(pooled.float(), dim=-1)


class TopLayerEncoder:
    """Encode item texts with the top ``n_top`` layers of ``lm`` over cached lower states.

    Parameters
    ----------
    lm
        The encoder (a transformers base model, possibly wrapped by peft). Only its top
        ``n_top`` layers should be trained; the cache assumes the rest never change.
    n_top
        Trained layers, counted from the top (1 to the number of layers).
    token_ids
        Token ids of every item's text (with the special tokens), one list per item.
    pad_id
        Padding token id.

    Call `build_cache` once (after ``lm`` is on its device) before encoding.
    """

    def __init__(self, lm: nn.Module, n_top: int, token_ids: Sequence[Sequence[int]], pad_id: int):
        self.lm = lm
        self.owner, self.attribute, self.layers = transformer_layers(lm)
        if not 1 <= n_top <= len(self.layers):
            raise ValueError(f"n_top must be between 1 and {len(self.layers)}, got {n_top}")
        self.start = len(self.layers) - n_top
        self.ids = [list(row) if len(row) else [pad_id] for row in token_ids]
        self.pad_id = int(pad_id)
        self.lengths = np.array([len(row) for row in self.ids], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)
        self.states: torch.Tensor | None = None

    # ------------------------------------------------------------------ cutting the stack
    @contextlib.contextmanager
    def _cut(self, start: int, stop: int, hook: Any) -> Iterator[None]:
        """Inside the block ``lm`` runs layers ``start:stop``; ``hook`` pre-hooks the first
        trained layer."""
        handle = self.layers[self.start].register_forward_pre_hook(hook, with_kwargs=True)
        setattr(self.owner, self.attribute, self.layers[start:stop])
        try:
            yield
        finally:
            setattr(self.owner, self.attribute, self.layers)
            handle.remove()

    def top_modules(self) -> nn.ModuleList:
        """The trained layers (the same modules as inside ``lm``)."""
        return self.layers[self.start :]

    # ------------------------------------------------------------------ batches
    def token_batch(self, rows: np.ndarray, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded token ids and attention mask of items ``rows``."""
        width = int(self.lengths[rows].max())
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for r, i in enumerate(rows):
            ids[r, : self.lengths[i]] = self.ids[i]
            mask[r, : self.lengths[i]] = 1
        return torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)

    def length_batches(self, size: int) -> Iterator[np.ndarray]:
        """Item ids in batches of similar length (longest first: little padding)."""
        order = np.argsort(-self.lengths, kind="stable")
        for begin in range(0, len(order), size):
            yield order[begin : begin + size]

    # ------------------------------------------------------------------ the cache
    @torch.inference_mode()
    def build_cache(self, batch_size: int = 128, autocast: Any = None) -> None:
        """Run the frozen lower layers over every item once and keep their output.

        ``autocast``: a context manager factory for the forward passes (e.g. an
        Accelerator's ``autocast``); the states are kept in float32.
        """
        device = next(self.lm.parameters()).device
        was_training = self.lm.training
        self.lm.eval()
        captured: list[torch.Tensor] = []

        def capture(module: nn.Module, args: tuple, kwargs: dict) -> None:
            captured.append(args[0] if args else kwargs["hidden_states"])
            raise _Captured

        total = int(self.offsets[-1])
        states: torch.Tensor | None = None
        try:
            with self._cut(0, self.start + 1, capture):
                for rows in self.length_batches(batch_size):
                    ids, mask = self.token_batch(rows, device)
                    with (
                        autocast() if autocast is not None else contextlib.nullcontext(),
                        contextlib.suppress(_Captured),
                    ):
                        self.lm(input_ids=ids, attention_mask=mask)
                    hidden = captured.pop().float()
                    if states is None:
                        states = torch.empty(total, hidden.shape[-1], device=device)
                    for r, i in enumerate(rows):
                        begin, length = self.offsets[i], self.lengths[i]
                        states[begin : begin + length] = hidden[r, :length]
        finally:
            self.lm.train(was_training)
        # a plain tensor, not an inference tensor: training steps read it
        self.states = states.clone() if states is not None else None

    def cached_states(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cached lower states (B, T, d), token ids and mask of items ``rows``."""
        if self.states is None:
            raise RuntimeError("build_cache() first")
        device = self.states.device
        ids, mask = self.token_batch(rows, device)
        width = ids.shape[1]
        cols = np.arange(width)
        real = cols[None, :] < self.lengths[rows][:, None]
        flat = np.where(real, self.offsets[rows][:, None] + cols[None, :], 0)
        states = self.states[torch.from_numpy(flat).to(device)]
        states = states * torch.from_numpy(real).to(device).unsqueeze(-1).to(states.dtype)
        return states, ids, mask

    # ------------------------------------------------------------------ encoding
    def hidden(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Last hidden states (B, T, d) and mask of items ``rows``, top layers only."""
        states, ids, mask = self.cached_states(rows)
        target = states

        def substitute(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            given = args[0] if args else kwargs["hidden_states"]
            # the embeddings' output (computed, then dropped) sets the dtype under autocast
            fed = target.to(given.dtype)
            if args:
                return (fed, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": fed}

        with self._cut(self.start, len(self.layers), substitute):
            out = self.lm(input_ids=ids, attention_mask=mask).last_hidden_state
        return out, mask

    def encode(self, rows: np.ndarray) -> torch.Tensor:
        """L2-normalised mean-pooled vectors (B, d) of items ``rows``, with gradients."""
        hidden, mask = self.hidden(rows)
        return mean_pool(hidden, mask)

    def encode_all(self, batch_size: int = 128, autocast: Any = None) -> torch.Tensor:
        """Vectors of every item (n_items, d), no gradients; the caller sets eval mode."""
        out: torch.Tensor | None = None
        with torch.inference_mode():
            for rows in self.length_batches(batch_size):
                with autocast() if autocast is not None else contextlib.nullcontext():
                    vectors = self.encode(rows).float()
                if out is None:
                    out = torch.empty(len(self.ids), vectors.shape[1], device=vectors.device)
                out[torch.from_numpy(rows).to(vectors.device)] = vectors
        assert out is not None
        return out
