"""How `SASRec` trains: the epoch loop, early stopping, validation and checkpoints.

Every position of a user's sequence is trained in one causal pass (one sample per user per
epoch, see `batching`), never one sample per prefix, which would multiply the work by the
mean sequence length. Each epoch visits the users with at least two items in a fresh
random order (`run_epochs`, `train_epoch`) and minimises `next_item_loss`.

Early stopping measures NDCG@10 on the validation users (`validation_ndcg`: full ranking,
training items excluded) every ``eval_every`` epochs and at the last one; it stops once
``patience`` measurements and ``patience_steps`` training steps have passed without a gain,
or once the epoch that ends past ``max_train_seconds`` (a time budget, measured too) is
done, and keeps the weights of the best measurement. Without validation data it trains exactly
``epochs`` epochs, which is how a refit retraces the best epoch.

A fit is seeded inside `seeded` (torch's global RNG forked, so the caller's is untouched;
deterministic kernels on CPU), and with a checkpoint folder it saves its whole state after
every epoch (`Checkpoint`: weights, Adam, both RNGs, early stopping's state and the log,
keyed by `checkpoint_key`), so that a killed fit resumes at the next epoch and ends exactly
as an unbroken one.

The loop calls the model's hooks, which subclasses override (text-SASRec swaps the item
embedding in `_prepare_training`; its joint variant trains in two stages through
`_next_stage`, `_stage_start`, `_stage_state` and `_resume_stage`), and keeps the model's
``training_log_``, ``best_epoch_`` and ``best_valid_ndcg_`` current, since those hooks read
them.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from recarena._io import atomic_open
from recarena.data.dataset import interactions_csr
from recarena.models._history import History
from recarena.models._moved import stable_class_path
from recarena.models.classical.sasrec.batching import next_item_batches
from recarena.models.classical.sasrec.network import SASRecNetwork, softmax_cross_entropy

if TYPE_CHECKING:
    from recarena.models.base import TrainingData
    from recarena.models.classical.sasrec.recommender import SASRec

logger = logging.getLogger(__name__)

#: float cells of a (users x items) score block computed at once during validation
EVAL_BLOCK_CELLS = 16 << 20
#: cut-off of the validation metric used for early stopping
EVAL_K = 10
#: SASRec's learning-rate schedule parameters (`LRScheduleSpec`)
SCHEDULE_PARAMS = ("lr_schedule", "warmup_epochs", "decay_epochs")
#: recipe options added after checkpoints were written, at their behaviour from before
#: (part of `SASRec.neutral_params`; `checkpoint_key` leaves them out at these values)
NEUTRAL_RECIPE: dict[str, Any] = {
    "adam_beta2": 0.98,
    "init": "xavier",
    "block": "pre_ln",
    "positions": "recent",
    "max_train_seconds": None,
}


@dataclass(frozen=True)
class Schedule:
    """When training measures and stops: SASRec's parameters of these names."""

    epochs: int
    eval_every: int
    patience: int
    patience_steps: int
    #: users per step, which counts the steps of ``patience_steps``
    batch_size: int
    #: training ends with the first epoch that ends past this many seconds since it began,
    #: validation and time before a resume included (None: no time budget)
    max_seconds: float | None = None


@dataclass(frozen=True)
class LRScheduleSpec:
    """SASRec's learning-rate schedule: a factor of ``lr`` at every point of training.

    ``factor(t)`` at ``t`` epochs into training (fractional: an epoch's steps advance it
    evenly): ``min(1, t / warmup_epochs)`` during the warm-up, then 1 (``"constant"``) or a
    cosine or linear fall from 1 to 0 between ``warmup_epochs`` and ``decay_epochs``.
    """

    kind: str
    warmup_epochs: int
    decay_epochs: int

    def moves(self) -> bool:
        """Whether the rate ever differs from ``lr`` (a constant rate is never touched)."""
        return self.kind != "constant" or self.warmup_epochs > 0

    def last_epoch(self, epochs: int) -> int:
        """The last epoch worth training: a decaying rate is zero from ``decay_epochs`` on."""
        return epochs if self.kind == "constant" else min(epochs, self.decay_epochs)

    def factor(self, t: float) -> float:
        warm = 1.0 if self.warmup_epochs <= 0 else min(1.0, t / self.warmup_epochs)
        if self.kind == "constant":
            return warm
        span = max(self.decay_epochs - self.warmup_epochs, 1e-12)
        done = min(max((t - self.warmup_epochs) / span, 0.0), 1.0)
        fall = 0.5 * (1.0 + math.cos(math.pi * done)) if self.kind == "cosine" else 1.0 - done
        return warm * fall


class LRSetter:
    """Sets every parameter group's rate before each step of one epoch: its base rate
    (``initial_lr``, recorded the first time a group is seen, so a checkpoint keeps it and
    a group added later, e.g. a second training stage's, gets its own) times the schedule's
    factor at the end of that step (the first step of a warm-up is not at rate zero)."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, factor: Callable[[float], float], epoch: int
    ):
        self.optimizer, self.factor, self.epoch = optimizer, factor, epoch

    def __call__(self, step: int, n_steps: int) -> None:
        value = self.factor(self.epoch - 1 + (step + 1) / max(n_steps, 1))
        for group in self.optimizer.param_groups:
            group["lr"] = group.setdefault("initial_lr", group["lr"]) * value


@dataclass(frozen=True)
class Validation:
    """Early stopping's data: the validation users, their held-out items and their training
    items (excluded from the ranking)."""

    users: np.ndarray
    truth: sp.csr_matrix
    seen: sp.csr_matrix


def validation_targets(valid: pd.DataFrame | None, data: TrainingData) -> Validation | None:
    """The `Validation` of ``valid`` (None without validation interactions)."""
    if valid is None or len(valid) == 0:
        return None
    truth = interactions_csr(valid, data.n_users, data.n_items)
    users = np.unique(valid["user"].to_numpy()).astype(np.int64)
    return Validation(users, truth, data.csr())


def checkpoint_key(
    cls: type, params: dict[str, Any], data: TrainingData, valid: pd.DataFrame | None
) -> str:
    """What a checkpoint must match to be resumed: the class, its parameters, the data.

    The differential-privacy parameters count only when set: a fit that is not private
    keeps the key it had before they existed (its checkpoints still resume); so do the
    learning-rate schedule's at a constant rate, and `NEUTRAL_RECIPE`'s at their values.
    """
    dp = {k: v for k, v in params.items() if k.startswith("dp_")}
    if dp.get("dp_epsilon") is None and dp.get("dp_noise_multiplier") is None:
        params = {k: v for k, v in params.items() if not k.startswith("dp_")}
    if params.get("lr_schedule", "constant") == "constant" and not params.get("warmup_epochs"):
        # a constant rate keeps the key it had before schedules existed
        params = {k: v for k, v in params.items() if k not in SCHEDULE_PARAMS}
    # options added later keep the key they had before they existed at their old behaviour
    params = {k: v for k, v in params.items() if NEUTRAL_RECIPE.get(k, object()) != v}
    items = data.interactions["item"].to_numpy()
    fingerprint = {
        "class": stable_class_path(cls),
        "params": {k: repr(v) for k, v in sorted(params.items())},
        "shape": [data.n_users, data.n_items, len(items)],
        "items": int((items.astype(np.int64) * np.arange(1, len(items) + 1)).sum()),
        "valid": 0 if valid is None else len(valid),
    }
    return hashlib.sha256(repr(fingerprint).encode()).hexdigest()[:16]


class Checkpoint:
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


# ---------------------------------------------------------------------- the loop
def run_epochs(
    model: SASRec,
    net: SASRecNetwork,
    optimizer: torch.optim.Optimizer,
    rng: np.random.Generator,
    train: History,
    schedule: Schedule,
    validation: Validation | None,
    checkpoint: Checkpoint | None,
    device: torch.device,
) -> None:
    """Train ``net`` (``model.network_``) epoch by epoch until ``schedule`` ends it, from
    ``checkpoint`` where it holds a state of this fit; keep the best measurement's weights.

    Sets ``model.training_log_`` (through ``model._log_epoch``), ``best_epoch_`` and
    ``best_valid_ndcg_``. Runs inside `seeded`: ``rng`` orders the users, torch's global
    generator draws the dropout and negatives.
    """
    cuda = cuda_devices(device)
    train_users = np.flatnonzero(train.lengths >= 2)
    steps_per_epoch = -(-len(train_users) // schedule.batch_size)
    model.training_log_ = []
    best_ndcg, best_state, model.best_epoch_, stale = -1.0, None, 0, 0
    first_epoch, stopped, seconds_before = 1, False, 0.0
    saved = None if checkpoint is None else checkpoint.load(device)
    if saved is not None:
        net.load_state_dict(saved["network"])
        optimizer.load_state_dict(saved["optimizer"])
        rng.bit_generator.state = saved["numpy_rng"]
        torch.set_rng_state(saved["torch_rng"])
        if cuda and saved.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(saved["cuda_rng"], cuda[0])
        best_ndcg, best_state = saved["best_ndcg"], saved["best_state"]
        model.best_epoch_, stale = saved["best_epoch"], saved["stale"]
        model.training_log_ = saved["log"]
        first_epoch, stopped = saved["epoch"] + 1, saved["stopped"]
        seconds_before = saved["seconds"]
        model._resume_stage(net, saved.get("stage"))
        logger.info("SASRec: resuming after epoch %d (%s)", saved["epoch"], checkpoint)
    start = time.perf_counter() - seconds_before
    for epoch in range(first_epoch, schedule.epochs + 1):
        if stopped:
            break
        model._epoch = epoch  # the learning-rate schedule reads it
        loss = model._train_epoch(net, optimizer, train, rng.permutation(train_users))
        # the time budget is spent: this epoch is the last, and it is measured
        over_budget = (
            schedule.max_seconds is not None and time.perf_counter() - start >= schedule.max_seconds
        )
        ndcg = None
        if validation is not None and (
            epoch % schedule.eval_every == 0 or epoch == schedule.epochs or over_budget
        ):
            ndcg = model._validation_ndcg(validation.users, validation.truth, validation.seen)
        model._log_epoch(epoch, loss, ndcg, time.perf_counter() - start)
        if validation is None:
            model.best_epoch_ = epoch
        elif ndcg is not None and ndcg > best_ndcg:
            best_ndcg, model.best_epoch_, stale = ndcg, epoch, 0
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        elif ndcg is not None:
            stale += 1
            since = max(model.best_epoch_, model._stage_start())
            steps = (epoch - since) * steps_per_epoch
            if stale >= schedule.patience and steps >= schedule.patience_steps:
                logger.info("SASRec: no gain in %d measurements (%d steps)", stale, steps)
                stopped = True
        if over_budget:  # training ends here, and no next stage starts
            if not stopped:
                logger.info(
                    "SASRec: the time budget of %s s is spent after epoch %d (%.0f s)",
                    f"{schedule.max_seconds:g}",
                    epoch,
                    time.perf_counter() - start,
                )
            stopped = True
        elif model._next_stage(net, optimizer, rng, epoch, stopped, best_state):
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
                    "best_epoch": model.best_epoch_,
                    "stale": stale,
                    "log": model.training_log_,
                    "stage": model._stage_state(),
                }
            )
    if best_state is not None:
        logger.info("SASRec: keeping the weights of epoch %d", model.best_epoch_)
        net.load_state_dict(best_state)
    model.best_valid_ndcg_ = best_ndcg if validation is not None else None


def train_epoch(
    net: SASRecNetwork,
    optimizer: torch.optim.Optimizer,
    train: History,
    order: np.ndarray,
    batch_size: int,
    loss_fn: Callable[[SASRecNetwork, torch.Tensor, torch.Tensor], torch.Tensor],
    autocast: Callable[[torch.device], contextlib.AbstractContextManager[Any]],
    set_lr: Callable[[int, int], None] | None = None,
) -> float:
    """One pass over ``order`` (user ids), ``batch_size`` users a step; returns the mean
    loss per position. ``set_lr(step, n_steps)`` runs before each step (a schedule)."""
    device = next(net.parameters()).device
    net.train()
    total = torch.zeros((), device=device)
    count = 0
    n_steps = -(-len(order) // batch_size)
    for step, (inputs, targets, n) in enumerate(
        next_item_batches(train, order, batch_size, device)
    ):
        if set_lr is not None:
            set_lr(step, n_steps)
        with autocast(device):
            states = net(inputs)
            keep = targets != 0
            loss = loss_fn(net, states[keep], targets[keep])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach().float() * n
        count += n
    return float(total) / max(count, 1)


def next_item_loss(
    kind: str,
    n_negatives: int | None,
    net: SASRecNetwork,
    states: torch.Tensor,
    targets: torch.Tensor,
) -> torch.Tensor:
    """Mean loss of kind ``"ce"``, ``"bce"`` or ``"sampled_ce"`` (SASRec's ``loss``) over
    positions; ``targets`` are shifted ids (1..n_items)."""
    table = net.item_embedding.weight
    n_items = table.shape[0] - 1
    if kind == "ce":
        # CPU: rows whose logits stay in cache; GPU: ~256 MB of float32 logits at once
        chunk = 1024 if states.device.type == "cpu" else max(1024, (64 << 20) // n_items)
        return softmax_cross_entropy(states, table[1:], targets - 1, chunk)
    positive = (states * table[targets]).sum(-1).float()
    if kind == "sampled_ce":
        n_neg = 256 if n_negatives is None else n_negatives
        negatives = torch.randint(1, n_items + 1, (n_neg,), device=states.device)
        negative = (states @ table[negatives].T).float()
        # a negative that is the target itself is not a negative
        negative = negative.masked_fill(negatives[None, :] == targets[:, None], -torch.inf)
        logits = torch.cat([positive[:, None], negative], dim=1)
        return F.cross_entropy(logits, torch.zeros_like(targets))
    n_neg = 1 if n_negatives is None else n_negatives
    negatives = torch.randint(1, n_items + 1, (len(targets), n_neg), device=states.device)
    negative = torch.einsum("nd,nkd->nk", states, table[negatives]).float()
    is_negative = (negatives != targets[:, None]).float()
    negative_loss = (F.softplus(negative) * is_negative).sum(-1) / n_neg
    return (F.softplus(-positive) + negative_loss).mean()


# ---------------------------------------------------------------------- private training
def private_trainer(
    model: SASRec, net: SASRecNetwork, optimizer: torch.optim.Optimizer, n_users: int
) -> Any:
    """The DP-SGD trainer of a private fit (`recarena.privacy.dp.UserLevelDPSGD`): the
    noise calibrated to the model's target over its ``epochs`` budget."""
    from recarena.privacy.dp import UserLevelDPSGD

    # a parameter the optimizer holds that the network dropped (text-SASRec swaps SASRec's
    # ID table for its text embedding) gets no gradient, private or not
    in_network = {id(p) for p in net.parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            if id(p) not in in_network:
                p.requires_grad_(False)
    return UserLevelDPSGD(
        StatesAndItems(net),
        optimizer,
        n_users=n_users,
        batch_size=model.batch_size,
        epochs=model.epochs,
        epsilon=model.dp_epsilon,
        delta=model.dp_delta,
        noise_multiplier=model.dp_noise_multiplier,
        max_grad_norm=model.dp_max_grad_norm,
        seed=model.seed,
    )


class StatesAndItems(torch.nn.Module):
    """The network as one call for per-user gradients: ``forward(items)`` is the hidden
    states and the output item table (`SASRecNetwork.item_vectors`, which a text-SASRec
    computes from its text), so both go through ``torch.func.functional_call``."""

    def __init__(self, net: SASRecNetwork) -> None:
        super().__init__()
        self.net = net

    def forward(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(items), self.net.item_vectors()


def user_sequence_loss(net: Any, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """One user's full-softmax cross-entropy, the mean over the positions of its sequence
    (padding, target 0, left out); shapes without data-dependent sizes, for ``vmap``."""
    states, table = net(inputs)
    logits = states @ table.T
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        (targets.long() - 1).reshape(-1),
        ignore_index=-1,
    )


def private_epoch(
    dp: Any,
    train: History,
    order: np.ndarray,
    set_lr: Callable[[int, int], None] | None = None,
) -> float:
    """One epoch of DP-SGD: ``1 / q`` steps, each on the users of ``order`` drawn by
    Poisson sampling (`UserLevelDPSGD.epoch_batches`); returns the mean of the steps'
    per-user losses (steps with no user left out). ``set_lr`` as for `train_epoch`."""
    net = dp.module
    device = next(net.parameters()).device
    net.train()
    users = np.sort(order)
    losses = []
    for step, picked in enumerate(dp.epoch_batches()):
        if set_lr is not None:
            set_lr(step, dp.steps_per_epoch)
        batch = users[picked]
        seq = torch.from_numpy(train.left_padded(batch, pad=0)).to(device)
        if len(batch) == 0:
            seq = torch.zeros((0, 2), dtype=torch.int32, device=device)
        loss = dp.step(user_sequence_loss, (seq[:, :-1], seq[:, 1:]))
        if not math.isnan(loss):
            losses.append(loss)
    return float(np.mean(losses)) if losses else math.nan


# ---------------------------------------------------------------------- validation
def validation_ndcg(
    full_scores: Callable[[np.ndarray], torch.Tensor],
    users: np.ndarray,
    truth: sp.csr_matrix,
    seen: sp.csr_matrix,
    n_items: int,
    batch_size: int,
) -> float:
    """Mean NDCG@10 over ``users``: full ranking by ``full_scores``, ``seen`` excluded.

    Every user counts (a user whose held-out items are all excluded scores zero), as in
    the runner's measurement; ties among float scores are left to ``torch.topk``. Users
    are scored ``batch_size`` at a time, fewer on catalogs too large for that.
    """
    discount = 1.0 / np.log2(np.arange(2, EVAL_K + 2))
    ideal = np.concatenate([[0.0], np.cumsum(discount)])
    chunk = max(1, min(batch_size, EVAL_BLOCK_CELLS // max(1, n_items)))
    total = 0.0
    for begin in range(0, len(users), chunk):
        batch = users[begin : begin + chunk]
        scores = full_scores(batch)
        scores[torch.from_numpy(dense_rows(seen, batch)).to(scores.device)] = -torch.inf
        top = scores.topk(min(EVAL_K, scores.shape[1]), dim=1).indices.cpu().numpy()
        relevant = dense_rows(truth, batch)
        dcg = (np.take_along_axis(relevant, top, axis=1) * discount[: top.shape[1]]).sum(1)
        n_relevant = np.minimum(relevant.sum(1), EVAL_K)
        total += float((dcg / np.where(n_relevant > 0, ideal[n_relevant], 1.0)).sum())
    return total / len(users)


def dense_rows(matrix: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
    """Boolean dense copy of some rows of a CSR matrix."""
    sub = matrix[rows]
    out = np.zeros(sub.shape, dtype=bool)
    out[np.repeat(np.arange(len(rows)), np.diff(sub.indptr)), sub.indices] = True
    return out


# ---------------------------------------------------------------------- torch's state
def autocast(device: torch.device, mixed_precision: bool) -> contextlib.AbstractContextManager[Any]:
    """bfloat16 autocast on CUDA devices that support it, when ``mixed_precision``; else none
    (on CPU it would be slower)."""
    if mixed_precision and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def cuda_devices(device: torch.device) -> list[int]:
    """The CUDA device whose generator a fit on ``device`` draws from (none on CPU)."""
    return [device.index or torch.cuda.current_device()] if device.type == "cuda" else []


@contextlib.contextmanager
def seeded(device: torch.device, seed: int, num_threads: int | None) -> Iterator[None]:
    """A fit's torch state: the global generators forked and seeded with ``seed`` (the
    caller's stay untouched), ``num_threads`` CPU threads, deterministic kernels on CPU."""
    with (
        torch.random.fork_rng(devices=cuda_devices(device)),
        threads(num_threads),
        deterministic(device.type == "cpu"),
    ):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def threads(n: int | None) -> Iterator[None]:
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
def deterministic(enabled: bool) -> Iterator[None]:
    """Deterministic torch kernels inside the block.

    Used on CPU only, where it costs nothing once torch's NaN-filling of new tensors (a
    debugging aid that comes with the mode) is turned off; on CUDA it would need
    ``CUBLAS_WORKSPACE_CONFIG`` set before start-up and slower embedding gradients.
    """
    if not enabled:
        yield
        return
    import torch.utils.deterministic as torch_deterministic

    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch_deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)
    torch_deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)
        torch_deterministic.fill_uninitialized_memory = fill
