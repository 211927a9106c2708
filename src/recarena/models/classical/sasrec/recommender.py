"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018).

A causal Transformer reads each user's most recent ``max_len`` items and predicts the next
one at every position. The item embedding is shared with the output layer, so the score of
item ``i`` after a history is the dot product of the last hidden state with ``i``'s
embedding.

Two choices differ from the paper's code, both following later work:

- The loss is, by default, a full softmax cross-entropy over the catalog instead of a
  binary cross-entropy with one sampled negative: Klenitskiy & Vasilev ("Turning Dross Into
  Gold Loss: is BERT4Rec really better than SASRec?", RecSys 2023) measure 30-40% more
  NDCG@10 from that change alone. ``loss="bce"`` (the paper's loss, ``n_negatives`` per
  position) and ``loss="sampled_ce"`` (a softmax over the target and ``n_negatives``
  uniform negatives shared by the batch) are there for catalogs too large for a full
  softmax.
- The blocks are pre-LayerNorm, ``x + Dropout(f(LayerNorm(x)))``, exactly the paper's
  equation, with a final LayerNorm; padding is masked out of the attention keys instead of
  being zeroed after each block.

Every position of a user's sequence is trained in one causal pass (one sample per user per
epoch), never one sample per prefix, which would multiply the work by the mean sequence
length. Sequences are left-padded with item id 0 (real items are shifted by one), so the
most recent item always sits at the last position and gets the same positional embedding.

This folder: `network` holds `SASRecConfig` (the network's shape) and `SASRecNetwork` (the
``nn.Module``) with the loss; this file `SASRec` (the `Recommender`: training with early
stopping, scoring, persistence). torch is imported at the top: the registry imports this
module only when a SASRec is created, so ``recarena --help`` never loads it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from recarena._io import atomic_open
from recarena.data.dataset import interactions_csr
from recarena.models._history import History, KeepsHistory
from recarena.models._moved import stable_class_path
from recarena.models.base import Recommender, TrainingData, is_integer, is_number, require_param
from recarena.models.classical.sasrec.network import (
    SASRecConfig,
    SASRecNetwork,
    softmax_cross_entropy,
)

logger = logging.getLogger(__name__)

Loss = Literal["ce", "bce", "sampled_ce"]

#: float cells of a (users x items) score block computed at once during validation
_EVAL_BLOCK_CELLS = 16 << 20
#: cut-off of the validation metric used for early stopping
_EVAL_K = 10
#: file holding the network weights (a state dict) next to the base class's state.pkl
WEIGHTS_FILE = "weights.pt"


# ---------------------------------------------------------------------- the recommender
class SASRec(KeepsHistory, Recommender):
    """SASRec trained with full softmax cross-entropy and early stopping on validation.

    Parameters
    ----------
    max_len
        Most recent items read per user (default 200, the usual ML-1M setting; 50 suits
        short histories and costs a quarter as much attention).
    hidden
        Embedding and block width (default 64).
    n_blocks
        Self-attention blocks (default 2).
    n_heads
        Attention heads (default 1).
    dropout
        Dropout rate (default 0.2; sparser data such as Amazon reviews prefers 0.5).
    loss
        ``"ce"`` (default): softmax cross-entropy over the whole catalog. ``"bce"``: binary
        cross-entropy of the target against ``n_negatives`` uniformly sampled negatives per
        position (the paper's loss). ``"sampled_ce"``: softmax over the target and
        ``n_negatives`` uniform negatives shared by the batch; for catalogs too large for a
        full softmax.
    n_negatives
        Negatives for ``"bce"`` and ``"sampled_ce"``; None means 1 for ``"bce"`` (the paper)
        and 256 for ``"sampled_ce"``. Ignored by ``"ce"``.
    lr
        Adam learning rate (default 1e-3; betas (0.9, 0.98) as in the paper).
    weight_decay
        Adam L2 penalty (default 0).
    batch_size
        Users per training step (default 128).
    epochs
        Most epochs to train; exactly this many when no validation data is given, which is
        how the runner refits with ``refit_params()`` (default 200).
    eval_every
        Epochs between validation measurements (default 1).
    patience
        Validation measurements without a gain before training stops (default 10); the
        weights of the best measurement are kept.
    patience_steps
        Training steps (batches) without a gain that must also pass before training stops
        (default 250). On a small data set an epoch is a few steps (671 users make 6 steps
        of 128), and SASRec's validation NDCG stays flat for a dozen epochs once it has
        learned popularity before it learns the sequences: a patience counted in epochs
        alone stops it there, at MostPopular's level. Training still ends at ``epochs``.
    device
        ``"auto"`` (CUDA when available, else CPU), or any torch device string.
    mixed_precision
        Train and score in bfloat16 autocast on CUDA devices that support it (ignored on
        CPU, where it would be slower).
    num_threads
        CPU threads for torch during fit and scoring; None keeps torch's default.
    eval_batch_size
        Users per forward pass when scoring (default 256).
    seed
        Seeds the weights, dropout, negatives and the order of users: on CPU, the same seed
        gives the same scores.

    Attributes
    ----------
    network_
        The trained ``nn.Module`` (see `SASRecNetwork`).
    best_epoch_
        Epoch whose weights were kept (the last one when training without validation).
    best_valid_ndcg_
        Validation NDCG@10 of the kept weights (None without validation data).
    training_log_
        One dict per epoch: ``epoch``, ``loss`` (mean over positions), ``valid_ndcg@10``
        (None where not measured) and ``seconds`` (since training began, validation
        included).
    """

    param_grid = {"hidden": [64, 128], "dropout": [0.2, 0.5]}
    uses_validation = True
    #: a network: a share of a GPU where the cluster has one
    resources = {"num_cpus": 1, "num_gpus": 0.25}
    # the history read when scoring (and rebuilt by update_history): each user's last
    # max_len items, ids shifted by one (0 is the padding id)
    history_length_param = "max_len"
    history_shift = 1
    history_dtype = np.int32

    def __init__(
        self,
        *,
        max_len: int = 200,
        hidden: int = 64,
        n_blocks: int = 2,
        n_heads: int = 1,
        dropout: float = 0.2,
        loss: Loss = "ce",
        n_negatives: int | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        batch_size: int = 128,
        epochs: int = 200,
        eval_every: int = 1,
        patience: int = 10,
        patience_steps: int = 250,
        device: str = "auto",
        mixed_precision: bool = True,
        num_threads: int | None = None,
        eval_batch_size: int = 256,
        seed: int = 0,
    ) -> None:
        self.max_len = max_len
        self.hidden = hidden
        self.n_blocks = n_blocks
        self.n_heads = n_heads
        self.dropout = dropout
        self.loss = loss
        self.n_negatives = n_negatives
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.epochs = epochs
        self.eval_every = eval_every
        self.patience = patience
        self.patience_steps = patience_steps
        self.device = device
        self.mixed_precision = mixed_precision
        self.num_threads = num_threads
        self.eval_batch_size = eval_batch_size
        self.seed = seed

    # ------------------------------------------------------------------ fitting
    def check_params(self) -> None:
        """Sizes and counts positive integers, rates and dropout in range, a known loss;
        ``hidden`` divisible by ``n_heads`` (checked before any data is loaded)."""
        for name in ("max_len", "hidden", "n_blocks", "n_heads", "batch_size", "epochs"):
            value = getattr(self, name)
            require_param(self, name, is_integer(value) and value >= 1, "a positive integer")
        for name in ("eval_every", "patience", "eval_batch_size"):
            value = getattr(self, name)
            require_param(self, name, is_integer(value) and value >= 1, "a positive integer")
        require_param(
            self,
            "patience_steps",
            is_integer(self.patience_steps) and self.patience_steps >= 0,
            "an integer >= 0",
        )
        for name in ("n_negatives", "num_threads"):
            value = getattr(self, name)
            require_param(
                self,
                name,
                value is None or (is_integer(value) and value >= 1),
                "a positive integer or None",
            )
        require_param(
            self,
            "hidden",
            self.hidden % self.n_heads == 0,
            f"divisible by n_heads ({self.n_heads}): each head takes hidden / n_heads",
        )
        require_param(
            self, "dropout", is_number(self.dropout) and 0 <= self.dropout < 1, "in [0, 1)"
        )
        require_param(self, "lr", is_number(self.lr) and self.lr > 0, "a positive number")
        require_param(
            self,
            "weight_decay",
            is_number(self.weight_decay) and self.weight_decay >= 0,
            "a number >= 0",
        )
        require_param(
            self, "loss", self.loss in ("ce", "bce", "sampled_ce"), "'ce', 'bce' or 'sampled_ce'"
        )

    def _fit(self, data: TrainingData, valid: pd.DataFrame | None) -> None:
        device = self._torch_device()
        self._keep_history(data)
        # training reads one more item: inputs are items [0, n-1), targets items [1, n)
        train = _shifted_history(data.sequences, self.max_len + 1)
        train_users = np.flatnonzero(train.lengths >= 2)
        steps_per_epoch = -(-len(train_users) // self.batch_size)
        valid_users, truth = self._validation_targets(valid, data.n_users, data.n_items)

        # seeded inside fork_rng, so fitting leaves the caller's global torch RNG untouched
        cuda = [device.index or torch.cuda.current_device()] if device.type == "cuda" else []
        with (
            torch.random.fork_rng(devices=cuda),
            _threads(self.num_threads),
            _deterministic(device.type == "cpu"),
        ):
            torch.manual_seed(self.seed)
            rng = np.random.default_rng(self.seed)
            net = SASRecNetwork(self._config()).to(device)
            self.network_ = net
            optimizer = torch.optim.Adam(
                net.parameters(), lr=self.lr, betas=(0.9, 0.98), weight_decay=self.weight_decay
            )
            self._prepare_training(net, optimizer)
            self.training_log_: list[dict[str, Any]] = []
            best_ndcg, best_state, self.best_epoch_, stale = -1.0, None, 0, 0
            first_epoch, stopped, seconds_before = 1, False, 0.0
            checkpoint = (
                None
                if data.checkpoint_dir is None
                else _Checkpoint(Path(data.checkpoint_dir), self._checkpoint_key(data, valid))
            )
            saved = None if checkpoint is None else checkpoint.load(device)
            if saved is not None:
                net.load_state_dict(saved["network"])
                optimizer.load_state_dict(saved["optimizer"])
                rng.bit_generator.state = saved["numpy_rng"]
                torch.set_rng_state(saved["torch_rng"])
                if cuda and saved.get("cuda_rng") is not None:
                    torch.cuda.set_rng_state(saved["cuda_rng"], cuda[0])
                best_ndcg, best_state = saved["best_ndcg"], saved["best_state"]
                self.best_epoch_, stale = saved["best_epoch"], saved["stale"]
                self.training_log_ = saved["log"]
                first_epoch, stopped = saved["epoch"] + 1, saved["stopped"]
                seconds_before = saved["seconds"]
                self._resume_stage(net, saved.get("stage"))
                logger.info("SASRec: resuming after epoch %d (%s)", saved["epoch"], checkpoint)
            start = time.perf_counter() - seconds_before
            for epoch in range(first_epoch, self.epochs + 1):
                if stopped:
                    break
                loss = self._train_epoch(net, optimizer, train, rng.permutation(train_users))
                measure = valid_users is not None and (
                    epoch % self.eval_every == 0 or epoch == self.epochs
                )
                ndcg = self._validation_ndcg(valid_users, truth, data.csr()) if measure else None
                self._log_epoch(epoch, loss, ndcg, time.perf_counter() - start)
                if valid_users is None:
                    self.best_epoch_ = epoch
                elif ndcg is not None and ndcg > best_ndcg:
                    best_ndcg, self.best_epoch_, stale = ndcg, epoch, 0
                    best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                elif ndcg is not None:
                    stale += 1
                    steps = (epoch - max(self.best_epoch_, self._stage_start())) * steps_per_epoch
                    if stale >= self.patience and steps >= self.patience_steps:
                        logger.info("SASRec: no gain in %d measurements (%d steps)", stale, steps)
                        stopped = True
                if self._next_stage(net, optimizer, rng, epoch, stopped, best_state):
                    stopped, stale = False, 0
                if checkpoint is not None:
                    checkpoint.save(
                        {
                            "epoch": epoch,
                            "stopped": stopped,
                            "seconds": time.perf_counter() - start,
                            "network": net.state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "numpy_rng": rng.bit_generator.state,
                            "torch_rng": torch.get_rng_state(),
                            "cuda_rng": torch.cuda.get_rng_state(cuda[0]) if cuda else None,
                            "best_ndcg": best_ndcg,
                            "best_state": best_state,
                            "best_epoch": self.best_epoch_,
                            "stale": stale,
                            "log": self.training_log_,
                            "stage": self._stage_state(),
                        }
                    )
            if best_state is not None:
                logger.info("SASRec: keeping the weights of epoch %d", self.best_epoch_)
                net.load_state_dict(best_state)
            self.best_valid_ndcg_ = best_ndcg if valid_users is not None else None
        net.eval()
        if checkpoint is not None:
            checkpoint.remove()

    def _prepare_training(self, net: SASRecNetwork, optimizer: torch.optim.Optimizer) -> None:
        """Hook run once the network and optimizer exist, before training or resuming."""

    def _stage_start(self) -> int:
        """The last epoch of the stage before the current one (0: one stage); the steps of
        ``patience_steps`` count from it or from the best epoch, whichever is later."""
        return 0

    def _next_stage(
        self,
        net: SASRecNetwork,
        optimizer: torch.optim.Optimizer,
        rng: np.random.Generator,
        epoch: int,
        stopped: bool,
        best_state: dict[str, torch.Tensor] | None,
    ) -> bool:
        """Hook at the end of every epoch, after early stopping's bookkeeping.

        A model trained in stages (first part of the network frozen, then all of it) starts
        its next stage here and returns True: training goes on (even when ``stopped``, i.e.
        patience ran out), patience counts afresh, and the best validation score so far
        stays the one to beat. SASRec trains in one stage: False.
        """
        return False

    def _stage_state(self) -> Any:
        """What a checkpoint keeps of the training stage (see `_next_stage`); None here."""
        return None

    def _resume_stage(self, net: SASRecNetwork, state: Any) -> None:
        """Hook run on resuming, after the checkpoint's weights and optimizer are loaded."""

    def _checkpoint_key(self, data: TrainingData, valid: pd.DataFrame | None) -> str:
        """What a checkpoint must match to be resumed: this class, its parameters, the data."""
        items = data.interactions["item"].to_numpy()
        fingerprint = {
            "class": stable_class_path(type(self)),
            "params": {k: repr(v) for k, v in sorted(self.get_params().items())},
            "shape": [data.n_users, data.n_items, len(items)],
            "items": int((items.astype(np.int64) * np.arange(1, len(items) + 1)).sum()),
            "valid": 0 if valid is None else len(valid),
        }
        return hashlib.sha256(repr(fingerprint).encode()).hexdigest()[:16]

    def _log_epoch(self, epoch: int, loss: float, ndcg: float | None, seconds: float) -> None:
        self.training_log_.append(
            {"epoch": epoch, "loss": loss, f"valid_ndcg@{_EVAL_K}": ndcg, "seconds": seconds}
        )
        shown = "-" if ndcg is None else f"{ndcg:.4f}"
        logger.info(
            "SASRec epoch %d: loss %.4f, valid NDCG@10 %s, %.1f s", epoch, loss, shown, seconds
        )

    def _config(self) -> SASRecConfig:
        return SASRecConfig(
            n_items=self.n_items_,
            max_len=self.max_len,
            hidden=self.hidden,
            n_blocks=self.n_blocks,
            n_heads=self.n_heads,
            dropout=self.dropout,
        )

    def _train_epoch(
        self,
        net: SASRecNetwork,
        optimizer: torch.optim.Optimizer,
        train: History,
        order: np.ndarray,
    ) -> float:
        """One pass over ``order`` (user ids); returns the mean loss per position."""
        device = next(net.parameters()).device
        net.train()
        total = torch.zeros((), device=device)
        count = 0
        for begin in range(0, len(order), self.batch_size):
            users = order[begin : begin + self.batch_size]
            seq = torch.from_numpy(train.left_padded(users, pad=0)).to(device)
            inputs, targets = seq[:, :-1], seq[:, 1:]
            with self._autocast(device):
                states = net(inputs)
                keep = targets != 0
                loss = self._loss(net, states[keep], targets[keep])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            # counted on the host, so the loop never waits for the device
            n = int(train.lengths[users].sum()) - len(users)
            total += loss.detach().float() * n
            count += n
        return float(total) / max(count, 1)

    def _loss(
        self, net: SASRecNetwork, states: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """Mean loss over positions; ``targets`` are shifted ids (1..n_items)."""
        table = net.item_embedding.weight
        n_items = table.shape[0] - 1
        if self.loss == "ce":
            # CPU: rows whose logits stay in cache; GPU: ~256 MB of float32 logits at once
            chunk = 1024 if states.device.type == "cpu" else max(1024, (64 << 20) // n_items)
            return softmax_cross_entropy(states, table[1:], targets - 1, chunk)
        positive = (states * table[targets]).sum(-1).float()
        if self.loss == "sampled_ce":
            n_neg = 256 if self.n_negatives is None else self.n_negatives
            negatives = torch.randint(1, n_items + 1, (n_neg,), device=states.device)
            negative = (states @ table[negatives].T).float()
            # a negative that is the target itself is not a negative
            negative = negative.masked_fill(negatives[None, :] == targets[:, None], -torch.inf)
            logits = torch.cat([positive[:, None], negative], dim=1)
            return F.cross_entropy(logits, torch.zeros_like(targets))
        n_neg = 1 if self.n_negatives is None else self.n_negatives
        negatives = torch.randint(1, n_items + 1, (len(targets), n_neg), device=states.device)
        negative = torch.einsum("nd,nkd->nk", states, table[negatives]).float()
        is_negative = (negatives != targets[:, None]).float()
        negative_loss = (F.softplus(negative) * is_negative).sum(-1) / n_neg
        return (F.softplus(-positive) + negative_loss).mean()

    def _validation_targets(
        self, valid: pd.DataFrame | None, n_users: int, n_items: int
    ) -> tuple[np.ndarray | None, sp.csr_matrix | None]:
        if valid is None or len(valid) == 0:
            return None, None
        truth = interactions_csr(valid, n_users, n_items)
        return np.unique(valid["user"].to_numpy()).astype(np.int64), truth

    @torch.inference_mode()
    def _validation_ndcg(
        self, users: np.ndarray, truth: sp.csr_matrix, seen: sp.csr_matrix
    ) -> float:
        """Mean NDCG@10 over ``users``: full ranking, training items excluded.

        Every user counts (a user whose held-out items are all excluded scores zero), as in
        the runner's measurement; ties among float scores are left to ``torch.topk``.
        """
        discount = 1.0 / np.log2(np.arange(2, _EVAL_K + 2))
        ideal = np.concatenate([[0.0], np.cumsum(discount)])
        chunk = max(1, min(self.eval_batch_size, _EVAL_BLOCK_CELLS // max(1, self.n_items_)))
        total = 0.0
        for begin in range(0, len(users), chunk):
            batch = users[begin : begin + chunk]
            scores = self._full_scores(batch)
            scores[torch.from_numpy(_dense_rows(seen, batch)).to(scores.device)] = -torch.inf
            top = scores.topk(min(_EVAL_K, scores.shape[1]), dim=1).indices.cpu().numpy()
            relevant = _dense_rows(truth, batch)
            dcg = (np.take_along_axis(relevant, top, axis=1) * discount[: top.shape[1]]).sum(1)
            n_relevant = np.minimum(relevant.sum(1), _EVAL_K)
            total += float((dcg / np.where(n_relevant > 0, ideal[n_relevant], 1.0)).sum())
        return total / len(users)

    def refit_params(self) -> dict[str, Any]:
        """The epochs to train on train + valid without validation: the best epoch here."""
        return {"epochs": int(self.best_epoch_)}

    # ------------------------------------------------------------------ scoring
    def _score(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        out = []
        with _threads(self.num_threads):
            for begin in range(0, len(users), self.eval_batch_size):
                batch = users[begin : begin + self.eval_batch_size]
                if items is None:
                    out.append(self._full_scores(batch).float().cpu().numpy())
                else:
                    out.append(self._candidate_scores(batch, items[begin : begin + len(batch)]))
        if not out:
            width = self.n_items_ if items is None else items.shape[1]
            return np.empty((0, width), dtype=np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)

    @torch.inference_mode()
    def _user_states(self, users: np.ndarray) -> torch.Tensor:
        """Last hidden state of each user's history (B, hidden)."""
        net = self.network_
        device = next(net.parameters()).device
        net.eval()
        seq = torch.from_numpy(self._kept_history().left_padded(users, pad=0)).to(device)
        with self._autocast(device):
            return net(seq)[:, -1].float()

    @torch.inference_mode()
    def _full_scores(self, users: np.ndarray) -> torch.Tensor:
        return self._user_states(users) @ self.network_.item_vectors().float().T

    @torch.inference_mode()
    def _candidate_scores(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        states = self._user_states(users)
        ids = torch.from_numpy(np.ascontiguousarray(items)).to(states.device)
        vectors = self.network_.item_vectors().float()[ids]  # (B, C, hidden)
        return torch.einsum("bd,bcd->bc", states, vectors).cpu().numpy()

    # ------------------------------------------------------------------ devices
    def _torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        if self.mixed_precision and device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ cost
    def n_parameters(self) -> tuple[int, int]:
        params = list(self.network_.parameters())
        return (sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad))

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | os.PathLike[str]) -> None:
        """Save as the base class does, but the network as a state dict (``weights.pt``).

        No module is pickled: the weights load on any device (``map_location``), and into
        any later version of this file whose parameter names match.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        weights = {k: v.detach().cpu() for k, v in self.network_.state_dict().items()}
        with atomic_open(folder / WEIGHTS_FILE, "wb") as fh:
            torch.save(weights, fh)
        # the base class pickles every learned attribute: all but the module
        network = self.__dict__.pop("network_")
        try:
            super().save(folder)
        finally:
            self.network_ = network

    def _restore_state(self, state: dict[str, Any], folder: Path) -> None:
        super()._restore_state(state, folder)
        weights = torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        net = SASRecNetwork(self._config())
        net.load_state_dict(weights)
        self.network_ = net.to(self._torch_device()).eval()


# ---------------------------------------------------------------------- helpers
class _Checkpoint:
    """One fit's training state in ``folder/sasrec-checkpoint.pt``, written atomically.

    A checkpoint whose key differs (other parameters or data) is ignored and overwritten.
    """

    FILE = "sasrec-checkpoint.pt"

    def __init__(self, folder: Path, key: str) -> None:
        self.path = folder / self.FILE
        self.key = key

    def __str__(self) -> str:
        return str(self.path)

    def load(self, device: torch.device) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location=device, weights_only=True)
        except Exception as exc:  # a torn or foreign file: start over, say so
            logger.warning("SASRec: ignoring unreadable checkpoint %s (%s)", self.path, exc)
            return None
        if state.get("key") != self.key:
            logger.info("SASRec: %s belongs to another configuration; starting over", self.path)
            return None
        state["torch_rng"] = state["torch_rng"].cpu()
        if state.get("cuda_rng") is not None:
            state["cuda_rng"] = state["cuda_rng"].cpu()
        return state

    def save(self, state: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(self.path, "wb") as fh:
            torch.save({"key": self.key, **state}, fh)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _shifted_history(sequences: list[np.ndarray], keep_last: int) -> History:
    """Each user's last ``keep_last`` items with ids shifted by one (0 is the padding id)."""
    return History.from_sequences(sequences, keep_last, shift=1, dtype=np.int32)


def _dense_rows(matrix: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
    """Boolean dense copy of some rows of a CSR matrix."""
    sub = matrix[rows]
    out = np.zeros(sub.shape, dtype=bool)
    out[np.repeat(np.arange(len(rows)), np.diff(sub.indptr)), sub.indices] = True
    return out


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Use ``n`` torch CPU threads inside the block (None: leave torch's setting)."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _deterministic(enabled: bool) -> Iterator[None]:
    """Deterministic torch kernels inside the block.

    Used on CPU only, where it costs nothing once torch's NaN-filling of new tensors (a
    debugging aid that comes with the mode) is turned off; on CUDA it would need
    ``CUBLAS_WORKSPACE_CONFIG`` set before start-up and slower embedding gradients.
    """
    if not enabled:
        yield
        return
    import torch.utils.deterministic as deterministic

    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    fill = deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)
    deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)
        deterministic.fill_uninitialized_memory = fill
