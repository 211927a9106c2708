"""SASRec's network: a causal pre-LayerNorm Transformer over item ids, the item embedding
shared with the output layer, and the full-softmax cross-entropy it is trained with.

`SASRecConfig` is the network's shape; `SASRecNetwork` the ``nn.Module``; the recommender
around it (scoring, persistence) is in `recommender`, its training and early stopping in
`training`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: the initial weights `SASRecConfig.init` names
INITS = ("xavier", "normal")
#: the block layouts `SASRecConfig.block` names
BLOCKS = ("pre_ln", "reference")
#: how `SASRecConfig.positions` numbers a sequence's positions
POSITIONS = ("recent", "first")


@dataclass
class SASRecConfig:
    """Shape of a `SASRecNetwork`."""

    #: items in the catalog; the embedding table has ``n_items + 1`` rows (row 0 is padding)
    n_items: int
    #: positions read per user: the most recent ``max_len`` items
    max_len: int = 200
    #: width of the item and position embeddings and of every block
    hidden: int = 64
    #: self-attention blocks
    n_blocks: int = 2
    #: attention heads per block (``hidden`` must be divisible by it)
    n_heads: int = 1
    #: dropout on the embeddings, the attention weights and each block's output
    dropout: float = 0.2
    #: initial weights: ``"xavier"`` (Xavier-normal on every matrix, as the reference
    #: PyTorch SASRec) or ``"normal"`` (N(0, 0.02) on every matrix, embeddings included, as
    #: Klenitskiy & Vasilev's SASRec with cross-entropy and GPT-2)
    init: str = "xavier"
    #: ``"pre_ln"`` (the paper's equation, see `Block`) or ``"reference"`` (the reference
    #: PyTorch SASRec's block, which Klenitskiy & Vasilev's code keeps, see `ReferenceBlock`)
    block: str = "pre_ln"
    #: position embeddings counted back from the most recent item (``"recent"``: the last
    #: item always has the same one) or forward from the first item of the window read
    #: (``"first"``: Klenitskiy & Vasilev's code, whose sequences are padded on the right)
    positions: str = "recent"


class CausalSelfAttention(nn.Module):
    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        if config.hidden % config.n_heads:
            raise ValueError(
                f"hidden ({config.hidden}) must be divisible by n_heads ({config.n_heads})"
            )
        self.n_heads = config.n_heads
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.hidden, 3 * config.hidden)
        self.out = nn.Linear(config.hidden, config.hidden)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, keys: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Queries from ``x``; keys and values from ``keys`` (default: ``x`` as well)."""
        b, t, d = x.shape
        if keys is None:
            qkv = self.qkv(x).split(d, dim=2)
        else:
            w, bias = self.qkv.weight, self.qkv.bias
            qkv = (F.linear(x, w[:d], bias[:d]), *F.linear(keys, w[d:], bias[d:]).split(d, dim=2))
        q, k, v = (z.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2) for z in qkv)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """``x + Dropout(Attention(LN(x)))``, then ``x + Dropout(FFN(LN(x)))``."""

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.ln_attention = nn.LayerNorm(config.hidden)
        self.attention = CausalSelfAttention(config)
        self.ln_ffn = nn.LayerNorm(config.hidden)
        # the paper's point-wise feed-forward: two layers of width `hidden`, ReLU between
        self.ffn = nn.Sequential(
            nn.Linear(config.hidden, config.hidden),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, config.hidden),
        )
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attention(self.ln_attention(x), mask))
        return x + self.drop(self.ffn(self.ln_ffn(x)))


class ReferenceBlock(Block):
    """The block of the reference PyTorch SASRec (pmixer/SASRec.pytorch), as Klenitskiy &
    Vasilev's code runs it: queries from ``LN(x)`` but keys and values from ``x`` itself,
    the attention added to ``LN(x)`` (not to ``x``), then ``h + Dropout(FFN(h))`` with
    ``h = LN(x)``, and padded positions zeroed. The same weights as `Block`."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        q = self.ln_attention(x)
        x = q + self.drop(self.attention(q, mask, keys=x))
        h = self.ln_ffn(x)
        return (h + self.drop(self.ffn(h))) * real[..., None]


class SASRecNetwork(nn.Module):
    """Item and position embeddings, causal blocks, a final LayerNorm.

    ``forward`` maps left-padded item ids (B, T), T <= ``max_len``, to hidden states
    (B, T, hidden). With ``positions = "recent"`` the T columns take the *last* T positions;
    with ``"first"`` each row's first real item takes position 0. Either way a batch trimmed
    of leading padding gives the same states as one padded to the full ``max_len``.
    """

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.config = config
        self.item_embedding = nn.Embedding(config.n_items + 1, config.hidden, padding_idx=0)
        self.position_embedding = nn.Embedding(config.max_len, config.hidden)
        self.drop = nn.Dropout(config.dropout)
        for name, value, known in (
            ("init", config.init, INITS),
            ("block", config.block, BLOCKS),
            ("positions", config.positions, POSITIONS),
        ):
            if value not in known:
                raise ValueError(f"{name} must be one of {', '.join(known)}, not {value!r}")
        kind = ReferenceBlock if config.block == "reference" else Block
        self.blocks = nn.ModuleList(kind(config) for _ in range(config.n_blocks))
        self.ln_final = nn.LayerNorm(config.hidden)
        for name, p in self.named_parameters():
            if p.dim() > 1 and config.init == "xavier":  # the reference PyTorch SASRec
                nn.init.xavier_normal_(p)
            elif p.dim() > 1:
                nn.init.normal_(p, mean=0.0, std=0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
        if config.block == "reference" and config.init == "normal":
            # the reference code's nn.MultiheadAttention keeps its own Xavier-uniform input
            # projection: N(0, 0.02) reaches only the modules its initialiser visits
            for block in self.blocks:
                nn.init.xavier_uniform_(block.attention.qkv.weight)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        t = items.shape[1]
        real = items != 0
        if self.config.positions == "first":
            # left padding: a row's first real item sits at column t - length
            start = t - real.sum(1, keepdim=True)
            positions = (torch.arange(t, device=items.device)[None, :] - start).clamp(min=0)
        else:
            max_len = self.config.max_len
            positions = torch.arange(max_len - t, max_len, device=items.device)
        x = self.item_embedding(items) * math.sqrt(self.config.hidden)
        x = self.drop(x + self.position_embedding(positions))
        # causal, and padding is never attended to; each position sees itself, so a row of
        # pure padding (a user without history) stays finite
        causal = torch.ones(t, t, dtype=torch.bool, device=items.device).tril()
        eye = torch.eye(t, dtype=torch.bool, device=items.device)
        mask = (causal & (real[:, None, :] | eye))[:, None]  # (B, 1, T, T)
        if self.config.block == "reference":
            x = x * real[..., None]  # the reference code zeroes padding after the dropout
        for block in self.blocks:
            x = block(x, mask, real)
        return self.ln_final(x)

    def item_vectors(self) -> torch.Tensor:
        """Output embeddings of items 0..n_items-1: the input table without its padding row."""
        return self.item_embedding.weight[1:]


def softmax_cross_entropy(
    states: torch.Tensor, items: torch.Tensor, targets: torch.Tensor, chunk: int = 1024
) -> torch.Tensor:
    """``F.cross_entropy(states @ items.T, targets)``, computed ``chunk`` rows at a time.

    The (positions x catalog) logits are never held whole: each chunk's gradients are
    computed in the forward pass and its logits freed. On ML-1M that is 270 MB less per
    step, and a third less time on CPU (page faults of the huge fresh buffers).
    """
    return _ChunkedSoftmaxCE.apply(states, items, targets, chunk)


class _ChunkedSoftmaxCE(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, states: torch.Tensor, items: torch.Tensor, targets: torch.Tensor, chunk: int
    ) -> torch.Tensor:
        dtypes = states.dtype, items.dtype
        with torch.autocast(states.device.type, enabled=False):
            states, items = states.float(), items.float()
            grad_states = torch.empty_like(states)
            grad_items = torch.zeros_like(items)
            total = torch.zeros((), device=states.device)
            for begin in range(0, len(states), chunk):
                rows = slice(begin, begin + chunk)
                logits = states[rows] @ items.T
                target = targets[rows]
                total += (logits.logsumexp(1) - logits.gather(1, target[:, None])[:, 0]).sum()
                grad = logits.softmax(1)  # d loss / d logits = softmax - one-hot
                grad[torch.arange(len(target), device=grad.device), target] -= 1.0
                torch.mm(grad, items, out=grad_states[rows])
                grad_items.addmm_(grad.T, states[rows])
        n = max(len(states), 1)
        ctx.save_for_backward((grad_states / n).to(dtypes[0]), (grad_items / n).to(dtypes[1]))
        return total / n

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_states, grad_items = ctx.saved_tensors
        return grad_states * grad_loss, grad_items * grad_loss, None, None
