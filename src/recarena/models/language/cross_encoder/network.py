"""The cross-encoder's network: the encoder, a pooling of its token states (the mean under
the attention mask, or a fresh dense + tanh pooler on the first token) and a linear head,
one logit per (candidate, history) pair. Imported when a model is built, so that importing
the recommender needs no torch."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class PairScorer(nn.Module):
    """An encoder, a pooling of its token states and a linear head: one logit per pair.

    ``pooling="mean"``: the mean of the token states under the attention mask;
    ``"cls"``: the first token's state through a freshly initialised dense + tanh
    pooler. The head (and that pooler) start from the encoder's initialiser: normal
    weights with the config's ``initializer_range``, zero biases.
    """

    def __init__(self, encoder: Any, pooling: str, dropout: float) -> None:
        super().__init__()
        hidden = int(encoder.config.hidden_size)
        std = float(getattr(encoder.config, "initializer_range", 0.02))
        self.encoder = encoder
        self.pooling = pooling
        self.pooler = nn.Linear(hidden, hidden) if pooling == "cls" else None
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, 1)
        for layer in (self.pooler, self.head):
            if layer is not None:
                nn.init.normal_(layer.weight, std=std)
                nn.init.zeros_(layer.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        states = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, **extra
        ).last_hidden_state
        if self.pooler is None:
            mask = attention_mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        else:
            pooled = torch.tanh(self.pooler(states[:, 0]))
        return self.head(self.dropout(pooled)).squeeze(-1)

    def head_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("encoder.")}
