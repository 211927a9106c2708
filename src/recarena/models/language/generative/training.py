"""LoRA training of the generative ranker: a contrastive (or generative) loss over title
log-likelihoods, early stopping on validation NDCG@10, the zero-shot model kept when
training does not beat it, and an adapter trained once per data and parameters
(`Session.training`). `LoRATraining` is mixed into `GenerativeRanker`, whose prompts,
scoring and decoder sessions it uses.

LoRA fine-tuning (``lora=True``)
    Every epoch draws ``max_train_pairs`` fresh (user, position) pairs of the training
    histories (seeded); each pair is the prompt of the history before the position, that
    position's title (the positive) and ``n_train_negatives`` titles drawn uniformly from
    the items the user has not interacted with in training (drawn anew every epoch), the
    way the sampled evaluation protocol draws its negatives. ``train_loss="contrastive"``
    (default) is the cross-entropy of a softmax over the candidates' title scores
    (``train_score``: the sum of the title's token log-probabilities, the probability the
    decoder gives the whole title, or their mean), with the positive as the label: it
    teaches what is measured, ranking the next item above other items for this history,
    and, since positives follow the items' popularity and negatives do not, which items
    are popular. The prompts of a batch run in one forward pass; their key-value caches,
    with gradients, serve all the candidates (the scoring code path, checked equal in the
    tests). With ``train_loss="generative"`` the loss is instead the cross-entropy of the
    positive title's tokens (next-title language modelling; no negatives).

    AdamW on the adapter's parameters (peft ``LoraConfig``: ``lora_r``, ``lora_alpha``,
    ``lora_dropout``, ``lora_target_modules``), a linear warm-up over the first 10% of the
    steps then linear decay, gradients clipped to norm 1, run through Hugging Face
    Accelerate, so the same loop runs on one GPU, on the CPU, or under ``accelerate
    launch``. With validation data, the held-out item of up to ``max_valid_users`` users is
    ranked among ``n_valid_negatives`` seeded negatives after every epoch by the training
    score (``early_stopping="ndcg"``, NDCG@10; the NDCG by the title's log-likelihood sum
    and by its mean are logged too) or its title's mean token log-likelihood is measured
    (``early_stopping="loglik"``); epoch 0 is the zero-shot model, which training must
    beat. The best epoch's adapter is kept, ``refit_params()`` returns it as ``epochs``,
    and ``training_log_`` has one row per epoch (the learning curve the runner saves as
    ``training_log.json``). The rows of epoch 0 and of the kept epoch also hold a sanity
    check: NDCG@10 of the validation items when the decoder is given no history (a
    popularity ranking) and the Spearman correlation of that no-history score with the
    items' training popularity.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from recarena.models._moved import stable_class_path
from recarena.models.base import TrainingData
from recarena.models.language.generative.batching import NegativeSampler, length_buckets
from recarena.models.language.generative.network import (
    cache_kwarg,
    count_lora,
    generative_loss,
    model_device,
    output_cache,
    select_cache,
    token_logprobs,
)
from recarena.models.language.generative.session import SESSIONS, Session

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: cut-off of the validation NDCG that early stopping reads
EVAL_K = 10
#: the validation number each ``early_stopping`` setting keeps the best adapter by
MONITOR = {"ndcg": f"valid_ndcg@{EVAL_K}", "loglik": "valid_loglik_per_token"}
#: parameters that only change how log-likelihoods are read or batched, not the weights:
#: rankers that differ only in these share a trained adapter
SCORING_ONLY = frozenset({"length_norm", "prior_correction", "batch_size", "kv_cache", "progress"})


class LoRATraining:
    """The LoRA half of `GenerativeRanker` (its parameters are the ranker's)."""

    def _train_lora(self, data: TrainingData, valid: pd.DataFrame | None) -> None:
        """Train a LoRA adapter (`recarena.lm.training.train_loop`), or take a live twin's."""
        key = "lora|" + self._training_key(data, valid)
        twin = SESSIONS.get(key)
        if twin is not None and twin.training is not None:
            # a live ranker trained this very adapter on these data: score with it
            logger.info("generative ranker: reusing the adapter trained with these parameters")
            self._attach(twin)
            self._take_training(twin.training)
            return
        import torch
        from peft import LoraConfig, get_peft_model

        from recarena.lm.training import LoopConfig, make_accelerator, seeded, train_loop

        loaded = self._load()  # its own copy: peft puts the adapter into the module
        base = loaded.model
        device = model_device(base)
        targets = self._lora_targets(base)
        monitor = MONITOR[self.early_stopping]
        log: list[dict[str, Any]] = []
        best_epoch = 0
        train_seconds = examples_per_second = 0.0
        with seeded(self.seed):
            rng = np.random.default_rng(self.seed)
            config = LoraConfig(
                r=self.lora_r,
                lora_alpha=self.lora_alpha,
                lora_dropout=self.lora_dropout,
                target_modules=targets,
                layers_to_transform=self._lora_blocks(base),
                task_type="CAUSAL_LM",
            )
            net = get_peft_model(base, config)
            # while the adapter trains, nothing is memoised
            self._attach(Session(net.eval(), loaded.tokenizer, loaded, memo=False))
            lora_parameters = count_lora(net)
            pairs = self._training_pairs(data.sequences)
            checks = self._validation_set(data, valid, rng)
            start = time.perf_counter()
            untrained = None
            if checks is not None:
                # epoch 0, the zero-shot model (LoRA's B starts at zero): training must beat it
                with torch.inference_mode():
                    untrained = self._validate(checks)
                    sanity = self._no_history_check(checks)
                log.append(
                    {
                        "epoch": 0,
                        "step": 0,
                        "train_loss": None,
                        **untrained,
                        **sanity,
                        "seconds": 0.0,
                    }
                )
                logger.info(
                    "generative ranker LoRA: before training (the zero-shot model): %s",
                    ", ".join(f"{k} {v:.4f}" for k, v in {**untrained, **sanity}.items()),
                )
                initial = {
                    n: p.detach().clone() for n, p in net.named_parameters() if p.requires_grad
                }
            if len(pairs) and self.epochs > 0:
                contrastive = self.train_loss == "contrastive"
                sampler = torch.utils.data.RandomSampler(
                    range(len(pairs)),
                    num_samples=min(self.max_train_pairs, len(pairs)),
                    generator=torch.Generator().manual_seed(self.seed),
                )
                negatives = NegativeSampler(data, self.unscorable_items_, self.seed)
                loader = torch.utils.data.DataLoader(
                    range(len(pairs)),
                    batch_size=self.train_batch_size,
                    sampler=sampler,
                    collate_fn=lambda rows: self._collate(
                        pairs[rows], data.sequences, negatives if contrastive else None
                    ),
                )
                loss_fn = self._contrastive_loss if contrastive else generative_loss
                result = train_loop(
                    make_accelerator(device=device.type, mixed_precision="auto"),
                    net,
                    loader,
                    loss_fn,
                    LoopConfig(
                        epochs=self.epochs,
                        lr=self.lr,
                        weight_decay=self.weight_decay,
                        patience=self.patience if checks is not None else None,
                        monitor=monitor,
                        mode="max",
                        keep_best="trainable",
                        progress=self.progress,
                        desc="generative ranker LoRA",
                    ),
                    evaluate=None if checks is None else (lambda _model: self._validate(checks)),
                )
                net = result.model
                best_epoch = result.best_epoch
                train_seconds = result.train_seconds
                examples_per_second = result.examples_per_second
                elapsed = time.perf_counter() - start
                log.extend(
                    {**row, "seconds": row["seconds"] + (elapsed - result.seconds)}
                    for row in result.log
                )
                if untrained is not None and not (
                    result.best_value is not None and result.best_value > untrained[monitor]
                ):
                    logger.info("generative ranker: LoRA did not beat the zero-shot model")
                    net.load_state_dict(initial, strict=False)
                    best_epoch = 0
                elif checks is not None:
                    # the popularity check of the kept adapter, in its epoch's row
                    net.eval()
                    with torch.inference_mode():
                        sanity = self._no_history_check(checks)
                    for row in log:
                        if row["epoch"] == best_epoch and row.get(monitor) is not None:
                            row.update(sanity)
        session = Session(net.eval(), loaded.tokenizer, loaded, memo=True)
        session.training = {
            "log": log,
            "best_epoch": best_epoch,
            "lora_parameters": lora_parameters,
            "train_seconds": train_seconds,
            "examples_per_second": examples_per_second,
        }
        SESSIONS[key] = session
        self._attach(session)
        self._take_training(session.training)

    def _lora_targets(self, base: Any) -> str | list[str]:
        """``lora_target_modules`` for peft: with ``lora_layers``, ``"all-linear"`` written out
        as the names of the linear layers (peft takes blocks only with a list of names)."""
        targets = self.lora_target_modules
        if not isinstance(targets, str):
            return list(targets)
        if self.lora_layers is None:
            return targets
        import torch

        head = base.get_output_embeddings()  # what "all-linear" leaves out
        return sorted(
            {
                name.rsplit(".", 1)[-1]
                for name, module in base.named_modules()
                if isinstance(module, torch.nn.Linear) and module is not head
            }
        )

    def _lora_blocks(self, base: Any) -> list[int] | None:
        """Indices of the top ``lora_layers`` decoder blocks (None: every block)."""
        if self.lora_layers is None:
            return None
        n_blocks = int(base.config.num_hidden_layers)
        if self.lora_layers > n_blocks:
            from recarena.errors import ConfigError

            raise ConfigError(
                f"lora_layers = {self.lora_layers}, but {self.model!r} has only {n_blocks} "
                "decoder blocks"
            )
        return list(range(n_blocks - self.lora_layers, n_blocks))

    def _take_training(self, training: dict[str, Any]) -> None:
        self.training_log_ = copy.deepcopy(training["log"])
        self.best_epoch_ = int(training["best_epoch"])
        self.lora_parameters_ = int(training["lora_parameters"])
        self.train_seconds_ = float(training["train_seconds"])
        self.train_examples_per_second_ = float(training["examples_per_second"])

    def _training_key(self, data: TrainingData, valid: pd.DataFrame | None) -> str:
        """What an adapter depends on: this class, its training parameters, the data."""
        digest = hashlib.sha256()
        params = {k: v for k, v in self.get_params().items() if k not in SCORING_ONLY}
        for later in ("user_values", "lora_layers"):
            if params.get(later) is None:
                # a later parameter: without it the key is the one adapters were saved under
                params.pop(later, None)
        digest.update(stable_class_path(type(self)).encode())
        digest.update(json.dumps(params, sort_keys=True, default=repr).encode())
        attributes = getattr(self, "user_attributes_", {})
        if attributes:
            digest.update(json.dumps(attributes, sort_keys=True).encode())
        digest.update(json.dumps([data.n_users, data.n_items, self.item_texts_]).encode())
        for frame in (data.interactions, valid):
            if frame is None:
                digest.update(b"none")
                continue
            for column in ("user", "item", "timestamp"):
                if column in frame.columns:
                    values = np.ascontiguousarray(frame[column].to_numpy(np.int64))
                    digest.update(column.encode() + values.tobytes())
        return digest.hexdigest()

    def _training_pairs(self, sequences: list[np.ndarray]) -> np.ndarray:
        """(user, position) of every training interaction whose item has text."""
        users = np.repeat(np.arange(len(sequences)), [len(s) for s in sequences])
        positions = np.concatenate([np.arange(len(s)) for s in sequences] or [np.empty(0)])
        pairs = np.stack([users, positions.astype(np.int64)], axis=1).astype(np.int64)
        flat = np.concatenate(list(sequences) or [np.empty(0, dtype=np.int64)]).astype(np.int64)
        scorable = np.ones(len(self.item_texts_), dtype=bool)
        scorable[self.unscorable_items_] = False
        return pairs[scorable[flat]] if len(flat) else pairs

    def _collate(
        self,
        pairs: np.ndarray,
        sequences: list[np.ndarray],
        negatives: NegativeSampler | None,
    ) -> dict[str, torch.Tensor]:
        """A batch of (prompt of the history before a position, that position's title).

        With ``negatives`` (contrastive loss): ``prompt_ids``/``prompt_mask`` (B, P),
        left-padded; ``cand_ids``/``cand_mask`` (B, 1 + n_train_negatives, L), right-padded,
        the positive first (a row of zeros where a user has fewer negatives). Without: ``input_ids``, ``attention_mask`` and ``labels`` of
        prompt + title sequences, the loss on the title's tokens only.
        """
        import torch

        prompts, targets, rows = [], [], []
        for user, position in pairs.tolist():
            seq = sequences[user]
            lo = 0 if self.history_len is None else max(0, position - self.history_len)
            prompts.append(self._prompt_ids(seq[lo:position], user))
            targets.append(self._candidate_ids(int(seq[position])))
            rows.append(user)
        pad = self._tokenizer.pad_token_id
        pad = 0 if pad is None else int(pad)
        if negatives is None:
            width = max(len(p) + len(t) for p, t in zip(prompts, targets, strict=True))
            ids = torch.full((len(pairs), width), pad, dtype=torch.long)
            mask = torch.zeros((len(pairs), width), dtype=torch.long)
            labels = torch.full((len(pairs), width), -100, dtype=torch.long)
            for r, (p, t) in enumerate(zip(prompts, targets, strict=True)):
                seq_ids = torch.tensor(p + t, dtype=torch.long)
                ids[r, : len(seq_ids)] = seq_ids
                mask[r, : len(seq_ids)] = 1
                labels[r, len(p) : len(seq_ids)] = seq_ids[len(p) :]  # the title's tokens only
            return {"input_ids": ids, "attention_mask": mask, "labels": labels}
        n_cand = 1 + self.n_train_negatives
        cands = [
            [t] + [self._candidate_ids(int(i)) for i in negatives.draw(u, self.n_train_negatives)]
            for u, t in zip(rows, targets, strict=True)
        ]
        p_width = max(len(p) for p in prompts)
        c_width = max(len(c) for row in cands for c in row)
        prompt_ids = torch.full((len(pairs), p_width), pad, dtype=torch.long)
        prompt_mask = torch.zeros((len(pairs), p_width), dtype=torch.long)
        cand_ids = torch.full((len(pairs), n_cand, c_width), pad, dtype=torch.long)
        cand_mask = torch.zeros((len(pairs), n_cand, c_width), dtype=torch.long)
        for r, (p, row) in enumerate(zip(prompts, cands, strict=True)):
            # left-padded: every prompt ends in the last column, where its candidates begin
            prompt_ids[r, p_width - len(p) :] = torch.tensor(p, dtype=torch.long)
            prompt_mask[r, p_width - len(p) :] = 1
            for k, c in enumerate(row):
                cand_ids[r, k, : len(c)] = torch.tensor(c, dtype=torch.long)
                cand_mask[r, k, : len(c)] = 1
        return {
            "prompt_ids": prompt_ids,
            "prompt_mask": prompt_mask,
            "cand_ids": cand_ids,
            "cand_mask": cand_mask,
        }

    def _contrastive_loss(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean over the batch of -log softmax(title log-likelihoods)[positive].

        One forward pass runs every prompt of the batch (left-padded, so that each ends in
        the last column; rotary positions make the padding's shift harmless), then the
        candidates of all pairs run in length buckets on copies of their prompt's cache
        rows. The gradient flows through the prompts' keys and values.
        """
        import torch

        n_pairs, n_cand, _ = batch["cand_ids"].shape
        prompt_mask = batch["prompt_mask"]
        out = model(
            input_ids=batch["prompt_ids"],
            attention_mask=prompt_mask,
            use_cache=True,
            logits_to_keep=1,
        )
        first = out.logits[:, -1].float().log_softmax(-1)  # (B, V): each title's first token
        prefix = output_cache(out)
        ids_all = batch["cand_ids"].reshape(n_pairs * n_cand, -1)
        mask_all = batch["cand_mask"].reshape(n_pairs * n_cand, -1)
        lengths = mask_all.sum(1)
        real = torch.nonzero(lengths > 0).flatten()  # fewer negatives for a rare user
        parts, order = [], []
        for idx in length_buckets(lengths[real].cpu().numpy(), 64):
            rows = real[torch.as_tensor(idx, device=real.device)]
            pair = torch.div(rows, n_cand, rounding_mode="floor")
            width = int(lengths[rows].max())
            ids, mask = ids_all[rows, :width], mask_all[rows, :width]
            token_lp = first[pair, ids[:, 0]].unsqueeze(1)
            if width > 1:
                attention = torch.cat([prompt_mask[pair], mask], dim=1)
                logits = model(
                    input_ids=ids[:, :-1],
                    attention_mask=attention[:, :-1],
                    use_cache=True,
                    **{cache_kwarg(model): select_cache(prefix, pair)},
                ).logits
                token_lp = torch.cat([token_lp, token_logprobs(logits, ids[:, 1:])], dim=1)
            total = (token_lp * mask).sum(1)
            parts.append(total / mask.sum(1) if self.train_score == "mean" else total)
            order.append(rows)
        scores = torch.full((n_pairs * n_cand,), float("-inf"), device=first.device)
        scores = scores.index_copy(0, torch.cat(order), torch.cat(parts))
        return -torch.log_softmax(scores.view(n_pairs, n_cand), dim=1)[:, 0].mean()

    def _validation_set(
        self, data: TrainingData, valid: pd.DataFrame | None, rng: np.random.Generator
    ) -> dict[str, Any] | None:
        """Validation users, their held-out item and (for NDCG) seeded negatives, drawn once."""
        if valid is None or len(valid) == 0:
            return None
        frame = valid.drop_duplicates("user", keep="first")
        users = frame["user"].to_numpy(np.int64)
        targets = frame["item"].to_numpy(np.int64)
        if len(users) > self.max_valid_users:
            pick = np.sort(rng.choice(len(users), self.max_valid_users, replace=False))
            users, targets = users[pick], targets[pick]
        checks: dict[str, Any] = {"users": users, "targets": targets}
        if self.early_stopping == "ndcg":
            seen = data.csr()
            n_neg = min(self.n_valid_negatives, data.n_items - 1)
            cands = np.empty((len(users), n_neg + 1), dtype=np.int64)
            for r, (u, t) in enumerate(zip(users, targets, strict=True)):
                allowed = np.ones(data.n_items, dtype=bool)
                allowed[seen.indices[seen.indptr[u] : seen.indptr[u + 1]]] = False
                allowed[t] = False
                pool = np.flatnonzero(allowed)
                negs = rng.choice(pool, size=min(n_neg, len(pool)), replace=False)
                negs = np.concatenate([negs, np.full(n_neg - len(negs), t)])
                cands[r] = np.concatenate([[t], negs])
            checks["candidates"] = cands
            checks["popularity"] = data.item_popularity
        return checks

    def _validate(self, checks: dict[str, Any]) -> dict[str, float]:
        """Validation numbers of the current adapter (early stopping reads `MONITOR`).

        NDCG@10 of the held-out item (first candidate) by the training score
        (``train_score``; early stopping reads it) and by each of the title's log-likelihood
        sum and mean per token; the held-out title's mean token log-likelihood. Pessimistic
        ties: a negative scored like the target ranks above it.
        """
        users, targets = checks["users"], checks["targets"]
        logliks: list[float] = []
        ndcgs: dict[str, list[float]] = {"sum": [], "mean": []}
        for r, u in enumerate(users):
            prompt = self._user_prompt_ids(int(u))
            if self.early_stopping == "ndcg":
                items = checks["candidates"][r]
                conts = [self._candidate_ids(int(i)) for i in items]
                ok = np.array([c is not None for c in conts])
                if not ok[0]:
                    ndcgs["sum"].append(0.0)
                    ndcgs["mean"].append(0.0)
                    continue
                sums, counts = self._continuation_logprobs(
                    prompt, [c for c in conts if c is not None]
                )
                logliks.append(float(sums[0] / counts[0]))
                for norm, scores in (("sum", sums), ("mean", sums / counts)):
                    rank = int((scores[1:] >= scores[0]).sum())
                    ndcgs[norm].append(1.0 / np.log2(rank + 2) if rank < EVAL_K else 0.0)
                continue
            target = self._candidate_ids(int(targets[r]))
            if target is not None:
                sums, counts = self._continuation_logprobs(prompt, [target])
                logliks.append(float(sums[0] / counts[0]))
        out = {MONITOR["loglik"]: float(np.mean(logliks)) if logliks else float("nan")}
        if ndcgs["sum"]:
            out[MONITOR["ndcg"]] = float(np.mean(ndcgs[self.train_score]))
            for norm in ("sum", "mean"):
                out[f"{MONITOR['ndcg']}_{norm}"] = float(np.mean(ndcgs[norm]))
        return out

    def _no_history_check(self, checks: dict[str, Any]) -> dict[str, float]:
        """What the decoder ranks first when it knows nothing of the user (a sanity check).

        Every validation candidate is scored after the empty-history prompt: NDCG@10 of the
        held-out items by those scores (a popularity ranking, learned from the titles), and
        the Spearman correlation of those scores with the items' training popularity. A
        tuned ranker should know the popular items: both rise when LoRA learns them.
        """
        if "candidates" not in checks:
            return {}
        cands = checks["candidates"]
        items = np.array([i for i in np.unique(cands) if self.item_texts_[i]], dtype=np.int64)
        null = self._prompt_ids(np.empty(0, dtype=np.int64))
        conts = [self._candidate_ids(int(i)) for i in items]
        sums, _ = self._continuation_logprobs(null, conts)  # type: ignore[arg-type]
        score = np.full(len(self.item_texts_), -np.inf)
        score[items] = sums
        values = score[cands]
        ranks = (values[:, 1:] >= values[:, :1]).sum(1)  # pessimistic ties
        gains = np.where(ranks < EVAL_K, 1.0 / np.log2(ranks + 2), 0.0)
        popularity = pd.Series(checks["popularity"][items]).rank()
        rho = popularity.corr(pd.Series(sums).rank()) if len(items) > 1 else float("nan")
        return {
            f"valid_ndcg@{EVAL_K}_no_history": float(gains.mean()),
            "no_history_popularity_spearman": float(rho),
        }
