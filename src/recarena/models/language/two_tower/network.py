"""The two-tower network: the user tower's pooling over history vectors and the heads that
join the text vectors with ID embeddings. The language-model encoder is kept apart
(`recarena.lm.top_layers`), so its frozen layers can be cached."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from recarena.lm.top_layers import TopLayerEncoder

Pooling = Literal["mean", "attention"]

#: per-age recency biases of the attention pooling when every history item is read
#: (history_len=None); older items share the last bias (the slope still orders them)
RECENCY_AGES = 50


class HistoryPooling(nn.Module):
    """User vector from the vectors of the user's last items (see `recommender`'s docstring).

    ``forward(vectors, valid)``: ``vectors`` (B, H, d) right-aligned (column H-1 is the most
    recent item, age 0), ``valid`` (B, H) marks real items.

    Parameters
    ----------
    dim
        Width of the item vectors.
    ages
        Per-age recency biases of ``"attention"`` (ages from ``ages - 1`` on share the last).
    mode
        ``"mean"`` or ``"attention"``.
    recency_decay
        Weight ``recency_decay ** age`` of the mean; the attention's slope starts at its log.
    """

    def __init__(self, dim: int, ages: int, mode: Pooling, recency_decay: float = 1.0) -> None:
        super().__init__()
        if mode not in ("mean", "attention"):
            raise ValueError(f"user_pooling must be 'mean' or 'attention', got {mode!r}")
        if not 0.0 < recency_decay <= 1.0:
            raise ValueError(f"recency_decay must be in (0, 1], got {recency_decay}")
        self.mode = mode
        self.log_decay = math.log(recency_decay)
        if mode == "attention":
            self.query = nn.Parameter(torch.zeros(dim))
            # stored oldest first, the layout of earlier versions: recency[-1] is age 0
            self.recency = nn.Parameter(torch.zeros(ages))
            self.recency_slope = nn.Parameter(torch.tensor(self.log_decay))
            self.out = nn.Linear(dim, dim)
            with torch.no_grad():
                self.out.weight.copy_(torch.eye(dim))
                self.out.bias.zero_()

    def _recency_logits(self, width: int, device: torch.device) -> torch.Tensor:
        age = torch.arange(width - 1, -1, -1, device=device)
        if self.mode == "mean":
            return age.float() * self.log_decay
        n = self.recency.shape[0]
        return self.recency_slope * age + self.recency[n - 1 - age.clamp(max=n - 1)]

    def forward(self, vectors: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        logits = self._recency_logits(vectors.shape[1], vectors.device)[None, :]
        if self.mode == "attention":
            logits = logits + vectors @ self.query / math.sqrt(vectors.shape[-1])
        # a large negative, not -inf: a row without history must not become NaN
        weights = logits.float().masked_fill(~valid, -1e4).softmax(1) * valid
        pooled = (weights.to(vectors.dtype).unsqueeze(-1) * vectors).sum(1)
        return self.out(pooled) if self.mode == "attention" else pooled


class TowerHeads(nn.Module):
    """The trained parts beside the language model: ID embeddings and the user pooling."""

    def __init__(
        self,
        n_items: int,
        dim: int,
        ages: int,
        pooling: Pooling,
        id_embedding: bool,
        normalise: bool,
        recency_decay: float = 1.0,
    ) -> None:
        super().__init__()
        self.normalise = normalise
        self.pooling = HistoryPooling(dim, ages, pooling, recency_decay)
        self.id_embedding: nn.Embedding | None = None
        if id_embedding:
            # zero: an item starts as its text vector, and an item never trained keeps it
            self.id_embedding = nn.Embedding(n_items, dim)
            nn.init.zeros_(self.id_embedding.weight)
            self.register_buffer("id_mask", torch.zeros(n_items, 1))

    def item_vectors(self, text: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Item vectors from normalised text vectors (..., d) and item ids (...)."""
        if self.id_embedding is not None:
            text = text + self.id_embedding(items) * self.id_mask[items].to(text.dtype)
        return F.normalize(text, dim=-1) if self.normalise else text

    def user_vectors(self, history: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """User vectors from the item vectors of their histories (B, H, d)."""
        users = self.pooling(history, valid)
        return F.normalize(users, dim=-1) if self.normalise else users


class TwoTowerNetwork(nn.Module):
    """The language model and the heads, one ``forward`` per training step (DDP-friendly).

    ``forward`` encodes the distinct items ``items`` (the ``n_targets`` batch targets first)
    with the tuned top layers over their cached lower states, and returns the user vectors
    of the batch (B, d) and the vectors of the distinct targets (n_targets, d). History text
    vectors come either from ``history_text`` (B, H, d, no gradient) or, when
    ``history_index`` is given, from the rows encoded here.
    """

    def __init__(self, lm: nn.Module, heads: TowerHeads, encoder: TopLayerEncoder) -> None:
        super().__init__()
        self.lm = lm
        self.heads = heads
        self.encoder = encoder  # not a module: it runs self.lm over its cached states

    def forward(
        self,
        items: torch.Tensor,
        n_targets: int,
        history_items: torch.Tensor,
        history_valid: torch.Tensor,
        history_text: torch.Tensor | None = None,
        history_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        text = self.encoder.encode(items.cpu().numpy())
        targets = self.heads.item_vectors(text[:n_targets], items[:n_targets])
        if history_index is not None:
            history_text = text[history_index]
        assert history_text is not None
        history = self.heads.item_vectors(history_text, history_items)
        return self.heads.user_vectors(history, history_valid), targets
