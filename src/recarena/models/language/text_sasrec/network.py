"""text-SASRec's item embeddings: frozen (or jointly trained) text vectors through a
trained adaptor (linear, or UniSRec's mixture of whitening experts), plus optional ID
embeddings. They replace the ID table of `recarena.models.classical.sasrec.SASRecNetwork`."""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

Adaptor = Literal["linear", "moe"]


class MoEAdaptor(nn.Module):
    """UniSRec's adaptor: a softmax-gated sum of parametric-whitening experts.

    Expert ``k`` is ``W_k (x - b_k)``, the gate ``softmax(x G)``; a text vector ``x`` maps to
    ``sum_k gate_k * W_k (x - b_k)``.
    """

    def __init__(self, text_dim: int, hidden: int, n_experts: int) -> None:
        super().__init__()
        self.centers = nn.Parameter(torch.zeros(n_experts, text_dim))
        self.experts = nn.Parameter(torch.empty(n_experts, text_dim, hidden))
        self.gate = nn.Linear(text_dim, n_experts, bias=False)
        bound = 1.0 / math.sqrt(text_dim)
        nn.init.uniform_(self.experts, -bound, bound)
        nn.init.zeros_(self.gate.weight)  # equal weights at the start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.gate(x).softmax(-1)  # (..., K)
        # W_k (x - b_k) = W_k x - W_k b_k: no (..., K, text_dim) tensor is materialised
        shift = torch.einsum("kd,kdh->kh", self.centers, self.experts)
        experts = torch.einsum("...d,kdh->...kh", x, self.experts) - shift  # (..., K, hidden)
        return (gate.unsqueeze(-1) * experts).sum(-2)


class TextItemEmbedding(nn.Module):
    """Item embeddings from frozen text vectors: a drop-in for SASRec's ``nn.Embedding``.

    Row 0 is padding (zero), item ``i`` is row ``i + 1``, as in `SASRecNetwork`. ``weight``
    is the whole (n_items + 1, hidden) table, computed (with gradients) from the text vectors,
    the adaptor and, optionally, the masked ID embeddings; ``forward(ids)`` computes only the
    rows it is given. The text vectors are a buffer: saved with the weights, not trained, not
    counted as parameters.
    """

    def __init__(
        self,
        n_items: int,
        text_dim: int,
        hidden: int,
        *,
        adaptor: Adaptor = "linear",
        n_experts: int = 4,
        id_embedding: bool = False,
    ) -> None:
        super().__init__()
        self.register_buffer("text", torch.zeros(n_items + 1, text_dim))
        if adaptor == "linear":
            self.adaptor: nn.Module = nn.Linear(text_dim, hidden)
        elif adaptor == "moe":
            self.adaptor = MoEAdaptor(text_dim, hidden, n_experts)
        else:
            raise ValueError(f"adaptor must be 'linear' or 'moe', got {adaptor!r}")
        self.norm = nn.LayerNorm(hidden)
        with torch.no_grad():
            self.norm.weight.fill_(1.0 / math.sqrt(hidden))
        self.ids: nn.Embedding | None = None
        if id_embedding:
            self.ids = nn.Embedding(n_items + 1, hidden)
            nn.init.zeros_(self.ids.weight)
            self.register_buffer("id_mask", torch.zeros(n_items + 1, 1))

    def set_text(self, vectors: np.ndarray, trained_items: np.ndarray | None = None) -> None:
        """Text vectors of items 0..n-1 and, with ID embeddings, which items were trained."""
        with torch.no_grad():
            self.text[1:] = torch.from_numpy(np.asarray(vectors, dtype=np.float32))
            if self.ids is not None and trained_items is not None:
                self.id_mask[1:, 0] = torch.from_numpy(np.asarray(trained_items, dtype=np.float32))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self._embed(ids, self.text)

    def _embed(self, ids: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Embeddings of ``ids`` from the text table ``text`` (row 0: padding)."""
        out = self.norm(self.adaptor(text[ids]))
        if self.ids is not None:
            out = out + self.ids(ids) * self.id_mask[ids]
        return out * (ids != 0).unsqueeze(-1).to(out.dtype)

    @property
    def weight(self) -> torch.Tensor:
        return self(torch.arange(self.text.shape[0], device=self.text.device))


class JointTextItemEmbedding(TextItemEmbedding):
    """A `TextItemEmbedding` whose text table can come from trainable top layers of the LM.

    Frozen (``joint`` False) it is exactly `TextItemEmbedding` over the ``text`` buffer.
    Joint, the text vectors come from `recarena.lm.top_layers.TopLayerEncoder`: ``stale``
    holds the whole catalog as encoded by `refresh` (no gradients); in a training step
    (training mode, gradients on) ``forward`` re-encodes ``items_per_step`` of the batch's
    items with gradients into a copy of that table, which the step's ``weight`` (the output
    layer) reads too. In eval mode both read ``stale``. The top layers are registered here
    (``top``), so they are part of the network's weights, checkpoints and best state.
    """

    def __init__(
        self,
        n_items: int,
        text_dim: int,
        hidden: int,
        *,
        adaptor: Adaptor = "linear",
        n_experts: int = 4,
        id_embedding: bool = False,
    ) -> None:
        super().__init__(
            n_items,
            text_dim,
            hidden,
            adaptor=adaptor,
            n_experts=n_experts,
            id_embedding=id_embedding,
        )
        self.register_buffer("stale", torch.zeros(n_items + 1, text_dim), persistent=False)
        self.joint = False
        self.encoder: Any = None
        self.items_per_step: int | None = None
        self.encode_batch_size = 128
        self._step_text: torch.Tensor | None = None

    def attach(self, encoder: Any, items_per_step: int | None, encode_batch_size: int) -> None:
        """Register the encoder's top layers (frozen until `start_joint`)."""
        self.encoder = encoder
        self.top = encoder.top_modules()
        self.items_per_step = items_per_step
        self.encode_batch_size = encode_batch_size

    def start_joint(self) -> None:
        """From now on the text table comes from the encoder (cached lower states built)."""
        if self.encoder.states is None:
            self.encoder.build_cache(self.encode_batch_size)
        self.joint = True

    @torch.no_grad()
    def refresh(self) -> None:
        """Encode the whole catalog with the current top layers (dropout off) into ``stale``."""
        was_training = self.training
        self.eval()
        try:
            table = self.encoder.encode_all(self.encode_batch_size)
        finally:
            self.train(was_training)
        self.stale[1:] = table.clone().to(self.stale.dtype)  # a plain tensor, not inference

    def _training_step(self) -> bool:
        return self.joint and self.training and torch.is_grad_enabled()

    def _step_table(self, ids: torch.Tensor) -> torch.Tensor:
        """``stale`` with some of the batch's items re-encoded, with gradients."""
        if self.items_per_step is None:  # the exact gradient: the whole catalog
            rows = torch.arange(self.stale.shape[0] - 1, device=ids.device)
        else:
            rows = torch.unique(ids[ids > 0]) - 1
            if len(rows) > self.items_per_step:
                keep = torch.randperm(len(rows))[: self.items_per_step].to(rows.device)
                rows = rows[keep]
        fresh = self.encoder.encode(rows.cpu().numpy())
        table = self.stale.clone()
        table[rows + 1] = fresh.to(table.dtype)
        return table

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if not self.joint:
            return super().forward(ids)
        if self._training_step():
            # a training step starts with the input embeddings: its text table is made here
            # and read again by `weight` (the output layer) in the same step
            self._step_text = self._step_table(ids)
            return self._embed(ids, self._step_text)
        return self._embed(ids, self.stale)

    @property
    def weight(self) -> torch.Tensor:
        ids = torch.arange(self.text.shape[0], device=self.text.device)
        if not self.joint:
            return self._embed(ids, self.text)
        if self._training_step():
            if self._step_text is None:
                raise RuntimeError("a training step calls forward before weight")
            return self._embed(ids, self._step_text)
        return self._embed(ids, self.stale)
