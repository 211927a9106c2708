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

**Differentially private training.** ``dp_epsilon`` (a target, with ``dp_delta``) or
``dp_noise_multiplier`` trains with DP-SGD through Opacus, one user's whole training
sequence being the privacy unit (`recarena.privacy.dp`): users are Poisson-sampled at rate
``batch_size / n_users``, each user's gradient is clipped to ``dp_max_grad_norm`` and
Gaussian noise is added to their sum; Opacus's RDP accountant records the epsilon spent
(``dp_`` in ``cost.json``). A private fit keeps no checkpoints (a killed one starts over).

A fitted model saves as the base class does, with the network as a state dict
(``weights.pt``). With a checkpoint folder a fit saves its state after every epoch and a
killed fit resumes where it stopped.

This folder: `network` (`SASRecConfig`, `SASRecNetwork`, the full-softmax loss), `batching`
(training sequences), `training` (how training works: the loop, early stopping, checkpoints)
and this file, `SASRec`, the `Recommender`. torch is imported at the top: the registry
imports this module only when a SASRec is created, so ``recarena --help`` never loads it.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from recarena._io import atomic_open
from recarena.models._dp_sgd import DP_SGD_OFF, DPSGDParams
from recarena.models._history import History, KeepsHistory
from recarena.models.base import Recommender, TrainingData, is_integer, is_number, require_param
from recarena.models.classical.sasrec import training
from recarena.models.classical.sasrec.batching import shifted_history
from recarena.models.classical.sasrec.network import (
    BLOCKS,
    INITS,
    POSITIONS,
    SASRecConfig,
    SASRecNetwork,
)
from recarena.models.classical.sasrec.training import EVAL_K

logger = logging.getLogger(__name__)

Loss = Literal["ce", "bce", "sampled_ce"]
LRSchedule = Literal["constant", "cosine", "linear"]

#: file holding the network weights (a state dict) next to the base class's state.pkl
WEIGHTS_FILE = "weights.pt"


# ---------------------------------------------------------------------- the recommender
class SASRec(DPSGDParams, KeepsHistory, Recommender):
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
        Adam learning rate (default 1e-3).
    adam_beta2
        Adam's second-moment decay (default 0.98, the SASRec paper's; PyTorch's and
        Klenitskiy & Vasilev's is 0.999). The first is 0.9.
    init
        Initial weights: ``"xavier"`` (default; Xavier-normal on every matrix, as the
        reference PyTorch SASRec) or ``"normal"`` (N(0, 0.02) on every matrix, embeddings
        included, as Klenitskiy & Vasilev's SASRec with cross-entropy; with
        ``block="reference"`` the attention's input projection keeps the Xavier-uniform of
        their code's ``nn.MultiheadAttention``).
    block
        ``"pre_ln"`` (default): ``x + Dropout(f(LayerNorm(x)))``, the paper's equation.
        ``"reference"``: the block of the reference PyTorch SASRec that Klenitskiy &
        Vasilev's code runs (queries from ``LayerNorm(x)``, keys and values from ``x``, the
        residual added to ``LayerNorm(x)``); the same parameters.
    positions
        ``"recent"`` (default): position embeddings counted back from the most recent item.
        ``"first"``: counted from the first item read, as in Klenitskiy & Vasilev's code.
    weight_decay
        Adam L2 penalty (default 0).
    lr_schedule
        How the learning rate moves over the epochs: ``"constant"`` (default; ``lr``
        throughout, after any warm-up), ``"cosine"`` or ``"linear"`` (from ``lr`` after the
        warm-up down to zero at ``decay_epochs``, set step by step). A decaying schedule
        ends training at ``decay_epochs``; the refit trains the best epoch's count of the
        *same* schedule (``refit_params`` passes ``decay_epochs`` on), so it retraces the
        validation fit.
    warmup_epochs
        Epochs over which the rate rises linearly from near zero to ``lr`` (default 0).
    decay_epochs
        Length of a decaying schedule in epochs (None: ``epochs``). Ignored by
        ``"constant"``.
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
    max_train_seconds
        Budget: training ends with the first epoch that ends past this many seconds of
        training (validation included; a resumed fit counts the time before it stopped),
        and that epoch is measured on validation (default None: no time budget). The weights
        of the best measurement are kept, as with early stopping. The one parameter whose
        result depends on the machine's speed: ``training_log_`` records where it stopped,
        and a refit (``refit_params``) trains the best epoch's count, not the seconds.
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
    dp_epsilon, dp_delta
        Train with differential privacy for this target (epsilon, delta) over the
        ``epochs`` budget (None: not private; ``dp_delta`` defaults to ``1 / n_users**1.1``).
        Only ``loss="ce"``; users are sampled, not ordered.
    dp_noise_multiplier
        Or the noise multiplier itself (not both); the spent epsilon is still recorded.
    dp_max_grad_norm
        Clipping norm of one user's gradient (default 1.0).

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
        included); a private fit adds ``epsilon`` (spent so far).
    dp_
        A private fit's record (`recarena.privacy.dp.DPRecord`): epsilon spent, delta, noise
        multiplier, clipping norm, sampling rate, steps.
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
    cost_attributes = (*Recommender.cost_attributes, "dp_")
    #: options added after runs were saved, off at these values (`Recommender.neutral_params`)
    neutral_params = {
        **DP_SGD_OFF,
        "lr_schedule": "constant",
        "warmup_epochs": 0,
        "decay_epochs": None,
        **training.NEUTRAL_RECIPE,
    }

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
        dp_epsilon: float | None = None,
        dp_delta: float | None = None,
        dp_noise_multiplier: float | None = None,
        dp_max_grad_norm: float = 1.0,
        lr_schedule: LRSchedule = "constant",
        warmup_epochs: int = 0,
        decay_epochs: int | None = None,
        adam_beta2: float = 0.98,
        init: Literal["xavier", "normal"] = "xavier",
        block: Literal["pre_ln", "reference"] = "pre_ln",
        positions: Literal["recent", "first"] = "recent",
        max_train_seconds: float | None = None,
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
        self.dp_epsilon = dp_epsilon
        self.dp_delta = dp_delta
        self.dp_noise_multiplier = dp_noise_multiplier
        self.dp_max_grad_norm = dp_max_grad_norm
        self.lr_schedule = lr_schedule
        self.warmup_epochs = warmup_epochs
        self.decay_epochs = decay_epochs
        self.adam_beta2 = adam_beta2
        self.init = init
        self.block = block
        self.positions = positions
        self.max_train_seconds = max_train_seconds

    # ------------------------------------------------------------------ fitting
    def check_params(self) -> None:
        """Sizes and counts positive integers, rates and dropout in range, a known loss;
        ``hidden`` divisible by ``n_heads`` (checked before any data is loaded)."""
        positive = ("max_len", "hidden", "n_blocks", "n_heads", "batch_size", "epochs")
        for name in (*positive, "eval_every", "patience", "eval_batch_size"):
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
        require_param(
            self,
            "adam_beta2",
            is_number(self.adam_beta2) and 0 <= self.adam_beta2 < 1,
            "in [0, 1)",
        )
        require_param(
            self,
            "max_train_seconds",
            self.max_train_seconds is None
            or (is_number(self.max_train_seconds) and self.max_train_seconds > 0),
            "a positive number of seconds or None",
        )
        for name, known in (("init", INITS), ("block", BLOCKS), ("positions", POSITIONS)):
            value = getattr(self, name)
            require_param(self, name, value in known, " or ".join(repr(i) for i in known))
        self._check_dp_params()
        self._check_schedule_params()

    def _check_schedule_params(self) -> None:
        schedule = self._lr_schedule()
        require_param(
            self,
            "lr_schedule",
            schedule.kind in ("constant", "cosine", "linear"),
            "'constant', 'cosine' or 'linear'",
        )
        require_param(
            self,
            "warmup_epochs",
            is_integer(schedule.warmup_epochs) and schedule.warmup_epochs >= 0,
            "an integer >= 0",
        )
        decay = vars(self).get("decay_epochs")
        require_param(
            self,
            "decay_epochs",
            decay is None or (is_integer(decay) and decay > schedule.warmup_epochs),
            f"None or an integer above warmup_epochs ({schedule.warmup_epochs})",
        )

    def _lr_schedule(self) -> training.LRScheduleSpec:
        """The learning-rate schedule of this fit (constant for a model saved before
        schedules existed)."""
        state = vars(self)
        return training.LRScheduleSpec(
            kind=state.get("lr_schedule", "constant"),
            warmup_epochs=state.get("warmup_epochs", 0),
            decay_epochs=state.get("decay_epochs") or self.epochs,
        )

    def _check_dp_params(self) -> None:
        super()._check_dp_params()
        if self._private():
            require_param(self, "loss", self.loss == "ce", "'ce' for a private fit")

    def _fit(self, data: TrainingData, valid: pd.DataFrame | None) -> None:
        device = self._torch_device()
        self._keep_history(data)
        # training reads one more item: inputs are items [0, n-1), targets items [1, n)
        train = shifted_history(data.sequences, self.max_len + 1)
        lr_schedule = self._lr_schedule()
        schedule = training.Schedule(
            epochs=lr_schedule.last_epoch(self.epochs),
            eval_every=self.eval_every,
            patience=self.patience,
            patience_steps=self.patience_steps,
            batch_size=self.batch_size,
            max_seconds=self.max_train_seconds,
        )
        validation = training.validation_targets(valid, data)
        with training.seeded(device, self.seed, self.num_threads):
            rng = np.random.default_rng(self.seed)
            self.network_ = net = SASRecNetwork(self._config()).to(device)
            optimizer = torch.optim.Adam(
                net.parameters(),
                lr=self.lr,
                betas=(0.9, self.adam_beta2),
                weight_decay=self.weight_decay,
            )
            self._prepare_training(net, optimizer)
            self._lr_at = lr_schedule.factor if lr_schedule.moves() else None
            self._dp_trainer = None
            if self._private():
                self._dp_trainer = training.private_trainer(
                    self, net, optimizer, int((train.lengths >= 2).sum())
                )
            checkpoint = None
            if data.checkpoint_dir is not None and self._dp_trainer is None:
                key = self._checkpoint_key(data, valid)
                checkpoint = training.Checkpoint(Path(data.checkpoint_dir), key)
            training.run_epochs(
                self, net, optimizer, rng, train, schedule, validation, checkpoint, device
            )
        net.eval()
        if self._dp_trainer is not None:
            self.dp_ = self._dp_trainer.record().as_dict()
        del self._dp_trainer, self._lr_at
        if checkpoint is not None:
            checkpoint.remove()

    # ---------------------------------------------- hooks of the training loop (`training`)
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
        return training.checkpoint_key(type(self), self.get_params(), data, valid)

    def _log_epoch(self, epoch: int, loss: float, ndcg: float | None, seconds: float) -> None:
        row = {"epoch": epoch, "loss": loss, f"valid_ndcg@{EVAL_K}": ndcg, "seconds": seconds}
        if vars(self).get("_dp_trainer") is not None:
            row["epsilon"] = self._dp_trainer.epsilon()
        self.training_log_.append(row)
        shown = "-" if ndcg is None else f"{ndcg:.4f}"
        logger.info(
            "SASRec epoch %d: loss %.4f, valid NDCG@10 %s, %.1f s", epoch, loss, shown, seconds
        )

    def _train_epoch(
        self,
        net: SASRecNetwork,
        optimizer: torch.optim.Optimizer,
        train: History,
        order: np.ndarray,
    ) -> float:
        """One pass over ``order`` (user ids); returns the mean loss per position. A private
        fit draws its own Poisson-sampled batches from the same users instead."""
        lr_at = vars(self).get("_lr_at")
        set_lr = None if lr_at is None else training.LRSetter(optimizer, lr_at, self._epoch)
        if vars(self).get("_dp_trainer") is not None:
            return training.private_epoch(self._dp_trainer, train, order, set_lr)
        loss = functools.partial(training.next_item_loss, self.loss, self.n_negatives)
        autocast = functools.partial(training.autocast, mixed_precision=self.mixed_precision)
        return training.train_epoch(
            net, optimizer, train, order, self.batch_size, loss, autocast, set_lr
        )

    @torch.inference_mode()
    def _validation_ndcg(
        self, users: np.ndarray, truth: sp.csr_matrix, seen: sp.csr_matrix
    ) -> float:
        """Mean NDCG@10 over ``users``: full ranking (`_full_scores`), training items
        excluded (see `training.validation_ndcg`)."""
        return training.validation_ndcg(
            self._full_scores, users, truth, seen, self.n_items_, self.eval_batch_size
        )

    def refit_params(self) -> dict[str, Any]:
        """The epochs to train on train + valid without validation (`_refit_epochs`); with a
        decaying learning rate, also the schedule's length, so that the refit's rates are
        the validation fit's; without the time budget, which the epochs replace."""
        params = self._refit_epochs()
        if self.max_train_seconds is not None:
            # the epochs are the budget now: a slower refit must not be cut before them
            params["max_train_seconds"] = None
        schedule = self._lr_schedule()
        if schedule.kind != "constant":
            params["decay_epochs"] = int(schedule.decay_epochs)
        return params

    def _refit_epochs(self) -> dict[str, Any]:
        """The epoch counts a refit trains: the best epoch here."""
        return {"epochs": int(self.best_epoch_)}

    def _config(self) -> SASRecConfig:
        return SASRecConfig(
            n_items=self.n_items_,
            max_len=self.max_len,
            hidden=self.hidden,
            n_blocks=self.n_blocks,
            n_heads=self.n_heads,
            dropout=self.dropout,
            init=self.init,
            block=self.block,
            positions=self.positions,
        )

    # ------------------------------------------------------------------ scoring
    def _score(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        out = []
        with training.threads(self.num_threads):
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
        with training.autocast(device, self.mixed_precision):
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

    def _torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

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
