"""`JointTextSASRec` (``lm-text-sasrec-joint``) trains the language model with the sequence
model, as Recformer (Li et al., KDD 2023) and UniSRec's fine-tuning do, in two stages:

1. **Frozen.** Exactly `TextSASRec` (same vectors, same initialisation, same random draws),
   trained until early stopping ends it (or for ``frozen_epochs``).
2. **Joint.** From the best frozen epoch's weights, the top ``train_layers`` layers of the
   encoder (LoRA adapters on them, or their weights) are trained together with the
   adaptor, the ID embeddings and the Transformer, on the same full-softmax loss. The layers
   below are run once per item and cached (`recarena.lm.top_layers.TopLayerEncoder`). Each
   step re-encodes, with gradients, ``lm_items_per_step`` of the batch's items (None: the
   whole catalog, the exact gradient, for GPUs); the other rows of the text table are the
   catalog as encoded at the start of the epoch. Adam goes on from its state at the best
   frozen epoch (the encoder's weights from none), and the random draws are seeded afresh,
   so that a refit retraces the validation fit.

The joint stage must beat the best frozen epoch on validation to be kept: early stopping
compares every joint epoch with it, so the model keeps or improves on the frozen-feature
text-SASRec it starts from. After training, the item embeddings are computed once from the
kept encoder and the model is a `TextSASRec` over those vectors (saved, loaded, scored and
updated as one).
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from recarena.models.base import TrainingData, is_integer, is_number, require_param
from recarena.models.classical.sasrec import SASRecNetwork
from recarena.models.language.common import trainable_encoder
from recarena.models.language.text_sasrec.network import Adaptor, JointTextItemEmbedding
from recarena.models.language.text_sasrec.recommender import TextSASRec

logger = logging.getLogger(__name__)


class JointTextSASRec(TextSASRec):
    """Text-SASRec whose encoder's top layers are trained with it (see the module docstring).

    Parameters
    ----------
    model, pooling, text_max_length, text_batch_size, prompt, id_embedding, adaptor,
    n_experts, encode_device
        As for `TextSASRec`; the pooling must be mean pooling (what ``"auto"`` gives for
        sentence encoders).
    tuning
        ``"lora"`` (default): LoRA adapters on the attention queries and values of the top
        layers; ``"full"``: every weight of the top layers.
    train_layers
        Encoder layers trained, counted from the top (default 2).
    lora_r, lora_alpha, lora_dropout, lora_targets
        LoRA rank (8), scale (16), dropout (0.1) and target layers (None: peft's default
        for the architecture, else query/value).
    lm_lr
        Adam learning rate of the encoder's trained weights (default None: 1e-4 for LoRA,
        2e-5 for full); the rest of the network keeps ``lr``.
    lm_items_per_step
        Items re-encoded with gradients per step, drawn from the batch's items (default
        256; None: the whole catalog every step).
    frozen_epochs
        Epochs of the frozen stage; None (default): until early stopping ends it (without
        validation data: none, the encoder is trained from the first epoch). The refit gets
        the number that was best.
    max_len, hidden, n_blocks, n_heads, dropout, loss, n_negatives, lr, weight_decay,
    batch_size, epochs, eval_every, patience, patience_steps, device, mixed_precision,
    num_threads, eval_batch_size, seed, max_train_seconds
        As for `recarena.models.classical.sasrec.SASRec`; ``epochs`` counts both stages, ``patience``
        and ``patience_steps`` apply to each; the time budget covers both stages (spent
        during the first, the second does not start).

    Attributes
    ----------
    network_, best_epoch_, best_valid_ndcg_
        As for SASRec; after fitting, ``network_.item_embedding`` is a `TextItemEmbedding`
        over the kept encoder's text vectors.
    training_log_
        SASRec's, with ``stage`` (1: frozen, 2: joint) in every row.
    switch_epoch_, frozen_best_epoch_
        The epoch after which the joint stage began and the best frozen epoch it began from
        (None: it never began).
    joint_kept_
        True when the kept weights are a joint epoch's.
    """

    family = "lm-features-trained"
    #: a language model: a share of a GPU where the cluster has one
    resources = {"num_cpus": 1, "num_gpus": 0.25}
    fusion = "joint-training"

    def __init__(
        self,
        model: str = "minilm-l6",
        *,
        tuning: Literal["lora", "full"] = "lora",
        train_layers: int = 2,
        lora_r: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.1,
        lora_targets: list[str] | None = None,
        lm_lr: float | None = None,
        lm_items_per_step: int | None = 256,
        frozen_epochs: int | None = None,
        pooling: str = "auto",
        text_max_length: int = 128,
        text_batch_size: int = 64,
        prompt: str = "{text}",
        id_embedding: bool = True,
        adaptor: Adaptor = "linear",
        n_experts: int = 4,
        encode_device: str = "auto",
        max_len: int = 200,
        hidden: int = 64,
        n_blocks: int = 2,
        n_heads: int = 1,
        dropout: float = 0.2,
        loss: Literal["ce", "bce", "sampled_ce"] = "ce",
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
        max_train_seconds: float | None = None,
    ) -> None:
        super().__init__(
            model,
            pooling=pooling,
            text_max_length=text_max_length,
            text_batch_size=text_batch_size,
            prompt=prompt,
            id_embedding=id_embedding,
            adaptor=adaptor,
            n_experts=n_experts,
            encode_device=encode_device,
            max_len=max_len,
            hidden=hidden,
            n_blocks=n_blocks,
            n_heads=n_heads,
            dropout=dropout,
            loss=loss,
            n_negatives=n_negatives,
            lr=lr,
            weight_decay=weight_decay,
            batch_size=batch_size,
            epochs=epochs,
            eval_every=eval_every,
            patience=patience,
            patience_steps=patience_steps,
            device=device,
            mixed_precision=mixed_precision,
            num_threads=num_threads,
            eval_batch_size=eval_batch_size,
            seed=seed,
            max_train_seconds=max_train_seconds,
        )
        self.tuning = tuning
        self.train_layers = train_layers
        self.lora_r = lora_r
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.lora_targets = lora_targets
        self.lm_lr = lm_lr
        self.lm_items_per_step = lm_items_per_step
        self.frozen_epochs = frozen_epochs

    # ------------------------------------------------------------------ fitting
    def check_params(self) -> None:
        """TextSASRec's checks, and the joint stage's: tuning, layers, LoRA, lm rate."""
        super().check_params()
        require_param(self, "tuning", self.tuning in ("lora", "full"), "'lora' or 'full'")
        for name in ("train_layers", "lora_r"):
            value = getattr(self, name)
            require_param(self, name, is_integer(value) and value >= 1, "a positive integer")
        require_param(
            self,
            "lora_alpha",
            is_number(self.lora_alpha) and self.lora_alpha > 0,
            "a positive number",
        )
        require_param(
            self,
            "lora_dropout",
            is_number(self.lora_dropout) and 0 <= self.lora_dropout < 1,
            "in [0, 1)",
        )
        require_param(
            self,
            "lm_lr",
            self.lm_lr is None or (is_number(self.lm_lr) and self.lm_lr >= 0),
            "a number >= 0 or None (0 leaves the encoder as it is)",
        )
        require_param(
            self,
            "lm_items_per_step",
            self.lm_items_per_step is None
            or (is_integer(self.lm_items_per_step) and self.lm_items_per_step >= 1),
            "a positive integer or None",
        )
        require_param(
            self,
            "frozen_epochs",
            self.frozen_epochs is None
            or (is_integer(self.frozen_epochs) and self.frozen_epochs >= 0),
            "an integer >= 0 or None",
        )

    def _fit(self, data: TrainingData, valid: pd.DataFrame | None) -> None:
        self._has_valid = valid is not None and len(valid) > 0
        self._fit_data = data
        self.switch_epoch_: int | None = None
        self.frozen_best_epoch_: int | None = None
        self._best_optimizer: dict[str, Any] | None = None
        try:
            super()._fit(data, valid)
            self._freeze_text_table()
        finally:
            for name in ("_fit_data", "_lm_trained", "_has_valid", "_best_optimizer"):
                self.__dict__.pop(name, None)

    def _prepare_training(self, net: SASRecNetwork, optimizer: torch.optim.Optimizer) -> None:
        # what TextSASRec does (the same module initialisation, so stage 1 is TextSASRec
        # draw for draw), with the encoder's top layers attached in their own param group
        device = next(net.parameters()).device
        embedding = JointTextItemEmbedding(
            self.n_items_,
            self.text_dim_,
            self.hidden,
            adaptor=self.adaptor,
            n_experts=self.n_experts,
            id_embedding=self.id_embedding,
        )
        embedding.set_text(self._text, self.trained_items_)
        net.item_embedding = embedding.to(device)
        optimizer.add_param_group({"params": list(embedding.parameters())})
        cuda = [device.index or torch.cuda.current_device()] if device.type == "cuda" else []
        # loading the encoder and LoRA's initialisation draw from a generator of their own
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(self.seed)
            encoder = self._top_layer_encoder(device)
        embedding.attach(encoder, self.lm_items_per_step, self.text_batch_size)
        self._lm_trained = [p for p in embedding.top.parameters() if p.requires_grad]
        self.lm_trained_parameters_ = sum(p.numel() for p in self._lm_trained)
        for p in embedding.top.parameters():
            p.requires_grad_(False)  # until the joint stage
        lr = self.lm_lr if self.lm_lr is not None else (1e-4 if self.tuning == "lora" else 2e-5)
        optimizer.add_param_group({"params": self._lm_trained, "lr": lr})
        if self.frozen_epochs == 0 or (self.frozen_epochs is None and not self._has_valid):
            self._start_joint(net, 0, 0)

    def _top_layer_encoder(self, device: torch.device) -> Any:
        """The encoder (float32, trainable top layers) over the catalog's token ids."""
        from recarena.lm.encoder import ItemTextEncoder
        from recarena.lm.top_layers import TopLayerEncoder

        text_encoder = ItemTextEncoder(
            self.model,
            cache_dir=self._fit_data.cache_dir,
            pooling=self.pooling,
            max_length=self.text_max_length,
            template=self.prompt,
            device=str(device),
            dtype="float32",
            progress=False,
        )
        if text_encoder.pooling_mode() != "mean":
            raise ValueError(
                f"lm-text-sasrec-joint trains mean-pooled encoders; {self.model} pools "
                f"{text_encoder.pooling_mode()!r}"
            )
        loaded = text_encoder.load()
        if loaded.backend != "torch" or loaded.family != "encoder":
            raise ValueError(f"{self.model} is not a transformers encoder (BERT-style)")
        n_layers = int(getattr(loaded.model.config, "num_hidden_layers", 0) or 0)
        if self.train_layers > n_layers:
            raise ValueError(f"train_layers must be between 1 and the model's {n_layers} layers")
        tokenizer = loaded.tokenizer
        max_length = self.text_max_length
        if loaded.max_positions:
            max_length = min(max_length, loaded.max_positions)
        assert self._fit_data.item_text is not None
        texts = [self.prompt.replace("{text}", t) for t in self._fit_data.item_text]
        ids = tokenizer(
            texts,
            add_special_tokens=True,
            truncation=True,
            max_length=max_length,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.lm_parameters_ = int(loaded.n_parameters)
        lm = trainable_encoder(
            loaded.model.float().eval(),
            self.tuning,
            self.train_layers,
            lora_r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            lora_targets=self.lora_targets,
        )
        # the encoder's own modules stay in eval mode (the embeddings' output is dropped);
        # the top layers follow the network's mode, as they are registered in it
        return TopLayerEncoder(lm.eval(), self.train_layers, ids, int(pad))

    def _start_joint(self, net: SASRecNetwork, switch_epoch: int, frozen_best: int) -> None:
        embedding = net.item_embedding
        assert isinstance(embedding, JointTextItemEmbedding)
        for p in self._lm_trained:
            p.requires_grad_(True)
        embedding.start_joint()
        self.switch_epoch_, self.frozen_best_epoch_ = switch_epoch, frozen_best

    def _stage_start(self) -> int:
        return self.switch_epoch_ or 0

    def _next_stage(
        self,
        net: SASRecNetwork,
        optimizer: torch.optim.Optimizer,
        rng: np.random.Generator,
        epoch: int,
        stopped: bool,
        best_state: dict[str, torch.Tensor] | None,
    ) -> bool:
        if net.item_embedding.joint:
            return False
        if self._has_valid and self.best_epoch_ == epoch:
            # Adam as it was at the best frozen epoch, to go on from with its weights
            self._best_optimizer = copy.deepcopy(optimizer.state_dict())
        if epoch >= self.epochs:
            return False
        if not (stopped or (self.frozen_epochs is not None and epoch >= self.frozen_epochs)):
            return False
        frozen_best = self.best_epoch_ if self._has_valid else epoch
        if best_state is not None:
            net.load_state_dict(best_state)
        if self._best_optimizer is not None:
            optimizer.load_state_dict(self._best_optimizer)
            self._best_optimizer = None
        self._start_joint(net, epoch, frozen_best)
        # the best frozen epoch's weights and Adam state, then seeded draws: the joint stage
        # depends only on the state it starts from, so a refit (frozen_epochs = the best
        # frozen epoch, no validation) retraces it
        torch.manual_seed(self.seed + 1)
        rng.bit_generator.state = np.random.default_rng([self.seed, 1]).bit_generator.state
        logger.info(
            "lm-text-sasrec-joint: training the encoder's top %d layers from epoch %d's weights",
            self.train_layers,
            frozen_best,
        )
        return True

    def _stage_state(self) -> Any:
        return {
            "switch_epoch": self.switch_epoch_,
            "frozen_best_epoch": self.frozen_best_epoch_,
            "best_optimizer": self._best_optimizer,
        }

    def _resume_stage(self, net: SASRecNetwork, state: Any) -> None:
        if not state:
            return
        self._best_optimizer = state.get("best_optimizer")
        if state.get("switch_epoch") is not None and not net.item_embedding.joint:
            self._start_joint(net, state["switch_epoch"], state["frozen_best_epoch"])

    def _train_epoch(
        self,
        net: SASRecNetwork,
        optimizer: torch.optim.Optimizer,
        train: Any,
        order: np.ndarray,
    ) -> float:
        if net.item_embedding.joint:
            net.item_embedding.refresh()  # the catalog as the encoder now sees it
        return super()._train_epoch(net, optimizer, train, order)

    def _validation_ndcg(self, users: np.ndarray, truth: Any, seen: Any) -> float:
        embedding = self.network_.item_embedding
        if isinstance(embedding, JointTextItemEmbedding) and embedding.joint:
            embedding.refresh()
        return super()._validation_ndcg(users, truth, seen)

    def _log_epoch(self, epoch: int, loss: float, ndcg: float | None, seconds: float) -> None:
        super()._log_epoch(epoch, loss, ndcg, seconds)
        self.training_log_[-1]["stage"] = 2 if self.network_.item_embedding.joint else 1

    def _freeze_text_table(self) -> None:
        """Swap the joint embedding for a `TextItemEmbedding` over the kept text vectors."""
        net = self.network_
        embedding = net.item_embedding
        assert isinstance(embedding, JointTextItemEmbedding)
        if self.switch_epoch_ is None:
            self.joint_kept_ = False
        elif self._has_valid:
            self.joint_kept_ = self.best_epoch_ > self.switch_epoch_
        else:
            self.joint_kept_ = self.epochs > self.switch_epoch_
        state = {k: v for k, v in embedding.state_dict().items() if not k.startswith("top.")}
        if self.joint_kept_:
            embedding.refresh()
            state["text"] = embedding.stale.detach().clone()
        device = state["text"].device
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            plain = self._text_embedding()
        plain.load_state_dict(state)
        net.item_embedding = plain.to(device)
        net.eval()

    def _refit_epochs(self) -> dict[str, Any]:
        """Both stages' epochs as they were best here (the joint stage's counted after the
        best frozen epoch it starts from)."""
        if self.switch_epoch_ is None or not self.joint_kept_:
            return {"epochs": int(self.best_epoch_), "frozen_epochs": int(self.best_epoch_)}
        joint = self.best_epoch_ - self.switch_epoch_
        frozen = int(self.frozen_best_epoch_ or 0)
        return {"epochs": frozen + int(joint), "frozen_epochs": frozen}

    # ------------------------------------------------------------------ cost
    def n_parameters(self) -> tuple[int, int]:
        """(encoder + adapters + network, trained): the network and the encoder's tuned part."""
        total, trainable = super().n_parameters()
        tuned = int(getattr(self, "lm_trained_parameters_", 0))
        return total + (tuned if self.tuning == "lora" else 0), trainable + tuned
